package replica_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/meridiankv/meridian/engine"
	"github.com/meridiankv/meridian/engine/memory"
	"github.com/meridiankv/meridian/engine/pebble"
	"github.com/meridiankv/meridian/replica"
	"github.com/meridiankv/meridian/version"
)

// engines runs a test on the memory engine and on Pebble in t.TempDir().
func engines(t *testing.T, test func(t *testing.T, eng engine.Engine)) {
	t.Run("memory", func(t *testing.T) { test(t, memory.New()) })
	t.Run("pebble", func(t *testing.T) {
		eng, err := pebble.Open(pebble.Options{Dir: t.TempDir(), CacheSize: 8 << 20, MemTableSize: 4 << 20})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { eng.Close() })
		test(t, eng)
	})
}

func open(t testing.TB, eng engine.Engine, node string) *replica.Store {
	t.Helper()
	s, err := replica.Open(eng, node)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func leaves(t testing.TB, s *replica.Store, loc replica.Loc) []uint64 {
	t.Helper()
	l, err := s.Leaves(loc)
	if err != nil {
		t.Fatal(err)
	}
	if len(l) != replica.Buckets {
		t.Fatalf("%d leaves, want %d", len(l), replica.Buckets)
	}
	return l
}

// expectedLeaves computes the leaves of loc from the definition, reading
// every key of keys through Get.
func expectedLeaves(t testing.TB, s *replica.Store, loc replica.Loc, keys [][]byte) []uint64 {
	t.Helper()
	out := make([]uint64, replica.Buckets)
	for _, k := range keys {
		set, err := s.Get(loc, k)
		if err != nil {
			t.Fatal(err)
		}
		if !set.IsEmpty() {
			out[replica.Bucket(k)] ^= replica.Contribution(k, set.Digest())
		}
	}
	return out
}

func diffBuckets(a, b []uint64) []int {
	var d []int
	for i := range a {
		if a[i] != b[i] {
			d = append(d, i)
		}
	}
	return d
}

// randomOp applies one random write to one of keys in loc: a put with the
// stored context, a blind put, a tombstone, a merge of another replica's
// version, a durable write without waiting, or a delete of the stored set.
func randomOp(t testing.TB, s *replica.Store, r *rand.Rand, loc replica.Loc, keys [][]byte, actors []string) {
	key := keys[r.IntN(len(keys))]
	val := version.Value{Bytes: fmt.Appendf(nil, "v%d", r.Uint64())}
	var err error
	switch op := r.IntN(6); op {
	case 0, 1, 2:
		blind := op == 1
		if op == 2 {
			val = version.Value{Tombstone: true}
		}
		_, err = s.Update(loc, key, r.IntN(2) == 0, func(cur version.Set) (version.Set, error) {
			ctx := cur.Context()
			if blind {
				ctx = version.Clock{}
			}
			next, _ := cur.Put(ctx, s.Actor(), val, 1)
			return next, nil
		})
	case 3:
		in, _ := version.Set{}.Put(version.Clock{}, actors[r.IntN(len(actors))], val, 1)
		_, err = s.Merge(loc, key, in, false)
	case 4:
		var wait func() error
		_, wait, err = s.UpdateNoSyncWait(loc, key, func(cur version.Set) (version.Set, error) {
			next, _ := cur.Put(cur.Context(), s.Actor(), val, 1)
			return next, nil
		})
		if err == nil {
			err = wait()
		}
	case 5:
		var cur version.Set
		if cur, err = s.Get(loc, key); err == nil {
			_, err = s.DeleteIfUnchanged(loc, key, cur)
		}
	}
	if err != nil {
		t.Error(err)
	}
}

func testKeys(n int) [][]byte {
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "key-%04d", i)
	}
	return keys
}

// TestLeavesKeptCurrentMatchRebuild: after random concurrent writes,
// merges and deletes, the leaves kept current by the writes equal the
// leaves a fresh store builds by scanning the same engine, and the
// definition computed key by key. One partition's tree is built before the
// writes, one halfway, one only at the end.
func TestLeavesKeptCurrentMatchRebuild(t *testing.T) {
	engines(t, func(t *testing.T, eng engine.Engine) {
		s := open(t, eng, "n1")
		locs := []replica.Loc{{Keyspace: 1, Partition: 0}, {Keyspace: 1, Partition: 7}, {Keyspace: 2, Partition: 7}}
		keys := testKeys(64)
		actors := []string{"n2#a", "n3#b", "n4#c"}
		leaves(t, s, locs[0])
		const writers, ops = 4, 400
		var wg sync.WaitGroup
		var done atomic.Int64
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(w), 1))
				for range ops {
					randomOp(t, s, r, locs[r.IntN(len(locs))], keys, actors)
					if done.Add(1) == writers*ops/2 {
						if _, err := s.Leaves(locs[1]); err != nil {
							t.Error(err)
						}
					}
				}
			}()
		}
		wg.Wait()
		fresh := open(t, eng, "n1")
		for _, loc := range locs {
			got := leaves(t, s, loc)
			if d := diffBuckets(got, leaves(t, fresh, loc)); d != nil {
				t.Errorf("%v: kept-current leaves differ from a rebuild in buckets %v", loc, d)
			}
			if d := diffBuckets(got, expectedLeaves(t, s, loc, keys)); d != nil {
				t.Errorf("%v: leaves differ from the definition in buckets %v", loc, d)
			}
			if slices.Equal(got, make([]uint64, replica.Buckets)) {
				t.Errorf("%v: all leaves zero after writes", loc)
			}
		}
	})
}

// randomSets returns, per key, a few versions written by different actors
// (some superseding others), to be merged in any order.
func randomSets(r *rand.Rand, keys [][]byte) map[string][]version.Set {
	out := make(map[string][]version.Set)
	for _, k := range keys {
		var cur version.Set
		var sets []version.Set
		for i := range 1 + r.IntN(4) {
			ctx := version.Clock{}
			if r.IntN(2) == 0 {
				ctx = cur.Context()
			}
			next, _ := cur.Put(ctx, fmt.Sprintf("n%d#x", i%3), version.Value{Bytes: fmt.Appendf(nil, "%s/%d", k, i), Tombstone: r.IntN(5) == 0}, int64(i))
			sets = append(sets, next)
			cur = next
		}
		out[string(k)] = sets
	}
	return out
}

func feed(t testing.TB, s *replica.Store, loc replica.Loc, sets map[string][]version.Set, r *rand.Rand) {
	t.Helper()
	type w struct {
		key string
		set version.Set
	}
	var all []w
	for k, ss := range sets {
		for _, set := range ss {
			all = append(all, w{k, set})
		}
	}
	slices.SortFunc(all, func(a, b w) int { return bytes.Compare([]byte(a.key), []byte(b.key)) })
	r.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	for _, x := range all {
		if _, err := s.Merge(loc, []byte(x.key), x.set, false); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLeavesIndependentOfOrder: two stores fed the same sets in different
// orders (one with its tree built before, one after) have equal leaves.
func TestLeavesIndependentOfOrder(t *testing.T) {
	engines(t, func(t *testing.T, eng engine.Engine) {
		loc := replica.Loc{Keyspace: 3, Partition: 12}
		sets := randomSets(rand.New(rand.NewPCG(1, 2)), testKeys(300))
		a := open(t, eng, "a")
		before := leaves(t, a, loc)
		if !slices.Equal(before, make([]uint64, replica.Buckets)) {
			t.Fatal("leaves of an empty partition are not zero")
		}
		feed(t, a, loc, sets, rand.New(rand.NewPCG(3, 4)))
		b := open(t, memory.New(), "b")
		feed(t, b, loc, sets, rand.New(rand.NewPCG(5, 6)))
		if d := diffBuckets(leaves(t, a, loc), leaves(t, b, loc)); d != nil {
			t.Fatalf("stores with equal data differ in buckets %v", d)
		}
		// The other partitions of the same store are untouched.
		if l := leaves(t, a, replica.Loc{Keyspace: 3, Partition: 13}); !slices.Equal(l, make([]uint64, replica.Buckets)) {
			t.Fatal("a partition without data has non-zero leaves")
		}
	})
}

// TestOneDifferingKeyShowsInItsBucket: one key differing between two
// stores shows in exactly its bucket, and BucketDigests of that bucket
// names it (and lists the bucket's keys in key order).
func TestOneDifferingKeyShowsInItsBucket(t *testing.T) {
	engines(t, func(t *testing.T, eng engine.Engine) {
		loc := replica.Loc{Keyspace: 1, Partition: 1}
		keys := testKeys(1000)
		sets := randomSets(rand.New(rand.NewPCG(7, 8)), keys)
		a, b := open(t, eng, "a"), open(t, memory.New(), "b")
		feed(t, a, loc, sets, rand.New(rand.NewPCG(1, 1)))
		feed(t, b, loc, sets, rand.New(rand.NewPCG(2, 2)))
		leaves(t, a, loc)
		odd := keys[417]
		extra, _ := version.Set{}.Put(version.Clock{}, "n9#z", version.Value{Bytes: []byte("only on a")}, 1)
		if _, err := a.Merge(loc, odd, extra, false); err != nil {
			t.Fatal(err)
		}
		d := diffBuckets(leaves(t, a, loc), leaves(t, b, loc))
		if want := []int{replica.Bucket(odd)}; !slices.Equal(d, want) {
			t.Fatalf("differing buckets %v, want %v", d, want)
		}
		da, err := a.BucketDigests(loc, d)
		if err != nil {
			t.Fatal(err)
		}
		db, err := b.BucketDigests(loc, d)
		if err != nil {
			t.Fatal(err)
		}
		if len(da) == 0 || len(da) != len(db) {
			t.Fatalf("%d and %d keys in bucket %d", len(da), len(db), d[0])
		}
		var differing [][]byte
		for i := range da {
			if replica.Bucket(da[i].Key) != d[0] {
				t.Fatalf("key %q of bucket %d listed for bucket %d", da[i].Key, replica.Bucket(da[i].Key), d[0])
			}
			if i > 0 && bytes.Compare(da[i-1].Key, da[i].Key) >= 0 {
				t.Fatalf("keys out of order: %q before %q", da[i-1].Key, da[i].Key)
			}
			if !bytes.Equal(da[i].Key, db[i].Key) {
				t.Fatalf("key sets differ: %q vs %q", da[i].Key, db[i].Key)
			}
			set, _ := a.Get(loc, da[i].Key)
			if da[i].Digest != set.Digest() {
				t.Fatalf("digest of %q is %x, stored set's is %x", da[i].Key, da[i].Digest, set.Digest())
			}
			if da[i].Digest != db[i].Digest {
				differing = append(differing, da[i].Key)
			}
		}
		if len(differing) != 1 || !bytes.Equal(differing[0], odd) {
			t.Fatalf("differing keys %q, want [%q]", differing, odd)
		}
		// Every bucket at once lists every key.
		all := make([]int, replica.Buckets)
		for i := range all {
			all[i] = i
		}
		every, err := b.BucketDigests(loc, all)
		if err != nil {
			t.Fatal(err)
		}
		if len(every) != len(keys) {
			t.Fatalf("%d keys in all buckets, want %d", len(every), len(keys))
		}
		if _, err := b.BucketDigests(loc, []int{replica.Buckets}); err == nil {
			t.Fatal("bucket out of range accepted")
		}
	})
}

// TestBucketDigestsBuildsTheTree: BucketDigests on a partition whose tree
// is not built builds it in the same scan, and the tree then stays current.
func TestBucketDigestsBuildsTheTree(t *testing.T) {
	eng := memory.New()
	s := open(t, eng, "n1")
	loc := replica.Loc{Keyspace: 1}
	keys := testKeys(50)
	feed(t, s, loc, randomSets(rand.New(rand.NewPCG(1, 1)), keys), rand.New(rand.NewPCG(1, 1)))
	got, err := s.BucketDigests(loc, []int{0, 1, 2, 3, 4, 5, 6, 7})
	if err != nil {
		t.Fatal(err)
	}
	for _, kd := range got {
		if replica.Bucket(kd.Key) >= 8 {
			t.Fatalf("key %q of bucket %d listed", kd.Key, replica.Bucket(kd.Key))
		}
	}
	r := rand.New(rand.NewPCG(2, 2))
	for range 200 {
		randomOp(t, s, r, loc, keys, []string{"n2#a"})
	}
	if d := diffBuckets(leaves(t, s, loc), expectedLeaves(t, s, loc, keys)); d != nil {
		t.Fatalf("leaves differ from the definition in buckets %v", d)
	}
}

// TestBuildRacingWithWritesStaysExact: builds started while writers run
// neither miss nor double-count a write (run with -race).
func TestBuildRacingWithWritesStaysExact(t *testing.T) {
	engines(t, func(t *testing.T, eng engine.Engine) {
		s := open(t, eng, "n1")
		for round := range 20 {
			testBuildRace(t, eng, s, round)
		}
	})
}

// testBuildRace builds the tree of a fresh partition (a tree not
// registered yet) while writers run, then checks it.
func testBuildRace(t *testing.T, eng engine.Engine, s *replica.Store, round int) {
	loc := replica.Loc{Keyspace: 9, Partition: round}
	keys := testKeys(32)
	actors := []string{"n2#a", "n3#b"}
	r := rand.New(rand.NewPCG(uint64(round), 0))
	for range 100 {
		randomOp(t, s, r, loc, keys, actors)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ops atomic.Int64
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(round), uint64(w+1)))
			for {
				select {
				case <-stop:
					return
				default:
				}
				randomOp(t, s, r, loc, keys, actors)
				ops.Add(1)
			}
		}()
	}
	// Start the build once writes are under way, from two callers.
	for ops.Load() < 20 {
		// Writers make progress on their own; wait for them.
		runtime.Gosched()
	}
	var bw sync.WaitGroup
	for _, f := range []func() error{
		func() error { _, err := s.Leaves(loc); return err },
		func() error { _, err := s.BucketDigests(loc, []int{1, 2}); return err },
	} {
		bw.Add(1)
		go func() {
			defer bw.Done()
			if err := f(); err != nil {
				t.Error(err)
			}
		}()
	}
	bw.Wait()
	for n := ops.Load(); ops.Load() < n+50; {
		runtime.Gosched()
	}
	close(stop)
	wg.Wait()
	if d := diffBuckets(leaves(t, s, loc), expectedLeaves(t, s, loc, keys)); d != nil {
		t.Fatalf("round %d: leaves differ from the definition in buckets %v", round, d)
	}
	if d := diffBuckets(leaves(t, s, loc), leaves(t, open(t, eng, "n1"), loc)); d != nil {
		t.Fatalf("round %d: leaves differ from a rebuild in buckets %v", round, d)
	}
}

// TestDeleteIfUnchanged: the delete is refused when the stored set changed
// (or the key is absent), done when it is equal, and the leaves follow.
func TestDeleteIfUnchanged(t *testing.T) {
	engines(t, func(t *testing.T, eng engine.Engine) {
		s := open(t, eng, "n1")
		loc := replica.Loc{Keyspace: 4, Partition: 2}
		key := []byte("tomb")
		zero := make([]uint64, replica.Buckets)
		leaves(t, s, loc)
		if ok, err := s.DeleteIfUnchanged(loc, key, version.Set{}); ok || err != nil {
			t.Fatalf("delete of an absent key: %v, %v", ok, err)
		}
		tomb, _ := version.Set{}.Put(version.Clock{}, "n2#a", version.Value{Tombstone: true}, 1)
		if _, err := s.Merge(loc, key, tomb, false); err != nil {
			t.Fatal(err)
		}
		l := leaves(t, s, loc)
		if want := replica.Contribution(key, tomb.Digest()); l[replica.Bucket(key)] != want {
			t.Fatalf("leaf %x, want the key's contribution %x", l[replica.Bucket(key)], want)
		}
		// A concurrent write lands between the proof and the delete.
		later, _ := version.Set{}.Put(version.Clock{}, "n3#b", version.Value{Bytes: []byte("new")}, 2)
		if _, err := s.Merge(loc, key, later, false); err != nil {
			t.Fatal(err)
		}
		if ok, err := s.DeleteIfUnchanged(loc, key, tomb); ok || err != nil {
			t.Fatalf("delete of a changed set: %v, %v", ok, err)
		}
		cur, err := s.Get(loc, key)
		if err != nil || len(cur.Siblings) != 2 {
			t.Fatalf("after a refused delete: %v siblings, %v", len(cur.Siblings), err)
		}
		if ok, err := s.DeleteIfUnchanged(loc, key, cur); !ok || err != nil {
			t.Fatalf("delete of an unchanged set: %v, %v", ok, err)
		}
		if got, _ := s.Get(loc, key); !got.IsEmpty() {
			t.Fatalf("key still holds %v", got)
		}
		if l := leaves(t, s, loc); !slices.Equal(l, zero) {
			t.Fatalf("leaves not back to zero after the delete: buckets %v", diffBuckets(l, zero))
		}
		if l := leaves(t, open(t, eng, "n1"), loc); !slices.Equal(l, zero) {
			t.Fatal("rebuilt leaves not zero after the delete")
		}
	})
}

// TestPartitions lists exactly the locations holding data, in order,
// including the very last one, and none for hints or metadata.
func TestPartitions(t *testing.T) {
	engines(t, func(t *testing.T, eng engine.Engine) {
		s := open(t, eng, "n1")
		if got, err := s.Partitions(); err != nil || len(got) != 0 {
			t.Fatalf("empty store: %v, %v", got, err)
		}
		want := []replica.Loc{
			{Keyspace: 0, Partition: 0}, {Keyspace: 1, Partition: 5}, {Keyspace: 1, Partition: 0xffff},
			{Keyspace: 2, Partition: 0}, {Keyspace: 1 << 31, Partition: 300}, {Keyspace: ^uint32(0), Partition: 0xffff},
		}
		set, _ := version.Set{}.Put(version.Clock{}, "n2#a", version.Value{Bytes: []byte("v")}, 1)
		for _, loc := range want {
			for _, k := range []string{"", "a", "b\xff\xff"} {
				if _, err := s.Merge(loc, []byte(k), set, false); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := s.PutMeta("zz", []byte("v")); err != nil {
			t.Fatal(err)
		}
		b := eng.NewBatch()
		b.Set([]byte{replica.HintPrefix, 2, 'n', '3', 0, 0, 0, 7, 0, 0, 'h'}, set.Encode())
		if err := b.Commit(false); err != nil {
			t.Fatal(err)
		}
		b.Close()
		got, err := s.Partitions()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("partitions %v, want %v", got, want)
		}
	})
}

// BenchmarkUpdate measures a read-modify-write (put with the stored
// context, no fsync) on the memory engine with the partition's Merkle tree
// built (every write updates a leaf) and without, for small and larger
// values (the tree's cost is mostly the digests of the old and new set,
// which grow with the value).
func BenchmarkUpdate(b *testing.B) {
	for _, size := range []int{100, 4096} {
		for _, on := range []bool{false, true} {
			b.Run(fmt.Sprintf("value=%d/tree=%s", size, map[bool]string{false: "off", true: "on"}[on]), func(b *testing.B) {
				s := open(b, memory.New(), "n1")
				loc := replica.Loc{Keyspace: 1, Partition: 1}
				keys := testKeys(10000)
				val := version.Value{Bytes: bytes.Repeat([]byte("x"), size)}
				put := func(cur version.Set) (version.Set, error) {
					next, _ := cur.Put(cur.Context(), s.Actor(), val, 1)
					return next, nil
				}
				for _, k := range keys {
					if _, err := s.Update(loc, k, false, put); err != nil {
						b.Fatal(err)
					}
				}
				if on {
					leaves(b, s, loc)
				}
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if _, err := s.Update(loc, keys[i%len(keys)], false, put); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
		}
	}
}

// TestScanVariantsKeepNoTree: ScanLeaves and ScanBucketDigests answer as
// Leaves and BucketDigests do, and register no tree.
func TestScanVariantsKeepNoTree(t *testing.T) {
	s := open(t, memory.New(), "n1")
	loc := replica.Loc{Keyspace: 1, Partition: 2}
	keys := testKeys(50)
	feed(t, s, loc, randomSets(rand.New(rand.NewPCG(3, 3)), keys), rand.New(rand.NewPCG(3, 3)))
	scanned, err := s.ScanLeaves(loc)
	if err != nil {
		t.Fatal(err)
	}
	digests, err := s.ScanBucketDigests(loc, []int{0, 1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	if s.HasTree(loc) {
		t.Fatal("a scan kept a tree")
	}
	if d := diffBuckets(scanned, expectedLeaves(t, s, loc, keys)); d != nil {
		t.Fatalf("scanned leaves differ from the definition in buckets %v", d)
	}
	kept, err := s.BucketDigests(loc, []int{0, 1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	if !s.HasTree(loc) || !slices.EqualFunc(digests, kept, func(a, b replica.KeyDigest) bool { return bytes.Equal(a.Key, b.Key) && a.Digest == b.Digest }) {
		t.Fatalf("scanned digests %d, kept %d (tree kept: %v): want the same keys, and the tree kept", len(digests), len(kept), s.HasTree(loc))
	}
	if d := diffBuckets(scanned, leaves(t, s, loc)); d != nil {
		t.Fatalf("scanned leaves differ from the kept tree's in buckets %v", d)
	}
}
