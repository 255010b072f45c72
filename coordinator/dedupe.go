package coordinator

import (
	"crypto/sha256"
	"encoding/binary"
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
		// Unix nanoseconds remembered, the lowest bit set when the write
		// is known to have met its level (metBit).
		seen  map[idKey]int64
		order []idKey // insertion order, a ring of at most max
		head  int
	}
}

// idKey is a request ID as a map key: the first 16 bytes of the SHA-256
// of the keyspace ID, the user key and the ID, so that an ID is a retry
// only of a write of the same key (clients may reuse an ID, an order
// number say, across keys). Two writes share a key only if SHA-256
// collides on 128 bits.
type idKey [16]byte

func keyOf(ks uint32, key, id []byte) idKey {
	var buf [160]byte // most keys and IDs: no allocation
	b := binary.BigEndian.AppendUint32(buf[:0], ks)
	b = binary.AppendUvarint(b, uint64(len(key)))
	b = append(b, key...)
	b = append(b, id...)
	sum := sha256.Sum256(b)
	var k idKey
	copy(k[:], sum[:])
	return k
}

func newRequestIDs(max int, window time.Duration) *requestIDs {
	r := &requestIDs{max: max, window: window}
	r.mu.seen = make(map[idKey]int64)
	return r
}

// metBit marks, in a remembered time's lowest bit, an ID whose write met
// its level (RememberMet): a coordinator holding no copy may answer a
// retry of it as applied; an ID it only merged (a copy of a write that
// may have failed) it may not.
const metBit = 1

// Seen reports whether id was remembered for the key within the window.
func (r *requestIDs) Seen(ks uint32, key, id []byte, now time.Time) bool {
	seen, _ := r.lookup(ks, key, id, now)
	return seen
}

// SeenMet reports whether id was remembered for the key within the
// window as a write that met its level.
func (r *requestIDs) SeenMet(ks uint32, key, id []byte, now time.Time) bool {
	_, met := r.lookup(ks, key, id, now)
	return met
}

func (r *requestIDs) lookup(ks uint32, key, id []byte, now time.Time) (seen, met bool) {
	if len(id) == 0 || r.max <= 0 {
		return false, false
	}
	k := keyOf(ks, key, id)
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.mu.seen[k]
	if !ok || now.UnixNano()-t >= int64(r.window) {
		return false, false
	}
	return true, t&metBit != 0
}

// Remember records id for the key; the oldest is forgotten once max are
// held. It returns how many IDs are held, and whether the one forgotten
// for it was still within the window (a retry of that write arriving now
// would be applied again: max is too small for the write rate).
func (r *requestIDs) Remember(ks uint32, key, id []byte, now time.Time) (held int, early bool) {
	return r.remember(ks, key, id, now, false)
}

// RememberMet is Remember for a write this node coordinated that met its
// level.
func (r *requestIDs) RememberMet(ks uint32, key, id []byte, now time.Time) (held int, early bool) {
	return r.remember(ks, key, id, now, true)
}

func (r *requestIDs) remember(ks uint32, key, id []byte, now time.Time, met bool) (held int, early bool) {
	if len(id) == 0 || r.max <= 0 {
		return 0, false
	}
	k, t := keyOf(ks, key, id), now.UnixNano()&^metBit
	if met {
		t |= metBit
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.mu.seen[k]; ok {
		r.mu.seen[k] = t | old&metBit // once met, always met
		return len(r.mu.seen), false
	}
	if len(r.mu.order) < r.max {
		r.mu.order = append(r.mu.order, k)
	} else {
		old := r.mu.order[r.mu.head]
		early = t-r.mu.seen[old] < int64(r.window)
		delete(r.mu.seen, old)
		r.mu.order[r.mu.head] = k
		r.mu.head = (r.mu.head + 1) % r.max
	}
	r.mu.seen[k] = t
	return len(r.mu.seen), early
}
