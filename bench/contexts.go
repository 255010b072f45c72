package bench

import (
	"fmt"
	"sync"
)

// Context scopes: who shares the causal contexts the benchmark remembers.
const (
	// ContextsShared: every worker of the run shares one cache, as one
	// application process whose threads share what any of them has read or
	// written. An update supersedes the latest version this process saw,
	// so siblings stay bounded by the writes in flight on the key.
	ContextsShared = "shared"
	// ContextsWorker: each worker remembers only its own, as 64 separate
	// client processes would. An update supersedes only what that worker
	// saw, so a key accumulates up to one sibling per worker (the set,
	// and every read and write of it, grows to Workers × value size).
	ContextsWorker = "worker"
)

// contextShards spreads the shared cache's lock over this many maps.
const contextShards = 64

// maxContexts bounds the contexts remembered per cache (per worker with
// ContextsWorker); a full cache is cleared, like a client's LRU would
// forget the oldest.
const maxContexts = 100_000

// contextCache remembers the causal context last seen per record.
type contextCache interface {
	get(rec uint64) []byte
	put(rec uint64, kvctx []byte)
}

// sharedContexts is a contextCache safe for concurrent use.
type sharedContexts struct {
	shards [contextShards]struct {
		mu sync.Mutex
		m  map[uint64][]byte
	}
}

func newSharedContexts() *sharedContexts {
	s := &sharedContexts{}
	for i := range s.shards {
		s.shards[i].m = map[uint64][]byte{}
	}
	return s
}

func (s *sharedContexts) get(rec uint64) []byte {
	sh := &s.shards[rec%contextShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.m[rec]
}

func (s *sharedContexts) put(rec uint64, kvctx []byte) {
	sh := &s.shards[rec%contextShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if len(sh.m) >= maxContexts/contextShards {
		clear(sh.m)
	}
	sh.m[rec] = kvctx
}

// workerContexts is one worker's own contextCache (not shared).
type workerContexts map[uint64][]byte

func (w workerContexts) get(rec uint64) []byte { return w[rec] }

func (w workerContexts) put(rec uint64, kvctx []byte) {
	if len(w) >= maxContexts {
		clear(w)
	}
	w[rec] = kvctx
}

// ContextCache holds what the workers remember across phases: pass one
// to the load and the run phase (Config.Contexts) so the run's first
// updates supersede the loaded records instead of adding siblings to them.
type ContextCache struct {
	scope  string
	shared *sharedContexts
	mu     sync.Mutex
	worker map[int]workerContexts
}

// NewContextCache makes a cache of the given scope: ContextsShared ("" too)
// or ContextsWorker.
func NewContextCache(scope string) (*ContextCache, error) {
	switch scope {
	case "", ContextsShared:
		return &ContextCache{scope: ContextsShared, shared: newSharedContexts()}, nil
	case ContextsWorker:
		return &ContextCache{scope: ContextsWorker, worker: map[int]workerContexts{}}, nil
	}
	return nil, fmt.Errorf("contexts %q: use %s (one cache for every worker) or %s (each worker its own)", scope, ContextsShared, ContextsWorker)
}

// Scope is ContextsShared or ContextsWorker.
func (c *ContextCache) Scope() string { return c.scope }

// forWorker is worker w's view of the cache.
func (c *ContextCache) forWorker(w int) contextCache {
	if c.shared != nil {
		return c.shared
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	wc := c.worker[w]
	if wc == nil {
		wc = workerContexts{}
		c.worker[w] = wc
	}
	return wc
}
