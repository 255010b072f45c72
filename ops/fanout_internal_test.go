package ops

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestRunBounded: this node's part of a fan-out answers DEADLINE_EXCEEDED
// when it outlasts its time, as a remote node's does, instead of holding
// the whole call (and every other node's answer) past the caller's
// deadline; a part that finishes in time gives its result.
func TestRunBounded(t *testing.T) {
	release := make(chan struct{})
	finished := make(chan struct{})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	r := runBounded(ctx, func(context.Context) (int, error) {
		defer close(finished)
		<-release // a checkpoint on a slow disk, which takes no context
		return 1, nil
	})
	if status.Code(r.err) != codes.DeadlineExceeded {
		t.Fatalf("a part outlasting its time: %v, want DEADLINE_EXCEEDED", r.err)
	}
	close(release)
	<-finished // it goes on to its end, and ends
	r = runBounded(context.Background(), func(context.Context) (int, error) { return 7, nil })
	if r.err != nil || r.resp != 7 {
		t.Fatalf("a part in time: %v, %v", r.resp, r.err)
	}
}
