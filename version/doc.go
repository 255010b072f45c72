// Package version implements dotted version vector sets ("dotted causal
// containers"), the per-key state Meridian stores and merges.
//
// A Set holds the concurrent versions of a key (siblings) and a Clock, a
// version vector that covers every write event the replica has seen for the
// key. Each sibling carries a Dot (actor, counter): the counter-th write that
// actor coordinated for this key. The clock is also the causal context handed
// to clients: a Put with context ctx supersedes exactly the siblings whose
// dots ctx covers, and leaves the others as siblings.
//
// Merging two replicas' sets keeps a sibling unless the other side's clock
// covers its dot without holding it — then the other side saw it and
// superseded it. Merge is commutative, associative and idempotent.
//
// Siblings are bounded: only replica-coordinators mint dots, and a write
// removes every sibling its context saw, so the siblings of a key are at most
// the concurrent writers that did not see each other.
//
// Pruning. A clock grows by one entry per actor that ever coordinated a write
// for the key. Actors are node incarnations ("n1", then "n1#2" after an
// unclean restart) and, rarely, one-off actors of fallback coordinators
// ("n4~…"). Prune drops the oldest entries once there are more than
// MaxEntries, only those older than MinAge — as the Dynamo paper does — and
// only those of retired actors (an older incarnation of a node whose newer
// incarnation is in the clock, or a one-off actor), because an actor whose
// entry was dropped and who wrote again would re-mint a dot it had used, and
// a merge would take the two writes for one. The remaining risk: after an
// entry is dropped, an old version from a replica that lagged longer than
// MinAge (and that this replica had superseded) is no longer recognised as
// superseded and comes back as a false sibling. That never loses an
// acknowledged write: entries covering a live sibling are never pruned, and a
// false sibling is resolved by the next write with context. MinAge should
// exceed the longest expected repair interval.
//
// The package is pure: no clocks, no I/O; times come in as arguments.
package version
