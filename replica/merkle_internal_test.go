package replica

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/meridiankv/meridian/engine"
	"github.com/meridiankv/meridian/engine/memory"
	"github.com/meridiankv/meridian/version"
)

// scanHookEngine wraps an engine so that iterators over its snapshots call
// onNext before every step and, while failAfter > 0, fail after that many
// keys.
type scanHookEngine struct {
	engine.Engine
	onNext    func()
	failAfter int
}

func (e *scanHookEngine) NewSnapshot() (engine.Snapshot, error) {
	snap, err := e.Engine.NewSnapshot()
	if err != nil {
		return nil, err
	}
	return &hookSnapshot{Snapshot: snap, e: e}, nil
}

type hookSnapshot struct {
	engine.Snapshot
	e *scanHookEngine
}

func (s *hookSnapshot) NewIter(lower, upper []byte) (engine.Iterator, error) {
	it, err := s.Snapshot.NewIter(lower, upper)
	if err != nil {
		return nil, err
	}
	return &hookIter{Iterator: it, e: s.e}, nil
}

type hookIter struct {
	engine.Iterator
	e   *scanHookEngine
	n   int
	err error
}

var errScan = errors.New("injected scan failure")

func (it *hookIter) Next() bool {
	if it.e.onNext != nil {
		it.e.onNext()
	}
	it.n++
	if it.e.failAfter > 0 && it.n >= it.e.failAfter {
		it.err = errScan
		return false
	}
	return it.Iterator.Next()
}

func (it *hookIter) Error() error {
	if it.err != nil {
		return it.err
	}
	return it.Iterator.Error()
}

func putValue(t testing.TB, s *Store, loc Loc, key []byte, v string) {
	t.Helper()
	if _, err := s.Update(loc, key, false, func(cur version.Set) (version.Set, error) {
		next, _ := cur.Put(cur.Context(), s.Actor(), version.Value{Bytes: []byte(v)}, 1)
		return next, nil
	}); err != nil {
		t.Fatal(err)
	}
}

func definitionLeaves(t testing.TB, s *Store, loc Loc, keys [][]byte) [Buckets]uint64 {
	t.Helper()
	var out [Buckets]uint64
	for _, k := range keys {
		set, err := s.Get(loc, k)
		if err != nil {
			t.Fatal(err)
		}
		if !set.IsEmpty() {
			out[Bucket(k)] ^= Contribution(k, set.Digest())
		}
	}
	return out
}

func keysN(n int) [][]byte {
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "k%05d", i)
	}
	return keys
}

// TestFailedBuildStartsAfresh: writes land while a build scans, the scan
// fails; the next build is exact (the failed build's deltas are gone and
// writes in between were not counted twice).
func TestFailedBuildStartsAfresh(t *testing.T) {
	eng := &scanHookEngine{Engine: memory.New()}
	s, err := Open(eng, "n1")
	if err != nil {
		t.Fatal(err)
	}
	loc := Loc{Keyspace: 1, Partition: 3}
	keys := keysN(100)
	for _, k := range keys {
		putValue(t, s, loc, k, "a")
	}
	i := 0
	eng.onNext = func() { // a write between two steps of the scan
		putValue(t, s, loc, keys[i%len(keys)], fmt.Sprint("during-", i))
		i++
	}
	eng.failAfter = 50
	if _, err := s.Leaves(loc); !errors.Is(err, errScan) {
		t.Fatalf("build over a failing scan: %v, want %v", err, errScan)
	}
	for j, k := range keys[:30] {
		putValue(t, s, loc, k, fmt.Sprint("between-", j))
	}
	eng.failAfter = 0
	got, err := s.Leaves(loc)
	if err != nil {
		t.Fatal(err)
	}
	eng.onNext = nil
	if want := definitionLeaves(t, s, loc, keys); !bytes.Equal(u64s(got), u64s(want[:])) {
		t.Fatal("leaves after a failed then a successful build differ from the definition")
	}
	putValue(t, s, loc, keys[99], "after")
	got, _ = s.Leaves(loc)
	if want := definitionLeaves(t, s, loc, keys); !bytes.Equal(u64s(got), u64s(want[:])) {
		t.Fatal("leaves not kept current after the build")
	}
}

func u64s(v []uint64) []byte {
	var b []byte
	for _, x := range v {
		b = fmt.Appendf(b, "%x,", x)
	}
	return b
}

// TestBuildLogsProgress: a build scanning for longer than the progress
// interval logs its progress and its end.
func TestBuildLogsProgress(t *testing.T) {
	s, err := Open(memory.New(), "n1")
	if err != nil {
		t.Fatal(err)
	}
	loc := Loc{Keyspace: 2}
	for _, k := range keysN(3000) {
		putValue(t, s, loc, k, "v")
	}
	var buf bytes.Buffer
	s.SetLogger(slog.New(slog.NewTextHandler(&buf, nil)))
	s.progressEvery = time.Nanosecond
	if _, err := s.Leaves(loc); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.Contains(out, "scanning partition for Merkle tree") || !strings.Contains(out, "keys=2048") {
		t.Fatalf("no progress logged:\n%s", out)
	}
	if !strings.Contains(out, "scanned partition for Merkle tree") || !strings.Contains(out, "keys=3000") {
		t.Fatalf("no end logged:\n%s", out)
	}
}

// BenchmarkTreeWrite isolates what a write to a partition with a built tree
// adds to the write path: the tree lookup, the old and new contributions,
// the tree's read lock and the leaf XOR (the commit itself is left out).
func BenchmarkTreeWrite(b *testing.B) {
	for _, size := range []int{100, 4096} {
		b.Run(fmt.Sprintf("value=%d", size), func(b *testing.B) {
			s, err := Open(memory.New(), "n1")
			if err != nil {
				b.Fatal(err)
			}
			loc := Loc{Keyspace: 1, Partition: 1}
			if _, err := s.Leaves(loc); err != nil {
				b.Fatal(err)
			}
			val := version.Value{Bytes: bytes.Repeat([]byte("x"), size)}
			old, _ := version.Set{}.Put(version.Clock{}, "n1#abc", val, 1)
			next, _ := old.Put(old.Context(), "n1#abc", val, 2)
			h := xxhash.Sum64([]byte("some-user-key-0001"))
			b.ReportAllocs()
			for b.Loop() {
				t := s.trees.get(loc)
				d := contribution(h, old) ^ contribution(h, next)
				t.mu.RLock()
				if t.state != treePending {
					t.xor(bucketOf(h), d)
				}
				t.mu.RUnlock()
			}
		})
	}
}
