package coordinator

import (
	"math"
	"sync"
	"time"

	"github.com/meridiankv/meridian/version"
)

// HLC is a hybrid logical clock: it follows the wall clock but never goes
// backwards and orders events the node has observed, so last-writer-wins
// never depends on the raw wall clock alone.
type HLC struct {
	now func() time.Time
	mu  struct {
		sync.Mutex
		last version.Timestamp
	}
}

// NewHLC returns a clock reading physical time from now.
func NewHLC(now func() time.Time) *HLC {
	return &HLC{now: now}
}

// Now returns a timestamp greater than every one returned or observed before.
func (h *HLC) Now() version.Timestamp {
	wall := h.now().UnixNano()
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case wall > h.mu.last.Wall:
		h.mu.last = version.Timestamp{Wall: wall}
	case h.mu.last.Logical == math.MaxUint32:
		// The logical counter is spent (a timestamp observed from data
		// can carry any): move a nanosecond on rather than wrap to 0,
		// below what was observed.
		h.mu.last = version.Timestamp{Wall: h.mu.last.Wall + 1}
	default:
		h.mu.last.Logical++
	}
	return h.mu.last
}

// Observe moves the clock past a timestamp seen in data from elsewhere,
// unless it is more than maxOffset ahead of this node's wall clock: one
// node with a fast clock, or one crafted write, must not drag every
// coordinator's clock ahead for good. It reports whether t was accepted.
func (h *HLC) Observe(t version.Timestamp, maxOffset time.Duration) bool {
	if maxOffset > 0 && t.Wall > h.now().UnixNano()+int64(maxOffset) {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if t.Compare(h.mu.last) > 0 {
		h.mu.last = t
	}
	return true
}
