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
// Changes also keep preference lists close. In a DC with one rack a list
// is the first rf distinct owners met walking clockwise from p; call the
// partitions that walk reads p's window. AddNode takes the new node's
// partitions spaced so that no window of the old ring holds two of them,
// for the largest rf up to 5 it can (spread.go; windows are measured with
// the rack-aware walk itself); WithWeight spaces the partitions it moves
// the same way; RemoveNode gives the removed node's partitions within one
// window to at most one node outside that window's list. A window holding
// no moved partition then reads the same owners, and one holding one reads
// the old owners but one, so every list gains at most one node and loses
// at most one: a change copies each partition to at most one new node per
// DC and never shuffles replicas between nodes that stay.
//
// When AddNode or WithWeight finds a spaced set this holds by construction
// for every rf up to the one spaced for. Whether it finds one, and whether
// RemoveNode can meet its constraints with exact shares, depends on sizes
// and weights; TestOneReplicaMovesPerChange checks the result on random
// clusters and chains of changes, and it holds, per DC, when:
//
//   - RF >= 2 only in a DC with one rack (every node, an added one too, on
//     the same rack: the default when racks are not set); in a DC with
//     several racks, RF <= 1;
//   - RF <= 4;
//   - q >= 32 × the DC's node count (after the change);
//   - the DC's weights stay within a factor of two of each other;
//   - a node added or removed weighs at most the DC's average weight.
//
// Outside that domain a list can lose two nodes and gain two (the new node
// or an heir, and one met further along the walk), so some data also moves
// between nodes that stay. (AddNode falls back to a claim spread by a hash
// only when not even rf 2 can be spaced.) A node whose share of its DC is above 1/RF cannot keep its
// partitions out of each other's windows (TestNoClaimKeepsWalkListsOnAdd).
// With several racks no claim with exact shares avoids it: a partition the
// new node takes from a node of another rack changes both racks' replicas
// in that partition's own list (TestNoClaimKeepsRackAwareListsOnAdd).
// Replace changes lists only by the swap, when the new node is on the old
// one's rack.
//
// During a change a keyspace uses a transition table (Transition): each
// partition is served by the old lists until it is done, with the next
// lists' new nodes pending (they receive writes). RingState is a ring as
// plain data, for the metadata log.
package placement
