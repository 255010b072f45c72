package placement

import (
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
// partition, precomputed.
type Table struct {
	ring     *Ring
	repl     Replication
	dcs      []string // DCs with rf > 0, sorted
	n        int
	replicas [][]Replica
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
	for _, o := range deferred {
		if len(list)-start >= want {
			break
		}
		nd := r.nodes[o]
		list = append(list, Replica{Node: nd.ID, DC: nd.DC, Rack: nd.Rack})
	}
	return list
}

// N is the keyspace's total replication factor.
func (t *Table) N() int { return t.n }

// RF is the replication factor in dc (0 if none).
func (t *Table) RF(dc string) int { return t.repl[dc] }

// Replication returns a copy of the replication map (DCs with rf > 0).
func (t *Table) Replication() Replication {
	out := Replication{}
	for k, v := range t.repl {
		out[k] = v
	}
	return out
}

// Replicas is p's preference list: per DC in name order, that DC's replicas
// in walk order. The slice is shared: callers must not modify it.
func (t *Table) Replicas(p int) []Replica { return t.replicas[p] }

// FallbacksPerDC is how many fallbacks Fallbacks lists from each DC.
const FallbacksPerDC = 3

// Fallbacks lists nodes that are not replicas of p, for sloppy quorum: up to
// FallbacksPerDC from dc first (continuing dc's ring walk), then up to as
// many from each other DC (in name order). It is computed on demand: it is
// needed only when a replica is down.
func (t *Table) Fallbacks(p int, dc string) []Replica {
	exclude := map[string]bool{}
	for _, r := range t.replicas[p] {
		exclude[r.Node] = true
	}
	var out []Replica
	if _, ok := t.ring.owner[dc]; ok {
		out = t.ring.walk(out, dc, p, FallbacksPerDC, 0, exclude)
	}
	for _, other := range t.ring.dcs {
		if other != dc {
			out = t.ring.walk(out, other, p, FallbacksPerDC, 0, exclude)
		}
	}
	return out
}

// Ring is the ring the table was computed on.
func (t *Table) Ring() *Ring { return t.ring }
