package node_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/node"
)

// TestLocalQuorumIgnoresSlowRemoteDC: with every link into dc2 slowed
// down, LOCAL_QUORUM requests in dc1 are answered by dc1 replicas alone,
// while EACH_QUORUM waits for dc2; with dc2 cut off, EACH_QUORUM fails
// saying so and LOCAL_QUORUM keeps working.
func TestLocalQuorumIgnoresSlowRemoteDC(t *testing.T) {
	l := startCluster(t, node.LocalSpec{DCs: 2, NodesPerDC: 3, Engine: "memory"})
	var dc1 []*node.Node
	for _, n := range l.Nodes() {
		if n.DC() == "dc1" {
			dc1 = append(dc1, n)
		}
	}
	dcOf := map[string]string{}
	for _, m := range l.Members() {
		dcOf[m.ID] = m.DC
	}
	for _, n := range dc1 {
		n.Faults().DelayDC("dc2", 1500*time.Millisecond)
	}
	c := dial(t, dc1[0].Addr())
	ctx := ctxT(t)
	local := lvl(kvv1.Level_LEVEL_LOCAL_QUORUM)

	put, err := c.Put(ctx, &kvv1.PutRequest{Key: []byte("k"), Value: []byte("v"), Consistency: local})
	if err != nil {
		t.Fatal(err)
	}
	if put.Effective.N != 6 || put.Effective.W != 2 {
		t.Fatalf("effective = %v, want n=6 w=2", put.Effective)
	}
	for _, r := range put.Effective.Replicas {
		if dcOf[r] != "dc1" {
			t.Errorf("LOCAL_QUORUM put was answered by %s in %s; want dc1 only (%v)", r, dcOf[r], put.Effective.Replicas)
		}
	}
	get, err := c.Get(ctx, &kvv1.GetRequest{Key: []byte("k"), Consistency: local})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range get.Effective.Replicas {
		if dcOf[r] != "dc1" {
			t.Errorf("LOCAL_QUORUM get was answered by %s in %s; want dc1 only", r, dcOf[r])
		}
	}
	if got := vals(get.Siblings); strings.Join(got, ",") != "v" {
		t.Fatalf("get = %v", got)
	}

	// The premise: the coordinator sees every dc2 node up. (On a loaded
	// machine the test gossip profile's short probe timeouts can mark a
	// node dead for a moment; slowness is what this test is about.)
	eventually(t, "the coordinator to see every node alive", func() bool {
		for id := range dcOf {
			if !dc1[0].Alive(id) {
				return false
			}
		}
		return true
	})
	each, err := c.Put(ctx, &kvv1.PutRequest{Key: []byte("k2"), Value: []byte("v"), Consistency: lvl(kvv1.Level_LEVEL_EACH_QUORUM)})
	if err != nil {
		t.Fatal(err)
	}
	perDC := map[string]int{}
	for _, r := range each.Effective.Replicas {
		perDC[dcOf[r]]++
	}
	if perDC["dc1"] < 2 || perDC["dc2"] < 2 {
		t.Fatalf("EACH_QUORUM answered by %v; want at least 2 per DC", each.Effective.Replicas)
	}

	for _, n := range dc1 {
		n.Faults().Heal()
		n.Faults().CutDC("dc2")
	}
	_, err = c.Put(ctx, &kvv1.PutRequest{Key: []byte("k3"), Value: []byte("v"), Consistency: lvl(kvv1.Level_LEVEL_EACH_QUORUM)})
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "of 2 needed could answer") || !strings.Contains(st.Message(), "dc2:") {
		t.Fatalf("EACH_QUORUM with dc2 cut off = %v; want UNAVAILABLE naming dc2", err)
	}
	if _, err := c.Put(ctx, &kvv1.PutRequest{Key: []byte("k3"), Value: []byte("v"), Consistency: local}); err != nil {
		t.Fatalf("LOCAL_QUORUM with dc2 cut off: %v", err)
	}
}

func TestLastWriterWinsKeyspace(t *testing.T) {
	l := startCluster(t, node.LocalSpec{NodesPerDC: 3, Engine: "memory",
		Keyspaces: []membership.KeyspaceSpec{{Name: "cache", Replication: map[string]int{"dc1": 3}, Conflict: "lww"}}})
	nodes := l.Nodes()
	c1, c2 := dial(t, nodes[0].Addr()), dial(t, nodes[1].Addr())
	ctx := ctxT(t)
	// Two blind (concurrent) writes: siblings in a siblings keyspace, one
	// value — the later by hybrid logical clock — in an lww keyspace.
	for _, ks := range []string{"default", "cache"} {
		if _, err := c1.Put(ctx, &kvv1.PutRequest{Keyspace: ks, Key: []byte("x"), Value: []byte("first")}); err != nil {
			t.Fatal(err)
		}
		if _, err := c2.Put(ctx, &kvv1.PutRequest{Keyspace: ks, Key: []byte("x"), Value: []byte("second")}); err != nil {
			t.Fatal(err)
		}
	}
	get, err := c1.Get(ctx, &kvv1.GetRequest{Keyspace: "default", Key: []byte("x"), Consistency: lvl(kvv1.Level_LEVEL_ALL)})
	if err != nil || len(get.Siblings) != 2 {
		t.Fatalf("siblings keyspace: %v %v; want 2 siblings", vals(get.GetSiblings()), err)
	}
	get, err = c1.Get(ctx, &kvv1.GetRequest{Keyspace: "cache", Key: []byte("x"), Consistency: lvl(kvv1.Level_LEVEL_ALL)})
	if err != nil {
		t.Fatal(err)
	}
	if got := vals(get.Siblings); strings.Join(got, ",") != "second" {
		t.Fatalf("lww keyspace = %v; want only the later write", got)
	}
}

// TestLocalLevelKeepsTheCallersDC: a node whose DC has no live replica of a
// key must not satisfy LOCAL_QUORUM by forwarding to a replica elsewhere
// that would count its own DC as "local".
func TestLocalLevelKeepsTheCallersDC(t *testing.T) {
	l := startCluster(t, node.LocalSpec{DCs: 2, NodesPerDC: 2, Engine: "memory",
		Keyspaces: []membership.KeyspaceSpec{{Name: "ks", Replication: map[string]int{"dc1": 2, "dc2": 1}}}})
	key := []byte("k")
	topo := l.Nodes()[0].Topology()
	ks, _ := topo.Keyspace("ks")
	var dc2Replica string
	for _, r := range ks.Table.Replicas(topo.Ring.Partition(key)) {
		if r.DC == "dc2" {
			dc2Replica = r.Node
		}
	}
	var entry *node.Node
	for _, n := range l.Nodes() {
		if n.DC() == "dc2" && n.ID() != dc2Replica {
			entry = n
		}
	}
	if err := l.Stop(dc2Replica); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the stop to be seen", func() bool { return !entry.Alive(dc2Replica) })
	c := dial(t, entry.Addr())
	ctx := ctxT(t)
	_, err := c.Put(ctx, &kvv1.PutRequest{Keyspace: "ks", Key: key, Value: []byte("v"), Consistency: lvl(kvv1.Level_LEVEL_LOCAL_QUORUM)})
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "dc2") {
		t.Fatalf("LOCAL_QUORUM in dc2 with dc2's replica down = %v; want UNAVAILABLE about dc2", err)
	}
	// The same write at QUORUM goes through dc1.
	if _, err := c.Put(ctx, &kvv1.PutRequest{Keyspace: "ks", Key: key, Value: []byte("v"), Consistency: lvl(kvv1.Level_LEVEL_QUORUM)}); err != nil {
		t.Fatal(err)
	}
}
