package coordinator

import (
	"context"
	"runtime"
	"testing"
	"time"
)

// TestFanoutContext: a fan-out's context keeps the request's values but not
// its cancellation, has its own deadline, and stops on Close.
func TestFanoutContext(t *testing.T) {
	c := &Coordinator{cfg: Config{RequestTimeout: time.Minute, MaxRequestTimeout: 2 * time.Minute}}
	c.bgCtx, c.bgCancel = context.WithCancel(context.Background())
	type key struct{}
	req, cancelReq := context.WithTimeout(context.WithValue(context.Background(), key{}, "trace"), 90*time.Second)
	fctx, fcancel := c.fanoutContext(req)
	defer fcancel()

	if got := fctx.Value(key{}); got != "trace" {
		t.Fatalf("value = %v, want the request's", got)
	}
	if dl, ok := fctx.Deadline(); !ok || time.Until(dl) < 80*time.Second || time.Until(dl) > 90*time.Second {
		t.Fatalf("deadline %v (set %v), want the request's time left", time.Until(dl), ok)
	}
	cancelReq()
	if err := fctx.Err(); err != nil {
		t.Fatalf("the request's cancellation reached the fan-out: %v", err)
	}

	// It registers with the background context as a child of it would,
	// not through a goroutine per context.
	before := runtime.NumGoroutine()
	var cancels []context.CancelFunc
	for range 200 {
		_, cancel := c.fanoutContext(req)
		cancels = append(cancels, cancel)
	}
	if n := runtime.NumGoroutine() - before; n >= 100 {
		t.Errorf("200 fan-out contexts started %d goroutines", n)
	}
	for _, cancel := range cancels {
		cancel()
	}

	c.bgCancel() // Close
	select {
	case <-fctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not stop the fan-out")
	}
}
