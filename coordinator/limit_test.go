package coordinator

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
)

// closedLoop drives a limiter as a closed loop of clients does: every slot
// taken, each finished request followed by the next. Requests finish in
// the order they started.
type closedLoop struct {
	l       *limiter
	started []uint64
}

func (c *closedLoop) fill() {
	for {
		seq, ok := c.l.acquire(context.Background())
		if !ok {
			return
		}
		c.started = append(c.started, seq)
	}
}

// finish ends the oldest request, served in rtt, and starts the next.
func (c *closedLoop) finish(class latencyClass, rtt time.Duration) {
	seq := c.started[0]
	c.started = c.started[1:]
	c.l.release(class, seq, rtt, true)
	c.fill()
}

// drain ends every request in flight, served in rtt, starting none.
func (c *closedLoop) drain(class latencyClass, rtt time.Duration) {
	for _, seq := range c.started {
		c.l.release(class, seq, rtt, true)
	}
	c.started = nil
}

// alone runs n requests one at a time (the node idle but for them).
func alone(l *limiter, n int, rtt time.Duration, ok bool) {
	for i := 0; i < n; i++ {
		seq, _ := l.acquire(context.Background())
		l.release(0, seq, rtt, ok)
	}
}

func TestLimiterAdaptsToLatency(t *testing.T) {
	l := newLimiter(32, 4, 32, 0)
	// Normal latency: the limit stays at its maximum.
	alone(l, 1000, 10*time.Millisecond, true)
	if got := l.limit(); got != 32 {
		t.Fatalf("limit %d under normal latency, want 32", got)
	}
	// Requests start queueing: with the node busy (the limit in flight),
	// latency ten times normal shrinks the limit.
	loop := &closedLoop{l: l}
	loop.fill()
	for i := 0; i < 200; i++ {
		loop.finish(0, 100*time.Millisecond)
	}
	low := l.limit()
	if low > 16 {
		t.Fatalf("limit %d after latency rose tenfold, want it well below 32", low)
	}
	if low < 4 {
		t.Fatalf("limit %d below its minimum 4", low)
	}
	// Latency back to normal: the limit recovers.
	for i := 0; i < 2000; i++ {
		loop.finish(0, 10*time.Millisecond)
	}
	if got := l.limit(); got != 32 {
		t.Fatalf("limit %d after latency recovered, want back to 32", got)
	}
	loop.drain(0, 10*time.Millisecond)
	// Slow requests with few in flight are not queueing here (a durable
	// write's fsync, a slow peer): the limit stays.
	alone(l, 200, 100*time.Millisecond, true)
	if got := l.limit(); got != 32 {
		t.Fatalf("limit %d after slow requests one at a time, want 32", got)
	}
	// Failed requests say nothing about latency.
	alone(l, 100, time.Second, false)
	if got := l.limit(); got != 32 {
		t.Fatalf("limit %d moved on failed requests", got)
	}
}

// TestLimiterKeepsANormalPerClass: a busy node serving fast reads and
// durable writes ten times slower, each steady, is not congested: every
// write is slow only next to the reads. With one normal for both, the
// limit fell to its minimum.
func TestLimiterKeepsANormalPerClass(t *testing.T) {
	l := newLimiter(32, 4, 32, 0)
	read := classOf(OpRead, &kvv1.Consistency{Level: kvv1.Level_LEVEL_QUORUM})
	write := classOf(OpWrite, &kvv1.Consistency{Level: kvv1.Level_LEVEL_QUORUM})
	loop := &closedLoop{l: l}
	loop.fill()
	for i := 0; i < 2000; i++ {
		if i%2 == 0 {
			loop.finish(read, time.Millisecond)
		} else {
			loop.finish(write, 10*time.Millisecond)
		}
	}
	if got := l.limit(); got != 32 {
		t.Fatalf("limit %d with steady reads and slower steady writes, want 32", got)
	}
	// The writes' own latency rising tenfold while busy is congestion.
	for i := 0; i < 100; i++ {
		loop.finish(write, 100*time.Millisecond)
	}
	if got := l.limit(); got > 16 {
		t.Fatalf("limit %d after the writes' latency rose tenfold, want it well below 32", got)
	}
}

// TestLimiterCutsOncePerStall: one stall slows every request in flight at
// once; the limit is cut once for it, not once per slow request (which took
// it to its floor). Only slow requests admitted after a cut cut it again.
func TestLimiterCutsOncePerStall(t *testing.T) {
	l := newLimiter(32, 4, 32, 0)
	alone(l, 1000, 10*time.Millisecond, true)
	loop := &closedLoop{l: l}
	loop.fill()
	// The stall: the 32 requests in flight all answer ten times slower.
	for i := 0; i < 32; i++ {
		loop.finish(0, 100*time.Millisecond)
	}
	if got := l.limit(); got != 16 {
		t.Fatalf("limit %d after one stall, want 16: cut once, by half", got)
	}
	// Requests admitted after the cut are slow too: that is congestion,
	// cut again (once).
	for i := 0; i < 16; i++ {
		loop.finish(0, 100*time.Millisecond)
	}
	if got := l.limit(); got != 8 {
		t.Fatalf("limit %d after the requests admitted at 16 were slow too, want 8", got)
	}
}

func TestClassOf(t *testing.T) {
	durable, async := true, false
	cases := []struct {
		op   Op
		cons *kvv1.Consistency
		want latencyClass
	}{
		{OpRead, nil, 0},
		{OpRead, &kvv1.Consistency{Level: kvv1.Level_LEVEL_QUORUM}, 4},
		{OpRead, &kvv1.Consistency{R: 2}, classLevels - 1},
		{OpRead, &kvv1.Consistency{Level: 99}, classLevels - 1}, // unknown: refused later, but bounded here
		{OpRead, &kvv1.Consistency{Level: -1}, classLevels - 1},
		{OpWrite, &kvv1.Consistency{Level: kvv1.Level_LEVEL_ONE, Durable: &async}, classLevels + 1},
		{OpWrite, &kvv1.Consistency{Level: kvv1.Level_LEVEL_ONE, Durable: &durable}, 2*classLevels + 1},
		{OpWrite, nil, 2 * classLevels}, // durable by default
		{OpWrite, &kvv1.Consistency{W: 3}, 3*classLevels - 1},
	}
	for _, c := range cases {
		if got := classOf(c.op, c.cons); got != c.want || got >= limiterClasses {
			t.Errorf("classOf(%v, %v) = %d, want %d (< %d)", c.op, c.cons, got, c.want, limiterClasses)
		}
	}
}

func TestLimiterShedsAfterTheWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLimiter(2, 1, 2, 20*time.Millisecond)
		ctx := context.Background()
		for i := 0; i < 2; i++ {
			if _, ok := l.acquire(ctx); !ok {
				t.Fatalf("free slot %d refused", i+1)
			}
		}
		start := time.Now()
		if _, ok := l.acquire(ctx); ok {
			t.Fatal("a third request got a slot of two")
		}
		if waited := time.Since(start); waited != 20*time.Millisecond {
			t.Fatalf("shed after %v, want after the 20ms wait", waited)
		}
		go func() {
			time.Sleep(5 * time.Millisecond)
			l.release(0, 1, time.Millisecond, true)
		}()
		if _, ok := l.acquire(ctx); !ok {
			t.Fatal("a slot freed during the wait was not taken")
		}
		if l.inUse() != 2 {
			t.Fatalf("in use %d, want 2", l.inUse())
		}
	})
}
