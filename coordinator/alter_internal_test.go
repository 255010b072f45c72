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

// TestQuorumFollowsTheServingList: while a keyspace's replication grows
// from 3 to 5, a partition that has switched is served by 5 replicas, so
// its N is 5 and QUORUM is 3; one that has not is still 3 and 2. (N came
// from the old spec for both: W = 2 and R = 2 of 5 replicas, a quorum
// read could miss an acknowledged write.)
func TestQuorumFollowsTheServingList(t *testing.T) {
	st := &membership.MetaState{}
	var members []membership.MemberRecord
	for i := 1; i <= 5; i++ {
		members = append(members, membership.MemberRecord{ID: fmt.Sprintf("n%d", i), DC: "dc1", Rack: fmt.Sprintf("r%d", i), Weight: 1, GRPCAddr: "127.0.0.1:1"})
	}
	for _, c := range []membership.Command{
		{Kind: membership.CmdInit, ClusterID: "c1", Partitions: 16, Members: members},
		{Kind: membership.CmdKeyspaceCreate, Keyspace: &membership.KeyspaceSpec{Name: "ks", Replication: map[string]int{"dc1": 3}}},
		{Kind: membership.CmdKeyspaceAlter, Keyspace: &membership.KeyspaceSpec{Name: "ks", Replication: map[string]int{"dc1": 5}}},
	} {
		if err := st.Apply(c); err != nil {
			t.Fatalf("%s: %v", c.Kind, err)
		}
	}
	tr := st.Transition
	if tr == nil || len(tr.Moving) < 2 {
		t.Fatalf("the alter started no transition moving two partitions or more: %+v", tr)
	}
	switched, waiting := tr.Moving[0], tr.Moving[1]
	for _, n := range st.PendingFor(switched) {
		if err := st.Apply(membership.Command{Kind: membership.CmdTransferDone, Generation: tr.Generation, Node: n, Parts: []int{switched}}); err != nil {
			t.Fatal(err)
		}
	}
	topo, err := st.Topology()
	if err != nil {
		t.Fatal(err)
	}
	store, err := replica.Open(memory.New(), "n1")
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{NodeID: "n1", DC: "dc1", Store: store, Peers: transport.NewMem(), Live: liveExcept{},
		Topology: func() *membership.Topology { return topo }, Secrets: [][]byte{[]byte("secret")}, RequestTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	keyIn := func(p int) []byte {
		for i := 0; ; i++ {
			if k := fmt.Appendf(nil, "k%d", i); topo.Ring.Partition(k) == p {
				return k
			}
		}
	}
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
	st := &membership.MetaState{}
	var members []membership.MemberRecord
	for i := 1; i <= 6; i++ {
		dc := "dc1"
		if i > 3 {
			dc = "dc2"
		}
		members = append(members, membership.MemberRecord{ID: fmt.Sprintf("n%d", i), DC: dc, Rack: fmt.Sprintf("r%d", i), Weight: 1, GRPCAddr: "127.0.0.1:1"})
	}
	for _, c := range []membership.Command{
		{Kind: membership.CmdInit, ClusterID: "c1", Partitions: 16, Members: members},
		{Kind: membership.CmdKeyspaceCreate, Keyspace: &membership.KeyspaceSpec{Name: "ks", Replication: map[string]int{"dc1": 3}}},
		{Kind: membership.CmdKeyspaceAlter, Keyspace: &membership.KeyspaceSpec{Name: "ks", Replication: map[string]int{"dc1": 3, "dc2": 3}}},
	} {
		if err := st.Apply(c); err != nil {
			t.Fatalf("%s: %v", c.Kind, err)
		}
	}
	tr := st.Transition
	switched, waiting := tr.Moving[0], tr.Moving[1]
	for _, n := range st.PendingFor(switched) {
		if err := st.Apply(membership.Command{Kind: membership.CmdTransferDone, Generation: tr.Generation, Node: n, Parts: []int{switched}}); err != nil {
			t.Fatal(err)
		}
	}
	topo, err := st.Topology()
	if err != nil {
		t.Fatal(err)
	}
	store, err := replica.Open(memory.New(), "n4")
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{NodeID: "n4", DC: "dc2", Store: store, Peers: transport.NewMem(), Live: liveExcept{},
		Topology: func() *membership.Topology { return topo }, Secrets: [][]byte{[]byte("secret")}, RequestTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	keyIn := func(p int) []byte {
		for i := 0; ; i++ {
			if k := fmt.Appendf(nil, "k%d", i); topo.Ring.Partition(k) == p {
				return k
			}
		}
	}
	local := &kvv1.Consistency{Level: kvv1.Level_LEVEL_LOCAL_QUORUM}
	if _, err := c.resolve("ks", keyIn(waiting), local, OpRead); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "being added") {
		t.Fatalf("LOCAL_QUORUM in dc2 before the partition switched: %v, want UNAVAILABLE saying the replicas are being added", err)
	}
	r, err := c.resolve("ks", keyIn(switched), local, OpRead)
	if err != nil || r.need.PerDC["dc2"] != 2 {
		t.Fatalf("LOCAL_QUORUM in dc2 once the partition switched: %+v, %v; want 2 of dc2's 3", r, err)
	}
}
