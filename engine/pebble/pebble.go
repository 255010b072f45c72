// Package pebble is Meridian's default engine: a Pebble LSM with its
// write-ahead log. A batch committed with sync returns only after the WAL
// is fsynced (concurrent synced commits share one fsync: Pebble's group
// commit); without sync the write may be lost even on a plain process kill.
//
// A failed fsync (of the WAL or of any other file) fails the engine for
// good: what the disk holds is then unknown, and a retried sync may report
// success for data the kernel has already dropped. From the first failed
// sync on, every read and write returns the failure (wrapping
// engine.ErrFailed) and Failed is closed, so the node can stop instead of
// acknowledging writes it cannot make durable.
package pebble

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"

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
	// WALSyncInterval is the least time between two WAL fsyncs (0: none):
	// a sync requested sooner waits out the rest, so that under load more
	// commits share one fsync (Pebble's WALMinSyncInterval). It applies
	// only while there is someone to share with: after two fsyncs in a
	// row that each served at most one synced commit (a lone writer), the
	// next sync starts at once, as waiting would only add the interval to
	// every durable write's latency.
	WALSyncInterval time.Duration
	// BloomBitsPerKey sizes the bloom filter written into every table
	// (default 10: about 1% false positives for 1.25 bytes per key; -1
	// writes none). A point read skips each table whose filter rules its
	// key out instead of reading the table's index and data blocks: what
	// keeps a read, and the read before every write, at about one table
	// probe once the data is spread over many tables and levels.
	BloomBitsPerKey int
	// FS replaces the operating system's filesystem (tests: vfs.NewCrashableMem).
	FS vfs.FS
	// Logger receives Pebble's own log lines at debug level (default: none).
	Logger *slog.Logger
	// OnWALSync, if set, is called with the duration of every WAL fsync
	// (failed ones too): the disk's share of a durable write's latency.
	OnWALSync func(time.Duration)

	// noCompactions turns Pebble's automatic compactions off (tests that
	// need tables to stay where flushes put them).
	noCompactions bool
	// format overrides FormatVersion (tests that need a store in an old
	// format to upgrade).
	format pebbledb.FormatMajorVersion
}

// Defaults.
const (
	DefaultCacheSize    = 64 << 20
	DefaultMemTableSize = 32 << 20
	// DefaultBloomBitsPerKey is the bloom filter size (see Options).
	DefaultBloomBitsPerKey = 10
)

// FormatVersion is the on-disk format every store is kept at: the newest
// this Pebble release writes. A store in an older format that this Pebble
// still opens (13 and up) is upgraded in place when it is opened, which
// cannot be undone: an older Meridian cannot open the store after it.
//
// Stores older than 13 (every store made before Meridian set its format:
// Pebble's RocksDB-compatible version 1) are refused with what to do (see
// tooOld): open them once with the last Meridian on Pebble v1, which
// upgrades them to 16, then with this one.
const FormatVersion = pebbledb.FormatNewest

func (o *Options) withDefaults() {
	if o.CacheSize == 0 {
		o.CacheSize = DefaultCacheSize
	}
	if o.MemTableSize == 0 {
		o.MemTableSize = DefaultMemTableSize
	}
	if o.BloomBitsPerKey == 0 {
		o.BloomBitsPerKey = DefaultBloomBitsPerKey
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Engine is a Pebble-backed engine.Engine.
type Engine struct {
	db        *pebbledb.DB
	log       *slog.Logger
	onWALSync func(time.Duration) // nil: none
	// mu guards closed; operations hold the read lock so Close waits for
	// them instead of racing Pebble's own teardown.
	mu     sync.RWMutex
	closed bool

	// readers counts the open iterators and snapshots, which outlive the
	// call that made them: Pebble must not be closed under them.
	readers struct {
		sync.Mutex
		n       int
		drained chan struct{} // closed when n reaches 0 after Close began
	}

	// failure is set once, before failed is closed.
	failure  atomic.Pointer[error]
	failOnce sync.Once
	failed   chan struct{}

	// stalled is true while Pebble stalls writes (compactions behind).
	stalled atomic.Bool

	// syncDelay and syncJitter slow every fsync down (SetSyncDelay).
	syncDelay, syncJitter atomic.Int64

	// syncedCommits counts synced commits; seenCommits is its value when
	// the WAL last finished an fsync (see Options.WALSyncInterval).
	syncedCommits, seenCommits atomic.Uint64
	// loneSync is set when the last fsync served at most one commit.
	loneSync atomic.Bool
	// fsyncs counts the fsyncs of the engine's files (WAL, tables,
	// manifest, directories), walFsyncs those of its WAL.
	fsyncs, walFsyncs atomic.Uint64
}

// minSyncInterval is Pebble's WALMinSyncInterval, called by the WAL's
// flush loop after each fsync: none when this fsync and the one before
// each served at most one synced commit since the previous (a lone
// writer: nobody to share the next fsync with), otherwise d. Two in a
// row, so that a loaded WAL's occasional small fsync does not start the
// next one early.
func (e *Engine) minSyncInterval(d time.Duration) time.Duration {
	n := e.syncedCommits.Load()
	lone := n-e.seenCommits.Swap(n) <= 1
	if lone && e.loneSync.Swap(true) {
		return 0 // a lone writer twice in a row
	}
	if !lone {
		e.loneSync.Store(false)
	}
	return d
}

// SetSyncDelay makes every fsync of the engine's files wait d plus a
// uniform random part of jitter first: a slow disk, for failover drills.
// Zero for both turns it off.
func (e *Engine) SetSyncDelay(d, jitter time.Duration) {
	e.syncDelay.Store(int64(max(d, 0)))
	e.syncJitter.Store(int64(max(jitter, 0)))
}

// slowSync waits out the injected sync delay, if any.
func (e *Engine) slowSync() {
	d, j := time.Duration(e.syncDelay.Load()), time.Duration(e.syncJitter.Load())
	if j > 0 {
		d += rand.N(j)
	}
	if d > 0 {
		time.Sleep(d)
	}
}

// Open opens (or creates) the engine in opts.Dir.
func Open(opts Options) (*Engine, error) {
	if opts.Dir == "" {
		return nil, errors.New("pebble: Dir is empty")
	}
	opts.withDefaults()
	e := &Engine{log: opts.Logger, onWALSync: opts.OnWALSync, failed: make(chan struct{})}
	cache := pebbledb.NewCache(opts.CacheSize)
	defer cache.Unref()
	fs := opts.FS
	if fs == nil {
		fs = vfs.Default
	}
	po := &pebbledb.Options{
		Cache:                       cache,
		MemTableSize:                opts.MemTableSize,
		DisableAutomaticCompactions: opts.noCompactions,
		Logger:                      slogLogger{l: opts.Logger, e: e},
		// Every file Pebble syncs goes through watchFS, which fails the
		// engine on the first sync error, before Pebble sees it.
		FS: watchFS{FS: fs, e: e},
		EventListener: &pebbledb.EventListener{
			WriteStallBegin: func(info pebbledb.WriteStallBeginInfo) {
				e.stalled.Store(true)
				e.log.Warn("pebble: write stall: compactions are behind; writes are shed until they catch up", "reason", info.Reason)
			},
			WriteStallEnd: func() {
				e.stalled.Store(false)
				e.log.Info("pebble: write stall over")
			},
		},
	}
	// Pebble syncs the files in its directory, not the directory's own
	// entry in its parent: create the directory and make its entry durable
	// first, so a crash right after the first acknowledged write cannot
	// lose the whole directory.
	if d := opts.WALSyncInterval; d > 0 {
		po.WALMinSyncInterval = func() time.Duration { return e.minSyncInterval(d) }
	}
	if opts.BloomBitsPerKey > 0 {
		// Every level gets the filter; tables written before keep working
		// without filters.
		for i := range po.Levels {
			po.Levels[i].FilterPolicy = bloom.FilterPolicy(opts.BloomBitsPerKey)
		}
	}
	if err := fs.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("pebble: create %s: %w", opts.Dir, err)
	}
	if err := syncAncestors(fs, opts.Dir); err != nil {
		return nil, fmt.Errorf("pebble: sync the directories above %s: %w", opts.Dir, err)
	}
	po.FormatMajorVersion = FormatVersion
	if opts.format != 0 {
		po.FormatMajorVersion = opts.format
	}
	// Too old for this Pebble: said from the directory's own files, before
	// Pebble reads anything (and whatever its messages say).
	if v, ok, err := storedFormat(fs, opts.Dir); err == nil && ok && v < pebbledb.FormatMinSupported {
		return nil, tooOldFormat(opts.Dir, v)
	}
	desc, err := pebbledb.Peek(opts.Dir, fs)
	if err != nil {
		return nil, tooOld(opts.Dir, fmt.Errorf("pebble: read the format of %s: %w", opts.Dir, err))
	}
	upgrade := desc.Exists && desc.FormatMajorVersion < po.FormatMajorVersion
	start := time.Now()
	if upgrade {
		// Pebble's own log lines go to debug; this one says that the
		// upgrade is not undone by going back, and why the open may be
		// slow: only the step past FormatPrePebblev1MarkedCompacted
		// rewrites tables.
		msg := "pebble: upgrading the storage format in place; older Meridian releases cannot open the store afterwards"
		if desc.FormatMajorVersion < pebbledb.FormatPrePebblev1MarkedCompacted {
			msg += "; tables in older formats are rewritten first, so this open may take a while"
		}
		opts.Logger.Warn(msg, "dir", opts.Dir, "from", desc.FormatMajorVersion.String(), "to", po.FormatMajorVersion.String())
	}
	db, err := pebbledb.Open(opts.Dir, po)
	if err != nil {
		return nil, tooOld(opts.Dir, fmt.Errorf("pebble: open %s: %w", opts.Dir, err))
	}
	if upgrade {
		opts.Logger.Info("pebble: storage format upgraded", "dir", opts.Dir, "format", db.FormatMajorVersion().String(), "took", time.Since(start).Round(time.Millisecond))
	}
	e.db = db
	return e, nil
}

// ErrTooOld wraps the error of opening a store in a format older than this
// Pebble opens (pebbledb.FormatMinSupported).
var ErrTooOld = errors.New("the store's format is older than this release can open")

// tooOld adds what to do to err when Pebble refused the store for its old
// format. Open recognises such a store from its files first
// (storedFormat); this is the fallback, from Pebble's message ("... format
// major version N, which is no longer supported"). Pebble refuses such a
// store before touching any of its files.
func tooOld(dir string, err error) error {
	if !strings.Contains(err.Error(), "no longer supported") {
		return err
	}
	return fmt.Errorf("%w: %w; %s", ErrTooOld, err, upgradeAdvice(dir))
}

// tooOldFormat is the refusal of a store found in format v.
func tooOldFormat(dir string, v pebbledb.FormatMajorVersion) error {
	return fmt.Errorf("%w: %s holds a store in Pebble format %s; %s", ErrTooOld, dir, v, upgradeAdvice(dir))
}

func upgradeAdvice(dir string) string {
	return fmt.Sprintf("this Meridian uses Pebble v2, which opens formats %s to %s: start the node once with the last Meridian on Pebble v1 (built from commit 1091faf on, before the move to Pebble v2), which upgrades %s in place, then with this one",
		pebbledb.FormatMinSupported, pebbledb.FormatNewest, dir)
}

// formatMostCompatible is Pebble's format 1, which v2 no longer names.
const formatMostCompatible pebbledb.FormatMajorVersion = 1

// storedFormat reads the format major version of the store in dir from
// its files, without opening it: Pebble's format-version marker
// (marker.format-version.<iteration>.<version>; the highest iteration is
// current), or 1 (FormatMostCompatible) for a store that predates the
// marker and has a CURRENT file instead. ok is false when dir holds
// neither (a new or empty store).
func storedFormat(fs vfs.FS, dir string) (v pebbledb.FormatMajorVersion, ok bool, err error) {
	names, err := fs.List(dir)
	if err != nil {
		return 0, false, err
	}
	const prefix = "marker.format-version."
	var bestIter uint64
	current := false
	for _, name := range names {
		if name == "CURRENT" {
			current = true
			continue
		}
		rest, found := strings.CutPrefix(name, prefix)
		if !found {
			continue
		}
		iterStr, valStr, found := strings.Cut(rest, ".")
		if !found {
			continue
		}
		iter, err1 := strconv.ParseUint(iterStr, 10, 64)
		val, err2 := strconv.ParseUint(valStr, 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		if !ok || iter > bestIter {
			v, ok, bestIter = pebbledb.FormatMajorVersion(val), true, iter
		}
	}
	if !ok && current {
		return formatMostCompatible, true, nil
	}
	return v, ok, nil
}

// fail records the engine's permanent failure (the first one wins) and
// closes Failed.
func (e *Engine) fail(err error) {
	e.failOnce.Do(func() {
		ferr := fmt.Errorf("%w: %w", engine.ErrFailed, err)
		e.failure.Store(&ferr)
		e.log.Error("pebble: storage failed; refusing every further read and write", "err", err)
		close(e.failed)
	})
}

// Stalled reports whether Pebble is stalling writes right now.
func (e *Engine) Stalled() bool { return e.stalled.Load() }

// Failed is closed once the engine has failed (a failed sync).
func (e *Engine) Failed() <-chan struct{} { return e.failed }

// Failure is the error the engine failed with, nil while healthy.
func (e *Engine) Failure() error {
	if p := e.failure.Load(); p != nil {
		return *p
	}
	return nil
}

// watchFS fails the engine on any failed sync of a file or directory.
type watchFS struct {
	vfs.FS
	e *Engine
}

// wrap watches f, the file name: a WAL's syncs are also counted apart.
func (fs watchFS) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	return watchFile{File: f, e: fs.e, wal: strings.HasSuffix(name, ".log")}, nil
}

func (fs watchFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	return fs.wrap(name, f, err)
}
func (fs watchFS) Open(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := fs.FS.Open(name, opts...)
	return fs.wrap(name, f, err)
}
func (fs watchFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := fs.FS.OpenReadWrite(name, c, opts...)
	return fs.wrap(name, f, err)
}
func (fs watchFS) OpenDir(name string) (vfs.File, error) {
	f, err := fs.FS.OpenDir(name)
	return fs.wrap(name, f, err)
}
func (fs watchFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname, c)
	return fs.wrap(newname, f, err)
}

// Unwrap lets Pebble see the filesystem underneath (vfs.Root).
func (fs watchFS) Unwrap() vfs.FS { return fs.FS }

type watchFile struct {
	vfs.File
	e   *Engine
	wal bool
}

// synced counts a sync of the file, begun at start, and reports a WAL's
// to OnWALSync.
func (f watchFile) synced(start time.Time) {
	f.e.fsyncs.Add(1)
	if f.wal {
		f.e.walFsyncs.Add(1)
		if f.e.onWALSync != nil {
			f.e.onWALSync(time.Since(start))
		}
	}
}

func (f watchFile) check(err error) error {
	if err != nil {
		f.e.fail(fmt.Errorf("pebble: sync: %w", err))
	}
	return err
}

func (f watchFile) Sync() error {
	start := time.Now()
	f.e.slowSync()
	err := f.File.Sync()
	f.synced(start)
	return f.check(err)
}

func (f watchFile) SyncData() error {
	start := time.Now()
	f.e.slowSync()
	err := f.File.SyncData()
	f.synced(start)
	return f.check(err)
}

func (f watchFile) SyncTo(length int64) (bool, error) {
	start := time.Now()
	f.e.slowSync()
	full, err := f.File.SyncTo(length)
	f.synced(start)
	return full, f.check(err)
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
// Pebble's contract (it must not return: Pebble would carry on as if the
// operation had succeeded), after failing the engine. Commits (SyncWAL's
// and Checkpoint's barriers included) never reach it for a failed sync
// (they wait for their sync through SyncWait, which returns the error); it
// is left for errors Pebble cannot survive.
type slogLogger struct {
	l *slog.Logger
	e *Engine
}

func (s slogLogger) Infof(format string, args ...any) {
	s.l.Debug("pebble: " + fmt.Sprintf(format, args...))
}
func (s slogLogger) Errorf(format string, args ...any) {
	s.l.Warn("pebble: " + fmt.Sprintf(format, args...))
}
func (s slogLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.e.fail(errors.New("pebble: " + msg))
	s.l.Error("pebble fatal: " + msg)
	panic("pebble: " + msg)
}

// acquire read-locks a usable engine: not closed, not failed.
func (e *Engine) acquire() error {
	if err := e.rlock(); err != nil {
		return err
	}
	if err := e.Failure(); err != nil {
		e.mu.RUnlock()
		return err
	}
	return nil
}

// rlock read-locks an open engine, failed or not (for releasing resources).
func (e *Engine) rlock() error {
	e.mu.RLock()
	if e.closed {
		e.mu.RUnlock()
		return engine.ErrClosed
	}
	return nil
}

// commit applies pb and, with sync, waits for its fsync. pb is closed. The
// caller holds the read lock.
func (e *Engine) commit(pb *pebbledb.Batch, sync bool) error {
	wait, err := e.commitNoSyncWait(pb, sync)
	if err != nil {
		return err
	}
	return wait()
}

// commitNoSyncWait applies pb; wait returns once it is durable (at once
// without sync) and closes pb. The caller holds the read lock.
//
// A synced commit goes through ApplyNoSyncWait and SyncWait even when the
// caller waits at once: Pebble's Apply hands a failed sync to
// Logger.Fatalf, SyncWait returns it. Any commit error fails the engine:
// it comes from the WAL, and Pebble's commit pipeline cannot go on.
func (e *Engine) commitNoSyncWait(pb *pebbledb.Batch, sync bool) (wait func() error, err error) {
	if !sync {
		err := pb.Commit(pebbledb.NoSync)
		pb.Close()
		if err != nil {
			e.fail(fmt.Errorf("pebble: commit: %w", err))
			return nil, e.Failure()
		}
		return func() error { return nil }, nil
	}
	e.syncedCommits.Add(1)
	if err := e.db.ApplyNoSyncWait(pb, pebbledb.Sync); err != nil {
		pb.Close()
		e.fail(fmt.Errorf("pebble: commit: %w", err))
		return nil, e.Failure()
	}
	return func() error {
		err := pb.SyncWait()
		pb.Close()
		if err != nil {
			e.fail(fmt.Errorf("pebble: sync: %w", err))
			return e.Failure()
		}
		return nil
	}, nil
}

// SyncWAL commits an empty record to the WAL with sync: the WAL is
// sequential, so its fsync covers every write committed before it.
func (e *Engine) SyncWAL() error {
	if err := e.acquire(); err != nil {
		return err
	}
	defer e.mu.RUnlock()
	return e.syncWAL()
}

// syncWAL is SyncWAL's barrier. The caller holds the read lock.
func (e *Engine) syncWAL() error {
	pb := e.db.NewBatch()
	_ = pb.LogData(nil, nil) // a batch's LogData cannot fail
	return e.commit(pb, true)
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
	return e.newIter(e.db, lower, upper)
}

// newIter opens an iterator of r and counts it as a reader. The caller
// holds the read lock, or is an open snapshot (a reader already, so
// Pebble stays open under both).
func (e *Engine) newIter(r pebbledb.Reader, lower, upper []byte) (engine.Iterator, error) {
	// Only nil is unbounded, but Pebble cannot be handed an empty bound:
	// it copies bounds by appending to a buffer that is nil in a fresh
	// iterator, which turns []byte{} into nil (unbounded). So empty bounds
	// are settled here: an empty upper bound admits no key (none sorts
	// below the empty one), an empty lower bound every key, as nil does.
	if upper != nil && len(upper) == 0 {
		return emptyIter{}, nil
	}
	opts := &pebbledb.IterOptions{}
	if len(lower) > 0 {
		opts.LowerBound = append([]byte(nil), lower...)
	}
	if len(upper) > 0 {
		opts.UpperBound = append([]byte(nil), upper...)
	}
	it, err := r.NewIter(opts)
	if err != nil {
		return nil, fmt.Errorf("pebble: iterator: %w", err)
	}
	e.addReader()
	return &iter{e: e, it: it}, nil
}

func (e *Engine) addReader() {
	e.readers.Lock()
	e.readers.n++
	e.readers.Unlock()
}

func (e *Engine) doneReader() {
	e.readers.Lock()
	defer e.readers.Unlock()
	e.readers.n--
	if e.readers.n == 0 && e.readers.drained != nil {
		close(e.readers.drained)
		e.readers.drained = nil
	}
}

// closeWait bounds how long Close waits for open iterators and
// snapshots (a scan a caller abandoned at shutdown).
const closeWait = 10 * time.Second

// waitReaders waits until no iterator or snapshot is open, at most d.
func (e *Engine) waitReaders(d time.Duration) error {
	e.readers.Lock()
	if e.readers.n == 0 {
		e.readers.Unlock()
		return nil
	}
	ch := make(chan struct{})
	e.readers.drained = ch
	n := e.readers.n
	e.readers.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return nil
	case <-t.C:
		return fmt.Errorf("%d iterator(s) or snapshot(s) still open after %s", n, d)
	}
}

// NewBatch returns an empty batch.
func (e *Engine) NewBatch() engine.Batch { return &batch{e: e, b: e.db.NewBatch()} }

// NewSnapshot returns a point-in-time view.
func (e *Engine) NewSnapshot() (engine.Snapshot, error) {
	if err := e.acquire(); err != nil {
		return nil, err
	}
	defer e.mu.RUnlock()
	e.addReader()
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
		"compactions_total":         float64(m.Compact.Count),
		"flushes_total":             float64(m.Flush.Count),
		"l0_files":                  float64(m.Levels[0].TablesCount),
		"l0_sublevels":              float64(m.Levels[0].Sublevels),
		"read_amplification":        float64(m.ReadAmp()),
		"wal_bytes_written_total":   float64(m.WAL.BytesWritten),
		"wal_size_bytes":            float64(m.WAL.Size),
		"wal_files":                 float64(m.WAL.Files),
		"block_cache_hits_total":    hits,
		"block_cache_misses_total":  misses,
		"block_cache_hit_ratio":     ratio,
		"block_cache_size_bytes":    float64(m.BlockCache.Size),
		"bloom_filter_skips_total":  float64(m.Filter.Hits),
		"bloom_filter_passes_total": float64(m.Filter.Misses),
		"memtable_size_bytes":       float64(m.MemTable.Size),
		"disk_usage_bytes":          float64(m.DiskSpaceUsage()),
		"fsyncs_total":              float64(e.fsyncs.Load()),
		"wal_fsyncs_total":          float64(e.walFsyncs.Load()),
		"synced_commits_total":      float64(e.syncedCommits.Load()),
	}
}

// Flush writes the memtable out as a table and waits for it.
func (e *Engine) Flush() error {
	if err := e.acquire(); err != nil {
		return err
	}
	defer e.mu.RUnlock()
	if err := e.db.Flush(); err != nil {
		return fmt.Errorf("pebble: flush: %w", err)
	}
	return nil
}

// Checkpoint writes a consistent copy of the database as it is now into
// dir, which must not exist (its parent is created if missing): every
// write committed before the call, WAL included. Tables are hard-linked
// where the filesystem allows, so a checkpoint costs little space until
// compactions replace the tables it shares. Open dir as a data directory
// of its own to read it back.
//
// A failed WAL fsync fails the engine and is returned (wrapping
// engine.ErrFailed).
func (e *Engine) Checkpoint(dir string) error {
	if err := e.acquire(); err != nil {
		return err
	}
	defer e.mu.RUnlock()
	// Make every write committed so far durable first, through our own
	// barrier (SyncWAL's), not Pebble's WithFlushedWAL: that one syncs
	// through DB.Apply, which hands a failed fsync to Logger.Fatalf, a
	// panic. Pebble then copies whole WAL files, so the checkpoint holds
	// everything the barrier covered.
	if err := e.syncWAL(); err != nil {
		return fmt.Errorf("pebble: checkpoint into %s: %w", dir, err)
	}
	if err := e.db.Checkpoint(dir); err != nil {
		return fmt.Errorf("pebble: checkpoint into %s: %w", dir, err)
	}
	return nil
}

// Close flushes and closes the database. A second Close returns
// engine.ErrClosed. New operations are refused at once; iterators and
// snapshots already open keep working until their callers close them,
// which Close waits for (at most closeWait: then it leaves Pebble open,
// not closed under a reader, and says so).
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return engine.ErrClosed
	}
	e.closed = true
	e.mu.Unlock()
	if err := e.waitReaders(closeWait); err != nil {
		return fmt.Errorf("pebble: not closed: %w", err)
	}
	e.mu.Lock() // no operation runs: closed refuses new ones
	defer e.mu.Unlock()
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
		return engine.ErrBatchDone
	}
	if err := b.e.acquire(); err != nil {
		return err
	}
	defer b.e.mu.RUnlock()
	pb := b.b
	b.b = nil
	return b.e.commit(pb, sync)
}

// CommitNoSyncWait applies the batch and returns before its fsync; wait
// blocks until the WAL holding it is synced.
func (b *batch) CommitNoSyncWait() (func() error, error) {
	if b.b == nil {
		return nil, engine.ErrBatchDone
	}
	if err := b.e.acquire(); err != nil {
		return nil, err
	}
	defer b.e.mu.RUnlock()
	pb := b.b
	b.b = nil
	return b.e.commitNoSyncWait(pb, true)
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

// usable reports why the snapshot cannot be read, if it cannot: its own
// Close, or the engine's failure. Not the engine's Close: an open snapshot
// keeps working while Close waits for it, and needs no lock for that, as
// Pebble is closed only once every reader is.
func (s *snapshot) usable() error {
	if s.s == nil {
		return engine.ErrClosed // the snapshot's own Close
	}
	return s.e.Failure()
}

func (s *snapshot) Get(key []byte) ([]byte, error) {
	if err := s.usable(); err != nil {
		return nil, err
	}
	return get(s.s, key)
}

func (s *snapshot) NewIter(lower, upper []byte) (engine.Iterator, error) {
	if err := s.usable(); err != nil {
		return nil, err
	}
	return s.e.newIter(s.s, lower, upper)
}

// Close releases the snapshot, also while the engine's Close waits for
// it (Pebble is closed only once every reader is).
func (s *snapshot) Close() error {
	if s.s == nil {
		return nil
	}
	err := s.s.Close()
	s.s = nil
	s.e.doneReader()
	return err
}

type iter struct {
	e   *Engine
	it  *pebbledb.Iterator
	err error // Close's, kept for Error once it is nil
}

// After Close an iterator positions nothing and holds no key or value
// (Pebble's would be used after it is released); Error keeps reporting
// what Close returned.
func (i *iter) First() bool            { return i.it != nil && i.it.First() }
func (i *iter) SeekGE(key []byte) bool { return i.it != nil && i.it.SeekGE(key) }
func (i *iter) Next() bool             { return i.it != nil && i.it.Next() }
func (i *iter) Valid() bool            { return i.it != nil && i.it.Valid() }

func (i *iter) Key() []byte {
	if i.it == nil {
		return nil
	}
	return i.it.Key()
}

func (i *iter) Value() []byte {
	if i.it == nil {
		return nil
	}
	return i.it.Value()
}

func (i *iter) Error() error {
	if i.it == nil {
		return i.err
	}
	return i.it.Error()
}

// Close releases the iterator, also while the engine's Close waits for
// it (Pebble is closed only once every reader is).
func (i *iter) Close() error {
	if i.it == nil {
		return nil
	}
	i.err = i.it.Close()
	i.it = nil
	i.e.doneReader()
	return i.err
}

// emptyIter is an iterator over an empty range: it holds nothing of
// Pebble's, so it is no reader for Close to wait for.
type emptyIter struct{}

func (emptyIter) First() bool        { return false }
func (emptyIter) SeekGE([]byte) bool { return false }
func (emptyIter) Next() bool         { return false }
func (emptyIter) Valid() bool        { return false }
func (emptyIter) Key() []byte        { return nil }
func (emptyIter) Value() []byte      { return nil }
func (emptyIter) Error() error       { return nil }
func (emptyIter) Close() error       { return nil }

// DirLock is the lock on a store's directory, held while a node runs it.
type DirLock = pebbledb.Lock

// LockDir takes the lock of the store in dir (an error if a running node
// holds it): a stopped node's data can then be read offline (CountKeys)
// and replaced.
func LockDir(dir string) (*DirLock, error) { return pebbledb.LockDirectory(dir, vfs.Default) }

// CountKeys counts the keys in [lower, upper) of the store in dir, opened
// read-only under lock (from LockDir): nothing in dir changes. An empty
// or missing store has none.
func CountKeys(dir string, lock *DirLock, lower, upper []byte) (int, error) {
	desc, err := pebbledb.Peek(dir, vfs.Default)
	if err != nil {
		return 0, fmt.Errorf("pebble: read %s: %w", dir, err)
	}
	if !desc.Exists {
		return 0, nil
	}
	db, err := pebbledb.Open(dir, &pebbledb.Options{ReadOnly: true, Lock: lock, Logger: quietLogger{}})
	if err != nil {
		return 0, fmt.Errorf("pebble: open %s read-only: %w", dir, err)
	}
	defer db.Close()
	it, err := db.NewIter(&pebbledb.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return 0, err
	}
	n := 0
	for valid := it.First(); valid; valid = it.Next() {
		n++
	}
	if err := it.Close(); err != nil {
		return n, err
	}
	return n, nil
}

// quietLogger drops Pebble's messages (an offline read says what failed
// through its error); a fatal one still panics, as Pebble requires.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic("pebble: " + fmt.Sprintf(format, args...))
}
