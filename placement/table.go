package placement

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Replication is a keyspace's replication factor per DC.
type Replication map[string]int

// Replica is one node of a preference list or a fallback.
type Replica struct {
	Node string
	DC   string
	Rack string
}

// Table is a keyspace's placement on a ring: the preference list of every
// partition, precomputed. It is immutable.
//
// A transition table (see Transition) also has pending replicas: during a
// membership or replication change each partition is served by either the
// old or the next placement.
type Table struct {
	ring     *Ring
	repl     Replication
	dcs      []string // DCs with rf > 0, sorted
	n        int
	replicas [][]Replica
	// Set only in a transition table:
	pending [][]Replica // replicas that receive writes but do not serve reads yet
	serving []*Table    // the old or next table, whichever serves p's reads
}

// Table computes a keyspace's placement. It fails (ErrUnknownDC,
// ErrBadReplication) for a DC the ring does not have, a negative factor, a
// total of zero, or a factor above the DC's node count.
func (r *Ring) Table(repl Replication) (*Table, error) {
	t := &Table{ring: r, repl: Replication{}}
	perDC := map[string]int{}
	racks := map[string]map[string]bool{}
	for _, nd := range r.nodes {
		perDC[nd.DC]++
		if racks[nd.DC] == nil {
			racks[nd.DC] = map[string]bool{}
		}
		racks[nd.DC][nd.Rack] = true
	}
	for dc, rf := range repl {
		if rf < 0 {
			return nil, fmt.Errorf("%w: %s=%d is negative", ErrBadReplication, dc, rf)
		}
		if rf == 0 {
			continue
		}
		have, ok := perDC[dc]
		if !ok {
			return nil, fmt.Errorf("%w: %q (the cluster has %s)", ErrUnknownDC, dc, strings.Join(r.dcs, ", "))
		}
		if rf > have {
			return nil, fmt.Errorf("%w: %s=%d but datacenter %s has only %d node(s)", ErrBadReplication, dc, rf, dc, have)
		}
		t.repl[dc] = rf
		t.dcs = append(t.dcs, dc)
		t.n += rf
	}
	if t.n == 0 {
		return nil, fmt.Errorf("%w: replication is empty: give at least one DC a factor above 0", ErrBadReplication)
	}
	sort.Strings(t.dcs)
	t.replicas = make([][]Replica, r.q)
	for p := 0; p < r.q; p++ {
		list := make([]Replica, 0, t.n)
		for _, dc := range t.dcs {
			list = r.walk(list, dc, p, t.repl[dc], len(racks[dc]), nil)
		}
		t.replicas[p] = list
	}
	return t, nil
}

// walk appends to list up to want distinct nodes of dc met clockwise from
// p, skipping nodes in exclude, and skipping nodes on racks already used
// while unused racks remain (numRacks is the DC's rack count).
func (r *Ring) walk(list []Replica, dc string, p, want, numRacks int, exclude map[string]bool) []Replica {
	owners := r.owner[dc]
	start := len(list)
	seen := map[int32]bool{}
	usedRacks := map[string]bool{}
	var deferred []int32
	for i := 0; i < r.q && len(list)-start < want; i++ {
		o := owners[(p+i)%r.q]
		if seen[o] {
			continue
		}
		seen[o] = true
		nd := r.nodes[o]
		if exclude[nd.ID] {
			continue
		}
		if usedRacks[nd.Rack] && len(usedRacks) < numRacks {
			deferred = append(deferred, o)
			continue
		}
		usedRacks[nd.Rack] = true
		list = append(list, Replica{Node: nd.ID, DC: nd.DC, Rack: nd.Rack})
	}
	if len(list)-start < want && numRacks > len(usedRacks) {
		list = r.appendUnmet(list, dc, want-(len(list)-start), seen, usedRacks, exclude)
	}
	for _, o := range deferred {
		if len(list)-start >= want {
			break
		}
		nd := r.nodes[o]
		list = append(list, Replica{Node: nd.ID, DC: nd.DC, Rack: nd.Rack})
	}
	if len(list)-start < want {
		list = r.appendUnmet(list, dc, want-(len(list)-start), seen, nil, exclude)
	}
	return list
}

// appendUnmet appends up to want nodes of dc the walk never met because they
// own no partition (a small Q or a tiny weight), in ID order, skipping
// nodes in exclude and, if usedRacks is not nil, nodes on used racks.
func (r *Ring) appendUnmet(list []Replica, dc string, want int, seen map[int32]bool, usedRacks, exclude map[string]bool) []Replica {
	for i, nd := range r.nodes {
		if want == 0 {
			break
		}
		if nd.DC != dc || seen[int32(i)] || exclude[nd.ID] || (usedRacks != nil && usedRacks[nd.Rack]) {
			continue
		}
		seen[int32(i)] = true
		if usedRacks != nil {
			usedRacks[nd.Rack] = true
		}
		list = append(list, Replica{Node: nd.ID, DC: nd.DC, Rack: nd.Rack})
		want--
	}
	return list
}

// N is the keyspace's total replication factor (in a transition table,
// next's: partitions still served by the old table may have old's).
func (t *Table) N() int { return t.n }

// RF is the replication factor in dc (0 if none; in a transition table,
// next's).
func (t *Table) RF(dc string) int { return t.repl[dc] }

// Replication returns a copy of the replication map (DCs with rf > 0; in a
// transition table, next's).
func (t *Table) Replication() Replication {
	out := Replication{}
	for k, v := range t.repl {
		out[k] = v
	}
	return out
}

// ReplicationAt is the replication of the table serving p's reads: in a
// transition table old's or next's, whichever p's list is (a replication
// change switches partition by partition); otherwise the keyspace's. A
// request's N and quorums must be those of the list it asks, or R + W > N
// no longer holds. The map is shared: do not modify it.
func (t *Table) ReplicationAt(p int) Replication {
	if t.serving != nil {
		return t.serving[p].repl
	}
	return t.repl
}

// Replicas is p's preference list: per DC in name order, that DC's replicas
// in walk order. In a transition table it is the list of the table serving
// p (old's until p is done, then next's). The slice is shared: callers must
// not modify it.
func (t *Table) Replicas(p int) []Replica { return t.replicas[p] }

// Pending returns the replicas of p that receive writes but do not yet
// serve reads: in a transition table, for a partition not done yet, the
// replicas of next's list that are not in old's. It is nil outside a
// transition. The slice is shared: callers must not modify it.
func (t *Table) Pending(p int) []Replica {
	if t.pending == nil {
		return nil
	}
	return t.pending[p]
}

// FallbacksPerDC is how many fallbacks Fallbacks lists from each DC.
const FallbacksPerDC = 3

// Fallbacks lists nodes that are not replicas of p, for sloppy quorum: up to
// FallbacksPerDC from dc first (continuing dc's ring walk), then up to as
// many from each other DC (in name order). It is computed on demand: it is
// needed only when a replica is down. In a transition table they come from
// the table serving p and exclude p's pending replicas too (they already
// receive every write).
func (t *Table) Fallbacks(p int, dc string) []Replica {
	exclude := map[string]bool{}
	for _, r := range t.replicas[p] {
		exclude[r.Node] = true
	}
	ring := t.ring
	if t.serving != nil {
		ring = t.serving[p].ring
		for _, r := range t.pending[p] {
			exclude[r.Node] = true
		}
	}
	var out []Replica
	if _, ok := ring.owner[dc]; ok {
		out = ring.walk(out, dc, p, FallbacksPerDC, 0, exclude)
	}
	for _, other := range ring.dcs {
		if other != dc {
			out = ring.walk(out, other, p, FallbacksPerDC, 0, exclude)
		}
	}
	return out
}

// Ring is the ring the table was computed on (in a transition table,
// next's).
func (t *Table) Ring() *Ring { return t.ring }

// Transition returns the table used while partitions move from old to next
// (which may be on different rings and have different replication, but
// must have the same partition count). For a partition where done(p) is
// true it has next's preference list and no pending replicas; otherwise
// old's list, with the replicas of next's list that are not in old's as
// Pending. done is called once per partition, here: the result is
// immutable. N, RF, Replication and Ring are next's; Fallbacks(p, dc) come
// from whichever table serves p's reads. old and next must not be
// transition tables themselves.
func Transition(old, next *Table, done func(p int) bool) (*Table, error) {
	if old == nil || next == nil {
		return nil, errors.New("placement: transition between nil tables")
	}
	if old.pending != nil || next.pending != nil {
		return nil, errors.New("placement: a transition cannot start from or lead to a transition table")
	}
	q := old.ring.q
	if next.ring.q != q {
		return nil, fmt.Errorf("%w: the old table has %d partitions, the next %d", ErrBadPartitions, q, next.ring.q)
	}
	t := &Table{
		ring:     next.ring,
		repl:     next.repl,
		dcs:      next.dcs,
		n:        next.n,
		replicas: make([][]Replica, q),
		pending:  make([][]Replica, q),
		serving:  make([]*Table, q),
	}
	for p := 0; p < q; p++ {
		if done(p) {
			t.replicas[p], t.serving[p] = next.replicas[p], next
			continue
		}
		t.replicas[p], t.serving[p] = old.replicas[p], old
		for _, r := range next.replicas[p] {
			if !hasNode(old.replicas[p], r.Node) {
				t.pending[p] = append(t.pending[p], r)
			}
		}
	}
	return t, nil
}

// Changed lists the partitions whose preference list differs between two
// tables (as sets of node IDs), ascending. Tables with different partition
// counts differ everywhere: every partition of the larger is listed.
func Changed(old, next *Table) []int {
	var out []int
	if old.ring.q != next.ring.q {
		for p := 0; p < max(old.ring.q, next.ring.q); p++ {
			out = append(out, p)
		}
		return out
	}
	for p := 0; p < old.ring.q; p++ {
		a, b := old.replicas[p], next.replicas[p]
		same := len(a) == len(b)
		for i := 0; same && i < len(b); i++ {
			same = hasNode(a, b[i].Node)
		}
		if !same {
			out = append(out, p)
		}
	}
	return out
}

func hasNode(list []Replica, id string) bool {
	for _, r := range list {
		if r.Node == id {
			return true
		}
	}
	return false
}
