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
// owner in and one old node out (see doc.go). AddNode and WithWeight choose
// S that way (spacedPicks). RemoveNode cannot choose S (it is the removed
// node's partitions), so fillOrphans gives the orphans of one window to at
// most one node outside that window's list.

// maxSpreadRF is the largest replication factor per DC that AddNode and
// WithWeight try to space their moves for; they try smaller ones, down to
// 2, when a DC is too small or too unbalanced for it.
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

// orphanGuard is what fillOrphans needs to keep every list within one new
// node when the orphans are a removed node's partitions: the DC's owners
// before the removal, in the new ring's indexes with the removed node as
// index gone, and their windows.
type orphanGuard struct {
	old      []int32
	gone     int32
	rackOf   []int32
	numRacks int
	w        *windows
	back     []int32 // back[t]: farthest distance back of a window of w.rmax holding t
	before   []int32 // before[t]: how many of old[:t] are gone
	// Scratch space for constraints: lists live in arena until the next
	// call.
	arena, seen, racks []int32
}

// orphansIn counts the removed node's partitions among the l from p.
func (g *orphanGuard) orphansIn(p, l int) int {
	q := len(g.old)
	if p+l <= q {
		return int(g.before[p+l] - g.before[p])
	}
	return int(g.before[q]-g.before[p]) + int(g.before[p+l-q])
}

// removalGuard returns the guard for filling out, whose -1 entries were
// the removed node's (on rack goneRack); nil if the windows are too long to
// measure or the DC too small for lists of two.
func removalGuard(nodes []Node, out []int32, members []int, goneRack string) *orphanGuard {
	rmax := min(maxSpreadRF, len(members))
	if rmax < 2 {
		return nil
	}
	g := &orphanGuard{old: make([]int32, len(out)), gone: int32(len(nodes))}
	g.rackOf, g.numRacks = dcRacks(nodes, len(nodes)+1, members)
	rk := int32(g.numRacks)
	for _, i := range members {
		if nodes[i].Rack == goneRack {
			rk = g.rackOf[i]
		}
	}
	if rk == int32(g.numRacks) {
		g.numRacks++
	}
	g.rackOf[g.gone] = rk
	for p, i := range out {
		g.old[p] = i
		if i < 0 {
			g.old[p] = g.gone
		}
	}
	if g.w = measureWindows(g.old, g.rackOf, g.numRacks, rmax); g.w == nil {
		return nil
	}
	q := len(out)
	// Lists whose walk reads the whole ring change with any partition:
	// guard only the rf below them.
	for full := true; full && rmax >= 2; {
		full = false
		for p := 0; p < q && !full; p++ {
			full = g.w.len(rmax, p) >= q
		}
		if full {
			rmax--
		}
	}
	if rmax < 2 {
		return nil
	}
	g.w.rmax = rmax
	g.before = make([]int32, q+1)
	for p, i := range g.old {
		g.before[p+1] = g.before[p]
		if i == g.gone {
			g.before[p+1]++
		}
	}
	g.back = make([]int32, q)
	for p := 0; p < q; p++ {
		for d := 0; d < g.w.len(rmax, p); d++ {
			if t := (p + d) % q; int32(d) > g.back[t] {
				g.back[t] = int32(d)
			}
		}
	}
	return g
}

// constraint says: the orphan may go to z or to a node of list (z is -1
// when the list is all it may go to without constraining later orphans).
type constraint struct {
	z    int32
	list []int32
}

// constraints returns what the orphan s may go to, given the orphans
// already filled in out: for every old window holding s and an orphan
// already given to a node z outside that window's old list, s must go to z
// or to a node of the list, so the new list gains z alone. soft lists the
// old lists of the windows holding s and another orphan: going to a node in
// all of them constrains no later orphan. pending counts the orphans not
// filled yet that share a window with s.
func (g *orphanGuard) constraints(s int, out []int32) (hard, soft []constraint, pending int) {
	q := len(out)
	var counted []int
	g.arena = g.arena[:0]
	for d := 0; d <= int(g.back[s]); d++ {
		p := (s - d + q) % q
		for r := 2; r <= g.w.rmax; r++ {
			l := g.w.len(r, p)
			if l <= d || g.orphansIn(p, l) < 2 {
				continue
			}
			var list []int32
			for e := 0; e < l; e++ {
				t := (p + e) % q
				if t == s || g.old[t] != g.gone {
					continue
				}
				if list == nil {
					from := len(g.arena)
					g.arena, g.seen, g.racks = acceptedNodes(g.arena, g.seen, g.racks, g.old, g.rackOf, g.numRacks, p, r)
					list = g.arena[from:len(g.arena):len(g.arena)]
					soft = append(soft, constraint{z: -1, list: list})
				}
				if out[t] < 0 && !slices.Contains(counted, t) {
					counted = append(counted, t)
				}
				if out[t] >= 0 && !slices.Contains(list, out[t]) {
					hard = append(hard, constraint{z: out[t], list: list})
				}
			}
		}
	}
	return hard, soft, len(counted)
}

// allows reports whether c meets every constraint of cs.
func allows(cs []constraint, c int32) bool {
	for _, k := range cs {
		if c != k.z && !slices.Contains(k.list, c) {
			return false
		}
	}
	return true
}

// fillOrphans gives every partition marked -1 in out to a member below its
// target, so that every member ends exactly on target.
//
// Orphans that share a window with another orphan (or lie near one) come
// first, in ring order; with a guard their choice respects the guard's
// constraints when some member below target can. Among the members allowed
// it prefers, in order, one that adds no constraint on later orphans, one
// with room for every orphan not filled yet that shares a window with this
// one, one that owns no partition near the orphan (keeping windows short
// for later changes), the largest deficit (target - count), a rack
// different from the orphan's ring neighbours, and the first in index
// order. The other, isolated orphans follow, in ring order, with the same
// preferences; one that only a member owning a partition near it could
// take waits until the end, when an augmenting path (moving earlier
// isolated orphans to other members) may make room for it at a member that
// owns nothing near.
func (r *Ring) fillOrphans(out []int32, members []int, g *orphanGuard) {
	f := &filler{r: r, out: out, members: members, deficit: make([]int, len(r.nodes)), owned: make([][]int, len(r.nodes))}
	f.near = min(maxSpreadRF, len(members)) - 1
	targets := r.targets(members)
	for k, i := range members {
		f.deficit[i] = targets[k]
	}
	for _, i := range out {
		if i >= 0 {
			f.deficit[i]--
		}
	}
	order, isolated := orphanOrder(out, g, f.near)
	var later []int
	for _, p := range order {
		var hard, soft []constraint
		pending := 0
		if g != nil && !isolated[p] {
			hard, soft, pending = g.constraints(p, out)
		}
		best := f.choose(p, hard, soft, pending)
		if isolated[p] && f.far(p, best) < f.near {
			later = append(later, p)
			continue
		}
		f.give(p, best, isolated[p])
	}
	// A failed search changes nothing, so what it visited stays a dead
	// end for the next orphan until a search succeeds.
	visited := make([]bool, len(r.nodes))
	for _, p := range later {
		if f.augment(p, visited) {
			clear(visited)
		} else {
			f.give(p, f.choose(p, nil, nil, 0), true)
		}
	}
}

// filler is fillOrphans' state.
type filler struct {
	r       *Ring
	out     []int32
	members []int
	near    int     // how far "near" reaches
	deficit []int   // target - count, by node index
	owned   [][]int // isolated orphans given to each node, by node index
}

// far returns how far from p the nearest partition of c is, up to f.near
// (f.near: none near).
func (f *filler) far(p int, c int32) int {
	q := len(f.out)
	for d := 1; d <= f.near; d++ {
		if f.out[(p+d)%q] == c || f.out[(p-d+q)%q] == c {
			return d - 1
		}
	}
	return f.near
}

// choose returns the member to give the orphan p (see fillOrphans).
func (f *filler) choose(p int, hard, soft []constraint, pending int) int32 {
	q := len(f.out)
	nodes := f.r.nodes
	prev, nxt := f.out[(p+q-1)%q], f.out[(p+1)%q]
	best, bestFree, bestRoomy, bestFar, bestDiverse := int32(-1), false, false, 0, false
	for pass := 0; pass < 2 && best < 0; pass++ {
		for _, m := range f.members {
			c := int32(m)
			if f.deficit[c] <= 0 || pass == 0 && !allows(hard, c) {
				continue
			}
			free := allows(soft, c)
			roomy := f.deficit[c] > pending
			far := f.far(p, c)
			diverse := (prev < 0 || nodes[prev].Rack != nodes[c].Rack) && (nxt < 0 || nodes[nxt].Rack != nodes[c].Rack)
			switch {
			case best < 0:
			case free != bestFree:
				if !free {
					continue
				}
			case roomy != bestRoomy:
				if !roomy {
					continue
				}
			case far != bestFar:
				if far < bestFar {
					continue
				}
			case f.deficit[c] != f.deficit[best]:
				if f.deficit[c] < f.deficit[best] {
					continue
				}
			case diverse && !bestDiverse:
			default:
				continue
			}
			best, bestFree, bestRoomy, bestFar, bestDiverse = c, free, roomy, far, diverse
		}
	}
	return best
}

// give gives the orphan p to c, taking it from the member it had, if any.
func (f *filler) give(p int, c int32, isolated bool) {
	if was := f.out[p]; was >= 0 {
		f.deficit[was]++
		f.owned[was] = slices.DeleteFunc(f.owned[was], func(t int) bool { return t == p })
	}
	f.out[p] = c
	f.deficit[c]--
	if isolated {
		f.owned[c] = append(f.owned[c], p)
	}
}

// augment gives the isolated orphan p to a member owning nothing near it,
// moving isolated orphans along an augmenting path (Kuhn's algorithm) to
// make room if it must; false if there is no such path.
func (f *filler) augment(p int, visited []bool) bool {
	for _, m := range f.members {
		c := int32(m)
		if visited[c] || f.far(p, c) < f.near {
			continue
		}
		visited[c] = true
		if f.deficit[c] > 0 {
			f.give(p, c, true)
			return true
		}
		for _, t := range slices.Clone(f.owned[c]) {
			if f.augment(t, visited) {
				f.give(p, c, true)
				return true
			}
		}
	}
	return false
}

// orphanOrder lists the orphans (-1) of out in the order fillOrphans fills
// them: those near another orphan (within near partitions, or with a guard
// in a window with one) in ring order, then the isolated ones in ring
// order; isolated marks the latter.
func orphanOrder(out []int32, g *orphanGuard, near int) (order []int, isolated map[int]bool) {
	var orphans []int
	for p, i := range out {
		if i < 0 {
			orphans = append(orphans, p)
		}
	}
	q, n := len(out), len(orphans)
	isolated = make(map[int]bool, n)
	// linked[k]: orphans k-1 and k are near each other or share a window.
	linked := make([]bool, n)
	for k, t := range orphans {
		if n < 2 {
			break
		}
		s := orphans[(k+n-1)%n]
		d := (t - s + q) % q
		linked[k] = d <= near || g != nil && int(g.back[t]) >= d
	}
	var singles []int
	for k, p := range orphans {
		if linked[k] || linked[(k+1)%n] {
			order = append(order, p)
		} else {
			singles = append(singles, p)
			isolated[p] = true
		}
	}
	return append(order, singles...), isolated
}
