package replica_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/meridiankv/meridian/engine"
	"github.com/meridiankv/meridian/engine/memory"
	"github.com/meridiankv/meridian/engine/pebble"
	"github.com/meridiankv/meridian/replica"
	"github.com/meridiankv/meridian/version"
)

// countingEngine counts the engine reads of data keys; failure, once set,
// is its Failure.
type countingEngine struct {
	engine.Engine
	dataGets atomic.Int64
	failure  atomic.Pointer[error]
}

func (e *countingEngine) Failure() error {
	if p := e.failure.Load(); p != nil {
		return *p
	}
	return nil
}

func (e *countingEngine) Get(k []byte) ([]byte, error) {
	if len(k) > 0 && k[0] == 'd' {
		e.dataGets.Add(1)
	}
	return e.Engine.Get(k)
}

// TestRowCacheServesHotKeysWithoutTheEngine: once a key is read, its reads
// and the read before each of its writes come from the row cache.
func TestRowCacheServesHotKeysWithoutTheEngine(t *testing.T) {
	eng := &countingEngine{Engine: memory.New()}
	s, err := replica.Open(eng, "n1")
	if err != nil {
		t.Fatal(err)
	}
	loc := replica.Loc{Keyspace: 1, Partition: 2}
	put(t, s, loc, []byte("k"), "v0") // an insert: read (absent) from the engine, not cached
	if _, err := s.Get(loc, []byte("k")); err != nil {
		t.Fatal(err)
	}
	if got := eng.dataGets.Load(); got != 2 {
		t.Fatalf("insert and first read: %d engine reads, want 2", got)
	}
	for i := range 10 {
		put(t, s, loc, []byte("k"), fmt.Sprint("v", i+1))
		set, err := s.Get(loc, []byte("k"))
		if err != nil {
			t.Fatal(err)
		}
		if len(set.Siblings) != 1 || string(set.Siblings[0].Value.Bytes) != fmt.Sprint("v", i+1) {
			t.Fatalf("read after write %d: %+v", i+1, set.Siblings)
		}
	}
	if got := eng.dataGets.Load(); got != 2 {
		t.Errorf("ten more writes and reads of a cached key read the engine %d more times, want 0", got-2)
	}
	if st := s.CacheStats(); st["row_cache_hits_total"] != 20 {
		t.Errorf("row cache hits %v, want 20", st["row_cache_hits_total"])
	}
	// A peer's read of it, encoded, comes from the cache too; changing
	// what Get returned does not change it.
	enc, err := s.GetEncoded(loc, []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	set, err := s.Get(loc, []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(enc, set.Encode()) || eng.dataGets.Load() != 2 {
		t.Fatalf("GetEncoded %x, want %x from the cache (engine reads %d, want 2)", enc, set.Encode(), eng.dataGets.Load())
	}
	clear(set.Siblings[0].Value.Bytes)
	if again, _ := s.GetEncoded(loc, []byte("k")); !bytes.Equal(again, enc) {
		t.Fatal("changing a set Get returned changed the cached copy")
	}
	if enc, err := s.GetEncoded(loc, []byte("absent")); enc != nil || err != nil {
		t.Fatalf("GetEncoded of an absent key: %x, %v; want nil, nil", enc, err)
	}

	// A failed engine fails every read: a cached set too, which may be one
	// whose fsync failed.
	failed := fmt.Errorf("%w: fsync: input/output error", engine.ErrFailed)
	eng.failure.Store(&failed)
	if _, err := s.Get(loc, []byte("k")); !errors.Is(err, engine.ErrFailed) {
		t.Errorf("read of a cached key after the engine failed: %v, want ErrFailed", err)
	}
	if _, err := s.GetEncoded(loc, []byte("k")); !errors.Is(err, engine.ErrFailed) {
		t.Errorf("encoded read of a cached key after the engine failed: %v, want ErrFailed", err)
	}

	off, err := replica.OpenWith(&countingEngine{Engine: memory.New()}, "n1", replica.Options{RowCacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	put(t, off, loc, []byte("k"), "v")
	if set, err := off.Get(loc, []byte("k")); err != nil || len(set.Siblings) != 1 {
		t.Fatalf("without a row cache: %+v, %v", set, err)
	}
	if enc, err := off.GetEncoded(loc, []byte("k")); err != nil || enc == nil {
		t.Fatalf("GetEncoded without a row cache: %x, %v", enc, err)
	}
	if st := off.CacheStats(); st["row_cache_capacity_bytes"] != 0 {
		t.Errorf("cache off reports capacity %v", st["row_cache_capacity_bytes"])
	}
}

// checkExact fails unless every key reads from the store as the engine
// holds it.
func checkExact(t *testing.T, s *replica.Store, eng engine.Engine, loc replica.Loc, keys []string) {
	t.Helper()
	for _, k := range keys {
		got, err := s.Get(loc, []byte(k))
		if err != nil {
			t.Fatal(err)
		}
		var want version.Set
		raw, err := eng.Get(replica.DataKey(loc, []byte(k)))
		if err == nil {
			want, err = version.DecodeSet(raw)
		}
		if err != nil && err != engine.ErrNotFound {
			t.Fatal(err)
		}
		if !got.Equal(want) {
			t.Fatalf("key %s reads %+v from the store, the engine holds %+v", k, got.Siblings, want.Siblings)
		}
		// Its encoding, as a peer's read passes it on, is the engine's
		// bytes exactly (nil for a key it does not hold).
		enc, err := s.GetEncoded(loc, []byte(k))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(enc, raw) || (enc == nil) != (raw == nil) {
			t.Fatalf("key %s: GetEncoded %x, the engine holds %x", k, enc, raw)
		}
	}
}

// TestRowCacheStaysExact runs random writes, reads, tombstone collection
// and partition drops through a small cache (evicting all the time) and
// checks after each step that the key it touched, and every 250 steps that
// every key, reads as the engine holds it.
func TestRowCacheStaysExact(t *testing.T) {
	eng := memory.New()
	s, err := replica.OpenWith(eng, "n1", replica.Options{RowCacheSize: 64 * 1536})
	if err != nil {
		t.Fatal(err)
	}
	loc := replica.Loc{Keyspace: 3, Partition: 9}
	var keys []string
	for i := range 1000 {
		keys = append(keys, fmt.Sprint("key-", i))
		put(t, s, loc, []byte(keys[i]), "first")
	}
	checkExact(t, s, eng, loc, keys) // fills the cache past its bound
	rng := rand.New(rand.NewPCG(1, 2))
	for step := range 5000 {
		k := keys[rng.IntN(len(keys))]
		switch op := rng.IntN(20); {
		case op < 12:
			put(t, s, loc, []byte(k), fmt.Sprint(step))
		case op < 13:
			// A write that supersedes nothing: a sibling.
			if _, err := s.Update(loc, []byte(k), false, func(cur version.Set) (version.Set, error) {
				next, _ := cur.Put(version.Clock{}, s.Actor(), version.Value{Bytes: []byte("sib")}, 1)
				return next, nil
			}); err != nil {
				t.Fatal(err)
			}
		case op < 17:
			if _, err := s.Get(loc, []byte(k)); err != nil {
				t.Fatal(err)
			}
		case op < 19:
			cur, err := s.Get(loc, []byte(k))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.DeleteIfUnchanged(loc, []byte(k), cur); err != nil {
				t.Fatal(err)
			}
		default:
			if step%20 == 0 {
				if _, err := s.DropPartition(loc); err != nil {
					t.Fatal(err)
				}
			}
		}
		checkExact(t, s, eng, loc, []string{k})
		if step%250 == 0 {
			checkExact(t, s, eng, loc, keys)
		}
	}
	if st := s.CacheStats(); st["row_cache_hits_total"] == 0 || st["row_cache_evictions_total"] == 0 {
		t.Fatalf("the test ran without hits or evictions: %v", st)
	}
}

// TestRowCacheConcurrentReadersAndWriters: reads that miss fill the cache
// while writers change the same keys; afterwards every key reads as the
// engine holds it and holds every write's version (run it with -race).
func TestRowCacheConcurrentReadersAndWriters(t *testing.T) {
	eng := memory.New()
	s, err := replica.OpenWith(eng, "n1", replica.Options{RowCacheSize: 64 * 1024})
	if err != nil {
		t.Fatal(err)
	}
	loc := replica.Loc{Keyspace: 1}
	keys := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	const writers, readers, writes = 4, 4, 300
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range writes {
				k := keys[(w+i)%len(keys)]
				// Blind writes: each stays as a sibling until the key is
				// dropped below, so none may go missing.
				if _, err := s.Update(loc, []byte(k), false, func(cur version.Set) (version.Set, error) {
					next, _ := cur.Put(version.Clock{}, s.Actor(), version.Value{Bytes: fmt.Appendf(nil, "%d/%d", w, i)}, 1)
					return next, nil
				}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for r := range readers {
		wg.Go(func() {
			for i := range writes * 2 {
				if _, err := s.Get(loc, []byte(keys[(r*3+i)%len(keys)])); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	checkExact(t, s, eng, loc, keys)
	total := 0
	for _, k := range keys {
		set, err := s.Get(loc, []byte(k))
		if err != nil {
			t.Fatal(err)
		}
		total += len(set.Siblings)
	}
	if total != writers*writes {
		t.Fatalf("%d siblings over all keys after %d blind writes", total, writers*writes)
	}
}

// BenchmarkRowCache reads and updates (put with the stored context, no
// fsync) 5,000 keys of 1 KiB on Pebble, with the row cache and without:
// what the cache saves a replica per read and per read-modify-write.
func BenchmarkRowCache(b *testing.B) {
	for _, op := range []string{"get", "update"} {
		for _, size := range []int64{-1, replica.DefaultRowCacheSize} {
			b.Run(fmt.Sprintf("%s/cache=%v", op, size > 0), func(b *testing.B) {
				eng, err := pebble.Open(pebble.Options{Dir: b.TempDir()})
				if err != nil {
					b.Fatal(err)
				}
				defer eng.Close()
				s, err := replica.OpenWith(eng, "n1", replica.Options{RowCacheSize: size})
				if err != nil {
					b.Fatal(err)
				}
				loc := replica.Loc{Keyspace: 1, Partition: 1}
				val := version.Value{Bytes: make([]byte, 1024)}
				update := func(cur version.Set) (version.Set, error) {
					next, _ := cur.Put(cur.Context(), s.Actor(), val, 1)
					return next, nil
				}
				const keys = 5000
				key := func(i int) []byte { return fmt.Appendf(nil, "key-%d", i%keys) }
				for i := range keys * 4 { // inserts, then updates: versions in the memtable
					if _, err := s.Update(loc, key(i), false, update); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if op == "get" {
						_, err = s.Get(loc, key(i))
					} else {
						_, err = s.Update(loc, key(i), false, update)
					}
					if err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
		}
	}
}
