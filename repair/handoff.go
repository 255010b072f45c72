// Package repair makes replicas converge: the hint log keeps copies for
// unreachable replicas and hinted handoff delivers them once those come
// back. (Merkle-tree anti-entropy and partition handoff join this package.)
package repair

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	"github.com/meridiankv/meridian/replica"
	"github.com/meridiankv/meridian/transport"
)

// Writer sends a sibling set to a node (the coordinator's Peers has it).
type Writer interface {
	Write(ctx context.Context, node string, req *internalv1.WriteRequest) error
}

// Liveness says whether a node is up, and whether it gossips that it
// refuses writes for lack of disk space (its hints wait, without failed
// attempts or backoff, until it has room: it is then woken).
type Liveness interface {
	Alive(id string) bool
	DiskLow(id string) bool
}

// Handoff defaults.
const (
	DefaultHandoffWorkers = 4
	DefaultHandoffRate    = 2000 // hints per second, all targets together
	DefaultHandoffBatch   = 512  // hints per target per round
	// DefaultHandoffBatchBytes bounds the hints read into memory per target
	// per round: a hot key's hint can hold a hundred siblings, and 512 of
	// those were half a gigabyte across targets.
	DefaultHandoffBatchBytes = 4 << 20
	DefaultMaxBackoff        = 10 * time.Second
)

// Handoff delivers hints held by this node to their targets: per target
// from where the last round stopped, several targets at once under one
// rate limit, backing off from targets that fail.
type Handoff struct {
	Log   *HintLog
	Peers Writer
	Live  Liveness
	// IsMember reports whether an ID is in the topology; hints for other
	// IDs go to the nodes that replicate their partitions now (Place), or
	// are dropped. Nil keeps them all.
	IsMember func(id string) bool
	// Place, when set, says where a hint's data belongs now: the topology
	// may have changed since it was stored. gone: the hint's keyspace no
	// longer exists under the ID it was stored with (dropped): the hint
	// is dropped, its data went with the keyspace.
	// Otherwise nodes are those that replicate the partition or are about
	// to (nil: not known yet; the hint goes as stored). A hint whose
	// target no longer replicates its partition, or whose target left the
	// topology, is handed to those nodes rather than sent or dropped: it
	// may be the only copy of an acknowledged write. A hint whose target
	// still replicates it goes to the target, however old (within the
	// log's MaxAge).
	Place func(keyspace string, loc replica.Loc) (nodes []string, gone bool)
	// Leaving, when set, reports whether this node is leaving the cluster
	// (decommissioned, replaced or removed): the hints of targets it
	// cannot reach are handed (handOver), as hints for them, to a live
	// node that replicates their partition, which delivers them in its
	// turn.
	Leaving func() bool
	// Removed, when set, reports whether this node was removed from the
	// cluster. Peers then take only its hint hand-overs (writes naming
	// hint_for, unary, of hints born before the removal), not plain
	// writes: its routing stopped at its removal. So every hint goes that
	// way, a live target's too: to the target first, which merges it when
	// it replicates the partition, else to another live replica of it,
	// which keeps it as a hint for the target.
	Removed func() bool
	// Self is this node's ID; Local merges a hint's data into this node's
	// own copy when this node is one of Place's nodes.
	Self     string
	Local    Merger
	Interval time.Duration // between delivery rounds (default 1s)
	Timeout  time.Duration // per delivery (default 5s), plus a second per MiB of the set (sizedTimeout)
	Workers  int           // targets delivered to at once (default 4)
	Rate     float64       // hints delivered per second, all targets (default 2000)
	Batch    int           // hints per target per round (default 512)
	// BatchBytes bounds the bytes of hints read per target per round
	// (default DefaultHandoffBatchBytes; at least one hint is read).
	BatchBytes int
	// MinBackoff and MaxBackoff bound the pause after a failed delivery,
	// doubling per failure (defaults Interval and 1m).
	MinBackoff, MaxBackoff time.Duration
	Now                    func() time.Time // default time.Now
	Logger                 *slog.Logger
	// Delivered, when set, is told how many hints each round delivered.
	Delivered func(n int)
	// AfterRound, when set, runs after every delivery round.
	AfterRound func()

	init   sync.Once
	bucket *tokenBucket
	// agedLogged is when a hint dropped for its age was last logged at
	// warning level (time.Time).
	agedLogged atomic.Value
	// deniedAt is when a target last refused this node as not a member
	// (Unix nanoseconds; 0: never): a node removed while it was down
	// never applies its removal, so its own metadata cannot say so.
	deniedAt atomic.Int64
	mu       sync.Mutex
	state    map[string]*delivery
}

// delivery is the per-target state between rounds.
type delivery struct {
	cursor     []byte    // last hint key handled; nil: start of the target's hints
	inPass     bool      // a pass over the target's hints is under way
	oldestLeft time.Time // oldest hint the pass left in place
	// notOwed counts the hints the pass left in place for other replicas
	// (their partition moved off the target): like refused ones, not on
	// their way to it.
	notOwed int
	refused int // hints the pass left in place because the target refused them
	// handCursor is where the next hand-over of a leaving node resumes
	// (nil: the start of the target's hints).
	handCursor []byte
	backoff    time.Duration
	retryAt    time.Time
	// refusedLogged is when a refused hint was last logged at warning
	// level: every pass meets it again, the log hears of it once a minute.
	refusedLogged time.Time
	// woken (guarded by Handoff.mu) ends the backoff at the next round:
	// the target was seen coming back.
	woken bool
}

// Wake ends a target's backoff after failed deliveries: gossip says it is
// back, so its hints go at the next round instead of after up to
// MaxBackoff.
func (h *Handoff) Wake(target string) {
	h.setup()
	h.mu.Lock()
	defer h.mu.Unlock()
	if d := h.state[target]; d != nil {
		d.woken = true
	}
}

// retryAt is when t may be tried again; a woken target at once. Called
// between rounds only (no delivery to t is running).
func (h *Handoff) retryAt(t string) time.Time {
	d := h.target(t)
	h.mu.Lock()
	woken := d.woken
	d.woken = false
	h.mu.Unlock()
	if woken {
		d.backoff, d.retryAt = 0, time.Time{}
	}
	return d.retryAt
}

func (h *Handoff) setup() {
	h.init.Do(func() {
		if h.Interval <= 0 {
			h.Interval = time.Second
		}
		if h.Timeout <= 0 {
			h.Timeout = 5 * time.Second
		}
		if h.Workers <= 0 {
			h.Workers = DefaultHandoffWorkers
		}
		if h.Rate <= 0 {
			h.Rate = DefaultHandoffRate
		}
		if h.BatchBytes <= 0 {
			h.BatchBytes = DefaultHandoffBatchBytes
		}
		if h.Batch <= 0 {
			h.Batch = DefaultHandoffBatch
		}
		if h.MinBackoff <= 0 {
			h.MinBackoff = h.Interval
		}
		if h.MaxBackoff <= 0 {
			h.MaxBackoff = DefaultMaxBackoff
		}
		if h.MaxBackoff < h.MinBackoff {
			h.MaxBackoff = h.MinBackoff
		}
		if h.Now == nil {
			h.Now = time.Now
		}
		if h.Logger == nil {
			h.Logger = slog.New(slog.DiscardHandler)
		}
		h.bucket = newTokenBucket(h.Rate, max(1, int(h.Rate/10)), h.Now)
		h.agedLogged.Store(time.Time{})
		h.state = map[string]*delivery{}
	})
}

// Run delivers hints every Interval until ctx is done.
func (h *Handoff) Run(ctx context.Context) {
	h.setup()
	t := time.NewTicker(h.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n, err := h.DeliverOnce(ctx)
			if err != nil && ctx.Err() == nil {
				h.Logger.Warn("hinted handoff round failed", "err", err)
			}
			if h.Delivered != nil && n > 0 {
				h.Delivered(n)
			}
			if h.AfterRound != nil {
				h.AfterRound()
			}
		}
	}
}

// DeliverOnce runs one round: it drops hints for targets outside the
// topology and delivers up to Batch hints to each live target that is not
// backing off, Workers targets at a time. It returns how many hints were
// delivered.
func (h *Handoff) DeliverOnce(ctx context.Context) (int, error) {
	h.setup()
	now := h.Now()
	var ready []string
	for _, t := range h.Log.Targets() {
		if h.IsMember != nil && !h.IsMember(t) {
			moved, dropped, kept, err := h.rehomeAll(t)
			if err != nil {
				return 0, err
			}
			if kept == 0 {
				h.forget(t)
			}
			h.Log.forgetTarget(t)
			level := slog.LevelInfo
			if moved+dropped == 0 {
				level = slog.LevelDebug // only kept again: said before
			}
			h.Logger.Log(ctx, level, "hints for a node outside the topology: handed to the current replicas of their partitions, or dropped", "target", t, "handed", moved, "dropped", dropped, "kept_for_next_round", kept)
			continue
		}
		if h.Removed != nil && h.Removed() || h.deniedRecently() {
			handed, err := h.handOver(ctx, t)
			if err != nil {
				return 0, err
			}
			if handed > 0 {
				h.Logger.Info("removed from the cluster: handed hints over to their target or their partition's replicas", "target", t, "hints", handed)
			}
			continue
		}
		if !h.Live.Alive(t) || h.Live.DiskLow(t) || now.Before(h.retryAt(t)) {
			// A target away past the window keeps its hints here: they
			// are not handed to the partition's other replicas. Those
			// mostly took the same writes when they were made (or are
			// owed them as hints of their own), so copying every expired
			// hint into hints for each of them would multiply the log by
			// the replication factor for little. Waiting loses nothing:
			// the target's return delivers them, its removal hands them
			// on (rehomeAll), and MaxAge, which bounds a hint by its
			// write's age wherever it is held, would drop a handed-on
			// copy no later. The window only stops new hints for the
			// target (each refusal reported: its partition is repaired
			// first).
			if h.Leaving != nil && h.Leaving() {
				handed, err := h.handOver(ctx, t)
				if err != nil {
					return 0, err
				}
				if handed > 0 {
					h.Logger.Info("leaving the cluster: handed hints for an unreachable target to other nodes", "target", t, "hints", handed)
				}
			}
			continue
		}
		ready = append(ready, t)
	}
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		delivered int
		firstErr  error
		sem       = make(chan struct{}, h.Workers)
	)
	for _, t := range ready {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			n, err := h.deliverTarget(ctx, t)
			mu.Lock()
			defer mu.Unlock()
			delivered += n
			if err != nil && firstErr == nil {
				firstErr = err
			}
		}()
	}
	wg.Wait()
	if delivered > 0 {
		h.Logger.Info("hinted handoff delivered", "hints", delivered, "targets", len(ready))
	}
	return delivered, firstErr
}

func (h *Handoff) target(t string) *delivery {
	h.mu.Lock()
	defer h.mu.Unlock()
	d := h.state[t]
	if d == nil {
		d = &delivery{}
		h.state[t] = d
	}
	return d
}

func (h *Handoff) forget(t string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.state, t)
}

type rawHint struct{ k, v []byte }

// deliverTarget delivers the next batch of t's hints, from its cursor.
// Only one goroutine runs it per target at a time.
func (h *Handoff) deliverTarget(ctx context.Context, t string) (delivered int, err error) {
	d := h.target(t)
	p := hintPrefix(t)
	lower := p
	if d.cursor != nil {
		lower = append(slices.Clone(d.cursor), 0) // the key right after the cursor
	} else {
		d.inPass, d.oldestLeft, d.refused, d.notOwed = true, time.Time{}, 0, 0
		h.Log.beginPass(t)
	}
	var (
		batch []rawHint
		size  int
		full  bool // the batch stopped at a bound with hints left after it
	)
	err = h.Log.scan(lower, prefixEnd(p), func(k, v []byte) bool {
		if len(batch) == h.Batch || len(batch) > 0 && size+len(k)+len(v) > h.BatchBytes {
			full = true // a hint remains: another round goes on from the cursor
			return false
		}
		batch = append(batch, rawHint{slices.Clone(k), slices.Clone(v)})
		size += len(k) + len(v)
		return true
	})
	if err != nil {
		return 0, err
	}
	atEnd := !full
	defer func() {
		if delivered > 0 {
			h.Log.noteDelivered(t, h.Now(), delivered)
		}
	}()
	for _, r := range batch {
		hint, derr := h.Log.decode(r.k, r.v)
		if derr != nil {
			h.Logger.Warn("quarantined a hint that does not decode", "target", t, "err", derr)
			if err := h.Log.quarantine(r.k); err != nil {
				return delivered, err
			}
			d.cursor = r.k
			continue
		}
		nodes, gone := h.place(hint)
		if gone || h.Log.tooOld(hint) {
			if err := h.dropUndelivered(hint, gone); err != nil {
				return delivered, err
			}
			d.cursor = r.k
			continue
		}
		// t is alive, has room and still replicates the partition (or
		// where it belongs is not known yet: nodes nil): the hint goes to
		// t whatever its age. The window bounds taking new hints for a
		// target long away, not delivering those held: an expired hint
		// may be the only copy of an acknowledged write (a fallback's, at
		// ANY), and MaxAge (above) already drops those that could bring
		// back a deleted value.
		if nodes != nil && !slices.Contains(nodes, t) {
			// t no longer replicates the partition (it moved while t was
			// away).
			kept, err := h.handOn(t, hint, nodes)
			if err != nil {
				return delivered, err
			}
			if kept {
				d.notOwed++ // never going to t: not owed to it
			}
			d.cursor = r.k
			continue
		}
		if err := h.bucket.wait(ctx, 1); err != nil {
			return delivered, nil // shutting down
		}
		enc := hint.Set.Encode()
		wctx, cancel := context.WithTimeout(ctx, sizedTimeout(h.Timeout, len(enc)))
		werr := h.Peers.Write(wctx, t, &internalv1.WriteRequest{
			Keyspace: hint.Keyspace, Key: hint.Key, Set: enc, Sync: true,
		})
		cancel()
		if replica.Refused(werr) && h.Now().Sub(hint.Stored) > h.Log.cfg.Window {
			// Refused, and held past the window (mostly refused all that
			// time: a set past a hard limit there, an actor past the
			// counters it handed out): kept for t, it would keep t from
			// new hints (its oldest hint past the window) until MaxAge.
			// It goes to the partition's other replicas instead.
			kept, err := h.handOn(t, hint, nodes)
			if err != nil {
				return delivered, err
			}
			if kept {
				d.refused++ // not on its way to t either
			}
			d.cursor = r.k
			continue
		}
		if replica.Refused(werr) {
			// The target refuses this key's set (a version too far ahead
			// of its clock): the hint stays for the next pass, until it
			// is taken or held past the window, and the hints after it go
			// on. It is not on its way, so it does not keep the target
			// out of read quorums (HintLog.Owed).
			d.refused++
			level := slog.LevelDebug
			if now := h.Now(); now.Sub(d.refusedLogged) >= time.Minute {
				level, d.refusedLogged = slog.LevelWarn, now
			}
			h.Logger.Log(ctx, level, "hint refused by its target; kept, the others go on", "target", t, "keyspace", hint.Keyspace,
				"key", fmt.Sprintf("%.64q", hint.Key), "err", werr)
			if d.oldestLeft.IsZero() || hint.Stored.Before(d.oldestLeft) {
				d.oldestLeft = hint.Stored
			}
			d.cursor = r.k
			continue
		}
		if werr != nil {
			if ctx.Err() != nil {
				return delivered, nil
			}
			if status.Code(werr) == codes.PermissionDenied {
				h.deniedAt.Store(h.Now().UnixNano())
			}
			first := d.backoff == 0
			d.backoff = min(max(2*d.backoff, h.MinBackoff), h.MaxBackoff)
			d.retryAt = h.Now().Add(d.backoff)
			if first {
				// Once per streak: an SRE sees why hints stay held.
				h.Logger.Warn("hint delivery failing; backing off", "target", t, "err", werr, "retry_in", d.backoff)
			} else {
				h.Logger.Debug("hint delivery failed", "target", t, "err", werr, "retry_in", d.backoff)
			}
			return delivered, nil
		}
		d.backoff = 0
		ok, err := h.Log.Delete(hint)
		if err != nil {
			return delivered, err
		}
		if ok {
			delivered++
		} else if d.oldestLeft.IsZero() || hint.Stored.Before(d.oldestLeft) {
			d.oldestLeft = hint.Stored // changed since read: stays for the next pass
		}
		d.cursor = r.k
	}
	if atEnd {
		if d.inPass {
			h.Log.endPass(t, d.oldestLeft, d.refused, d.notOwed)
		}
		d.cursor, d.inPass = nil, false
	}
	return delivered, nil
}

// handOn hands hint, which t will not take (its partition moved off t,
// or t refused it once held past the window), to nodes, the partition's
// replicas now, as hints for them (merged here when this node is one).
// One they do not take now (their hints are full or past their window,
// the merge here failed) stays for the next pass (kept), until they do
// or it passes MaxAge, as rehomeAll keeps a departed target's: it may be
// the only copy of an acknowledged write. Only one held past the window
// that no node can ever take (none but t, or refused for good) is
// dropped. A kept hint does not count toward t's oldest: it is not on
// its way to t, and counted it would keep t from new hints, past the
// window, until MaxAge (and out of read quorums: the caller counts it as
// not owed).
func (h *Handoff) handOn(t string, hint Hint, nodes []string) (kept bool, err error) {
	expired := h.Now().Sub(hint.Stored) > h.Log.cfg.Window
	moved, forGood, err := h.rehome(hint, nodes)
	if err != nil {
		return false, err
	}
	switch {
	case moved:
		h.Logger.Debug("hint handed to the partition's current replicas", "target", t, "keyspace", hint.Keyspace, "partition", hint.Loc.Partition, "expired", expired)
		return false, nil
	case expired && nodes != nil && (forGood || len(h.takers(hint, nodes)) == 0):
		// (With no placement agreed yet, nodes nil, no taker is known:
		// kept, it may be the only copy of an acknowledged write.)
		return false, h.Log.drop(hint, DropExpired)
	}
	return true, nil
}

// dropUndelivered drops a hint of a dropped keyspace (gone) or one past
// the log's MaxAge, which is reported: its partition needs repair.
func (h *Handoff) dropUndelivered(hint Hint, gone bool) error {
	if gone {
		return h.Log.drop(hint, DropKeyspace)
	}
	// Once a minute at warning level (a target away for a day may leave
	// many), each at debug level; the metric counts them all.
	level := slog.LevelDebug
	if now := h.Now(); now.Sub(h.agedLogged.Load().(time.Time)) >= time.Minute {
		h.agedLogged.Store(now)
		level = slog.LevelWarn
	}
	h.Logger.Log(context.Background(), level, "dropped a hint older than the tombstone grace: delivered now, it could bring back a value deleted since; its partition is marked for repair (meridian_hints_dropped_total{reason=\"aged\"} counts them)",
		"target", hint.Target, "keyspace", hint.Keyspace, "partition", hint.Loc.Partition, "first_hinted", hint.Born)
	return h.Log.drop(hint, DropAged)
}

// deniedRecently reports whether a target refused this node as not a
// member within the last minute: its hints then go as hand-overs (which
// peers take from a removed node) until a minute passes and a delivery
// is tried again.
func (h *Handoff) deniedRecently() bool {
	at := h.deniedAt.Load()
	return at != 0 && h.Now().Sub(time.Unix(0, at)) < time.Minute
}

// handOver sends up to Batch (and BatchBytes) of t's hints, from where
// the last hand-over stopped, as hints for t to a live node (not this
// one) that replicates the hint's partition, t first, fsynced there and
// keeping their age, and deletes each one taken. A hint no such node
// takes stays; one past MaxAge is dropped, one that does not decode set
// aside. A node that failed once is not tried again this round (one not
// answering would cost each hint its timeout). The writes skip the peer
// pipes, which peers refuse to a removed node: each unary call is
// admitted on its own.
func (h *Handoff) handOver(ctx context.Context, t string) (handed int, err error) {
	d := h.target(t)
	lower := d.handCursor
	if lower == nil {
		lower = hintPrefix(t)
	}
	var (
		batch []rawHint
		size  int
		full  bool
	)
	if err := h.Log.scan(lower, prefixEnd(hintPrefix(t)), func(k, v []byte) bool {
		if len(batch) == h.Batch || len(batch) > 0 && size+len(k)+len(v) > h.BatchBytes {
			full = true
			return false
		}
		batch = append(batch, rawHint{slices.Clone(k), slices.Clone(v)})
		size += len(k) + len(v)
		return true
	}); err != nil {
		return 0, err
	}
	d.handCursor = nil // the end: the next hand-over starts over
	if full {
		d.handCursor = append(slices.Clone(batch[len(batch)-1].k), 0)
	}
	defer func() {
		if handed > 0 {
			h.Log.noteDelivered(t, h.Now(), handed)
		}
	}()
	failed := map[string]bool{}
	for _, r := range batch {
		hint, derr := h.Log.decode(r.k, r.v)
		if derr != nil {
			h.Logger.Warn("quarantined a hint that does not decode", "target", t, "err", derr)
			if err := h.Log.quarantine(r.k); err != nil {
				return handed, err
			}
			continue
		}
		nodes, gone := h.place(hint)
		if gone || h.Log.tooOld(hint) {
			if err := h.dropUndelivered(hint, gone); err != nil {
				return handed, err
			}
			continue
		}
		enc := hint.Set.Encode()
		if i := slices.Index(nodes, t); i > 0 { // t first: it merges its own hint
			nodes = slices.Insert(slices.Delete(slices.Clone(nodes), i, i+1), 0, t)
		}
		for _, n := range nodes {
			if n == h.Self || failed[n] || !h.Live.Alive(n) || h.Live.DiskLow(n) {
				continue
			}
			if err := h.bucket.wait(ctx, 1); err != nil {
				return handed, nil // shutting down
			}
			wctx, cancel := context.WithTimeout(transport.Unpiped(ctx), sizedTimeout(h.Timeout, len(enc)))
			werr := h.Peers.Write(wctx, n, &internalv1.WriteRequest{Keyspace: hint.Keyspace, Key: hint.Key, Set: enc, Sync: true,
				HintFor: t, HintBornUnixNanos: hint.Born.UnixNano()})
			cancel()
			if werr != nil {
				if ctx.Err() != nil {
					return handed, nil
				}
				// Unreachable or not answering: the node's, for the rest of
				// the round; a refusal of this one hint: the key's.
				if c := status.Code(werr); c == codes.Unavailable || c == codes.DeadlineExceeded || c == codes.Unknown {
					failed[n] = true
				}
				// Once a minute at warning level: an operator told to
				// wait for a leaving node's hints to go learns why not.
				level := slog.LevelDebug
				if now := h.Now(); now.Sub(d.refusedLogged) >= time.Minute {
					level, d.refusedLogged = slog.LevelWarn, now
				}
				h.Logger.Log(ctx, level, "leaving the cluster: a hint not handed over; tried again next round", "target", t, "to", n, "err", werr)
				continue
			}
			if _, err := h.Log.Delete(hint); err != nil {
				return handed, err
			}
			handed++
			break
		}
	}
	return handed, nil
}

// place asks Place where hint's data belongs now.
func (h *Handoff) place(hint Hint) (nodes []string, gone bool) {
	if h.Place == nil {
		return nil, false
	}
	return h.Place(hint.Keyspace, hint.Loc)
}

// rehome hands hint's data to nodes other than its target, as hints for
// them (merged into this node's copy when this node is one), then deletes
// it. moved is false, and the hint stays, when no such node took it: none
// other than the target, or one refused (its hints are full); forGood
// when a refusal asking again cannot change (a key too long, a set past
// a hard limit, hints off).
func (h *Handoff) rehome(hint Hint, nodes []string) (moved, forGood bool, err error) {
	others := h.takers(hint, nodes)
	if len(others) == 0 {
		return false, false, nil
	}
	for _, n := range others {
		if n == h.Self {
			if err := h.Local.MergeLocal(hint.Keyspace, hint.Key, hint.Set); err != nil {
				h.Logger.Debug("hint's data not merged here", "keyspace", hint.Keyspace, "partition", hint.Loc.Partition, "err", err)
				if replica.Refused(err) && len(others) > 1 {
					// This copy refuses the set (a version too far
					// ahead, a hard limit), as its target did: the
					// other replicas may still take it.
					continue
				}
				// Failed, or refused with no other taker: the hint
				// stays for the next pass.
				return false, false, nil
			}
			continue
		}
		// The hint handed on keeps its age: MaxAge bounds how long after
		// its write it may be delivered, wherever it went meanwhile.
		if err := h.Log.StoreHintBorn(n, hint.Loc, hint.Keyspace, hint.Key, hint.Set, false, hint.Born); err != nil {
			if errors.Is(err, ErrHintDropped) || errors.Is(err, replica.ErrKeyTooLong) {
				return false, errors.Is(err, errRefusedForGood) || errors.Is(err, replica.ErrKeyTooLong), nil
			}
			return false, false, err
		}
	}
	// Taken everywhere: only now may the original go (the new hints and
	// the merge are in the same engine's log before this delete, so a
	// crash keeps them whenever it keeps the delete).
	if _, err := h.Log.Delete(hint); err != nil {
		return false, false, err
	}
	return true, false, nil
}

// takers are the nodes of nodes that may take hint's data instead of its
// target.
func (h *Handoff) takers(hint Hint, nodes []string) []string {
	return slices.DeleteFunc(slices.Clone(nodes), func(n string) bool {
		return n == hint.Target || n == h.Self && h.Local == nil
	})
}

// rehomeAll hands every hint held for t, a node that left the topology,
// to the nodes that replicate its partition now, and drops those no node
// can take (or whose keyspace is gone). A hint a node could take but did
// not now (its hints are full, the merge here failed) stays for the next
// round: it may be the only copy of an acknowledged write.
func (h *Handoff) rehomeAll(t string) (moved, dropped, kept uint64, err error) {
	p := hintPrefix(t)
	lower := p
	for {
		var batch []rawHint
		if err := h.Log.scan(lower, prefixEnd(p), func(k, v []byte) bool {
			batch = append(batch, rawHint{slices.Clone(k), slices.Clone(v)})
			return len(batch) < h.Batch
		}); err != nil {
			return moved, dropped, kept, err
		}
		if len(batch) == 0 {
			return moved, dropped, kept, nil
		}
		for _, r := range batch {
			lower = append(slices.Clone(r.k), 0)
			hint, derr := h.Log.decode(r.k, r.v)
			if derr == nil && h.Log.tooOld(hint) {
				if err := h.dropUndelivered(hint, false); err != nil {
					return moved, dropped, kept, err
				}
				dropped++
				continue
			}
			if derr == nil {
				nodes, gone := h.place(hint)
				ok, forGood := false, false
				if !gone {
					if ok, forGood, err = h.rehome(hint, nodes); err != nil {
						return moved, dropped, kept, err
					}
				}
				if ok {
					moved++
					continue
				}
				if !gone && !forGood && len(h.takers(hint, nodes)) > 0 {
					kept++
					continue
				}
				reason := DropNonMember
				if gone {
					reason = DropKeyspace
				}
				if err := h.Log.drop(hint, reason); err != nil {
					return moved, dropped, kept, err
				}
				dropped++
				continue
			}
			if _, err := h.Log.remove(r.k, nil); err != nil {
				return moved, dropped, kept, err
			}
			h.Log.countDropped(DropNonMember, 1)
			dropped++
		}
	}
}

// cursor returns t's delivery cursor (tests).
func (h *Handoff) cursor(t string) []byte {
	h.setup()
	return bytes.Clone(h.target(t).cursor)
}

// minTransferRate is the slowest a set is assumed to travel between
// nodes: a call carrying one gets a second more per MiB than its base
// timeout (sizedTimeout).
const minTransferRate = 1 << 20 // bytes a second

// sizedTimeout is a repair call's timeout for a set of n bytes: base,
// plus the time n takes at minTransferRate. A fixed timeout would fail a
// large set over a slow link every time, and as the call is retried
// from the same place (a hint's cursor, an exchange's bucket) the work
// behind it would never be done: a target's later hints never delivered
// (so it stays owed hints, out of read quorums, until the window ends
// them), a partition never verified.
func sizedTimeout(base time.Duration, n int) time.Duration {
	return base + time.Duration(n)*time.Second/minTransferRate
}
