// Package engine defines the storage seam of a Meridian node: an ordered
// key/value store with atomic batches, bounded iterators and snapshots.
//
// Every engine (engine/pebble, engine/memory) must pass the conformance
// suite in engine/enginetest. Keys and values handed out by an engine are
// owned by the caller unless a method says otherwise.
package engine

import "errors"

// ErrNotFound is returned by Get when the key does not exist.
var ErrNotFound = errors.New("engine: key not found")

// ErrClosed is returned by any operation on a closed engine.
var ErrClosed = errors.New("engine: closed")

// ErrBatchDone is returned by Commit of a batch already committed or
// closed: its writes were applied once, or never, and stay so.
var ErrBatchDone = errors.New("engine: batch already committed or closed")

// ErrFailed wraps the failure of an engine that can no longer promise
// durability (a failed fsync: what the disk holds is unknown, and retrying
// the sync can report success for data the kernel already dropped). Once
// failed, an engine refuses every read and write with it, for good.
var ErrFailed = errors.New("engine: storage failed")

// Reader reads a consistent view of the data.
type Reader interface {
	// Get returns a copy of the value stored under key, or ErrNotFound.
	Get(key []byte) ([]byte, error)
	// NewIter returns an iterator over keys in [lower, upper). A nil bound
	// means unbounded on that side. The iterator must be closed.
	NewIter(lower, upper []byte) (Iterator, error)
}

// Engine is a node's local ordered key/value store.
type Engine interface {
	Reader
	// NewBatch returns an empty batch; nothing is visible until Commit.
	NewBatch() Batch
	// NewSnapshot returns a point-in-time view that later writes do not change.
	NewSnapshot() (Snapshot, error)
	// SyncWAL returns once every write committed before the call is
	// durable, whether it was committed with sync or not: a barrier for a
	// caller that must acknowledge content an earlier write may have left
	// unsynced.
	SyncWAL() error
	// Failed is closed once the engine has failed for good (see ErrFailed);
	// from then on every operation returns Failure. An engine that cannot
	// fail returns a nil channel (never ready).
	Failed() <-chan struct{}
	// Failure is the error the engine failed with (it wraps ErrFailed), or
	// nil while the engine is healthy.
	Failure() error
	// Stalled reports whether the engine is stalling writes (an LSM whose
	// compactions are behind): callers shed writes instead of queueing.
	Stalled() bool
	// Stats reports engine-specific counters for telemetry (name → value).
	Stats() map[string]float64
	// Close flushes and releases the engine. Later calls return ErrClosed.
	Close() error
}

// Batch collects writes that commit atomically: all of them or none.
type Batch interface {
	// Set stages key=value. The batch copies key and value.
	Set(key, value []byte)
	// Delete stages the removal of key.
	Delete(key []byte)
	// Len is the number of staged operations.
	Len() int
	// Commit applies the batch. With sync, Commit returns only after the
	// write is durable (the WAL is fsynced); without it the write may be lost
	// on a crash. A batch is unusable after Commit: a second Commit (or one
	// after Close) returns ErrBatchDone and applies nothing.
	Commit(sync bool) error
	// CommitNoSyncWait applies the batch durably but returns as soon as it
	// is visible, before its fsync completes: the caller may release its
	// locks, then must call wait, which returns once the batch is durable
	// (concurrent batches share one fsync). Acknowledge nothing before wait
	// returns nil.
	CommitNoSyncWait() (wait func() error, err error)
	// Close releases the batch; it is safe to call after Commit.
	Close() error
}

// Snapshot is a consistent, read-only view of the engine at one instant.
// After its Close, Get and NewIter return ErrClosed.
type Snapshot interface {
	Reader
	Close() error
}

// Iterator walks keys in ascending order within its bounds.
//
//	it, _ := e.NewIter(lo, hi)
//	defer it.Close()
//	for ok := it.First(); ok; ok = it.Next() { use(it.Key(), it.Value()) }
//	if err := it.Error(); err != nil { ... }
//
// After Close an iterator positions nothing (First, SeekGE, Next and
// Valid report false) and holds nothing (Key and Value return nil); Error
// reports what Close returned.
type Iterator interface {
	// First positions at the first key within bounds; false if none.
	First() bool
	// SeekGE positions at the first key >= key within bounds; false if none.
	SeekGE(key []byte) bool
	// Next advances; false when the iterator is exhausted.
	Next() bool
	// Valid reports whether the iterator is positioned at a key.
	Valid() bool
	// Key and Value are valid until the next positioning call; copy to keep.
	Key() []byte
	Value() []byte
	// Error returns the first error the iterator met, if any.
	Error() error
	Close() error
}
