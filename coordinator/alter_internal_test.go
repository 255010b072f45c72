package coordinator

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/engine/memory"
	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/replica"
	"github.com/meridiankv/meridian/transport"
)

// alterHalfway is a coordinator on node self (in dc) of a cluster whose
// nodes are dcs (node i in dcs[i-1]), while keyspace "ks" alters from
// replication from to to: partition switched has switched to the new
// replicas, waiting has not. keyIn returns a key of a partition.
func alterHalfway(t *testing.T, dcs []string, self, dc string, from, to map[string]int) (c *Coordinator, switched, waiting int, keyIn func(p int) []byte) {
	t.Helper()
	st := &membership.MetaState{}
	var members []membership.MemberRecord
	for i, d := range dcs {
		members = append(members, membership.MemberRecord{ID: fmt.Sprintf("n%d", i+1), DC: d, Rack: fmt.Sprintf("r%d", i+1), Weight: 1, GRPCAddr: "127.0.0.1:1"})
	}
	for _, cmd := range []membership.Command{
		{Kind: membership.CmdInit, ClusterID: "c1", Partitions: 16, Members: members},
		{Kind: membership.CmdKeyspaceCreate, Keyspace: &membership.KeyspaceSpec{Name: "ks", Replication: from}},
		{Kind: membership.CmdKeyspaceAlter, Keyspace: &membership.KeyspaceSpec{Name: "ks", Replication: to}},
	} {
		if err := st.Apply(cmd); err != nil {
			t.Fatalf("%s: %v", cmd.Kind, err)
		}
	}
	tr := st.Transition
	if tr == nil || len(tr.Moving) < 2 {
		t.Fatalf("the alter started no transition moving two partitions or more: %+v", tr)
	}
	switched, waiting = tr.Moving[0], tr.Moving[1]
	for _, n := range st.PendingFor(switched) {
		if err := st.Apply(membership.Command{Kind: membership.CmdTransferDone, Generation: tr.Generation, Node: n, Parts: []int{switched}}); err != nil {
			t.Fatal(err)
		}
	}
	topo, err := st.Topology()
	if err != nil {
		t.Fatal(err)
	}
	store, err := replica.Open(memory.New(), self)
	if err != nil {
		t.Fatal(err)
	}
	c, err = New(Config{NodeID: self, DC: dc, Store: store, Peers: transport.NewMem(), Live: liveExcept{},
		Topology: func() *membership.Topology { return topo }, Secrets: [][]byte{[]byte("secret")}, RequestTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	keyIn = func(p int) []byte {
		for i := 0; ; i++ {
			if k := fmt.Appendf(nil, "k%d", i); topo.Ring.Partition(k) == p {
				return k
			}
		}
	}
	return c, switched, waiting, keyIn
}

// TestQuorumFollowsTheServingList: while a keyspace's replication grows
// from 3 to 5, a partition that has switched is served by 5 replicas, so
// its N is 5 and QUORUM is 3; one that has not is still 3 and 2. (N came
// from the old spec for both: W = 2 and R = 2 of 5 replicas, a quorum
// read could miss an acknowledged write.)
func TestQuorumFollowsTheServingList(t *testing.T) {
	c, switched, waiting, keyIn := alterHalfway(t, []string{"dc1", "dc1", "dc1", "dc1", "dc1"}, "n1", "dc1",
		map[string]int{"dc1": 3}, map[string]int{"dc1": 5})
	quorum := &kvv1.Consistency{Level: kvv1.Level_LEVEL_QUORUM}
	for _, tc := range []struct {
		p, n, total int
	}{{switched, 5, 3}, {waiting, 3, 2}} {
		for _, op := range []Op{OpRead, OpWrite} {
			r, err := c.resolve("ks", keyIn(tc.p), quorum, op)
			if err != nil {
				t.Fatal(err)
			}
			if r.need.N != tc.n || r.need.Total != tc.total || len(r.reps) != tc.n {
				t.Errorf("partition %d, %v: N %d, QUORUM %d over %d replicas; want N %d, QUORUM %d", tc.p, op, r.need.N, r.need.Total, len(r.reps), tc.n, tc.total)
			}
		}
	}
}

// TestLocalLevelsWhileADCIsAdded: while a keyspace gains replicas in a
// new DC, a LOCAL_QUORUM request there for a partition whose new replicas
// do not serve yet is UNAVAILABLE (retry: it is a wait), not
// INVALID_ARGUMENT (which clients do not retry); once the partition has
// switched it resolves over the new DC's replicas.
func TestLocalLevelsWhileADCIsAdded(t *testing.T) {
	c, switched, waiting, keyIn := alterHalfway(t, []string{"dc1", "dc1", "dc1", "dc2", "dc2", "dc2"}, "n4", "dc2",
		map[string]int{"dc1": 3}, map[string]int{"dc1": 3, "dc2": 3})
	local := &kvv1.Consistency{Level: kvv1.Level_LEVEL_LOCAL_QUORUM}
	if _, err := c.resolve("ks", keyIn(waiting), local, OpRead); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "being added") ||
		!HasReason(status.Convert(err), ReasonReplicasPending) {
		t.Fatalf("LOCAL_QUORUM in dc2 before the partition switched: %v, want UNAVAILABLE saying the replicas are being added, reason %s (Meridian's answer: clients do not try every node)", err, ReasonReplicasPending)
	}
	r, err := c.resolve("ks", keyIn(switched), local, OpRead)
	if err != nil || r.need.PerDC["dc2"] != 2 {
		t.Fatalf("LOCAL_QUORUM in dc2 once the partition switched: %+v, %v; want 2 of dc2's 3", r, err)
	}
	// An explicit R or W overrides the level: it can be met by the
	// replicas serving now, wherever they are.
	for _, op := range []Op{OpRead, OpWrite} {
		explicit := &kvv1.Consistency{Level: kvv1.Level_LEVEL_LOCAL_QUORUM, Dc: "dc2", R: 1, W: 1}
		if r, err := c.resolve("ks", keyIn(waiting), explicit, op); err != nil || r.need.Total != 1 {
			t.Fatalf("%s with an explicit R/W of 1 and LOCAL_QUORUM in dc2 before the partition switched: %+v, %v; want 1 replica anywhere", op, r, err)
		}
	}
}

// TestUnknownDCIsNotEchoedWhole: a consistency.dc the cluster does not
// have is INVALID_ARGUMENT, naming it cut short: the caller's string, of
// any size, would make a status message over the reply limits.
func TestUnknownDCIsNotEchoedWhole(t *testing.T) {
	c, _, _, keyIn := alterHalfway(t, []string{"dc1", "dc1", "dc1", "dc2", "dc2", "dc2"}, "n4", "dc2",
		map[string]int{"dc1": 3}, map[string]int{"dc1": 3, "dc2": 3})
	_, err := c.resolve("ks", keyIn(0), &kvv1.Consistency{Level: kvv1.Level_LEVEL_LOCAL_QUORUM, Dc: strings.Repeat("x", 1<<20)}, OpRead)
	if status.Code(err) != codes.InvalidArgument || len(err.Error()) > 1024 || !strings.Contains(err.Error(), "1048576 bytes") {
		t.Fatalf("a 1 MiB consistency.dc: %v (message of %d bytes), want INVALID_ARGUMENT of under 1 KiB giving its size", status.Code(err), len(err.Error()))
	}
}
