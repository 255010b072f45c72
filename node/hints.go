package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridiankv/meridian/coordinator"
	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/repair"
	"github.com/meridiankv/meridian/replica"
	"github.com/meridiankv/meridian/telemetry"
	"github.com/meridiankv/meridian/version"
)

// hintTracker knows which nodes this node holds undelivered hints for and
// tells the cluster through gossip metadata, so that no coordinator counts
// a returning replica toward a read quorum before its hints arrive. Hints
// the target refused (and keeps refusing) are not on their way: they do
// not count (repair.HintLog.Owed).
type hintTracker struct {
	log     *repair.HintLog
	refused func() error  // the store's write gate: hints are new data too
	changed chan struct{} // signalled when the set changes
	// onDropped is told of hints not stored or dropped undelivered.
	onDropped atomic.Pointer[func(target string, loc replica.Loc)]
	mu        struct {
		sync.Mutex
		targets map[string]bool
		// since, while a refresh reads the log, collects the targets
		// stored meanwhile, which its read may have missed.
		since map[string]bool
	}
}

// newHintTracker opens the hint log on the store's engine with cfg's
// bounds and exports its gauges through metrics (when not nil).
func newHintTracker(store *replica.Store, cfg Config, now func() time.Time, metrics *telemetry.Metrics) (*hintTracker, error) {
	h := &hintTracker{refused: store.WritesRefused, changed: make(chan struct{}, 1)}
	h.mu.targets = map[string]bool{}
	lc := repair.HintLogConfig{Now: now, OnDropped: func(target string, loc replica.Loc) {
		if fn := h.onDropped.Load(); fn != nil {
			(*fn)(target, loc)
		}
	}}
	if cfg.HintWindow != nil {
		lc.Window = *cfg.HintWindow
		lc.Off = lc.Off || *cfg.HintWindow == 0
	}
	lc.MaxAge = hintMaxAge(cfg.TombstoneGrace)
	if cfg.MaxHintBytes != nil {
		lc.MaxBytes = int64(*cfg.MaxHintBytes)
		lc.Off = lc.Off || *cfg.MaxHintBytes == 0
	}
	var err error
	if h.log, err = repair.NewHintLog(store.Engine(), lc); err != nil {
		return nil, err
	}
	if metrics != nil {
		if err := metrics.RegisterHints(h.metrics); err != nil {
			return nil, fmt.Errorf("hint metrics: %w", err)
		}
	}
	return h, h.refresh()
}

// hintMaxAge is the age past which a hint is dropped undelivered: nine
// tenths of the tombstone grace (the rest covers clocks apart and
// deliveries under way), so no hint lands after a tombstone of a delete
// that followed its write could have been collected. None when tombstones
// are never collected.
func hintMaxAge(grace time.Duration) time.Duration {
	if grace == 0 {
		grace = repair.DefaultTombstoneGrace
	}
	if grace < 0 {
		return 0
	}
	return grace - grace/10
}

func (h *hintTracker) metrics() telemetry.HintStats {
	out := telemetry.HintStats{Dropped: h.log.Dropped()}
	for _, t := range h.log.Stats() {
		out.Targets = append(out.Targets, telemetry.HintTargetStats{
			Target: t.Target, Count: t.Count, Bytes: t.Bytes, OldestAge: t.OldestAge, Quarantined: t.Quarantined, Refused: t.Refused,
		})
	}
	return out
}

// StoreHint stores a hint (coordinator.Hints) and records its target. A
// hint past a bound is not stored (repair.ErrHintDropped, as a
// coordinator.HintRefusedError), nor any while the store refuses writes
// (low on disk).
func (h *hintTracker) StoreHint(target string, loc replica.Loc, keyspace string, key []byte, set version.Set, sync bool, born time.Time) error {
	if err := h.refused(); err != nil {
		return err
	}
	if err := h.log.StoreHintBorn(target, loc, keyspace, key, set, sync, born); err != nil {
		if errors.Is(err, repair.ErrHintDropped) {
			return &coordinator.HintRefusedError{Err: err, Window: errors.Is(err, repair.ErrHintWindow)}
		}
		return err
	}
	h.mu.Lock()
	added := !h.mu.targets[target]
	h.mu.targets[target] = true
	if h.mu.since != nil {
		h.mu.since[target] = true
	}
	h.mu.Unlock()
	if added {
		h.signal()
	}
	return nil
}

// refresh re-reads the targets from the store (after a delivery round):
// those still owed hints on their way (repair.HintLog.Owed), leaving out
// a target that refused every hint held for it.
func (h *hintTracker) refresh() error {
	h.beginRefresh()
	h.finishRefresh(h.log.Owed())
	return nil
}

// beginRefresh starts collecting the targets stored while the log is
// read; finishRefresh makes the targets those the log owes (list) and
// those.
func (h *hintTracker) beginRefresh() {
	h.mu.Lock()
	h.mu.since = map[string]bool{}
	h.mu.Unlock()
}

func (h *hintTracker) finishRefresh(list []string) {
	next := make(map[string]bool, len(list))
	for _, t := range list {
		next[t] = true
	}
	h.mu.Lock()
	// A target whose first hint was stored while the log was read is
	// owed too: dropped here, it would leave gossip (and read quorums
	// would count it) until the next round.
	for t := range h.mu.since {
		next[t] = true
	}
	h.mu.since = nil
	same := len(next) == len(h.mu.targets)
	for t := range next {
		same = same && h.mu.targets[t]
	}
	h.mu.targets = next
	h.mu.Unlock()
	if !same {
		h.signal()
	}
}

func (h *hintTracker) signal() {
	select {
	case h.changed <- struct{}{}:
	default:
	}
}

// Has reports whether this node holds hints on their way to id.
func (h *hintTracker) Has(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.mu.targets[id]
}

// Targets lists the nodes this node holds hints on their way to, sorted.
func (h *hintTracker) Targets() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, 0, len(h.mu.targets))
	for t := range h.mu.targets {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

// gossipLoop re-broadcasts this node's metadata whenever its hint targets
// change (or kick asks: its epoch, whether it is low on disk), until ctx
// ends.
func (h *hintTracker) gossipLoop(ctx context.Context, base membership.Meta, g *membership.Gossip, topo func() *membership.Topology, diskLow func() bool, onErr func(error)) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.changed:
		}
		m := base
		m.HintsFor = h.Targets()
		m.DiskLow = diskLow()
		t := topo()
		m.Epoch, m.ClusterID = t.Epoch, t.ClusterID
		if t.ClusterID != "" {
			// A restored node gossips the cluster it was restored from
			// only while it waits for a cluster initialized from it.
			m.Restored = ""
		}
		if err := g.UpdateMeta(m); err != nil && ctx.Err() == nil && !errors.Is(err, membership.ErrClosed) {
			onErr(err)
		}
	}
}

// kick makes the gossip loop publish the node's metadata again (the
// epoch changed, or whether the node is low on disk).
func (h *hintTracker) kick() {
	select {
	case h.changed <- struct{}{}:
	default:
	}
}

// routing is what the coordinator asks about other nodes: liveness from
// gossip and calls, and whether a node is still owed hints — by a live
// peer (from its gossip metadata) or by this node.
type routing struct {
	*liveness
	hints *hintTracker
	dc    string // this node's
}

// PendingHints reports whether a live node holds undelivered hints for id.
func (r routing) PendingHints(id string) bool {
	return r.hints.Has(id) || r.liveness.pendingHints(id)
}

// PendingHintsFrom reports whether a live node in dc (this one included,
// when it is in dc) holds undelivered hints for id.
func (r routing) PendingHintsFrom(id, dc string) bool {
	return (r.dc == dc && r.hints.Has(id)) || r.liveness.pendingHintsFrom(id, dc)
}

// HintsPending reports whether a live node (this one included) holds
// undelivered hints for id, as this node's coordinator sees it.
func (n *Node) HintsPending(id string) bool {
	return routing{liveness: n.live, hints: n.hints, dc: n.self.DC}.PendingHints(id)
}

// HintTargets lists the nodes this node holds hints for.
func (n *Node) HintTargets() []string { return n.hints.Targets() }

// HintLog is the hints this node holds for other nodes.
func (n *Node) HintLog() *repair.HintLog { return n.hints.log }

// OnHintDropped sets fn to be told of every hint this node did not store
// or dropped undelivered (a bound was reached, hints are off, or the hint
// outlived the window): the partition needs priority repair. fn must not
// block. Nil unsets it.
func (n *Node) OnHintDropped(fn func(target string, loc replica.Loc)) {
	if fn == nil {
		n.hints.onDropped.Store(nil)
		return
	}
	n.hints.onDropped.Store(&fn)
}
