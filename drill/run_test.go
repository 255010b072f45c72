package drill

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
)

// fakeCluster is an in-memory cluster for the shell: faults are a set of
// IDs per node, a dc-outage fault makes EACH_QUORUM fail and the outaged
// DC's QUORUM too, and stored values are sets that only grow (a perfect
// merge), so the set workload never loses an element.
type fakeCluster struct {
	topo Topology
	mu   struct {
		sync.Mutex
		faults  map[string][]*adminv1.Fault // node -> live faults
		data    map[string]map[string]bool  // key -> elements
		rounds  int
		cleared []string // nodes a clear reached
		// dropSets: writes of the drill's sets are acknowledged and not
		// stored (lost acknowledged writes).
		dropSets bool
		// injects numbers faults injected without an ID; loseReply makes
		// the next injection apply everywhere and answer UNAVAILABLE (its
		// reply lost).
		injects   int
		loseReply bool
		// stale is a node whose own copy of each set lacks the set's
		// first element until the set is read at ALL: a replica that
		// anti-entropy wrongly finds equal and only read repair fills.
		// readAll holds the keys read at ALL.
		stale   string
		readAll map[string]bool
		// picky is a node that replicates only the keys whose name ends
		// in pickySuffix (none when it is ""), as a node of a DC with more
		// nodes than replicas holds only some keys; every other node
		// replicates every key.
		picky, pickySuffix string
	}
}

func newFake() *fakeCluster {
	f := &fakeCluster{topo: topo3(1)}
	f.mu.faults = map[string][]*adminv1.Fault{}
	f.mu.data = map[string]map[string]bool{}
	f.mu.readAll = map[string]bool{}
	return f
}

func (f *fakeCluster) outaged() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, fs := range f.mu.faults {
		for _, fl := range fs {
			// Only a partition cuts a DC off; a node's disk-full does not.
			if fl.GetKind() == "partition" && len(fl.GetToDcs()) > 0 {
				return fl.GetToDcs()[0]
			}
		}
	}
	return ""
}

func (f *fakeCluster) env() Env {
	env := Env{Target: "fake", Topology: f.topo, KV: map[string]KV{}, Admin: map[string]adminv1.AdminClient{}}
	for _, dc := range f.topo.DCs() {
		env.KV[dc] = &fakeKV{f: f, dc: dc}
	}
	for _, n := range f.topo.Nodes {
		env.Admin[n.ID] = &fakeAdmin{f: f, node: n.ID}
	}
	return env
}

type fakeKV struct {
	f  *fakeCluster
	dc string
}

func (k *fakeKV) check(level kvv1.Level) error {
	out := k.f.outaged()
	if out == "" {
		return nil
	}
	if level == kvv1.Level_LEVEL_EACH_QUORUM || level == kvv1.Level_LEVEL_ALL || (level == kvv1.Level_LEVEL_QUORUM && k.dc == out) {
		return status.Error(codes.Unavailable, "not enough replicas")
	}
	return nil
}

func (k *fakeKV) Get(_ context.Context, key []byte, level kvv1.Level) ([][]byte, []byte, error) {
	if err := k.check(level); err != nil {
		return nil, nil, err
	}
	k.f.mu.Lock()
	defer k.f.mu.Unlock()
	if level == kvv1.Level_LEVEL_ALL {
		k.f.mu.readAll[string(key)] = true // read repair
	}
	return [][]byte{encodeSet(k.f.mu.data[string(key)])}, []byte("ctx"), nil
}

func (k *fakeKV) Put(_ context.Context, key, value, _ []byte, level kvv1.Level) ([]byte, error) {
	if err := k.check(level); err != nil {
		return nil, err
	}
	k.f.mu.Lock()
	defer k.f.mu.Unlock()
	if k.f.mu.dropSets && strings.HasPrefix(string(key), "drill/set/") {
		return []byte("ctx"), nil
	}
	set := k.f.mu.data[string(key)]
	if set == nil {
		set = map[string]bool{}
		k.f.mu.data[string(key)] = set
	}
	for e := range decodeSets([][]byte{value}) {
		set[e] = true
	}
	return []byte("ctx"), nil
}

type fakeAdmin struct {
	adminv1.AdminClient // not implemented: panics
	f                   *fakeCluster
	node                string
}

func (a *fakeAdmin) ListFaults(context.Context, *adminv1.ListFaultsRequest, ...grpc.CallOption) (*adminv1.ListFaultsResponse, error) {
	a.f.mu.Lock()
	defer a.f.mu.Unlock()
	return &adminv1.ListFaultsResponse{Nodes: []*adminv1.NodeFaults{{Node: a.node, Faults: slices.Clone(a.f.mu.faults[a.node])}}}, nil
}

func (a *fakeAdmin) InjectFault(_ context.Context, req *adminv1.InjectFaultRequest, _ ...grpc.CallOption) (*adminv1.InjectFaultResponse, error) {
	if req.GetFault().GetTtlSeconds() <= 0 {
		return nil, status.Error(codes.InvalidArgument, "ttl_seconds is required")
	}
	a.f.mu.Lock()
	defer a.f.mu.Unlock()
	id := req.GetFault().GetId()
	if id == "" { // named by the node, as nodes do
		a.f.mu.injects++
		id = fmt.Sprintf("f-%d", a.f.mu.injects)
	}
	fl := &adminv1.Fault{Id: id, Kind: req.GetFault().GetKind(), ToDcs: req.GetFault().GetToDcs(), TtlSeconds: req.GetFault().GetTtlSeconds()}
	resp := &adminv1.InjectFaultResponse{Fault: fl}
	for _, n := range a.f.topo.Nodes {
		// A fault of the same ID replaces the one applied (as on nodes).
		a.f.mu.faults[n.ID] = append(slices.DeleteFunc(a.f.mu.faults[n.ID], func(f *adminv1.Fault) bool { return f.GetId() == id }), fl)
		resp.Applied = append(resp.Applied, n.ID)
	}
	if a.f.mu.loseReply {
		a.f.mu.loseReply = false
		return nil, status.Error(codes.Unavailable, "connection reset (the reply was lost)")
	}
	return resp, nil
}

func (a *fakeAdmin) ClearFaults(_ context.Context, req *adminv1.ClearFaultsRequest, _ ...grpc.CallOption) (*adminv1.ClearFaultsResponse, error) {
	if !req.GetLocalOnly() {
		return nil, status.Error(codes.Unimplemented, "the drill clears node by node")
	}
	a.f.mu.Lock()
	defer a.f.mu.Unlock()
	n := len(a.f.mu.faults[a.node])
	a.f.mu.faults[a.node] = slices.DeleteFunc(a.f.mu.faults[a.node], func(f *adminv1.Fault) bool { return f.GetId() == req.GetId() })
	a.f.mu.cleared = append(a.f.mu.cleared, a.node)
	return &adminv1.ClearFaultsResponse{Cleared: uint32(n - len(a.f.mu.faults[a.node]))}, nil
}

func (a *fakeAdmin) Hints(context.Context, *adminv1.HintsRequest, ...grpc.CallOption) (*adminv1.HintsResponse, error) {
	resp := &adminv1.HintsResponse{Node: a.node}
	if a.f.outaged() != "" && a.node != "n3" {
		resp.Targets = []*adminv1.HintTarget{{Target: "n3", Count: 10}}
	}
	return resp, nil
}

// RepairRun finds a mismatch in the first round after the fault, none
// after.
func (a *fakeAdmin) RepairRun(context.Context, *adminv1.RepairRunRequest, ...grpc.CallOption) (grpc.ServerStreamingClient[adminv1.RepairProgress], error) {
	a.f.mu.Lock()
	a.f.mu.rounds++
	first := a.f.mu.rounds <= len(a.f.topo.Nodes)
	a.f.mu.Unlock()
	p := &adminv1.RepairProgress{PartitionsDone: 8, PartitionsTotal: 8, Done: true}
	if first {
		p.Mismatches = 2
	}
	return &fakeStream{msgs: []*adminv1.RepairProgress{{PartitionsDone: 4, PartitionsTotal: 8}, p}}, nil
}

func (a *fakeAdmin) Endpoints(_ context.Context, req *adminv1.EndpointsRequest, _ ...grpc.CallOption) (*adminv1.EndpointsResponse, error) {
	a.f.mu.Lock()
	defer a.f.mu.Unlock()
	resp := &adminv1.EndpointsResponse{Keyspace: req.GetKeyspace()}
	for _, n := range a.f.topo.Nodes {
		if n.ID == a.f.mu.picky && (a.f.mu.pickySuffix == "" || !strings.HasSuffix(string(req.GetKey()), a.f.mu.pickySuffix)) {
			continue
		}
		resp.Replicas = append(resp.Replicas, &adminv1.Endpoint{Node: n.ID, Dc: n.DC})
	}
	return resp, nil
}

// Ring: of 8 partitions, every node replicates all but the picky one,
// which replicates one, or none when no key lives on it.
func (a *fakeAdmin) Ring(_ context.Context, _ *adminv1.RingRequest, _ ...grpc.CallOption) (*adminv1.RingResponse, error) {
	a.f.mu.Lock()
	defer a.f.mu.Unlock()
	resp := &adminv1.RingResponse{Partitions: 8}
	for _, n := range a.f.topo.Nodes {
		held := uint32(8)
		if n.ID == a.f.mu.picky {
			held = 0
			if a.f.mu.pickySuffix != "" {
				held = 1
			}
		}
		resp.Nodes = append(resp.Nodes, &adminv1.RingNode{Node: &adminv1.Node{Id: n.ID, Dc: n.DC},
			Keyspaces: []*adminv1.KeyspaceShare{{Keyspace: "drill", ReplicaPartitions: held, Share: float64(held) / 8}}})
	}
	return resp, nil
}

func (a *fakeAdmin) ReplicaGet(_ context.Context, req *adminv1.ReplicaGetRequest, _ ...grpc.CallOption) (*adminv1.ReplicaGetResponse, error) {
	a.f.mu.Lock()
	defer a.f.mu.Unlock()
	set := a.f.mu.data[string(req.GetKey())]
	if a.node == a.f.mu.stale && !a.f.mu.readAll[string(req.GetKey())] && len(set) > 0 {
		set = maps.Clone(set)
		delete(set, slices.Sorted(maps.Keys(set))[0])
	}
	return &adminv1.ReplicaGetResponse{Node: req.GetNode(), Siblings: []*kvv1.Sibling{{Value: encodeSet(set)}}}, nil
}

type fakeStream struct {
	grpc.ClientStream
	msgs []*adminv1.RepairProgress
}

func (s *fakeStream) Recv() (*adminv1.RepairProgress, error) {
	if len(s.msgs) == 0 {
		return nil, io.EOF
	}
	m := s.msgs[0]
	s.msgs = s.msgs[1:]
	return m, nil
}

func fastConfig() Config {
	return Config{
		Scenario:  Scenario{Name: DCOutage, DC: "dc3"},
		Durations: Durations{Baseline: time.Second, Hold: time.Second, VerifyMin: time.Second, VerifyTimeout: 20 * time.Second},
		Rate:      40, ProbeRate: 20, SetRate: 20, OpTimeout: 200 * ms, ProbeTimeout: 200 * ms,
		// Samples often enough to see the backlog of a one-second outage
		// on a loaded machine.
		HintPoll: 100 * ms,
	}
}

// TestRunAgainstFakes runs a whole dc-outage drill against the in-memory
// cluster: the fault is injected through one node, cleared on every node
// directly, the rounds run until one is clean, and the report passes.
func TestRunAgainstFakes(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a drill of about 7 seconds")
	}
	f := newFake()
	var log strings.Builder
	cfg := fastConfig()
	cfg.Log = &log
	r, err := Run(context.Background(), cfg, f.env())
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log.String())
	}
	if !r.Pass {
		var b strings.Builder
		r.WriteTable(&b)
		t.Fatalf("the drill failed against a perfect fake:\n%s\n%s", b.String(), log.String())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range f.topo.Nodes {
		if len(f.mu.faults[n.ID]) != 0 || !slices.Contains(f.mu.cleared, n.ID) {
			t.Errorf("%s: faults %v after the drill, cleared there: %v; want the drill to clear every node itself", n.ID, f.mu.faults[n.ID], slices.Contains(f.mu.cleared, n.ID))
		}
	}
	// A round with mismatches, then clean ones: the one that proves
	// convergence began once the workload stopped (one that began while
	// it wrote never compared its last writes), and the time is its.
	last := r.Rounds[len(r.Rounds)-1]
	if len(r.Rounds) < 2 || r.Rounds[0].Clean || !last.Clean || last.StartS < r.LoadEndS || len(r.Rounds) > 3 {
		t.Errorf("rounds %+v (load stopped at %.3fs): want a round with mismatches, then a clean one begun after the load stopped", r.Rounds, r.LoadEndS)
	}
	if r.Summary.ConvergeS == nil || *r.Summary.ConvergeS < last.EndS-*r.HealedAtS-0.001 {
		t.Errorf("converged after %v s, want the time of round %d, begun after the load stopped", r.Summary.ConvergeS, last.Round)
	}
	if len(r.Hints) != 1 || r.Hints[0].Target != "n3" || r.Hints[0].Peak != 20 {
		t.Errorf("hints %+v: want n3's backlog, 10 on each of two nodes", r.Hints)
	}
	if r.Summary.Writes.Acked == 0 || r.Fault == nil || !strings.HasPrefix(r.Fault.ID, "f-drill-") {
		t.Errorf("writes %+v, fault %+v", r.Summary.Writes, r.Fault)
	}
	for _, want := range []string{"abort criteria:", "EACH_QUORUM fails fast during the outage", "induce: fault " + r.Fault.ID, "heal: fault " + r.Fault.ID + " cleared", "converged"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("progress log lacks %q:\n%s", want, log.String())
		}
	}
}

// TestRunAgainLosesNothingUnseen: a drill run again on the same cluster
// adds the same element names (dc1-000001, ...) as the first; when the
// second run's set writes are acknowledged and lost, the first run's
// copies must not hide it.
func TestRunAgainLosesNothingUnseen(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two drills of about 7 seconds")
	}
	f := newFake()
	var log strings.Builder
	cfg := fastConfig()
	cfg.Log = &log
	cfg.Durations.Settle = time.Second // the lost elements never come
	cfg.SetKeys = 1                    // every name in the same set both times
	if r, err := Run(context.Background(), cfg, f.env()); err != nil || !r.Pass {
		t.Fatalf("first run: %v\n%s", err, log.String())
	}
	f.mu.Lock()
	f.mu.dropSets = true
	f.mu.Unlock()
	cfg.SetRate /= 4 // fewer names than the first run wrote: all seen before
	r, err := Run(context.Background(), cfg, f.env())
	if err != nil {
		t.Fatalf("second run: %v\n%s", err, log.String())
	}
	if r.Pass || r.Summary.Writes.Lost == 0 {
		t.Fatalf("the second run's set writes were all lost, yet it reports %d lost of %d (pass %v)", r.Summary.Writes.Lost, r.Summary.Writes.Acked, r.Pass)
	}
}

// TestRunReplicaBehindFailsDespiteReadRepair: anti-entropy finds every
// replica equal, but n2's own copy of each set lacks an acknowledged
// element until a read at ALL repairs it. The final check must see n2 as
// it was, not as its own read at ALL left it: the replica criterion fails
// (and nothing is lost: the read at ALL finds every element).
func TestRunReplicaBehindFailsDespiteReadRepair(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a drill of about 7 seconds")
	}
	f := newFake()
	f.mu.stale = "n2"
	var log strings.Builder
	cfg := fastConfig()
	cfg.Log = &log
	cfg.Durations.Settle = time.Second // n2 never receives the element
	r, err := Run(context.Background(), cfg, f.env())
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log.String())
	}
	w := r.Summary.Writes
	if !w.Checked || w.Lost != 0 || w.Replicas["n2"] != w.Keys || w.ReplicaMissing() != w.Keys {
		t.Errorf("set check %+v: want nothing lost, and n2 alone lacking one element of each of the %d set(s)", w, w.Keys)
	}
	i := slices.IndexFunc(r.Criteria, func(v Verdict) bool { return v.Name == "every replica holds every acknowledged element" })
	if i < 0 || r.Criteria[i].Pass || !strings.Contains(r.Criteria[i].Got, "n2 lacks") || r.Pass {
		t.Errorf("criteria %+v (pass %v): want the replica criterion to fail on n2", r.Criteria, r.Pass)
	}
}

// TestRunSetsLiveOnTheNode: in a DC with more nodes than replicas, the
// plain set names (drill/set/RUN/i) may all live away from the node a
// scenario acts on, and "nothing lost, every replica holds every element"
// would pass without the check ever reading that node. Here n3 replicates
// only names ending in ".3", none of the plain ones: a disk-full drill of
// n3 must add to, and check, sets that live on it (half of them, the
// first name of each that does), and the report must say how many.
func TestRunSetsLiveOnTheNode(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a drill of about 7 seconds")
	}
	f := newFake()
	f.mu.picky, f.mu.pickySuffix = "n3", ".3"
	var log strings.Builder
	cfg := fastConfig()
	cfg.Log = &log
	cfg.Scenario = Scenario{Name: DiskFull, Node: "n3"}
	r, err := Run(context.Background(), cfg, f.env())
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log.String())
	}
	var table strings.Builder
	r.WriteTable(&table)
	if !r.Pass {
		t.Fatalf("the drill failed against a perfect fake:\n%s\n%s", table.String(), log.String())
	}
	w := r.Summary.Writes
	if _, read := w.Replicas["n3"]; !w.Checked || w.Keys != 4 || w.Node != "n3" || w.NodeKeys != 2 || !read {
		t.Errorf("set check %+v: want 4 sets checked, 2 of them on n3, and n3's own copies read", w)
	}
	if !strings.Contains(table.String(), "set keys stored on n3: 2 of 4") {
		t.Errorf("the report does not say how many sets n3 stores:\n%s", table.String())
	}
	// The sets written to are the ones chosen: two of them on n3, each
	// the first of its names there, the others under their plain names.
	f.mu.Lock()
	var sets []string
	for k := range f.mu.data {
		if strings.HasPrefix(k, "drill/set/") {
			sets = append(sets, k[strings.LastIndexByte(k, '/')+1:])
		}
	}
	f.mu.Unlock()
	slices.Sort(sets)
	if want := []string{"0.3", "1.3", "2", "3"}; !slices.Equal(sets, want) {
		t.Errorf("the workload wrote sets %v, want %v", sets, want)
	}
}

// TestRunRefusesANodeNoSetCanLiveOn: when no name tried for a set lives
// on the scenario's node, the drill fails before it touches the cluster,
// naming the node and the keyspace, and saying whether the node holds no
// partition of it at all.
func TestRunRefusesANodeNoSetCanLiveOn(t *testing.T) {
	for _, tc := range []struct {
		suffix string
		want   []string
	}{
		{"", []string{"n3 holds no partition of keyspace drill (admin Ring: 0 of 8 partitions)", "drill a node that replicates keyspace drill"}},
		// One partition in eight, but not under the first 256 names.
		{".999", []string{"none of the 256 names tried for set 0", "is replicated on n3 in keyspace drill", "though it holds 1 of 8 partitions"}},
	} {
		f := newFake()
		f.mu.picky, f.mu.pickySuffix = "n3", tc.suffix
		cfg := fastConfig()
		cfg.Scenario = Scenario{Name: SlowDisk, Node: "n3", Delay: 100 * ms}
		_, err := Run(context.Background(), cfg, f.env())
		for _, want := range tc.want {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("suffix %q: Run = %v, want an error containing %q", tc.suffix, err, want)
			}
		}
		f.mu.Lock()
		if len(f.mu.faults) > 0 {
			t.Errorf("suffix %q: faults %v injected by a drill that could not check its node", tc.suffix, f.mu.faults)
		}
		f.mu.Unlock()
	}
}

// TestRunClearsAFaultWhoseReplyWasLost: the first node asked applies the
// fault everywhere but its reply is lost; the drill injects the same
// fault (the same ID) through the next node, and heal clears it: no node
// keeps a fault after the drill.
func TestRunClearsAFaultWhoseReplyWasLost(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a drill of about 7 seconds")
	}
	f := newFake()
	f.mu.loseReply = true
	var log strings.Builder
	cfg := fastConfig()
	cfg.Log = &log
	if _, err := Run(context.Background(), cfg, f.env()); err != nil {
		t.Fatalf("Run: %v\n%s", err, log.String())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range f.topo.Nodes {
		if len(f.mu.faults[n.ID]) != 0 {
			t.Errorf("%s still applies %v after the drill", n.ID, f.mu.faults[n.ID])
		}
	}
}

// TestRunInterruptedClearsTheFault cancels a drill during its hold: Run
// returns an error, and the fault is gone from every node.
func TestRunInterruptedClearsTheFault(t *testing.T) {
	f := newFake()
	cfg := fastConfig()
	cfg.Durations.Hold = time.Minute
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for f.outaged() == "" {
			time.Sleep(10 * ms)
		}
		cancel()
	}()
	_, err := Run(ctx, cfg, f.env())
	if err == nil || !strings.Contains(err.Error(), "interrupted during the hold") {
		t.Fatalf("Run = %v, want an interruption during the hold", err)
	}
	if out := f.outaged(); out != "" {
		t.Errorf("the fault on %s is still there after an interrupted drill", out)
	}
}

func TestRunRefuses(t *testing.T) {
	f := newFake()
	f.mu.faults["n2"] = []*adminv1.Fault{{Id: "f-old", Kind: "delay", ExpiresInSeconds: 12}}
	if _, err := Run(context.Background(), fastConfig(), f.env()); err == nil || !strings.Contains(err.Error(), "node n2 already has fault f-old (delay, expires in 12s)") {
		t.Errorf("a cluster with a fault: %v, want a refusal naming it", err)
	}
	for _, tc := range []struct {
		change func(*Config)
		want   string
	}{
		{func(c *Config) { c.Scenario = Scenario{Name: NodeCrash, Node: "n1"} }, "node-crash kills and restarts nodes, which only a drill that started them can do: run it with --local"},
		{func(c *Config) { c.Scenario = Scenario{Name: DCOutage, DC: "dc7"} }, "no such datacenter"},
		{func(c *Config) { c.FaultTTL = 500 * ms }, "--fault-ttl 500ms is shorter than --hold 1s"},
		{func(c *Config) { c.Rate = -1 }, "must not be negative"},
		{func(c *Config) { c.Criteria.MaxConverge = 30 * time.Second }, "--max-converge 30s is longer than --verify-timeout 20s"},
	} {
		cfg := fastConfig()
		tc.change(&cfg)
		if _, err := Run(context.Background(), cfg, newFake().env()); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Run = %v, want an error containing %q", err, tc.want)
		}
	}
}

// TestConfigValidate: the defaults validate; a rate below one per second
// per DC (seconds with nothing due to judge them by) and a verify timeout
// too short for verify ever to see a recovery are refused, naming the
// flags to change.
func TestConfigValidate(t *testing.T) {
	var def Config
	def.fill()
	if err := def.Validate(); err != nil {
		t.Fatalf("the defaults: %v", err)
	}
	for _, tc := range []struct {
		change func(*Config)
		want   []string
	}{
		{func(c *Config) { c.ProbeRate = 0.5 }, []string{"--probe-rate 0.5: give at least 1 per second per DC"}},
		{func(c *Config) { c.Rate = 0.9 }, []string{"--rate 0.9: give at least 1 per second per DC"}},
		// Defaults: 3 healthy seconds after the heal's, the last final
		// 2s (the deadlines) + 0.2s after it ends.
		{func(c *Config) { c.Durations.VerifyTimeout = 6 * time.Second },
			[]string{"--verify-timeout 6s is too short", "give a --verify-timeout longer than 6.2s", "--op-timeout", "--probe-timeout"}},
		{func(c *Config) { c.Durations.VerifyTimeout = 6200 * ms }, []string{"--verify-timeout 6.2s is too short"}},
		{func(c *Config) { c.Durations.VerifyTimeout, c.ProbeTimeout = 10*time.Second, 6*time.Second }, []string{"longer than 10.2s"}},
	} {
		var c Config
		tc.change(&c)
		c.fill()
		err := c.Validate()
		for _, want := range tc.want {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("Validate = %v, want an error containing %q", err, want)
			}
		}
	}
	// Just enough: one operation per second, the set workload aside (the
	// LOCAL_QUORUM workload fills every second), and a verify timeout
	// past the earliest recovery.
	ok := Config{Rate: 1, ProbeRate: 1, SetRate: 0.5, Durations: Durations{VerifyTimeout: 6300 * ms}}
	ok.fill()
	if err := ok.Validate(); err != nil {
		t.Errorf("Validate = %v, want the least config that can pass accepted", err)
	}
}

func TestCodeName(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, "OK"},
		{status.Error(codes.Unavailable, "x"), "UNAVAILABLE"},
		{status.Error(codes.DeadlineExceeded, "x"), "DEADLINE_EXCEEDED"},
		{status.Error(codes.ResourceExhausted, "x"), "RESOURCE_EXHAUSTED"},
		{fmt.Errorf("wrapped: %w", context.DeadlineExceeded), "DEADLINE_EXCEEDED"},
		{fmt.Errorf("plain"), "UNKNOWN"},
	} {
		if got := CodeName(tc.err); got != tc.want {
			t.Errorf("CodeName(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}
