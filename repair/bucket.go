package repair

import (
	"context"
	"sync"
	"time"
)

// bucket is a token bucket: rate tokens per second, a burst of one second's
// worth; wait blocks until n tokens are available (or ctx ends). A request
// larger than the burst takes the whole burst and waits for the rest.
type bucket struct {
	rate float64
	now  func() time.Time
	mu   struct {
		sync.Mutex
		tokens float64
		last   time.Time
	}
}

func newBucket(rate float64, now func() time.Time) *bucket {
	b := &bucket{rate: rate, now: now}
	b.mu.tokens = rate
	b.mu.last = now()
	return b
}

// wait takes n tokens, sleeping as long as the rate requires.
func (b *bucket) wait(ctx context.Context, n int) error {
	b.mu.Lock()
	now := b.now()
	b.mu.tokens = min(b.rate, b.mu.tokens+now.Sub(b.mu.last).Seconds()*b.rate)
	b.mu.last = now
	b.mu.tokens -= float64(n)
	deficit := -b.mu.tokens
	b.mu.Unlock()
	if deficit <= 0 {
		return nil
	}
	t := time.NewTimer(time.Duration(deficit / b.rate * float64(time.Second)))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
