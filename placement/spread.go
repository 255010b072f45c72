package placement

import (
	"slices"
	"sort"
)

// Spacing: keeping membership changes to one new replica per list.
//
// A preference list of a DC with one rack is the first rf distinct owners
// met walking clockwise from its partition p; call the positions p..e the
// walk reads its window. When a change gives new owners to a set S of
// partitions and no window (for the largest rf guarded) holds two of them,
// every list changes by at most one node: a window without a partition of
// S reads the same owners, and a window with one reads the old owners but
// one, so the new list is the old one with at most that one partition's new
// owner in and one old node out (see doc.go). AddNode chooses S that way
// (spacedPicks).

// maxSpreadRF is the largest replication factor per DC that AddNode tries
// to space its moves for; it tries smaller ones, down to 2, when a DC is
// too small or too unbalanced for it.
const maxSpreadRF = 5

// walkBudget bounds the positions read when measuring windows, per
// partition: a DC whose walks are longer on average (a few nodes owning
// almost everything) is not spaced.
const walkBudget = 64

// windows holds, for a DC's owners, the length of every walk's window: the
// number of partitions the walk from p reads until it has accepted r nodes,
// for r up to rmax (q when it never does).
type windows struct {
	q, rmax int
	lens    []int32 // lens[(r-1)*q+p]
}

// len returns the window length of p for r replicas.
func (w *windows) len(r, p int) int { return int(w.lens[(r-1)*w.q+p]) }

// measureWindows walks from every partition of owners as Table does (racks
// given as small integers by rackOf, numRacks of them in the DC) and
// records the window lengths for up to rmax replicas. It returns nil when
// the walks read more than walkBudget positions per partition in total.
func measureWindows(owners []int32, rackOf []int32, numRacks, rmax int) *windows {
	q := len(owners)
	w := &windows{q: q, rmax: rmax, lens: make([]int32, rmax*q)}
	seen := make([]int32, len(rackOf)) // stamp: p+1 when seen in p's walk
	used := make([]int32, numRacks+1)
	budget := walkBudget * q
	for p := 0; p < q; p++ {
		stamp := int32(p + 1)
		accepted, racks := 0, 0
		i := 0
		for ; i < q && accepted < rmax; i++ {
			o := owners[(p+i)%q]
			if seen[o] == stamp {
				continue
			}
			seen[o] = stamp
			rk := rackOf[o]
			if used[rk] == stamp && racks < numRacks {
				continue
			}
			if used[rk] != stamp {
				used[rk] = stamp
				racks++
			}
			w.lens[accepted*q+p] = int32(i + 1)
			accepted++
		}
		for r := accepted; r < rmax; r++ {
			w.lens[r*q+p] = int32(q)
		}
		if budget -= i; budget < 0 {
			return nil
		}
	}
	return w
}

// acceptedNodes appends to dst the first r nodes the walk from p accepts
// (the main loop of Ring.walk; fewer when it reads the whole ring first);
// seen and racks are scratch space.
func acceptedNodes(dst, seen, racks []int32, owners []int32, rackOf []int32, numRacks, p, r int) (out, seenOut, racksOut []int32) {
	q := len(owners)
	seen, racks = seen[:0], racks[:0]
	for i, n := 0, 0; i < q && n < r; i++ {
		o := owners[(p+i)%q]
		if slices.Contains(seen, o) {
			continue
		}
		seen = append(seen, o)
		rk := rackOf[o]
		usedRack := slices.Contains(racks, rk)
		if usedRack && len(racks) < numRacks {
			continue // deferred: seen, so not accepted later either
		}
		if !usedRack {
			racks = append(racks, rk)
		}
		dst = append(dst, o)
		n++
	}
	return dst, seen, racks
}

// reach returns, for every partition t, the farthest distance back of a
// window of r replicas that holds t; nil if a walk reads the whole ring
// (its list changes with any move: nothing can be spaced for r).
func reach(w *windows, r int) []int32 {
	q := w.q
	back := make([]int32, q)
	for p := 0; p < q; p++ {
		l := w.len(r, p)
		if l >= q {
			return nil
		}
		for d := 0; d < l; d++ {
			if t := (p + d) % q; int32(d) > back[t] {
				back[t] = int32(d)
			}
		}
	}
	return back
}

// spacedPicks chooses, for every node i, quota[i] of the partitions it owns
// in owners (need in total) such that no window of r replicas holds two
// chosen partitions (back is reach(w, r)). Nodes that must give a larger
// share of their partitions than the others (rounding: a light node giving
// one of its two) choose first, evenly among their partitions. Then it goes
// round the ring from start, taking an eligible partition only while it is
// behind both the even rate need/q and the even rate of the partition's
// owner, and once more without the rates for what is left. It returns the
// chosen partitions, or false when it could not place them all. quota is
// not modified.
func spacedPicks(owners []int32, quota []int, need int, w *windows, r int, back []int32, start int) ([]int, bool) {
	q := len(owners)
	left := append([]int(nil), quota...)
	blocked := make([]bool, q)
	picks := make([]int, 0, need)
	pick := func(s int) {
		picks = append(picks, s)
		left[owners[s]]--
		for d := 0; d <= int(back[s]); d++ {
			p := (s - d + q) % q
			l := w.len(r, p)
			if l <= d {
				continue
			}
			for e := 0; e < l; e++ {
				blocked[(p+e)%q] = true
			}
		}
	}

	// Tight nodes first: quota/owned above twice need/q.
	owned := make([][]int, len(quota))
	for i := 0; i < q; i++ {
		s := (start + i) % q
		if o := owners[s]; quota[o] > 0 {
			owned[o] = append(owned[o], s)
		}
	}
	var tight []int
	for i, k := range quota {
		if k > 0 && k*q > 2*need*len(owned[i]) {
			tight = append(tight, i)
		}
	}
	sort.Slice(tight, func(a, b int) bool {
		ta, tb := tight[a], tight[b]
		ra, rb := quota[ta]*len(owned[tb]), quota[tb]*len(owned[ta])
		return ra > rb || ra == rb && ta < tb
	})
	for _, i := range tight {
		// Evenly: the k-th pick is the first free partition from the
		// k-th of quota equal arcs of i's partitions.
		ps := owned[i]
		for k := 0; k < quota[i] && left[i] > 0; k++ {
			for j := k * len(ps) / quota[i]; j < len(ps); j++ {
				if !blocked[ps[j]] {
					pick(ps[j])
					break
				}
			}
		}
	}

	passed := make([]int, len(quota)) // partitions of each node met so far
	for lap := 0; lap < 2 && len(picks) < need; lap++ {
		for i := 0; i < q && len(picks) < need; i++ {
			s := (start + i) % q
			o := owners[s]
			passed[o]++
			if blocked[s] || left[o] <= 0 {
				continue
			}
			if lap == 0 && (len(picks)*q >= (i+1)*need || (quota[o]-left[o])*len(owned[o]) >= passed[o]*quota[o]) {
				continue // ahead of an even spread, overall or of o's partitions
			}
			pick(s)
		}
	}
	return picks, len(picks) == need
}

// dcRacks numbers the racks of the given node indexes (0, 1, ...) and
// returns each node's rack number (indexed like nodes, size n) and the
// number of racks among them.
func dcRacks(nodes []Node, n int, idx []int) ([]int32, int) {
	rackOf := make([]int32, n)
	ids := map[string]int32{}
	for _, i := range idx {
		rk, ok := ids[nodes[i].Rack]
		if !ok {
			rk = int32(len(ids))
			ids[nodes[i].Rack] = rk
		}
		rackOf[i] = rk
	}
	return rackOf, len(ids)
}

// spaced chooses quota[i] partitions of each node i among owners (need in
// total) such that no window of the largest possible rf, from
// min(maxSpreadRF, len(members)) down to 2, holds two of them; members are
// the DC's nodes that owners is over. It returns nil when even rf 2 cannot
// be spaced.
func spaced(nodes []Node, owners []int32, members []int, quota []int, need, start int) []int {
	rmax := min(maxSpreadRF, len(members))
	if rmax < 2 || need <= 0 {
		return nil
	}
	rackOf, numRacks := dcRacks(nodes, len(nodes), members)
	w := measureWindows(owners, rackOf, numRacks, rmax)
	if w == nil {
		return nil
	}
	for r := rmax; r >= 2; r-- {
		back := reach(w, r)
		for k := 0; k < spreadStarts && back != nil; k++ {
			if picks, ok := spacedPicks(owners, quota, need, w, r, back, start+k*len(owners)/spreadStarts); ok {
				return picks
			}
		}
	}
	return nil
}

// spreadStarts is how many starting points round the ring spaced tries
// for each rf before it gives up on that rf.
const spreadStarts = 8
