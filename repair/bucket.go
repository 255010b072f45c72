package repair

import (
	"context"
	"sync"
	"time"
)

// tokenBucket admits up to rate tokens per second with bursts of burst, on
// an injectable clock. It paces hint delivery (a token a hint) and
// anti-entropy (keys and bytes).
type tokenBucket struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
	now    func() time.Time
}

func newTokenBucket(rate float64, burst int, now func() time.Time) *tokenBucket {
	return &tokenBucket{rate: rate, burst: float64(burst), tokens: float64(burst), last: now(), now: now}
}

// take takes n tokens if they are there; otherwise it returns how long
// until they will be. A request larger than the burst needs a full bucket
// and leaves it in debt, so it waits its share too.
func (b *tokenBucket) take(n int) (time.Duration, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(b.burst, b.tokens+el.Seconds()*b.rate)
	}
	b.last = now
	need := min(float64(n), b.burst)
	if b.tokens >= need {
		b.tokens -= float64(n)
		return 0, true
	}
	return time.Duration((need - b.tokens) / b.rate * float64(time.Second)), false
}

// wait takes n tokens, waiting for them until ctx is done.
func (b *tokenBucket) wait(ctx context.Context, n int) error {
	for {
		d, ok := b.take(n)
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
