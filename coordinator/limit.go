package coordinator

import (
	"context"
	"math"
	"sync"
	"time"
)

// limiter bounds the requests in flight with a limit that adapts to
// latency, in the manner of Netflix's gradient limiter: it keeps a slow
// average of request latency (the node's normal) and compares each new
// sample with it. While latency stays near normal the limit grows by about
// its square root per round; when latency rises above twice the normal —
// requests are queueing for CPU or disk rather than being served — the
// limit shrinks in proportion, but only while the node is busy (at least
// half its limit in flight): slow requests with few in flight are slow for
// another reason (a durable write's fsync on a shared disk, a memtable
// flush, a slow peer), and admitting fewer would only shed requests the
// node has room for. A request that finds the limit reached waits
// at most `wait` for a slot, then is shed. The limit stays within
// [min, max].
type limiter struct {
	wait     time.Duration
	min, max float64
	mu       struct {
		sync.Mutex
		inFlight int
		limit    float64
		longRTT  float64 // EWMA of latency, seconds (0: no sample yet)
		// freed is closed (and replaced) on a release while requests
		// wait for a slot; waiting counts them.
		freed   chan struct{}
		waiting int
	}
}

const (
	limiterTolerance = 2.0       // latency up to twice normal is fine
	limiterLongAlpha = 1.0 / 500 // the normal follows ~500 samples
	limiterSmoothing = 0.2       // how fast the limit moves to its target
)

func newLimiter(initial, min, max int, wait time.Duration) *limiter {
	l := &limiter{wait: wait, min: float64(min), max: float64(max)}
	l.mu.limit = math.Max(l.min, math.Min(l.max, float64(initial)))
	l.mu.freed = make(chan struct{})
	return l
}

// acquire takes a slot, waiting at most l.wait (or until ctx ends).
func (l *limiter) acquire(ctx context.Context) bool {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		l.mu.Lock()
		if float64(l.mu.inFlight) < l.mu.limit {
			l.mu.inFlight++
			l.mu.Unlock()
			return true
		}
		if l.wait <= 0 {
			l.mu.Unlock()
			return false
		}
		freed := l.mu.freed
		l.mu.waiting++
		l.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(l.wait)
		}
		var woken bool
		select {
		case <-freed:
			woken = true
		case <-timer.C:
		case <-ctx.Done():
		}
		l.mu.Lock()
		l.mu.waiting--
		l.mu.Unlock()
		if !woken {
			return false
		}
	}
}

// release frees a slot; rtt is the request's latency when it was served
// (ok), which feeds the limit.
func (l *limiter) release(rtt time.Duration, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	busy := float64(l.mu.inFlight) >= l.mu.limit/2
	l.mu.inFlight--
	if l.mu.waiting > 0 {
		// Wake every waiter; they race for the slot. Only then: no
		// allocation per request while the node is not saturated.
		close(l.mu.freed)
		l.mu.freed = make(chan struct{})
	}
	if !ok || rtt <= 0 {
		return
	}
	s := rtt.Seconds()
	if l.mu.longRTT == 0 {
		l.mu.longRTT = s
		return
	}
	l.mu.longRTT += (s - l.mu.longRTT) * limiterLongAlpha
	if s < l.mu.longRTT {
		// Latency fell below normal (load went away): let the normal
		// follow faster, so the limit recovers within seconds.
		l.mu.longRTT += (s - l.mu.longRTT) * 0.05
	}
	gradient := math.Max(0.5, math.Min(1.0, limiterTolerance*l.mu.longRTT/s))
	if !busy {
		gradient = 1
	}
	target := l.mu.limit*gradient + math.Sqrt(l.mu.limit)
	next := l.mu.limit*(1-limiterSmoothing) + target*limiterSmoothing
	l.mu.limit = math.Max(l.min, math.Min(l.max, next))
}

// inUse is how many requests hold a slot; limit the current limit.
func (l *limiter) inUse() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.inFlight
}

func (l *limiter) limit() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return int(l.mu.limit)
}
