package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
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

// TestServeCollectTombstones: a peer's request is checked before anything
// is read (a key out of range is the peer's fault: INVALID_ARGUMENT), a
// sender that gave up stops the loop, and only a tombstone with the same
// digest is deleted.
func TestServeCollectTombstones(t *testing.T) {
	c, store, id := transferCoordinator(t)
	c.cfg.Now = time.Now
	key := []byte("gone")
	loc := replica.Loc{Keyspace: id, Partition: c.cfg.Topology().Ring.Partition(key)}
	tomb, _ := version.Set{}.Put(version.Clock{}, "old", version.Value{Tombstone: true, Time: version.Timestamp{Wall: 1}}, 1)
	if _, err := store.Merge(loc, key, tomb, false); err != nil {
		t.Fatal(err)
	}
	req := func(keys ...[]byte) *internalv1.CollectTombstonesRequest {
		r := &internalv1.CollectTombstonesRequest{Keyspace: "ks", Partition: uint32(loc.Partition)}
		for _, k := range keys {
			r.Keys = append(r.Keys, &internalv1.KeyDigest{Key: k, Digest: tomb.Digest()})
		}
		return r
	}
	for name, r := range map[string]*internalv1.CollectTombstonesRequest{
		"a key longer than any key": req(key, bytes.Repeat([]byte{'k'}, MaxKeySize+1)),
		"an empty key":              req(key, nil),
	} {
		if _, err := c.ServeCollectTombstones(context.Background(), r); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want INVALID_ARGUMENT", name, err)
		}
	}
	gaveUp, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.ServeCollectTombstones(gaveUp, req(key)); status.Code(err) != codes.Canceled {
		t.Errorf("a sender that gave up: %v, want CANCELED", err)
	}
	if set, _ := store.Get(loc, key); set.IsEmpty() {
		t.Fatal("a refused request collected the tombstone")
	}
	resp, err := c.ServeCollectTombstones(context.Background(), req(key))
	if err != nil || resp.GetCollected() != 1 {
		t.Fatalf("collect: %v, %v; want 1 collected", resp, err)
	}
	if set, _ := store.Get(loc, key); !set.IsEmpty() {
		t.Fatal("tombstone still stored")
	}
}

// TestCollectTombstonesKeepsOwnGrace: a replica deletes only tombstones
// older than its own tombstone grace, whatever grace the asking peer
// runs with, and one that keeps its tombstones (negative grace) refuses.
func TestCollectTombstonesKeepsOwnGrace(t *testing.T) {
	c, store, id := transferCoordinator(t)
	now := time.Unix(1_000_000, 0)
	c.cfg.Now = func() time.Time { return now }
	c.cfg.TombstoneGrace = 24 * time.Hour
	at := func(key string, age time.Duration) *internalv1.CollectTombstonesRequest {
		loc := replica.Loc{Keyspace: id, Partition: c.cfg.Topology().Ring.Partition([]byte(key))}
		tomb, _ := version.Set{}.Put(version.Clock{}, "old", version.Value{Tombstone: true, Time: version.Timestamp{Wall: now.Add(-age).UnixNano()}}, 1)
		if _, err := store.Merge(loc, []byte(key), tomb, false); err != nil {
			t.Fatal(err)
		}
		return &internalv1.CollectTombstonesRequest{Keyspace: "ks", Partition: uint32(loc.Partition),
			Keys: []*internalv1.KeyDigest{{Key: []byte(key), Digest: tomb.Digest()}}}
	}
	young, old := at("young", time.Hour), at("old", 25*time.Hour)
	if resp, err := c.ServeCollectTombstones(context.Background(), young); err != nil || resp.GetCollected() != 0 || !slices.Equal(resp.GetKept(), []uint32{0}) {
		t.Fatalf("an hour-old tombstone with a 24h grace: %v, %v; want none collected and it answered as kept", resp, err)
	}
	// Three keys: one gone here already, one changed since the sender
	// read it, one the grace keeps. The gone one is not kept.
	changed := at("changed", 25*time.Hour)
	changed.Keys[0].Digest++
	gone := &internalv1.KeyDigest{Key: []byte("gone"), Digest: 7}
	mixed := &internalv1.CollectTombstonesRequest{Keyspace: "ks", Partition: changed.Partition, Keys: []*internalv1.KeyDigest{gone, changed.Keys[0]}}
	if resp, err := c.ServeCollectTombstones(context.Background(), mixed); err != nil || resp.GetCollected() != 0 || !slices.Equal(resp.GetKept(), []uint32{1}) {
		t.Fatalf("a key gone and one changed: %v, %v; want the changed one (1) kept", resp, err)
	}
	c.cfg.TombstoneGrace = -1
	if _, err := c.ServeCollectTombstones(context.Background(), old); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("a node that keeps its tombstones: %v, want FAILED_PRECONDITION", err)
	}
	c.cfg.TombstoneGrace = 24 * time.Hour
	if resp, err := c.ServeCollectTombstones(context.Background(), old); err != nil || resp.GetCollected() != 1 || len(resp.GetKept()) != 0 {
		t.Fatalf("a 25h-old tombstone with a 24h grace: %v, %v; want it collected, none kept", resp, err)
	}
}

// TestFutureVersionsRefused: in a last-writer-wins keyspace a replica
// refuses a version written further ahead of its clock than
// FutureWriteLimit (it would win over every write until then), whether
// sent as a replica write, a hint or by repair; within the limit, or where
// siblings are kept, it is stored.
// clockCoordinator is n1 of two nodes, with keyspaces "lww"
// (last-writer-wins) and "dvv", both on both nodes, its clock fixed at now.
func clockCoordinator(t *testing.T, now time.Time) (*Coordinator, *replica.Store, *membership.Topology) {
	t.Helper()
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
	store, err := replica.Open(memory.New(), "n1")
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{NodeID: "n1", DC: "dc1", Store: store, Peers: transport.NewMem(), Live: allAlive{},
		Topology: func() *membership.Topology { return topo }, Secrets: [][]byte{[]byte("secret")},
		Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, store, topo
}

func TestFutureVersionsRefused(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	c, store, topo := clockCoordinator(t, now)
	at := func(ahead time.Duration) []byte {
		set, _ := version.Set{}.Put(version.Clock{}, "n2", version.Value{Bytes: []byte("v"), Time: version.Timestamp{Wall: now.Add(ahead).UnixNano()}}, now.UnixNano())
		return set.Encode()
	}
	stored := func(ks, key string) bool {
		k, _ := topo.Keyspace(ks)
		set, err := store.Get(replica.Loc{Keyspace: k.ID, Partition: topo.Ring.Partition([]byte(key))}, []byte(key))
		if err != nil {
			t.Fatal(err)
		}
		return !set.IsEmpty()
	}
	ctx := context.Background()
	limit := 2 * DefaultMaxClockOffset
	for _, tc := range []struct {
		name, ks, key string
		ahead         time.Duration
		hintFor       string
		refused       bool
	}{
		{"an hour ahead, last writer wins", "lww", "a", time.Hour, "", true},
		{"an hour ahead, as a hint", "lww", "b", time.Hour, "n2", true},
		{"just past the limit", "lww", "c", limit + time.Millisecond, "", true},
		{"within the limit", "lww", "d", limit, "", false},
		{"an hour ahead where siblings are kept", "dvv", "e", time.Hour, "", false},
	} {
		_, err := c.ServeWrite(ctx, &internalv1.WriteRequest{Keyspace: tc.ks, Key: []byte(tc.key), Set: at(tc.ahead), HintFor: tc.hintFor})
		if tc.refused {
			if status.Code(err) != codes.FailedPrecondition || !replica.Refused(err) {
				t.Errorf("%s: %v, want FAILED_PRECONDITION refusing the key", tc.name, err)
			}
			if stored(tc.ks, tc.key) {
				t.Errorf("%s: stored", tc.name)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		if tc.hintFor == "" && !stored(tc.ks, tc.key) {
			t.Errorf("%s: not stored", tc.name)
		}
	}
	set, _ := version.DecodeSet(at(time.Hour))
	if err := c.MergeLocal("lww", []byte("f"), set); !replica.Refused(err) || stored("lww", "f") {
		t.Errorf("repair of a version an hour ahead: %v, want FAILED_PRECONDITION and nothing stored", err)
	}
}

type refusingHints struct{}

func (refusingHints) StoreHint(string, replica.Loc, string, []byte, version.Set, bool, time.Time) error {
	return &HintRefusedError{Err: errors.New("hint not stored: n2 already has 100 hints")}
}

// TestOwnActorCountersChecked: a set claiming versions of this node's own
// actor past the counters it has handed out is refused (one key, nothing
// stored), as a replica write or a repair; versions it did mint, and other
// actors' counters, are taken.
func TestOwnActorCountersChecked(t *testing.T) {
	topo, err := membership.NewTopology(1, 16, []membership.NodeInfo{
		{Node: placement.Node{ID: "n1", DC: "dc1", Rack: "r1", Weight: 1}},
	}, []membership.KeyspaceSpec{{Name: "ks", Replication: map[string]int{"dc1": 1}}})
	if err != nil {
		t.Fatal(err)
	}
	store, err := replica.Open(memory.New(), "n1")
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{NodeID: "n1", DC: "dc1", Store: store, Peers: transport.NewMem(), Live: allAlive{},
		Topology: func() *membership.Topology { return topo }, Secrets: [][]byte{[]byte("secret")}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	minted, err := store.NextCounter()
	if err != nil {
		t.Fatal(err)
	}
	// at is a set whose one version is actor's dot counter.
	at := func(actor string, counter uint64) version.Set {
		set, _ := version.Set{}.Put(version.Clock{Entries: []version.Entry{{Node: actor, Counter: counter - 1, Time: 1}}}, actor, version.Value{Bytes: []byte("v")}, 1)
		return set
	}
	stored := func(key string) bool {
		set, err := store.Get(replica.Loc{Keyspace: topo.Keyspaces["ks"].ID, Partition: topo.Ring.Partition([]byte(key))}, []byte(key))
		if err != nil {
			t.Fatal(err)
		}
		return !set.IsEmpty()
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name, key string
		set       version.Set
		refused   bool
	}{
		{"this node's actor past its counters", "a", at(store.Actor(), minted+1), true},
		{"this node's actor at the limit", "b", at(store.Actor(), version.MaxCounter), true},
		{"a version this node minted", "c", at(store.Actor(), minted), false},
		{"another actor's high counter", "d", at("n2#x", version.MaxCounter), false},
		{"a fallback actor past its counters", "f", at(fmt.Sprintf("%s~%d", store.Actor(), minted), version.MaxCounter), true},
		{"a fallback actor not yet minted", "g", at(fmt.Sprintf("%s~%d", store.Actor(), minted+1), 1), true},
		{"a fallback actor with a suffix never minted", "h", at(store.Actor()+"~x", 1), true},
		{"a fallback actor this node minted", "i", at(fmt.Sprintf("%s~%d", store.Actor(), minted), minted), false},
		{"another actor sharing the prefix", "j", at(store.Actor()+"x~9", version.MaxCounter), false},
	} {
		_, err := c.ServeWrite(ctx, &internalv1.WriteRequest{Keyspace: "ks", Key: []byte(tc.key), Set: tc.set.Encode()})
		if got := replica.Refused(err); got != tc.refused || !tc.refused && err != nil {
			t.Errorf("%s: %v, want refused %v", tc.name, err, tc.refused)
		}
		if stored(tc.key) == tc.refused {
			t.Errorf("%s: stored %v", tc.name, stored(tc.key))
		}
	}
	if err := c.MergeLocal("ks", []byte("e"), at(store.Actor(), minted+1)); !replica.Refused(err) || stored("e") {
		t.Errorf("repair of a version this node never minted: %v, want it refused and nothing stored", err)
	}
}

// TestServeWriteHintRefused: a fallback whose hint log refuses a hint
// answers RESOURCE_EXHAUSTED with ReasonHintRefused (it wrote nothing), not
// INTERNAL.
func TestServeWriteHintRefused(t *testing.T) {
	c, _, _ := transferCoordinator(t)
	c.cfg.NodeID, c.cfg.Hints, c.cfg.Now = "n9", refusingHints{}, time.Now
	set, _ := version.Set{}.Put(version.Clock{}, "n1", version.Value{Bytes: []byte("v")}, 1)
	_, err := c.ServeWrite(context.Background(), &internalv1.WriteRequest{Keyspace: "ks", Key: []byte("k"), Set: set.Encode(), HintFor: "n1"})
	st, _ := status.FromError(err)
	if st.Code() != codes.ResourceExhausted || !HasReason(st, ReasonHintRefused) || wrote(err) {
		t.Fatalf("refused hint: %v, want RESOURCE_EXHAUSTED with %s, counted as nothing written", err, ReasonHintRefused)
	}
}

// twoNodesOneReplica is a topology of n1 and n2 with keyspace "ks" at
// one replica per key, and n1's (empty) store.
func twoNodesOneReplica(t *testing.T) (*membership.Topology, *replica.Store) {
	t.Helper()
	topo, err := membership.NewTopology(1, 16, []membership.NodeInfo{
		{Node: placement.Node{ID: "n1", DC: "dc1", Rack: "r1", Weight: 1}},
		{Node: placement.Node{ID: "n2", DC: "dc1", Rack: "r2", Weight: 1}},
	}, []membership.KeyspaceSpec{{Name: "ks", Replication: map[string]int{"dc1": 1}}})
	if err != nil {
		t.Fatal(err)
	}
	store, err := replica.Open(memory.New(), "n1")
	if err != nil {
		t.Fatal(err)
	}
	return topo, store
}

// TestHintHandedToItsTarget: a hint naming this node or a node no longer
// a member (handed over by a node leaving the cluster) is merged when
// this node replicates the key's partition by its agreed ring, and
// refused, nothing stored, when it does not.
func TestHintHandedToItsTarget(t *testing.T) {
	topo, store := twoNodesOneReplica(t)
	c := &Coordinator{cfg: Config{NodeID: "n1", Store: store, Now: time.Now, Topology: func() *membership.Topology { return topo }}}
	ks, _ := topo.Keyspace("ks")
	born := time.Now().Add(-time.Minute).UnixNano() // a hint handed on
	hint := func(key []byte, target string) error {
		set, _ := version.Set{}.Put(version.Clock{}, "n4", version.Value{Bytes: []byte("v")}, 1)
		_, err := c.ServeWrite(context.Background(), &internalv1.WriteRequest{Keyspace: "ks", Key: key, Set: set.Encode(), Sync: true, HintFor: target, HintBornUnixNanos: born})
		return err
	}
	// Not before this node agreed on the metadata: its ring may be behind.
	if err := hint([]byte("k0"), "n1"); status.Code(err) != codes.Unavailable {
		t.Fatalf("hint for n1 before the metadata is agreed: %v, want UNAVAILABLE", err)
	}
	topo.Meta = &membership.MetaState{}
	var mine, theirs []byte
	for i := 0; mine == nil || theirs == nil; i++ {
		key := fmt.Appendf(nil, "k%d", i)
		if ks.Table.Replicas(topo.Ring.Partition(key))[0].Node == "n1" {
			mine = key
		} else {
			theirs = key
		}
	}
	// n9 left the cluster: a hint for it is merged by a replica too.
	for _, target := range []string{"n1", "n9"} {
		for _, tc := range []struct {
			key    []byte
			merged bool
		}{{mine, true}, {theirs, false}} {
			err := hint(tc.key, target)
			loc := replica.Loc{Keyspace: ks.ID, Partition: topo.Ring.Partition(tc.key)}
			got, gerr := store.Get(loc, tc.key)
			if gerr != nil {
				t.Fatal(gerr)
			}
			switch {
			case tc.merged && (err != nil || len(got.Siblings) != 1):
				t.Errorf("hint for %s of n1's partition: %v, stored %d siblings; want it merged", target, err, len(got.Siblings))
			case !tc.merged && (status.Code(err) != codes.InvalidArgument || len(got.Siblings) != 0):
				t.Errorf("hint for %s of n2's partition: %v, stored %d siblings; want INVALID_ARGUMENT and nothing stored", target, err, len(got.Siblings))
			}
		}
	}
	// A fallback write (no birth time: not handed on) naming a node this
	// node does not know is refused, not merged: its sender would count a
	// hint no one keeps.
	born = 0
	if err := hint(mine, "n8"); status.Code(err) != codes.InvalidArgument {
		t.Errorf("fallback write for unknown n8: %v, want INVALID_ARGUMENT", err)
	}
}

// TestMerkleAnswersForPartitionsNotHeld: a peer asking about a partition
// this node does not replicate gets the same answer a replica would
// compute, and the node keeps no tree for it; for a partition it
// replicates the tree is kept.
func TestMerkleAnswersForPartitionsNotHeld(t *testing.T) {
	topo, store := twoNodesOneReplica(t)
	c := &Coordinator{cfg: Config{NodeID: "n1", Store: store, Topology: func() *membership.Topology { return topo }}}
	ks, _ := topo.Keyspace("ks")
	mine, theirs := -1, -1
	for p := range 16 {
		if ks.Table.Replicas(p)[0].Node == "n1" {
			mine = p
		} else {
			theirs = p
		}
	}
	if mine < 0 || theirs < 0 {
		t.Fatalf("partitions of n1 %d, of n2 %d: want one each", mine, theirs)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		p    int
		kept bool
	}{{theirs, false}, {mine, true}} {
		loc := replica.Loc{Keyspace: ks.ID, Partition: tc.p}
		storeValue(t, store, loc, []byte("k"), 8)
		if _, err := c.ServeLeaves(ctx, &internalv1.LeavesRequest{Keyspace: "ks", Partition: uint32(tc.p)}); err != nil {
			t.Fatal(err)
		}
		resp, err := c.ServeBucketDigests(ctx, &internalv1.BucketDigestsRequest{Keyspace: "ks", Partition: uint32(tc.p), Buckets: []uint32{uint32(replica.Bucket([]byte("k")))}})
		if err != nil || len(resp.GetKeys()) != 1 {
			t.Fatalf("partition %d: bucket digests %v, %v; want the one key", tc.p, resp, err)
		}
		if store.HasTree(loc) != tc.kept {
			t.Errorf("partition %d: tree kept %v, want %v", tc.p, store.HasTree(loc), tc.kept)
		}
	}
}

// TestLWWWriteWinsOverStoredVersionsAhead: in a last-writer-wins keyspace
// a write coordinated after a version stored here wins over it, even when
// that version was stamped by a clock running ahead (stored, within the
// future-write limit, but past what the HLC observes): the write is not
// acknowledged and lost at once to a version written before it.
func TestLWWWriteWinsOverStoredVersionsAhead(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	c, store, topo := clockCoordinator(t, now) // n1 replicates every key
	k, _ := topo.Keyspace("lww")
	key := "k"
	ahead := DefaultMaxClockOffset + 200*time.Millisecond // stored, not observed
	old, _ := version.Set{}.Put(version.Clock{}, "n2", version.Value{Bytes: []byte("before"), Time: version.Timestamp{Wall: now.Add(ahead).UnixNano()}}, now.UnixNano())
	ctx := context.Background()
	if _, err := c.ServeWrite(ctx, &internalv1.WriteRequest{Keyspace: "lww", Key: []byte(key), Set: old.Encode()}); err != nil {
		t.Fatal(err)
	}
	put, err := c.Put(ctx, &kvv1.PutRequest{Keyspace: "lww", Key: []byte(key), Value: []byte("after"), Consistency: &kvv1.Consistency{Level: kvv1.Level_LEVEL_ONE}})
	if err != nil {
		t.Fatal(err)
	}
	if sibs := put.GetSiblings(); len(sibs) != 1 || string(sibs[0].GetValue()) != "after" {
		t.Fatalf("the write's answer holds %v, want only [after]", sibs)
	}
	set, err := store.Get(replica.Loc{Keyspace: k.ID, Partition: topo.Ring.Partition([]byte(key))}, []byte(key))
	if err != nil || len(set.Siblings) != 1 || string(set.Siblings[0].Value.Bytes) != "after" {
		t.Fatalf("stored %v (%v), want only the later write", set, err)
	}
	if got, floor := set.Siblings[0].Value.Time, old.Siblings[0].Value.Time; got.Compare(floor) <= 0 {
		t.Fatalf("stamped %v, not after the stored version's %v", got, floor)
	}
}

// bornHints records the born time of each hint stored.
type bornHints struct{ born []time.Time }

func (h *bornHints) StoreHint(_ string, _ replica.Loc, _ string, _ []byte, _ version.Set, _ bool, born time.Time) error {
	h.born = append(h.born, born)
	return nil
}

// TestServeWriteKeepsAHandedOnHintsAge: a hint handed on by another node
// (a node leaving the cluster) is stored with the time its write was
// first hinted, so its age still bounds how late it may be delivered.
func TestServeWriteKeepsAHandedOnHintsAge(t *testing.T) {
	c, _, _ := transferCoordinator(t)
	h := &bornHints{}
	c.cfg.NodeID, c.cfg.Hints, c.cfg.Now, c.obs = "n9", h, time.Now, nopObserver{}
	set, _ := version.Set{}.Put(version.Clock{}, "n1", version.Value{Bytes: []byte("v")}, 1)
	born := time.Now().Add(-20 * time.Hour)
	for _, ns := range []int64{born.UnixNano(), 0} {
		if _, err := c.ServeWrite(context.Background(), &internalv1.WriteRequest{Keyspace: "ks", Key: []byte("k"), Set: set.Encode(), HintFor: "n1", HintBornUnixNanos: ns}); err != nil {
			t.Fatal(err)
		}
	}
	if len(h.born) != 2 || !h.born[0].Equal(born) || !h.born[1].IsZero() {
		t.Fatalf("hints stored born %v; want %v, then zero (now)", h.born, born)
	}
}
