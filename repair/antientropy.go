package repair

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/placement"
	"github.com/meridiankv/meridian/replica"
	"github.com/meridiankv/meridian/version"
)

// Anti-entropy: every replica compares, for each partition it holds, its
// Merkle leaves with each other replica's (replica.Buckets leaves of
// combinable hashes, kept current on every write), descends only into the
// buckets that differ, lists those buckets' keys and digests on both sides,
// and for every key that differs pulls the other side's set, merges it
// (the same merge as every write) and pushes the merged set back. It runs
// continuously, so every partition is verified within Period, throttled in
// keys and bytes per second (cross-DC exchanges have their own byte
// budget), with partitions touched by a returning node or a dropped hint
// first. Tombstones are collected only when every replica of their key was
// just proven to hold the same set, no live node owes any of them hints,
// and their grace has passed — never by a timer alone.

// ExchangePeers is what anti-entropy needs from the transport.
type ExchangePeers interface {
	Leaves(ctx context.Context, node string, req *internalv1.LeavesRequest) (*internalv1.LeavesResponse, error)
	BucketDigests(ctx context.Context, node string, req *internalv1.BucketDigestsRequest) (*internalv1.BucketDigestsResponse, error)
	CollectTombstones(ctx context.Context, node string, req *internalv1.CollectTombstonesRequest) (*internalv1.CollectTombstonesResponse, error)
	Read(ctx context.Context, node string, req *internalv1.ReadRequest) (*internalv1.ReadResponse, error)
	Write(ctx context.Context, node string, req *internalv1.WriteRequest) error
}

// Trees is the local store's side: Merkle leaves, bucket listings, reads
// and guarded deletes.
type Trees interface {
	Leaves(loc replica.Loc) ([]uint64, error)
	BucketDigests(loc replica.Loc, buckets []int) ([]replica.KeyDigest, error)
	Get(loc replica.Loc, key []byte) (version.Set, error)
	DeleteIfUnchanged(loc replica.Loc, key []byte, set version.Set) (bool, error)
}

// Merger merges a set into the local copy the way replica writes do
// (pruning, limits, request IDs), without fsync; Sync makes the merges so
// far durable.
type Merger interface {
	MergeLocal(keyspace string, key []byte, set version.Set) error
	Sync() error
}

// Routing says who is up, who is owed hints, and who gossips that it
// refuses writes for lack of disk space (an exchange with it pulls what
// it has and pushes nothing: it would refuse the writes).
type Routing interface {
	Alive(id string) bool
	PendingHints(id string) bool
	DiskLow(id string) bool
}

// Observer receives anti-entropy measurements.
type Observer interface {
	Repaired(keys, bytes int)
	Exchanged(d time.Duration, mismatches int)
	TombstonesCollected(n int)
}

type nopObserver struct{}

func (nopObserver) Repaired(int, int)            {}
func (nopObserver) Exchanged(time.Duration, int) {}
func (nopObserver) TombstonesCollected(int)      {}

// AntiEntropyConfig configures AntiEntropy. Zero values mean defaults.
type AntiEntropyConfig struct {
	Self     string
	DC       string
	Store    Trees
	Peers    ExchangePeers
	Merge    Merger
	Routing  Routing
	Topology func() *membership.Topology
	// Period: every partition this node holds is verified against every
	// other replica at least this often (default 10m).
	Period time.Duration
	// Tick is how often the scheduler looks for work (default 1s).
	Tick time.Duration
	// PriorityPerTick bounds the priority partitions (a dropped hint's, or
	// all those shared with a node that came back) verified in one tick
	// when that is more than the period's pace (default 16). Without it
	// a node back from a short flap had every shared partition compared
	// with every replica at once: some 40,000 Leaves calls in the first
	// seconds of the node benchmarks' six-node, 1,024-partition cluster,
	// whose nodes see each other flap while starting.
	PriorityPerTick int
	// KeysPerSecond and BytesPerSecond throttle repairs (defaults 5,000
	// and 20 MiB/s); CrossDCBytesPerSecond throttles repairs with replicas
	// in other DCs (default 5 MiB/s).
	KeysPerSecond         float64
	BytesPerSecond        float64
	CrossDCBytesPerSecond float64
	// TombstoneGrace is how old a tombstone must be before it may be
	// collected (default 24h; negative: never collect).
	TombstoneGrace time.Duration
	// Moving reports whether a partition is being copied to new owners
	// beyond what the placement table's pending replicas say (nil: only
	// they say so); a moving partition's tombstones are not collected.
	Moving func(keyspace string, partition int) bool
	// Timeout bounds each call to a peer (default 10s); one carrying a
	// set gets a second more per MiB of it (sizedTimeout).
	Timeout  time.Duration
	Now      func() time.Time
	Logger   *slog.Logger
	Observer Observer
}

func (c *AntiEntropyConfig) setDefaults() {
	if c.Period <= 0 {
		c.Period = 10 * time.Minute
	}
	if c.Tick <= 0 {
		c.Tick = time.Second
	}
	if c.PriorityPerTick <= 0 {
		c.PriorityPerTick = DefaultPriorityPerTick
	}
	if c.KeysPerSecond <= 0 {
		c.KeysPerSecond = 5000
	}
	if c.BytesPerSecond <= 0 {
		c.BytesPerSecond = 20 << 20
	}
	if c.CrossDCBytesPerSecond <= 0 {
		c.CrossDCBytesPerSecond = 5 << 20
	}
	if c.TombstoneGrace == 0 {
		c.TombstoneGrace = DefaultTombstoneGrace
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
}

// PartitionStatus is anti-entropy's record of one partition.
type PartitionStatus struct {
	Keyspace  string
	Partition int
	// Verified is when every replica was last found equal to (or repaired
	// to) this node's copy; zero: not since this node started.
	Verified      time.Time
	Mismatches    uint64
	KeysRepaired  uint64
	BytesRepaired uint64
	Priority      bool
	// attempted is when an exchange last began: a partition that cannot
	// be verified (a replica down) waits its turn behind the others
	// instead of being picked first at every tick.
	attempted time.Time
}

// Progress reports a repair run.
type Progress struct {
	PartitionsDone, PartitionsTotal int
	Mismatches, KeysRepaired        uint64
	BytesRepaired                   uint64
}

type partKey struct {
	ks uint32
	p  int
}

// AntiEntropy runs Merkle exchanges for the partitions this node holds.
type AntiEntropy struct {
	cfg     AntiEntropyConfig
	keys    *tokenBucket
	bytes   *tokenBucket
	crossDC *tokenBucket
	// partMu serializes exchanges of one partition (striped by
	// partition); different partitions exchange in parallel (transfers'
	// catch-ups run beside the background scheduler).
	partMu [64]sync.Mutex
	mu     struct {
		sync.Mutex
		parts    map[partKey]*PartitionStatus
		priority map[partKey]bool
		// clean: partitions scanned and found to hold no tombstone, and
		// written no tombstone since (MarkTombstone clears the mark).
		clean map[partKey]bool
		// marks counts MarkTombstone calls per partition, so a scan that
		// raced with a new tombstone does not mark the partition clean.
		marks map[partKey]uint64
		// prunedAt is the topology epoch the maps above were last pruned
		// to the held partitions at.
		prunedAt uint64
	}
}

// NewAntiEntropy returns an anti-entropy runner; Run starts it.
func NewAntiEntropy(cfg AntiEntropyConfig) (*AntiEntropy, error) {
	cfg.setDefaults()
	switch {
	case cfg.Self == "":
		return nil, errors.New("repair: Self is empty")
	case cfg.Store == nil || cfg.Peers == nil || cfg.Merge == nil || cfg.Routing == nil || cfg.Topology == nil:
		return nil, errors.New("repair: Store, Peers, Merge, Routing and Topology are required")
	}
	a := &AntiEntropy{cfg: cfg,
		keys:    perSecond(cfg.KeysPerSecond, cfg.Now),
		bytes:   perSecond(cfg.BytesPerSecond, cfg.Now),
		crossDC: perSecond(cfg.CrossDCBytesPerSecond, cfg.Now),
	}
	a.mu.parts = map[partKey]*PartitionStatus{}
	a.mu.priority = map[partKey]bool{}
	a.mu.clean = map[partKey]bool{}
	a.mu.marks = map[partKey]uint64{}
	return a, nil
}

// held lists the (keyspace, partition) pairs this node replicates.
func (a *AntiEntropy) held(keyspace string, partition int) []target {
	topo := a.cfg.Topology()
	var out []target
	for _, name := range topo.KeyspaceNames() {
		if keyspace != "" && name != keyspace {
			continue
		}
		ks := topo.Keyspaces[name]
		for p := 0; p < topo.Ring.Partitions(); p++ {
			if partition >= 0 && p != partition {
				continue
			}
			if a.replicates(ks, p) {
				out = append(out, target{ks: ks, p: p})
			}
		}
	}
	return out
}

type target struct {
	ks *membership.Keyspace
	p  int
	// drop: the caller deletes its copy next. Pushes are fsynced by the
	// peer before it answers, and nothing is merged here: pulling into a
	// copy about to be deleted is pointless, and the node that most needs
	// the drop (low on disk, whose store refuses the merge) could
	// otherwise never let go of the partition.
	drop bool
}

func (t target) key() partKey { return partKey{t.ks.ID, t.p} }

// perSecond is a bucket of rate tokens a second with a one-second burst.
func perSecond(rate float64, now func() time.Time) *tokenBucket {
	return newTokenBucket(rate, max(1, int(rate)), now)
}

func (a *AntiEntropy) partLock(ks uint32, p int) *sync.Mutex {
	return &a.partMu[(uint64(ks)*31+uint64(p))%uint64(len(a.partMu))]
}

// SetObserver sets the metrics observer (before Run).
func (a *AntiEntropy) SetObserver(o Observer) { a.cfg.Observer = o }

// MarkTombstone notes that a partition received a tombstone, so the next
// verified exchange looks for tombstones to collect there.
func (a *AntiEntropy) MarkTombstone(loc replica.Loc) {
	a.mu.Lock()
	defer a.mu.Unlock()
	pk := partKey{loc.Keyspace, loc.Partition}
	delete(a.mu.clean, pk)
	a.mu.marks[pk]++
}

// MarkPriority puts a partition first in line (a hint for it was dropped).
// A partition this node does not replicate (a fallback's hint) is left
// alone: no exchange here would ever take the mark off.
func (a *AntiEntropy) MarkPriority(loc replica.Loc) {
	if !a.holds(loc) {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.mu.priority[partKey{loc.Keyspace, loc.Partition}] = true
}

// replicates reports whether this node is a replica of ks's partition p.
func (a *AntiEntropy) replicates(ks *membership.Keyspace, p int) bool {
	return slices.ContainsFunc(ks.Table.Replicas(p), func(r placement.Replica) bool { return r.Node == a.cfg.Self })
}

// current returns t by the current topology, and whether this node still
// replicates it.
func (a *AntiEntropy) current(t target) (target, bool) {
	ks, ok := a.cfg.Topology().Keyspaces[t.ks.Name]
	if !ok || ks.ID != t.ks.ID || !a.replicates(ks, t.p) {
		return target{}, false
	}
	return target{ks: ks, p: t.p}, true
}

// holds reports whether this node replicates loc by the current topology.
func (a *AntiEntropy) holds(loc replica.Loc) bool {
	topo := a.cfg.Topology()
	if loc.Partition < 0 || loc.Partition >= topo.Ring.Partitions() {
		return false
	}
	for _, ks := range topo.Keyspaces {
		if ks.ID == loc.Keyspace && a.replicates(ks, loc.Partition) {
			return true
		}
	}
	return false
}

// pruneLocked drops the records of partitions this node no longer holds
// (moved away, or their keyspace dropped), once per topology epoch, so
// that the maps hold the held partitions, not every one ever seen.
func (a *AntiEntropy) pruneLocked(epoch uint64, held []target) {
	if epoch == a.mu.prunedAt {
		return
	}
	a.mu.prunedAt = epoch
	keep := make(map[partKey]bool, len(held))
	for _, t := range held {
		keep[t.key()] = true
	}
	for pk := range a.mu.parts {
		if !keep[pk] {
			delete(a.mu.parts, pk)
		}
	}
	for _, m := range []map[partKey]bool{a.mu.priority, a.mu.clean} {
		for pk := range m {
			if !keep[pk] {
				delete(m, pk)
			}
		}
	}
	for pk := range a.mu.marks {
		if !keep[pk] {
			delete(a.mu.marks, pk)
		}
	}
}

// MarkNode puts every partition this node shares with id first in line (id
// came back and may have missed writes).
func (a *AntiEntropy) MarkNode(id string) {
	for _, t := range a.held("", -1) {
		for _, r := range t.ks.Table.Replicas(t.p) {
			if r.Node == id {
				a.MarkPriority(replica.Loc{Keyspace: t.ks.ID, Partition: t.p})
				break
			}
		}
	}
}

// Run verifies partitions until ctx ends: priority ones first, then those
// verified longest ago, at a pace that covers every held partition within
// Period.
func (a *AntiEntropy) Run(ctx context.Context) {
	t := time.NewTicker(a.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, tg := range a.due() {
			if ctx.Err() != nil {
				return
			}
			if _, err := a.exchange(ctx, tg); err != nil && ctx.Err() == nil {
				a.cfg.Logger.Debug("anti-entropy exchange incomplete", "keyspace", tg.ks.Name, "partition", tg.p, "err", err)
			}
		}
	}
}

// due picks this tick's partitions.
func (a *AntiEntropy) due() []target {
	epoch := a.cfg.Topology().Epoch
	held := a.held("", -1)
	now := a.cfg.Now()
	ticks := max(int(a.cfg.Period/a.cfg.Tick), 1)
	quota := (len(held) + ticks - 1) / ticks
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pruneLocked(epoch, held)
	var cs []candidate
	for _, t := range held {
		st := a.mu.parts[t.key()]
		c := candidate{t: t, prio: a.mu.priority[t.key()]}
		if st != nil {
			c.last = st.Verified
			if st.attempted.After(c.last) {
				c.last = st.attempted
			}
		}
		if c.prio || st == nil || st.Verified.IsZero() || now.Sub(st.Verified) >= a.cfg.Period/2 {
			cs = append(cs, c)
		}
	}
	return pickDue(cs, quota, a.cfg.PriorityPerTick)
}

// DefaultPriorityPerTick is AntiEntropyConfig.PriorityPerTick's default.
const DefaultPriorityPerTick = 16

// candidate is a partition that may be verified this tick.
type candidate struct {
	t target
	// last is when it was last verified, or last tried if later (a
	// replica was down): zero, never since this node started.
	last time.Time
	prio bool
}

// pickDue chooses a tick's partitions from the candidates: priority ones
// first, then those verified (or tried) longest ago; quota of them (the period's
// pace), or up to prioLimit while priority ones remain. It reorders cs.
func pickDue(cs []candidate, quota, prioLimit int) []target {
	sort.SliceStable(cs, func(i, j int) bool {
		if cs[i].prio != cs[j].prio {
			return cs[i].prio
		}
		return cs[i].last.Before(cs[j].last)
	})
	limit := max(quota, prioLimit)
	var out []target
	for i, c := range cs {
		if i >= limit || i >= quota && !c.prio {
			break
		}
		out = append(out, c.t)
	}
	return out
}

// RunNow exchanges the selected partitions at once (keyspace "" and
// partition < 0 for all), reporting progress when it starts (none done:
// a caller that only starts the run hears so at once, not after the
// first partition, which can take minutes) and after each partition.
func (a *AntiEntropy) RunNow(ctx context.Context, keyspace string, partition int, progress func(Progress)) (Progress, error) {
	if keyspace != "" {
		if _, ok := a.cfg.Topology().Keyspaces[keyspace]; !ok {
			return Progress{}, fmt.Errorf("keyspace %q does not exist", keyspace)
		}
	}
	if partition >= a.cfg.Topology().Ring.Partitions() {
		return Progress{}, fmt.Errorf("partition %d does not exist (the ring has %d)", partition, a.cfg.Topology().Ring.Partitions())
	}
	held := a.held(keyspace, partition)
	pr := Progress{PartitionsTotal: len(held)}
	if progress != nil {
		progress(pr)
	}
	var firstErr error
	for _, t := range held {
		if err := ctx.Err(); err != nil {
			return pr, err
		}
		// A long run outlives topology changes: each partition is
		// exchanged by the replicas it has now, and one no longer held
		// here (moved away, its keyspace dropped) is skipped.
		var res result
		var err error
		if t, ok := a.current(t); ok {
			res, err = a.exchange(ctx, t)
		}
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("keyspace %s partition %d: %w", t.ks.Name, t.p, err)
		}
		pr.PartitionsDone++
		pr.Mismatches += uint64(res.mismatches)
		pr.KeysRepaired += uint64(res.keys)
		pr.BytesRepaired += uint64(res.bytes)
		if progress != nil {
			progress(pr)
		}
	}
	return pr, firstErr
}

// Status lists the partitions this node holds with their repair record.
func (a *AntiEntropy) Status(keyspace string) []PartitionStatus {
	held := a.held(keyspace, -1)
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]PartitionStatus, 0, len(held))
	for _, t := range held {
		st := PartitionStatus{Keyspace: t.ks.Name, Partition: t.p}
		if s := a.mu.parts[t.key()]; s != nil {
			st = *s
		}
		st.Priority = a.mu.priority[t.key()]
		out = append(out, st)
	}
	return out
}

// OldestVerified is how long ago the least recently verified held
// partition was verified (since start when one never was), for metrics.
func (a *AntiEntropy) OldestVerified(started time.Time) time.Duration {
	now := a.cfg.Now()
	worst := time.Duration(0)
	for _, st := range a.Status("") {
		v := st.Verified
		if v.IsZero() {
			v = started
		}
		worst = max(worst, now.Sub(v))
	}
	return worst
}

type result struct {
	mismatches, keys, bytes int
	// stale counts the keys a drop's sync did not push (staleForDrop).
	stale int
}

// statusLocked returns t's record, made on first use.
func (a *AntiEntropy) statusLocked(t target) *PartitionStatus {
	st := a.mu.parts[t.key()]
	if st == nil {
		st = &PartitionStatus{Keyspace: t.ks.Name, Partition: t.p}
		a.mu.parts[t.key()] = st
	}
	return st
}

// exchange verifies one partition against every other replica, repairing
// what differs; the partition counts as verified only if every replica
// answered.
func (a *AntiEntropy) exchange(ctx context.Context, t target) (result, error) {
	mu := a.partLock(t.ks.ID, t.p)
	mu.Lock()
	defer mu.Unlock()
	start := a.cfg.Now()
	a.mu.Lock()
	a.statusLocked(t).attempted = start
	a.mu.Unlock()
	loc := replica.Loc{Keyspace: t.ks.ID, Partition: t.p}
	var res result
	reps := t.ks.Table.Replicas(t.p)
	// A peer low on disk is pulled from only: the partition is not
	// verified (complete is false), and the exchange says why.
	complete, low, errs, err := a.syncPeers(ctx, t, loc, reps, &res)
	if err != nil {
		return res, err
	}
	errs = append(errs, lowOnDiskErrs(low)...)
	if res.keys > 0 {
		if err := a.cfg.Merge.Sync(); err != nil {
			return res, fmt.Errorf("sync repaired keys: %w", err)
		}
	}
	now := a.cfg.Now()
	a.mu.Lock()
	st := a.statusLocked(t)
	st.Mismatches += uint64(res.mismatches)
	st.KeysRepaired += uint64(res.keys)
	st.BytesRepaired += uint64(res.bytes)
	if complete {
		st.Verified = now
	}
	// Tried: a priority partition that could not be verified (a replica
	// down) goes back to the regular order rather than take a priority
	// slot at every tick; the replica coming back marks it again.
	delete(a.mu.priority, t.key())
	a.mu.Unlock()
	a.cfg.Observer.Exchanged(now.Sub(start), res.mismatches)
	if res.keys > 0 {
		a.cfg.Observer.Repaired(res.keys, res.bytes)
		a.cfg.Logger.Info("anti-entropy repaired keys", "keyspace", t.ks.Name, "partition", t.p, "mismatches", res.mismatches, "keys", res.keys, "bytes", res.bytes)
	}
	if complete && a.cfg.TombstoneGrace > 0 && !a.moving(t) {
		if n, err := a.collect(ctx, t, loc, reps); err != nil {
			errs = append(errs, fmt.Errorf("collect tombstones: %w", err))
		} else if n > 0 {
			a.cfg.Observer.TombstonesCollected(n)
		}
	}
	return res, errors.Join(errs...)
}

// syncPeers compares one partition with each live peer (this node
// skipped) and repairs both sides (only the peers' before a drop: t.drop);
// a peer low on disk only gives (listed
// in lowOnDisk). A second pass reaches the peers compared before this
// node's copy took in what a later peer had. It reports whether every
// peer was alive, had room and answered, and the errors of those that
// failed; err is a failure of the local store.
func (a *AntiEntropy) syncPeers(ctx context.Context, t target, loc replica.Loc, peers []placement.Replica, res *result) (complete bool, lowOnDisk []string, errs []error, err error) {
	local, err := a.cfg.Store.Leaves(loc)
	if err != nil {
		return false, nil, nil, fmt.Errorf("local leaves: %w", err)
	}
	// failed: a peer was down or did not answer; a second pass would not
	// reach it either. A peer low on disk does not stop the second pass:
	// what was pulled from it reaches the peers compared before it.
	failed := false
	// The first pass fetches every peer's leaves at once (a catch-up
	// usually finds them all equal); the second asks again.
	pre := a.fetchLeaves(ctx, t, peers)
	for pass := 0; pass < 2; pass++ {
		changed := false
		for _, r := range peers {
			if r.Node == a.cfg.Self {
				continue
			}
			if !a.cfg.Routing.Alive(r.Node) {
				failed = true
				continue
			}
			var got *leavesReply
			if lr, ok := pre[r.Node]; ok && pass == 0 {
				got = &lr
			}
			push := !a.cfg.Routing.DiskLow(r.Node)
			if !push && !slices.Contains(lowOnDisk, r.Node) {
				lowOnDisk = append(lowOnDisk, r.Node)
			}
			n, err := a.withPeerLeaves(ctx, t, loc, local, r.Node, r.DC != a.cfg.DC, push, res, got)
			if err != nil {
				failed = true
				errs = append(errs, fmt.Errorf("%s: %w", r.Node, err))
				continue
			}
			if n > 0 {
				changed = true
				// Our copy changed: later peers compare against it.
				if local, err = a.cfg.Store.Leaves(loc); err != nil {
					return false, lowOnDisk, errs, err
				}
			}
		}
		if !changed || failed {
			break
		}
	}
	return !failed && len(lowOnDisk) == 0, lowOnDisk, errs, nil
}

// lowOnDiskErrs says, for each peer an exchange only pulled from, why.
func lowOnDiskErrs(peers []string) []error {
	var out []error
	for _, id := range peers {
		out = append(out, fmt.Errorf("%s is low on disk: pulled what it has, pushed nothing (it would refuse); run again once it has room", id))
	}
	return out
}

// SyncWith runs the Merkle exchange of one partition with the given peers
// (both directions: what a peer has that this node lacks is merged here,
// and the merged set pushed back), whether or not this node or the peers
// are in the partition's preference list — a partition transfer's catch-up
// pass, run by a new owner that is only pending. It never collects
// tombstones. It returns how many keys differed, and an error naming each
// peer that was down or failed (run it again once they are back).
func (a *AntiEntropy) SyncWith(ctx context.Context, keyspace string, partition int, peers []string) (mismatches int, err error) {
	return a.syncWith(ctx, keyspace, partition, peers, false)
}

// SyncBeforeDrop is SyncWith for a node about to delete its copy of the
// partition (it no longer replicates it): one way only. Each key a peer
// lacks, or holds a set of that does not descend this node's, gets this
// node's set, fsynced by the peer before the peer answers, since this
// copy may be the only other one of a write acknowledged here. Nothing is
// merged here: the peers merge, and a node low on disk (whose store
// refuses merges) can still drop what it no longer replicates.
func (a *AntiEntropy) SyncBeforeDrop(ctx context.Context, keyspace string, partition int, peers []string) (mismatches int, err error) {
	return a.syncWith(ctx, keyspace, partition, peers, true)
}

func (a *AntiEntropy) syncWith(ctx context.Context, keyspace string, partition int, peers []string, drop bool) (mismatches int, err error) {
	topo := a.cfg.Topology()
	ks, ok := topo.Keyspaces[keyspace]
	if !ok {
		return 0, fmt.Errorf("keyspace %q does not exist", keyspace)
	}
	if partition < 0 || partition >= topo.Ring.Partitions() {
		return 0, fmt.Errorf("partition %d does not exist (the ring has %d)", partition, topo.Ring.Partitions())
	}
	var errs []error
	var reps []placement.Replica
	for _, id := range peers {
		switch {
		case id == a.cfg.Self:
		case !a.cfg.Routing.Alive(id):
			errs = append(errs, fmt.Errorf("%s is down: sync again once it is back", id))
		default:
			reps = append(reps, placement.Replica{Node: id, DC: topo.Nodes[id].DC})
		}
	}
	if len(reps) == 0 && len(errs) == 0 {
		return 0, fmt.Errorf("no peer other than this node (%s) to sync partition %d of %s with", a.cfg.Self, partition, keyspace)
	}
	t := target{ks: ks, p: partition, drop: drop}
	loc := replica.Loc{Keyspace: ks.ID, Partition: partition}
	mu := a.partLock(ks.ID, partition)
	mu.Lock()
	defer mu.Unlock()
	start := a.cfg.Now()
	var res result
	complete, low, perr, err := a.syncPeers(ctx, t, loc, reps, &res)
	if err != nil {
		return res.mismatches, err
	}
	errs = append(errs, perr...)
	errs = append(errs, lowOnDiskErrs(low)...)
	if !complete && len(perr) == 0 && len(low) == 0 {
		errs = append(errs, errors.New("a peer went down during the exchange: sync again once it is back"))
	}
	if res.stale > 0 {
		a.cfg.Logger.Warn("anti-entropy: before dropping a partition this node no longer replicates, keys its replicas lack were not pushed: nothing in them is younger than tombstone-grace, so they are most likely deleted keys whose tombstones were collected",
			"keyspace", keyspace, "partition", partition, "keys", res.stale, "tombstone_grace", a.cfg.TombstoneGrace)
	}
	if res.keys > 0 && !t.drop { // a drop merged nothing here
		if err := a.cfg.Merge.Sync(); err != nil {
			return res.mismatches, fmt.Errorf("sync repaired keys: %w", err)
		}
		a.cfg.Observer.Repaired(res.keys, res.bytes)
		a.cfg.Logger.Info("anti-entropy sync repaired keys", "keyspace", keyspace, "partition", partition, "peers", peers, "mismatches", res.mismatches, "keys", res.keys, "bytes", res.bytes)
	}
	a.cfg.Observer.Exchanged(a.cfg.Now().Sub(start), res.mismatches)
	return res.mismatches, errors.Join(errs...)
}

// staleForDrop reports whether set, held by a node about to drop a
// partition it no longer replicates, is not to be pushed to a replica
// that lacks the key: nothing in it happened within tombstone-grace. Such
// a key missing from a current replica is most likely one deleted more
// than a grace ago whose tombstone the replicas collected (they did
// not wait for this node, no longer one of them: down through the move,
// say, or keeping the copy while a replica was down), and pushing it
// would bring the deleted value back everywhere. A write that old held
// here alone is the other possibility: its replicas' hints expired
// (after nine tenths of the grace) while this node held them.
func (a *AntiEntropy) staleForDrop(set version.Set) bool {
	g := a.cfg.TombstoneGrace
	return g > 0 && set.WrittenBefore(a.cfg.Now().Add(-g).UnixNano())
}

// moving reports whether t's partition is being copied to new owners: the
// keyspace's table lists pending replicas for it, or Moving says so.
// Tombstones of a moving partition are not collected: a tombstone
// collected on the old owners while the copy streams could leave the copy
// with the value it superseded, to come back everywhere.
func (a *AntiEntropy) moving(t target) bool {
	if len(t.ks.Table.Pending(t.p)) > 0 {
		return true
	}
	return a.cfg.Moving != nil && a.cfg.Moving(t.ks.Name, t.p)
}

// fetchLeaves asks every peer for its leaves of a partition at once.
func (a *AntiEntropy) fetchLeaves(ctx context.Context, t target, peers []placement.Replica) map[string]leavesReply {
	out := make(map[string]leavesReply, len(peers))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, r := range peers {
		if r.Node == a.cfg.Self || !a.cfg.Routing.Alive(r.Node) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
			resp, err := a.cfg.Peers.Leaves(cctx, r.Node, &internalv1.LeavesRequest{Keyspace: t.ks.Name, Partition: uint32(t.p)})
			cancel()
			mu.Lock()
			out[r.Node] = leavesReply{resp, err}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

type leavesReply struct {
	resp *internalv1.LeavesResponse
	err  error
}

// withPeerLeaves compares one partition with one peer and repairs both
// sides, with the peer's leaves already fetched (nil: fetch them). It
// returns how many keys changed locally.
func (a *AntiEntropy) withPeerLeaves(ctx context.Context, t target, loc replica.Loc, local []uint64, peer string, crossDC, push bool, res *result, pre *leavesReply) (_ int, err error) {
	var remote *internalv1.LeavesResponse
	if pre != nil {
		remote, err = pre.resp, pre.err
	} else {
		cctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
		remote, err = a.cfg.Peers.Leaves(cctx, peer, &internalv1.LeavesRequest{Keyspace: t.ks.Name, Partition: uint32(t.p)})
		cancel()
	}
	if err != nil {
		return 0, err
	}
	if len(remote.GetLeaves()) != len(local) {
		return 0, fmt.Errorf("peer has %d leaves, this node %d", len(remote.GetLeaves()), len(local))
	}
	var diff []int
	for i, l := range remote.GetLeaves() {
		if l != local[i] {
			diff = append(diff, i)
		}
	}
	if len(diff) == 0 {
		return 0, nil
	}
	// The buckets go a few at a time: one reply listing every key of a
	// large partition (a replica restarted empty differs in all of them)
	// could pass the message limit and fail every exchange, and the key
	// lists of both sides are held while their keys are repaired.
	var rf refusals
	defer func() {
		if rf.first != nil && err == nil {
			err = fmt.Errorf("%d key(s) refused, the rest repaired: %w", rf.n, rf.first)
		}
	}()
	changed := 0
	for len(diff) > 0 {
		n := min(len(diff), bucketsPerCall)
		got, err := a.repairBuckets(ctx, t, loc, peer, crossDC, push, res, diff[:n], &rf)
		changed += got
		if err != nil {
			return changed, err
		}
		diff = diff[n:]
	}
	return changed, nil
}

// bucketsPerCall bounds the buckets (of a partition's 256) whose keys one
// BucketDigests call lists: a sixteenth of the partition at most.
const bucketsPerCall = 16

// refusals counts the keys a side refused (replica.Refused) during one
// exchange, and keeps the first refusal.
type refusals struct {
	first error
	n     int
}

func (r *refusals) add(err error) {
	r.first = cmp.Or(r.first, err)
	r.n++
}

// repairBuckets repairs, both ways (only toward peer when t.drop), the
// keys of some buckets that differ between this node and peer, and
// returns how many keys changed locally.
func (a *AntiEntropy) repairBuckets(ctx context.Context, t target, loc replica.Loc, peer string, crossDC, push bool, res *result, diff []int, rf *refusals) (int, error) {
	mine, err := a.cfg.Store.BucketDigests(loc, diff)
	if err != nil {
		return 0, err
	}
	buckets := make([]uint32, len(diff))
	for i, b := range diff {
		buckets[i] = uint32(b)
	}
	cctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	theirs, err := a.cfg.Peers.BucketDigests(cctx, peer, &internalv1.BucketDigestsRequest{Keyspace: t.ks.Name, Partition: uint32(t.p), Buckets: buckets})
	cancel()
	if err != nil {
		return 0, err
	}
	ring := a.cfg.Topology().Ring
	differ, foreign := differingKeys(mine, theirs.GetKeys(), func(key []byte) bool { return ring.Partition(key) == t.p })
	if foreign > 0 {
		// A peer listing keys of another partition (a bug, or a peer not
		// to be trusted): they are not taken; the partition they belong
		// to has its own exchanges.
		a.cfg.Logger.Warn("anti-entropy: a peer listed keys of another partition; ignored", "peer", peer,
			"keyspace", t.ks.Name, "partition", t.p, "keys", foreign)
	}
	res.mismatches += len(differ)
	changed := 0
	// A key one side refuses (replica.Refused: a version too far ahead
	// of its clock, or over a hard limit) does not hold up the rest of
	// the partition; the round still fails, with the first (rf).
	for _, key := range differ {
		if err := a.keys.wait(ctx, 1); err != nil {
			return changed, err
		}
		before, err := a.cfg.Store.Get(loc, key)
		if err != nil {
			return changed, err
		}
		// The peer's set is likely about the size of this node's.
		cctx, cancel := context.WithTimeout(ctx, sizedTimeout(a.cfg.Timeout, before.EncodedSize()))
		resp, err := a.cfg.Peers.Read(cctx, peer, &internalv1.ReadRequest{Keyspace: t.ks.Name, Key: key})
		cancel()
		if err != nil {
			return changed, err
		}
		remoteSet, err := version.DecodeSet(resp.GetSet())
		if err != nil {
			return changed, fmt.Errorf("peer's set of %q: %w", key, err)
		}
		// Before a drop only the peer merges (t.drop): this copy is
		// deleted next, and its store may refuse writes (low on disk).
		if !remoteSet.IsEmpty() && !before.Descends(remoteSet) && !t.drop {
			if err := a.cfg.Merge.MergeLocal(t.ks.Name, key, remoteSet); err != nil {
				if replica.Refused(err) {
					rf.add(fmt.Errorf("merge %q: %w", key, err))
					continue
				}
				return changed, fmt.Errorf("merge %q: %w", key, err)
			}
			changed++
		}
		merged, err := a.cfg.Store.Get(loc, key)
		if err != nil {
			return changed, err
		}
		n := len(resp.GetSet())
		if push && t.drop && remoteSet.IsEmpty() && a.staleForDrop(merged) {
			res.stale++
			continue
		}
		if push && !remoteSet.Descends(merged) {
			enc := merged.Encode()
			n += len(enc)
			cctx, cancel := context.WithTimeout(ctx, sizedTimeout(a.cfg.Timeout, len(enc)))
			// No fsync per key: this node (and the replica it pulled from)
			// still hold the set durably; a peer that loses it in a crash
			// is repaired again by the next exchange. Unless this node
			// drops its copy next (t.drop).
			err := a.cfg.Peers.Write(cctx, peer, &internalv1.WriteRequest{Keyspace: t.ks.Name, Key: key, Set: enc, Sync: t.drop})
			cancel()
			if replica.Refused(err) {
				rf.add(fmt.Errorf("push %q: %w", key, err))
			} else if err != nil {
				return changed, fmt.Errorf("push %q: %w", key, err)
			}
		}
		res.keys++
		res.bytes += n
		if err := a.bytes.wait(ctx, n); err != nil {
			return changed, err
		}
		if crossDC {
			if err := a.crossDC.wait(ctx, n); err != nil {
				return changed, err
			}
		}
	}
	return changed, nil
}

// differingKeys returns the keys whose digests differ or that one side
// lacks, and how many of theirs it left out for not being of the
// partition (inPartition false).
func differingKeys(mine []replica.KeyDigest, theirs []*internalv1.KeyDigest, inPartition func([]byte) bool) (out [][]byte, foreign int) {
	m := make(map[string]uint64, len(mine))
	for _, k := range mine {
		m[string(k.Key)] = k.Digest
	}
	seen := make(map[string]bool, len(theirs))
	for _, k := range theirs {
		if !inPartition(k.GetKey()) {
			foreign++
			continue
		}
		seen[string(k.GetKey())] = true
		if d, ok := m[string(k.GetKey())]; !ok || d != k.GetDigest() {
			out = append(out, k.GetKey())
		}
	}
	for _, k := range mine {
		if !seen[string(k.Key)] {
			out = append(out, k.Key)
		}
	}
	return out, foreign
}

// collect deletes tombstones of a partition just verified equal on every
// replica, older than the grace, when no live node owes any replica hints
// (a hint could otherwise bring back what the tombstone superseded).
func (a *AntiEntropy) collect(ctx context.Context, t target, loc replica.Loc, reps []placement.Replica) (int, error) {
	for _, r := range reps {
		if a.cfg.Routing.PendingHints(r.Node) {
			return 0, nil
		}
	}
	pk := t.key()
	a.mu.Lock()
	clean, gen := a.mu.clean[pk], a.mu.marks[pk]
	a.mu.Unlock()
	if clean {
		return 0, nil // no tombstone written here since the last scan found none
	}
	all := make([]int, replica.Buckets)
	for i := range all {
		all[i] = i
	}
	keys, err := a.cfg.Store.BucketDigests(loc, all)
	if err != nil {
		return 0, err
	}
	cutoff := a.cfg.Now().Add(-a.cfg.TombstoneGrace).UnixNano()
	var cands []*internalv1.KeyDigest
	var sets []version.Set
	young := false
	for _, k := range keys {
		set, err := a.cfg.Store.Get(loc, k.Key)
		if err != nil {
			return 0, err
		}
		if len(set.Live()) == 0 && len(set.Siblings) > 0 && !set.TombstonesBefore(cutoff) {
			young = true // a tombstone still in its grace: look again later
		}
		if !set.TombstonesBefore(cutoff) || set.Digest() != k.Digest {
			continue
		}
		cands = append(cands, &internalv1.KeyDigest{Key: k.Key, Digest: k.Digest})
		sets = append(sets, set)
	}
	if len(cands) == 0 {
		if !young {
			a.mu.Lock()
			if a.mu.marks[pk] == gen {
				a.mu.clean[pk] = true
			}
			a.mu.Unlock()
		}
		return 0, nil
	}
	n := 0
	for len(cands) > 0 {
		k := collectChunk(cands)
		got, err := a.collectKeys(ctx, t, loc, reps, cands[:k], sets[:k])
		n += got
		if err != nil {
			return n, err
		}
		cands, sets = cands[k:], sets[k:]
	}
	return n, nil
}

// Tombstones go to the other replicas in requests of at most
// collectBatchKeys keys and about collectBatchBytes of keys: each is
// answered well inside the timeout and far inside what a replica accepts
// (after a mass delete a partition may hold millions).
const (
	collectBatchKeys  = 1000
	collectBatchBytes = 1 << 20
)

// collectChunk is how many of cands (at least one) the next request
// carries.
func collectChunk(cands []*internalv1.KeyDigest) int {
	size := 0
	for i, c := range cands {
		size += len(c.Key)
		if i == collectBatchKeys || (i > 0 && size > collectBatchBytes) {
			return i
		}
	}
	return len(cands)
}

// collectKeys collects one batch of tombstones: every other replica
// first, then this node's copies of the keys no replica kept. If one
// replica cannot, nothing is lost: this node still holds the tombstones
// and the next round tries again. A key some replica kept (still in its
// own grace there, or written meanwhile) stays here too: dropped here
// alone, anti-entropy would only bring it back from that replica.
func (a *AntiEntropy) collectKeys(ctx context.Context, t target, loc replica.Loc, reps []placement.Replica, cands []*internalv1.KeyDigest, sets []version.Set) (int, error) {
	kept := make([]bool, len(cands))
	for _, r := range reps {
		if r.Node == a.cfg.Self {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
		resp, err := a.cfg.Peers.CollectTombstones(cctx, r.Node, &internalv1.CollectTombstonesRequest{Keyspace: t.ks.Name, Partition: uint32(t.p), Keys: cands})
		cancel()
		if err != nil {
			return 0, fmt.Errorf("%s: %w", r.Node, err)
		}
		for _, i := range resp.GetKept() {
			if int64(i) >= int64(len(cands)) {
				return 0, fmt.Errorf("%s: kept key %d of a request of %d keys", r.Node, i, len(cands))
			}
			kept[i] = true
		}
	}
	n := 0
	for i, c := range cands {
		if kept[i] {
			continue
		}
		ok, err := a.cfg.Store.DeleteIfUnchanged(loc, c.Key, sets[i])
		if err != nil {
			return n, err
		}
		if ok {
			n++
		}
	}
	return n, nil
}

// DefaultTombstoneGrace is Config.TombstoneGrace's default.
const DefaultTombstoneGrace = 24 * time.Hour
