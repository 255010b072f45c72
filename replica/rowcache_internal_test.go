package replica

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/cespare/xxhash/v2"
)

// sameShard returns the hash of the i-th key of one shard: the shard is
// chosen by bits 8 to 13.
func sameShard(i int) uint64 { return 5<<8 | uint64(i)<<14 }

func TestRowCacheKeepsItsBound(t *testing.T) {
	c := newRowCache(64 * 1024) // 1 KiB per shard, entries up to 128 bytes
	val := make([]byte, 20)
	for i := range 1000 {
		c.set(fmt.Appendf(nil, "key-%d", i), uint64(i)<<8, val)
	}
	st := c.stats()
	if st["row_cache_size_bytes"] > 64*1024 {
		t.Fatalf("cache holds %v bytes, bound 65536", st["row_cache_size_bytes"])
	}
	if st["row_cache_evictions_total"] == 0 || st["row_cache_entries"] == 0 {
		t.Fatalf("1000 entries of about 130 bytes into 64 KiB: %v evictions, %v entries", st["row_cache_evictions_total"], st["row_cache_entries"])
	}
}

func TestRowCacheEvictsTheLeastRecentlyUsed(t *testing.T) {
	c := newRowCache(64 * 1024)
	val := make([]byte, 20)
	key := func(i int) []byte { return fmt.Appendf(nil, "k%02d", i) }
	// 123 bytes an entry: a 1 KiB shard holds 8.
	for i := range 8 {
		c.set(key(i), sameShard(i), val)
	}
	if _, ok := c.get(key(0), sameShard(0)); !ok { // 0 is now the most recent
		t.Fatal("k00 missing before the shard was full")
	}
	c.set(key(8), sameShard(8), val) // evicts 1, the least recently used
	if _, ok := c.get(key(0), sameShard(0)); !ok {
		t.Error("k00, just read, was evicted")
	}
	if _, ok := c.get(key(1), sameShard(1)); ok {
		t.Error("k01, the least recently used, was kept past the bound")
	}
	if got := c.stats()["row_cache_evictions_total"]; got != 1 {
		t.Errorf("%v evictions, want 1", got)
	}
}

func TestRowCacheSkipsLargeSets(t *testing.T) {
	c := newRowCache(64 * 1024)
	k := []byte("k")
	c.set(k, sameShard(0), make([]byte, 200)) // over an eighth of 1 KiB
	if _, ok := c.get(k, sameShard(0)); ok {
		t.Fatal("a set over an eighth of its shard was cached")
	}
	c.set(k, sameShard(0), []byte("small"))
	c.set(k, sameShard(0), make([]byte, 200)) // grown past the limit: dropped, not kept stale
	if v, ok := c.get(k, sameShard(0)); ok {
		t.Fatalf("entry kept as %q after a set too large to cache replaced it", v)
	}
	if got := c.stats()["row_cache_size_bytes"]; got != 0 {
		t.Errorf("empty cache accounts %v bytes", got)
	}
}

func TestRowCacheReplaceAndRemove(t *testing.T) {
	c := newRowCache(64 * 1024)
	k := []byte("k")
	three := make([]byte, 5, 24) // spare capacity is memory too
	copy(three, "three")
	c.set(k, 1, []byte("one"))
	c.set(k, 1, three)
	if v, _ := c.get(k, 1); !bytes.Equal(v, []byte("three")) {
		t.Fatalf("get after replace = %q, want three", v)
	}
	if got, want := c.stats()["row_cache_size_bytes"], float64(len(k)+cap(three)+rowEntryOverhead); got != want {
		t.Errorf("size %v after replace, want %v", got, want)
	}
	c.remove(k, 1)
	if _, ok := c.get(k, 1); ok {
		t.Fatal("entry still cached after remove")
	}
	st := c.stats()
	if st["row_cache_size_bytes"] != 0 || st["row_cache_entries"] != 0 || st["row_cache_hits_total"] != 1 || st["row_cache_misses_total"] != 1 {
		t.Errorf("stats after remove: %v", st)
	}
	var none *rowCache // off: keeps nothing, panics on nothing
	none.set(k, 1, []byte("x"))
	if _, ok := none.get(k, 1); ok {
		t.Error("a nil cache returned an entry")
	}
	none.remove(k, 1)
}

// TestRowCacheShardsSpreadOverFewPartitions: keys of only a few
// partitions (a node holds some of a small ring), which share the top
// bits of their hash, still fill every shard: the whole capacity serves.
func TestRowCacheShardsSpreadOverFewPartitions(t *testing.T) {
	c := newRowCache(64 * 1024)
	val := make([]byte, 20)
	for i := 0; i < 4000; i++ {
		key := fmt.Appendf(nil, "key-%d", i)
		h := xxhash.Sum64(key)
		if p := h >> 60; p != 1 && p != 6 && p != 11 && p != 14 { // 4 of 16 partitions
			continue
		}
		c.set(key, h, val)
	}
	for i := range c.shards {
		if len(c.shards[i].m) == 0 {
			t.Fatalf("shard %d of %d holds nothing: keys of 4 of 16 partitions reach only some shards", i, rowCacheShards)
		}
	}
}
