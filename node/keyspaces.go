package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"

	"github.com/meridiankv/meridian/membership"
)

const metaKeyspacePrefix = "keyspace/"

// ErrKeyspaceExists is returned when creating a keyspace whose name is
// taken by a keyspace with a different spec.
var ErrKeyspaceExists = errors.New("keyspace already exists with a different spec")

// savedKeyspaces reads the keyspaces created at run time on this node.
func (n *Node) savedKeyspaces() ([]membership.KeyspaceSpec, error) {
	var out []membership.KeyspaceSpec
	err := n.store.ScanMeta(metaKeyspacePrefix, func(name string, v []byte) error {
		var s membership.KeyspaceSpec
		if err := json.Unmarshal(v, &s); err != nil {
			return fmt.Errorf("saved keyspace %s: %w", name, err)
		}
		out = append(out, s)
		return nil
	})
	return out, err
}

// CreateKeyspace adds a keyspace to this node's topology and stores it so
// it survives restarts. Creating an identical keyspace again is a no-op.
func (n *Node) CreateKeyspace(spec membership.KeyspaceSpec) (*membership.Keyspace, error) {
	n.topoMu.Lock()
	defer n.topoMu.Unlock()
	cur := n.Topology()
	if ks, ok := cur.Keyspaces[spec.Name]; ok {
		conflict, _ := membership.ParseConflict(spec.Conflict)
		if maps.Equal(ks.Replication, dropZero(spec.Replication)) && ks.Conflict == conflict {
			return ks, nil
		}
		return nil, fmt.Errorf("%w: %q has replication %v, conflict %s", ErrKeyspaceExists, spec.Name, ks.Replication, ks.Conflict)
	}
	next, err := cur.WithKeyspace(spec)
	if err != nil {
		return nil, err
	}
	raw, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	if err := n.store.PutMeta(metaKeyspacePrefix+spec.Name, raw); err != nil {
		return nil, err
	}
	n.topo.Store(next)
	n.log.Info("keyspace created", "keyspace", spec.Name, "replication", spec.Replication)
	return next.Keyspaces[spec.Name], nil
}

func dropZero(m map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}
