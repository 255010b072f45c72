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
// for the key. Actors are store incarnations ("n1#k3j9x…", a random name
// taken when a store is created or restarts after a crash) and, rarely,
// one-off actors of fallback coordinators ("n1#k3j9x…~812"). Prune drops
// entries that cover no current sibling: beyond MaxEntries the oldest of
// those older than MinAge, and beyond HardMaxEntries the oldest whatever
// their age. Ages count to the set's newest entry time (the latest write's
// stamp; the caller's time only when it is earlier), so the decision
// depends on the set alone and every replica prunes alike, whenever it
// merges the data. Pruning a live actor's entry is safe because Mint
// takes the new dot's counter from the actor's store-wide counter (floor),
// which only grows: the actor never re-mints a dot it used before. An
// entry's age counts from when it last advanced or last superseded one of
// its actor's siblings (Mint stamps those, and every entry where the
// write's context is ahead of the copy it is minted on: a fallback's, or a
// lagging replica's, supersedes siblings it does not hold), so a write's
// own Prune never drops what the write just superseded while other
// replicas still hold it. The hard bound spares the entries stamped by the
// set's latest write (a write superseding siblings of more than
// HardMaxEntries actors at once, say a delete of a hot key written blind
// through an outage), on every replica, up to MaxClockEntries; the next
// write's Prune brings the clock back within the bound.
// The remaining risk: after an entry is dropped, an old version from a replica
// that lagged longer than MinAge (and that this replica had superseded) is
// no longer recognised as superseded and comes back as a false sibling. That
// never loses an acknowledged write, and the next write with context
// resolves it.
//
// Limits. Set.Check enforces the same hard limits the decoder does
// (MaxSiblings, MaxClockEntries, MaxCounter, MaxNameLen, MaxSetBytes), plus
// the tighter ones a keyspace sets, so a set that is stored always decodes.
//
// The package is pure: no clocks, no I/O; times come in as arguments.
package version
