package placement

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// dcOwners returns a DC's owners, its members and their rack numbers.
func dcOwners(r *Ring, dc string) ([]int32, []int, []int32, int) {
	members := r.dcNodes(dc)
	rackOf, numRacks := dcRacks(r.nodes, len(r.nodes), members)
	return r.owner[dc], members, rackOf, numRacks
}

// TestWindowsMatchTheWalk: the windows spacing relies on are the walk's.
// For every partition and rf, the DC's preference list is the nodes the
// measured walk accepts, all met within the window.
func TestWindowsMatchTheWalk(t *testing.T) {
	for seed := uint64(1); seed <= 40; seed++ {
		r := rand.New(rand.NewPCG(seed, 5))
		q := []int{64, 256, 1024}[r.IntN(3)]
		ring, err := New(q, randomTopology(r, 40))
		if err != nil {
			t.Fatal(err)
		}
		for _, dc := range ring.dcs {
			owners, members, rackOf, numRacks := dcOwners(ring, dc)
			rmax := min(maxSpreadRF, len(members))
			w := measureWindows(owners, rackOf, numRacks, rmax)
			if w == nil {
				continue
			}
			for rf := 1; rf <= rmax; rf++ {
				tab, err := ring.Table(Replication{dc: rf})
				if err != nil {
					t.Fatal(err)
				}
				for p := 0; p < q; p++ {
					l := w.len(rf, p)
					if l >= q {
						continue // the walk ran out: appendUnmet and deferred nodes
					}
					acc, _, _ := acceptedNodes(nil, nil, nil, owners, rackOf, numRacks, p, rf)
					var got []string
					for _, o := range acc {
						got = append(got, ring.nodes[o].ID)
					}
					var want []string
					for _, rep := range tab.Replicas(p) {
						want = append(want, rep.Node)
					}
					if !slices.Equal(got, want) {
						t.Fatalf("seed %d %s rf %d partition %d: accepted %v, list %v", seed, dc, rf, p, got, want)
					}
					var met []string
					for e := 0; e < l; e++ {
						met = append(met, ring.nodes[owners[(p+e)%q]].ID)
					}
					for _, id := range want {
						if !slices.Contains(met, id) {
							t.Fatalf("seed %d %s rf %d partition %d: %s is not met in the window %v", seed, dc, rf, p, id, met)
						}
					}
					if !slices.Contains(want, met[l-1]) {
						t.Fatalf("seed %d %s rf %d partition %d: the window %v reads past the list %v", seed, dc, rf, p, met, want)
					}
				}
			}
		}
	}
}

// TestSpacedPicksAreSpaced: spacedPicks takes exactly each node's quota and
// never two partitions in one window.
func TestSpacedPicksAreSpaced(t *testing.T) {
	found := 0
	for seed := uint64(1); seed <= 40; seed++ {
		r := rand.New(rand.NewPCG(seed, 6))
		q := []int{256, 1024}[r.IntN(2)]
		var nodes []Node
		for i := range 3 + r.IntN(12) {
			nodes = append(nodes, Node{ID: fmt.Sprintf("n%d", i), DC: "dc", Rack: "r", Weight: 1 + r.IntN(2)})
		}
		ring, _ := New(q, nodes)
		owners, members, rackOf, numRacks := dcOwners(ring, "dc")
		rf := min(3, len(members))
		w := measureWindows(owners, rackOf, numRacks, rf)
		quota := make([]int, len(ring.nodes))
		need := 0
		for _, i := range members {
			quota[i] = len(ring.Owned(ring.nodes[i].ID)) / (len(members) + 1)
			need += quota[i]
		}
		picks, ok := spacedPicks(owners, quota, need, w, rf, reach(w, rf), r.IntN(q))
		if !ok {
			continue
		}
		found++
		took := make([]int, len(ring.nodes))
		for _, p := range picks {
			took[owners[p]]++
		}
		if !slices.Equal(took, quota) {
			t.Fatalf("seed %d: took %v, quota %v", seed, took, quota)
		}
		for p := 0; p < q; p++ {
			in := 0
			for _, s := range picks {
				if (s-p+q)%q < w.len(rf, p) {
					in++
				}
			}
			if in > 1 {
				t.Fatalf("seed %d: the window of %d (length %d) holds %d picks", seed, p, w.len(rf, p), in)
			}
		}
	}
	if found < 30 {
		t.Errorf("only %d of 40 rings could be spaced", found)
	}
}
