package coordinator

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

func TestLimiterAdaptsToLatency(t *testing.T) {
	l := newLimiter(32, 4, 32, 0)
	// Normal latency: the limit stays at its maximum.
	for i := 0; i < 1000; i++ {
		l.acquire(context.Background())
		l.release(10*time.Millisecond, true)
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
			l.release(100*time.Millisecond, true)
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
		l.release(10*time.Millisecond, true)
	}
	if got := l.limit(); got != 32 {
		t.Fatalf("limit %d after latency recovered, want back to 32", got)
	}
	// Slow requests with few in flight are not queueing here (a durable
	// write's fsync, a slow peer): the limit stays.
	for i := 0; i < 200; i++ {
		l.acquire(context.Background())
		l.release(100*time.Millisecond, true)
	}
	if got := l.limit(); got != 32 {
		t.Fatalf("limit %d after slow requests one at a time, want 32", got)
	}
	// Failed requests say nothing about latency.
	for i := 0; i < 100; i++ {
		l.acquire(context.Background())
		l.release(time.Second, false)
	}
	if got := l.limit(); got != 32 {
		t.Fatalf("limit %d moved on failed requests", got)
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
			l.release(time.Millisecond, true)
		}()
		if !l.acquire(ctx) {
			t.Fatal("a slot freed during the wait was not taken")
		}
		if l.inUse() != 2 {
			t.Fatalf("in use %d, want 2", l.inUse())
		}
	})
}
