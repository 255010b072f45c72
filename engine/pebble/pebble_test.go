package pebble_test

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/meridiankv/meridian/engine"
	"github.com/meridiankv/meridian/engine/enginetest"
	"github.com/meridiankv/meridian/engine/pebble"
)

func open(t testing.TB, dir string) *pebble.Engine {
	t.Helper()
	e, err := pebble.Open(pebble.Options{Dir: dir, CacheSize: 8 << 20, MemTableSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestConformance(t *testing.T) {
	enginetest.Run(t, func(t *testing.T) engine.Engine { return open(t, t.TempDir()) })
}

func TestPersistence(t *testing.T) {
	enginetest.RunPersistent(t, func(t *testing.T, dir string) engine.Engine { return open(t, filepath.Join(dir, "db")) })
}

// TestSyncedWritesSurviveCrash commits some batches with sync and some
// without, from several goroutines, drops everything the filesystem never
// synced (a power cut), and checks that every synced write is there after
// reopening: also when syncs are spaced out (WALSyncInterval), which must
// delay a synced commit's return, never acknowledge it early.
func TestSyncedWritesSurviveCrash(t *testing.T) {
	for _, interval := range []time.Duration{0, 5 * time.Millisecond} {
		t.Run(fmt.Sprint("interval=", interval), func(t *testing.T) {
			// A fresh directory: Open must make the directory itself durable too.
			fs := vfs.NewCrashableMem()
			e, err := pebble.Open(pebble.Options{Dir: "/db", FS: fs, WALSyncInterval: interval})
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for g := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := g; i < 200; i += 8 {
						b := e.NewBatch()
						b.Set([]byte(fmt.Sprintf("k%03d", i)), []byte("v"))
						if err := b.Commit(i%2 == 0); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			crashed := fs.CrashClone(vfs.CrashCloneCfg{}) // only what was synced
			e.Close()

			e, err = pebble.Open(pebble.Options{Dir: "/db", FS: crashed})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			for i := 0; i < 200; i += 2 {
				if _, err := e.Get([]byte(fmt.Sprintf("k%03d", i))); err != nil {
					t.Fatalf("synced write k%03d lost in the crash: %v", i, err)
				}
			}
		})
	}
}

func TestStats(t *testing.T) {
	e := open(t, t.TempDir())
	defer e.Close()
	s := e.Stats()
	for _, k := range []string{"compactions_total", "l0_files", "wal_bytes_written_total", "block_cache_hit_ratio", "disk_usage_bytes", "fsyncs_total", "wal_fsyncs_total", "synced_commits_total"} {
		if _, ok := s[k]; !ok {
			t.Errorf("Stats lacks %s", k)
		}
	}
	// Synced commits count, and each is covered by an fsync; commits
	// without sync count in neither.
	commit := func(sync bool) {
		b := e.NewBatch()
		b.Set([]byte("k"), []byte("v"))
		if err := b.Commit(sync); err != nil {
			t.Fatal(err)
		}
	}
	before := e.Stats()
	commit(false)
	mid := e.Stats()
	if d := mid["synced_commits_total"] - before["synced_commits_total"]; d != 0 {
		t.Errorf("a commit without sync counted %v synced commits", d)
	}
	commit(true)
	commit(true)
	after := e.Stats()
	if d := after["synced_commits_total"] - mid["synced_commits_total"]; d != 2 {
		t.Errorf("two synced commits counted %v", d)
	}
	if d := after["wal_fsyncs_total"] - mid["wal_fsyncs_total"]; d < 1 || d > 2 {
		t.Errorf("two synced commits in a row took %v WAL fsyncs, want 1 or 2", d)
	}
	if after["fsyncs_total"]-mid["fsyncs_total"] < after["wal_fsyncs_total"]-mid["wal_fsyncs_total"] {
		t.Errorf("fewer fsyncs than WAL fsyncs: %v", after)
	}
}

// TestOnWALSyncSeesEveryWALFsync: OnWALSync is called once for each WAL
// fsync, with how long it took.
func TestOnWALSyncSeesEveryWALFsync(t *testing.T) {
	var mu sync.Mutex
	var took []time.Duration
	e, err := pebble.Open(pebble.Options{Dir: t.TempDir(), CacheSize: 8 << 20, MemTableSize: 4 << 20, OnWALSync: func(d time.Duration) {
		mu.Lock()
		took = append(took, d)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	e.SetSyncDelay(time.Millisecond, 0) // every fsync takes at least 1ms
	before := e.Stats()["wal_fsyncs_total"]
	for i := range 3 {
		b := e.NewBatch()
		b.Set(fmt.Appendf(nil, "k%d", i), []byte("v"))
		if err := b.Commit(true); err != nil {
			t.Fatal(err)
		}
	}
	n := e.Stats()["wal_fsyncs_total"] - before
	e.SetSyncDelay(0, 0)
	mu.Lock()
	defer mu.Unlock()
	if n < 1 || float64(len(took)) < n {
		t.Fatalf("%v WAL fsyncs, OnWALSync called %d times", n, len(took))
	}
	for _, d := range took[len(took)-int(n):] {
		if d < time.Millisecond {
			t.Errorf("a WAL fsync delayed 1ms reported %v", d)
		}
	}
}

func benchPut(b *testing.B, sync bool) {
	e := open(b, b.TempDir())
	defer e.Close()
	val := make([]byte, 100)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		batch := e.NewBatch()
		batch.Set([]byte(fmt.Sprintf("key%010d", i)), val)
		if err := batch.Commit(sync); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkPutNoSync(b *testing.B) { benchPut(b, false) }
func BenchmarkPutSync(b *testing.B)   { benchPut(b, true) }

// BenchmarkPutSyncParallel shows group commit: concurrent synced commits
// share fsyncs.
func BenchmarkPutSyncParallel(b *testing.B) {
	e := open(b, b.TempDir())
	defer e.Close()
	val := make([]byte, 100)
	b.SetParallelism(16)
	b.ReportAllocs()
	var n int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			batch := e.NewBatch()
			batch.Set([]byte(fmt.Sprintf("key%p%d", &n, n)), val)
			if err := batch.Commit(true); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkPutSyncInterval is durable commits with the node's default
// WAL sync interval (2ms), from one writer (each commit waits for its own
// fsync: nothing to share) and from 16.
func BenchmarkPutSyncInterval(b *testing.B) {
	for _, writers := range []int{1, 16} {
		b.Run(fmt.Sprint("writers=", writers), func(b *testing.B) {
			e, err := pebble.Open(pebble.Options{Dir: b.TempDir(), CacheSize: 8 << 20, MemTableSize: 4 << 20, WALSyncInterval: 2 * time.Millisecond})
			if err != nil {
				b.Fatal(err)
			}
			defer e.Close()
			val := make([]byte, 100)
			var n atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for range writers {
				wg.Go(func() {
					for i := n.Add(1); i <= int64(b.N); i = n.Add(1) {
						batch := e.NewBatch()
						batch.Set([]byte(fmt.Sprintf("key%010d", i)), val)
						if err := batch.Commit(true); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
		})
	}
}

// writeTables writes keys key00000 … in tables flushes, one table per
// flush, each holding every tables-th key (their key ranges all overlap,
// as a run of random writes makes them); only even numbers are written.
func writeTables(t testing.TB, e *pebble.Engine, keys, tables int) {
	t.Helper()
	val := make([]byte, 100)
	for tb := range tables {
		b := e.NewBatch()
		for i := tb * 2; i < keys*2; i += tables * 2 {
			b.Set([]byte(fmt.Sprintf("key%05d", i)), val)
		}
		if err := b.Commit(false); err != nil {
			t.Fatal(err)
		}
		if err := e.Flush(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBloomFiltersSkipTables reads keys that are in no table: every table's
// key range covers them, so only the bloom filters can rule the tables out.
// Without filters (BloomBitsPerKey -1) nothing is skipped; either way the
// answers are the same.
func TestBloomFiltersSkipTables(t *testing.T) {
	for _, bits := range []int{0, -1} {
		t.Run(fmt.Sprint("bits=", bits), func(t *testing.T) {
			e, err := pebble.OpenNoCompactions(pebble.Options{Dir: t.TempDir(), CacheSize: 8 << 20, MemTableSize: 4 << 20, BloomBitsPerKey: bits})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			writeTables(t, e, 1000, 3) // three tables in L0
			for i := 1; i < 2000; i += 2 {
				if _, err := e.Get([]byte(fmt.Sprintf("key%05d", i))); !errors.Is(err, engine.ErrNotFound) {
					t.Fatalf("absent key%05d: got %v, want ErrNotFound", i, err)
				}
			}
			for i := 0; i < 2000; i += 2 {
				if _, err := e.Get([]byte(fmt.Sprintf("key%05d", i))); err != nil {
					t.Fatalf("key%05d: %v", i, err)
				}
			}
			skips := e.Stats()["bloom_filter_skips_total"]
			// Each absent key falls in all three tables' ranges: with about
			// 1% false positives, nearly 3,000 skips. (Pebble consults no
			// filter in the last level, L6, where a key usually is.)
			if bits == 0 && skips < 2500 {
				t.Errorf("default filters skipped %v table reads for 1000 absent keys in 3 tables, want nearly 3000", skips)
			}
			if bits == -1 && skips != 0 {
				t.Errorf("no filters, yet %v skips", skips)
			}
		})
	}
}

// BenchmarkGetAcrossTables reads keys spread over three overlapping
// tables, present and absent (the read before an insert), with and
// without bloom filters, through a block cache much smaller than the
// data (2 MiB of values, 1 MiB of cache), as on a node whose data outgrew
// its memory.
func BenchmarkGetAcrossTables(b *testing.B) {
	for _, bits := range []int{0, -1} {
		for _, present := range []bool{true, false} {
			b.Run(fmt.Sprintf("bloom=%v/present=%v", bits == 0, present), func(b *testing.B) {
				e, err := pebble.OpenNoCompactions(pebble.Options{Dir: b.TempDir(), CacheSize: 1 << 20, BloomBitsPerKey: bits})
				if err != nil {
					b.Fatal(err)
				}
				defer e.Close()
				const n = 20000
				writeTables(b, e, n, 3)
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					k := (i % n) * 2
					if !present {
						k++
					}
					_, err := e.Get([]byte(fmt.Sprintf("key%05d", k)))
					if present && err != nil || !present && !errors.Is(err, engine.ErrNotFound) {
						b.Fatal(err)
					}
					i++
				}
			})
		}
	}
}

func BenchmarkGet(b *testing.B) {
	e := open(b, b.TempDir())
	defer e.Close()
	val := make([]byte, 100)
	const n = 10000
	for i := 0; i < n; i++ {
		batch := e.NewBatch()
		batch.Set([]byte(fmt.Sprintf("key%010d", i)), val)
		if err := batch.Commit(false); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := e.Get([]byte(fmt.Sprintf("key%010d", i%n))); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// crash drops everything fs never synced (a power cut) and reopens on
// what is left.
func crash(t *testing.T, fs *vfs.MemFS, e *pebble.Engine, dir string) *pebble.Engine {
	t.Helper()
	crashed := fs.CrashClone(vfs.CrashCloneCfg{})
	e.Close()
	e, err := pebble.Open(pebble.Options{Dir: dir, FS: crashed})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestSyncWALMakesEarlierWritesDurable: writes committed without sync
// survive a crash once a later SyncWAL has returned.
func TestSyncWALMakesEarlierWritesDurable(t *testing.T) {
	fs := vfs.NewCrashableMem()
	e, err := pebble.Open(pebble.Options{Dir: "/db", FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		b := e.NewBatch()
		b.Set([]byte(fmt.Sprintf("k%d", i)), []byte("v"))
		if err := b.Commit(false); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.SyncWAL(); err != nil {
		t.Fatal(err)
	}
	b := e.NewBatch()
	b.Set([]byte("after"), []byte("v"))
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	e = crash(t, fs, e, "/db")
	defer e.Close()
	for i := 0; i < 10; i++ {
		if _, err := e.Get([]byte(fmt.Sprintf("k%d", i))); err != nil {
			t.Fatalf("k%d, written before SyncWAL returned, lost in the crash: %v", i, err)
		}
	}
}

// walSyncFails returns an FS whose WAL syncs fail while *armed is true.
func walSyncFails(armed *atomic.Bool) vfs.FS {
	return errorfs.Wrap(vfs.NewMem(), errorfs.InjectorFunc(func(op errorfs.Op) error {
		switch op.Kind {
		case errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo:
			if armed.Load() && strings.HasSuffix(op.Path, ".log") {
				return errorfs.ErrInjected
			}
		}
		return nil
	}))
}

// TestFailedSyncFailsTheEngine: after a WAL fsync fails, the write waiting
// for it fails, and so does every later operation, a write without sync
// included (it must not be acknowledged); Failed is closed.
func TestFailedSyncFailsTheEngine(t *testing.T) {
	var armed atomic.Bool
	e, err := pebble.Open(pebble.Options{Dir: "/db", FS: walSyncFails(&armed)})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	commit := func(k string, sync bool) error {
		b := e.NewBatch()
		defer b.Close()
		b.Set([]byte(k), []byte("v"))
		return b.Commit(sync)
	}
	if err := commit("before", true); err != nil {
		t.Fatal(err)
	}
	select {
	case <-e.Failed():
		t.Fatal("Failed before any failure")
	default:
	}

	armed.Store(true)
	b := e.NewBatch()
	b.Set([]byte("durable"), []byte("v"))
	wait, err := b.CommitNoSyncWait()
	if err == nil {
		err = wait()
	}
	b.Close()
	if !errors.Is(err, engine.ErrFailed) || !errors.Is(err, errorfs.ErrInjected) {
		t.Fatalf("durable write whose fsync failed = %v, want ErrFailed wrapping the injected error", err)
	}
	armed.Store(false) // the disk "recovers": the engine must not

	select {
	case <-e.Failed():
	default:
		t.Fatal("Failed not closed after a failed sync")
	}
	if err := e.Failure(); !errors.Is(err, engine.ErrFailed) {
		t.Fatalf("Failure = %v", err)
	}
	if err := commit("later-nosync", false); !errors.Is(err, engine.ErrFailed) {
		t.Fatalf("write without sync after a failed sync = %v, want ErrFailed (never acked)", err)
	}
	if err := commit("later-sync", true); !errors.Is(err, engine.ErrFailed) {
		t.Fatalf("durable write after a failed sync = %v, want ErrFailed", err)
	}
	if err := e.SyncWAL(); !errors.Is(err, engine.ErrFailed) {
		t.Fatalf("SyncWAL after a failed sync = %v, want ErrFailed", err)
	}
	if _, err := e.Get([]byte("before")); !errors.Is(err, engine.ErrFailed) {
		t.Fatalf("Get after a failed sync = %v, want ErrFailed", err)
	}
}

// TestFailedSyncInCommitFailsTheEngine: a commit with sync whose fsync
// fails returns the error (Pebble's own Apply would hand it to Fatalf).
func TestFailedSyncInCommitFailsTheEngine(t *testing.T) {
	var armed atomic.Bool
	e, err := pebble.Open(pebble.Options{Dir: "/db", FS: walSyncFails(&armed)})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	armed.Store(true)
	b := e.NewBatch()
	b.Set([]byte("k"), []byte("v"))
	if err := b.Commit(true); !errors.Is(err, engine.ErrFailed) {
		t.Fatalf("Commit(sync) whose fsync failed = %v, want ErrFailed", err)
	}
	b.Close()
	<-e.Failed()
}

// TestOldFormatStoreIsUpgradedOnOpen opens a store in the oldest format
// Pebble v2 opens (13; a store the previous Meridian upgraded is at 16),
// with tables on disk and a write only in the WAL: Open upgrades
// it to FormatVersion, says so in the log, and every key reads back as it
// was. A second open finds nothing to upgrade.
func TestOldFormatStoreIsUpgradedOnOpen(t *testing.T) {
	dir := t.TempDir()
	old, err := pebble.OpenFormat(pebble.Options{Dir: dir, CacheSize: 8 << 20, MemTableSize: 4 << 20}, pebbledb.FormatMinSupported)
	if err != nil {
		t.Fatal(err)
	}
	if got := old.Format(); got != pebbledb.FormatMinSupported {
		t.Fatalf("old store's format %s, want %s", got, pebbledb.FormatMinSupported)
	}
	writeTables(t, old, 2000, 4)
	b := old.NewBatch()
	b.Set([]byte("wal-only"), []byte("in the log"))
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	var logs strings.Builder
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	e, err := pebble.Open(pebble.Options{Dir: dir, CacheSize: 8 << 20, MemTableSize: 4 << 20, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	if got := e.Format(); got != pebble.FormatVersion {
		t.Errorf("format after open %s, want %s", got, pebble.FormatVersion)
	}
	for _, want := range []string{"upgrading the storage format", "from=013", "tables in older formats are rewritten", "storage format upgraded"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
	for i := 0; i < 4000; i++ {
		v, err := e.Get([]byte(fmt.Sprintf("key%05d", i)))
		switch {
		case i%2 == 0 && (err != nil || len(v) != 100):
			t.Fatalf("key%05d after the upgrade: %d bytes, %v", i, len(v), err)
		case i%2 == 1 && !errors.Is(err, engine.ErrNotFound):
			t.Fatalf("key%05d was never written, got %d bytes, %v", i, len(v), err)
		}
	}
	if v, err := e.Get([]byte("wal-only")); err != nil || string(v) != "in the log" {
		t.Fatalf("WAL-only write after the upgrade: %q, %v", v, err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	logs.Reset()
	e, err = pebble.Open(pebble.Options{Dir: dir, CacheSize: 8 << 20, MemTableSize: 4 << 20, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if got := e.Format(); got != pebble.FormatVersion {
		t.Errorf("format on the second open %s, want %s", got, pebble.FormatVersion)
	}
	if strings.Contains(logs.String(), "upgrading") {
		t.Errorf("second open upgraded again:\n%s", logs.String())
	}
}

// TestUpgradeWithoutRewriteSaysSo: from a format whose tables are all
// current already (16, where the previous Meridian left every store), the
// upgrade's log line does not announce a rewrite.
func TestUpgradeWithoutRewriteSaysSo(t *testing.T) {
	dir := t.TempDir()
	old, err := pebble.OpenFormat(pebble.Options{Dir: dir, CacheSize: 8 << 20, MemTableSize: 4 << 20}, pebbledb.FormatVirtualSSTables)
	if err != nil {
		t.Fatal(err)
	}
	writeTables(t, old, 100, 2)
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	e, err := pebble.Open(pebble.Options{Dir: dir, CacheSize: 8 << 20, MemTableSize: 4 << 20, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if got := e.Format(); got != pebble.FormatVersion {
		t.Errorf("format after open %s, want %s", got, pebble.FormatVersion)
	}
	if !strings.Contains(logs.String(), "from=016") || strings.Contains(logs.String(), "rewritten") {
		t.Errorf("upgrade from 016 logged:\n%s", logs.String())
	}
}

// TestNewStoreIsCreatedInFormatVersion: a new store starts in the newest
// format, not Pebble's RocksDB-compatible default.
func TestNewStoreIsCreatedInFormatVersion(t *testing.T) {
	e := open(t, t.TempDir())
	defer e.Close()
	if got := e.Format(); got != pebble.FormatVersion {
		t.Fatalf("new store's format %s, want %s", got, pebble.FormatVersion)
	}
}

// TestTooOldStoreIsRefused: a store older than Pebble v2 opens is refused
// with ErrTooOld and what to do, and its files are left as they were
// (but for Pebble's empty LOCK). Two
// shapes: Pebble's RocksDB-compatible format 1 (a CURRENT file, which every
// store had before Meridian set its format), and a format marker below 13.
func TestTooOldStoreIsRefused(t *testing.T) {
	t.Run("format=1", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "CURRENT"), []byte("MANIFEST-000001\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		checkTooOld(t, dir)
	})
	t.Run("format=5", func(t *testing.T) {
		dir := t.TempDir()
		e := open(t, dir)
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		renamed := false
		for _, ent := range ents {
			name := ent.Name()
			if !strings.HasPrefix(name, "marker.format-version.") {
				continue
			}
			old := name[:strings.LastIndexByte(name, '.')+1] + "005"
			if err := os.Rename(filepath.Join(dir, name), filepath.Join(dir, old)); err != nil {
				t.Fatal(err)
			}
			renamed = true
		}
		if !renamed {
			t.Fatalf("no format-version marker in %v", ents)
		}
		checkTooOld(t, dir)
	})
}

func checkTooOld(t *testing.T, dir string) {
	t.Helper()
	before := listDir(t, dir)
	e, err := pebble.Open(pebble.Options{Dir: dir, CacheSize: 8 << 20, MemTableSize: 4 << 20})
	if err == nil {
		e.Close()
		t.Fatal("Open of a store older than Pebble v2 opens succeeded")
	}
	if !errors.Is(err, pebble.ErrTooOld) {
		t.Fatalf("Open = %v, want ErrTooOld", err)
	}
	t.Log(err)
	// Recognised from the directory's files, not from Pebble's message.
	for _, want := range []string{"holds a store in Pebble format", "Pebble v1", "upgrades", dir} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if after := listDir(t, dir); after != before {
		t.Errorf("refused open changed the directory:\nbefore %s\nafter  %s", before, after)
	}
}

func listDir(t *testing.T, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, ent := range ents {
		if ent.Name() == "LOCK" {
			continue // Pebble takes its lock before it looks at the format
		}
		info, err := ent.Info()
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, fmt.Sprintf("%s:%d", ent.Name(), info.Size()))
	}
	return strings.Join(names, " ")
}

// TestCheckpoint: a checkpoint holds every write committed before it and
// none after, opens as a store of its own, and refuses a directory that
// exists.
func TestCheckpoint(t *testing.T) {
	e := open(t, t.TempDir())
	defer e.Close()
	put := func(k, v string, sync bool) {
		b := e.NewBatch()
		b.Set([]byte(k), []byte(v))
		if err := b.Commit(sync); err != nil {
			t.Fatal(err)
		}
	}
	put("flushed", "1", true)
	if err := e.Flush(); err != nil {
		t.Fatal(err)
	}
	put("in-wal", "2", false) // unsynced, still in the memtable and WAL
	dir := filepath.Join(t.TempDir(), "snapshots", "s1")
	if err := e.Checkpoint(dir); err != nil {
		t.Fatal(err)
	}
	put("after", "3", true)
	if err := e.Checkpoint(dir); err == nil {
		t.Fatal("a checkpoint into an existing directory succeeded")
	}
	c := open(t, dir)
	defer c.Close()
	for k, want := range map[string]string{"flushed": "1", "in-wal": "2"} {
		if v, err := c.Get([]byte(k)); err != nil || string(v) != want {
			t.Errorf("checkpoint: %s = %q, %v; want %q", k, v, err, want)
		}
	}
	if _, err := c.Get([]byte("after")); !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("checkpoint holds a write made after it: %v", err)
	}
}

// TestCheckpointFailedSyncFailsTheEngine: a checkpoint whose WAL fsync
// fails returns the failure and fails the engine; it does not panic (a
// scheduled snapshot meeting a disk error must not kill the node).
func TestCheckpointFailedSyncFailsTheEngine(t *testing.T) {
	var armed atomic.Bool
	e, err := pebble.Open(pebble.Options{Dir: "/db", FS: walSyncFails(&armed)})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	b := e.NewBatch()
	b.Set([]byte("k"), []byte("v"))
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	armed.Store(true)
	err = func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("panic: %v", r)
			}
		}()
		return e.Checkpoint("/snapshots/s1")
	}()
	if !errors.Is(err, engine.ErrFailed) || !errors.Is(err, errorfs.ErrInjected) {
		t.Fatalf("Checkpoint whose WAL fsync failed = %v, want ErrFailed wrapping the injected error", err)
	}
	select {
	case <-e.Failed():
	default:
		t.Fatal("Failed not closed after a checkpoint's failed sync")
	}
}
