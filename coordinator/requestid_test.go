package coordinator

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
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

// failingWrites fails every replica write while failing is set, and for
// good every later write of a version it failed (the failed write's
// background retries never land: what the test sees is the retry's).
type failingWrites struct {
	*transport.Mem
	failing atomic.Bool
	mu      sync.Mutex
	failed  map[string]bool // dots
}

func (f *failingWrites) Write(ctx context.Context, node string, req *internalv1.WriteRequest) error {
	set, err := version.DecodeSet(req.GetSet())
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range set.Siblings {
		dot := fmt.Sprint(s.Dot)
		if f.failing.Load() {
			if f.failed == nil {
				f.failed = map[string]bool{}
			}
			f.failed[dot] = true
		}
		if f.failed[dot] {
			return status.Error(codes.Unavailable, "cut")
		}
	}
	return f.Mem.Write(ctx, node, req)
}

// requestIDCluster is three in-memory coordinators, keyspace "ks" with two
// replicas, and a key of it whose replicas are n2 and n3 (n1 holds none).
func requestIDCluster(t *testing.T) (map[string]*Coordinator, map[string]*replica.Store, *failingWrites, *membership.Topology, func(string) string) {
	t.Helper()
	topo, err := membership.NewTopology(1, 16, []membership.NodeInfo{
		{Node: placement.Node{ID: "n1", DC: "dc1", Rack: "r1", Weight: 1}},
		{Node: placement.Node{ID: "n2", DC: "dc1", Rack: "r2", Weight: 1}},
		{Node: placement.Node{ID: "n3", DC: "dc1", Rack: "r3", Weight: 1}},
	}, []membership.KeyspaceSpec{{Name: "ks", Replication: map[string]int{"dc1": 2}}})
	if err != nil {
		t.Fatal(err)
	}
	net := &failingWrites{Mem: transport.NewMem()}
	coords, stores := map[string]*Coordinator{}, map[string]*replica.Store{}
	for _, id := range []string{"n1", "n2", "n3"} {
		store, err := replica.Open(memory.New(), id)
		if err != nil {
			t.Fatal(err)
		}
		c, err := New(Config{NodeID: id, DC: "dc1", Store: store, Peers: net, Live: liveExcept{},
			Topology: func() *membership.Topology { return topo }, Secrets: [][]byte{[]byte("secret")}, RequestTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		net.Register(id, c)
		coords[id], stores[id] = c, store
	}
	keyOn := func(name string) string {
		k, _ := topo.Keyspace("ks")
		for i := 0; ; i++ {
			key := fmt.Sprintf("%s-%d", name, i)
			var got []string
			for _, r := range k.Table.Replicas(topo.Ring.Partition([]byte(key))) {
				got = append(got, r.Node)
			}
			if !slices.Contains(got, "n1") {
				return key
			}
		}
	}
	return coords, stores, net, topo, keyOn
}

// values reads key's values on every replica that has it.
func values(t *testing.T, stores map[string]*replica.Store, topo *membership.Topology, key string) map[string][]string {
	t.Helper()
	k, _ := topo.Keyspace("ks")
	loc := replica.Loc{Keyspace: k.ID, Partition: topo.Ring.Partition([]byte(key))}
	out := map[string][]string{}
	for id, s := range stores {
		set, err := s.Get(loc, []byte(key))
		if err != nil {
			t.Fatal(err)
		}
		for _, sib := range set.Live() {
			out[id] = append(out[id], string(sib.Value.Bytes))
		}
	}
	return out
}

// TestFailedWriteRetriedIsWritten: a coordinator that holds no copy of
// the key (a forwarded write, a fallback) and whose write failed does not
// remember its request ID: the retry is written, not answered "already
// applied" with nothing stored anywhere.
func TestFailedWriteRetriedIsWritten(t *testing.T) {
	coords, stores, net, topo, keyOn := requestIDCluster(t)
	key := keyOn("k")
	put := &kvv1.PutRequest{Keyspace: "ks", Key: []byte(key), Value: []byte("v"), RequestId: []byte("retry-me"),
		Consistency: &kvv1.Consistency{Level: kvv1.Level_LEVEL_QUORUM}}
	ctx := context.Background()
	net.failing.Store(true)
	if _, err := coords["n1"].ServeCoordinate(ctx, &internalv1.CoordinateRequest{Put: put}); err == nil {
		t.Fatal("a write with every replica cut succeeded")
	}
	net.failing.Store(false)
	if _, err := coords["n1"].ServeCoordinate(ctx, &internalv1.CoordinateRequest{Put: put}); err != nil {
		t.Fatal(err)
	}
	got := values(t, stores, topo, key)
	if len(got) != 2 {
		t.Fatalf("the retried write is on %v, want both replicas", got)
	}
	// Once it met its level, the same ID again is a duplicate.
	if _, err := coords["n1"].ServeCoordinate(ctx, &internalv1.CoordinateRequest{Put: put}); err != nil {
		t.Fatal(err)
	}
	if got = values(t, stores, topo, key); len(got) != 2 {
		t.Fatalf("after a retry of an applied write the key is on %v, want both replicas", got)
	}
	for id, vs := range got {
		if !slices.Equal(vs, []string{"v"}) {
			t.Fatalf("%s holds %v after a retry of an applied write, want [v]", id, vs)
		}
	}
}

// TestMergedIDIsNoProofOfAWrite: a coordinator holding no copy of the
// key that only merged a write's ID (a copy of it reached this node, as a
// pending replica say, while the write failed its level) does not answer
// a retry as applied: it writes it, and here fails as the replicas are
// cut, rather than answering OK with the write held by too few.
func TestMergedIDIsNoProofOfAWrite(t *testing.T) {
	coords, stores, net, topo, keyOn := requestIDCluster(t)
	key := keyOn("k")
	ks, _ := topo.Keyspace("ks")
	id := []byte("merged-only")
	coords["n1"].reqIDs.Remember(ks.ID, []byte(key), id, time.Now()) // as merge() does
	net.failing.Store(true)
	put := &kvv1.PutRequest{Keyspace: "ks", Key: []byte(key), Value: []byte("v"), RequestId: id,
		Consistency: &kvv1.Consistency{Level: kvv1.Level_LEVEL_QUORUM}}
	if _, err := coords["n1"].ServeCoordinate(context.Background(), &internalv1.CoordinateRequest{Put: put}); status.Code(err) != codes.Unavailable {
		t.Fatalf("a retry whose ID n1 only merged, replicas cut: %v (stored on %v), want UNAVAILABLE", err, values(t, stores, topo, key))
	}
}

// TestRequestIDReusedOnAnotherKey: a request ID reused for another key is
// another write, not a retry of the first.
func TestRequestIDReusedOnAnotherKey(t *testing.T) {
	coords, stores, _, topo, keyOn := requestIDCluster(t)
	ctx := context.Background()
	k1, k2 := keyOn("a"), keyOn("b")
	for _, key := range []string{k1, k2} {
		if _, err := coords["n2"].Put(ctx, &kvv1.PutRequest{Keyspace: "ks", Key: []byte(key), Value: []byte("v-" + key), RequestId: []byte("order-42"),
			Consistency: &kvv1.Consistency{Level: kvv1.Level_LEVEL_ALL}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, key := range []string{k1, k2} {
		got := values(t, stores, topo, key)
		if len(got) != 2 {
			t.Fatalf("%s is on %v, want both replicas", key, got)
		}
		for id, vs := range got {
			if !slices.Equal(vs, []string{"v-" + key}) {
				t.Fatalf("%s holds %v for %s, want [v-%s]", id, vs, key, key)
			}
		}
	}
}

// TestRefusedMergeRemembersNoID: a replica write that is not stored (here
// the merged set would pass the hard sibling limit) leaves its request ID
// unremembered: a retry of that write coordinated here must be written,
// not taken for applied.
func TestRefusedMergeRemembersNoID(t *testing.T) {
	coords, stores, _, topo, keyOn := requestIDCluster(t)
	key := keyOn("m")
	k, _ := topo.Keyspace("ks")
	loc := replica.Loc{Keyspace: k.ID, Partition: topo.Ring.Partition([]byte(key))}
	siblings := func(prefix string, n int, id []byte) version.Set {
		var s version.Set
		for i := range n {
			s, _ = s.Put(version.Clock{}, fmt.Sprintf("%s%d", prefix, i), version.Value{Bytes: []byte("v"), RequestID: id}, 1)
		}
		return s
	}
	stored := siblings("a", version.MaxSiblings-4, nil)
	if _, err := stores["n2"].Update(loc, []byte(key), false, func(version.Set) (version.Set, error) { return stored, nil }); err != nil {
		t.Fatal(err)
	}
	c := coords["n2"]
	if err := c.merge(loc, []byte(key), siblings("b", 8, []byte("id-1")), false); !replica.Refused(err) {
		t.Fatalf("a merge past the sibling limit: %v, want a refusal", err)
	}
	if c.reqIDs.Seen(loc.Keyspace, []byte(key), []byte("id-1"), c.cfg.Now()) {
		t.Fatal("the request ID of a merge that stored nothing is remembered")
	}
}
