package coordinator

import (
	"sync"
	"time"
)

// requestIDs remembers the request IDs of recent writes for a bounded window
// (by count and by age), so that a retried write — by a client, or by a
// coordinator whose forward failed after the replica applied it — is applied
// once. IDs come from writes this node minted and from sibling sets other
// replicas sent it; a sibling still stored carries its ID too.
type requestIDs struct {
	max    int
	window time.Duration
	mu     struct {
		sync.Mutex
		seen  map[string]time.Time
		order []string // insertion order, a ring of at most max
		head  int
	}
}

func newRequestIDs(max int, window time.Duration) *requestIDs {
	r := &requestIDs{max: max, window: window}
	r.mu.seen = make(map[string]time.Time)
	return r
}

// Seen reports whether id was remembered within the window.
func (r *requestIDs) Seen(id []byte, now time.Time) bool {
	if len(id) == 0 || r.max <= 0 {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.mu.seen[string(id)]
	return ok && now.Sub(t) < r.window
}

// Remember records id; the oldest is forgotten once max are held. It
// returns how many IDs are held.
func (r *requestIDs) Remember(id []byte, now time.Time) int {
	if len(id) == 0 || r.max <= 0 {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	key := string(id)
	if _, ok := r.mu.seen[key]; ok {
		r.mu.seen[key] = now
		return len(r.mu.seen)
	}
	if len(r.mu.order) < r.max {
		r.mu.order = append(r.mu.order, key)
	} else {
		delete(r.mu.seen, r.mu.order[r.mu.head])
		r.mu.order[r.mu.head] = key
		r.mu.head = (r.mu.head + 1) % r.max
	}
	r.mu.seen[key] = now
	return len(r.mu.seen)
}
