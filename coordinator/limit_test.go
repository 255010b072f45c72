package coordinator

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
)

func TestLimiterAdaptsToLatency(t *testing.T) {
	l := newLimiter(32, 4, 32, 0)
	// Normal latency: the limit stays at its maximum.
	for i := 0; i < 1000; i++ {
		l.acquire(context.Background())
		l.release(0, 10*time.Millisecond, true)
	}
	if got := l.limit(); got != 32 {
		t.Fatalf("limit %d under normal latency, want 32", got)
	}
	// Requests start queueing: with the node busy (the limit in flight),
	// latency ten times normal shrinks the limit.
	for round := 0; round < 5; round++ {
		n := l.limit()
		for i := 0; i < n; i++ {
			l.acquire(context.Background())
		}
		for i := 0; i < n; i++ {
			l.release(0, 100*time.Millisecond, true)
		}
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
		l.acquire(context.Background())
		l.release(0, 10*time.Millisecond, true)
	}
	if got := l.limit(); got != 32 {
		t.Fatalf("limit %d after latency recovered, want back to 32", got)
	}
	// Slow requests with few in flight are not queueing here (a durable
	// write's fsync, a slow peer): the limit stays.
	for i := 0; i < 200; i++ {
		l.acquire(context.Background())
		l.release(0, 100*time.Millisecond, true)
	}
	if got := l.limit(); got != 32 {
		t.Fatalf("limit %d after slow requests one at a time, want 32", got)
	}
	// Failed requests say nothing about latency.
	for i := 0; i < 100; i++ {
		l.acquire(context.Background())
		l.release(0, time.Second, false)
	}
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
	// A closed loop: every slot taken, each request followed by the next.
	for l.acquire(context.Background()) {
	}
	for i := 0; i < 2000; i++ {
		if i%2 == 0 {
			l.release(read, time.Millisecond, true)
		} else {
			l.release(write, 10*time.Millisecond, true)
		}
		for l.acquire(context.Background()) {
		}
	}
	if got := l.limit(); got != 32 {
		t.Fatalf("limit %d with steady reads and slower steady writes, want 32", got)
	}
	// The writes' own latency rising tenfold while busy is congestion.
	for i := 0; i < 100; i++ {
		l.release(write, 100*time.Millisecond, true)
		for l.acquire(context.Background()) {
		}
	}
	if got := l.limit(); got > 16 {
		t.Fatalf("limit %d after the writes' latency rose tenfold, want it well below 32", got)
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
			if !l.acquire(ctx) {
				t.Fatalf("free slot %d refused", i+1)
			}
		}
		start := time.Now()
		if l.acquire(ctx) {
			t.Fatal("a third request got a slot of two")
		}
		if waited := time.Since(start); waited != 20*time.Millisecond {
			t.Fatalf("shed after %v, want after the 20ms wait", waited)
		}
		go func() {
			time.Sleep(5 * time.Millisecond)
			l.release(0, time.Millisecond, true)
		}()
		if !l.acquire(ctx) {
			t.Fatal("a slot freed during the wait was not taken")
		}
		if l.inUse() != 2 {
			t.Fatalf("in use %d, want 2", l.inUse())
		}
	})
}
