package placement

import (
	"errors"
	"fmt"
	"math/bits"
	"sort"

	"github.com/cespare/xxhash/v2"
)

// DefaultPartitions is Q for a new cluster.
const DefaultPartitions = 1024

// MaxWeight is the largest capacity weight a node may have.
const MaxWeight = 1000

// Errors callers can test for.
var (
	ErrUnknownDC       = errors.New("placement: unknown datacenter")
	ErrBadReplication  = errors.New("placement: bad replication")
	ErrBadNode         = errors.New("placement: bad node")
	ErrBadPartitions   = errors.New("placement: bad partition count")
	ErrUnknownNode     = errors.New("placement: unknown node")
	ErrDuplicateNodeID = errors.New("placement: duplicate node ID")
)

// Node is a member as placement sees it.
type Node struct {
	ID     string `json:"id"`
	DC     string `json:"dc"`
	Rack   string `json:"rack"`
	Weight int    `json:"weight"`
}

// Move is one partition changing owner in one DC.
type Move struct {
	DC        string
	Partition int
	From, To  string
}

// Ring is the ownership of every partition in every DC. It is immutable.
type Ring struct {
	q     int
	shift uint
	nodes []Node         // sorted by DC, then ID
	index map[string]int // ID → position in nodes
	dcs   []string
	// owner[dc][p] is the index in nodes of p's owner in dc.
	owner map[string][]int32
}

// New claims partitions for a fresh cluster. The result depends only on q
// and the set of nodes, not their order.
func New(q int, nodes []Node) (*Ring, error) {
	r, err := newRing(q, nodes)
	if err != nil {
		return nil, err
	}
	r.owner = make(map[string][]int32, len(r.dcs))
	for _, dc := range r.dcs {
		r.owner[dc] = r.initialClaim(dc)
	}
	return r, nil
}

// newRing checks q and the nodes and returns a ring without owners.
func newRing(q int, nodes []Node) (*Ring, error) {
	if q < 1 || q > 1<<16 || q&(q-1) != 0 {
		return nil, fmt.Errorf("%w: %d is not a power of two from 1 to 65536", ErrBadPartitions, q)
	}
	if len(nodes) == 0 {
		return nil, fmt.Errorf("%w: a ring needs at least one node", ErrBadNode)
	}
	r := &Ring{q: q, shift: uint(64 - bits.TrailingZeros(uint(q)))}
	if err := r.setNodes(nodes); err != nil {
		return nil, err
	}
	return r, nil
}

func validNode(n Node) error {
	switch {
	case n.ID == "":
		return fmt.Errorf("%w: empty ID", ErrBadNode)
	case n.DC == "":
		return fmt.Errorf("%w: node %q has no datacenter", ErrBadNode, n.ID)
	case n.Weight < 1 || n.Weight > MaxWeight:
		return fmt.Errorf("%w: node %q weight %d is outside 1..%d", ErrBadNode, n.ID, n.Weight, MaxWeight)
	}
	return nil
}

// setNodes validates, sorts and indexes nodes.
func (r *Ring) setNodes(nodes []Node) error {
	r.nodes = append([]Node(nil), nodes...)
	sort.Slice(r.nodes, func(i, j int) bool {
		if r.nodes[i].DC != r.nodes[j].DC {
			return r.nodes[i].DC < r.nodes[j].DC
		}
		return r.nodes[i].ID < r.nodes[j].ID
	})
	r.index = make(map[string]int, len(r.nodes))
	r.dcs = r.dcs[:0]
	for i, n := range r.nodes {
		if err := validNode(n); err != nil {
			return err
		}
		if _, dup := r.index[n.ID]; dup {
			return fmt.Errorf("%w: %q", ErrDuplicateNodeID, n.ID)
		}
		r.index[n.ID] = i
		if len(r.dcs) == 0 || r.dcs[len(r.dcs)-1] != n.DC {
			r.dcs = append(r.dcs, n.DC)
		}
	}
	return nil
}

// dcNodes returns the indexes of a DC's nodes, in ID order.
func (r *Ring) dcNodes(dc string) []int {
	var out []int
	for i, n := range r.nodes {
		if n.DC == dc {
			out = append(out, i)
		}
	}
	return out
}

// targets returns each DC node's partition target (same order as members):
// q × weight / total weight, largest remainders rounded up, ties by ID.
func (r *Ring) targets(members []int) []int {
	total := 0
	for _, i := range members {
		total += r.nodes[i].Weight
	}
	out := make([]int, len(members))
	rem := make([]int, len(members))
	sum := 0
	for k, i := range members {
		prod := r.q * r.nodes[i].Weight
		out[k] = prod / total
		rem[k] = prod % total
		sum += out[k]
	}
	order := make([]int, len(members))
	for k := range order {
		order[k] = k
	}
	sort.SliceStable(order, func(a, b int) bool { return rem[order[a]] > rem[order[b]] })
	for k := 0; sum < r.q; k++ {
		out[order[k]]++
		sum++
	}
	return out
}

// initialClaim deals partitions by smooth weighted round-robin over the
// DC's nodes ordered to alternate racks.
func (r *Ring) initialClaim(dc string) []int32 {
	members := r.dcNodes(dc)
	targets := r.targets(members)
	// Order: round-robin over racks (sorted), nodes by ID within a rack.
	byRack := map[string][]int{}
	var racks []string
	for k, i := range members {
		rk := r.nodes[i].Rack
		if _, ok := byRack[rk]; !ok {
			racks = append(racks, rk)
		}
		byRack[rk] = append(byRack[rk], k)
	}
	sort.Strings(racks)
	var order []int // positions in members
	for len(order) < len(members) {
		for _, rk := range racks {
			if l := byRack[rk]; len(l) > 0 {
				order = append(order, l[0])
				byRack[rk] = l[1:]
			}
		}
	}
	owners := make([]int32, r.q)
	current := make([]int, len(order))
	for p := 0; p < r.q; p++ {
		best := -1
		for o, k := range order {
			current[o] += targets[k]
			if best < 0 || current[o] > current[best] {
				best = o
			}
		}
		current[best] -= r.q
		owners[p] = int32(members[order[best]])
	}
	return owners
}

// clone copies the ring for modification (owner slices are copied lazily by
// the caller for the DCs it changes).
func (r *Ring) clone() *Ring {
	c := &Ring{q: r.q, shift: r.shift, owner: make(map[string][]int32, len(r.owner))}
	for dc, o := range r.owner {
		c.owner[dc] = o
	}
	return c
}

// remap rewrites owner indexes after the node list changed.
func remap(owners []int32, from, to *Ring) []int32 {
	out := make([]int32, len(owners))
	for p, i := range owners {
		out[p] = int32(to.index[from.nodes[i].ID])
	}
	return out
}

// AddNode returns a ring with n added. Only partitions of nodes now above
// their target move, all to n; other DCs do not change. The partitions n
// takes are spaced (see spaced): no window of the old ring's walks, for the
// largest rf up to maxSpreadRF that allows it, holds two of them, so every
// preference list of such an rf gains at most one node in a one-rack DC
// (doc.go gives the domain where that is guaranteed). When not even rf 2
// can be spaced they are spread by a hash instead.
func (r *Ring) AddNode(n Node) (*Ring, error) {
	if err := validNode(n); err != nil {
		return nil, err
	}
	if _, ok := r.index[n.ID]; ok {
		return nil, fmt.Errorf("%w: %q", ErrDuplicateNodeID, n.ID)
	}
	next := r.clone()
	if err := next.setNodes(append(append([]Node(nil), r.nodes...), n)); err != nil {
		return nil, err
	}
	for dc, o := range r.owner {
		next.owner[dc] = remap(o, r, next)
	}
	newIdx := int32(next.index[n.ID])
	owners, ok := next.owner[n.DC]
	if !ok {
		// A new DC: its only node owns everything there.
		owners = make([]int32, r.q)
		for p := range owners {
			owners[p] = newIdx
		}
		next.owner[n.DC] = owners
		return next, nil
	}
	members := next.dcNodes(n.DC)
	targets := next.targets(members)
	counts := next.counts(n.DC)
	need := 0
	excess := map[int32]int{}
	for k, i := range members {
		if int32(i) == newIdx {
			need = targets[k]
			continue
		}
		excess[int32(i)] = counts[int32(i)] - targets[k]
	}
	// Donors give their excess (rounding may leave the new node a
	// partition or two short of its target, never over).
	need = min(need, sumPositive(excess))
	out := append([]int32(nil), owners...)
	quota := make([]int, len(next.nodes))
	var old []int // the DC's members before n
	for i, e := range excess {
		quota[i] = max(e, 0)
		old = append(old, int(i))
	}
	sort.Ints(old)
	start := int(spreadKey(n.ID, 0) % uint64(r.q))
	if picks := spaced(next.nodes, owners, old, quota, need, start); picks != nil {
		for _, p := range picks {
			out[p] = newIdx
		}
	} else {
		claimUnspaced(out, n.ID, newIdx, excess, need)
	}
	next.owner[n.DC] = out
	return next, nil
}

// claimUnspaced is AddNode's claim when spacing fails: donor partitions in
// an order spread around the ring (a hash of the new node and the
// partition), preferring partitions whose ring neighbours are not already
// the new node.
func claimUnspaced(out []int32, id string, newIdx int32, excess map[int32]int, need int) {
	q := len(out)
	cand := make([]int, 0, q)
	for p := range out {
		if excess[out[p]] > 0 {
			cand = append(cand, p)
		}
	}
	sort.Slice(cand, func(a, b int) bool {
		return spreadKey(id, cand[a]) < spreadKey(id, cand[b])
	})
	taken := 0
	for pass := 0; pass < 2 && taken < need; pass++ {
		for _, p := range cand {
			if taken == need {
				break
			}
			from := out[p]
			if from == newIdx || excess[from] <= 0 {
				continue
			}
			if pass == 0 && (out[(p+q-1)%q] == newIdx || out[(p+1)%q] == newIdx) {
				continue
			}
			out[p] = newIdx
			excess[from]--
			taken++
		}
	}
}

func sumPositive(m map[int32]int) int {
	s := 0
	for _, v := range m {
		if v > 0 {
			s += v
		}
	}
	return s
}

func spreadKey(id string, p int) uint64 {
	var b [4]byte
	b[0], b[1], b[2], b[3] = byte(p>>24), byte(p>>16), byte(p>>8), byte(p)
	return xxhash.Sum64(append([]byte(id), b[:]...))
}

// counts returns how many partitions each node owns in dc.
func (r *Ring) counts(dc string) map[int32]int {
	c := map[int32]int{}
	for _, i := range r.owner[dc] {
		c[i]++
	}
	return c
}

// RemoveNode returns a ring without id. Only id's partitions move, each to a
// node of the same DC below its new target; the partitions of id within
// one window of the old ring's walks go to at most one node outside that
// window's list where possible (see fillOrphans and removalGuard), so every
// list gains at most one node in a one-rack DC (doc.go gives the domain).
func (r *Ring) RemoveNode(id string) (*Ring, error) {
	idx, ok := r.index[id]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownNode, id)
	}
	if len(r.nodes) == 1 {
		return nil, fmt.Errorf("%w: cannot remove the last node", ErrBadNode)
	}
	gone := r.nodes[idx]
	var rest []Node
	for _, n := range r.nodes {
		if n.ID != id {
			rest = append(rest, n)
		}
	}
	next := r.clone()
	if err := next.setNodes(rest); err != nil {
		return nil, err
	}
	delete(next.owner, gone.DC)
	for dc, o := range r.owner {
		if dc != gone.DC {
			next.owner[dc] = remap(o, r, next)
		}
	}
	members := next.dcNodes(gone.DC)
	if len(members) == 0 {
		return next, nil // the DC is gone with its last node
	}
	old := r.owner[gone.DC]
	out := make([]int32, r.q)
	for p, i := range old {
		if int(i) == idx {
			out[p] = -1
		} else {
			out[p] = int32(next.index[r.nodes[i].ID])
		}
	}
	next.fillOrphans(out, members, removalGuard(next.nodes, out, members, gone.Rack))
	next.owner[gone.DC] = out
	return next, nil
}

// WithWeight returns a ring where id has weight w. Partitions move only from
// nodes above their new target to nodes below it; the partitions that move
// are spaced as AddNode's are (see spaced), when they can be.
func (r *Ring) WithWeight(id string, w int) (*Ring, error) {
	idx, ok := r.index[id]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownNode, id)
	}
	nodes := append([]Node(nil), r.nodes...)
	nodes[idx].Weight = w
	next := r.clone()
	if err := next.setNodes(nodes); err != nil {
		return nil, err
	}
	dc := nodes[idx].DC
	members := next.dcNodes(dc)
	targets := next.targets(members)
	counts := next.counts(dc)
	excess := map[int32]int{}
	for k, i := range members {
		excess[int32(i)] = counts[int32(i)] - targets[k]
	}
	out := append([]int32(nil), r.owner[dc]...)
	quota := make([]int, len(next.nodes))
	need := 0
	for i, e := range excess {
		if e > 0 {
			quota[i] = e
			need += e
		}
	}
	start := int(spreadKey(id, w) % uint64(r.q))
	if picks := spaced(next.nodes, out, members, quota, need, start); picks != nil {
		for _, p := range picks {
			out[p] = -1
		}
	} else {
		for p, i := range out {
			if excess[i] > 0 {
				excess[i]--
				out[p] = -1
			}
		}
	}
	next.fillOrphans(out, members, nil)
	next.owner[dc] = out
	return next, nil
}

// Replace returns a ring where n owns exactly the partitions oldID owned
// and oldID is gone; no other partition moves. n must be a valid node, not
// a member, and in oldID's DC. n keeps its own rack and weight: with the
// same rack every preference list only swaps oldID for n; with a different
// weight n owns oldID's share until a WithWeight rebalances it.
func (r *Ring) Replace(oldID string, n Node) (*Ring, error) {
	idx, ok := r.index[oldID]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownNode, oldID)
	}
	if err := validNode(n); err != nil {
		return nil, err
	}
	if _, dup := r.index[n.ID]; dup {
		return nil, fmt.Errorf("%w: %q is already a member", ErrDuplicateNodeID, n.ID)
	}
	old := r.nodes[idx]
	if n.DC != old.DC {
		return nil, fmt.Errorf("%w: %q is in datacenter %s but %q, which it replaces, is in %s", ErrBadNode, n.ID, n.DC, oldID, old.DC)
	}
	nodes := append([]Node(nil), r.nodes...)
	nodes[idx] = n
	next := r.clone()
	if err := next.setNodes(nodes); err != nil {
		return nil, err
	}
	for dc, o := range r.owner {
		out := make([]int32, len(o))
		for p, i := range o {
			id := r.nodes[i].ID
			if int(i) == idx {
				id = n.ID
			}
			out[p] = int32(next.index[id])
		}
		next.owner[dc] = out
	}
	return next, nil
}

// Partitions is Q.
func (r *Ring) Partitions() int { return r.q }

// Partition maps a key to its partition.
func (r *Ring) Partition(key []byte) int {
	if r.q == 1 {
		return 0
	}
	return int(xxhash.Sum64(key) >> r.shift)
}

// PartitionOf maps a key to its partition in a ring of q partitions (a
// power of two): the same answer as Ring.Partition, for clients that know
// only q.
func PartitionOf(key []byte, q int) int {
	if q <= 1 {
		return 0
	}
	return int(xxhash.Sum64(key) >> uint(64-bits.TrailingZeros(uint(q))))
}

// Nodes returns the members sorted by DC, then ID.
func (r *Ring) Nodes() []Node { return append([]Node(nil), r.nodes...) }

// Node looks a member up by ID.
func (r *Ring) Node(id string) (Node, bool) {
	i, ok := r.index[id]
	if !ok {
		return Node{}, false
	}
	return r.nodes[i], true
}

// DCs returns the datacenters, sorted.
func (r *Ring) DCs() []string { return append([]string(nil), r.dcs...) }

// Owner returns the ID of p's owner in dc ("" for an unknown DC).
func (r *Ring) Owner(dc string, p int) string {
	o, ok := r.owner[dc]
	if !ok || p < 0 || p >= r.q {
		return ""
	}
	return r.nodes[o[p]].ID
}

// Owned returns the partitions id owns in its DC, ascending.
func (r *Ring) Owned(id string) []int {
	idx, ok := r.index[id]
	if !ok {
		return nil
	}
	var out []int
	for p, i := range r.owner[r.nodes[idx].DC] {
		if int(i) == idx {
			out = append(out, p)
		}
	}
	return out
}

// Moves lists the ownership differences from r to next, by DC then
// partition.
func (r *Ring) Moves(next *Ring) []Move {
	var out []Move
	dcs := map[string]bool{}
	for _, dc := range r.dcs {
		dcs[dc] = true
	}
	for _, dc := range next.dcs {
		dcs[dc] = true
	}
	names := make([]string, 0, len(dcs))
	for dc := range dcs {
		names = append(names, dc)
	}
	sort.Strings(names)
	for _, dc := range names {
		for p := 0; p < r.q && p < next.q; p++ {
			from, to := r.Owner(dc, p), next.Owner(dc, p)
			if from != to {
				out = append(out, Move{DC: dc, Partition: p, From: from, To: to})
			}
		}
	}
	return out
}
