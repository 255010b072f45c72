package placement

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// sameRing fails unless b behaves exactly like a: partitions, nodes, DCs,
// owners, owned partitions, preference lists and fallbacks.
func sameRing(t *testing.T, a, b *Ring, what string) {
	t.Helper()
	if a.Partitions() != b.Partitions() {
		t.Fatalf("%s: %d partitions, want %d", what, b.Partitions(), a.Partitions())
	}
	if !reflect.DeepEqual(a.Nodes(), b.Nodes()) {
		t.Fatalf("%s: nodes %v, want %v", what, b.Nodes(), a.Nodes())
	}
	if !reflect.DeepEqual(a.DCs(), b.DCs()) {
		t.Fatalf("%s: DCs %v, want %v", what, b.DCs(), a.DCs())
	}
	for _, dc := range a.DCs() {
		for p := 0; p < a.Partitions(); p++ {
			if a.Owner(dc, p) != b.Owner(dc, p) {
				t.Fatalf("%s: owner of %d in %s is %s, want %s", what, p, dc, b.Owner(dc, p), a.Owner(dc, p))
			}
		}
	}
	for _, n := range a.Nodes() {
		if !reflect.DeepEqual(a.Owned(n.ID), b.Owned(n.ID)) {
			t.Fatalf("%s: %s owns different partitions", what, n.ID)
		}
		if got, _ := b.Node(n.ID); got != n {
			t.Fatalf("%s: node %s is %v, want %v", what, n.ID, got, n)
		}
	}
	repl := Replication{}
	for _, n := range a.Nodes() {
		repl[n.DC] = min(repl[n.DC]+1, 3)
	}
	ta, err := a.Table(repl)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	tb, err := b.Table(repl)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	for p := 0; p < a.Partitions(); p++ {
		if !reflect.DeepEqual(ta.Replicas(p), tb.Replicas(p)) {
			t.Fatalf("%s: replicas of %d are %v, want %v", what, p, tb.Replicas(p), ta.Replicas(p))
		}
		for _, dc := range a.DCs() {
			if fa, fb := ta.Fallbacks(p, dc), tb.Fallbacks(p, dc); !reflect.DeepEqual(fa, fb) {
				t.Fatalf("%s: fallbacks of %d for %s are %v, want %v", what, p, dc, fb, fa)
			}
		}
	}
}

// roundTrip checks State → FromState and State → JSON → FromState.
func roundTrip(t *testing.T, r *Ring, what string) {
	t.Helper()
	back, err := FromState(r.State())
	if err != nil {
		t.Fatalf("%s: FromState: %v", what, err)
	}
	sameRing(t, r, back, what)
	b, err := json.Marshal(r.State())
	if err != nil {
		t.Fatal(err)
	}
	var s RingState
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	// Node order in the state does not matter.
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(s.Nodes), func(i, j int) { s.Nodes[i], s.Nodes[j] = s.Nodes[j], s.Nodes[i] })
	back, err = FromState(s)
	if err != nil {
		t.Fatalf("%s: FromState after JSON: %v", what, err)
	}
	sameRing(t, r, back, what+" (JSON)")
}

func TestStateRoundTrip(t *testing.T) {
	for seed := uint64(1); seed <= 12; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		q := []int{1, 16, 256}[rng.IntN(3)]
		nodes := randomTopology(rng, 20)
		ring, err := New(q, nodes)
		if err != nil {
			t.Fatal(err)
		}
		what := fmt.Sprintf("seed %d", seed)
		roundTrip(t, ring, what+" new")
		victim := nodes[rng.IntN(len(nodes))]
		grown, err := ring.AddNode(Node{ID: "added", DC: victim.DC, Rack: "r9", Weight: 3})
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, grown, what+" add")
		if len(nodes) > 1 {
			shrunk, err := grown.RemoveNode(victim.ID)
			if err != nil {
				t.Fatal(err)
			}
			roundTrip(t, shrunk, what+" remove")
		}
		rw, err := grown.WithWeight("added", 7)
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, rw, what+" reweight")
		rep, err := grown.Replace(victim.ID, Node{ID: "replacement", DC: victim.DC, Rack: victim.Rack, Weight: victim.Weight})
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, rep, what+" replace")
	}
}

func TestStateJSON(t *testing.T) {
	ring, err := New(4, []Node{{ID: "a", DC: "east", Rack: "r1", Weight: 1}, {ID: "b", DC: "east", Rack: "r2", Weight: 1}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(ring.State())
	if err != nil {
		t.Fatal(err)
	}
	want := `{"q":4,"nodes":[{"id":"a","dc":"east","rack":"r1","weight":1},{"id":"b","dc":"east","rack":"r2","weight":1}],"owners":{"east":["a","b","a","b"]}}`
	if string(b) != want {
		t.Errorf("JSON = %s\nwant   %s", b, want)
	}
}

func TestFromStateRejects(t *testing.T) {
	good := func() RingState {
		return RingState{
			Partitions: 4,
			Nodes: []Node{
				{ID: "a", DC: "east", Rack: "r1", Weight: 1},
				{ID: "b", DC: "east", Rack: "r2", Weight: 1},
				{ID: "c", DC: "west", Rack: "r1", Weight: 1},
			},
			Owners: map[string][]string{"east": {"a", "b", "a", "b"}, "west": {"c", "c", "c", "c"}},
		}
	}
	if _, err := FromState(good()); err != nil {
		t.Fatalf("good state: %v", err)
	}
	cases := []struct {
		name   string
		change func(s *RingState)
		want   error
		has    string
	}{
		{"q zero", func(s *RingState) { s.Partitions = 0 }, ErrBadPartitions, "not a power of two"},
		{"q not power of two", func(s *RingState) { s.Partitions = 6 }, ErrBadPartitions, "6 is not a power of two"},
		{"no nodes", func(s *RingState) { s.Nodes = nil; s.Owners = nil }, ErrBadNode, "at least one node"},
		{"empty id", func(s *RingState) { s.Nodes[0].ID = "" }, ErrBadNode, "empty ID"},
		{"no dc", func(s *RingState) { s.Nodes[2].DC = "" }, ErrBadNode, `"c" has no datacenter`},
		{"weight", func(s *RingState) { s.Nodes[1].Weight = MaxWeight + 1 }, ErrBadNode, `"b" weight 1001`},
		{"duplicate", func(s *RingState) { s.Nodes[1].ID = "a" }, ErrDuplicateNodeID, `"a"`},
		{"dc without owners", func(s *RingState) { delete(s.Owners, "west") }, ErrBadState, "datacenter west has nodes but no owners"},
		{"short owners", func(s *RingState) { s.Owners["east"] = s.Owners["east"][:3] }, ErrBadState, "east has 3 owners for 4 partitions"},
		{"long owners", func(s *RingState) { s.Owners["west"] = append(s.Owners["west"], "c") }, ErrBadState, "west has 5 owners for 4 partitions"},
		{"unknown owner", func(s *RingState) { s.Owners["east"][2] = "z" }, ErrBadState, `partition 2 of east is owned by "z", which is not a node`},
		{"empty owner", func(s *RingState) { s.Owners["east"][0] = "" }, ErrBadState, `partition 0 of east is owned by "", which is not a node`},
		{"owner in other dc", func(s *RingState) { s.Owners["west"][1] = "a" }, ErrBadState, `partition 1 of west is owned by "a", a node of east`},
		{"owners without nodes", func(s *RingState) { s.Owners["north"] = []string{"a", "a", "a", "a"} }, ErrBadState, "owners for datacenter north, which has no nodes"},
	}
	for _, c := range cases {
		s := good()
		c.change(&s)
		r, err := FromState(s)
		if r != nil || !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.has) {
			t.Errorf("%s: FromState = %v, %v; want %v containing %q", c.name, r, err, c.want, c.has)
		}
	}
}

func TestStateIsACopy(t *testing.T) {
	ring, _ := New(4, []Node{{ID: "a", DC: "east", Weight: 1}, {ID: "b", DC: "east", Weight: 1}})
	s := ring.State()
	s.Owners["east"][0] = "b"
	s.Nodes[0].Weight = 9
	if ring.Owner("east", 0) != "a" || ring.Nodes()[0].Weight != 1 {
		t.Error("changing a state changed its ring")
	}
	s2 := ring.State()
	back, _ := FromState(s2)
	s2.Owners["east"][1] = "a"
	s2.Nodes[1].Weight = 9
	if back.Owner("east", 1) != "b" || back.Nodes()[1].Weight != 1 {
		t.Error("FromState shares the state's slices")
	}
}
