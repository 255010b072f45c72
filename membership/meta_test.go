package membership

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/meridiankv/meridian/placement"
)

func member(id, dc, rack string) MemberRecord {
	return MemberRecord{ID: id, DC: dc, Rack: rack, Weight: 1, GRPCAddr: "127.0.0.1:1"}
}

// initState is a cluster of n nodes per DC over dcs DCs, with a table
// cache.
func initState(t *testing.T, dcs, n, q int) *MetaState {
	t.Helper()
	var ms []MemberRecord
	for d := 1; d <= dcs; d++ {
		for i := 1; i <= n; i++ {
			ms = append(ms, member(fmt.Sprintf("n%d", (d-1)*n+i), fmt.Sprintf("dc%d", d), fmt.Sprintf("r%d", i%2+1)))
		}
	}
	// Cached across commands, as the FSM's state is: a stale entry shows
	// as a difference from a state without one.
	st := &MetaState{tableCache: &TableCache{}}
	if err := st.Apply(Command{Kind: CmdInit, ClusterID: "c1", Partitions: q, Members: ms}); err != nil {
		t.Fatal(err)
	}
	return st
}

// mustApply applies c under the current rules, as MetaLog.Apply proposes
// it (unless c names older ones).
func mustApply(t *testing.T, st *MetaState, c Command) {
	t.Helper()
	if c.Rules == 0 {
		c.Rules = CommandRules
	}
	if err := st.Apply(c); err != nil {
		t.Fatalf("%s: %v", c.Kind, err)
	}
}

// finishTransfers reports every pending replica of every moving partition,
// as the nodes would once their copies are complete.
func finishTransfers(t *testing.T, st *MetaState) {
	t.Helper()
	for st.Transition != nil {
		tr := st.Transition
		progressed := false
		for _, p := range tr.Moving {
			for _, node := range st.PendingFor(p) {
				mustApply(t, st, Command{Kind: CmdTransferDone, Generation: tr.Generation, Node: node, Parts: []int{p}})
				progressed = true
			}
		}
		if !progressed && st.Transition != nil {
			t.Fatalf("transition stuck: %d of %d switched", len(st.Transition.Done), len(st.Transition.Moving))
		}
	}
}

func TestInitGivesAgreedTopology(t *testing.T) {
	st := initState(t, 2, 3, 64)
	if st.Epoch != 1 || st.ClusterID != "c1" {
		t.Fatalf("epoch %d cluster %q", st.Epoch, st.ClusterID)
	}
	topo, err := st.Topology()
	if err != nil {
		t.Fatal(err)
	}
	if !topo.Agreed() || len(topo.Nodes) != 6 || topo.Keyspaces[DefaultKeyspace].Table.N() != 6 {
		t.Fatalf("topology: agreed %v nodes %d", topo.Agreed(), len(topo.Nodes))
	}
	if err := st.Apply(Command{Kind: CmdInit, ClusterID: "c2", Partitions: 64, Members: []MemberRecord{member("x", "dc1", "r1")}}); err == nil {
		t.Fatal("a second init was accepted")
	}
	if st.ClusterID != "c1" || st.Epoch != 1 {
		t.Fatal("a refused init changed the state")
	}
}

func TestApplyIsDeterministic(t *testing.T) {
	cmds := []Command{
		{Kind: CmdJoin, Member: &MemberRecord{ID: "n7", DC: "dc1", Rack: "r3", Weight: 2, GRPCAddr: "h:1"}},
		{Kind: CmdKeyspaceCreate, Keyspace: &KeyspaceSpec{Name: "orders", Replication: map[string]int{"dc1": 2, "dc2": 1}}},
		{Kind: CmdPlan, Op: &PlanOp{Op: OpAdd, Node: "n7"}},
		{Kind: CmdPlan, Op: &PlanOp{Op: OpReweight, Node: "n4", Weight: 3}},
	}
	a, b := initState(t, 2, 3, 128), initState(t, 2, 3, 128)
	for _, c := range cmds {
		mustApply(t, a, c)
		// b gets the same command through its log encoding.
		dec, err := DecodeCommand(c.Encode())
		if err != nil {
			t.Fatal(err)
		}
		mustApply(t, b, dec)
	}
	mustApply(t, a, Command{Kind: CmdCommit, Expect: a.Plan})
	mustApply(t, b, Command{Kind: CmdCommit, Expect: b.Plan})
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if string(ja) != string(jb) {
		t.Fatal("the same commands gave different states")
	}
}

func TestJoinAddCommitMovesThenSwitches(t *testing.T) {
	st := initState(t, 1, 3, 64)
	mustApply(t, st, Command{Kind: CmdKeyspaceCreate, Keyspace: &KeyspaceSpec{Name: "two", Replication: map[string]int{"dc1": 2}}})
	before, _ := st.Topology()
	mustApply(t, st, Command{Kind: CmdJoin, Member: &MemberRecord{ID: "n4", DC: "dc1", Rack: "r2", Weight: 1, GRPCAddr: "h:4"}})
	joined, _ := st.Topology()
	if joined.Nodes["n4"].State != StateJoining || len(joined.Ring.Owned("n4")) != 0 {
		t.Fatal("a joining node must be a member that owns nothing")
	}
	if err := st.Apply(Command{Kind: CmdCommit, Expect: nil}); !errors.Is(err, ErrNoPlan) {
		t.Fatalf("commit without a plan: %v", err)
	}
	mustApply(t, st, Command{Kind: CmdPlan, Op: &PlanOp{Op: OpAdd, Node: "n4"}})
	if err := st.Apply(Command{Kind: CmdCommit, Expect: []PlanOp{{Op: OpAdd, Node: "n3"}}}); !errors.Is(err, ErrPlanChanged) {
		t.Fatalf("commit of another plan: %v", err)
	}
	mustApply(t, st, Command{Kind: CmdCommit, Expect: st.Plan})
	tr := st.Transition
	if tr == nil || len(tr.Moving) == 0 || len(st.Plan) != 0 {
		t.Fatalf("no transition after commit: %+v", tr)
	}
	commitEpoch := st.Epoch
	mid, err := st.Topology()
	if err != nil {
		t.Fatal(err)
	}
	// While moving: reads from the old lists, the new node pending.
	p := tr.Moving[0]
	ks := mid.Keyspaces[DefaultKeyspace]
	if !slices.Equal(ids(ks.Table.Replicas(p)), ids(before.Keyspaces[DefaultKeyspace].Table.Replicas(p))) {
		t.Fatal("a moving partition must read from its old replicas")
	}
	if pend := mid.Keyspaces["two"].Table.Pending(p); !slices.ContainsFunc(append(pend, ks.Table.Pending(p)...), func(r placementReplica) bool { return r.Node == "n4" }) {
		t.Fatalf("n4 is not pending for moving partition %d", p)
	}
	if mid.RouteEpoch(p) != commitEpoch {
		t.Fatalf("route epoch %d, want the commit's %d", mid.RouteEpoch(p), commitEpoch)
	}
	// A report for another generation, or by a node that is not pending, changes nothing.
	if err := st.Apply(Command{Kind: CmdTransferDone, Generation: tr.Generation + 7, Node: "n4", Parts: []int{p}}); !errors.Is(err, ErrStale) {
		t.Fatalf("stale report: %v", err)
	}
	if err := st.Apply(Command{Kind: CmdTransferDone, Generation: tr.Generation, Node: "n1", Parts: []int{p}}); !IsUnchanged(err) {
		t.Fatalf("report by a non-pending node: %v", err)
	}
	// The first report switches p: reads now from the new list.
	mustApply(t, st, Command{Kind: CmdTransferDone, Generation: tr.Generation, Node: "n4", Parts: []int{p}})
	if !st.Transition.IsDone(p) {
		t.Fatal("the partition did not switch after its only new replica reported")
	}
	sw, _ := st.Topology()
	if !slices.Contains(ids(sw.Keyspaces[DefaultKeyspace].Table.Replicas(p)), "n4") || len(sw.Keyspaces[DefaultKeyspace].Table.Pending(p)) != 0 {
		t.Fatal("a switched partition must read from its new replicas")
	}
	if sw.RouteEpoch(p) != st.Epoch {
		t.Fatal("the switch must move the partition's route epoch")
	}
	finishTransfers(t, st)
	final, _ := st.Topology()
	if st.Members["n4"].State != StateActive || len(final.Ring.Owned("n4")) == 0 {
		t.Fatal("after the transition n4 must be active and own partitions")
	}
}

func ids(reps []placementReplica) []string {
	out := make([]string, len(reps))
	for i, r := range reps {
		out[i] = r.Node
	}
	sortStrings(out)
	return out
}

func TestDecommissionRemovesWhenDone(t *testing.T) {
	st := initState(t, 1, 4, 64)
	mustApply(t, st, Command{Kind: CmdPlan, Op: &PlanOp{Op: OpDecommission, Node: "n2"}})
	mustApply(t, st, Command{Kind: CmdCommit, Expect: st.Plan})
	if st.Members["n2"].State != StateLeaving {
		t.Fatalf("n2 is %s during its decommission", st.Members["n2"].State)
	}
	// The last switch removes n2, at the time its command was proposed.
	for tries := 0; st.Transition != nil && tries < 10; tries++ {
		tr := st.Transition
		for _, p := range tr.Moving {
			for _, node := range st.PendingFor(p) {
				mustApply(t, st, Command{Kind: CmdTransferDone, Generation: tr.Generation, Node: node, Parts: []int{p}, At: int64(1000 + p)})
			}
		}
	}
	topo, _ := st.Topology()
	if m := st.Members["n2"]; m.State != StateRemoved || m.RemovedAt < 1000 {
		t.Fatalf("n2 is %s (removed at %d) after its decommission; want removed at its last switch's time", m.State, m.RemovedAt)
	}
	if _, ok := topo.Nodes["n2"]; ok {
		t.Fatal("a removed node must not be a member of the topology")
	}
	for p := 0; p < 64; p++ {
		for _, r := range topo.Keyspaces[DefaultKeyspace].Table.Replicas(p) {
			if r.Node == "n2" {
				t.Fatal("a decommissioned node still replicates")
			}
		}
	}
	if err := st.Apply(Command{Kind: CmdJoin, Member: &MemberRecord{ID: "n2", DC: "dc1", Weight: 1, GRPCAddr: "h:2"}}); err == nil || !strings.Contains(err.Error(), "never reused") {
		t.Fatalf("rejoin of a removed ID: %v", err)
	}
}

func TestReplaceMovesOnlyTheReplacedNode(t *testing.T) {
	st := initState(t, 1, 3, 64)
	before, _ := st.Topology()
	mustApply(t, st, Command{Kind: CmdJoin, Member: &MemberRecord{ID: "n9", DC: "dc1", Rack: "r1", Weight: 1, GRPCAddr: "h:9"}})
	mustApply(t, st, Command{Kind: CmdPlan, Op: &PlanOp{Op: OpReplace, Node: "n2", With: "n9"}})
	mustApply(t, st, Command{Kind: CmdCommit, Expect: st.Plan})
	finishTransfers(t, st)
	after, _ := st.Topology()
	for p := 0; p < 64; p++ {
		old := ids(before.Keyspaces[DefaultKeyspace].Table.Replicas(p))
		for i, n := range old {
			if n == "n2" {
				old[i] = "n9"
			}
		}
		sortStrings(old)
		if got := ids(after.Keyspaces[DefaultKeyspace].Table.Replicas(p)); !slices.Equal(old, got) {
			t.Fatalf("partition %d: %v, want %v", p, got, old)
		}
	}
	if st.Members["n2"].State != StateRemoved || st.Members["n9"].State != StateActive {
		t.Fatal("replace must remove the old node and activate the new one")
	}
}

func TestPlanRefusals(t *testing.T) {
	st := initState(t, 1, 3, 64)
	for _, c := range []struct {
		op   PlanOp
		want string
	}{
		{PlanOp{Op: OpAdd, Node: "n1"}, "only a joining node"},
		{PlanOp{Op: OpRemove, Node: "zz"}, "unknown node"},
		{PlanOp{Op: OpDecommission, Node: "n1"}, "does not fit"}, // default keyspace needs 3 in dc1
		{PlanOp{Op: OpReweight, Node: "n1", Weight: 0}, "weight"},
		{PlanOp{Op: "grow", Node: "n1"}, "use add"},
	} {
		err := st.Apply(Command{Kind: CmdPlan, Op: &c.op})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.op, err, c.want)
		}
	}
	if len(st.Plan) != 0 || st.Epoch != 1 {
		t.Fatal("refused steps changed the state")
	}
}

func TestKeyspaceDDL(t *testing.T) {
	st := initState(t, 2, 3, 64)
	spec := KeyspaceSpec{Name: "orders", Replication: map[string]int{"dc1": 2}, CreatedAt: 7} // the proposer's is ignored
	mustApply(t, st, Command{Kind: CmdKeyspaceCreate, Keyspace: &spec, At: 42})
	if got := st.Keyspaces["orders"].CreatedAt; got != 42 {
		t.Fatalf("keyspace created at %d, want its command's time 42", got)
	}
	if err := st.Apply(Command{Kind: CmdKeyspaceCreate, Keyspace: &spec}); !IsUnchanged(err) {
		t.Fatalf("identical create: %v", err)
	}
	other := KeyspaceSpec{Name: "orders", Replication: map[string]int{"dc1": 3}}
	if err := st.Apply(Command{Kind: CmdKeyspaceCreate, Keyspace: &other}); !errors.Is(err, ErrKeyspaceExists) {
		t.Fatalf("conflicting create: %v", err)
	}
	bad := KeyspaceSpec{Name: "x", Replication: map[string]int{"dc9": 1}}
	if err := st.Apply(Command{Kind: CmdKeyspaceCreate, Keyspace: &bad}); err == nil {
		t.Fatal("a keyspace in an unknown DC was created")
	}
	// A limits alter applies at once; a replication alter moves data.
	lim := spec
	lim.MaxSiblings = 10
	mustApply(t, st, Command{Kind: CmdKeyspaceAlter, Keyspace: &lim})
	if st.Transition != nil || st.Keyspaces["orders"].MaxSiblings != 10 {
		t.Fatal("a limits alter must apply without a transition")
	}
	grow := lim
	grow.Replication = map[string]int{"dc1": 2, "dc2": 2}
	mustApply(t, st, Command{Kind: CmdKeyspaceAlter, Keyspace: &grow})
	if st.Transition == nil || len(st.Transition.Moving) == 0 {
		t.Fatal("a replication alter must start a transition")
	}
	if err := st.Apply(Command{Kind: CmdKeyspaceDrop, Name: "orders"}); !errors.Is(err, ErrInTransition) {
		t.Fatalf("drop during a transition: %v", err)
	}
	finishTransfers(t, st)
	if got := st.Keyspaces["orders"].CreatedAt; got != 42 {
		t.Fatalf("keyspace created at %d after its alters, want 42 kept", got)
	}
	topo, _ := st.Topology()
	if topo.Keyspaces["orders"].Table.N() != 4 {
		t.Fatalf("N after the alter: %d", topo.Keyspaces["orders"].Table.N())
	}
	lww := grow
	lww.Conflict = "lww"
	if err := st.Apply(Command{Kind: CmdKeyspaceAlter, Keyspace: &lww}); err == nil || !strings.Contains(err.Error(), "cannot change") {
		t.Fatalf("conflict-mode alter: %v", err)
	}
	mustApply(t, st, Command{Kind: CmdKeyspaceDrop, Name: "orders"})
	if err := st.Apply(Command{Kind: CmdKeyspaceDrop, Name: DefaultKeyspace}); err == nil {
		t.Fatal("the default keyspace was dropped")
	}
}

func TestPickVotersSpreadsOverDCs(t *testing.T) {
	var ms []MemberRecord
	for d := 1; d <= 3; d++ {
		for i := 1; i <= 3; i++ {
			ms = append(ms, member(fmt.Sprintf("d%dn%d", d, i), fmt.Sprintf("dc%d", d), "r1"))
		}
	}
	v := PickVoters(ms)
	if len(v) != 5 {
		t.Fatalf("voters %v", v)
	}
	perDC := map[string]int{}
	for _, id := range v {
		perDC[id[:2]]++
	}
	if perDC["d1"] != 2 || perDC["d2"] != 2 || perDC["d3"] != 1 {
		t.Fatalf("voters not spread: %v", perDC)
	}
	if got := PickVoters(ms[:4]); len(got)%2 != 1 {
		t.Fatalf("an even voter count: %v", got)
	}
}

func TestDecodeCommandBounds(t *testing.T) {
	if _, err := DecodeCommand(make([]byte, MaxCommandBytes+1)); err == nil {
		t.Fatal("an oversized command was decoded")
	}
	if _, err := DecodeCommand([]byte("{")); err == nil {
		t.Fatal("a broken command was decoded")
	}
	// A log entry may be larger (the leader's restored init carries a
	// ring), within its own bound.
	big := Command{Kind: CmdKeyspaceDrop, Name: strings.Repeat("x", MaxCommandBytes)}.Encode()
	if _, err := DecodeCommand(big); err == nil {
		t.Fatal("a proposal over MaxCommandBytes was decoded")
	}
	if c, err := DecodeLogEntry(big); err != nil || len(c.Name) != MaxCommandBytes {
		t.Fatalf("a log entry over MaxCommandBytes: %v", err)
	}
	if _, err := DecodeLogEntry(make([]byte, MaxLogEntryBytes+1)); err == nil {
		t.Fatal("an oversized log entry was decoded")
	}
	st := initState(t, 1, 3, 64)
	if err := st.Apply(Command{Kind: "explode"}); err == nil {
		t.Fatal("an unknown command was applied")
	}
}

type placementReplica = placement.Replica

func sortStrings(s []string) { slices.Sort(s) }

// TestRetriedProposalsAreIdempotent: a plan step or a commit proposed again
// (a retry after an ambiguous failure) changes nothing and is not refused.
func TestRetriedProposalsAreIdempotent(t *testing.T) {
	st := initState(t, 1, 3, 64)
	mustApply(t, st, Command{Kind: CmdJoin, Member: &MemberRecord{ID: "n4", DC: "dc1", Rack: "r1", Weight: 1, GRPCAddr: "h:4"}})
	step := Command{Kind: CmdPlan, Op: &PlanOp{Op: OpAdd, Node: "n4"}}
	mustApply(t, st, step)
	epoch := st.Epoch
	if err := st.Apply(step); !IsUnchanged(err) || st.Epoch != epoch || len(st.Plan) != 1 {
		t.Fatalf("retried plan step: %v, plan %v", err, st.Plan)
	}
	commit := Command{Kind: CmdCommit, Expect: st.Plan}
	mustApply(t, st, commit)
	epoch = st.Epoch
	if err := st.Apply(commit); !IsUnchanged(err) || st.Epoch != epoch {
		t.Fatalf("retried commit: %v", err)
	}
	if err := st.Apply(Command{Kind: CmdCommit, Expect: []PlanOp{{Op: OpAdd, Node: "n9"}}}); !errors.Is(err, ErrInTransition) {
		t.Fatalf("another commit during the transition: %v", err)
	}
}

// replicaLists is every keyspace's replica list (sorted node IDs) and
// pending list of every partition: what the cluster serves from.
func replicaLists(t *testing.T, st *MetaState) map[string][2][]string {
	t.Helper()
	topo, err := st.Topology()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][2][]string{}
	for name, ks := range topo.Keyspaces {
		for p := 0; p < st.Partitions; p++ {
			out[fmt.Sprintf("%s/%d", name, p)] = [2][]string{ids(ks.Table.Replicas(p)), ids(ks.Table.Pending(p))}
		}
	}
	return out
}

// TestAbortUndoesAStuckAdd: n4's add is committed, some partitions switch
// to it, then it stops reporting (dead for good). Abort: every partition
// keeps serving from the replicas it served from, the switched ones stream
// back to their old replicas and the rest count as done; once the old
// replicas report, the ring is the one before the change, n4 is still
// only joining, and a new plan can be committed.
func TestAbortUndoesAStuckAdd(t *testing.T) {
	st := initState(t, 1, 3, 64)
	mustApply(t, st, Command{Kind: CmdKeyspaceCreate, Keyspace: &KeyspaceSpec{Name: "two", Replication: map[string]int{"dc1": 2}}})
	ringBefore := *st.Ring
	mustApply(t, st, Command{Kind: CmdJoin, Member: &MemberRecord{ID: "n4", DC: "dc1", Rack: "r2", Weight: 1, GRPCAddr: "h:4"}})
	mustApply(t, st, Command{Kind: CmdPlan, Op: &PlanOp{Op: OpAdd, Node: "n4"}})
	mustApply(t, st, Command{Kind: CmdCommit, Expect: st.Plan})
	tr := st.Transition
	switched := tr.Moving[:len(tr.Moving)/2]
	mustApply(t, st, Command{Kind: CmdTransferDone, Generation: tr.Generation, Node: "n4", Parts: switched})
	if len(st.Transition.Done) < len(switched) {
		t.Fatalf("%d switched, want at least %d", len(st.Transition.Done), len(switched))
	}
	wasDone := slices.Clone(st.Transition.Done)
	serving := replicaLists(t, st)

	if err := st.Apply(Command{Kind: CmdAbort, Generation: tr.Generation + 1}); !errors.Is(err, ErrStale) {
		t.Fatalf("abort of another generation: %v", err)
	}
	if err := st.Apply(Command{Kind: CmdPlan, Op: &PlanOp{Op: OpReweight, Node: "n1", Weight: 2}}); !errors.Is(err, ErrInTransition) || !strings.Contains(err.Error(), "cluster abort") {
		t.Fatalf("a plan during the transition: %v", err)
	}
	epoch := st.Epoch
	mustApply(t, st, Command{Kind: CmdAbort, Generation: tr.Generation})
	back := st.Transition
	if back == nil || !back.Aborted || back.Generation != epoch+1 || !slices.Equal(back.Ops, tr.Ops) {
		t.Fatalf("after abort: %+v", back)
	}
	if err := st.Apply(Command{Kind: CmdAbort, Generation: tr.Generation}); !IsUnchanged(err) {
		t.Fatalf("a retried abort: %v, want unchanged", err)
	}
	after := replicaLists(t, st)
	for key, lists := range serving {
		if !slices.Equal(after[key][0], lists[0]) {
			t.Fatalf("%s: abort changed the replicas served from: %v → %v", key, lists[0], after[key][0])
		}
	}
	for _, p := range back.Moving {
		// A partition that had switched streams back to the old replica n4
		// displaced (never to n4); one that had not is done at once.
		pending := st.PendingFor(p)
		switch switchedBefore := slices.Contains(wasDone, p); {
		case switchedBefore && (back.IsDone(p) || len(pending) == 0 || slices.Contains(pending, "n4")):
			t.Fatalf("switched partition %d: done in the undo %v, pending %v; want it to stream back to its displaced replica", p, back.IsDone(p), pending)
		case !switchedBefore && !back.IsDone(p):
			t.Fatalf("partition %d had not switched, but the undo waits for %v", p, pending)
		}
		if st.RouteEpochs[p] != back.Generation {
			t.Fatalf("partition %d route epoch %d, want %d", p, st.RouteEpochs[p], back.Generation)
		}
	}
	finishTransfers(t, st) // the old replicas report; n4 never does
	if st.Transition != nil {
		t.Fatal("the undo did not finish")
	}
	if got := *st.Ring; !ringsEqual(got, ringBefore) {
		t.Fatalf("ring after the undo differs from before the change")
	}
	if st.Members["n4"].State != StateJoining {
		t.Fatalf("n4 is %s after the undo, want joining", st.Members["n4"].State)
	}
	if err := st.Apply(Command{Kind: CmdAbort, Generation: back.Generation}); !errors.Is(err, ErrNoTransition) {
		t.Fatalf("abort with nothing in progress: %v", err)
	}
	// The dead joiner leaves the members without moving anything.
	mustApply(t, st, Command{Kind: CmdPlan, Op: &PlanOp{Op: OpRemove, Node: "n4"}})
	mustApply(t, st, Command{Kind: CmdCommit, Expect: st.Plan})
	if st.Transition != nil || st.Members["n4"].State != StateRemoved || !ringsEqual(*st.Ring, ringBefore) {
		t.Fatalf("remove of a joining node: transition %+v, n4 %s", st.Transition, st.Members["n4"].State)
	}
	mustApply(t, st, Command{Kind: CmdPlan, Op: &PlanOp{Op: OpReweight, Node: "n1", Weight: 2}})
	mustApply(t, st, Command{Kind: CmdCommit, Expect: st.Plan})
	finishTransfers(t, st)
}

// TestAbortOfADecommissionKeepsTheNode: the leaving node is active again,
// and aborting the abort takes the decommission up again to its end.
func TestAbortOfADecommissionKeepsTheNode(t *testing.T) {
	st := initState(t, 1, 4, 64)
	ringBefore := *st.Ring
	mustApply(t, st, Command{Kind: CmdPlan, Op: &PlanOp{Op: OpDecommission, Node: "n2"}})
	mustApply(t, st, Command{Kind: CmdCommit, Expect: st.Plan})
	next := st.Transition.Next
	mustApply(t, st, Command{Kind: CmdAbort, Generation: st.Transition.Generation})
	if st.Members["n2"].State != StateActive {
		t.Fatalf("n2 is %s after the abort, want active", st.Members["n2"].State)
	}
	// Nothing had switched: the undo is done at once.
	if st.Transition != nil || !ringsEqual(*st.Ring, ringBefore) {
		t.Fatalf("abort before any switch: transition %+v", st.Transition)
	}

	// Again, this time some partitions switch, then abort twice.
	mustApply(t, st, Command{Kind: CmdPlan, Op: &PlanOp{Op: OpDecommission, Node: "n2"}})
	mustApply(t, st, Command{Kind: CmdCommit, Expect: st.Plan})
	tr := st.Transition
	p := tr.Moving[0]
	for _, n := range st.PendingFor(p) {
		mustApply(t, st, Command{Kind: CmdTransferDone, Generation: tr.Generation, Node: n, Parts: []int{p}})
	}
	mustApply(t, st, Command{Kind: CmdAbort, Generation: tr.Generation})
	if st.Transition == nil || st.Members["n2"].State != StateActive {
		t.Fatalf("abort after a switch: transition %v, n2 %s", st.Transition != nil, st.Members["n2"].State)
	}
	mustApply(t, st, Command{Kind: CmdAbort, Generation: st.Transition.Generation})
	if st.Transition == nil || st.Transition.Aborted || st.Members["n2"].State != StateLeaving {
		t.Fatalf("abort of the abort: %+v, n2 %s", st.Transition, st.Members["n2"].State)
	}
	finishTransfers(t, st)
	if st.Members["n2"].State != StateRemoved || !ringsEqual(*st.Ring, next) {
		t.Fatalf("after the decommission taken up again: n2 %s", st.Members["n2"].State)
	}
}

// TestAbortOfAReplicationAlter restores the keyspace's old replication.
func TestAbortOfAReplicationAlter(t *testing.T) {
	st := initState(t, 1, 4, 64)
	mustApply(t, st, Command{Kind: CmdKeyspaceCreate, Keyspace: &KeyspaceSpec{Name: "k", Replication: map[string]int{"dc1": 2}}})
	mustApply(t, st, Command{Kind: CmdKeyspaceAlter, Keyspace: &KeyspaceSpec{Name: "k", Replication: map[string]int{"dc1": 3}}})
	tr := st.Transition
	p := tr.Moving[0]
	for _, n := range st.PendingFor(p) {
		mustApply(t, st, Command{Kind: CmdTransferDone, Generation: tr.Generation, Node: n, Parts: []int{p}})
	}
	mustApply(t, st, Command{Kind: CmdAbort, Generation: tr.Generation})
	// Every old replica is also a new one: nothing streams back, so the
	// undo is over at once.
	if st.Transition != nil {
		t.Fatalf("undo of a replication increase still in progress: %+v", st.Transition)
	}
	if got := st.Keyspaces["k"].Replication["dc1"]; got != 2 {
		t.Fatalf("replication after the undo %d, want 2", got)
	}
	topo, err := st.Topology()
	if err != nil {
		t.Fatal(err)
	}
	if n := len(topo.Keyspaces["k"].Table.Replicas(p)); n != 2 {
		t.Fatalf("partition %d has %d replicas after the undo, want 2", p, n)
	}

	// From one DC to another and back: the switched partition streams
	// back to its old DC's replicas.
	st = initState(t, 2, 3, 64)
	mustApply(t, st, Command{Kind: CmdKeyspaceCreate, Keyspace: &KeyspaceSpec{Name: "k", Replication: map[string]int{"dc1": 2}}})
	mustApply(t, st, Command{Kind: CmdKeyspaceAlter, Keyspace: &KeyspaceSpec{Name: "k", Replication: map[string]int{"dc2": 2}}})
	tr = st.Transition
	p = tr.Moving[0]
	for _, n := range st.PendingFor(p) {
		mustApply(t, st, Command{Kind: CmdTransferDone, Generation: tr.Generation, Node: n, Parts: []int{p}})
	}
	mustApply(t, st, Command{Kind: CmdAbort, Generation: tr.Generation})
	if st.Transition == nil || st.Transition.NextKeyspaces["k"].Replication["dc1"] != 2 || st.Keyspaces["k"].Replication["dc2"] != 2 {
		t.Fatalf("the undo of a move to dc2: %+v, current spec %+v", st.Transition, st.Keyspaces["k"])
	}
	if pend := st.PendingFor(p); len(pend) != 2 || st.Members[pend[0]].DC != "dc1" || st.Members[pend[1]].DC != "dc1" {
		t.Fatalf("partition %d pending %v in the undo, want its two dc1 replicas", p, pend)
	}
	finishTransfers(t, st)
	if got := st.Keyspaces["k"].Replication; got["dc1"] != 2 || got["dc2"] != 0 {
		t.Fatalf("replication after the undo %v, want dc1=2", got)
	}
}

func ringsEqual(a, b placement.RingState) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// TestRestoredInitCarriesTheRing: a cluster initialized from restored
// metadata keeps the restored ring (here one a committed add changed, so
// not what a fresh init of the same members computes), members, keyspaces
// and transition; takes the new cluster ID and client addresses; goes on
// from the restored epoch; and is refused when its members are not the
// restored ones.
func TestRestoredInitCarriesTheRing(t *testing.T) {
	old := initState(t, 1, 3, 64)
	mustApply(t, old, Command{Kind: CmdKeyspaceCreate, Keyspace: &KeyspaceSpec{Name: "two", Replication: map[string]int{"dc1": 2}}})
	mustApply(t, old, Command{Kind: CmdJoin, Member: &MemberRecord{ID: "n4", DC: "dc1", Rack: "r2", Weight: 1, GRPCAddr: "h:4"}})
	mustApply(t, old, Command{Kind: CmdAddrs, Member: &MemberRecord{ID: "n1", DC: "dc1", Rack: "r2", Weight: 1, GRPCAddr: "old:1", PeerAddr: "old:11", AdminAddr: "old:21", RaftAddr: "old:31"}})
	mustApply(t, old, Command{Kind: CmdPlan, Op: &PlanOp{Op: OpAdd, Node: "n4"}})
	mustApply(t, old, Command{Kind: CmdCommit, Expect: old.Plan})
	finishTransfers(t, old)
	mustApply(t, old, Command{Kind: CmdPlan, Op: &PlanOp{Op: OpDecommission, Node: "n2"}})
	mustApply(t, old, Command{Kind: CmdCommit, Expect: old.Plan})
	finishTransfers(t, old)
	// A change still in progress when the snapshots were taken.
	mustApply(t, old, Command{Kind: CmdPlan, Op: &PlanOp{Op: OpReweight, Node: "n3", Weight: 3}})
	mustApply(t, old, Command{Kind: CmdCommit, Expect: old.Plan})
	if old.Transition == nil {
		t.Fatal("the reweight did not start a transition")
	}
	// The restored metadata travels through the log as a command.
	raw := Command{Kind: CmdRestoredInit, ClusterID: "new", Restored: old}.Encode()
	if len(raw) > MaxCommandBytes/4 {
		t.Errorf("restored init of 64 partitions is %d bytes", len(raw))
	}

	newMembers := []MemberRecord{
		{ID: "n1", DC: "dc1", Rack: "r9", Weight: 7, GRPCAddr: "new:1"},
		{ID: "n3", DC: "dc1", Rack: "r2", Weight: 1, GRPCAddr: "new:3"},
		{ID: "n4", DC: "dc1", Rack: "r2", Weight: 1, GRPCAddr: "new:4"},
	}
	fresh := &MetaState{}
	mustApply(t, fresh, Command{Kind: CmdInit, ClusterID: "f", Partitions: 64, Members: newMembers})
	if ringsEqual(*fresh.Ring, *old.Ring) {
		t.Fatal("test setup: a fresh init gives the restored ring, so carrying it proves nothing")
	}

	cmd, err := DecodeCommand(raw)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Members = newMembers
	st := &MetaState{}
	mustApply(t, st, cmd)
	if st.ClusterID != "new" || st.RestoredFrom != "c1" {
		t.Errorf("cluster %q restored from %q, want new from c1", st.ClusterID, st.RestoredFrom)
	}
	if st.Epoch != old.Epoch+1 || st.RestoredEpoch != old.Epoch {
		t.Errorf("epoch %d restored from %d, want the restored %d + 1", st.Epoch, st.RestoredEpoch, old.Epoch)
	}
	if !ringsEqual(*st.Ring, *old.Ring) || st.Transition == nil || !ringsEqual(st.Transition.Next, old.Transition.Next) {
		t.Error("the restored ring or transition was not carried")
	}
	if !slices.Equal(st.RouteEpochs, old.RouteEpochs) || len(st.Keyspaces) != 2 || st.Keyspaces["two"].Replication["dc1"] != 2 {
		t.Errorf("route epochs or keyspaces not carried: %v", st.Keyspaces)
	}
	n1 := st.Members["n1"]
	if n1.GRPCAddr != "new:1" || n1.PeerAddr != "" || n1.AdminAddr != "" || n1.RaftAddr != "" {
		t.Errorf("n1's addresses %+v: want the new client address and the rest learned anew", n1)
	}
	if n1.Rack != "r2" || n1.Weight != 1 {
		t.Errorf("n1 is %s/%d: the restored rack and weight place data, not the flags'", n1.Rack, n1.Weight)
	}
	if n2 := st.Members["n2"]; n2.State != StateRemoved || n2.GRPCAddr != "" {
		t.Errorf("removed n2: %+v", n2)
	}
	if old.ClusterID != "c1" || old.Members["n1"].GRPCAddr != "old:1" {
		t.Error("the init changed the restored state it was given")
	}
	// Every node applying the same entry agrees.
	again := &MetaState{}
	mustApply(t, again, cmd)
	if a, b := again.Clone(), st.Clone(); !reflectJSONEqual(a, b) {
		t.Error("two nodes applying one restored init disagree")
	}

	for _, tc := range []struct {
		name    string
		kind    string
		members []MemberRecord
		cluster string
		want    string
	}{
		{"a member missing", "", newMembers[:2], "new", "n4"},
		{"a removed member listed", "", append(slices.Clone(newMembers), MemberRecord{ID: "n2", DC: "dc1", Weight: 1, GRPCAddr: "new:2"}), "new", "not a member of the restored cluster"},
		{"a stranger listed", "", append(slices.Clone(newMembers), MemberRecord{ID: "x", DC: "dc1", Weight: 1, GRPCAddr: "new:x"}), "new", "not a member of the restored cluster"},
		{"another DC", "", []MemberRecord{newMembers[0], newMembers[1], {ID: "n4", DC: "dc2", Weight: 1, GRPCAddr: "new:4"}}, "new", "was in DC dc1"},
		{"a node twice", "", append(slices.Clone(newMembers), newMembers[0]), "new", "twice"},
		{"the old cluster ID", "", newMembers, "c1", "new cluster ID"},
		{"restored metadata in a plain init", CmdInit, newMembers, "new", "must be a restored-init"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := &MetaState{}
			kind := CmdRestoredInit
			if tc.kind != "" {
				kind = tc.kind
			}
			err := st.Apply(Command{Kind: kind, ClusterID: tc.cluster, Members: tc.members, Restored: old})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("init: %v, want an error naming %q", err, tc.want)
			}
			if st.Initialized() {
				t.Fatal("a refused init initialized the state")
			}
		})
	}
}

func reflectJSONEqual(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// TestTransferReportAfterSnapshotRestore: a state restored from a Raft
// snapshot taken mid-transition, while no partition had a partial report
// (the usual case: one new replica per partition), takes the next report
// as the state it was taken from does, instead of panicking in the FSM
// (and again at every restart, which replays the same entry).
func TestTransferReportAfterSnapshotRestore(t *testing.T) {
	st := initState(t, 1, 3, 64)
	mustApply(t, st, Command{Kind: CmdJoin, Member: &MemberRecord{ID: "n4", DC: "dc1", Rack: "r2", Weight: 1, GRPCAddr: "h:4"}})
	mustApply(t, st, Command{Kind: CmdPlan, Op: &PlanOp{Op: OpAdd, Node: "n4"}})
	mustApply(t, st, Command{Kind: CmdCommit, Expect: st.Plan})
	if st.Transition == nil || len(st.Transition.Reported) != 0 {
		t.Fatalf("want a transition with no partial reports, got %+v", st.Transition)
	}
	a := &metaFSM{state: st}
	snap, err := a.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	b := &metaFSM{}
	if err := b.Restore(io.NopCloser(bytes.NewReader(snap.(fsmSnapshot)))); err != nil {
		t.Fatal(err)
	}
	tr := st.Transition
	report := Command{Kind: CmdTransferDone, Generation: tr.Generation, Node: "n4", Parts: tr.Moving[:1]}
	for name, f := range map[string]*metaFSM{"original": a, "restored": b} {
		if err := f.state.Apply(report); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	ja, _ := json.Marshal(a.state)
	jb, _ := json.Marshal(b.state)
	if string(ja) != string(jb) {
		t.Fatal("the restored state and the original differ after the same report")
	}
}

// TestRecreatedKeyspaceGetsNewStorage: a keyspace created under the name
// of one dropped is stored under another ID, so the dropped one's data,
// still on a node that was down during the drop, never shows in it; an
// alter (limits or replication, through its transition) keeps the ID;
// the proposer cannot choose it.
func TestRecreatedKeyspaceGetsNewStorage(t *testing.T) {
	st := initState(t, 2, 3, 64)
	id := func(name string) uint32 {
		t.Helper()
		topo, err := st.Topology()
		if err != nil {
			t.Fatal(err)
		}
		ks, ok := topo.Keyspace(name)
		if !ok {
			t.Fatalf("no keyspace %q", name)
		}
		return ks.ID
	}
	spec := KeyspaceSpec{Name: "orders", Replication: map[string]int{"dc1": 2}, StorageID: 99}
	mustApply(t, st, Command{Kind: CmdKeyspaceCreate, Keyspace: &spec})
	first := id("orders")
	if first != KeyspaceID("orders") {
		t.Fatalf("first keyspace stored under %d, want its name's ID %d (the proposer's 99 ignored)", first, KeyspaceID("orders"))
	}
	mustApply(t, st, Command{Kind: CmdKeyspaceDrop, Name: "orders"})
	seen := map[uint32]bool{first: true}
	for round := range 3 {
		mustApply(t, st, Command{Kind: CmdKeyspaceCreate, Keyspace: &spec})
		again := id("orders")
		if seen[again] {
			t.Fatalf("round %d: the re-created keyspace is stored under %d, an ID a dropped one used", round, again)
		}
		seen[again] = true
		lim := spec
		lim.MaxSiblings, lim.StorageID = 10, 7
		mustApply(t, st, Command{Kind: CmdKeyspaceAlter, Keyspace: &lim})
		grow := lim
		grow.Replication = map[string]int{"dc1": 2, "dc2": 2}
		mustApply(t, st, Command{Kind: CmdKeyspaceAlter, Keyspace: &grow})
		if got := id("orders"); got != again {
			t.Fatalf("round %d: during a replication alter the keyspace moved from ID %d to %d", round, again, got)
		}
		finishTransfers(t, st)
		if got := id("orders"); got != again {
			t.Fatalf("round %d: after a replication alter the keyspace moved from ID %d to %d", round, again, got)
		}
		// The ID survives the state's encoding (snapshots, restores).
		b, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		var back MetaState
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if topo, err := back.Topology(); err != nil || topo.Keyspaces["orders"].ID != again {
			t.Fatalf("round %d: decoded state: %v", round, err)
		}
		mustApply(t, st, Command{Kind: CmdKeyspaceDrop, Name: "orders"})
	}
	if len(st.DroppedKeyspaces) != 4 {
		t.Fatalf("dropped IDs remembered: %v, want 4", st.DroppedKeyspaces)
	}
	// Bounded: the oldest are forgotten.
	st.DroppedKeyspaces = make([]uint32, MaxDroppedKeyspaces)
	mustApply(t, st, Command{Kind: CmdKeyspaceCreate, Keyspace: &spec})
	mustApply(t, st, Command{Kind: CmdKeyspaceDrop, Name: "orders"})
	if len(st.DroppedKeyspaces) != MaxDroppedKeyspaces {
		t.Fatalf("%d dropped IDs remembered, want at most %d", len(st.DroppedKeyspaces), MaxDroppedKeyspaces)
	}
}

// TestLimitsAlterDuringReplicationAlter: limits changed while a
// replication alter moves data hold after it ends (its spec no longer
// brings the old limits back), whichever replication the request names;
// the replication alter sent again is recognized as the one under way.
func TestLimitsAlterDuringReplicationAlter(t *testing.T) {
	for _, named := range []string{"old", "new"} {
		t.Run("replication "+named, func(t *testing.T) {
			st := initState(t, 2, 3, 64)
			spec := KeyspaceSpec{Name: "orders", Replication: map[string]int{"dc1": 2}}
			mustApply(t, st, Command{Kind: CmdKeyspaceCreate, Keyspace: &spec})
			grow := spec
			grow.Replication = map[string]int{"dc1": 2, "dc2": 2}
			mustApply(t, st, Command{Kind: CmdKeyspaceAlter, Keyspace: &grow})
			if err := st.Apply(Command{Kind: CmdKeyspaceAlter, Keyspace: &grow, Rules: CommandRules}); !IsUnchanged(err) {
				t.Fatalf("the same replication alter again: %v, want unchanged", err)
			}
			lim := spec
			if named == "new" {
				lim = grow
			}
			lim.MaxSetBytes = 8 << 20
			mustApply(t, st, Command{Kind: CmdKeyspaceAlter, Keyspace: &lim})
			if st.Keyspaces["orders"].MaxSetBytes != 8<<20 {
				t.Fatal("the limits did not apply at once")
			}
			finishTransfers(t, st)
			got := st.Keyspaces["orders"]
			if got.MaxSetBytes != 8<<20 || got.Replication["dc2"] != 2 {
				t.Fatalf("after the move: %s; want the new limits and replication", DescribeSpec(got))
			}
		})
	}
}

// TestKeyspaceDropSentAgain: a drop naming the keyspace's storage ID,
// sent again after it applied (an ambiguous commit retried), changes
// nothing, and never drops a keyspace created since under the name.
func TestKeyspaceDropSentAgain(t *testing.T) {
	st := initState(t, 1, 3, 64)
	spec := KeyspaceSpec{Name: "orders", Replication: map[string]int{"dc1": 2}}
	mustApply(t, st, Command{Kind: CmdKeyspaceCreate, Keyspace: &spec})
	drop := Command{Kind: CmdKeyspaceDrop, Name: "orders", StorageID: KeyspaceID("orders"), Rules: CommandRules}
	mustApply(t, st, drop)
	if err := st.Apply(drop); !IsUnchanged(err) {
		t.Fatalf("the drop again: %v, want unchanged", err)
	}
	mustApply(t, st, Command{Kind: CmdKeyspaceCreate, Keyspace: &spec})
	if err := st.Apply(drop); !IsUnchanged(err) {
		t.Fatalf("the first drop again after a re-create: %v, want unchanged", err)
	}
	if _, ok := st.Keyspaces["orders"]; !ok {
		t.Fatal("a retried drop dropped the keyspace created since")
	}
	if err := st.Apply(Command{Kind: CmdKeyspaceDrop, Name: "nope"}); !errors.Is(err, ErrUnknownKeyspace) {
		t.Fatalf("drop of an unknown keyspace: %v", err)
	}
}

// TestOldEntriesReplayUnderTheirRules: entries a log holds from before
// the keyspace rules changed (no Rules) replay as they were decided then:
// a node replaying them computes the state the others hold in snapshots.
func TestOldEntriesReplayUnderTheirRules(t *testing.T) {
	st := initState(t, 1, 3, 64)
	spec := KeyspaceSpec{Name: "orders", Replication: map[string]int{"dc1": 2}}
	for _, c := range []Command{
		{Kind: CmdKeyspaceCreate, Keyspace: &spec},
		{Kind: CmdKeyspaceDrop, Name: "orders"},
		{Kind: CmdKeyspaceCreate, Keyspace: &spec},
	} {
		if err := st.Apply(c); err != nil {
			t.Fatal(err)
		}
	}
	topo, err := st.Topology()
	if err != nil {
		t.Fatal(err)
	}
	if id := topo.Keyspaces["orders"].ID; id != KeyspaceID("orders") || len(st.DroppedKeyspaces) != 0 {
		t.Fatalf("replayed old entries: orders stored under %d (want its name's %d), dropped IDs %v (want none)", id, KeyspaceID("orders"), st.DroppedKeyspaces)
	}
	// A rules-0 limits alter during a replication alter was refused.
	grow := spec
	grow.Replication = map[string]int{"dc1": 3}
	if err := st.Apply(Command{Kind: CmdKeyspaceAlter, Keyspace: &grow}); err != nil {
		t.Fatal(err)
	}
	if err := st.Apply(Command{Kind: CmdKeyspaceAlter, Keyspace: &grow}); !errors.Is(err, ErrInTransition) {
		t.Fatalf("an old replication alter sent again: %v, want refused as it was", err)
	}
}

// TestRejoinKeepsThePlannedPlacement: a joining node restarted with
// another rack or weight cannot change them while a plan or a change in
// progress places it (the ring was computed with the old ones); its
// addresses still refresh, and once nothing places it the change is
// taken.
func TestRejoinKeepsThePlannedPlacement(t *testing.T) {
	st := initState(t, 1, 3, 64)
	join := func(rack, addr string) Command {
		return Command{Kind: CmdJoin, Rules: CommandRules, Member: &MemberRecord{ID: "n9", DC: "dc1", Rack: rack, Weight: 1, GRPCAddr: addr}}
	}
	mustApply(t, st, join("r1", "h:9"))
	mustApply(t, st, Command{Kind: CmdPlan, Op: &PlanOp{Op: OpAdd, Node: "n9"}})
	if err := st.Apply(join("r2", "h:9")); err == nil || !strings.Contains(err.Error(), "plan clear") {
		t.Fatalf("rejoin in another rack while planned: %v, want refused saying what to do", err)
	}
	mustApply(t, st, join("r1", "h:10"))
	if st.Members["n9"].GRPCAddr != "h:10" {
		t.Fatal("a rejoin with the same placement did not refresh the address")
	}
	mustApply(t, st, Command{Kind: CmdCommit, Expect: st.Plan})
	if err := st.Apply(join("r2", "h:10")); err == nil {
		t.Fatal("rejoin in another rack during the change was taken")
	}
	finishTransfers(t, st)
	if got := st.Members["n9"]; got.Rack != "r1" || got.State != StateActive {
		t.Fatalf("after the change: %+v", got)
	}
	// Rules 1 entries (already in a log) replay as decided then.
	st2 := initState(t, 1, 3, 64)
	old := join("r1", "h:9")
	old.Rules = 1
	if err := st2.Apply(old); err != nil {
		t.Fatal(err)
	}
	mustApply(t, st2, Command{Kind: CmdPlan, Op: &PlanOp{Op: OpAdd, Node: "n9"}})
	old = join("r2", "h:9")
	old.Rules = 1
	if err := st2.Apply(old); err != nil || st2.Members["n9"].Rack != "r2" {
		t.Fatalf("a rules-1 rejoin: %v", err)
	}
}

// TestAbortDoneAtOnceWithATableCache: an abort that finishes in the
// command that applies it sets the current ring twice at one epoch (the
// would-be ring, then the one before the change). A state that keeps a
// table cache across commands (the FSM's) must compute what one with a
// fresh cache (restored from a snapshot) does: a decommission planned
// again moves the same partitions, instead of finishing at once on a
// cached ring that is no longer current.
func TestAbortDoneAtOnceWithATableCache(t *testing.T) {
	st := initState(t, 1, 4, 64) // with a cache kept across commands
	decommission := Command{Kind: CmdPlan, Op: &PlanOp{Op: OpDecommission, Node: "n2"}}
	mustApply(t, st, decommission)
	mustApply(t, st, Command{Kind: CmdCommit, Expect: st.Plan})
	mustApply(t, st, Command{Kind: CmdAbort, Generation: st.Transition.Generation})
	if st.Transition != nil || st.Members["n2"].State != StateActive {
		t.Fatalf("abort before any switch: transition %+v, n2 %s", st.Transition, st.Members["n2"].State)
	}
	fresh := st.Clone()
	fresh.UseCache(&TableCache{})
	for name, s := range map[string]*MetaState{"cached": st, "fresh": fresh} {
		mustApply(t, s, decommission)
		mustApply(t, s, Command{Kind: CmdCommit, Expect: s.Plan})
		if s.Transition == nil || len(s.Transition.Moving) == 0 || s.Members["n2"].State != StateLeaving {
			t.Fatalf("%s: the decommission planned again: transition %+v, n2 %s; want partitions moving off n2", name, s.Transition, s.Members["n2"].State)
		}
	}
	if !slices.Equal(st.Transition.Moving, fresh.Transition.Moving) {
		t.Fatalf("the cached state moves %v, the fresh one %v", st.Transition.Moving, fresh.Transition.Moving)
	}
	ja, _ := json.Marshal(st)
	jb, _ := json.Marshal(fresh)
	if string(ja) != string(jb) {
		t.Fatal("the cached state and the fresh one differ after the same commands")
	}
}

// TestAbortKeepsARemovedJoinerJoining: a plan that adds one joining node
// and removes another, aborted, leaves both joining (the removed one owns
// nothing: it never was active), so it can still be removed.
func TestAbortKeepsARemovedJoinerJoining(t *testing.T) {
	st := initState(t, 1, 3, 64)
	for _, id := range []string{"n4", "n5"} {
		mustApply(t, st, Command{Kind: CmdJoin, Member: &MemberRecord{ID: id, DC: "dc1", Rack: "r1", Weight: 1, GRPCAddr: "h:" + id}})
	}
	mustApply(t, st, Command{Kind: CmdPlan, Op: &PlanOp{Op: OpAdd, Node: "n4"}})
	mustApply(t, st, Command{Kind: CmdPlan, Op: &PlanOp{Op: OpRemove, Node: "n5"}})
	mustApply(t, st, Command{Kind: CmdCommit, Expect: st.Plan})
	if st.Transition == nil || st.Members["n5"].State != StateLeaving {
		t.Fatalf("after commit: transition %+v, n5 %s", st.Transition, st.Members["n5"].State)
	}
	beforeAbort := st.Clone()
	mustApply(t, st, Command{Kind: CmdAbort, Generation: st.Transition.Generation})
	if st.Transition != nil {
		t.Fatalf("abort before any switch still in progress: %+v", st.Transition)
	}
	for _, id := range []string{"n4", "n5"} {
		if got := st.Members[id].State; got != StateJoining {
			t.Fatalf("%s is %s after the abort, want joining", id, got)
		}
	}
	mustApply(t, st, Command{Kind: CmdPlan, Op: &PlanOp{Op: OpRemove, Node: "n5"}})
	mustApply(t, st, Command{Kind: CmdCommit, Expect: st.Plan})
	if st.Members["n5"].State != StateRemoved || st.Transition != nil {
		t.Fatalf("remove of n5 after the abort: n5 %s, transition %+v", st.Members["n5"].State, st.Transition)
	}

	// An abort already in a log replays as it was decided then.
	old := beforeAbort
	if err := old.Apply(Command{Kind: CmdAbort, Generation: old.Transition.Generation, Rules: 2}); err != nil {
		t.Fatal(err)
	}
	if got := old.Members["n5"].State; got != StateActive {
		t.Fatalf("a rules-2 abort left n5 %s, want active as it was decided", got)
	}
}

// TestRetryOfAChangeDoneAtOnce: a commit or an abort whose change
// finished in the command itself, sent again (a retry after the leader
// was lost), is unchanged, not refused for want of a plan or a change in
// progress; other commits and aborts still are.
func TestRetryOfAChangeDoneAtOnce(t *testing.T) {
	st := initState(t, 1, 3, 64)
	mustApply(t, st, Command{Kind: CmdJoin, Member: &MemberRecord{ID: "n4", DC: "dc1", Rack: "r1", Weight: 1, GRPCAddr: "h:4"}})
	mustApply(t, st, Command{Kind: CmdPlan, Op: &PlanOp{Op: OpRemove, Node: "n4"}})
	commit := Command{Kind: CmdCommit, Expect: st.Plan, Rules: CommandRules}
	mustApply(t, st, commit)
	if st.Transition != nil || st.Members["n4"].State != StateRemoved {
		t.Fatalf("remove of a joining node: transition %+v, n4 %s", st.Transition, st.Members["n4"].State)
	}
	epoch := st.Epoch
	if err := st.Apply(commit); !IsUnchanged(err) || st.Epoch != epoch {
		t.Fatalf("the commit again: %v, want unchanged", err)
	}
	if err := st.Apply(Command{Kind: CmdCommit, Expect: []PlanOp{{Op: OpRemove, Node: "n3"}}, Rules: CommandRules}); !errors.Is(err, ErrNoPlan) {
		t.Fatalf("a commit of another plan: %v, want %v", err, ErrNoPlan)
	}

	st = initState(t, 1, 4, 64)
	mustApply(t, st, Command{Kind: CmdPlan, Op: &PlanOp{Op: OpDecommission, Node: "n2"}})
	mustApply(t, st, Command{Kind: CmdCommit, Expect: st.Plan})
	abort := Command{Kind: CmdAbort, Generation: st.Transition.Generation, Rules: CommandRules}
	mustApply(t, st, abort)
	if st.Transition != nil {
		t.Fatalf("abort before any switch still in progress: %+v", st.Transition)
	}
	epoch = st.Epoch
	if err := st.Apply(abort); !IsUnchanged(err) || st.Epoch != epoch {
		t.Fatalf("the abort again: %v, want unchanged", err)
	}
	if err := st.Apply(Command{Kind: CmdAbort, Generation: abort.Generation + 1, Rules: CommandRules}); !errors.Is(err, ErrNoTransition) {
		t.Fatalf("an abort of another generation: %v, want %v", err, ErrNoTransition)
	}
	// Remembered in snapshots.
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var restored MetaState
	if err := json.Unmarshal(b, &restored); err != nil {
		t.Fatal(err)
	}
	if err := restored.Apply(abort); !IsUnchanged(err) {
		t.Fatalf("the abort again on a state restored from a snapshot: %v, want unchanged", err)
	}
	if err := restored.Clone().Apply(abort); !IsUnchanged(err) {
		t.Fatalf("the abort again on a clone: %v, want unchanged", err)
	}
}
