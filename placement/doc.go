// Package placement decides where keys live. It is pure and deterministic:
// every node computes the same ring from the same inputs.
//
// The ring is cut into Q equal partitions (a power of two, default 1024); a
// key's partition is the top log2(Q) bits of xxhash64(key). Ownership is per
// datacenter: in each DC every partition is owned by exactly one node of that
// DC, and nodes own partitions in proportion to their capacity weight within
// the DC (targets by largest-remainder rounding, so shares are exact to one
// partition).
//
// Initial claim (New): the DC's nodes are ordered so that racks alternate,
// then partitions 0..Q-1 are dealt by smooth weighted round-robin (nginx's
// algorithm) with each node's target as its weight. That hits the targets
// exactly and spreads each node evenly around the ring, so consecutive
// partitions belong to different nodes and, where possible, racks.
//
// Changes move the minimum: AddNode gives the new node only partitions of
// nodes now above their target; RemoveNode hands only the removed node's
// partitions to nodes below target; WithWeight moves only from nodes above
// to nodes below target. No partition ever moves between two nodes that
// both stay.
//
// A keyspace's preference list for partition p (Table.Replicas) is, for each
// DC with replication factor rf > 0 (DCs in name order), the first rf
// distinct nodes met walking the DC's ring clockwise from p, skipping nodes
// on racks already used while the DC still has an unused rack. Tables are
// precomputed, so a lookup is a slice index.
//
// Minimal movement holds for ownership, not for preference lists: when a
// node joins or leaves, a list can lose two nodes and gain two (the new
// node and one met further along the walk), so some data also moves
// between nodes that stay. No claim with exact targets avoids it while
// lists are walks (TestNoClaimKeepsWalkListsOnAdd). Replace changes lists
// only by the swap, when the new node is on the old one's rack.
//
// During a change a keyspace uses a transition table (Transition): each
// partition is served by the old lists until it is done, with the next
// lists' new nodes pending (they receive writes). RingState is a ring as
// plain data, for the metadata log.
package placement
