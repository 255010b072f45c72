package transport

import (
	"context"
	"io"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

type testCall struct{ id int }

func (testCall) GetTimeoutMicros() uint64 { return 0 }

// TestCallLoopHoldsSlotsUntilRepliesAreSent: a sender that stops reading
// its replies (send blocks, as gRPC flow control makes it) stops the loop
// reading calls once MaxRunning replies wait, instead of queueing replies
// without bound; once it reads again every call is answered.
func TestCallLoopHoldsSlotsUntilRepliesAreSent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const maxRunning, total = 4, 50
		var (
			mu      sync.Mutex
			taken   int
			replied = map[int]bool{}
		)
		release := make(chan struct{})
		recv := func() ([]testCall, error) {
			mu.Lock()
			defer mu.Unlock()
			if taken == total {
				return nil, io.EOF
			}
			taken++
			return []testCall{{id: taken}}, nil
		}
		send := func(rs []int) error {
			<-release // the sender reads a batch of replies
			mu.Lock()
			defer mu.Unlock()
			for _, id := range rs {
				replied[id] = true
			}
			return nil
		}
		loop := CallLoop[testCall, int]{
			Serve:      func(_ context.Context, c testCall, _ time.Time) int { return c.id },
			Refuse:     func(c testCall, _ error) int { return c.id },
			CallBounds: CallBounds{MaxRunning: maxRunning},
		}
		done := make(chan error, 1)
		go func() { done <- loop.Run(context.Background(), recv, send) }()

		synctest.Wait() // every goroutine blocked: the sender reads nothing
		mu.Lock()
		held := taken
		mu.Unlock()
		close(release) // the sender reads again
		err := <-done
		// The loop reads one call past the bound and waits for a slot.
		if held > maxRunning+1 {
			t.Fatalf("with no reply read, the loop took %d calls; want at most %d", held, maxRunning+1)
		}
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		if len(replied) != total {
			t.Fatalf("%d of %d calls answered", len(replied), total)
		}
	})
}
