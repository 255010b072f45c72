package replica_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/meridiankv/meridian/engine/memory"
	"github.com/meridiankv/meridian/replica"
	"github.com/meridiankv/meridian/version"
)

func TestConcurrentUpdatesNeverLoseAVersion(t *testing.T) {
	s, err := replica.Open(memory.New(), "n1")
	if err != nil {
		t.Fatal(err)
	}
	loc := replica.Loc{Keyspace: 7, Partition: 3}
	key := []byte("hot")
	const writers = 32
	var wg sync.WaitGroup
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Blind writes (empty context) are all concurrent: every one
			// must survive as a sibling.
			_, err := s.Update(loc, key, false, func(cur version.Set) (version.Set, error) {
				next, _ := cur.Put(version.Clock{}, s.Actor(), version.Value{Bytes: []byte(fmt.Sprint(i))}, 1)
				return next, nil
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	set, err := s.Get(loc, key)
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Siblings) != writers {
		t.Fatalf("%d siblings after %d concurrent blind writes, want %d", len(set.Siblings), writers, writers)
	}
}

func TestMergeKeepsConcurrentLocalVersion(t *testing.T) {
	s, err := replica.Open(memory.New(), "n1")
	if err != nil {
		t.Fatal(err)
	}
	loc := replica.Loc{Keyspace: 1}
	key := []byte("k")
	local, _ := version.Set{}.Put(version.Clock{}, "n1", version.Value{Bytes: []byte("local")}, 1)
	if _, err := s.Merge(loc, key, local, true); err != nil {
		t.Fatal(err)
	}
	remote, _ := version.Set{}.Put(version.Clock{}, "n2", version.Value{Bytes: []byte("remote")}, 1)
	got, err := s.Merge(loc, key, remote, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Siblings) != 2 {
		t.Fatalf("merge of concurrent versions kept %d siblings, want 2", len(got.Siblings))
	}
}

func TestKeyLayout(t *testing.T) {
	loc := replica.Loc{Keyspace: 0x01020304, Partition: 0x0506}
	k := replica.DataKey(loc, []byte("user"))
	want := []byte{'d', 1, 2, 3, 4, 5, 6, 'u', 's', 'e', 'r'}
	if !bytes.Equal(k, want) {
		t.Fatalf("DataKey = %x, want %x", k, want)
	}
	gotLoc, gotKey, err := replica.DecodeDataKey(k)
	if err != nil || gotLoc != loc || string(gotKey) != "user" {
		t.Fatalf("DecodeDataKey = %v %q %v", gotLoc, gotKey, err)
	}
	lo, hi := replica.PartitionBounds(loc)
	if bytes.Compare(lo, k) > 0 || bytes.Compare(k, hi) >= 0 {
		t.Fatalf("key %x not within partition bounds [%x, %x)", k, lo, hi)
	}
	other := replica.DataKey(replica.Loc{Keyspace: loc.Keyspace, Partition: loc.Partition + 1}, nil)
	if bytes.Compare(other, hi) < 0 {
		t.Fatalf("next partition's key %x inside bounds ending %x", other, hi)
	}
}

func TestActorIncarnation(t *testing.T) {
	eng := memory.New()
	s, err := replica.Open(eng, "n1")
	if err != nil {
		t.Fatal(err)
	}
	first := s.Actor()
	if !strings.HasPrefix(first, "n1#") || len(first) < len("n1#")+8 {
		t.Fatalf("fresh actor = %q, want n1#<random>", first)
	}
	// Clean shutdown keeps the actor.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = replica.Open(eng, "n1"); err != nil || s.Actor() != first {
		t.Fatalf("after clean restart actor = %q (%v), want %q", s.Actor(), err, first)
	}
	// No Close (a crash): a new incarnation, so dots lost with unsynced
	// writes are never minted again.
	if s, err = replica.Open(eng, "n1"); err != nil || s.Actor() == first || !strings.HasPrefix(s.Actor(), "n1#") {
		t.Fatalf("after crash actor = %q (%v), want a new n1#<random>", s.Actor(), err)
	}
	if inc := s.Incarnations(); len(inc) != 2 || inc[0] != first || inc[1] != s.Actor() {
		t.Fatalf("incarnations = %v, want [%s %s]", inc, first, s.Actor())
	}
	// A wiped disk: another store for the same node never reuses an actor.
	wiped, err := replica.Open(memory.New(), "n1")
	if err != nil || wiped.Actor() == first || wiped.Actor() == s.Actor() {
		t.Fatalf("wiped store actor = %q (%v), reuses an earlier one", wiped.Actor(), err)
	}
	// Another node's data is refused.
	if _, err := replica.Open(eng, "n2"); err == nil {
		t.Fatal("n2 opened n1's data")
	}
}

func TestCounterNeverRepeats(t *testing.T) {
	eng := memory.New()
	s, err := replica.Open(eng, "n1")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint64]bool{}
	last := uint64(0)
	for round := 0; round < 3; round++ {
		for i := 0; i < 1000; i++ {
			c, err := s.NextCounter()
			if err != nil {
				t.Fatal(err)
			}
			if seen[c] || c <= last {
				t.Fatalf("counter %d handed out again or out of order (last %d)", c, last)
			}
			seen[c], last = true, c
		}
		// Alternate crash and clean restart: the counter keeps growing.
		if round%2 == 1 {
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		}
		if s, err = replica.Open(eng, "n1"); err != nil {
			t.Fatal(err)
		}
	}
}

// TestWriteGateRefusesDataWrites: with the gate closed every data write
// fails with its error and stores nothing; reads, metadata and the
// collection of tombstones (which frees space) go on.
func TestWriteGateRefusesDataWrites(t *testing.T) {
	s, err := replica.Open(memory.New(), "n1")
	if err != nil {
		t.Fatal(err)
	}
	loc := replica.Loc{Keyspace: 1}
	tomb, _ := version.Set{}.Put(version.Clock{}, "n2", version.Value{Tombstone: true}, 1)
	if _, err := s.Merge(loc, []byte("gone"), tomb, false); err != nil {
		t.Fatal(err)
	}
	full := errors.New("disk full")
	var closed atomic.Bool
	s.SetWriteGate(func() error {
		if closed.Load() {
			return full
		}
		return nil
	})
	if err := s.WritesRefused(); err != nil {
		t.Fatalf("open gate: WritesRefused = %v", err)
	}
	closed.Store(true)
	if err := s.WritesRefused(); !errors.Is(err, full) {
		t.Fatalf("closed gate: WritesRefused = %v", err)
	}
	v, _ := version.Set{}.Put(version.Clock{}, "n2", version.Value{Bytes: []byte("v")}, 1)
	if _, err := s.Merge(loc, []byte("k"), v, true); !errors.Is(err, full) {
		t.Errorf("Merge with the gate closed: %v, want the gate's error", err)
	}
	if _, err := s.UpdateEncoded(loc, []byte("k"), false, func(version.Set) (version.Set, error) { return v, nil }); !errors.Is(err, full) {
		t.Errorf("UpdateEncoded with the gate closed: %v, want the gate's error", err)
	}
	if got, err := s.Get(loc, []byte("k")); err != nil || len(got.Siblings) != 0 {
		t.Errorf("refused writes stored %v (%v)", got, err)
	}
	if got, err := s.Get(loc, []byte("gone")); err != nil || len(got.Siblings) != 1 {
		t.Errorf("read with the gate closed: %v %v", got, err)
	}
	if err := s.PutMeta("m", []byte("x")); err != nil {
		t.Errorf("metadata with the gate closed: %v", err)
	}
	if ok, err := s.DeleteIfUnchanged(loc, []byte("gone"), tomb); !ok || err != nil {
		t.Errorf("collecting a tombstone with the gate closed: %v %v", ok, err)
	}
	closed.Store(false)
	if _, err := s.Merge(loc, []byte("k"), v, true); err != nil {
		t.Errorf("Merge with the gate open again: %v", err)
	}
}
