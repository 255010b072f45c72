package placement

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func transitionRings(t *testing.T) (old, next *Ring) {
	t.Helper()
	old, err := New(64, []Node{
		{ID: "a", DC: "east", Rack: "r1", Weight: 1},
		{ID: "b", DC: "east", Rack: "r2", Weight: 1},
		{ID: "c", DC: "east", Rack: "r3", Weight: 1},
		{ID: "d", DC: "east", Rack: "r1", Weight: 2},
		{ID: "w1", DC: "west", Rack: "r1", Weight: 1},
		{ID: "w2", DC: "west", Rack: "r2", Weight: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	next, err = old.AddNode(Node{ID: "e", DC: "east", Rack: "r2", Weight: 2})
	if err != nil {
		t.Fatal(err)
	}
	return old, next
}

func nodeSet(list []Replica) map[string]bool {
	out := map[string]bool{}
	for _, r := range list {
		out[r.Node] = true
	}
	return out
}

func TestTransition(t *testing.T) {
	oldRing, nextRing := transitionRings(t)
	old, err := oldRing.Table(Replication{"east": 3, "west": 1})
	if err != nil {
		t.Fatal(err)
	}
	// The next table also changes replication: west goes from 1 to 2.
	next, err := nextRing.Table(Replication{"east": 3, "west": 2})
	if err != nil {
		t.Fatal(err)
	}
	calls := map[int]int{}
	done := func(p int) bool { calls[p]++; return p%3 == 0 }
	tt, err := Transition(old, next, done)
	if err != nil {
		t.Fatal(err)
	}
	for p := 0; p < 64; p++ {
		if calls[p] != 1 {
			t.Fatalf("done(%d) called %d times, want once", p, calls[p])
		}
	}
	// Later calls of done change nothing: the table is immutable.
	flipped := false
	done2 := func(p int) bool { return flipped }
	tt2, _ := Transition(old, next, done2)
	flipped = true
	if tt.N() != next.N() || tt.RF("west") != 2 || !reflect.DeepEqual(tt.Replication(), next.Replication()) || tt.Ring() != nextRing {
		t.Errorf("N/RF/Replication/Ring are not next's: %d %d %v", tt.N(), tt.RF("west"), tt.Replication())
	}
	for p := 0; p < 64; p++ {
		if !reflect.DeepEqual(tt2.Replicas(p), old.Replicas(p)) {
			t.Fatalf("partition %d switched after construction", p)
		}
		// A request's N and quorums come from the list it asks.
		serving := old
		if p%3 == 0 {
			serving = next
		}
		if got := tt.ReplicationAt(p); !reflect.DeepEqual(got, serving.Replication()) || len(tt.Replicas(p)) != serving.N() {
			t.Fatalf("partition %d: ReplicationAt %v for a list of %d, want %v", p, got, len(tt.Replicas(p)), serving.Replication())
		}
		if p%3 == 0 {
			if !reflect.DeepEqual(tt.Replicas(p), next.Replicas(p)) || tt.Pending(p) != nil {
				t.Fatalf("done partition %d: replicas %v pending %v, want %v and none", p, tt.Replicas(p), tt.Pending(p), next.Replicas(p))
			}
			for _, dc := range []string{"east", "west"} {
				if got, want := tt.Fallbacks(p, dc), next.Fallbacks(p, dc); !reflect.DeepEqual(got, want) {
					t.Fatalf("done partition %d: fallbacks %v, want next's %v", p, got, want)
				}
			}
			continue
		}
		if !reflect.DeepEqual(tt.Replicas(p), old.Replicas(p)) {
			t.Fatalf("partition %d: replicas %v, want old's %v", p, tt.Replicas(p), old.Replicas(p))
		}
		in := nodeSet(old.Replicas(p))
		var want []Replica
		for _, r := range next.Replicas(p) {
			if !in[r.Node] {
				want = append(want, r)
			}
		}
		if !reflect.DeepEqual(tt.Pending(p), want) {
			t.Fatalf("partition %d: pending %v, want %v", p, tt.Pending(p), want)
		}
		if len(want) == 0 {
			t.Fatalf("partition %d: nothing pending, but west's RF grows", p)
		}
		pending := nodeSet(tt.Pending(p))
		for _, dc := range []string{"east", "west"} {
			for _, fb := range tt.Fallbacks(p, dc) {
				if in[fb.Node] || pending[fb.Node] {
					t.Fatalf("partition %d: fallback %s is a replica or pending", p, fb.Node)
				}
			}
		}
	}
	// A plain table has nothing pending.
	for p := 0; p < 64; p++ {
		if old.Pending(p) != nil || next.Pending(p) != nil {
			t.Fatalf("plain table has pending replicas for %d", p)
		}
	}
}

func TestTransitionFallbacksFromServingTable(t *testing.T) {
	oldRing, nextRing := transitionRings(t)
	repl := Replication{"east": 2, "west": 1}
	old, _ := oldRing.Table(repl)
	next, _ := nextRing.Table(repl)
	tt, err := Transition(old, next, func(int) bool { return false })
	if err != nil {
		t.Fatal(err)
	}
	for p := 0; p < 64; p++ {
		if len(tt.Pending(p)) > 0 {
			continue
		}
		// Nothing pending: the old table's fallbacks, unchanged.
		for _, dc := range []string{"east", "west"} {
			if got, want := tt.Fallbacks(p, dc), old.Fallbacks(p, dc); !reflect.DeepEqual(got, want) {
				t.Fatalf("partition %d: fallbacks %v, want old's %v", p, got, want)
			}
		}
	}
}

func TestTransitionRefuses(t *testing.T) {
	oldRing, nextRing := transitionRings(t)
	repl := Replication{"east": 2}
	old, _ := oldRing.Table(repl)
	next, _ := nextRing.Table(repl)
	small, err := New(32, oldRing.Nodes())
	if err != nil {
		t.Fatal(err)
	}
	smallTable, _ := small.Table(repl)
	never := func(int) bool { return false }
	if _, err := Transition(old, smallTable, never); !errors.Is(err, ErrBadPartitions) || !strings.Contains(err.Error(), "64 partitions, the next 32") {
		t.Errorf("different partition counts: err = %v", err)
	}
	tt, _ := Transition(old, next, never)
	if _, err := Transition(tt, next, never); err == nil {
		t.Error("a transition from a transition table was accepted")
	}
	if _, err := Transition(old, tt, never); err == nil {
		t.Error("a transition to a transition table was accepted")
	}
	if _, err := Transition(nil, next, never); err == nil {
		t.Error("a transition from nil was accepted")
	}
}

func TestChanged(t *testing.T) {
	oldRing, nextRing := transitionRings(t)
	repl := Replication{"east": 3, "west": 1}
	old, _ := oldRing.Table(repl)
	next, _ := nextRing.Table(repl)
	if got := Changed(old, old); got != nil {
		t.Errorf("Changed(t, t) = %v", got)
	}
	var want []int
	for p := 0; p < 64; p++ {
		a, b := nodeSet(old.Replicas(p)), nodeSet(next.Replicas(p))
		if !reflect.DeepEqual(a, b) {
			want = append(want, p)
		}
	}
	got := Changed(old, next)
	if len(want) == 0 || !reflect.DeepEqual(got, want) || !slices.IsSorted(got) {
		t.Errorf("Changed = %v, want %v", got, want)
	}
	// Order within a list does not count: only sets do.
	again, _ := oldRing.Table(Replication{"west": 1, "east": 3})
	if got := Changed(old, again); got != nil {
		t.Errorf("same placement computed twice: Changed = %v", got)
	}
	// A replication change is a change wherever the sets differ.
	wider, _ := oldRing.Table(Replication{"east": 3, "west": 2})
	if got := Changed(old, wider); len(got) != 64 {
		t.Errorf("west 1 → 2 changed %d partitions, want all 64", len(got))
	}
	small, _ := New(32, oldRing.Nodes())
	smallTable, _ := small.Table(repl)
	if got := Changed(smallTable, old); len(got) != 64 {
		t.Errorf("different partition counts: %d changed, want 64", len(got))
	}
}

func TestTransitionLookupsDoNotAllocate(t *testing.T) {
	oldRing, nextRing := transitionRings(t)
	repl := Replication{"east": 3, "west": 2}
	old, _ := oldRing.Table(repl)
	next, _ := nextRing.Table(repl)
	tt, _ := Transition(old, next, func(p int) bool { return p%2 == 0 })
	allocs := testing.AllocsPerRun(100, func() {
		for p := 0; p < 64; p++ {
			_ = tt.Replicas(p)
			_ = tt.Pending(p)
			_ = old.Pending(p)
		}
	})
	if allocs != 0 {
		t.Errorf("lookups allocate %.0f times", allocs)
	}
}
