package repair

import (
	"testing"
	"time"
)

// TestBucketLargeRequestLeavesDebt: a request larger than the burst (a big
// set against a bytes-per-second budget) goes through on a full bucket and
// makes the next requests wait for its share.
func TestBucketLargeRequestLeavesDebt(t *testing.T) {
	now := time.Unix(100, 0)
	b := newTokenBucket(10, 2, func() time.Time { return now })
	if _, ok := b.take(5); !ok {
		t.Fatal("a request over the burst refused on a full bucket")
	}
	d, ok := b.take(1)
	if ok || d != 400*time.Millisecond {
		t.Fatalf("after 5 tokens from a bucket of 2 at 10/s: ok=%v wait %v, want 400ms", ok, d)
	}
	now = now.Add(400 * time.Millisecond)
	if _, ok := b.take(1); !ok {
		t.Fatal("the debt was not repaid after 400ms")
	}
}
