package placement

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// randomTopology makes up to maxNodes nodes over up to 5 DCs, 1-4 racks per
// DC, weights 1-8.
func randomTopology(r *rand.Rand, maxNodes int) []Node {
	dcs := 1 + r.IntN(5)
	var nodes []Node
	for d := 0; d < dcs; d++ {
		racks := 1 + r.IntN(4)
		n := 1 + r.IntN(max(1, maxNodes/dcs))
		for i := 0; i < n; i++ {
			nodes = append(nodes, Node{
				ID: fmt.Sprintf("d%d-n%d", d, i), DC: fmt.Sprintf("dc%d", d),
				Rack: fmt.Sprintf("r%d", r.IntN(racks)), Weight: 1 + r.IntN(8),
			})
		}
	}
	return nodes
}

func checkShares(t *testing.T, r *Ring, what string) {
	t.Helper()
	weight := map[string]int{}
	for _, n := range r.nodes {
		weight[n.DC] += n.Weight
	}
	for _, n := range r.nodes {
		share := float64(len(r.Owned(n.ID))) / float64(r.q)
		want := float64(n.Weight) / float64(weight[n.DC])
		if math.Abs(share-want) > 0.02 {
			t.Fatalf("%s: node %s owns %.4f of %s, weight share %.4f", what, n.ID, share, n.DC, want)
		}
	}
}

func checkTable(t *testing.T, r *Ring, what string) {
	t.Helper()
	racks := map[string]map[string]bool{}
	perDC := map[string]int{}
	for _, n := range r.nodes {
		if racks[n.DC] == nil {
			racks[n.DC] = map[string]bool{}
		}
		racks[n.DC][n.Rack] = true
		perDC[n.DC]++
	}
	repl := Replication{}
	for dc, c := range perDC {
		repl[dc] = min(3, c)
	}
	tab, err := r.Table(repl)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	for p := 0; p < r.q; p++ {
		reps := tab.Replicas(p)
		if len(reps) != tab.N() {
			t.Fatalf("%s: partition %d has %d replicas, want %d", what, p, len(reps), tab.N())
		}
		seen := map[string]bool{}
		usedRacks := map[string]map[string]bool{}
		for _, rep := range reps {
			if seen[rep.Node] {
				t.Fatalf("%s: partition %d lists %s twice", what, p, rep.Node)
			}
			seen[rep.Node] = true
			if usedRacks[rep.DC] == nil {
				usedRacks[rep.DC] = map[string]bool{}
			}
			usedRacks[rep.DC][rep.Rack] = true
		}
		for dc, rf := range repl {
			if len(racks[dc]) >= rf && len(usedRacks[dc]) != rf {
				t.Fatalf("%s: partition %d uses %d racks in %s for RF %d though it has %d racks", what, p, len(usedRacks[dc]), dc, rf, len(racks[dc]))
			}
		}
		if p%64 == 0 {
			for _, dc := range r.dcs {
				fbs := tab.Fallbacks(p, dc)
				sameFirst := true
				for i, fb := range fbs {
					if seen[fb.Node] {
						t.Fatalf("%s: fallback %s of partition %d is a replica", what, fb.Node, p)
					}
					if fb.DC == dc && i > 0 && fbs[i-1].DC != dc {
						sameFirst = false
					}
				}
				if !sameFirst {
					t.Fatalf("%s: fallbacks of %d for %s not same-DC first: %v", what, p, dc, fbs)
				}
			}
		}
	}
}

func TestRandomTopologies(t *testing.T) {
	iterations := 60
	if testing.Short() {
		iterations = 15
	}
	for seed := uint64(1); seed <= uint64(iterations); seed++ {
		r := rand.New(rand.NewPCG(seed, 42))
		q := []int{256, 1024, 4096}[r.IntN(3)]
		nodes := randomTopology(r, 100)
		ring, err := New(q, nodes)
		if err != nil {
			t.Fatal(err)
		}
		what := fmt.Sprintf("seed %d (q=%d, %d nodes)", seed, q, len(nodes))
		checkShares(t, ring, what)
		checkTable(t, ring, what)

		// Input order does not matter.
		shuffled := append([]Node(nil), nodes...)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		again, _ := New(q, shuffled)
		if len(ring.Moves(again)) != 0 {
			t.Fatalf("%s: ring depends on input order", what)
		}

		// Add a node to a random DC.
		dc := nodes[r.IntN(len(nodes))].DC
		n := 0
		for _, x := range nodes {
			if x.DC == dc {
				n++
			}
		}
		added := Node{ID: "new", DC: dc, Rack: fmt.Sprintf("r%d", r.IntN(4)), Weight: 1 + r.IntN(8)}
		grown, err := ring.AddNode(added)
		if err != nil {
			t.Fatal(err)
		}
		total := 0
		for _, x := range grown.nodes {
			if x.DC == dc {
				total += x.Weight
			}
		}
		moves := ring.Moves(grown)
		limit := 1.2 * float64(added.Weight) / float64(total) * float64(q)
		if float64(len(moves)) > limit+1 {
			t.Fatalf("%s: adding a node to %s moved %d partitions, limit %.0f", what, dc, len(moves), limit)
		}
		for _, m := range moves {
			if m.To != "new" || m.DC != dc {
				t.Fatalf("%s: add moved partition %d in %s from %s to %s", what, m.Partition, m.DC, m.From, m.To)
			}
		}
		checkShares(t, grown, what+" after add")
		checkTable(t, grown, what+" after add")

		// Remove a random old node: only its partitions move.
		victim := nodes[r.IntN(len(nodes))]
		if len(nodes) == 1 {
			continue
		}
		shrunk, err := grown.RemoveNode(victim.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range grown.Moves(shrunk) {
			if m.From != victim.ID {
				t.Fatalf("%s: removing %s moved partition %d from %s", what, victim.ID, m.Partition, m.From)
			}
		}
		checkShares(t, shrunk, what+" after remove")

		// Reweight: partitions move only from over- to under-target nodes.
		rw, err := shrunk.WithWeight("new", 1+r.IntN(8))
		if err != nil {
			t.Fatal(err)
		}
		checkShares(t, rw, what+" after reweight")
	}
}

func TestEqualWeightsAddMovesAFraction(t *testing.T) {
	for n := 1; n <= 12; n++ {
		var nodes []Node
		for i := 0; i < n; i++ {
			nodes = append(nodes, Node{ID: fmt.Sprintf("n%02d", i), DC: "dc", Rack: fmt.Sprintf("r%d", i%3), Weight: 1})
		}
		ring, _ := New(1024, nodes)
		grown, err := ring.AddNode(Node{ID: "new", DC: "dc", Rack: "r0", Weight: 1})
		if err != nil {
			t.Fatal(err)
		}
		moved := len(ring.Moves(grown))
		if limit := 1.2 / float64(n+1) * 1024; float64(moved) > limit {
			t.Errorf("n=%d: moved %d of 1024, limit %.0f", n, moved, limit)
		}
	}
}

func TestSmallRing(t *testing.T) {
	ring, err := New(8, []Node{
		{ID: "a", DC: "east", Rack: "r1", Weight: 1},
		{ID: "b", DC: "east", Rack: "r2", Weight: 1},
		{ID: "c", DC: "west", Rack: "r1", Weight: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	var east []string
	for p := 0; p < 8; p++ {
		east = append(east, ring.Owner("east", p))
	}
	if got := strings.Join(east, ""); got != "abababab" {
		t.Errorf("east owners = %s, want alternating abababab", got)
	}
	tab, err := ring.Table(Replication{"east": 2, "west": 1})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(tab.Replicas(1)); got != "[{b east r2} {a east r1} {c west r1}]" {
		t.Errorf("replicas(1) = %s", got)
	}
	if ring.Owner("nowhere", 0) != "" {
		t.Error("unknown DC has an owner")
	}
}

func TestValidation(t *testing.T) {
	good := []Node{{ID: "a", DC: "dc1", Rack: "r", Weight: 1}, {ID: "b", DC: "dc1", Rack: "r", Weight: 1}}
	cases := []struct {
		name  string
		q     int
		nodes []Node
		want  error
		has   string
	}{
		{"q not power of two", 1000, good, ErrBadPartitions, "not a power of two"},
		{"no nodes", 1024, nil, ErrBadNode, "at least one node"},
		{"empty id", 1024, []Node{{DC: "x", Weight: 1}}, ErrBadNode, "empty ID"},
		{"no dc", 1024, []Node{{ID: "a", Weight: 1}}, ErrBadNode, "no datacenter"},
		{"weight", 1024, []Node{{ID: "a", DC: "x", Weight: 0}}, ErrBadNode, "weight 0"},
		{"duplicate", 1024, []Node{good[0], good[0]}, ErrDuplicateNodeID, `"a"`},
	}
	for _, c := range cases {
		_, err := New(c.q, c.nodes)
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.has) {
			t.Errorf("%s: err = %v, want %v containing %q", c.name, err, c.want, c.has)
		}
	}
	ring, _ := New(1024, good)
	for _, c := range []struct {
		repl Replication
		want error
		has  string
	}{
		{Replication{"dc9": 1}, ErrUnknownDC, `"dc9" (the cluster has dc1)`},
		{Replication{"dc1": 3}, ErrBadReplication, "dc1=3 but datacenter dc1 has only 2 node(s)"},
		{Replication{"dc1": -1}, ErrBadReplication, "negative"},
		{Replication{"dc1": 0}, ErrBadReplication, "replication is empty"},
	} {
		if _, err := ring.Table(c.repl); !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.has) {
			t.Errorf("Table(%v) = %v, want %v containing %q", c.repl, err, c.want, c.has)
		}
	}
}

func TestPartitionIsStable(t *testing.T) {
	ring, _ := New(1024, []Node{{ID: "a", DC: "d", Weight: 1}})
	// xxhash64("hello") = 0x26c7827d889f6da3 → top 10 bits.
	if got := ring.Partition([]byte("hello")); got != 0x26c7827d889f6da3>>54 {
		t.Fatalf("Partition(hello) = %d: the key→partition function changed", got)
	}
}

func bigRing(b *testing.B, q int) *Ring {
	var nodes []Node
	for d := 0; d < 3; d++ {
		for i := 0; i < 34; i++ {
			nodes = append(nodes, Node{ID: fmt.Sprintf("d%d-n%02d", d, i), DC: fmt.Sprintf("dc%d", d), Rack: fmt.Sprintf("r%d", i%4), Weight: 1 + i%4})
		}
	}
	r, err := New(q, nodes[:100])
	if err != nil {
		b.Fatal(err)
	}
	return r
}

func BenchmarkPartition(b *testing.B) {
	r := bigRing(b, 1024)
	key := []byte("user:00000000000000000042")
	for b.Loop() {
		r.Partition(key)
	}
}

// BenchmarkReplicas: key → partition → preference list, 100 nodes, 3 DCs,
// RF 3 per DC, 1024 partitions.
func BenchmarkReplicas(b *testing.B) {
	r := bigRing(b, 1024)
	tab, err := r.Table(Replication{"dc0": 3, "dc1": 3, "dc2": 3})
	if err != nil {
		b.Fatal(err)
	}
	key := []byte("user:00000000000000000042")
	b.ReportAllocs()
	for b.Loop() {
		_ = tab.Replicas(r.Partition(key))
	}
}

func BenchmarkFallbacks(b *testing.B) {
	r := bigRing(b, 1024)
	tab, _ := r.Table(Replication{"dc0": 3, "dc1": 3, "dc2": 3})
	b.ReportAllocs()
	p := 0
	for b.Loop() {
		tab.Fallbacks(p%1024, "dc0")
		p++
	}
}

// BenchmarkNewRing: the initial claim for 100 nodes × 4096 partitions.
func BenchmarkNewRing(b *testing.B) {
	for b.Loop() {
		bigRing(b, 4096)
	}
}

// BenchmarkTable: precomputing a keyspace's preference lists, 100 nodes ×
// 4096 partitions, RF 3 in each of 3 DCs.
func BenchmarkTable(b *testing.B) {
	r := bigRing(b, 4096)
	for b.Loop() {
		if _, err := r.Table(Replication{"dc0": 3, "dc1": 3, "dc2": 3}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAddNode(b *testing.B) {
	r := bigRing(b, 4096)
	for b.Loop() {
		if _, err := r.AddNode(Node{ID: "extra", DC: "dc1", Rack: "r9", Weight: 2}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkChanges: AddNode, RemoveNode and WithWeight on 100 nodes in 3
// DCs, q=65536, with one rack per DC and with four.
func BenchmarkChanges(b *testing.B) {
	for _, racks := range []int{1, 4} {
		var nodes []Node
		for d := 0; d < 3; d++ {
			for i := 0; i < 34; i++ {
				nodes = append(nodes, Node{ID: fmt.Sprintf("d%d-n%02d", d, i), DC: fmt.Sprintf("dc%d", d), Rack: fmt.Sprintf("r%d", i%racks), Weight: 2 + i%2})
			}
		}
		r, err := New(65536, nodes[:100])
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("add/racks=%d", racks), func(b *testing.B) {
			for b.Loop() {
				if _, err := r.AddNode(Node{ID: "extra", DC: "dc1", Rack: "r0", Weight: 2}); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("remove/racks=%d", racks), func(b *testing.B) {
			for b.Loop() {
				if _, err := r.RemoveNode("d1-n04"); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("reweight/racks=%d", racks), func(b *testing.B) {
			for b.Loop() {
				if _, err := r.WithWeight("d1-n04", 3); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestNodesOwningNothingAreReplicas: with a small Q a light node can own no
// partition; the walk never meets it, yet a list must still have RF nodes.
func TestNodesOwningNothingAreReplicas(t *testing.T) {
	ring, err := New(4, []Node{
		{ID: "a", DC: "d", Rack: "r1", Weight: 3},
		{ID: "b", DC: "d", Rack: "r1", Weight: 3},
		{ID: "c", DC: "d", Rack: "r1", Weight: 1},
		{ID: "e", DC: "d", Rack: "r2", Weight: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(ring.Owned("c")) != 0 || len(ring.Owned("e")) != 0 {
		t.Fatalf("c and e own %v and %v, want nothing", ring.Owned("c"), ring.Owned("e"))
	}
	for rf := 1; rf <= 4; rf++ {
		tab, err := ring.Table(Replication{"d": rf})
		if err != nil {
			t.Fatal(err)
		}
		for p := 0; p < 4; p++ {
			reps := tab.Replicas(p)
			if len(reps) != rf {
				t.Fatalf("RF %d: partition %d has %d replicas: %v", rf, p, len(reps), reps)
			}
			racks := map[string]bool{}
			for _, r := range reps {
				racks[r.Rack] = true
			}
			// e is r2's only node: from RF 2 on, every list needs it.
			if rf >= 2 && !racks["r2"] {
				t.Fatalf("RF %d: partition %d uses only rack r1: %v", rf, p, reps)
			}
		}
	}
	tab, _ := ring.Table(Replication{"d": 2})
	if fbs := tab.Fallbacks(0, "d"); len(fbs) != 2 {
		t.Errorf("fallbacks of 0 = %v, want the 2 nodes that are not replicas", fbs)
	}
}
