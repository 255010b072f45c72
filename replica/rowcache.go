package replica

import "sync"

// rowCache keeps the encoded sibling sets of recently read and written
// keys, so that a read of a hot key, and the read before each of its
// writes, skips the engine (a Pebble point read: a memtable seek, then a
// filter and index probe per table level).
//
// It is exact, not eventually right: an entry changes only while its key's
// lock stripe (Store.locks) is held, and only after the engine has
// committed the change. A write sets the entry to what it committed, a
// delete drops it, a failed commit drops it, and a miss is filled from the
// engine under the stripe lock, so no write can fall between the engine
// read and the fill. An entry therefore always holds what the engine holds.
//
// Entries are shared byte slices that nobody modifies (a write replaces
// an entry's slice): a local read decodes a copy, a peer's read sends the
// slice as it is. Each shard is an LRU list bounded in bytes (key, the value's
// capacity and a fixed overhead per entry); a set larger than an eighth of
// a shard is not kept.
type rowCache struct {
	shards   [rowCacheShards]rowShard
	perShard int // byte budget of one shard
	maxEntry int // largest entry (bytes, with overhead) a shard keeps
}

const (
	rowCacheShards = 64
	// rowEntryOverhead is what an entry costs beyond its key and value: the
	// map slot, the entry struct and the key's string header.
	rowEntryOverhead = 96
)

type rowShard struct {
	mu    sync.Mutex
	m     map[string]*rowEntry
	lru   rowEntry // sentinel: lru.next is the most recently used entry
	bytes int
	// Counted under mu, which every lookup takes anyway: no counter
	// shared by all shards on the request path.
	hits, misses, evictions uint64
}

type rowEntry struct {
	key        string
	val        []byte
	prev, next *rowEntry
}

// newRowCache returns a cache of about capacity bytes, or nil (no cache)
// for capacity <= 0. The methods of a nil cache keep nothing.
func newRowCache(capacity int64) *rowCache {
	if capacity <= 0 {
		return nil
	}
	c := &rowCache{perShard: int(max(capacity/rowCacheShards, 1))}
	c.maxEntry = c.perShard / 8
	for i := range c.shards {
		sh := &c.shards[i]
		sh.m = make(map[string]*rowEntry)
		sh.lru.next, sh.lru.prev = &sh.lru, &sh.lru
	}
	return c
}

// shard picks a key's shard from the xxhash of its user key (the one its
// lock stripe is chosen by): bits 8 to 13, which neither the partition
// (the top bits) nor the Merkle bucket (the low 8) takes, so that a node
// holding only some partitions, or a few keys of one bucket, still
// spreads over every shard.
func (c *rowCache) shard(h uint64) *rowShard { return &c.shards[(h>>8)%rowCacheShards] }

// get returns k's cached encoding (shared: never modify it), counting a
// hit or a miss.
func (c *rowCache) get(k []byte, h uint64) ([]byte, bool) {
	if c == nil {
		return nil, false
	}
	return c.look(k, h, true)
}

// lookup is get without counting (a second look, under the stripe lock,
// after a counted miss).
func (c *rowCache) lookup(k []byte, h uint64) ([]byte, bool) { return c.look(k, h, false) }

func (c *rowCache) look(k []byte, h uint64, count bool) ([]byte, bool) {
	sh := c.shard(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e, ok := sh.m[string(k)]
	if count {
		if ok {
			sh.hits++
		} else {
			sh.misses++
		}
	}
	if !ok {
		return nil, false
	}
	sh.unlink(e)
	sh.pushFront(e)
	return e.val, true // read under the lock: a set may replace it
}

// set makes val (shared from now on: never modify it) k's entry. Call it
// only under k's stripe lock, with what the engine now holds for k.
func (c *rowCache) set(k []byte, h uint64, val []byte) {
	if c == nil {
		return
	}
	sh := c.shard(h)
	size := len(k) + cap(val) + rowEntryOverhead // what it holds in memory
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e, ok := sh.m[string(k)]; ok {
		if size > c.maxEntry {
			sh.drop(e)
			return
		}
		sh.bytes += cap(val) - cap(e.val)
		e.val = val
		sh.unlink(e)
		sh.pushFront(e)
	} else {
		if size > c.maxEntry {
			return
		}
		e := &rowEntry{key: string(k), val: val}
		sh.m[e.key] = e
		sh.pushFront(e)
		sh.bytes += size
	}
	for sh.bytes > c.perShard {
		sh.drop(sh.lru.prev)
		sh.evictions++
	}
}

// remove drops k's entry. Call it under k's stripe lock.
func (c *rowCache) remove(k []byte, h uint64) {
	if c == nil {
		return
	}
	sh := c.shard(h)
	sh.mu.Lock()
	if e, ok := sh.m[string(k)]; ok {
		sh.drop(e)
	}
	sh.mu.Unlock()
}

// stats returns the cache's counters and sizes for metrics.
func (c *rowCache) stats() map[string]float64 {
	if c == nil {
		return map[string]float64{"row_cache_capacity_bytes": 0}
	}
	var bytes, entries int
	var hits, misses, evictions uint64
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		bytes += sh.bytes
		entries += len(sh.m)
		hits, misses, evictions = hits+sh.hits, misses+sh.misses, evictions+sh.evictions
		sh.mu.Unlock()
	}
	return map[string]float64{
		"row_cache_hits_total":      float64(hits),
		"row_cache_misses_total":    float64(misses),
		"row_cache_evictions_total": float64(evictions),
		"row_cache_size_bytes":      float64(bytes),
		"row_cache_entries":         float64(entries),
		"row_cache_capacity_bytes":  float64(c.perShard * rowCacheShards),
	}
}

func (sh *rowShard) pushFront(e *rowEntry) {
	e.prev, e.next = &sh.lru, sh.lru.next
	sh.lru.next.prev = e
	sh.lru.next = e
}

func (sh *rowShard) unlink(e *rowEntry) {
	e.prev.next, e.next.prev = e.next, e.prev
}

func (sh *rowShard) drop(e *rowEntry) {
	sh.unlink(e)
	delete(sh.m, e.key)
	sh.bytes -= len(e.key) + cap(e.val) + rowEntryOverhead
}
