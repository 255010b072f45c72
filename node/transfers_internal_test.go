package node

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/placement"
	"github.com/meridiankv/meridian/repair"
	"github.com/meridiankv/meridian/replica"
	"github.com/meridiankv/meridian/version"
)

// idleTransfers stands in for the peers, merger and checkpoints of a
// transfer runner that is never run: the glue's counting is under test.
type idleTransfers struct{}

var errIdle = errors.New("not used: the runner does not run")

func (idleTransfers) ScanPartition(context.Context, string, *internalv1.ScanPartitionRequest) (*internalv1.ScanPartitionResponse, error) {
	return nil, errIdle
}
func (idleTransfers) MergeLocal(string, []byte, version.Set) error      { return errIdle }
func (idleTransfers) Sync() error                                       { return nil }
func (idleTransfers) PutMeta(string, []byte) error                      { return errIdle }
func (idleTransfers) ScanMeta(string, func(string, []byte) error) error { return nil }
func (idleTransfers) DeleteMeta(string) error                           { return nil }

// TestTransferReportWaitsForEveryKeyspaceOnce: a partition moving in two
// keyspaces is reported once both tasks are done here, even when a new
// state of the same transition (another partition's report) arrives
// between the two: it lists the finished task again, which the runner
// does not run again. Counting it again kept the partition unreported,
// and the transition waited for ever.
// addingN4 is the metadata of three nodes (n1..n3 in dc1, keyspaces as
// specs add) with a committed change adding n4.
func addingN4(t *testing.T, specs ...membership.KeyspaceSpec) *membership.MetaState {
	t.Helper()
	st := &membership.MetaState{}
	var members []membership.MemberRecord
	for i, id := range []string{"n1", "n2", "n3"} {
		members = append(members, membership.MemberRecord{ID: id, DC: "dc1", Rack: []string{"r1", "r2", "r3"}[i], Weight: 1, GRPCAddr: "127.0.0.1:1"})
	}
	cmds := []membership.Command{{Kind: membership.CmdInit, ClusterID: "c1", Partitions: 32, Members: members}}
	for i := range specs {
		cmds = append(cmds, membership.Command{Kind: membership.CmdKeyspaceCreate, Keyspace: &specs[i]})
	}
	cmds = append(cmds,
		membership.Command{Kind: membership.CmdJoin, Member: &membership.MemberRecord{ID: "n4", DC: "dc1", Rack: "r4", Weight: 1, GRPCAddr: "127.0.0.1:4"}},
		membership.Command{Kind: membership.CmdPlan, Op: &membership.PlanOp{Op: membership.OpAdd, Node: "n4"}})
	for _, c := range cmds {
		if err := st.Apply(c); err != nil {
			t.Fatalf("%s: %v", c.Kind, err)
		}
	}
	if err := st.Apply(membership.Command{Kind: membership.CmdCommit, Expect: st.Plan}); err != nil {
		t.Fatal(err)
	}
	return st
}

// n4Glue is n4's transfer glue over idle peers; its reports are queued,
// not proposed.
func n4Glue() *transferGlue {
	self := membership.NodeInfo{Node: placement.Node{ID: "n4", DC: "dc1", Rack: "r4", Weight: 1}}
	g := &transferGlue{n: &Node{cfg: Config{ID: "n4"}, self: self},
		remaining: map[int]int{}, finished: map[replica.Loc]bool{}, reported: map[int]bool{},
		stopped: true}
	g.rt = repair.NewTransfers(repair.TransferConfig{Peers: idleTransfers{}, Merge: idleTransfers{}, Checkpoints: idleTransfers{}})
	return g
}

func TestTransferReportWaitsForEveryKeyspaceOnce(t *testing.T) {
	st := addingN4(t, membership.KeyspaceSpec{Name: "two", Replication: map[string]int{"dc1": 2}})
	topo, err := st.Topology()
	if err != nil {
		t.Fatal(err)
	}
	g := n4Glue()

	g.changed(st, topo)
	// A partition this node receives in both keyspaces.
	byPart := map[int][]repair.TransferTask{}
	for _, s := range g.rt.Status() {
		ks := topo.Keyspaces[s.Keyspace]
		byPart[s.Partition] = append(byPart[s.Partition], repair.TransferTask{Keyspace: s.Keyspace,
			Loc: replica.Loc{Keyspace: ks.ID, Partition: s.Partition}, Generation: s.Generation})
	}
	p := -1
	for q, tasks := range byPart {
		if len(tasks) == 2 && (p < 0 || q < p) {
			p = q
		}
	}
	if p < 0 {
		t.Fatalf("no partition moves to n4 in both keyspaces: %v", byPart)
	}
	first, second := byPart[p][0], byPart[p][1]

	g.done(first)
	g.done(first) // told twice: still one task
	if slices.Contains(g.toReport, p) {
		t.Fatalf("partition %d reported with one of its two keyspaces done", p)
	}
	g.changed(st, topo) // the same transition again
	g.done(second)
	if !slices.Contains(g.toReport, p) {
		t.Fatalf("partition %d not reported with both keyspaces done (remaining %d)", p, g.remaining[p])
	}
	if n := len(slices.DeleteFunc(slices.Clone(g.toReport), func(q int) bool { return q != p })); n != 1 {
		t.Fatalf("partition %d queued %d times, want once", p, n)
	}
}

// TestTransferReportRefusals: a report refused by the state or the
// leader is not sent again; one that may not have reached the log (no
// leader, a forward out of time) is.
func TestTransferReportRefusals(t *testing.T) {
	for _, c := range []struct {
		err     error
		refused bool
	}{
		{status.Error(codes.FailedPrecondition, "generation 3, current 4"), true},
		{status.Error(codes.InvalidArgument, "bad"), true},
		{status.Error(codes.PermissionDenied, "not n4"), true},
		{status.Error(codes.DeadlineExceeded, "forward timed out"), false},
		{context.DeadlineExceeded, false},
		{status.Error(codes.Unavailable, "no leader"), false},
		{membership.ErrNotLeader, false},
	} {
		if got := reportRefused(c.err); got != c.refused {
			t.Errorf("%v: refused %v, want %v", c.err, got, c.refused)
		}
	}
}

// TestCleanupRetriedUntilFinished: a clean-up pass that did not finish (a
// partition kept until its replicas can be synced) runs again after a
// wait, doubling, without waiting for a new epoch; a finished one is not
// run again for its epoch; one asked for while a pass runs follows it.
func TestCleanupRetriedUntilFinished(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		n := &Node{runCtx: ctx}
		st := &membership.MetaState{}
		if err := st.Apply(membership.Command{Kind: membership.CmdInit, ClusterID: "c1", Partitions: 16,
			Members: []membership.MemberRecord{{ID: "n1", DC: "dc1", Rack: "r1", Weight: 1, GRPCAddr: "127.0.0.1:1"}}}); err != nil {
			t.Fatal(err)
		}
		topo, err := st.Topology()
		if err != nil {
			t.Fatal(err)
		}
		n.topo.Store(topo)
		var mu sync.Mutex
		results, calls := []bool{false, false, true, true, true}, 0
		release := make(chan struct{})
		g := &transferGlue{n: n, clean: func() bool {
			mu.Lock()
			i := calls
			calls++
			mu.Unlock()
			if i == 3 {
				<-release // a long pass, asked for again meanwhile
			}
			return results[i]
		}}
		count := func() int {
			mu.Lock()
			defer mu.Unlock()
			return calls
		}
		epoch := topo.Epoch
		g.maybeCleanup(epoch)
		synctest.Wait()
		if c := count(); c != 1 {
			t.Fatalf("%d passes, want 1", c)
		}
		time.Sleep(cleanupMinWait)
		synctest.Wait()
		if c := count(); c != 2 {
			t.Fatalf("after %s: %d passes, want 2 (the unfinished one retried)", cleanupMinWait, c)
		}
		time.Sleep(cleanupMinWait) // the wait doubled: not yet
		synctest.Wait()
		if c := count(); c != 2 {
			t.Fatalf("retried after %s again, want the wait doubled", cleanupMinWait)
		}
		time.Sleep(cleanupMinWait)
		synctest.Wait()
		if c := count(); c != 3 {
			t.Fatalf("%d passes, want 3", c)
		}
		time.Sleep(2 * cleanupMaxWait) // finished: no more
		g.maybeCleanup(epoch)
		synctest.Wait()
		if c := count(); c != 3 {
			t.Fatalf("%d passes after one finished its epoch, want 3", c)
		}
		g.maybeCleanup(epoch + 1) // a new epoch: a long pass
		synctest.Wait()
		g.maybeCleanup(epoch + 2) // asked for meanwhile
		close(release)
		synctest.Wait()
		if c := count(); c != 5 {
			t.Fatalf("%d passes, want the one asked for during a pass run after it (5)", c)
		}
		cancel()
		g.stop()
	})
}

// TestTransferGlueIgnoresAnOlderState: a state older than one already
// taken (at start, the cached state can reach the glue after the log's
// newer one, on another goroutine) changes nothing: the runner keeps the
// newer state's tasks, here the abort's.
func TestTransferGlueIgnoresAnOlderState(t *testing.T) {
	st := addingN4(t)
	adding := st.Clone()
	addingTopo, err := adding.Topology()
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Apply(membership.Command{Kind: membership.CmdAbort, Generation: st.Transition.Generation}); err != nil {
		t.Fatal(err)
	}
	abortTopo, err := st.Topology()
	if err != nil {
		t.Fatal(err)
	}
	g := n4Glue()
	if len(func() []repair.TransferStatus { g.changed(adding, addingTopo); return g.rt.Status() }()) == 0 {
		t.Fatal("the add gives n4 no transfers")
	}
	g.changed(st, abortTopo)      // the log's newer state: the abort
	g.changed(adding, addingTopo) // the cached, older one, arriving last
	for _, s := range g.rt.Status() {
		if s.Generation == adding.Transition.Generation {
			t.Fatalf("after the abort, n4 runs a transfer of the aborted generation %d: %+v", s.Generation, s)
		}
	}
}
