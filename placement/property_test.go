package placement

import (
	"flag"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

var oneMove = flag.Bool("placement.onemove", false, "run TestOneReplicaMovesPerChange, which the ring walk fails (see TestNoClaimKeepsWalkListsOnAdd)")

// propertyTopology makes up to maxNodes nodes over up to 4 DCs, 1-3 racks
// per DC, weights 1-8.
func propertyTopology(r *rand.Rand, maxNodes int) []Node {
	dcs := 1 + r.IntN(4)
	var nodes []Node
	for d := 0; d < dcs; d++ {
		racks := 1 + r.IntN(3)
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

// randomReplication gives each DC a factor from 0 to min(3, its size in
// both rings), at least one above 0.
func randomReplication(r *rand.Rand, a, b *Ring) Replication {
	size := func(ring *Ring, dc string) int { return len(ring.dcNodes(dc)) }
	for {
		repl := Replication{}
		total := 0
		for _, dc := range a.dcs {
			rf := r.IntN(1 + min(3, size(a, dc), size(b, dc)))
			repl[dc] = rf
			total += rf
		}
		if total > 0 {
			return repl
		}
	}
}

// listDiff describes the first partition and DC where next's preference
// list gains more than one node over old's ("" if none).
func listDiff(old, next *Table) string {
	for p := range old.replicas {
		for _, dc := range old.dcs {
			was := map[string]bool{}
			for _, r := range old.replicas[p] {
				if r.DC == dc {
					was[r.Node] = true
				}
			}
			var gained []string
			for _, r := range next.replicas[p] {
				if r.DC == dc && !was[r.Node] {
					gained = append(gained, r.Node)
				}
			}
			if len(gained) > 1 {
				return fmt.Sprintf("partition %d in %s: %v → %v gains %s", p, dc, old.replicas[p], next.replicas[p], strings.Join(gained, ", "))
			}
		}
	}
	return ""
}

func tables(t *testing.T, repl Replication, rings ...*Ring) []*Table {
	t.Helper()
	var out []*Table
	for _, r := range rings {
		tab, err := r.Table(repl)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, tab)
	}
	return out
}

// TestOneReplicaMovesPerChange is the property a membership change should
// have: adding or removing a node changes at most one replica of each
// preference list in each DC, so a change copies each partition to at most
// one new node per DC and never shuffles replicas between nodes that stay.
//
// The ring walk does not have it, and no claim can give it to the walk (see
// TestNoClaimKeepsWalkListsOnAdd); it runs with -placement.onemove to show
// the first counterexample.
func TestOneReplicaMovesPerChange(t *testing.T) {
	if !*oneMove {
		t.Skip("the ring walk lacks this property (TestNoClaimKeepsWalkListsOnAdd); run with -placement.onemove")
	}
	iterations := 300
	if testing.Short() {
		iterations = 60
	}
	for seed := uint64(1); seed <= uint64(iterations); seed++ {
		r := rand.New(rand.NewPCG(seed, 99))
		q := []int{64, 256, 1024}[r.IntN(3)]
		nodes := propertyTopology(r, 30)
		ring, err := New(q, nodes)
		if err != nil {
			t.Fatal(err)
		}
		what := fmt.Sprintf("seed %d (q=%d, %d nodes)", seed, q, len(nodes))

		// Add a node to a random DC, on a random (maybe new) rack.
		dc := nodes[r.IntN(len(nodes))].DC
		added := Node{ID: "new", DC: dc, Rack: fmt.Sprintf("r%d", r.IntN(4)), Weight: 1 + r.IntN(8)}
		grown, err := ring.AddNode(added)
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			repl := randomReplication(r, ring, grown)
			tabs := tables(t, repl, ring, grown)
			if d := listDiff(tabs[0], tabs[1]); d != "" {
				t.Fatalf("%s: adding %+v with %v: %s", what, added, repl, d)
			}
		}

		// Remove a random node (not the last of its DC, so the
		// replication stays valid).
		victim := nodes[r.IntN(len(nodes))]
		if len(ring.dcNodes(victim.DC)) > 1 {
			shrunk, err := ring.RemoveNode(victim.ID)
			if err != nil {
				t.Fatal(err)
			}
			for range 3 {
				repl := randomReplication(r, ring, shrunk)
				tabs := tables(t, repl, ring, shrunk)
				if d := listDiff(tabs[0], tabs[1]); d != "" {
					t.Fatalf("%s: removing %s with %v: %s", what, victim.ID, repl, d)
				}
			}
		}
	}
}

// TestReplaceSwapsOnlyTheNode: replacing a node by one on the same rack
// swaps it for the new one in every preference list and fallback list that
// had it, in place, and changes nothing else.
func TestReplaceSwapsOnlyTheNode(t *testing.T) {
	iterations := 100
	if testing.Short() {
		iterations = 25
	}
	for seed := uint64(1); seed <= uint64(iterations); seed++ {
		r := rand.New(rand.NewPCG(seed, 98))
		q := []int{64, 256, 1024}[r.IntN(3)]
		nodes := propertyTopology(r, 30)
		ring, err := New(q, nodes)
		if err != nil {
			t.Fatal(err)
		}
		victim := nodes[r.IntN(len(nodes))]
		n := Node{ID: "replacement", DC: victim.DC, Rack: victim.Rack, Weight: 1 + r.IntN(8)}
		replaced, err := ring.Replace(victim.ID, n)
		if err != nil {
			t.Fatal(err)
		}
		swap := func(list []Replica) []Replica {
			out := slices.Clone(list)
			for i := range out {
				if out[i].Node == victim.ID {
					out[i].Node = n.ID
				}
			}
			return out
		}
		for range 3 {
			repl := randomReplication(r, ring, replaced)
			tabs := tables(t, repl, ring, replaced)
			for p := 0; p < q; p++ {
				if got, want := tabs[1].Replicas(p), swap(tabs[0].Replicas(p)); !slices.Equal(got, want) {
					t.Fatalf("seed %d: replacing %s with %v: partition %d is %v, want %v", seed, victim.ID, repl, p, got, want)
				}
				if p%16 == 0 {
					if got, want := tabs[1].Fallbacks(p, victim.DC), swap(tabs[0].Fallbacks(p, victim.DC)); !slices.Equal(got, want) {
						t.Fatalf("seed %d: replacing %s: fallbacks of %d are %v, want %v", seed, victim.ID, p, got, want)
					}
				}
			}
		}
	}
}

// TestNoClaimKeepsWalkListsOnAdd is why TestOneReplicaMovesPerChange is
// skipped: the smallest counterexample, and a proof by exhaustion that no
// claim can fix it while preference lists are ring walks.
//
// One DC, one rack (so rack awareness plays no part), n0..n2 of weight 1,
// q=16, RF 2; x of weight 4 joins and must own 9 of the 16 partitions.
// Under the walk, the list of a partition x takes is {x, first non-x owner
// after it}. Any three consecutive partitions have three owners, so if x
// took two in a row, the list of the first would gain x and a node from
// further on: x may own at most every other partition, not 9 of 16. Every one of the 2000 claims that meets the exact targets
// and moves partitions only to x (what the balance and minimal-movement
// tests demand) changes some list by two nodes. AddNode's own claim does so
// from q=16 to q=1024.
func TestNoClaimKeepsWalkListsOnAdd(t *testing.T) {
	nodes := []Node{{ID: "n0", DC: "dc", Rack: "r", Weight: 1}, {ID: "n1", DC: "dc", Rack: "r", Weight: 1}, {ID: "n2", DC: "dc", Rack: "r", Weight: 1}}
	x := Node{ID: "x", DC: "dc", Rack: "r", Weight: 4}
	repl := Replication{"dc": 2}
	for _, q := range []int{16, 64, 1024} {
		ring, _ := New(q, nodes)
		grown, err := ring.AddNode(x)
		if err != nil {
			t.Fatal(err)
		}
		tabs := tables(t, repl, ring, grown)
		if d := listDiff(tabs[0], tabs[1]); d == "" {
			t.Errorf("q=%d: AddNode kept every list within one node: the walk or the claim changed, revisit TestOneReplicaMovesPerChange", q)
		} else {
			t.Logf("q=%d: %s", q, d)
		}
	}

	const q = 16
	ring, _ := New(q, nodes)
	grown, _ := ring.AddNode(x)
	members := grown.dcNodes("dc")
	targets := grown.targets(members)
	want := map[string]int{}
	for k, i := range members {
		want[grown.nodes[i].ID] = targets[k]
	}
	old := tables(t, repl, ring)[0]
	claims, kept := 0, 0
	for taken := uint32(0); taken < 1<<q; taken++ {
		if bits.OnesCount32(taken) != want["x"] {
			continue
		}
		s := grown.State()
		count := map[string]int{}
		for p := range s.Owners["dc"] {
			if taken&(1<<p) != 0 {
				s.Owners["dc"][p] = "x"
			} else {
				s.Owners["dc"][p] = ring.Owner("dc", p)
			}
			count[s.Owners["dc"][p]]++
		}
		exact := true
		for id, c := range want {
			exact = exact && count[id] == c
		}
		if !exact {
			continue
		}
		claims++
		claim, err := FromState(s)
		if err != nil {
			t.Fatal(err)
		}
		if listDiff(old, tables(t, repl, claim)[0]) == "" {
			kept++
		}
	}
	if claims != 2000 || kept != 0 {
		t.Errorf("%d of %d exact minimal-movement claims keep every list within one node; want 0 of 2000", kept, claims)
	}
}
