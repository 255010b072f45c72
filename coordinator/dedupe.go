package coordinator

import (
	"crypto/sha256"
	"sync"
	"time"
)

// requestIDs remembers the request IDs of recent writes for a bounded window
// (by count and by age), so that a retried write — by a client, or by a
// coordinator whose forward failed after the replica applied it — is applied
// once. IDs come from writes this node minted and from sibling sets other
// replicas sent it; a sibling still stored carries its ID too.
//
// Its map and ring hold no pointers (fixed-size keys, times as Unix
// nanoseconds), so the garbage collector does not scan the up to
// DefaultMaxRequestIDs entries on every cycle: as strings and time.Times
// they were the largest pointer-bearing structure of a busy node.
type requestIDs struct {
	max    int
	window time.Duration
	mu     struct {
		sync.Mutex
		seen  map[idKey]int64 // Unix nanoseconds remembered
		order []idKey         // insertion order, a ring of at most max
		head  int
	}
}

// idKey is a request ID as a map key: IDs of up to 16 bytes (what the Go
// client and coordinators mint) verbatim with their length, longer ones
// (a UUID as text, say; at most version.MaxRequestIDLen) as the first 16
// bytes of their SHA-256 and n = hashedID, which no verbatim length equals.
// Two distinct IDs share a key only if SHA-256 collides on 128 bits.
type idKey struct {
	b [16]byte
	n uint8
}

const hashedID = 0xff

func keyOf(id []byte) idKey {
	var k idKey
	if len(id) <= len(k.b) {
		copy(k.b[:], id)
		k.n = uint8(len(id))
		return k
	}
	sum := sha256.Sum256(id)
	copy(k.b[:], sum[:])
	k.n = hashedID
	return k
}

func newRequestIDs(max int, window time.Duration) *requestIDs {
	r := &requestIDs{max: max, window: window}
	r.mu.seen = make(map[idKey]int64)
	return r
}

// Seen reports whether id was remembered within the window.
func (r *requestIDs) Seen(id []byte, now time.Time) bool {
	if len(id) == 0 || r.max <= 0 {
		return false
	}
	k := keyOf(id)
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.mu.seen[k]
	return ok && now.UnixNano()-t < int64(r.window)
}

// Remember records id; the oldest is forgotten once max are held. It
// returns how many IDs are held.
func (r *requestIDs) Remember(id []byte, now time.Time) int {
	if len(id) == 0 || r.max <= 0 {
		return 0
	}
	k, t := keyOf(id), now.UnixNano()
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.mu.seen[k]; ok {
		r.mu.seen[k] = t
		return len(r.mu.seen)
	}
	if len(r.mu.order) < r.max {
		r.mu.order = append(r.mu.order, k)
	} else {
		delete(r.mu.seen, r.mu.order[r.mu.head])
		r.mu.order[r.mu.head] = k
		r.mu.head = (r.mu.head + 1) % r.max
	}
	r.mu.seen[k] = t
	return len(r.mu.seen)
}
