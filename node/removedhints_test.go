package node_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/replica"
)

// TestRemovedNodeHandsOverItsHints: a node decommissioned while it holds
// a hint it could not deliver (its target unreachable from it, the
// other nodes too) hands it over once removed, though peers refuse the
// rest of its calls: the hint's write reaches its target. (Before, the
// removed node's deliveries were refused for good: the write's copy on
// it was stranded.) TLS, so that peers know who calls.
func TestRemovedNodeHandsOverItsHints(t *testing.T) {
	l := startSecureCluster(t, node.LocalSpec{NodesPerDC: 4, Partitions: 64, Engine: "memory",
		Keyspaces: []membership.KeyspaceSpec{{Name: "rf3", Replication: map[string]int{"dc1": 3}}}})
	ctx := ctxT(t)
	n1, n4 := l.Node("n1"), l.Node("n4")
	// A key n1, n2 and n3 replicate and n4 takes hints for.
	key := keyWith(t, n1, "rf3", func(reps, fbs []string) bool {
		return !slices.Contains(reps, "n4") && len(fbs) > 0 && fbs[0] == "n4"
	})
	n1.Faults().Cut("n2") // the write misses n2 and n3: to make a
	n1.Faults().Cut("n3") // quorum, a hint for one of them goes to n4
	for _, id := range []string{"n1", "n2", "n3"} {
		n4.Faults().Cut(id) // n4 can neither deliver it nor hand it on
	}
	creds, err := l.DialOption()
	if err != nil {
		t.Fatal(err)
	}
	put, err := kvv1.NewKVClient(dialWith(t, n1.Addr(), creds)).Put(ctx, &kvv1.PutRequest{Keyspace: "rf3", Key: key, Value: []byte("v1"), Consistency: lvl(kvv1.Level_LEVEL_QUORUM)})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(put.Effective.Hinted, []string{"n4"}) || len(n4.HintTargets()) != 1 {
		t.Fatalf("write hinted %v, n4 holds hints for %v; want one hint on n4", put.Effective.Hinted, n4.HintTargets())
	}
	target := l.Node(n4.HintTargets()[0])
	n1.Faults().Heal() // (n1 may lead the metadata log: the change needs it)

	propose(t, n1, membership.Command{Kind: membership.CmdPlan, Op: &membership.PlanOp{Op: membership.OpDecommission, Node: "n4"}})
	propose(t, n1, membership.Command{Kind: membership.CmdCommit, Expect: n1.MetaState().Plan})
	eventually(t, "n4 removed", func() bool {
		m, _ := n1.MetaState().Member("n4")
		return m.State == membership.StateRemoved
	})
	if !slices.Contains(n4.HintTargets(), target.ID()) {
		t.Fatalf("n4 holds hints for %v once removed, want %s's still held (cut off)", n4.HintTargets(), target.ID())
	}
	removed, _ := n1.MetaState().Member("n4")
	if removed.RemovedAt <= 0 || time.Since(time.Unix(0, removed.RemovedAt)) > time.Minute {
		t.Fatalf("n4 removed at %d, want the time of its removal", removed.RemovedAt)
	}
	// Peers take nothing else from it: not a plain write, not a hint
	// written after its removal (its certificate is still valid), not a
	// read.
	conn, err := n4.PeerConn("n1")
	if err != nil {
		t.Fatal(err)
	}
	rc := internalv1.NewReplicaClient(conn)
	if _, err := rc.Write(ctx, &internalv1.WriteRequest{Keyspace: "rf3", Key: key, Set: put.GetContext()}); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "may only hand over its hints") {
		t.Errorf("a plain write from removed n4: %v, want PERMISSION_DENIED", err)
	}
	for _, born := range []int64{0, time.Now().Add(2 * time.Minute).UnixNano()} {
		if _, err := rc.Write(ctx, &internalv1.WriteRequest{Keyspace: "rf3", Key: key, Set: put.GetContext(), HintFor: "n1", HintBornUnixNanos: born}); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "hints written before") {
			t.Errorf("a hint born at %d from removed n4: %v, want PERMISSION_DENIED", born, err)
		}
	}
	// Nor one older than its keyspace (one of the same name, dropped since).
	if _, err := rc.Write(ctx, &internalv1.WriteRequest{Keyspace: "rf3", Key: key, Set: put.GetContext(), HintFor: "n1", HintBornUnixNanos: time.Now().Add(-time.Hour).UnixNano()}); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "was created after the hint") {
		t.Errorf("a hint older than its keyspace from removed n4: %v, want PERMISSION_DENIED", err)
	}
	if _, err := rc.Read(ctx, &internalv1.ReadRequest{Keyspace: "rf3", Key: key}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a read from removed n4: %v, want PERMISSION_DENIED", err)
	}
	n4.Faults().Heal()
	eventually(t, "n4's hints handed over, and the write on their target", func() bool {
		if len(n4.HintTargets()) > 0 {
			return false
		}
		topo := target.Topology()
		ks, _ := topo.Keyspace("rf3")
		set, err := target.Store().Get(replica.Loc{Keyspace: ks.ID, Partition: topo.Ring.Partition(key)}, key)
		return err == nil && len(set.Siblings) == 1 && string(set.Siblings[0].Value.Bytes) == "v1"
	})
}
