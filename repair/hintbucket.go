package repair

import (
	"context"
	"sync"
	"time"
)

// hintBucket admits up to rate events per second with bursts of burst,
// on an injectable clock.
type hintBucket struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
	now    func() time.Time
}

func newTokenBucket(rate float64, burst int, now func() time.Time) *hintBucket {
	return &hintBucket{rate: rate, burst: float64(burst), tokens: float64(burst), last: now(), now: now}
}

// take takes a token if one is there; otherwise it returns how long until
// one will be.
func (b *hintBucket) take() (time.Duration, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(b.burst, b.tokens+el.Seconds()*b.rate)
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return 0, true
	}
	return time.Duration((1 - b.tokens) / b.rate * float64(time.Second)), false
}

// wait takes a token, waiting for one until ctx is done.
func (b *hintBucket) wait(ctx context.Context) error {
	for {
		d, ok := b.take()
		if ok {
			return nil
		}
		t := time.NewTimer(max(d, time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}
