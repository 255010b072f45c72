// Package enginetest is the conformance suite every engine.Engine passes.
package enginetest

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"

	"github.com/meridiankv/meridian/engine"
)

// Run checks the behaviour every engine must have. open returns a fresh,
// empty engine; Run closes it.
func Run(t *testing.T, open func(t *testing.T) engine.Engine) {
	cases := []struct {
		name string
		fn   func(*testing.T, engine.Engine)
	}{
		{"GetMissing", testGetMissing},
		{"SetGetOverwriteDelete", testSetGetOverwriteDelete},
		{"Copies", testCopies},
		{"BatchAtomicity", testBatchAtomicity},
		{"IteratorBounds", testIteratorBounds},
		{"Snapshot", testSnapshot},
		{"ConcurrentWriters", testConcurrentWriters},
		{"CommitNoSyncWait", testNoSyncWait},
		{"SyncWAL", testSyncWAL},
		{"Healthy", testHealthy},
		{"Stats", func(t *testing.T, e engine.Engine) {
			if e.Stats() == nil {
				t.Fatal("Stats returned nil")
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := open(t)
			defer e.Close()
			c.fn(t, e)
		})
	}
	t.Run("Closed", func(t *testing.T) {
		e := open(t)
		put(t, e, "k", "v")
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := e.Get([]byte("k")); !errors.Is(err, engine.ErrClosed) {
			t.Errorf("Get after Close = %v, want ErrClosed", err)
		}
		if _, err := e.NewIter(nil, nil); !errors.Is(err, engine.ErrClosed) {
			t.Errorf("NewIter after Close = %v, want ErrClosed", err)
		}
		b := e.NewBatch()
		b.Set([]byte("x"), []byte("y"))
		if err := b.Commit(true); !errors.Is(err, engine.ErrClosed) {
			t.Errorf("Commit after Close = %v, want ErrClosed", err)
		}
		b.Close()
		if err := e.SyncWAL(); !errors.Is(err, engine.ErrClosed) {
			t.Errorf("SyncWAL after Close = %v, want ErrClosed", err)
		}
		if err := e.Close(); !errors.Is(err, engine.ErrClosed) {
			t.Errorf("second Close = %v, want ErrClosed", err)
		}
	})
	t.Run("UseAfterClose", func(t *testing.T) {
		// A snapshot or an iterator used after its own Close (the engine
		// still open) fails or positions nothing; it never panics.
		e := open(t)
		defer e.Close()
		put(t, e, "k", "v")
		s, err := e.NewSnapshot()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get([]byte("k")); !errors.Is(err, engine.ErrClosed) {
			t.Errorf("snapshot Get after its Close = %v, want ErrClosed", err)
		}
		if _, err := s.NewIter(nil, nil); !errors.Is(err, engine.ErrClosed) {
			t.Errorf("snapshot NewIter after its Close = %v, want ErrClosed", err)
		}
		it, err := e.NewIter(nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := it.Close(); err != nil {
			t.Fatal(err)
		}
		if it.First() || it.SeekGE([]byte("k")) || it.Next() || it.Valid() {
			t.Error("an iterator positioned after its Close")
		}
		// Closed while positioned (a scan abandoned midway, its key then
		// logged): it holds no key or value, and no error after a clean Close.
		it, err = e.NewIter(nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !it.First() {
			t.Fatal("iterator empty")
		}
		if err := it.Close(); err != nil {
			t.Fatal(err)
		}
		if err := it.Error(); err != nil {
			t.Errorf("iterator Error after its Close = %v, want nil", err)
		}
		if k, v := it.Key(), it.Value(); k != nil || v != nil {
			t.Errorf("iterator after its Close holds %q=%q, want nothing", k, v)
		}
	})
	t.Run("ClosedWhileReading", func(t *testing.T) {
		// An iterator or snapshot open when Close begins (a scan its
		// caller abandoned at shutdown) keeps working until it is closed;
		// the engine is not closed under it, and Close then succeeds.
		e := open(t)
		put(t, e, "k1", "v1")
		put(t, e, "k2", "v2")
		snap, err := e.NewSnapshot()
		if err != nil {
			t.Fatal(err)
		}
		sit, err := snap.NewIter(nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		it, err := e.NewIter(nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !sit.First() || !it.First() {
			t.Fatal("iterators empty")
		}
		closed := make(chan error, 1)
		go func() { closed <- e.Close() }()
		// Once Close has begun, new operations are refused...
		for {
			if _, err := e.Get([]byte("k1")); errors.Is(err, engine.ErrClosed) {
				break
			}
			runtime.Gosched()
		}
		// ...and the readers opened before it still work: a snapshot also
		// answers new reads, its own iterators included.
		if got, err := snap.Get([]byte("k1")); err != nil || string(got) != "v1" {
			t.Errorf("snapshot Get after Close began = %q, %v; want v1", got, err)
		}
		if i, err := snap.NewIter(nil, nil); err != nil {
			t.Errorf("snapshot NewIter after Close began = %v", err)
		} else {
			if !i.First() || string(i.Key()) != "k1" || !i.Next() || string(i.Key()) != "k2" || i.Next() {
				t.Error("a snapshot iterator opened after Close began does not give k1, k2")
			}
			if err := i.Close(); err != nil {
				t.Error(err)
			}
		}
		for _, i := range []engine.Iterator{sit, it} {
			if !i.Next() || string(i.Key()) != "k2" || string(i.Value()) != "v2" {
				t.Errorf("an iterator open when Close began: Next gives %q=%q, want k2=v2", i.Key(), i.Value())
			}
			if err := i.Close(); err != nil {
				t.Error(err)
			}
		}
		if err := snap.Close(); err != nil {
			t.Error(err)
		}
		if err := <-closed; err != nil {
			t.Fatalf("Close after its readers closed: %v", err)
		}
	})
}

// RunPersistent checks that committed data survives close and reopen.
func RunPersistent(t *testing.T, open func(t *testing.T, dir string) engine.Engine) {
	dir := t.TempDir()
	e := open(t, dir)
	for i := 0; i < 100; i++ {
		put(t, e, fmt.Sprintf("key%03d", i), fmt.Sprintf("value%d", i))
	}
	b := e.NewBatch()
	b.Delete([]byte("key050"))
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e = open(t, dir)
	defer e.Close()
	for i := 0; i < 100; i++ {
		v, err := e.Get([]byte(fmt.Sprintf("key%03d", i)))
		if i == 50 {
			if !errors.Is(err, engine.ErrNotFound) {
				t.Fatalf("deleted key after reopen: %q, %v", v, err)
			}
			continue
		}
		if err != nil || string(v) != fmt.Sprintf("value%d", i) {
			t.Fatalf("key%03d after reopen = %q, %v", i, v, err)
		}
	}
}

func put(t *testing.T, e engine.Engine, k, v string) {
	t.Helper()
	b := e.NewBatch()
	b.Set([]byte(k), []byte(v))
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
}

func del(t *testing.T, e engine.Engine, k string) {
	t.Helper()
	b := e.NewBatch()
	b.Delete([]byte(k))
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
}

func mustGet(t *testing.T, r engine.Reader, k string) string {
	t.Helper()
	v, err := r.Get([]byte(k))
	if err != nil {
		t.Fatalf("Get(%q): %v", k, err)
	}
	return string(v)
}

func testGetMissing(t *testing.T, e engine.Engine) {
	if _, err := e.Get([]byte("nope")); !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("Get missing = %v, want ErrNotFound", err)
	}
}

func testSetGetOverwriteDelete(t *testing.T, e engine.Engine) {
	put(t, e, "a", "1")
	if got := mustGet(t, e, "a"); got != "1" {
		t.Fatalf("got %q", got)
	}
	put(t, e, "a", "2")
	if got := mustGet(t, e, "a"); got != "2" {
		t.Fatalf("after overwrite got %q", got)
	}
	put(t, e, "empty", "")
	if got := mustGet(t, e, "empty"); got != "" {
		t.Fatalf("empty value got %q", got)
	}
	del(t, e, "a")
	if _, err := e.Get([]byte("a")); !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("after delete = %v", err)
	}
}

func testCopies(t *testing.T, e engine.Engine) {
	k, v := []byte("key"), []byte("value")
	b := e.NewBatch()
	b.Set(k, v)
	k[0], v[0] = 'X', 'X' // the batch must have copied
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	got, err := e.Get([]byte("key"))
	if err != nil || string(got) != "value" {
		t.Fatalf("Get = %q, %v; batch did not copy its input", got, err)
	}
	got[0] = 'Y'
	if again := mustGet(t, e, "key"); again != "value" {
		t.Fatalf("mutating Get's result changed the stored value: %q", again)
	}
}

func testBatchAtomicity(t *testing.T, e engine.Engine) {
	b := e.NewBatch()
	for i := 0; i < 10; i++ {
		b.Set([]byte(fmt.Sprintf("b%d", i)), []byte("v"))
	}
	if b.Len() != 10 {
		t.Fatalf("Len = %d", b.Len())
	}
	if _, err := e.Get([]byte("b0")); !errors.Is(err, engine.ErrNotFound) {
		t.Fatal("batch visible before Commit")
	}
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		mustGet(t, e, fmt.Sprintf("b%d", i))
	}
	// A committed batch is done: a second Commit applies nothing, even
	// over a newer write, nor do writes staged after it.
	put(t, e, "b0", "newer")
	b.Set([]byte("late"), []byte("v"))
	if err := b.Commit(true); !errors.Is(err, engine.ErrBatchDone) {
		t.Fatalf("second Commit = %v, want ErrBatchDone", err)
	}
	if got := mustGet(t, e, "b0"); got != "newer" {
		t.Fatalf("b0 = %q after a second Commit, want the newer write", got)
	}
	if _, err := e.Get([]byte("late")); !errors.Is(err, engine.ErrNotFound) {
		t.Fatal("a write staged after Commit was applied")
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close after Commit = %v", err)
	}
	// A closed, uncommitted batch leaves nothing, and cannot commit.
	b = e.NewBatch()
	b.Set([]byte("ghost"), []byte("v"))
	b.Close()
	if _, err := e.Get([]byte("ghost")); !errors.Is(err, engine.ErrNotFound) {
		t.Fatal("closed batch was applied")
	}
	if err := b.Commit(false); !errors.Is(err, engine.ErrBatchDone) {
		t.Fatalf("Commit after Close = %v, want ErrBatchDone", err)
	}
	if _, err := b.CommitNoSyncWait(); !errors.Is(err, engine.ErrBatchDone) {
		t.Fatalf("CommitNoSyncWait after Close = %v, want ErrBatchDone", err)
	}
}

func keys(t *testing.T, r engine.Reader, lo, hi []byte) []string {
	t.Helper()
	it, err := r.NewIter(lo, hi)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var out []string
	for ok := it.First(); ok; ok = it.Next() {
		out = append(out, string(it.Key()))
	}
	if err := it.Error(); err != nil {
		t.Fatal(err)
	}
	return out
}

func testIteratorBounds(t *testing.T, e engine.Engine) {
	for _, k := range []string{"a", "b", "b\x00", "c", "d", "\xff", "\xff\xff"} {
		put(t, e, k, "v:"+k)
	}
	check := func(lo, hi []byte, want string) {
		t.Helper()
		got := fmt.Sprintf("%q", keys(t, e, lo, hi))
		if got != want {
			t.Errorf("iter [%q, %q) = %s, want %s", lo, hi, got, want)
		}
	}
	check(nil, nil, `["a" "b" "b\x00" "c" "d" "\xff" "\xff\xff"]`)
	check([]byte("b"), []byte("d"), `["b" "b\x00" "c"]`)
	check([]byte("b\x00"), []byte("c"), `["b\x00"]`)
	check([]byte("x"), nil, `["\xff" "\xff\xff"]`)
	check(nil, []byte("b"), `["a"]`)
	check([]byte("c"), []byte("c"), `[]`)
	// Only nil is unbounded: an empty upper bound has nothing below it,
	// an empty lower bound everything above it.
	check(nil, []byte{}, `[]`)
	check([]byte{}, nil, `["a" "b" "b\x00" "c" "d" "\xff" "\xff\xff"]`)

	it, err := e.NewIter([]byte("b"), []byte("d"))
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	if !it.SeekGE([]byte("bz")) || string(it.Key()) != "c" || string(it.Value()) != "v:c" {
		t.Errorf("SeekGE(bz) inside bounds: valid=%v key=%q", it.Valid(), it.Key())
	}
	if !it.SeekGE([]byte("a")) || string(it.Key()) != "b" {
		t.Errorf("SeekGE below the lower bound should clamp to it, got %q", it.Key())
	}
	if it.SeekGE([]byte("d")) {
		t.Errorf("SeekGE at the upper bound found %q", it.Key())
	}
}

func testSnapshot(t *testing.T, e engine.Engine) {
	put(t, e, "s", "before")
	snap, err := e.NewSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	put(t, e, "s", "after")
	put(t, e, "s2", "new")
	if got := mustGet(t, snap, "s"); got != "before" {
		t.Fatalf("snapshot sees %q, want before", got)
	}
	if _, err := snap.Get([]byte("s2")); !errors.Is(err, engine.ErrNotFound) {
		t.Fatal("snapshot sees a later key")
	}
	if got := keys(t, snap, nil, nil); len(got) != 1 {
		t.Fatalf("snapshot iterator sees %q", got)
	}
}

func testConcurrentWriters(t *testing.T, e engine.Engine) {
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				b := e.NewBatch()
				b.Set([]byte(fmt.Sprintf("w%d-%02d", w, i)), []byte("v"))
				if err := b.Commit(i%10 == 0); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if got := len(keys(t, e, []byte("w"), []byte("x"))); got != 400 {
		t.Fatalf("%d keys after concurrent writes, want 400", got)
	}
	if !bytes.Equal([]byte(mustGet(t, e, "w7-49")), []byte("v")) {
		t.Fatal("missing last write")
	}
}

func testNoSyncWait(t *testing.T, e engine.Engine) {
	var waits []func() error
	for i := 0; i < 20; i++ {
		b := e.NewBatch()
		b.Set([]byte(fmt.Sprintf("ns%02d", i)), []byte("v"))
		wait, err := b.CommitNoSyncWait()
		if err != nil {
			t.Fatal(err)
		}
		// Visible before the wait: a read-modify-write may build on it.
		mustGet(t, e, fmt.Sprintf("ns%02d", i))
		waits = append(waits, wait)
	}
	for _, w := range waits {
		if err := w(); err != nil {
			t.Fatal(err)
		}
	}
}

func testSyncWAL(t *testing.T, e engine.Engine) {
	// A barrier on an empty engine, after unsynced writes, and concurrently
	// with other writers: it only returns errors the engine has.
	if err := e.SyncWAL(); err != nil {
		t.Fatalf("SyncWAL on an empty engine: %v", err)
	}
	put(t, e, "unsynced", "v")
	if err := e.SyncWAL(); err != nil {
		t.Fatalf("SyncWAL after a write: %v", err)
	}
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				b := e.NewBatch()
				b.Set([]byte(fmt.Sprintf("s%d-%02d", w, i)), []byte("v"))
				if err := b.Commit(false); err != nil {
					t.Error(err)
					return
				}
				if err := e.SyncWAL(); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	// The barrier writes no key.
	if got := keys(t, e, nil, nil); len(got) != 101 {
		t.Fatalf("%d keys after 101 writes and barriers", len(got))
	}
}

func testHealthy(t *testing.T, e engine.Engine) {
	put(t, e, "k", "v")
	select {
	case <-e.Failed():
		t.Fatalf("a healthy engine reports a failure: %v", e.Failure())
	default:
	}
	if err := e.Failure(); err != nil {
		t.Fatalf("Failure of a healthy engine = %v", err)
	}
}
