package membership

import (
	"fmt"
	"hash/fnv"
	"regexp"
	"sort"
	"strings"

	"github.com/meridiankv/meridian/placement"
	"github.com/meridiankv/meridian/version"
)

// DefaultKeyspace is the keyspace every cluster has and requests without a
// keyspace use.
const DefaultKeyspace = "default"

// DefaultRF is the default keyspace's replication factor in each DC (capped
// by the number of nodes the DC has).
const DefaultRF = 3

// Conflict is how a keyspace resolves concurrent writes.
type Conflict int

const (
	// ConflictSiblings keeps every concurrent value for the client to merge.
	ConflictSiblings Conflict = iota
	// ConflictLWW keeps the value with the greatest hybrid-logical-clock time.
	ConflictLWW
)

// String is the name used in configs and the CLI.
func (c Conflict) String() string {
	if c == ConflictLWW {
		return "lww"
	}
	return "siblings"
}

// ParseConflict parses "siblings" (or "") and "lww".
func ParseConflict(s string) (Conflict, error) {
	switch strings.ToLower(s) {
	case "", "siblings":
		return ConflictSiblings, nil
	case "lww":
		return ConflictLWW, nil
	}
	return 0, fmt.Errorf("conflict mode %q: use siblings or lww", s)
}

// KeyspaceSpec is a keyspace as configured or requested by an operator.
type KeyspaceSpec struct {
	Name        string         `yaml:"name" json:"name"`
	Replication map[string]int `yaml:"replication" json:"replication"`
	Conflict    string         `yaml:"conflict,omitempty" json:"conflict,omitempty"`
	// MaxSiblings bounds the siblings a write may leave on a key (default
	// DefaultMaxSiblings, at most version.MaxSiblings).
	MaxSiblings int `yaml:"max_siblings,omitempty" json:"max_siblings,omitempty"`
	// MaxSetBytes bounds a key's stored versions, bytes (default
	// DefaultMaxSetBytes, at most version.MaxSetBytes).
	MaxSetBytes int `yaml:"max_set_bytes,omitempty" json:"max_set_bytes,omitempty"`
	// StorageID is the ID the keyspace's data is stored under, chosen by
	// the metadata log when the keyspace is created; 0 means
	// KeyspaceID(Name). A keyspace created under the name of one dropped
	// gets another ID, so data of the dropped one not yet deleted on some
	// node (down during the drop) never reappears in it.
	StorageID uint32 `yaml:"-" json:"storage_id,omitempty"`
	// CreatedAt is when the keyspace was created (UnixNano, the metadata
	// command's time; 0: created before creations were timed), set by
	// the metadata log, never by the proposer.
	CreatedAt int64 `yaml:"-" json:"created_at,omitempty"`
}

// Keyspace limit defaults.
const (
	DefaultMaxSiblings = 100
	DefaultMaxSetBytes = 64 << 20
)

// Keyspace is a keyspace with its placement table computed.
type Keyspace struct {
	Name        string
	ID          uint32
	Replication placement.Replication
	Conflict    Conflict
	Table       *placement.Table
	// Limits bound what a write may leave on a key.
	Limits version.Limits
	// WarnSiblings is the sibling count from which writes are logged and
	// counted as a warning (a quarter of the limit).
	WarnSiblings int
}

// NodeInfo is a cluster member as the topology knows it.
type NodeInfo struct {
	placement.Node
	GRPCAddr string
	// State is the member's state in the metadata log (active for a
	// topology built from flags).
	State MemberState
}

// Topology is one epoch of cluster metadata: nodes, ring and keyspaces.
// It is immutable; a change produces a new Topology with a higher epoch.
type Topology struct {
	Epoch     uint64
	Ring      *placement.Ring
	Nodes     map[string]NodeInfo
	Keyspaces map[string]*Keyspace
	// ClusterID is fixed when the metadata log is bootstrapped ("" for a
	// provisional topology built from flags).
	ClusterID string
	// Meta is the agreed state this topology was computed from (nil for a
	// provisional one). It is shared: never modify it.
	Meta        *MetaState
	routeEpochs []uint64
}

// Agreed reports whether the topology comes from the metadata log (not
// from flags while the log is not yet initialized).
func (t *Topology) Agreed() bool { return t.Meta != nil }

var keyspaceName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// NewTopology builds a topology from a member list and keyspace specs. The
// default keyspace is added when specs do not name it.
func NewTopology(epoch uint64, partitions int, nodes []NodeInfo, specs []KeyspaceSpec) (*Topology, error) {
	pn := make([]placement.Node, len(nodes))
	byID := make(map[string]NodeInfo, len(nodes))
	for i, n := range nodes {
		pn[i] = n.Node
		if n.State == "" {
			n.State = StateActive
		}
		byID[n.ID] = n
	}
	ring, err := placement.New(partitions, pn)
	if err != nil {
		return nil, err
	}
	t := &Topology{Epoch: epoch, Ring: ring, Nodes: byID, Keyspaces: map[string]*Keyspace{}}
	hasDefault := false
	for _, s := range specs {
		if s.Name == DefaultKeyspace {
			hasDefault = true
		}
	}
	if !hasDefault {
		specs = append([]KeyspaceSpec{t.DefaultSpec()}, specs...)
	}
	for _, s := range specs {
		if err := t.addKeyspace(s); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// DefaultSpec is the default keyspace's spec for this topology's nodes:
// DefaultRF per DC, capped by the DC's node count.
func (t *Topology) DefaultSpec() KeyspaceSpec {
	nodes := make([]placement.Node, 0, len(t.Nodes))
	for _, n := range t.Nodes {
		nodes = append(nodes, n.Node)
	}
	return defaultSpec(nodes)
}

// WithKeyspace returns a new topology (epoch+1) with one more keyspace.
func (t *Topology) WithKeyspace(s KeyspaceSpec) (*Topology, error) {
	if _, ok := t.Keyspaces[s.Name]; ok {
		return nil, fmt.Errorf("keyspace %q already exists", s.Name)
	}
	next := &Topology{Epoch: t.Epoch + 1, Ring: t.Ring, Nodes: t.Nodes, Keyspaces: make(map[string]*Keyspace, len(t.Keyspaces)+1)}
	for k, v := range t.Keyspaces {
		next.Keyspaces[k] = v
	}
	if err := next.addKeyspace(s); err != nil {
		return nil, err
	}
	return next, nil
}

func (t *Topology) addKeyspace(s KeyspaceSpec) error {
	return t.addKeyspaceWith(s, nil)
}

// addKeyspaceWith adds a keyspace; table, when given, is its table on
// t.Ring (computed and cached by the caller).
func (t *Topology) addKeyspaceWith(s KeyspaceSpec, table *placement.Table) error {
	if !keyspaceName.MatchString(s.Name) {
		return fmt.Errorf("keyspace name %q: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit", s.Name)
	}
	if _, ok := t.Keyspaces[s.Name]; ok {
		return fmt.Errorf("keyspace %q is defined twice", s.Name)
	}
	conflict, err := ParseConflict(s.Conflict)
	if err != nil {
		return fmt.Errorf("keyspace %q: %w", s.Name, err)
	}
	repl := placement.Replication{}
	for dc, rf := range s.Replication {
		if rf != 0 {
			repl[dc] = rf
		}
	}
	if table == nil {
		var err error
		if table, err = t.Ring.Table(repl); err != nil {
			return fmt.Errorf("keyspace %q: %w", s.Name, err)
		}
	}
	id := s.StorageID
	if id == 0 {
		id = KeyspaceID(s.Name)
	}
	for _, k := range t.Keyspaces {
		if k.ID == id {
			return fmt.Errorf("keyspace %q: its ID collides with keyspace %q: pick another name", s.Name, k.Name)
		}
	}
	limits := version.Limits{MaxSiblings: s.MaxSiblings, MaxBytes: s.MaxSetBytes}
	if limits.MaxSiblings == 0 {
		limits.MaxSiblings = DefaultMaxSiblings
	}
	if limits.MaxBytes == 0 {
		limits.MaxBytes = DefaultMaxSetBytes
	}
	if limits.MaxSiblings < 1 || limits.MaxSiblings > version.MaxSiblings {
		return fmt.Errorf("keyspace %q: max_siblings %d: use 1 to %d", s.Name, limits.MaxSiblings, version.MaxSiblings)
	}
	if limits.MaxBytes < 1<<20 || limits.MaxBytes > version.MaxSetBytes {
		return fmt.Errorf("keyspace %q: max_set_bytes %d: use 1 MiB to %d", s.Name, limits.MaxBytes, version.MaxSetBytes)
	}
	t.Keyspaces[s.Name] = &Keyspace{Name: s.Name, ID: id, Replication: repl, Conflict: conflict, Table: table,
		Limits: limits, WarnSiblings: max(limits.MaxSiblings/4, 1)}
	return nil
}

// KeyspaceID is the stable numeric ID of a keyspace name, used in storage
// keys: FNV-1a of the name (never 0).
func KeyspaceID(name string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(name))
	id := h.Sum32()
	if id == 0 {
		id = 1
	}
	return id
}

// Keyspace looks a keyspace up by name; "" means the default keyspace.
func (t *Topology) Keyspace(name string) (*Keyspace, bool) {
	if name == "" {
		name = DefaultKeyspace
	}
	k, ok := t.Keyspaces[name]
	return k, ok
}

// KeyspaceNames returns the keyspace names, sorted.
func (t *Topology) KeyspaceNames() []string {
	names := make([]string, 0, len(t.Keyspaces))
	for n := range t.Keyspaces {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
