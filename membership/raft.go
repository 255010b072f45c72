package membership

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// MetaLog is this node's member of the Raft group that holds the cluster
// metadata: hashicorp/raft with its log and stable store in raft-boltdb
// (behind raft.NewLogCache) and snapshots on disk. Raft addresses are node
// IDs; the stream layer resolves them, so a node keeps its place in the
// group when its listener's port changes across restarts.
type MetaLog struct {
	cfg       MetaLogConfig
	raft      *raft.Raft
	fsm       *metaFSM
	transport *raft.NetworkTransport
	bolt      *raftboltdb.BoltStore
	log       *slog.Logger
	// barrierTerm is the term whose barrier Reconcile passed.
	barrierTerm atomic.Uint64
}

// MetaLogConfig configures a MetaLog.
type MetaLogConfig struct {
	ID string
	// Dir holds raft.db and snapshots/ ("" keeps both in memory: only for
	// nodes on the memory engine, in tests).
	Dir string
	// Listener accepts the group's connections (already TLS-wrapped when
	// the cluster uses TLS); Dial connects to a node by ID.
	Listener net.Listener
	Dial     func(ctx context.Context, id string) (net.Conn, error)
	// Sender authenticates an accepted connection: the node ID its peer
	// proved (a node certificate's), or "" when the listener does not
	// authenticate (an insecure cluster: requests are not checked). An
	// error closes the connection. Nil: no check. With an ID, every
	// request on the connection must name that node as its sender, or
	// the connection is closed (Raft believes the ID a request names).
	Sender func(net.Conn) (string, error)
	// Member tells whether a node may still talk to this one, checked at
	// every request of an authenticated connection (a member removed
	// while its connection stays open). Nil: every sender may.
	Member func(id string) bool
	// Voters and NonVoters bootstrap the group when this node has no Raft
	// state yet (a first start with an initial cluster); empty: join an
	// existing group (the leader adds this node).
	Voters, NonVoters []string
	// OnChange receives the state after every applied change and after a
	// snapshot restore. It must not block for long and must not modify it.
	OnChange func(*MetaState)
	// Alive tells whether a member is up (gossip), for Reconcile: voters
	// that are down are taken away first, and never so that the voters
	// left lack a live majority. Nil: every member counts as up.
	Alive func(id string) bool
	// Fast shortens Raft's timeouts (local clusters and tests).
	Fast   bool
	Logger *slog.Logger
}

// ErrNotLeader is returned by Apply on a node that is not the leader.
var ErrNotLeader = errors.New("this node is not the metadata leader")

// StartMetaLog opens (or creates) the node's Raft state and starts it.
func StartMetaLog(cfg MetaLogConfig) (*MetaLog, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m := &MetaLog{cfg: cfg, log: cfg.Logger, fsm: &metaFSM{state: &MetaState{tableCache: &TableCache{}}, onChange: cfg.OnChange}}
	hl := hclog.New(&hclog.LoggerOptions{Name: "raft", Output: &slogWriter{log: cfg.Logger}, Level: hclog.Info, DisableTime: true})

	var (
		logs   raft.LogStore
		stable raft.StableStore
		snaps  raft.SnapshotStore
		err    error
	)
	if cfg.Dir == "" {
		mem := raft.NewInmemStore()
		logs, stable, snaps = mem, mem, raft.NewInmemSnapshotStore()
	} else {
		if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("metadata log directory: %w", err)
		}
		m.bolt, err = raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.Dir, "raft.db")})
		if err != nil {
			return nil, fmt.Errorf("open metadata log %s: %w", filepath.Join(cfg.Dir, "raft.db"), err)
		}
		stable = m.bolt
		if logs, err = raft.NewLogCache(512, m.bolt); err != nil {
			m.bolt.Close()
			return nil, err
		}
		if snaps, err = raft.NewFileSnapshotStoreWithLogger(cfg.Dir, 2, hl); err != nil {
			m.bolt.Close()
			return nil, fmt.Errorf("metadata snapshots: %w", err)
		}
	}
	m.transport = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: &streamLayer{Listener: cfg.Listener, id: cfg.ID, dial: cfg.Dial,
			sender: cfg.Sender, member: cfg.Member, log: cfg.Logger},
		MaxPool: 3,
		Timeout: 10 * time.Second,
		Logger:  hl,
	})
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.Logger = hl
	rc.SnapshotThreshold = 1024
	rc.TrailingLogs = 2048
	if cfg.Fast {
		rc.HeartbeatTimeout = 400 * time.Millisecond
		rc.ElectionTimeout = 400 * time.Millisecond
		rc.LeaderLeaseTimeout = 200 * time.Millisecond
	}
	existing, err := raft.HasExistingState(logs, stable, snaps)
	if err != nil {
		m.closeStores()
		return nil, fmt.Errorf("read metadata log: %w", err)
	}
	if !existing && len(cfg.Voters) > 0 {
		var servers []raft.Server
		for _, id := range cfg.Voters {
			servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(id), Address: raft.ServerAddress(id)})
		}
		for _, id := range cfg.NonVoters {
			servers = append(servers, raft.Server{Suffrage: raft.Nonvoter, ID: raft.ServerID(id), Address: raft.ServerAddress(id)})
		}
		if err := raft.BootstrapCluster(rc, logs, stable, snaps, m.transport, raft.Configuration{Servers: servers}); err != nil {
			m.closeStores()
			return nil, fmt.Errorf("bootstrap metadata log: %w", err)
		}
		m.log.Info("metadata log bootstrapped", "voters", cfg.Voters, "nonvoters", cfg.NonVoters)
	}
	if m.raft, err = raft.NewRaft(rc, m.fsm, logs, stable, snaps, m.transport); err != nil {
		m.closeStores()
		return nil, fmt.Errorf("start metadata log: %w", err)
	}
	return m, nil
}

func (m *MetaLog) closeStores() {
	if m.transport != nil {
		m.transport.CloseStreams()
		m.transport.Close()
	}
	if m.bolt != nil {
		m.bolt.Close()
	}
}

// Close stops this node's member of the group (the group goes on).
func (m *MetaLog) Close() error {
	err := m.raft.Shutdown().Error()
	m.closeStores()
	return err
}

// State is the last applied metadata (shared: never modify it).
func (m *MetaLog) State() *MetaState { return m.fsm.current() }

// Leader is the current leader's ID ("" when unknown).
func (m *MetaLog) Leader() string {
	_, id := m.raft.LeaderWithID()
	return string(id)
}

// LogStats is this member's view of the log.
type LogStats struct {
	Leader                                     bool
	Term, LastIndex, CommitIndex, AppliedIndex uint64
	// LastContact is when the leader was last heard from (zero: never;
	// meaningless on the leader).
	LastContact time.Time
}

// Stats reads the member's log state (cheap: no call into the group).
func (m *MetaLog) Stats() LogStats {
	return LogStats{Leader: m.IsLeader(), Term: m.raft.CurrentTerm(), LastIndex: m.raft.LastIndex(),
		CommitIndex: m.raft.CommitIndex(), AppliedIndex: m.raft.AppliedIndex(), LastContact: m.raft.LastContact()}
}

// IsLeader reports whether this node leads the group.
func (m *MetaLog) IsLeader() bool { return m.raft.State() == raft.Leader }

// TransferLeadership asks the group to make id its leader (this node
// must lead) and waits for the outcome.
func (m *MetaLog) TransferLeadership(id string) error {
	return m.raft.LeadershipTransferToServer(raft.ServerID(id), raft.ServerAddress(id)).Error()
}

// LeaderCh signals leadership changes of this node.
func (m *MetaLog) LeaderCh() <-chan bool { return m.raft.LeaderCh() }

// Role is this node's role: leader, voter, nonvoter, or none (not in the
// group's configuration yet).
func (m *MetaLog) Role() string {
	if m.IsLeader() {
		return "leader"
	}
	roles, err := m.Roles()
	if err != nil {
		return "unknown"
	}
	if r, ok := roles[m.cfg.ID]; ok {
		return r
	}
	return "none"
}

// Roles maps every server of the group's configuration to voter or
// nonvoter.
func (m *MetaLog) Roles() (map[string]string, error) {
	f := m.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			out[string(s.ID)] = "voter"
		} else {
			out[string(s.ID)] = "nonvoter"
		}
	}
	return out, nil
}

// Apply commits a command through the log. It must run on the leader
// (ErrNotLeader otherwise); it returns the epoch after the command, or the
// reason the state refused it. A command that changes nothing succeeds
// with the current epoch.
func (m *MetaLog) Apply(ctx context.Context, c Command) (uint64, error) {
	if !m.IsLeader() {
		return 0, ErrNotLeader
	}
	timeout := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	c.Rules, c.At = CommandRules, time.Now().UnixNano()
	entry := c.Encode()
	if len(entry) > MaxLogEntryBytes {
		return 0, &RefusedError{Err: fmt.Errorf("metadata command %s of %d bytes is over the %d-byte limit of a log entry", c.Kind, len(entry), MaxLogEntryBytes)}
	}
	// Tried first on a copy of the state: a command it refuses (a bad
	// name, an unknown node, a stale generation) is answered now, not
	// stored in every member's log first. (The log's order still
	// decides: an entry in flight may change the state before this one
	// applies, which Apply then judges again.)
	if epoch, err := m.fsm.try(c); err != nil {
		return epoch, &RefusedError{Err: err}
	}
	f := m.raft.Apply(entry, timeout)
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return 0, fmt.Errorf("%w (%v)", ErrNotLeader, err)
		}
		return 0, err
	}
	res, _ := f.Response().(applyResult)
	if res.err != nil && !IsUnchanged(res.err) {
		return res.epoch, &RefusedError{Err: res.err}
	}
	return res.epoch, nil
}

// Reconcile makes the group's configuration match the members (see
// PlanVoterChange). Leader only; one change per call, so each is
// committed before the next is decided. The first call of a term waits
// for the log to be applied (a barrier): a new leader's state may lag the
// entries its predecessor committed, and deciding from it could undo a
// change just made.
func (m *MetaLog) Reconcile() (changed bool, err error) {
	if !m.IsLeader() {
		return false, ErrNotLeader
	}
	if term := m.raft.CurrentTerm(); m.barrierTerm.Load() != term {
		if err := m.raft.Barrier(10 * time.Second).Error(); err != nil {
			return false, err
		}
		m.barrierTerm.Store(term)
	}
	st := m.State()
	if !st.Initialized() {
		return false, nil
	}
	roles, err := m.Roles()
	if err != nil {
		return false, err
	}
	alive := m.cfg.Alive
	if alive == nil {
		alive = func(string) bool { return true }
	}
	op, id := PlanVoterChange(st, roles, m.cfg.ID, alive)
	timeout := 10 * time.Second
	switch op {
	case VoterAdd:
		return true, m.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(id), 0, timeout).Error()
	case NonvoterAdd:
		return true, m.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(id), 0, timeout).Error()
	case LeaderHandOff:
		return true, m.raft.LeadershipTransfer().Error()
	case ServerRemove:
		return true, m.raft.RemoveServer(raft.ServerID(id), 0, timeout).Error()
	case VoterDemote:
		return true, m.raft.DemoteVoter(raft.ServerID(id), 0, timeout).Error()
	}
	return false, nil
}

// The changes PlanVoterChange decides.
const (
	VoterNone     = ""
	VoterAdd      = "add-voter"
	NonvoterAdd   = "add-nonvoter"
	LeaderHandOff = "hand-off-leadership"
	ServerRemove  = "remove"
	VoterDemote   = "demote"
)

// PlanVoterChange decides the next change of the group's configuration
// (roles: server ID → "voter" or "nonvoter"), or VoterNone. Voters are
// chosen by PickVoters among the active members and the joining members a
// change in progress adds (they will be active at its end, and an
// operator replacing a dead node needs their vote); every other member not
// removed is a nonvoter; removed ones leave. Voters are added before any
// is taken away, and a voter that is down is added later; until it is in,
// only voters that are down or no longer active or joining are taken away
// (a live one in good standing stays, and a leader that is one keeps the
// lead): taking it away first would leave fewer voters, and less fault
// tolerance, than both the configuration before and the one wanted.
// Voters are taken away down ones first, then those not active, then by
// ID, and never so that the voters left lack a live majority (alive must
// count a member it has no news of as down): a configuration
// counts from the moment it is appended, so demoting a live voter while
// another is down could leave no quorum to commit anything again.
func PlanVoterChange(st *MetaState, roles map[string]string, self string, alive func(string) bool) (op, id string) {
	inNext := map[string]bool{}
	if st.Transition != nil {
		for _, n := range st.Transition.Next.Nodes {
			inNext[n.ID] = true
		}
	}
	want := map[string]string{}
	var eligible []MemberRecord
	for _, id := range sortedKeys(st.Members) {
		mr := st.Members[id]
		switch {
		case mr.State == StateRemoved:
		case mr.State == StateActive, mr.State == StateJoining && inNext[id]:
			eligible = append(eligible, *mr)
			want[id] = "nonvoter"
		default:
			want[id] = "nonvoter"
		}
	}
	for _, id := range PickVoters(eligible) {
		want[id] = "voter"
	}
	voters := func() []string {
		var out []string
		for id, r := range roles {
			if r == "voter" {
				out = append(out, id)
			}
		}
		return out
	}
	liveMajority := func(set []string) bool {
		live := 0
		for _, id := range set {
			if id == self || alive(id) {
				live++
			}
		}
		return len(set) > 0 && live > len(set)/2
	}
	for _, id := range sortedKeys(want) {
		// Added only while up, and only if the voters with it keep a live
		// majority (an add counts from the moment it is appended too).
		if want[id] == "voter" && roles[id] != "voter" && (id == self || alive(id)) && liveMajority(append(voters(), id)) {
			return VoterAdd, id
		}
	}
	for _, id := range sortedKeys(want) {
		if want[id] == "nonvoter" && roles[id] == "" {
			return NonvoterAdd, id
		}
	}
	waiting := false // a wanted voter not added yet (down, or no live majority with it)
	for id, w := range want {
		if w == "voter" && roles[id] != "voter" {
			waiting = true
		}
	}
	settled := func(id string) bool { // an active or joining member
		mr := st.Members[id]
		return mr != nil && (mr.State == StateActive || mr.State == StateJoining)
	}
	if want[self] != "voter" && !(waiting && settled(self)) {
		// This leader should not vote (leaving, removed, or no longer
		// picked): hand leadership over; the next leader demotes it. One
		// still active keeps the lead while a wanted voter is not in: no
		// leader would demote it meanwhile.
		return LeaderHandOff, ""
	}
	type cand struct {
		id            string
		down, settled bool // settled: an active or joining member
	}
	var cands []cand
	for _, id := range sortedKeys(roles) {
		w, ok := want[id]
		if ok && (w == "voter" || roles[id] != "voter") {
			continue
		}
		cands = append(cands, cand{id: id, down: id != self && !alive(id), settled: settled(id)})
	}
	slices.SortStableFunc(cands, func(a, b cand) int {
		switch {
		case a.down != b.down:
			if a.down {
				return -1
			}
			return 1
		case a.settled != b.settled:
			if b.settled {
				return -1
			}
			return 1
		}
		return strings.Compare(a.id, b.id)
	})
	for _, c := range cands {
		_, member := want[c.id]
		if waiting && roles[c.id] == "voter" && !c.down && c.settled {
			continue // stays until the wanted voters are in
		}
		if roles[c.id] == "voter" {
			rest := slices.DeleteFunc(voters(), func(v string) bool { return v == c.id })
			if !liveMajority(rest) {
				continue
			}
		}
		if !member {
			return ServerRemove, c.id
		}
		return VoterDemote, c.id
	}
	return VoterNone, ""
}

// PickVoters chooses up to five voters spread over the datacenters:
// round-robin over DCs (sorted), nodes by ID within a DC, trimmed to an
// odd count.
func PickVoters(members []MemberRecord) []string {
	byDC := map[string][]string{}
	for _, m := range members {
		byDC[m.DC] = append(byDC[m.DC], m.ID)
	}
	dcs := sortedKeys(byDC)
	for _, dc := range dcs {
		sort.Strings(byDC[dc])
	}
	var out []string
	for i := 0; len(out) < 5; i++ {
		added := false
		for _, dc := range dcs {
			if i < len(byDC[dc]) && len(out) < 5 {
				out = append(out, byDC[dc][i])
				added = true
			}
		}
		if !added {
			break
		}
	}
	if len(out)%2 == 0 && len(out) > 0 {
		out = out[:len(out)-1]
	}
	slices.Sort(out)
	return out
}

// applyResult is what the FSM returns for a command.
type applyResult struct {
	epoch uint64
	err   error
}

// metaFSM applies the log to a MetaState.
type metaFSM struct {
	mu       sync.Mutex
	state    *MetaState // owned by Apply/Restore
	snap     *MetaState // the last published copy
	onChange func(*MetaState)
}

func (f *metaFSM) current() *MetaState {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.snap == nil {
		return &MetaState{}
	}
	return f.snap
}

// try applies c to a copy of the state the log has applied so far and
// returns the refusal, if any (nil for an init, or before one: those are
// judged by the log alone). The copy is taken under the lock Apply holds
// (the published states are handed to onChange, which adds its cache).
func (f *metaFSM) try(c Command) (epoch uint64, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c.IsInit() || !f.state.Initialized() {
		return f.state.Epoch, nil
	}
	if err := f.state.Clone().Apply(c); err != nil && !IsUnchanged(err) {
		return f.state.Epoch, err
	}
	return f.state.Epoch, nil
}

func (f *metaFSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	c, err := DecodeLogEntry(l.Data)
	if err != nil {
		return applyResult{epoch: f.state.Epoch, err: err}
	}
	f.mu.Lock()
	err = f.state.Apply(c)
	epoch := f.state.Epoch
	var pub *MetaState
	if err == nil {
		pub = f.state.Clone()
		f.snap = pub
	}
	f.mu.Unlock()
	if pub != nil && f.onChange != nil {
		f.onChange(pub)
	}
	return applyResult{epoch: epoch, err: err}
}

func (f *metaFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, err := json.Marshal(f.state)
	if err != nil {
		return nil, err
	}
	return fsmSnapshot(b), nil
}

func (f *metaFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var st MetaState
	if err := json.NewDecoder(rc).Decode(&st); err != nil {
		return fmt.Errorf("metadata snapshot: %w", err)
	}
	if st.Initialized() {
		if _, err := st.Topology(); err != nil {
			return fmt.Errorf("metadata snapshot does not describe a valid cluster: %w", err)
		}
	}
	f.mu.Lock()
	st.tableCache = &TableCache{}
	f.state = &st
	pub := st.Clone()
	f.snap = pub
	f.mu.Unlock()
	if f.onChange != nil {
		f.onChange(pub)
	}
	return nil
}

type fsmSnapshot []byte

func (s fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (fsmSnapshot) Release() {}

// streamLayer carries Raft over the node's listener; addresses are node
// IDs, resolved by dial.
type streamLayer struct {
	net.Listener
	id   string
	dial func(ctx context.Context, id string) (net.Conn, error)
	// sender and member check the requests of accepted connections (see
	// MetaLogConfig).
	sender func(net.Conn) (string, error)
	member func(id string) bool
	log    *slog.Logger

	mu     sync.Mutex
	conns  map[net.Conn]bool
	closed bool
}

// Accept tracks accepted connections so Close can end their handlers
// (Raft's transport leaves them to the remote side otherwise).
func (s *streamLayer) Accept() (net.Conn, error) {
	c, err := s.Listener.Accept()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	if s.conns == nil {
		s.conns = map[net.Conn]bool{}
	}
	s.conns[c] = true
	var conn net.Conn = c
	if s.sender != nil {
		conn = &guardedConn{Conn: c, sender: s.sender, member: s.member, log: s.log}
	}
	return &trackedConn{Conn: conn, s: s, raw: c}, nil
}

// Close stops accepting and closes every accepted connection.
func (s *streamLayer) Close() error {
	err := s.Listener.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.conns = nil
	return err
}

type trackedConn struct {
	net.Conn
	s *streamLayer
	// raw is the accepted connection (the key in s.conns).
	raw  net.Conn
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.s.mu.Lock()
		delete(c.s.conns, c.raw)
		c.s.mu.Unlock()
	})
	return c.Conn.Close()
}

func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return s.dial(ctx, string(address))
}

// Addr is this node's ID: Raft tells peers its address, and that address
// must be the ID the others resolve.
func (s *streamLayer) Addr() net.Addr { return idAddr(s.id) }

type idAddr string

func (a idAddr) Network() string { return "meridian" }
func (a idAddr) String() string  { return string(a) }

// slogWriter turns hclog lines into slog records (hclog writes whole
// lines).
type slogWriter struct{ log *slog.Logger }

func (w *slogWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(string(p), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		level := slog.LevelInfo
		switch {
		case strings.Contains(line, net.ErrClosed.Error()):
			// A connection this node closed itself (its own shutdown, or
			// the transport dropping a pooled connection): Raft reports
			// the reader's error at ERROR, but nothing went wrong.
			level = slog.LevelDebug
		case strings.Contains(line, "[ERROR]"):
			level = slog.LevelError
		case strings.Contains(line, "[WARN]"):
			level = slog.LevelWarn
		case strings.Contains(line, "[DEBUG]"), strings.Contains(line, "[TRACE]"):
			level = slog.LevelDebug
		}
		w.log.Log(context.Background(), level, "metadata log: "+line)
	}
	return len(p), nil
}
