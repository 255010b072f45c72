package replica_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/meridiankv/meridian/engine"
	"github.com/meridiankv/meridian/engine/memory"
	"github.com/meridiankv/meridian/replica"
	"github.com/meridiankv/meridian/version"
)

// put stores a fresh value under key.
func put(t testing.TB, s *replica.Store, loc replica.Loc, key []byte, val string) {
	t.Helper()
	_, err := s.Update(loc, key, false, func(cur version.Set) (version.Set, error) {
		next, _ := cur.Put(cur.Context(), s.Actor(), version.Value{Bytes: []byte(val)}, 1)
		return next, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// fillNeighbours writes keys around loc (the partitions on either side, the
// same partition of the next keyspace) that no scan or drop of loc may see.
func fillNeighbours(t testing.TB, s *replica.Store, loc replica.Loc) []replica.Loc {
	t.Helper()
	others := []replica.Loc{
		{Keyspace: loc.Keyspace, Partition: loc.Partition - 1},
		{Keyspace: loc.Keyspace, Partition: loc.Partition + 1},
		{Keyspace: loc.Keyspace + 1, Partition: loc.Partition},
	}
	for _, o := range others {
		for _, k := range testKeys(5) {
			put(t, s, o, k, "neighbour")
		}
	}
	return others
}

// scanAll pages through loc and returns every page.
func scanAll(t testing.TB, s *replica.Store, loc replica.Loc, maxKeys, maxBytes int) [][]replica.ScanEntry {
	t.Helper()
	var pages [][]replica.ScanEntry
	var after []byte
	for {
		page, done, err := s.ScanPage(loc, after, maxKeys, maxBytes)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 && !done {
			t.Fatalf("empty page after %q that is not done", after)
		}
		pages = append(pages, page)
		if done {
			return pages
		}
		after = page[len(page)-1].Key
		if len(pages) > 10_000 {
			t.Fatal("scan does not end")
		}
	}
}

func TestScanPagePaging(t *testing.T) {
	engines(t, func(t *testing.T, eng engine.Engine) {
		s := open(t, eng, "n1")
		loc := replica.Loc{Keyspace: 3, Partition: 9}
		fillNeighbours(t, s, loc)
		keys := testKeys(50)
		for i, k := range keys {
			put(t, s, loc, k, fmt.Sprint("value-", i))
		}

		// maxKeys divides the key count: the page ending at the last key
		// already says done (no empty page to fetch).
		pages := scanAll(t, s, loc, 10, 1<<20)
		if len(pages) != 5 {
			t.Fatalf("%d pages of 10 for 50 keys, want 5", len(pages))
		}
		var got [][]byte
		for i, p := range pages {
			if len(p) != 10 {
				t.Fatalf("page %d holds %d entries, want 10", i, len(p))
			}
			for _, e := range p {
				got = append(got, e.Key)
				want, err := s.Get(loc, e.Key)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(e.Set, want.Encode()) {
					t.Fatalf("set of %q is not the stored encoding", e.Key)
				}
			}
		}
		if !slices.EqualFunc(got, keys, bytes.Equal) {
			t.Fatalf("scan returned %q, want %q", got, keys)
		}

		// Uneven: 7 pages of 7 and one of 1.
		if pages := scanAll(t, s, loc, 7, 1<<20); len(pages) != 8 || len(pages[7]) != 1 {
			t.Fatalf("%d pages of 7 for 50 keys (last %d), want 8 (last 1)", len(pages), len(pages[len(pages)-1]))
		}

		// After the last key: nothing, done.
		page, done, err := s.ScanPage(loc, keys[len(keys)-1], 10, 1<<20)
		if err != nil || len(page) != 0 || !done {
			t.Fatalf("after the last key: %d entries, done %v, %v; want none, done", len(page), done, err)
		}
		// After a key that is not stored: from the next one.
		page, _, err = s.ScanPage(loc, append(slices.Clone(keys[4]), '!'), 1, 1<<20)
		if err != nil || len(page) != 1 || !bytes.Equal(page[0].Key, keys[5]) {
			t.Fatalf("after %q!: %v, %v; want %q", keys[4], page, err, keys[5])
		}
		// Strictly after: the key itself is not repeated.
		page, _, err = s.ScanPage(loc, keys[10], 1, 1<<20)
		if err != nil || len(page) != 1 || !bytes.Equal(page[0].Key, keys[11]) {
			t.Fatalf("after %q: %v, %v; want %q", keys[10], page, err, keys[11])
		}

		// maxBytes: one byte still moves one key per page; the exact size
		// of two entries stops after two.
		if pages := scanAll(t, s, loc, 1000, 1); len(pages) != 50 {
			t.Fatalf("%d pages with maxBytes 1, want 50 (one key each)", len(pages))
		}
		first, _, err := s.ScanPage(loc, nil, 2, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		two := len(first[0].Key) + len(first[0].Set) + len(first[1].Key) + len(first[1].Set)
		// two-1: the second entry crosses the bound and is still returned.
		for _, mb := range []int{two, two - 1} {
			page, done, err := s.ScanPage(loc, nil, 1000, mb)
			if err != nil || done || len(page) != 2 {
				t.Fatalf("maxBytes %d: %d entries (done %v, %v), want 2", mb, len(page), done, err)
			}
		}
		if page, _, _ := s.ScanPage(loc, nil, 1000, two+1); len(page) != 3 {
			t.Fatalf("maxBytes %d: %d entries, want 3", two+1, len(page))
		}

		// An empty partition is done at once.
		page, done, err = s.ScanPage(replica.Loc{Keyspace: 3, Partition: 100}, nil, 10, 100)
		if err != nil || len(page) != 0 || !done {
			t.Fatalf("empty partition: %d entries, done %v, %v", len(page), done, err)
		}
	})
}

func TestScanPageLastPartition(t *testing.T) {
	engines(t, func(t *testing.T, eng engine.Engine) {
		s := open(t, eng, "n1")
		loc := replica.Loc{Keyspace: 2, Partition: 0xffff}
		put(t, s, loc, []byte("a"), "x")
		put(t, s, replica.Loc{Keyspace: 3}, []byte("a"), "next keyspace")
		page, done, err := s.ScanPage(loc, nil, 10, 1<<20)
		if err != nil || len(page) != 1 || !done {
			t.Fatalf("last partition: %d entries, done %v, %v; want 1, done", len(page), done, err)
		}
	})
}

// TestLastPartitionOfLastKeyspace: the very last partition (keyspace IDs
// are name hashes, so 0xffffffff can be one) has a range like any other:
// a scan, its size and a drop see its keys, not an empty range whose
// upper bound wrapped below its lower one.
func TestLastPartitionOfLastKeyspace(t *testing.T) {
	engines(t, func(t *testing.T, eng engine.Engine) {
		s := open(t, eng, "n1")
		loc := replica.Loc{Keyspace: ^uint32(0), Partition: 0xffff}
		put(t, s, replica.Loc{Keyspace: 0}, []byte("a"), "first keyspace")
		put(t, s, loc, []byte("a"), "x")
		page, done, err := s.ScanPage(loc, nil, 10, 1<<20)
		if err != nil || len(page) != 1 || !done {
			t.Fatalf("scan: %d entries, done %v, %v; want 1, done", len(page), done, err)
		}
		if b, err := s.PartitionBytes(loc); err != nil || b == 0 {
			t.Fatalf("PartitionBytes = %d, %v; want more than 0", b, err)
		}
		if n, err := s.DropPartition(loc); err != nil || n != 1 {
			t.Fatalf("DropPartition = %d, %v; want 1", n, err)
		}
		if set, _ := s.Get(replica.Loc{Keyspace: 0}, []byte("a")); set.IsEmpty() {
			t.Fatal("the drop took keyspace 0's key too")
		}
	})
}

func TestScanPageRejectsLongAfter(t *testing.T) {
	s := open(t, memory.New(), "n1")
	if _, _, err := s.ScanPage(replica.Loc{}, make([]byte, replica.MaxKeyLen+1), 1, 1); err == nil {
		t.Fatal("a key past MaxKeyLen accepted as the scan position")
	}
}

func TestPartitionBytes(t *testing.T) {
	engines(t, func(t *testing.T, eng engine.Engine) {
		s := open(t, eng, "n1")
		loc := replica.Loc{Keyspace: 1, Partition: 4}
		fillNeighbours(t, s, loc)
		want := uint64(0)
		for _, k := range testKeys(30) {
			put(t, s, loc, k, "some value")
			set, err := s.Get(loc, k)
			if err != nil {
				t.Fatal(err)
			}
			want += uint64(len(k) + len(set.Encode()))
		}
		got, err := s.PartitionBytes(loc)
		if err != nil || got != want {
			t.Fatalf("PartitionBytes = %d, %v; want %d", got, err, want)
		}
		if got, err := s.PartitionBytes(replica.Loc{Keyspace: 9}); err != nil || got != 0 {
			t.Fatalf("empty partition: %d, %v", got, err)
		}
	})
}

func TestDropPartition(t *testing.T) {
	engines(t, func(t *testing.T, eng engine.Engine) {
		s := open(t, eng, "n1")
		loc := replica.Loc{Keyspace: 5, Partition: 17}
		others := fillNeighbours(t, s, loc)
		keys := testKeys(2500) // three batches
		for _, k := range keys {
			put(t, s, loc, k, "doomed")
		}
		before := map[replica.Loc][]uint64{}
		for _, o := range others {
			before[o] = leaves(t, s, o)
		}
		if l := leaves(t, s, loc); slices.Equal(l, make([]uint64, replica.Buckets)) {
			t.Fatal("leaves of a full partition are all zero")
		}

		n, err := s.DropPartition(loc)
		if err != nil || n != len(keys) {
			t.Fatalf("DropPartition = %d, %v; want %d", n, err, len(keys))
		}
		if l := leaves(t, s, loc); !slices.Equal(l, make([]uint64, replica.Buckets)) {
			t.Fatalf("leaves after the drop differ from zero in buckets %v", diffBuckets(l, make([]uint64, replica.Buckets)))
		}
		parts, err := s.Partitions()
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(parts, loc) || len(parts) != len(others) {
			t.Fatalf("Partitions after the drop = %v, want %v", parts, others)
		}
		for _, o := range others {
			if l := leaves(t, s, o); !slices.Equal(l, before[o]) {
				t.Fatalf("the drop of %v changed the leaves of %v", loc, o)
			}
		}
		if page, done, err := s.ScanPage(loc, nil, 10, 1<<20); err != nil || len(page) != 0 || !done {
			t.Fatalf("scan after the drop: %d entries, done %v, %v", len(page), done, err)
		}

		// A later write lands in a tree that is exact again.
		put(t, s, loc, keys[7], "reborn")
		if got, want := leaves(t, s, loc), expectedLeaves(t, s, loc, keys); !slices.Equal(got, want) {
			t.Fatalf("leaves after a write following the drop differ in buckets %v", diffBuckets(got, want))
		}
		if set, err := s.Get(loc, keys[7]); err != nil || len(set.Live()) != 1 {
			t.Fatalf("write after the drop: %v, %v", set, err)
		}
		if n, err := s.DropPartition(loc); err != nil || n != 1 {
			t.Fatalf("second drop = %d, %v; want 1", n, err)
		}
		if n, err := s.DropPartition(loc); err != nil || n != 0 {
			t.Fatalf("drop of an empty partition = %d, %v; want 0", n, err)
		}
	})
}

// TestDropRacingWithWrites: writes (and tree reads) during a drop are each
// dropped whole or kept whole, so the tree of what survives is exact.
func TestDropRacingWithWrites(t *testing.T) {
	engines(t, func(t *testing.T, eng engine.Engine) {
		s := open(t, eng, "n1")
		loc := replica.Loc{Keyspace: 5, Partition: 17}
		keys := testKeys(3000)
		for _, k := range keys {
			put(t, s, loc, k, "old")
		}
		leaves(t, s, loc) // built: the drop keeps it current
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(w), 1))
				for {
					select {
					case <-stop:
						return
					default:
					}
					randomOp(t, s, r, loc, keys, []string{"a", "b"})
					if r.IntN(16) == 0 {
						if _, err := s.Leaves(loc); err != nil {
							t.Error(err)
						}
					}
				}
			}()
		}
		if _, err := s.DropPartition(loc); err != nil {
			t.Error(err)
		}
		close(stop)
		wg.Wait()
		if got, want := leaves(t, s, loc), expectedLeaves(t, s, loc, keys); !slices.Equal(got, want) {
			t.Fatalf("leaves after a drop racing with writes differ in buckets %v", diffBuckets(got, want))
		}
	})
}
