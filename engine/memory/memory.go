// Package memory is an in-memory engine.Engine for tests and throwaway
// clusters: a copy-on-write B-tree, so snapshots are cheap and real.
package memory

import (
	"bytes"
	"sync"

	"github.com/google/btree"

	"github.com/meridiankv/meridian/engine"
)

type item struct{ k, v []byte }

func less(a, b item) bool { return bytes.Compare(a.k, b.k) < 0 }

// Engine is an in-memory engine. The zero value is not usable; call New.
type Engine struct {
	mu     sync.RWMutex
	tree   *btree.BTreeG[item]
	closed bool
}

// New returns an empty engine.
func New() *Engine {
	return &Engine{tree: btree.NewG(32, less)}
}

func clone(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return append(make([]byte, 0, len(b)), b...)
}

// Get returns a copy of the value of key.
func (e *Engine) Get(key []byte) ([]byte, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		return nil, engine.ErrClosed
	}
	return get(e.tree, key)
}

func get(t *btree.BTreeG[item], key []byte) ([]byte, error) {
	it, ok := t.Get(item{k: key})
	if !ok {
		return nil, engine.ErrNotFound
	}
	return clone(it.v), nil
}

// NewIter iterates over a snapshot of [lower, upper).
func (e *Engine) NewIter(lower, upper []byte) (engine.Iterator, error) {
	e.mu.Lock() // Clone marks the tree's nodes shared: exclusive access
	defer e.mu.Unlock()
	if e.closed {
		return nil, engine.ErrClosed
	}
	return newIter(e.tree.Clone(), lower, upper), nil
}

// NewBatch returns an empty batch.
func (e *Engine) NewBatch() engine.Batch { return &batch{e: e} }

// NewSnapshot returns a point-in-time view.
func (e *Engine) NewSnapshot() (engine.Snapshot, error) {
	e.mu.Lock() // Clone needs exclusive access to mark nodes shared
	defer e.mu.Unlock()
	if e.closed {
		return nil, engine.ErrClosed
	}
	return &snapshot{tree: e.tree.Clone()}, nil
}

// SyncWAL has nothing to make durable; it only reports a closed engine.
func (e *Engine) SyncWAL() error {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		return engine.ErrClosed
	}
	return nil
}

// Failed returns nil: memory has no disk to fail.
func (e *Engine) Failed() <-chan struct{} { return nil }

// Failure is always nil.
func (e *Engine) Failure() error { return nil }

// Stalled is always false: memory never stalls.
func (e *Engine) Stalled() bool { return false }

// Stats reports the number of keys.
func (e *Engine) Stats() map[string]float64 {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return map[string]float64{"keys": float64(e.tree.Len())}
}

// Close releases the data; later calls return engine.ErrClosed.
func (e *Engine) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return engine.ErrClosed
	}
	e.closed = true
	e.tree = btree.NewG(2, less)
	return nil
}

type op struct {
	k, v []byte
	del  bool
}

type batch struct {
	e    *Engine
	ops  []op
	done bool // committed or closed
}

func (b *batch) Set(key, value []byte) {
	if !b.done {
		b.ops = append(b.ops, op{k: clone(key), v: clone(value)})
	}
}

func (b *batch) Delete(key []byte) {
	if !b.done {
		b.ops = append(b.ops, op{k: clone(key), del: true})
	}
}

func (b *batch) Len() int     { return len(b.ops) }
func (b *batch) Close() error { b.ops, b.done = nil, true; return nil }

// Commit applies every operation at once; sync has no meaning in memory.
func (b *batch) Commit(bool) error {
	if b.done {
		return engine.ErrBatchDone
	}
	b.done = true
	b.e.mu.Lock()
	defer b.e.mu.Unlock()
	if b.e.closed {
		return engine.ErrClosed
	}
	for _, o := range b.ops {
		if o.del {
			b.e.tree.Delete(item{k: o.k})
		} else {
			b.e.tree.ReplaceOrInsert(item{k: o.k, v: o.v})
		}
	}
	b.ops = nil
	return nil
}

// CommitNoSyncWait is Commit; memory has nothing to wait for.
func (b *batch) CommitNoSyncWait() (func() error, error) {
	if err := b.Commit(true); err != nil {
		return nil, err
	}
	return func() error { return nil }, nil
}

type snapshot struct {
	mu     sync.Mutex
	tree   *btree.BTreeG[item]
	closed bool
}

func (s *snapshot) Get(key []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, engine.ErrClosed
	}
	return get(s.tree, key)
}

func (s *snapshot) NewIter(lower, upper []byte) (engine.Iterator, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, engine.ErrClosed
	}
	return newIter(s.tree.Clone(), lower, upper), nil
}

func (s *snapshot) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

// iter materializes nothing: it seeks in its own clone of the tree.
type iter struct {
	tree         *btree.BTreeG[item]
	lower, upper []byte
	cur          item
	valid        bool
	closed       bool // positions nothing after Close
}

func newIter(t *btree.BTreeG[item], lower, upper []byte) *iter {
	return &iter{tree: t, lower: clone0(lower), upper: clone0(upper)}
}

func clone0(b []byte) []byte {
	if b == nil {
		return nil
	}
	return clone(b)
}

func (it *iter) seek(from []byte, strictlyAfter bool) bool {
	it.valid = false
	if it.closed {
		return false
	}
	visit := func(x item) bool {
		if strictlyAfter && bytes.Equal(x.k, from) {
			return true
		}
		if it.upper != nil && bytes.Compare(x.k, it.upper) >= 0 {
			return false
		}
		it.cur, it.valid = x, true
		return false
	}
	if from == nil {
		it.tree.Ascend(visit)
	} else {
		it.tree.AscendGreaterOrEqual(item{k: from}, visit)
	}
	return it.valid
}

func (it *iter) First() bool { return it.seek(it.lower, false) }

func (it *iter) SeekGE(key []byte) bool {
	if it.lower != nil && bytes.Compare(key, it.lower) < 0 {
		key = it.lower
	}
	return it.seek(key, false)
}

func (it *iter) Next() bool {
	if !it.valid {
		return false
	}
	return it.seek(it.cur.k, true)
}

func (it *iter) Valid() bool   { return it.valid }
func (it *iter) Key() []byte   { return it.cur.k }
func (it *iter) Value() []byte { return it.cur.v }
func (it *iter) Error() error  { return nil }
func (it *iter) Close() error  { it.cur, it.valid, it.closed = item{}, false, true; return nil }
