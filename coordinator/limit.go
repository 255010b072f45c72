package coordinator

import (
	"context"
	"math"
	"sync"
	"time"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
)

// limiter bounds the requests in flight with a limit that adapts to
// latency, in the manner of Netflix's gradient limiter: it keeps a slow
// average of request latency (the node's normal) for each class of
// request (see latencyClass) and compares each new sample with its class's
// normal. While latency stays near normal the limit grows by about
// its square root per round; when latency rises above twice the normal —
// requests are queueing for CPU or disk rather than being served — the
// limit shrinks in proportion (to half at most), once for the requests
// in flight when it does, but only while the node is busy (at least
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
		// longRTT is each class's EWMA of latency, seconds (0: no
		// sample yet).
		longRTT [limiterClasses]float64
		// admitted numbers the requests admitted; cutAt is the last
		// one admitted when the limit was last cut.
		admitted, cutAt uint64
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

// acquire takes a slot, waiting at most l.wait (or until ctx ends), and
// returns the request's admission number (for release).
func (l *limiter) acquire(ctx context.Context) (uint64, bool) {
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
			l.mu.admitted++
			seq := l.mu.admitted
			l.mu.Unlock()
			return seq, true
		}
		if l.wait <= 0 {
			l.mu.Unlock()
			return 0, false
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
			return 0, false
		}
	}
}

// latencyClass groups requests whose latencies are alike: reads, writes
// and durable writes, each at each consistency level (explicit R or W a
// level of its own). With one normal for all, a node serving fast reads
// and durable writes (an fsync each) took every write for congestion and
// held its limit at the minimum under a steady closed loop.
type latencyClass uint8

const (
	classLevels    = 11 // kvv1.Level 0–9, then explicit R/W (and unknown levels)
	limiterClasses = 3 * classLevels
)

// classOf is the latency class of a request: op, durability and level.
func classOf(op Op, cons *kvv1.Consistency) latencyClass {
	kind := 0 // read
	if op == OpWrite {
		kind = 1
		if durable(cons) {
			kind = 2
		}
	}
	level := classLevels - 1
	if l := cons.GetLevel(); l >= 0 && int(l) < classLevels-1 && !(op == OpRead && cons.GetR() > 0 || op == OpWrite && cons.GetW() > 0) {
		level = int(l)
	}
	return latencyClass(kind*classLevels + level)
}

// release frees the slot of request seq (acquire's number); rtt is the
// request's latency when it was served (ok), which feeds the limit through
// its class's normal.
func (l *limiter) release(class latencyClass, seq uint64, rtt time.Duration, ok bool) {
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
	long := &l.mu.longRTT[class]
	if *long == 0 {
		*long = s
		return
	}
	*long += (s - *long) * limiterLongAlpha
	if s < *long {
		// Latency fell below normal (load went away): let the normal
		// follow faster, so the limit recovers within seconds.
		*long += (s - *long) * 0.05
	}
	gradient := math.Max(0.5, math.Min(1.0, limiterTolerance**long/s))
	if gradient < 1 && busy {
		// Congestion. One stall (an fsync, a memtable flush, a GC pause)
		// slows every request in flight at once; cutting for each of them
		// took the limit to its floor for one event. As TCP halves once
		// per round trip, only a slow request admitted after the last cut
		// cuts again; the others hold the limit.
		if seq > l.mu.cutAt {
			l.mu.limit = math.Max(l.min, l.mu.limit*gradient)
			l.mu.cutAt = l.mu.admitted
		}
		return
	}
	target := l.mu.limit + math.Sqrt(l.mu.limit)
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
