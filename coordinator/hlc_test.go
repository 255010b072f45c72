package coordinator

import (
	"math"
	"testing"
	"time"

	"github.com/meridiankv/meridian/version"
)

func TestHLCRefusesTimestampsBeyondMaxOffset(t *testing.T) {
	now := time.Unix(1000, 0)
	h := NewHLC(func() time.Time { return now })
	ahead := version.Timestamp{Wall: now.Add(time.Hour).UnixNano()}
	if h.Observe(ahead, 500*time.Millisecond) {
		t.Fatal("observed a timestamp an hour ahead")
	}
	if got := h.Now(); got.Wall >= ahead.Wall {
		t.Fatalf("clock dragged to %v by a refused timestamp", got)
	}
	near := version.Timestamp{Wall: now.Add(400 * time.Millisecond).UnixNano(), Logical: 3}
	if !h.Observe(near, 500*time.Millisecond) {
		t.Fatal("refused a timestamp within the offset")
	}
	if got := h.Now(); got.Compare(near) <= 0 {
		t.Fatalf("Now %v not after observed %v", got, near)
	}
}

// TestHLCLogicalCounterDoesNotWrap: an observed timestamp whose logical
// counter is at its maximum (data can carry any) does not make the next
// timestamp wrap to a logical 0 below it.
func TestHLCLogicalCounterDoesNotWrap(t *testing.T) {
	now := time.Unix(1000, 0)
	h := NewHLC(func() time.Time { return now })
	spent := version.Timestamp{Wall: now.Add(400 * time.Millisecond).UnixNano(), Logical: math.MaxUint32}
	if !h.Observe(spent, 500*time.Millisecond) {
		t.Fatal("refused a timestamp within the offset")
	}
	prev := spent
	for range 3 {
		got := h.Now()
		if got.Compare(prev) <= 0 {
			t.Fatalf("Now %v not after %v", got, prev)
		}
		prev = got
	}
}
