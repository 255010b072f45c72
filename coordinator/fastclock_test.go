package coordinator

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
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
// writes. Sent one by a client, it forwards it to another replica, so the
// stored timestamp is that replica's, not one that would win over the
// writes made until real time catches up; forwarded one by another node,
// it refuses it (UNAVAILABLE, CLOCK_AHEAD, nothing written) and the sender
// goes on to the next replica. With no other replica to take the write it
// refuses it the same way, saying why; where siblings are kept it
// coordinates as usual.
func TestFastClockForwardsLWWWrites(t *testing.T) {
	base := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	const skew = 3 * time.Second
	topo, err := membership.NewTopology(1, 16, []membership.NodeInfo{
		{Node: placement.Node{ID: "n1", DC: "dc1", Rack: "r1", Weight: 1}},
		{Node: placement.Node{ID: "n2", DC: "dc1", Rack: "r2", Weight: 1}},
		{Node: placement.Node{ID: "n3", DC: "dc1", Rack: "r3", Weight: 1}},
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
	for id, ahead := range map[string]time.Duration{"n1": skew, "n2": 0, "n3": 0} {
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
	// keyOn finds a key named name-N of ks whose replicas are, in
	// preference order, reps.
	keyOn := func(name, ks string, reps ...string) string {
		k, _ := topo.Keyspace(ks)
		for i := 0; ; i++ {
			key := fmt.Sprintf("%s-%d", name, i)
			var got []string
			for _, r := range k.Table.Replicas(topo.Ring.Partition([]byte(key))) {
				got = append(got, r.Node)
			}
			if slices.Equal(got, reps) {
				return key
			}
		}
	}
	stamped := func(ks, node, key string) version.Timestamp {
		t.Helper()
		k, _ := topo.Keyspace(ks)
		set, err := stores[node].Get(replica.Loc{Keyspace: k.ID, Partition: topo.Ring.Partition([]byte(key))}, []byte(key))
		if err != nil || len(set.Siblings) != 1 {
			t.Fatalf("%s holds %v (%v), want one sibling", node, set, err)
		}
		return set.Siblings[0].Value.Time
	}
	correct := func(ts version.Timestamp) bool { return !ts.Time().After(base.Add(time.Millisecond)) }
	all := &kvv1.Consistency{Level: kvv1.Level_LEVEL_ALL}

	// Sent to the fast node, a replica.
	a := keyOn("a", "lww", "n1", "n2")
	if _, err := coords["n1"].Put(ctx, &kvv1.PutRequest{Keyspace: "lww", Key: []byte(a), Value: []byte("v"), Consistency: all}); err != nil {
		t.Fatal(err)
	}
	for _, node := range []string{"n1", "n2"} {
		if ts := stamped("lww", node, a); !correct(ts) {
			t.Fatalf("a write sent to the fast node is stamped %v on %s, %v ahead of the other replicas' clocks", ts.Time().UTC(), node, ts.Time().Sub(base))
		}
	}

	// Forwarded by a node that is not a replica, to the fast node first.
	b := keyOn("b", "lww", "n1", "n2")
	if _, err := coords["n3"].Put(ctx, &kvv1.PutRequest{Keyspace: "lww", Key: []byte(b), Value: []byte("v"), Consistency: all}); err != nil {
		t.Fatal(err)
	}
	if ts := stamped("lww", "n1", b); !correct(ts) {
		t.Fatalf("a write forwarded to the fast node is stamped %v, %v ahead", ts.Time().UTC(), ts.Time().Sub(base))
	}
	_, err = coords["n1"].ServeCoordinate(ctx, &internalv1.CoordinateRequest{Put: &kvv1.PutRequest{Keyspace: "lww", Key: []byte(b), Value: []byte("w")}})
	if st, _ := status.FromError(err); st.Code() != codes.Unavailable || !HasReason(st, ReasonClockAhead) || wrote(err) {
		t.Fatalf("a forwarded write on the fast node: %v, want UNAVAILABLE with %s, nothing written", err, ReasonClockAhead)
	}

	// Where siblings are kept, the fast node coordinates.
	c := keyOn("c", "dvv", "n1", "n2")
	if _, err := coords["n1"].Put(ctx, &kvv1.PutRequest{Keyspace: "dvv", Key: []byte(c), Value: []byte("v"), Consistency: all}); err != nil {
		t.Fatal(err)
	}
	if ts := stamped("dvv", "n1", c); !ts.Time().Equal(base.Add(skew)) {
		t.Fatalf("where siblings are kept the fast node coordinates: stamped %v, want its own clock %v", ts.Time().UTC(), base.Add(skew))
	}

	// No other replica to take it.
	net.Register("n2", nil)
	live["n2"] = true
	d := keyOn("d", "lww", "n1", "n2")
	_, err = coords["n1"].Put(ctx, &kvv1.PutRequest{Keyspace: "lww", Key: []byte(d), Value: []byte("v"), Consistency: &kvv1.Consistency{Level: kvv1.Level_LEVEL_ONE}})
	if st, _ := status.FromError(err); st.Code() != codes.Unavailable || !HasReason(st, ReasonClockAhead) || !strings.Contains(err.Error(), "clock runs 3s ahead") {
		t.Fatalf("a last-writer-wins write on the fast node with no other replica: %v, want UNAVAILABLE with %s saying why", err, ReasonClockAhead)
	}
	k, _ := topo.Keyspace("lww")
	if set, _ := stores["n1"].Get(replica.Loc{Keyspace: k.ID, Partition: topo.Ring.Partition([]byte(d))}, []byte(d)); !set.IsEmpty() {
		t.Fatal("the refused write was stored")
	}
}
