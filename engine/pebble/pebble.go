// Package pebble is Meridian's default engine: a Pebble LSM with its
// write-ahead log. A batch committed with sync returns only after the WAL
// is fsynced (concurrent synced commits share one fsync: Pebble's group
// commit); without sync the write may be lost even on a plain process kill.
package pebble

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"

	pebbledb "github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/vfs"

	"github.com/meridiankv/meridian/engine"
)

// Options configure the engine. Zero values mean the defaults.
type Options struct {
	// Dir is the data directory (created if missing). Required.
	Dir string
	// CacheSize is the block cache size in bytes (default 64 MiB).
	CacheSize int64
	// MemTableSize in bytes (default 32 MiB).
	MemTableSize uint64
	// FS replaces the operating system's filesystem (tests: vfs.NewStrictMem).
	FS vfs.FS
	// Logger receives Pebble's own log lines at debug level (default: none).
	Logger *slog.Logger
}

// Defaults.
const (
	DefaultCacheSize    = 64 << 20
	DefaultMemTableSize = 32 << 20
)

func (o *Options) withDefaults() {
	if o.CacheSize == 0 {
		o.CacheSize = DefaultCacheSize
	}
	if o.MemTableSize == 0 {
		o.MemTableSize = DefaultMemTableSize
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Engine is a Pebble-backed engine.Engine.
type Engine struct {
	db *pebbledb.DB
	// mu guards closed; operations hold the read lock so Close waits for
	// them instead of racing Pebble's own teardown.
	mu     sync.RWMutex
	closed bool
}

// Open opens (or creates) the engine in opts.Dir.
func Open(opts Options) (*Engine, error) {
	if opts.Dir == "" {
		return nil, errors.New("pebble: Dir is empty")
	}
	opts.withDefaults()
	cache := pebbledb.NewCache(opts.CacheSize)
	defer cache.Unref()
	po := &pebbledb.Options{
		Cache:        cache,
		MemTableSize: opts.MemTableSize,
		Logger:       slogLogger{opts.Logger},
	}
	if opts.FS != nil {
		po.FS = opts.FS
	}
	fs := po.FS
	if fs == nil {
		fs = vfs.Default
	}
	// Pebble syncs the files in its directory, not the directory's own
	// entry in its parent: create the directory and make its entry durable
	// first, so a crash right after the first acknowledged write cannot
	// lose the whole directory.
	if err := fs.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("pebble: create %s: %w", opts.Dir, err)
	}
	if err := syncAncestors(fs, opts.Dir); err != nil {
		return nil, fmt.Errorf("pebble: sync the directories above %s: %w", opts.Dir, err)
	}
	db, err := pebbledb.Open(opts.Dir, po)
	if err != nil {
		return nil, fmt.Errorf("pebble: open %s: %w", opts.Dir, err)
	}
	return &Engine{db: db}, nil
}

// syncAncestors fsyncs every directory above dir, so that each entry on the
// path (which MkdirAll may just have created) is durable.
func syncAncestors(fs vfs.FS, dir string) error {
	if fs == vfs.Default {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return err
		}
		dir = abs
	}
	for d := filepath.Clean(dir); ; {
		parent := filepath.Dir(d)
		if parent == d {
			return nil
		}
		if err := syncDir(fs, parent); err != nil {
			return err
		}
		d = parent
	}
}

func syncDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// slogLogger routes Pebble's logging to slog at debug level. Fatalf keeps
// Pebble's contract (it must not return): a failed WAL sync stops the node
// rather than being retried.
type slogLogger struct{ l *slog.Logger }

func (s slogLogger) Infof(format string, args ...any) {
	s.l.Debug("pebble: " + fmt.Sprintf(format, args...))
}
func (s slogLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.l.Error("pebble fatal: " + msg)
	panic("pebble: " + msg)
}

func (e *Engine) acquire() error {
	e.mu.RLock()
	if e.closed {
		e.mu.RUnlock()
		return engine.ErrClosed
	}
	return nil
}

// Get returns a copy of the value of key.
func (e *Engine) Get(key []byte) ([]byte, error) {
	if err := e.acquire(); err != nil {
		return nil, err
	}
	defer e.mu.RUnlock()
	return get(e.db, key)
}

func get(r pebbledb.Reader, key []byte) ([]byte, error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebbledb.ErrNotFound) {
		return nil, engine.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("pebble: get: %w", err)
	}
	out := append(make([]byte, 0, len(v)), v...)
	return out, closer.Close()
}

// NewIter iterates over [lower, upper).
func (e *Engine) NewIter(lower, upper []byte) (engine.Iterator, error) {
	if err := e.acquire(); err != nil {
		return nil, err
	}
	defer e.mu.RUnlock()
	return newIter(e.db, lower, upper)
}

func newIter(r pebbledb.Reader, lower, upper []byte) (engine.Iterator, error) {
	opts := &pebbledb.IterOptions{}
	if lower != nil {
		opts.LowerBound = append([]byte(nil), lower...)
	}
	if upper != nil {
		opts.UpperBound = append([]byte(nil), upper...)
	}
	it, err := r.NewIter(opts)
	if err != nil {
		return nil, fmt.Errorf("pebble: iterator: %w", err)
	}
	return &iter{it: it}, nil
}

// NewBatch returns an empty batch.
func (e *Engine) NewBatch() engine.Batch { return &batch{e: e, b: e.db.NewBatch()} }

// NewSnapshot returns a point-in-time view.
func (e *Engine) NewSnapshot() (engine.Snapshot, error) {
	if err := e.acquire(); err != nil {
		return nil, err
	}
	defer e.mu.RUnlock()
	return &snapshot{e: e, s: e.db.NewSnapshot()}, nil
}

// Stats exports Pebble's metrics.
func (e *Engine) Stats() map[string]float64 {
	if err := e.acquire(); err != nil {
		return map[string]float64{}
	}
	defer e.mu.RUnlock()
	m := e.db.Metrics()
	hits, misses := float64(m.BlockCache.Hits), float64(m.BlockCache.Misses)
	ratio := 0.0
	if hits+misses > 0 {
		ratio = hits / (hits + misses)
	}
	return map[string]float64{
		"compactions_total":        float64(m.Compact.Count),
		"flushes_total":            float64(m.Flush.Count),
		"l0_files":                 float64(m.Levels[0].NumFiles),
		"l0_sublevels":             float64(m.Levels[0].Sublevels),
		"read_amplification":       float64(m.ReadAmp()),
		"wal_bytes_written_total":  float64(m.WAL.BytesWritten),
		"wal_size_bytes":           float64(m.WAL.Size),
		"wal_files":                float64(m.WAL.Files),
		"block_cache_hits_total":   hits,
		"block_cache_misses_total": misses,
		"block_cache_hit_ratio":    ratio,
		"block_cache_size_bytes":   float64(m.BlockCache.Size),
		"memtable_size_bytes":      float64(m.MemTable.Size),
		"disk_usage_bytes":         float64(m.DiskSpaceUsage()),
	}
}

// Close flushes and closes the database. A second Close returns
// engine.ErrClosed.
func (e *Engine) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return engine.ErrClosed
	}
	e.closed = true
	if err := e.db.Close(); err != nil {
		return fmt.Errorf("pebble: close: %w", err)
	}
	return nil
}

type batch struct {
	e *Engine
	b *pebbledb.Batch
}

func (b *batch) Set(key, value []byte) {
	if b.b != nil {
		_ = b.b.Set(key, value, nil) // a batch's Set copies and cannot fail
	}
}

func (b *batch) Delete(key []byte) {
	if b.b != nil {
		_ = b.b.Delete(key, nil)
	}
}

func (b *batch) Len() int {
	if b.b == nil {
		return 0
	}
	return int(b.b.Count())
}

// Commit applies the batch atomically; with sync it returns after fsync.
func (b *batch) Commit(sync bool) error {
	if b.b == nil {
		return errors.New("pebble: batch already committed or closed")
	}
	if err := b.e.acquire(); err != nil {
		return err
	}
	defer b.e.mu.RUnlock()
	opt := pebbledb.NoSync
	if sync {
		opt = pebbledb.Sync
	}
	err := b.b.Commit(opt)
	b.b.Close()
	b.b = nil
	if err != nil {
		return fmt.Errorf("pebble: commit: %w", err)
	}
	return nil
}

// CommitNoSyncWait applies the batch and returns before its fsync; wait
// blocks until the WAL holding it is synced.
func (b *batch) CommitNoSyncWait() (func() error, error) {
	if b.b == nil {
		return nil, errors.New("pebble: batch already committed or closed")
	}
	if err := b.e.acquire(); err != nil {
		return nil, err
	}
	defer b.e.mu.RUnlock()
	pb := b.b
	b.b = nil
	if err := b.e.db.ApplyNoSyncWait(pb, pebbledb.Sync); err != nil {
		pb.Close()
		return nil, fmt.Errorf("pebble: commit: %w", err)
	}
	return func() error {
		err := pb.SyncWait()
		pb.Close()
		if err != nil {
			return fmt.Errorf("pebble: sync: %w", err)
		}
		return nil
	}, nil
}

func (b *batch) Close() error {
	if b.b == nil {
		return nil
	}
	err := b.b.Close()
	b.b = nil
	return err
}

type snapshot struct {
	e *Engine
	s *pebbledb.Snapshot
}

func (s *snapshot) Get(key []byte) ([]byte, error) {
	if err := s.e.acquire(); err != nil {
		return nil, err
	}
	defer s.e.mu.RUnlock()
	return get(s.s, key)
}

func (s *snapshot) NewIter(lower, upper []byte) (engine.Iterator, error) {
	if err := s.e.acquire(); err != nil {
		return nil, err
	}
	defer s.e.mu.RUnlock()
	return newIter(s.s, lower, upper)
}

func (s *snapshot) Close() error {
	if err := s.e.acquire(); err != nil {
		return nil // the engine's Close released it
	}
	defer s.e.mu.RUnlock()
	return s.s.Close()
}

type iter struct {
	it *pebbledb.Iterator
}

func (i *iter) First() bool            { return i.it.First() }
func (i *iter) SeekGE(key []byte) bool { return i.it.SeekGE(key) }
func (i *iter) Next() bool             { return i.it.Next() }
func (i *iter) Valid() bool            { return i.it.Valid() }
func (i *iter) Key() []byte            { return i.it.Key() }
func (i *iter) Value() []byte          { return i.it.Value() }
func (i *iter) Error() error           { return i.it.Error() }
func (i *iter) Close() error           { return i.it.Close() }
