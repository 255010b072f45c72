package membership

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/meridiankv/meridian/placement"
)

// The cluster metadata, as the Raft log agrees on it: a MetaState changed
// only by Commands, applied in log order on every node. Apply is pure and
// deterministic (no clocks, no randomness, no map order), so every node
// computes the same state — and the same ring — for the same epoch.

// MemberState is where a node is in its membership life.
type MemberState string

// Member states.
const (
	// Joining: admitted to the metadata log, owns nothing yet.
	StateJoining MemberState = "joining"
	// Active: in the ring.
	StateActive MemberState = "active"
	// Leaving: a committed plan takes its partitions away.
	StateLeaving MemberState = "leaving"
	// Removed: gone from the ring; its ID is not reused.
	StateRemoved MemberState = "removed"
)

// MemberRecord is a node as the metadata log knows it.
type MemberRecord struct {
	ID        string      `json:"id"`
	DC        string      `json:"dc"`
	Rack      string      `json:"rack"`
	Weight    int         `json:"weight"`
	GRPCAddr  string      `json:"grpc_addr"`
	PeerAddr  string      `json:"peer_addr,omitempty"`
	AdminAddr string      `json:"admin_addr,omitempty"`
	RaftAddr  string      `json:"raft_addr,omitempty"`
	State     MemberState `json:"state"`
	// RemovedAt is when the member was removed (UnixNano, the proposer's
	// clock on the command that removed it; 0: not removed, or removed
	// before removals were timed).
	RemovedAt int64 `json:"removed_at,omitempty"`
}

func (m MemberRecord) node() placement.Node {
	return placement.Node{ID: m.ID, DC: m.DC, Rack: m.Rack, Weight: m.Weight}
}

// Plan operations.
const (
	OpAdd          = "add"
	OpDecommission = "decommission"
	OpRemove       = "remove"
	OpReplace      = "replace"
	OpReweight     = "reweight"
)

// PlanOp is one step of a membership plan.
type PlanOp struct {
	Op     string `json:"op"`
	Node   string `json:"node"`
	With   string `json:"with,omitempty"`
	Weight int    `json:"weight,omitempty"`
}

// String is the operator's spelling of the step.
func (o PlanOp) String() string {
	switch o.Op {
	case OpReplace:
		return fmt.Sprintf("replace %s --with %s", o.Node, o.With)
	case OpReweight:
		return fmt.Sprintf("reweight %s=%d", o.Node, o.Weight)
	}
	return o.Op + " " + o.Node
}

// Transition is a committed change in progress: partitions move from the
// current ring (and keyspace specs) to Next, one partition at a time.
type Transition struct {
	// Generation is the epoch the change was committed at; transfers and
	// their checkpoints are tagged with it.
	Generation uint64 `json:"generation"`
	// Ops is the plan (empty for a keyspace alter).
	Ops  []PlanOp            `json:"ops,omitempty"`
	Next placement.RingState `json:"next"`
	// NextKeyspaces are the specs that change (a replication alter).
	NextKeyspaces map[string]KeyspaceSpec `json:"next_keyspaces,omitempty"`
	// Moving lists the partitions that change in any keyspace, ascending.
	Moving []int `json:"moving"`
	// Done lists the moving partitions already switched, ascending.
	Done []int `json:"done,omitempty"`
	// Reported maps a moving partition to the new replicas that reported
	// their copy complete.
	Reported map[int][]string `json:"reported,omitempty"`
	// Aborted marks a change being undone (`meridian cluster abort`):
	// Ops are the steps being taken back, Next is the ring before them.
	Aborted bool `json:"aborted,omitempty"`
	// Undoes is the generation of the transition this one undoes (0: none),
	// so a retried abort of it is recognized as applied.
	Undoes uint64 `json:"undoes,omitempty"`
}

// IsDone reports whether partition p serves from the next ring.
func (t *Transition) IsDone(p int) bool {
	_, ok := slices.BinarySearch(t.Done, p)
	return ok
}

// MetaState is the agreed cluster metadata.
type MetaState struct {
	ClusterID  string                   `json:"cluster_id"`
	Epoch      uint64                   `json:"epoch"`
	Partitions int                      `json:"partitions"`
	Members    map[string]*MemberRecord `json:"members"`
	Ring       *placement.RingState     `json:"ring,omitempty"`
	Keyspaces  map[string]KeyspaceSpec  `json:"keyspaces"`
	// Plan is the pending, uncommitted plan.
	Plan       []PlanOp    `json:"plan,omitempty"`
	Transition *Transition `json:"transition,omitempty"`
	// RouteEpochs[p] is the epoch at which partition p's replicas last
	// changed: a peer request for p from a node at an older epoch was
	// routed by a stale ring and is refused.
	RouteEpochs []uint64 `json:"route_epochs,omitempty"`
	// RingEpoch is the epoch at which Ring last changed (it keys cached
	// tables).
	RingEpoch uint64 `json:"ring_epoch"`
	// RestoredFrom is the cluster ID of the cluster whose metadata this
	// cluster was initialized from (a whole cluster restored from
	// snapshots onto new machines); "" for a cluster started afresh.
	RestoredFrom string `json:"restored_from,omitempty"`
	// RestoredEpoch is the epoch of the restored metadata it was
	// initialized from.
	RestoredEpoch uint64 `json:"restored_epoch,omitempty"`
	// DroppedKeyspaces are the storage IDs of dropped keyspaces, oldest
	// first, at most MaxDroppedKeyspaces: a keyspace created later never
	// gets one of them (a node down during the drop still holds that data
	// until its clean-up runs).
	DroppedKeyspaces []uint32 `json:"dropped_keyspaces,omitempty"`
	// LastCommit is the plan the last commit started (rules 3): that
	// commit sent again (a retry after the leader was lost) once its
	// change finished, at once or not, is unchanged rather than refused
	// for want of a plan. A commit names its plan, not a generation.
	LastCommit []PlanOp `json:"last_commit,omitempty"`
	// LastUndone is the generation of the last transition an abort undid
	// (rules 3): that abort sent again once the undo finished is
	// unchanged rather than refused for want of a change in progress.
	LastUndone uint64 `json:"last_undone,omitempty"`

	// tableCache holds the tables of the current ring and of the
	// transition's next ring (not part of the state: rebuilt on demand).
	tableCache *TableCache
}

// TableCache remembers keyspace tables by ring and replication, so that
// applying a change that does not touch the ring does not recompute every
// preference list. The zero value is ready; it is not safe for concurrent
// use.
//
// Keys name a ring by the epoch it became current or next at, but one
// command can set two rings at one epoch (an abort that finishes at once:
// the would-be ring, then the one before the change), and a cache outlives
// the state it was filled from (a node adopting another cluster's
// metadata). So an entry is used only for the very ring it was built from:
// a stale one would make a state with a long-lived cache (the FSM's)
// compute other tables than one restored from a snapshot, at the same
// epoch.
type TableCache struct {
	tables map[string]cachedTable
	rings  map[string]cachedRing
}

type cachedRing struct {
	state placement.RingState
	ring  *placement.Ring
}

type cachedTable struct {
	ring  *placement.Ring // the ring it was computed on
	table *placement.Table
}

func (c *TableCache) ring(key string, rs placement.RingState) (*placement.Ring, error) {
	if c == nil {
		return placement.FromState(rs)
	}
	if e, ok := c.rings[key]; ok && sameRingState(e.state, rs) {
		// Keep rs: the next state (a clone) shares its owner lists, so
		// it compares without reading them even after a snapshot restore.
		c.rings[key] = cachedRing{state: rs, ring: e.ring}
		return e.ring, nil
	}
	r, err := placement.FromState(rs)
	if err != nil {
		return nil, err
	}
	if c.rings == nil || len(c.rings) > 8 {
		c.rings, c.tables = map[string]cachedRing{}, map[string]cachedTable{}
	}
	c.rings[key] = cachedRing{state: rs, ring: r}
	return r, nil
}

// sameRingState reports whether a and b are the same ring. Rings are
// never modified in place, only replaced, so states sharing their owner
// lists (a state and its clones) compare without reading them.
func sameRingState(a, b placement.RingState) bool {
	if a.Partitions != b.Partitions || !slices.Equal(a.Nodes, b.Nodes) || len(a.Owners) != len(b.Owners) {
		return false
	}
	for dc, ao := range a.Owners {
		bo, ok := b.Owners[dc]
		if !ok || len(ao) != len(bo) {
			return false
		}
		if len(ao) > 0 && &ao[0] == &bo[0] {
			continue
		}
		if !slices.Equal(ao, bo) {
			return false
		}
	}
	return true
}

func (c *TableCache) table(ringKey string, r *placement.Ring, repl map[string]int) (*placement.Table, error) {
	if c == nil {
		return r.Table(placement.Replication(repl))
	}
	dcs := make([]string, 0, len(repl))
	for dc := range repl {
		dcs = append(dcs, dc)
	}
	sort.Strings(dcs)
	key := ringKey
	for _, dc := range dcs {
		key += fmt.Sprintf("|%s=%d", dc, repl[dc])
	}
	if e, ok := c.tables[key]; ok && e.ring == r {
		return e.table, nil
	}
	t, err := r.Table(placement.Replication(repl))
	if err != nil {
		return nil, err
	}
	if c.tables == nil {
		c.tables = map[string]cachedTable{}
	}
	c.tables[key] = cachedTable{ring: r, table: t}
	return t, nil
}

func (s *MetaState) curRingKey() string { return fmt.Sprintf("cur@%d", s.RingEpoch) }
func (s *MetaState) nextRingKey() string {
	return fmt.Sprintf("next@%d", s.Transition.Generation)
}

// UseCache makes Topology and the transition bookkeeping reuse tables
// from c (one cache per state owner; nil turns caching off).
func (s *MetaState) UseCache(c *TableCache) { s.tableCache = c }

// Member looks a member up (safe on a nil state).
func (s *MetaState) Member(id string) (MemberRecord, bool) {
	if s == nil {
		return MemberRecord{}, false
	}
	m, ok := s.Members[id]
	if !ok {
		return MemberRecord{}, false
	}
	return *m, true
}

// RefusedError is a command the state refused (as opposed to a failure
// of the log that carries it).
type RefusedError struct{ Err error }

func (e *RefusedError) Error() string { return e.Err.Error() }
func (e *RefusedError) Unwrap() error { return e.Err }

// InvalidError is a command refused because what it asks for is not
// valid (a keyspace spec that does not fit the cluster), as opposed to
// one refused because of the cluster's state.
type InvalidError struct{ Err error }

func (e *InvalidError) Error() string { return e.Err.Error() }
func (e *InvalidError) Unwrap() error { return e.Err }

func invalid(err error) error {
	if err == nil {
		return nil
	}
	return &InvalidError{Err: err}
}

// IsRefusal reports whether err is a refusal by the state.
func IsRefusal(err error) bool {
	var r *RefusedError
	return errors.As(err, &r)
}

// Initialized reports whether the cluster has been bootstrapped.
func (s *MetaState) Initialized() bool { return s != nil && s.Ring != nil }

// Clone deep-copies the state. Rings (RingState) are shared: they are
// never modified in place, only replaced.
func (s *MetaState) Clone() *MetaState {
	out := *s
	out.tableCache = nil
	out.Members = make(map[string]*MemberRecord, len(s.Members))
	for id, m := range s.Members {
		c := *m
		out.Members[id] = &c
	}
	out.Keyspaces = make(map[string]KeyspaceSpec, len(s.Keyspaces))
	for name, k := range s.Keyspaces {
		out.Keyspaces[name] = cloneSpec(k)
	}
	out.Plan = slices.Clone(s.Plan)
	out.DroppedKeyspaces = slices.Clone(s.DroppedKeyspaces)
	out.LastCommit = slices.Clone(s.LastCommit)
	out.RouteEpochs = slices.Clone(s.RouteEpochs)
	if s.Ring != nil {
		r := *s.Ring
		out.Ring = &r
	}
	if t := s.Transition; t != nil {
		c := *t
		c.Ops = slices.Clone(t.Ops)
		c.Moving = slices.Clone(t.Moving)
		c.Done = slices.Clone(t.Done)
		if t.NextKeyspaces != nil {
			c.NextKeyspaces = make(map[string]KeyspaceSpec, len(t.NextKeyspaces))
			for name, k := range t.NextKeyspaces {
				c.NextKeyspaces[name] = cloneSpec(k)
			}
		}
		c.Reported = make(map[int][]string, len(t.Reported))
		for p, nodes := range t.Reported {
			c.Reported[p] = slices.Clone(nodes)
		}
		out.Transition = &c
	}
	return &out
}

func cloneSpec(k KeyspaceSpec) KeyspaceSpec {
	k.Replication = maps.Clone(k.Replication)
	return k
}

// Command kinds.
const (
	CmdInit           = "init"
	CmdJoin           = "join"
	CmdAddrs          = "addrs"
	CmdPlan           = "plan"
	CmdPlanClear      = "plan-clear"
	CmdCommit         = "commit"
	CmdTransferDone   = "transfer-done"
	CmdAbort          = "abort"
	CmdKeyspaceCreate = "keyspace-create"
	CmdKeyspaceAlter  = "keyspace-alter"
	CmdKeyspaceDrop   = "keyspace-drop"
	// CmdRestoredInit initializes a cluster from restored metadata (its
	// own kind: a node that does not know it refuses it rather than
	// reading it as a fresh init).
	CmdRestoredInit = "restored-init"
)

// Command is one entry of the metadata log.
type Command struct {
	Kind string `json:"kind"`
	// Rules is the version of Apply's rules the command was proposed
	// under (MetaLog.Apply stamps CommandRules). An entry already in a log
	// when a rule changed replays under the rules it was decided by, so
	// every node computes the same state from the same log.
	Rules int `json:"rules,omitempty"`
	// At is the proposer's wall clock when it proposed the command
	// (UnixNano, MetaLog.Apply stamps it): the time a change it makes is
	// recorded at, the same on every node that applies it.
	At int64 `json:"at,omitempty"`
	// Init.
	ClusterID  string         `json:"cluster_id,omitempty"`
	Partitions int            `json:"partitions,omitempty"`
	Members    []MemberRecord `json:"members,omitempty"`
	// Join, Addrs: the member.
	Member *MemberRecord `json:"member,omitempty"`
	// Plan.
	Op *PlanOp `json:"op,omitempty"`
	// Commit: the plan the proposer saw (refused if it changed since).
	Expect []PlanOp `json:"expect,omitempty"`
	// TransferDone, Abort: the transition's generation.
	Generation uint64 `json:"generation,omitempty"`
	Node       string `json:"node,omitempty"`
	Parts      []int  `json:"parts,omitempty"`
	// Keyspace DDL (and Init's keyspaces).
	Keyspace  *KeyspaceSpec  `json:"keyspace,omitempty"`
	Keyspaces []KeyspaceSpec `json:"keyspaces,omitempty"`
	Name      string         `json:"name,omitempty"`
	// StorageID, on a keyspace drop, is the storage ID of the keyspace the
	// proposer saw (0: any): the drop sent again once that keyspace is
	// gone changes nothing, and never drops one created since.
	StorageID uint32 `json:"storage_id,omitempty"`
	// RestoredInit: the metadata the restored snapshots' store held (ring, members, keyspaces, any transition), carried on under
	// the new ClusterID with the Members' addresses.
	Restored *MetaState `json:"restored,omitempty"`
}

// CommandRules is the version of Apply's rules new commands are proposed
// under. 1: a keyspace created under a dropped one's name gets a new
// storage ID, a drop names the storage ID it meant, a limits alter during
// a replication alter holds after it and the replication alter sent again
// is unchanged. 2: a joining node a plan or a change in progress places
// cannot change its rack or weight by joining again. 3: an abort leaves a
// joining node the change was removing joining (not active), and a
// commit or an abort sent again after its change finished is unchanged.
const CommandRules = 3

// IsInit reports whether the command initializes a cluster (fresh or
// from restored metadata): only a cluster's first leader proposes one.
func (c Command) IsInit() bool { return c.Kind == CmdInit || c.Kind == CmdRestoredInit }

// Encode is the command's log entry.
func (c Command) Encode() []byte {
	b, err := json.Marshal(c)
	if err != nil {
		panic(fmt.Sprintf("membership: encode command: %v", err))
	}
	return b
}

// DecodeCommand parses a command another node proposed (bounded by
// MaxCommandBytes).
func DecodeCommand(b []byte) (Command, error) { return decodeCommand(b, MaxCommandBytes) }

// DecodeLogEntry parses an entry of the metadata log (bounded by
// MaxLogEntryBytes).
func DecodeLogEntry(b []byte) (Command, error) { return decodeCommand(b, MaxLogEntryBytes) }

func decodeCommand(b []byte, limit int) (Command, error) {
	var c Command
	if len(b) > limit {
		return c, fmt.Errorf("metadata command of %d bytes is over the %d-byte limit", len(b), limit)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("metadata command: %w", err)
	}
	return c, nil
}

// MaxCommandBytes bounds one metadata command proposed by another node
// (forwarded to the leader). MaxLogEntryBytes bounds one entry of the
// log: the leader's own init from restored metadata carries the whole
// ring (about 1.1 MB at 65,536 partitions over three DCs of three nodes,
// twice that during a change).
const (
	MaxCommandBytes  = 1 << 20
	MaxLogEntryBytes = 16 << 20
)

// Errors a command can be refused with.
var (
	ErrNotInitialized  = errors.New("the cluster metadata is not initialized yet")
	ErrInTransition    = errors.New("a committed change is still in progress: wait for `meridian cluster status` to show it finished, or undo it with `meridian cluster abort`")
	ErrNoTransition    = errors.New("no committed change is in progress: nothing to abort")
	ErrKeyspaceExists  = errors.New("keyspace already exists with a different spec")
	ErrNoPlan          = errors.New("there is no pending plan: add steps with `meridian cluster plan add|decommission|remove|replace|reweight`")
	ErrPlanChanged     = errors.New("the pending plan changed since it was shown: review it with `meridian cluster plan show` and commit again")
	ErrUnknownMember   = errors.New("unknown node")
	ErrUnknownKeyspace = errors.New("keyspace does not exist")
	ErrStale           = errors.New("stale transfer report")
)

// Apply applies a command. A refused command leaves the state unchanged
// and returns why; every change increments Epoch.
func (s *MetaState) Apply(c Command) error {
	if !c.IsInit() && !s.Initialized() {
		return ErrNotInitialized
	}
	var err error
	switch c.Kind {
	case CmdInit, CmdRestoredInit:
		err = s.applyInit(c)
	case CmdJoin:
		err = s.applyJoin(c)
	case CmdAddrs:
		err = s.applyAddrs(c)
	case CmdPlan:
		err = s.applyPlan(c)
	case CmdPlanClear:
		if len(s.Plan) == 0 {
			return nil
		}
		s.Plan = nil
	case CmdCommit:
		err = s.applyCommit(c)
	case CmdTransferDone:
		err = s.applyTransferDone(c)
	case CmdAbort:
		err = s.applyAbort(c)
	case CmdKeyspaceCreate:
		err = s.applyKeyspaceCreate(c)
	case CmdKeyspaceAlter:
		err = s.applyKeyspaceAlter(c)
	case CmdKeyspaceDrop:
		err = s.applyKeyspaceDrop(c)
	default:
		err = fmt.Errorf("unknown metadata command %q (a newer node's?)", c.Kind)
	}
	if err != nil {
		return err
	}
	s.Epoch++
	return nil
}

func (s *MetaState) applyInit(c Command) error {
	if s.Initialized() {
		return fmt.Errorf("the cluster is already initialized (cluster ID %s)", s.ClusterID)
	}
	if c.ClusterID == "" {
		return errors.New("init without a cluster ID")
	}
	if (c.Kind == CmdRestoredInit) != (c.Restored != nil) {
		return errors.New("an init from restored metadata must be a restored-init, and only it carries restored metadata")
	}
	if c.Restored != nil {
		return s.applyRestoredInit(c)
	}
	nodes := make([]placement.Node, 0, len(c.Members))
	members := map[string]*MemberRecord{}
	for _, m := range c.Members {
		m.State = StateActive
		if err := checkMember(m); err != nil {
			return err
		}
		if _, dup := members[m.ID]; dup {
			return fmt.Errorf("init lists node %q twice", m.ID)
		}
		members[m.ID] = &m
		nodes = append(nodes, m.node())
	}
	ring, err := placement.New(c.Partitions, nodes)
	if err != nil {
		return err
	}
	st := ring.State()
	next := &MetaState{ClusterID: c.ClusterID, Epoch: s.Epoch, Partitions: c.Partitions, Members: members, Ring: &st,
		Keyspaces: map[string]KeyspaceSpec{}, RouteEpochs: make([]uint64, c.Partitions), RingEpoch: s.Epoch + 1, tableCache: s.tableCache}
	specs := c.Keyspaces
	if !slices.ContainsFunc(specs, func(k KeyspaceSpec) bool { return k.Name == DefaultKeyspace }) {
		specs = append([]KeyspaceSpec{defaultSpec(nodes)}, specs...)
	}
	for _, k := range specs {
		if _, dup := next.Keyspaces[k.Name]; dup {
			return fmt.Errorf("init defines keyspace %q twice", k.Name)
		}
		k = normalize(k)
		k.StorageID, k.CreatedAt = 0, c.At // chosen here, never by the proposer
		next.Keyspaces[k.Name] = k
	}
	if _, err := next.Topology(); err != nil {
		return err
	}
	*s = *next
	return nil
}

// applyRestoredInit starts a cluster from the metadata of the cluster its
// data was restored from: the same ring, members, keyspaces, plan and
// transition, so every node's restored data sits where the ring says it
// does. Only the identity and the addresses are new: c.ClusterID (the new
// cluster never talks to the old one, should both run) and the members'
// client addresses from c.Members (the others are learned as each node
// records its own). The epoch goes on from the restored one, so nothing
// stored under the old epochs (transfer checkpoints, route epochs) is
// ever newer than the cluster. c.Members must name exactly the restored
// members that were not removed, each in its DC.
func (s *MetaState) applyRestoredInit(c Command) error {
	r := c.Restored
	if !r.Initialized() || r.ClusterID == "" {
		return errors.New("init from restored metadata that is not initialized (a snapshot of a node that had not joined a cluster?)")
	}
	if r.ClusterID == c.ClusterID {
		return fmt.Errorf("a restored cluster needs a new cluster ID, not the restored one (%s)", r.ClusterID)
	}
	next := r.Clone()
	listed := map[string]bool{}
	for _, m := range c.Members {
		if listed[m.ID] {
			return fmt.Errorf("init lists node %q twice", m.ID)
		}
		listed[m.ID] = true
		rec, ok := next.Members[m.ID]
		if !ok || rec.State == StateRemoved {
			return fmt.Errorf("node %s is not a member of the restored cluster %s: list only its members (%s)", m.ID, r.ClusterID, strings.Join(r.liveMemberIDs(), ", "))
		}
		if rec.DC != m.DC {
			return fmt.Errorf("node %s was in DC %s in the restored cluster, not %s: the restored ring places its data by DC", m.ID, rec.DC, m.DC)
		}
		rec.GRPCAddr = m.GRPCAddr
	}
	var missing []string
	for _, id := range r.liveMemberIDs() {
		if !listed[id] {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("the restored cluster %s had members %s that the new cluster does not list: start every member, each from its own snapshot", r.ClusterID, strings.Join(missing, ", "))
	}
	for _, rec := range next.Members {
		// Learned anew: each node records its own (CmdAddrs).
		rec.PeerAddr, rec.AdminAddr, rec.RaftAddr = "", "", ""
		if !listed[rec.ID] {
			rec.GRPCAddr = ""
		}
	}
	next.ClusterID = c.ClusterID
	next.RestoredFrom, next.RestoredEpoch = r.ClusterID, r.Epoch
	next.Epoch = max(s.Epoch, r.Epoch)
	next.tableCache = s.tableCache
	if _, err := next.Topology(); err != nil {
		return fmt.Errorf("restored metadata: %w", err)
	}
	*s = *next
	return nil
}

// liveMemberIDs lists the members not removed, sorted.
func (s *MetaState) liveMemberIDs() []string {
	var ids []string
	for id, m := range s.Members {
		if m.State != StateRemoved {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

func defaultSpec(nodes []placement.Node) KeyspaceSpec {
	perDC := map[string]int{}
	for _, n := range nodes {
		perDC[n.DC]++
	}
	for dc, c := range perDC {
		perDC[dc] = min(c, DefaultRF)
	}
	return KeyspaceSpec{Name: DefaultKeyspace, Replication: perDC}
}

func normalize(k KeyspaceSpec) KeyspaceSpec {
	repl := map[string]int{}
	for dc, rf := range k.Replication {
		if rf != 0 {
			repl[dc] = rf
		}
	}
	k.Replication = repl
	return k
}

func checkMember(m MemberRecord) error {
	if m.ID == "" || len(m.ID) > 64 {
		return fmt.Errorf("member ID %q: use 1 to 64 characters", m.ID)
	}
	if m.DC == "" {
		return fmt.Errorf("member %q has no datacenter", m.ID)
	}
	if m.Weight < 1 || m.Weight > placement.MaxWeight {
		return fmt.Errorf("member %q: weight %d is outside 1..%d", m.ID, m.Weight, placement.MaxWeight)
	}
	if m.GRPCAddr == "" {
		return fmt.Errorf("member %q has no client address", m.ID)
	}
	return nil
}

func (s *MetaState) applyJoin(c Command) error {
	if c.Member == nil {
		return errors.New("join without a member")
	}
	m := *c.Member
	m.State = StateJoining
	if err := checkMember(m); err != nil {
		return err
	}
	if cur, ok := s.Members[m.ID]; ok {
		switch cur.State {
		case StateRemoved:
			return fmt.Errorf("node %q was removed from this cluster; a node ID is never reused: start the node with a new --id", m.ID)
		case StateJoining:
			if cur.DC != m.DC {
				return fmt.Errorf("node %q already joined in datacenter %s, not %s", m.ID, cur.DC, m.DC)
			}
			// A restarted joiner: refresh its addresses and placement, but
			// not the placement a plan or a change in progress was computed
			// with (the ring would disagree with the member for good).
			if c.Rules >= 2 && (cur.Rack != m.Rack || cur.Weight != m.Weight) && s.placing(m.ID) {
				return fmt.Errorf("node %q is in the pending plan or a change in progress with rack %q and weight %d: restart it with those, or clear the plan (`meridian cluster plan clear`) or abort the change (`meridian cluster abort`) first", m.ID, cur.Rack, cur.Weight)
			}
			*cur = m
			return nil
		default:
			return fmt.Errorf("node %q is already a member (%s)", m.ID, cur.State)
		}
	}
	s.Members[m.ID] = &m
	return nil
}

// placing reports whether the pending plan or the change in progress
// places node id.
func (s *MetaState) placing(id string) bool {
	for _, op := range s.Plan {
		if op.Node == id || op.With == id {
			return true
		}
	}
	if s.Transition != nil {
		for _, n := range s.Transition.Next.Nodes {
			if n.ID == id {
				return true
			}
		}
	}
	return false
}

func (s *MetaState) applyAddrs(c Command) error {
	if c.Member == nil {
		return errors.New("addrs without a member")
	}
	cur, ok := s.Members[c.Member.ID]
	if !ok || cur.State == StateRemoved {
		return fmt.Errorf("%w %q", ErrUnknownMember, c.Member.ID)
	}
	if cur.GRPCAddr == c.Member.GRPCAddr && cur.PeerAddr == c.Member.PeerAddr && cur.AdminAddr == c.Member.AdminAddr && cur.RaftAddr == c.Member.RaftAddr {
		return errUnchanged
	}
	cur.GRPCAddr, cur.PeerAddr, cur.AdminAddr, cur.RaftAddr = c.Member.GRPCAddr, c.Member.PeerAddr, c.Member.AdminAddr, c.Member.RaftAddr
	return nil
}

// errUnchanged is a no-op command (not an error for the proposer).
var errUnchanged = errors.New("unchanged")

// IsUnchanged reports whether Apply's error only says nothing changed.
func IsUnchanged(err error) bool { return errors.Is(err, errUnchanged) }

func (s *MetaState) applyPlan(c Command) error {
	if c.Op == nil {
		return errors.New("plan without an operation")
	}
	if s.Transition != nil {
		return ErrInTransition
	}
	if slices.Contains(s.Plan, *c.Op) {
		return errUnchanged // a retried proposal: the step is in already
	}
	plan := append(slices.Clone(s.Plan), *c.Op)
	if _, err := s.PlanRing(plan); err != nil {
		return err
	}
	s.Plan = plan
	return nil
}

// PlanRing is the ring a plan leads to, applying its steps in order to the
// current ring with the minimal-movement operations. It fails, saying why,
// for a step that does not fit (an unknown node, a node in the wrong state,
// a keyspace the new ring cannot place).
func (s *MetaState) PlanRing(plan []PlanOp) (*placement.Ring, error) {
	ring, err := placement.FromState(*s.Ring)
	if err != nil {
		return nil, err
	}
	seen := map[string]string{}
	for _, op := range plan {
		if prev, ok := seen[op.Node]; ok {
			return nil, fmt.Errorf("the plan already has %q for node %s: one step per node (clear the plan to change it)", prev, op.Node)
		}
		seen[op.Node] = op.String()
		m, ok := s.Members[op.Node]
		if !ok || m.State == StateRemoved {
			return nil, fmt.Errorf("%w %q: see `meridian cluster status` for the members", ErrUnknownMember, op.Node)
		}
		switch op.Op {
		case OpAdd:
			if m.State != StateJoining {
				return nil, fmt.Errorf("add %s: the node is %s; only a joining node (started with --join) can be added", op.Node, m.State)
			}
			ring, err = ring.AddNode(m.node())
		case OpRemove:
			switch m.State {
			case StateActive:
				ring, err = ring.RemoveNode(op.Node)
			case StateJoining:
				// It owns nothing (an add never committed, or undone by an
				// abort): it only leaves the members, nothing moves.
			default:
				return nil, fmt.Errorf("remove %s: the node is %s, not active or joining", op.Node, m.State)
			}
		case OpDecommission:
			if m.State != StateActive {
				return nil, fmt.Errorf("%s %s: the node is %s, not active", op.Op, op.Node, m.State)
			}
			ring, err = ring.RemoveNode(op.Node)
		case OpReplace:
			if m.State != StateActive {
				return nil, fmt.Errorf("replace %s: the node is %s, not active", op.Node, m.State)
			}
			w, ok := s.Members[op.With]
			if !ok || w.State != StateJoining {
				return nil, fmt.Errorf("replace %s --with %s: the new node must be joining (start it with --join)", op.Node, op.With)
			}
			if _, dup := seen[op.With]; dup {
				return nil, fmt.Errorf("the plan already has a step for node %s", op.With)
			}
			seen[op.With] = op.String()
			ring, err = ring.Replace(op.Node, w.node())
		case OpReweight:
			if m.State != StateActive {
				return nil, fmt.Errorf("reweight %s: the node is %s, not active", op.Node, m.State)
			}
			if op.Weight < 1 || op.Weight > placement.MaxWeight {
				return nil, fmt.Errorf("reweight %s=%d: use a weight from 1 to %d", op.Node, op.Weight, placement.MaxWeight)
			}
			ring, err = ring.WithWeight(op.Node, op.Weight)
		default:
			return nil, fmt.Errorf("plan step %q: use add, decommission, remove, replace or reweight", op.Op)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
	}
	for _, name := range sortedKeys(s.Keyspaces) {
		if _, err := ring.Table(placement.Replication(s.Keyspaces[name].Replication)); err != nil {
			return nil, fmt.Errorf("after the plan, keyspace %q does not fit: %w (alter its replication first)", name, err)
		}
	}
	return ring, nil
}

func (s *MetaState) applyCommit(c Command) error {
	if t := s.Transition; t != nil {
		if len(s.Plan) == 0 && len(c.Expect) > 0 && !t.Aborted && slices.Equal(t.Ops, c.Expect) {
			return errUnchanged // a retried commit of the plan now moving
		}
		return ErrInTransition
	}
	if len(s.Plan) == 0 {
		if len(c.Expect) > 0 && slices.Equal(s.LastCommit, c.Expect) {
			return errUnchanged // a retried commit of a change already over
		}
		return ErrNoPlan
	}
	if !slices.Equal(s.Plan, c.Expect) {
		return ErrPlanChanged
	}
	next, err := s.PlanRing(s.Plan)
	if err != nil {
		return err
	}
	for _, op := range s.Plan {
		switch op.Op {
		case OpDecommission, OpRemove:
			s.Members[op.Node].State = StateLeaving
		case OpReplace:
			s.Members[op.Node].State = StateLeaving
		}
	}
	if c.Rules >= 3 {
		s.LastCommit = s.Plan
	}
	s.startTransition(s.Plan, next, nil, c.At)
	s.Plan = nil
	return nil
}

// startTransition records a change from the current ring and specs to
// next (ring) and nextSpecs (keyspaces that change), at epoch+1.
func (s *MetaState) startTransition(ops []PlanOp, next *placement.Ring, nextSpecs map[string]KeyspaceSpec, at int64) {
	gen := s.Epoch + 1
	t := &Transition{Generation: gen, Ops: ops, Next: next.State(), NextKeyspaces: nextSpecs, Reported: map[int][]string{}}
	s.Transition = t
	old, nxt := s.tables(false), s.tables(true)
	moving := map[int]bool{}
	for name, ot := range old {
		for _, p := range placement.Changed(ot, nxt[name]) {
			moving[p] = true
		}
	}
	t.Moving = sortedInts(moving)
	for _, p := range t.Moving {
		s.RouteEpochs[p] = gen
		if len(s.pendingFor(p, old, nxt)) == 0 {
			t.Done = append(t.Done, p) // nothing to copy: only replicas leave
		}
	}
	s.maybeFinish(at)
}

// tables builds every keyspace's table on the current ring (next=false)
// or on the transition's next ring with its next specs (next=true).
func (s *MetaState) tables(next bool) map[string]*placement.Table {
	rs, key := *s.Ring, s.curRingKey()
	if next {
		rs, key = s.Transition.Next, s.nextRingKey()
	}
	ring, err := s.tableCache.ring(key, rs)
	if err != nil {
		panic(fmt.Sprintf("membership: stored ring: %v", err)) // validated when stored
	}
	out := map[string]*placement.Table{}
	for name, spec := range s.Keyspaces {
		if next && s.Transition.NextKeyspaces != nil {
			if ns, ok := s.Transition.NextKeyspaces[name]; ok {
				spec = ns
			}
		}
		t, err := s.tableCache.table(key, ring, normalize(spec).Replication)
		if err != nil {
			panic(fmt.Sprintf("membership: keyspace %s on the stored ring: %v", name, err)) // validated when planned
		}
		out[name] = t
	}
	return out
}

// pendingFor is every node that must receive partition p (in any
// keyspace) before it switches.
func (s *MetaState) pendingFor(p int, old, next map[string]*placement.Table) []string {
	set := map[string]bool{}
	for name, ot := range old {
		in := map[string]bool{}
		for _, r := range ot.Replicas(p) {
			in[r.Node] = true
		}
		for _, r := range next[name].Replicas(p) {
			if !in[r.Node] {
				set[r.Node] = true
			}
		}
	}
	return sortedKeys(set)
}

// PendingFor lists the nodes that must still report partition p during
// the transition (nil outside one, or once p switched).
func (s *MetaState) PendingFor(p int) []string {
	if s.Transition == nil || s.Transition.IsDone(p) {
		return nil
	}
	var out []string
	for _, n := range s.pendingFor(p, s.tables(false), s.tables(true)) {
		if !slices.Contains(s.Transition.Reported[p], n) {
			out = append(out, n)
		}
	}
	return out
}

func (s *MetaState) applyTransferDone(c Command) error {
	t := s.Transition
	if t == nil || c.Generation != t.Generation {
		return fmt.Errorf("%w: generation %d, current %v", ErrStale, c.Generation, s.generation())
	}
	old, nxt := s.tables(false), s.tables(true)
	changed := false
	epoch := s.Epoch + 1
	for _, p := range c.Parts {
		if _, moving := slices.BinarySearch(t.Moving, p); !moving || t.IsDone(p) {
			continue
		}
		need := s.pendingFor(p, old, nxt)
		if !slices.Contains(need, c.Node) || slices.Contains(t.Reported[p], c.Node) {
			continue
		}
		if t.Reported == nil {
			// An empty map is left out of snapshots (omitempty): a
			// state restored from one has none.
			t.Reported = map[int][]string{}
		}
		t.Reported[p] = append(t.Reported[p], c.Node)
		slices.Sort(t.Reported[p])
		changed = true
		if !slices.ContainsFunc(need, func(n string) bool { return !slices.Contains(t.Reported[p], n) }) {
			i, _ := slices.BinarySearch(t.Done, p)
			t.Done = slices.Insert(t.Done, i, p)
			delete(t.Reported, p)
			s.RouteEpochs[p] = epoch
		}
	}
	if !changed {
		return errUnchanged
	}
	s.maybeFinish(c.At)
	return nil
}

// applyAbort undoes the transition in progress: a new transition, at the
// next epoch, from where the cluster serves each partition now back to
// the ring (and keyspace specs) before the change. Partitions that had not
// switched yet serve from the old replicas already, so they count as done
// at once; partitions that had switched serve from their new replicas and
// stream back to the old ones, which then report them as usual. Nothing
// is served from a replica that does not hold the data, and nodes leaving
// in the change are active again (rules 3: those in the ring restored; a
// joining node being removed owns nothing there and is joining again).
// Undoing an abort takes the change up again the same way. c.Generation
// must be the transition's, so an abort meant for one change never stops
// another.
func (s *MetaState) applyAbort(c Command) error {
	if c.Generation != 0 && c.Generation == s.LastUndone {
		return errUnchanged // a retried abort, its undo already over
	}
	t := s.Transition
	if t == nil {
		return ErrNoTransition
	}
	if t.Undoes != 0 && t.Undoes == c.Generation {
		return errUnchanged // a retried abort, already applied
	}
	if c.Generation != t.Generation {
		return fmt.Errorf("%w: abort of generation %d, but the change in progress is generation %d: look again with `meridian cluster status`", ErrStale, c.Generation, t.Generation)
	}
	gen := s.Epoch + 1
	back := &Transition{Generation: gen, Ops: t.Ops, Aborted: !t.Aborted, Undoes: t.Generation, Next: *s.Ring, Moving: t.Moving, Reported: map[int][]string{}}
	if t.NextKeyspaces != nil {
		back.NextKeyspaces = make(map[string]KeyspaceSpec, len(t.NextKeyspaces))
		for name, spec := range t.NextKeyspaces {
			back.NextKeyspaces[name] = s.Keyspaces[name]
			s.Keyspaces[name] = spec
		}
	}
	for _, p := range t.Moving {
		if !t.IsDone(p) {
			back.Done = append(back.Done, p)
		}
	}
	next := t.Next
	s.Ring = &next
	s.RingEpoch = gen
	s.Transition = back
	old, nxt := s.tables(false), s.tables(true)
	for _, p := range back.Moving {
		s.RouteEpochs[p] = gen
		if !back.IsDone(p) && len(s.pendingFor(p, old, nxt)) == 0 {
			i, _ := slices.BinarySearch(back.Done, p)
			back.Done = slices.Insert(back.Done, i, p) // nothing to copy back
		}
	}
	inBack := map[string]bool{}
	for _, n := range back.Next.Nodes {
		inBack[n.ID] = true
	}
	for _, op := range t.Ops {
		switch op.Op {
		case OpDecommission, OpRemove, OpReplace:
			m := s.Members[op.Node]
			switch {
			case m == nil:
			case !back.Aborted:
				m.State = StateLeaving
			case c.Rules >= 3 && !inBack[op.Node]:
				// A joining node a remove was taking out of the members:
				// active, it would be a member outside the ring that no
				// plan step can place and that cannot join again.
				m.State = StateJoining
			default:
				m.State = StateActive
			}
		}
	}
	if c.Rules >= 3 {
		s.LastUndone = t.Generation
	}
	s.maybeFinish(c.At)
	return nil
}

func (s *MetaState) generation() any {
	if s.Transition == nil {
		return "none"
	}
	return s.Transition.Generation
}

// maybeFinish ends the transition once every moving partition switched:
// the next ring and specs become current, leaving nodes are removed (at:
// when) and added ones active.
func (s *MetaState) maybeFinish(at int64) {
	t := s.Transition
	if t == nil || len(t.Done) < len(t.Moving) {
		return
	}
	next := t.Next
	s.Ring = &next
	s.RingEpoch = s.Epoch + 1
	for name, spec := range t.NextKeyspaces {
		s.Keyspaces[name] = spec
	}
	inRing := map[string]bool{}
	for _, n := range next.Nodes {
		inRing[n.ID] = true
	}
	for _, m := range s.Members {
		switch {
		case m.State == StateLeaving && !inRing[m.ID]:
			m.State, m.RemovedAt = StateRemoved, at
		case m.State == StateJoining && inRing[m.ID]:
			m.State = StateActive
		}
		if inRing[m.ID] {
			for _, n := range next.Nodes {
				if n.ID == m.ID {
					m.Weight = n.Weight
				}
			}
		}
	}
	s.Transition = nil
}

func (s *MetaState) applyKeyspaceCreate(c Command) error {
	if c.Keyspace == nil {
		return errors.New("keyspace create without a spec")
	}
	spec := normalize(*c.Keyspace)
	if cur, ok := s.Keyspaces[spec.Name]; ok {
		if SameSpec(cur, spec) {
			return errUnchanged
		}
		return fmt.Errorf("%w: %q has %s", ErrKeyspaceExists, spec.Name, DescribeSpec(cur))
	}
	spec.StorageID, spec.CreatedAt = 0, c.At
	if c.Rules >= 1 {
		spec.StorageID = s.newStorageID(spec.Name)
	}
	next := s.Clone()
	next.Keyspaces[spec.Name] = spec
	if _, err := next.Topology(); err != nil {
		return invalid(err)
	}
	s.Keyspaces[spec.Name] = spec
	return nil
}

func (s *MetaState) applyKeyspaceAlter(c Command) error {
	if c.Keyspace == nil {
		return errors.New("keyspace alter without a spec")
	}
	spec := normalize(*c.Keyspace)
	cur, ok := s.Keyspaces[spec.Name]
	if !ok {
		return fmt.Errorf("keyspace %q does not exist: create it with `meridian keyspace create`", spec.Name)
	}
	spec.StorageID, spec.CreatedAt = cur.StorageID, cur.CreatedAt // the data stays where it is
	if spec.Conflict != cur.Conflict {
		cc, _ := ParseConflict(cur.Conflict)
		sc, err := ParseConflict(spec.Conflict)
		if err != nil {
			return invalid(err)
		}
		if cc != sc {
			return fmt.Errorf("keyspace %q: the conflict mode cannot change (%s): create a new keyspace and copy the data", spec.Name, cc)
		}
	}
	if SameSpec(cur, spec) {
		return errUnchanged
	}
	var nextSpec KeyspaceSpec
	moving := false
	if s.Transition != nil {
		nextSpec, moving = s.Transition.NextKeyspaces[spec.Name]
	}
	if c.Rules < 1 && maps.Equal(cur.Replication, spec.Replication) {
		// Rules 0: a limits alter replaces the current spec only.
		next := s.Clone()
		next.Keyspaces[spec.Name] = spec
		if _, err := next.Topology(); err != nil {
			return invalid(err)
		}
		s.Keyspaces[spec.Name] = spec
		return nil
	}
	if c.Rules < 1 {
		moving = false
	}
	if moving && SameSpec(nextSpec, spec) {
		return errUnchanged // the replication alter under way (a retry of it)
	}
	if maps.Equal(cur.Replication, spec.Replication) || moving && maps.Equal(nextSpec.Replication, spec.Replication) {
		// Limits only: now, and for the end of a replication alter under
		// way too (which would otherwise bring its own limits back).
		cur.MaxSiblings, cur.MaxSetBytes = spec.MaxSiblings, spec.MaxSetBytes
		next := s.Clone()
		next.Keyspaces[spec.Name] = cur
		if _, err := next.Topology(); err != nil {
			return invalid(err)
		}
		s.Keyspaces[spec.Name] = cur
		if moving {
			nextSpec.MaxSiblings, nextSpec.MaxSetBytes = spec.MaxSiblings, spec.MaxSetBytes
			s.Transition.NextKeyspaces[spec.Name] = nextSpec
		}
		return nil
	}
	if s.Transition != nil {
		return ErrInTransition
	}
	ring, err := placement.FromState(*s.Ring)
	if err != nil {
		return err
	}
	probe := s.Clone()
	probe.Keyspaces[spec.Name] = spec
	if _, err := probe.Topology(); err != nil {
		return invalid(err)
	}
	// Limits change now; replication through a transition.
	cur.MaxSiblings, cur.MaxSetBytes = spec.MaxSiblings, spec.MaxSetBytes
	s.Keyspaces[spec.Name] = cur
	s.startTransition(nil, ring, map[string]KeyspaceSpec{spec.Name: spec}, c.At)
	return nil
}

func (s *MetaState) applyKeyspaceDrop(c Command) error {
	if c.Name == DefaultKeyspace {
		return errors.New("the default keyspace cannot be dropped")
	}
	cur, ok := s.Keyspaces[c.Name]
	if c.Rules >= 1 && c.StorageID != 0 && (!ok || storageID(cur) != c.StorageID) {
		if slices.Contains(s.DroppedKeyspaces, c.StorageID) {
			return errUnchanged // dropped already (a retry)
		}
		if ok {
			return fmt.Errorf("keyspace %q was dropped and created again meanwhile: list the keyspaces and drop it again if you mean the new one", c.Name)
		}
	}
	if !ok {
		return fmt.Errorf("%w: %q (see 'meridian keyspace list')", ErrUnknownKeyspace, c.Name)
	}
	if s.Transition != nil {
		return ErrInTransition
	}
	if c.Rules >= 1 {
		s.DroppedKeyspaces = append(s.DroppedKeyspaces, storageID(s.Keyspaces[c.Name]))
		if over := len(s.DroppedKeyspaces) - MaxDroppedKeyspaces; over > 0 {
			s.DroppedKeyspaces = slices.Delete(s.DroppedKeyspaces, 0, over)
		}
	}
	delete(s.Keyspaces, c.Name)
	return nil
}

// MaxDroppedKeyspaces bounds the storage IDs of dropped keyspaces the
// metadata remembers: a keyspace dropped longer ago than this many drops
// is assumed deleted on every node.
const MaxDroppedKeyspaces = 4096

// storageID is the ID a keyspace's data is stored under.
func storageID(k KeyspaceSpec) uint32 {
	if k.StorageID != 0 {
		return k.StorageID
	}
	return KeyspaceID(k.Name)
}

// newStorageID picks the storage ID of a keyspace being created: its
// name's ID unless a keyspace holds it or a dropped one did, then the ID
// of name#1, name#2, ... (0 stands for the name's own ID).
func (s *MetaState) newStorageID(name string) uint32 {
	taken := make(map[uint32]bool, len(s.Keyspaces)+len(s.DroppedKeyspaces))
	for _, k := range s.Keyspaces {
		taken[storageID(k)] = true
	}
	for _, id := range s.DroppedKeyspaces {
		taken[id] = true
	}
	id := KeyspaceID(name)
	if !taken[id] {
		return 0
	}
	for i := 1; ; i++ {
		if id = KeyspaceID(name + "#" + strconv.Itoa(i)); !taken[id] {
			return id
		}
	}
}

// SameSpec reports whether two specs define the same keyspace.
func SameSpec(a, b KeyspaceSpec) bool {
	a, b = normalize(a), normalize(b)
	ca, _ := ParseConflict(a.Conflict)
	cb, _ := ParseConflict(b.Conflict)
	return a.Name == b.Name && maps.Equal(a.Replication, b.Replication) && ca == cb &&
		orDefault(a.MaxSiblings, DefaultMaxSiblings) == orDefault(b.MaxSiblings, DefaultMaxSiblings) &&
		orDefault(a.MaxSetBytes, DefaultMaxSetBytes) == orDefault(b.MaxSetBytes, DefaultMaxSetBytes)
}

func orDefault(v, d int) int {
	if v == 0 {
		return d
	}
	return v
}

// DescribeSpec says what a spec is, for error messages.
func DescribeSpec(k KeyspaceSpec) string {
	c, _ := ParseConflict(k.Conflict)
	return fmt.Sprintf("replication %v, conflict %s, max_siblings %d, max_set_bytes %d", k.Replication, c,
		orDefault(k.MaxSiblings, DefaultMaxSiblings), orDefault(k.MaxSetBytes, DefaultMaxSetBytes))
}

// Topology computes the routing view of the state: the ring, every
// keyspace's table (a transition table while partitions move) and the
// members that may talk to each other (every member not removed).
func (s *MetaState) Topology() (*Topology, error) {
	if !s.Initialized() {
		return nil, ErrNotInitialized
	}
	ring, err := s.tableCache.ring(s.curRingKey(), *s.Ring)
	if err != nil {
		return nil, fmt.Errorf("stored ring: %w", err)
	}
	t := &Topology{Epoch: s.Epoch, Ring: ring, Nodes: map[string]NodeInfo{}, Keyspaces: map[string]*Keyspace{},
		ClusterID: s.ClusterID, routeEpochs: s.RouteEpochs, Meta: s}
	for id, m := range s.Members {
		if m.State == StateRemoved {
			continue
		}
		t.Nodes[id] = NodeInfo{Node: m.node(), GRPCAddr: m.GRPCAddr, State: m.State}
	}
	var nextRing *placement.Ring
	if s.Transition != nil {
		if nextRing, err = s.tableCache.ring(s.nextRingKey(), s.Transition.Next); err != nil {
			return nil, fmt.Errorf("stored next ring: %w", err)
		}
	}
	for _, name := range sortedKeys(s.Keyspaces) {
		spec := s.Keyspaces[name]
		table, err := s.tableCache.table(s.curRingKey(), ring, normalize(spec).Replication)
		if err != nil {
			return nil, invalid(fmt.Errorf("keyspace %q: %w", name, err))
		}
		if err := t.addKeyspaceWith(spec, table); err != nil {
			return nil, err
		}
		if nextRing == nil {
			continue
		}
		ks := t.Keyspaces[name]
		nspec := spec
		if ns, ok := s.Transition.NextKeyspaces[name]; ok {
			nspec = ns
		}
		nt, err := s.tableCache.table(s.nextRingKey(), nextRing, normalize(nspec).Replication)
		if err != nil {
			return nil, fmt.Errorf("keyspace %q on the next ring: %w", name, err)
		}
		tt, err := placement.Transition(ks.Table, nt, s.Transition.IsDone)
		if err != nil {
			return nil, err
		}
		ks.Table = tt
	}
	return t, nil
}

// RouteEpoch is the epoch at which partition p's replicas last changed.
func (t *Topology) RouteEpoch(p int) uint64 {
	if p < 0 || p >= len(t.routeEpochs) {
		return 0
	}
	return t.routeEpochs[p]
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sortedInts(m map[int]bool) []int {
	out := make([]int, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Ints(out)
	return out
}
