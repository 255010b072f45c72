package pebble_test

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/vfs"

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
// without, drops everything the filesystem never synced (a power cut), and
// checks that every synced write is there after reopening.
func TestSyncedWritesSurviveCrash(t *testing.T) {
	// A fresh directory: Open must make the directory itself durable too.
	fs := vfs.NewStrictMem()
	e, err := pebble.Open(pebble.Options{Dir: "/db", FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		b := e.NewBatch()
		b.Set([]byte(fmt.Sprintf("k%03d", i)), []byte("v"))
		if err := b.Commit(i%2 == 0); err != nil {
			t.Fatal(err)
		}
	}
	fs.SetIgnoreSyncs(true)
	e.Close()
	fs.ResetToSyncedState()
	fs.SetIgnoreSyncs(false)

	e, err = pebble.Open(pebble.Options{Dir: "/db", FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	for i := 0; i < 200; i += 2 {
		if _, err := e.Get([]byte(fmt.Sprintf("k%03d", i))); err != nil {
			t.Fatalf("synced write k%03d lost in the crash: %v", i, err)
		}
	}
}

func TestStats(t *testing.T) {
	e := open(t, t.TempDir())
	defer e.Close()
	s := e.Stats()
	for _, k := range []string{"compactions_total", "l0_files", "wal_bytes_written_total", "block_cache_hit_ratio", "disk_usage_bytes"} {
		if _, ok := s[k]; !ok {
			t.Errorf("Stats lacks %s", k)
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
