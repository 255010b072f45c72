package node

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	"github.com/meridiankv/meridian/coordinator"
	"github.com/meridiankv/meridian/membership"
)

// failureBackoff is how long a node whose calls fail as unreachable is
// treated as down before it is tried again.
const failureBackoff = time.Second

// liveness combines what gossip says (dead or left nodes are down) with
// what this node's own calls see (a node that can't be reached is down for
// failureBackoff). Nodes gossip has not reported yet count as up: calls
// to them decide.
type liveness struct {
	now func() time.Time
	// onUp is told when gossip reports a node alive (to reconnect at once
	// and deliver its hints); guarded by mu once gossip runs (setOnUp).
	// back is whether gossip had it dead or left before, or low on disk
	// (refusing writes): either way, writes can reach it again.
	onUp func(id string, back bool)
	// spawn runs onUp off memberlist's goroutine (nil: a bare goroutine;
	// the node's counts it, so Close waits for it).
	spawn func(func())
	// isMember, when set, says whether a node is in the current topology,
	// asked under mu: an event checked against the previous topology
	// must not bring back what forgetExcept just dropped.
	isMember func(id string) bool
	// lowOnDisk counts the members gossiping DiskLow, so that DiskLow,
	// asked for every replica of every write, takes no lock while none is.
	lowOnDisk atomic.Int32
	mu        struct {
		sync.RWMutex
		down        map[string]bool
		diskLow     map[string]bool // as each member gossips it
		failedUntil map[string]time.Time
		// hintsFor: per live member, the nodes it holds hints for; owed
		// is derived from it: the nodes some live member owes hints.
		hintsFor map[string]membership.HintSet
		holderDC map[string]string // holder → its DC
		owed     map[string]bool
		// owedIn: per DC, the nodes its live members owe hints.
		owedIn map[string]map[string]bool
		// opaque: the live members whose hint targets came hashed or as
		// "all" (too many to name in gossip metadata), asked per lookup.
		opaque map[string]membership.HintSet
	}
}

func newLiveness(now func() time.Time) *liveness {
	l := &liveness{now: now}
	l.mu.down = map[string]bool{}
	l.mu.diskLow = map[string]bool{}
	l.mu.failedUntil = map[string]time.Time{}
	l.mu.hintsFor = map[string]membership.HintSet{}
	l.mu.holderDC = map[string]string{}
	return l
}

// MemberChanged records gossip's view (membership.Listener).
func (l *liveness) MemberChanged(m membership.Member) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.isMember != nil && !l.isMember(m.Meta.ID) {
		return // removed meanwhile: its last word (hint targets) is void
	}
	down := m.State == membership.StateDead || m.State == membership.StateLeft
	back := l.mu.down[m.Meta.ID] && !down
	l.mu.down[m.Meta.ID] = down
	// A node that stops refusing writes for lack of disk takes the hints
	// held for it at once, as one coming back does.
	back = back || l.mu.diskLow[m.Meta.ID] && !m.Meta.DiskLow && !down
	if low := m.Meta.DiskLow && !down; low != l.mu.diskLow[m.Meta.ID] {
		if low {
			l.lowOnDisk.Add(1)
			l.mu.diskLow[m.Meta.ID] = true
		} else {
			l.lowOnDisk.Add(-1)
			delete(l.mu.diskLow, m.Meta.ID)
		}
	}
	if down {
		delete(l.mu.hintsFor, m.Meta.ID)
	} else {
		l.mu.hintsFor[m.Meta.ID] = m.Meta.Hints()
		l.mu.holderDC[m.Meta.ID] = m.Meta.DC
	}
	l.recomputeOwed()
	if !down {
		delete(l.mu.failedUntil, m.Meta.ID)
	}
	if m.State == membership.StateAlive && l.onUp != nil {
		// Never block memberlist's goroutine.
		up, id := l.onUp, m.Meta.ID
		if l.spawn != nil {
			l.spawn(func() { up(id, back) })
		} else {
			go up(id, back)
		}
	}
}

// setOnUp replaces onUp while gossip may be reporting.
func (l *liveness) setOnUp(f func(id string, back bool)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.onUp = f
}

// forgetExcept drops what gossip (and failed calls) said of nodes that are
// no longer members (a removed node's last list of hint targets would
// otherwise keep those targets from counting toward R for good).
func (l *liveness) forgetExcept(member func(id string) bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	changed := false
	for id := range l.mu.hintsFor {
		if !member(id) {
			delete(l.mu.hintsFor, id)
			delete(l.mu.holderDC, id)
			changed = true
		}
	}
	// The rest of what gossip said of former members goes too, so that
	// these maps hold members (and nodes gossiping now), not every node
	// ever seen.
	for id := range l.mu.down {
		if !member(id) {
			delete(l.mu.down, id)
		}
	}
	for id := range l.mu.failedUntil {
		if !member(id) {
			delete(l.mu.failedUntil, id)
		}
	}
	for id := range l.mu.diskLow {
		if !member(id) {
			delete(l.mu.diskLow, id)
			l.lowOnDisk.Add(-1)
		}
	}
	if changed {
		l.recomputeOwed()
	}
}

// recomputeOwed derives, on a membership change, which nodes live members
// owe hints, so that the read path's question (pendingHints) is one
// lookup. l.mu held.
func (l *liveness) recomputeOwed() {
	owed := map[string]bool{}
	owedIn := map[string]map[string]bool{}
	var opaque map[string]membership.HintSet
	for holder, targets := range l.mu.hintsFor {
		dc := l.mu.holderDC[holder]
		if targets.Opaque() {
			if opaque == nil {
				opaque = map[string]membership.HintSet{}
			}
			opaque[holder] = targets
			continue
		}
		for _, t := range targets.Names() {
			if t != holder {
				owed[t] = true
				if owedIn[dc] == nil {
					owedIn[dc] = map[string]bool{}
				}
				owedIn[dc][t] = true
			}
		}
	}
	l.mu.owed, l.mu.owedIn, l.mu.opaque = owed, owedIn, opaque
}

// opaqueOwes reports whether a live member whose hint targets came hashed
// or as "all" (in dc, unless dc is "") may owe id hints. l.mu held.
func (l *liveness) opaqueOwes(id, dc string) bool {
	for holder, set := range l.mu.opaque {
		if holder != id && (dc == "" || l.mu.holderDC[holder] == dc) && set.Owes(id) {
			return true
		}
	}
	return false
}

// pendingHintsFrom reports whether a live member in dc says it holds
// hints for id.
func (l *liveness) pendingHintsFrom(id, dc string) bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.mu.owedIn[dc][id] || len(l.mu.opaque) > 0 && l.opaqueOwes(id, dc)
}

// isDown reports whether gossip last said id is dead or left.
func (l *liveness) isDown(id string) bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.mu.down[id]
}

// DiskLow reports whether id last gossiped that it refuses writes of data
// for lack of disk space (coordinator.Liveness).
func (l *liveness) DiskLow(id string) bool {
	if l.lowOnDisk.Load() == 0 {
		return false
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.mu.diskLow[id]
}

// pendingHints reports whether a live member says it holds hints for id.
func (l *liveness) pendingHints(id string) bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.mu.owed[id] || len(l.mu.opaque) > 0 && l.opaqueOwes(id, "")
}

// Alive reports whether id should be routed to.
func (l *liveness) Alive(id string) bool {
	l.mu.RLock()
	down := l.mu.down[id]
	until, failed := l.mu.failedUntil[id]
	l.mu.RUnlock()
	if down {
		return false
	}
	return !failed || l.now().After(until)
}

func (l *liveness) observe(node string, err error) {
	if err == nil {
		l.mu.RLock()
		_, failed := l.mu.failedUntil[node]
		l.mu.RUnlock()
		if failed {
			l.mu.Lock()
			delete(l.mu.failedUntil, node)
			l.mu.Unlock()
		}
		return
	}
	st, ok := status.FromError(err)
	if ok && (st.Code() != codes.Unavailable || coordinator.IsMeridianStatus(st)) {
		return // the node answered
	}
	l.mu.Lock()
	l.mu.failedUntil[node] = l.now().Add(failureBackoff)
	l.mu.Unlock()
}

// track wraps peers so every call's outcome feeds liveness.
func (l *liveness) track(p coordinator.Peers) coordinator.Peers { return &trackedPeers{l: l, next: p} }

type trackedPeers struct {
	l    *liveness
	next coordinator.Peers
}

func (t *trackedPeers) Read(ctx context.Context, node string, req *internalv1.ReadRequest) (*internalv1.ReadResponse, error) {
	resp, err := t.next.Read(ctx, node, req)
	t.l.observe(node, err)
	return resp, err
}

func (t *trackedPeers) Write(ctx context.Context, node string, req *internalv1.WriteRequest) error {
	err := t.next.Write(ctx, node, req)
	t.l.observe(node, err)
	return err
}

func (t *trackedPeers) Coordinate(ctx context.Context, node string, req *internalv1.CoordinateRequest) (*internalv1.CoordinateResponse, error) {
	resp, err := t.next.Coordinate(ctx, node, req)
	t.l.observe(node, err)
	return resp, err
}
