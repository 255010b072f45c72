package coordinator

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/engine/memory"
	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/placement"
	"github.com/meridiankv/meridian/replica"
	"github.com/meridiankv/meridian/transport"
	"github.com/meridiankv/meridian/version"
)

// liveExcept is every node alive but those listed.
type liveExcept map[string]bool

func (l liveExcept) Alive(n string) bool                { return !l[n] }
func (liveExcept) PendingHints(string) bool             { return false }
func (liveExcept) PendingHintsFrom(string, string) bool { return false }
func (liveExcept) DiskLow(string) bool                  { return false }

// TestFastClockForwardsLWWWrites: a node whose clock runs ahead of its
// peers' by more than MaxClockOffset does not coordinate last-writer-wins
// writes: it forwards them to another replica, so the stored timestamp is
// that replica's, not one that would win over the writes made until real
// time catches up. With no other replica to take the write it refuses it
// (FAILED_PRECONDITION, saying why); where siblings are kept it
// coordinates as usual.
func TestFastClockForwardsLWWWrites(t *testing.T) {
	base := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	const skew = 3 * time.Second
	topo, err := membership.NewTopology(1, 16, []membership.NodeInfo{
		{Node: placement.Node{ID: "n1", DC: "dc1", Rack: "r1", Weight: 1}},
		{Node: placement.Node{ID: "n2", DC: "dc1", Rack: "r2", Weight: 1}},
	}, []membership.KeyspaceSpec{
		{Name: "lww", Replication: map[string]int{"dc1": 2}, Conflict: "lww"},
		{Name: "dvv", Replication: map[string]int{"dc1": 2}},
	})
	if err != nil {
		t.Fatal(err)
	}
	net := transport.NewMem()
	live := liveExcept{}
	stores := map[string]*replica.Store{}
	coords := map[string]*Coordinator{}
	for id, ahead := range map[string]time.Duration{"n1": skew, "n2": 0} {
		store, err := replica.Open(memory.New(), id)
		if err != nil {
			t.Fatal(err)
		}
		c, err := New(Config{NodeID: id, DC: "dc1", Store: store, Peers: net, Live: live,
			Topology: func() *membership.Topology { return topo }, Secrets: [][]byte{[]byte("secret")},
			Now:        func() time.Time { return base.Add(ahead) },
			ClockAhead: func() time.Duration { return ahead }})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		net.Register(id, c)
		stores[id], coords[id] = store, c
	}
	ctx := context.Background()
	written := func(ks, node, key string) version.Timestamp {
		t.Helper()
		k, _ := topo.Keyspace(ks)
		set, err := stores[node].Get(replica.Loc{Keyspace: k.ID, Partition: topo.Ring.Partition([]byte(key))}, []byte(key))
		if err != nil || len(set.Siblings) != 1 {
			t.Fatalf("%s holds %v (%v), want one sibling", node, set, err)
		}
		return set.Siblings[0].Value.Time
	}
	all := &kvv1.Consistency{Level: kvv1.Level_LEVEL_ALL}

	if _, err := coords["n1"].Put(ctx, &kvv1.PutRequest{Keyspace: "lww", Key: []byte("a"), Value: []byte("v"), Consistency: all}); err != nil {
		t.Fatal(err)
	}
	for _, node := range []string{"n1", "n2"} {
		if ts := written("lww", node, "a"); ts.Time().After(base.Add(time.Millisecond)) {
			t.Fatalf("a last-writer-wins write sent to the fast node is stamped %v on %s, %v ahead of the other replica's clock",
				ts.Time().UTC(), node, ts.Time().Sub(base))
		}
	}

	if _, err := coords["n1"].Put(ctx, &kvv1.PutRequest{Keyspace: "dvv", Key: []byte("b"), Value: []byte("v"), Consistency: all}); err != nil {
		t.Fatal(err)
	}
	if ts := written("dvv", "n1", "b"); !ts.Time().Equal(base.Add(skew)) {
		t.Fatalf("where siblings are kept the fast node coordinates: stamped %v, want its own clock %v", ts.Time().UTC(), base.Add(skew))
	}

	net.Register("n2", nil)
	live["n2"] = true
	_, err = coords["n1"].Put(ctx, &kvv1.PutRequest{Keyspace: "lww", Key: []byte("c"), Value: []byte("v"), Consistency: &kvv1.Consistency{Level: kvv1.Level_LEVEL_ONE}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "clock runs 3s ahead") {
		t.Fatalf("a last-writer-wins write on the fast node with no other replica: %v, want FAILED_PRECONDITION saying why", err)
	}
	k, _ := topo.Keyspace("lww")
	if set, _ := stores["n1"].Get(replica.Loc{Keyspace: k.ID, Partition: topo.Ring.Partition([]byte("c"))}, []byte("c")); !set.IsEmpty() {
		t.Fatal("the refused write was stored")
	}
}
