package placement

import (
	"errors"
	"fmt"
	"sort"
)

// ErrBadState is wrapped by FromState for a state whose owners do not
// describe a ring.
var ErrBadState = errors.New("placement: bad ring state")

// RingState is a ring in plain data (JSON-friendly): enough to rebuild it
// exactly, for example from a Raft log. Owners name nodes by ID, so the
// encoding does not depend on the order of Nodes.
type RingState struct {
	// Partitions is Q.
	Partitions int `json:"q"`
	// Nodes are the members, in any order.
	Nodes []Node `json:"nodes"`
	// Owners maps each DC to the owner node ID of each of its partitions
	// (Q entries).
	Owners map[string][]string `json:"owners"`
}

// State returns the ring as plain data; FromState rebuilds it.
func (r *Ring) State() RingState {
	s := RingState{Partitions: r.q, Nodes: r.Nodes(), Owners: make(map[string][]string, len(r.owner))}
	for dc, o := range r.owner {
		ids := make([]string, len(o))
		for p, i := range o {
			ids[p] = r.nodes[i].ID
		}
		s.Owners[dc] = ids
	}
	return s
}

// FromState rebuilds a ring from State's output. It checks everything: Q
// and the nodes as New does (ErrBadPartitions, ErrBadNode,
// ErrDuplicateNodeID), and that every DC with nodes, and no other, has Q
// owners, each a node of that DC (ErrBadState).
func FromState(s RingState) (*Ring, error) {
	r, err := newRing(s.Partitions, s.Nodes)
	if err != nil {
		return nil, err
	}
	r.owner = make(map[string][]int32, len(r.dcs))
	for _, dc := range r.dcs {
		ids, ok := s.Owners[dc]
		if !ok {
			return nil, fmt.Errorf("%w: datacenter %s has nodes but no owners", ErrBadState, dc)
		}
		if len(ids) != r.q {
			return nil, fmt.Errorf("%w: datacenter %s has %d owners for %d partitions", ErrBadState, dc, len(ids), r.q)
		}
		owners := make([]int32, r.q)
		for p, id := range ids {
			i, ok := r.index[id]
			switch {
			case !ok:
				return nil, fmt.Errorf("%w: partition %d of %s is owned by %q, which is not a node", ErrBadState, p, dc, id)
			case r.nodes[i].DC != dc:
				return nil, fmt.Errorf("%w: partition %d of %s is owned by %q, a node of %s", ErrBadState, p, dc, id, r.nodes[i].DC)
			}
			owners[p] = int32(i)
		}
		r.owner[dc] = owners
	}
	if len(s.Owners) != len(r.owner) {
		var extra []string
		for dc := range s.Owners {
			if _, ok := r.owner[dc]; !ok {
				extra = append(extra, dc)
			}
		}
		sort.Strings(extra)
		return nil, fmt.Errorf("%w: owners for datacenter %s, which has no nodes", ErrBadState, extra[0])
	}
	return r, nil
}
