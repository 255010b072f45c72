package transport

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/meridiankv/meridian/api/codec"
	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
)

type testCall struct {
	id     int
	micros uint64
}

func (c testCall) GetTimeoutMicros() uint64 { return c.micros }

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

// TestCallDeadline: a call's deadline is its sender's timeout bounded by
// MaxCallTime; a timeout so large that it would overflow in nanoseconds
// (wrapping to a deadline already past) is MaxCallTime too.
func TestCallDeadline(t *testing.T) {
	const maxCall, def = 30 * time.Second, 5 * time.Second
	for _, tc := range []struct {
		name   string
		micros uint64
		want   time.Duration
	}{
		{"no timeout: the default", 0, def},
		{"a timeout under the bound", 2_000_000, 2 * time.Second},
		{"a timeout over the bound", 60_000_000, maxCall},
		{"a timeout that wraps to 384ns in nanoseconds", 18446744073709552, maxCall},
		{"the largest timeout", ^uint64(0), maxCall},
	} {
		var got time.Duration
		loop := CallLoop[testCall, int]{
			Serve: func(_ context.Context, c testCall, deadline time.Time) int {
				got = time.Until(deadline)
				return c.id
			},
			CallBounds: CallBounds{MaxCallTime: maxCall, DefaultCallTime: def},
		}
		o := &outbox[int]{wake: make(chan struct{}, 1), slots: make(chan struct{}, 1)}
		loop.run(context.Background(), arrival[testCall]{c: testCall{id: 1, micros: tc.micros}, at: time.Now()}, o)
		if got > tc.want || got < tc.want-time.Second {
			t.Errorf("%s: deadline in %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestCallDeadlineCountsFromArrival: a call that waited for a slot (the
// stream at MaxRunning) is served with what is left of its sender's
// timeout, not a fresh one: one whose sender gave up meanwhile finds its
// deadline passed.
func TestCallDeadlineCountsFromArrival(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var late time.Duration
		sent := false
		recv := func() ([]testCall, error) {
			if sent {
				<-release
				return nil, io.EOF
			}
			sent = true
			return []testCall{{id: 1, micros: 1_000_000}, {id: 2, micros: 50_000}}, nil
		}
		loop := CallLoop[testCall, int]{
			Serve: func(_ context.Context, c testCall, deadline time.Time) int {
				if c.id == 1 {
					time.Sleep(200 * time.Millisecond) // holds the only slot
				} else {
					late = time.Until(deadline)
					close(release)
				}
				return c.id
			},
			Refuse:     func(c testCall, _ error) int { return c.id },
			CallBounds: CallBounds{MaxRunning: 1},
		}
		if err := loop.Run(context.Background(), recv, func([]int) error { return nil }); err != nil {
			t.Fatal(err)
		}
		if late > -150*time.Millisecond {
			t.Fatalf("call 2 waited 200ms for a slot with a 50ms timeout, and was served with %v left; want its deadline 150ms past", late)
		}
	})
}

// TestClosingAnswersAdmittedCalls: a call admitted just as the stream
// starts closing is answered before the stream ends, not dropped with its
// reply (a write applied, its sender told the stream closed).
func TestClosingAnswersAdmittedCalls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		closing := make(chan struct{})
		var replied []int
		sent := false
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		recv := func() ([]testCall, error) {
			if !sent {
				sent = true
				return []testCall{{id: 1}}, nil
			}
			<-ctx.Done() // the sender sends nothing more
			return nil, ctx.Err()
		}
		loop := CallLoop[testCall, int]{
			Serve:  func(_ context.Context, c testCall, _ time.Time) int { return c.id },
			Refuse: func(c testCall, _ error) int { return -c.id },
			CallBounds: CallBounds{Closing: closing, Enter: func() bool {
				close(closing) // the node starts closing while the call is admitted
				time.Sleep(50 * time.Millisecond)
				return true
			}},
		}
		err := loop.Run(ctx, recv, func(rs []int) error { replied = append(replied, rs...); return nil })
		if err != nil || len(replied) != 1 || replied[0] != 1 {
			t.Fatalf("Run = %v with replies %v; want the admitted call answered", err, replied)
		}
		cancel()
		synctest.Wait() // the receiver ends with the stream
	})
}

// TestCallLoopBoundsReplyBytes: a sender that sends a burst of calls and
// reads no replies (a client that never reads) stops the loop serving
// calls once their replies would hold MaxReplyBytes, though MaxRunning
// would take them all: each call running reserves the size replies have
// had (a sixteenth of the bound before any), so even the first batch
// cannot make more than sixteen large replies. The bytes are counted
// while held, and released when sent or when the stream ends.
func TestCallLoopBoundsReplyBytes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const maxRunning, burst, replySize, maxBytes = 1000, 200, 1 << 20, 4 << 20
		var (
			mu     sync.Mutex
			served int
			sent   int
			batch  bool
		)
		release := make(chan struct{})
		recv := func() ([]testCall, error) {
			mu.Lock()
			defer mu.Unlock()
			if batch {
				return nil, io.EOF
			}
			batch = true
			calls := make([]testCall, burst)
			for i := range calls {
				calls[i] = testCall{id: i + 1}
			}
			return calls, nil
		}
		send := func(rs []int) error {
			<-release
			mu.Lock()
			defer mu.Unlock()
			sent += len(rs)
			return nil
		}
		var held atomic.Int64
		loop := CallLoop[testCall, int]{
			Serve: func(_ context.Context, c testCall, _ time.Time) int {
				mu.Lock()
				served++
				mu.Unlock()
				return c.id
			},
			Refuse:     func(c testCall, _ error) int { return c.id },
			Size:       func(int) int { return replySize },
			CallBounds: CallBounds{MaxRunning: maxRunning, MaxReplyBytes: maxBytes, ReplyBytes: &held},
		}
		done := make(chan error, 1)
		go func() { done <- loop.Run(context.Background(), recv, send) }()

		synctest.Wait() // the sender reads nothing
		mu.Lock()
		made := served
		mu.Unlock()
		if made > 16 {
			t.Fatalf("with no reply read, a burst of %d calls made %d replies of 1 MiB; want at most 16 (the bound is 4 MiB)", burst, made)
		}
		if got := held.Load(); got != int64(made)*replySize {
			t.Fatalf("%d reply bytes counted for %d replies made", got, made)
		}
		close(release)
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
		if sent != burst {
			t.Fatalf("%d of %d calls answered", sent, burst)
		}
		if got := held.Load(); got != 0 {
			t.Fatalf("%d reply bytes still counted after the stream ended", got)
		}
	})
}

// TestReplyBytesBalanceWhenTheStreamFails: a stream that ends (its send
// failed: the client went away) with calls still running leaves the
// shared count of reply bytes where it was before the stream, whatever
// those calls reserved or return later.
func TestReplyBytesBalanceWhenTheStreamFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var held atomic.Int64
		release := make(chan struct{})
		first := true
		var mu sync.Mutex
		recv := func() ([]testCall, error) {
			mu.Lock()
			defer mu.Unlock()
			if !first {
				<-release // the stream is gone: nothing more arrives
				return nil, io.EOF
			}
			first = false
			return []testCall{{id: 1}, {id: 2}, {id: 3}}, nil
		}
		loop := CallLoop[testCall, int]{
			Serve: func(_ context.Context, c testCall, _ time.Time) int {
				if c.id > 1 {
					<-release // still running when the stream fails
				}
				return c.id
			},
			Refuse:     func(c testCall, _ error) int { return c.id },
			Size:       func(int) int { return 1000 },
			CallBounds: CallBounds{MaxReplyBytes: 64 << 20, ReplyBytes: &held},
		}
		err := loop.Run(context.Background(), recv, func([]int) error { return io.ErrClosedPipe })
		if err != io.ErrClosedPipe {
			t.Fatalf("Run = %v, want the send's error", err)
		}
		close(release)
		synctest.Wait() // the calls still running return
		if got := held.Load(); got != 0 {
			t.Fatalf("reply bytes counted after the stream failed: %d, want 0", got)
		}
	})
}

// TestServeStreamBoundsReplyBytes: a peer's call stream whose sender
// reads no replies stops reading calls once their replies hold
// MaxReplyBytes (ServeStream sizes the replies; without Size the bound
// was never applied and all 64 large reads were served and held).
func TestServeStreamBoundsReplyBytes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var held atomic.Int64
		var served atomic.Int32
		calls := make([]*internalv1.Call, 64)
		for i := range calls {
			calls[i] = &internalv1.Call{Id: uint64(i + 1), Op: &internalv1.Call_Read{Read: &internalv1.ReadRequest{Key: []byte("k")}}}
		}
		s := &stalledCallsStream{ctx: t.Context(), first: &internalv1.CallBatch{Calls: calls}, release: make(chan struct{})}
		srv := CallServer{
			Serve: func(context.Context, *internalv1.Call, time.Time) *internalv1.Reply {
				served.Add(1)
				return &internalv1.Reply{Result: &internalv1.Reply_Read{Read: &internalv1.ReadResponse{Set: make([]byte, 256<<10)}}}
			},
			CallBounds: CallBounds{MaxReplyBytes: 1 << 20, ReplyBytes: &held, MaxCallTime: time.Minute},
		}
		done := make(chan error, 1)
		go func() { done <- srv.ServeStream(s) }()
		synctest.Wait() // the peer reads nothing
		if n := served.Load(); n > 20 || held.Load() == 0 {
			t.Fatalf("with no reply read, %d of 64 reads of 256 KiB served, %d reply bytes counted; want at most about 1 MiB's worth, counted", n, held.Load())
		}
		close(s.release)
		if err := <-done; err != nil {
			t.Fatalf("ServeStream: %v", err)
		}
		if served.Load() != 64 || held.Load() != 0 {
			t.Fatalf("after the peer read: %d served, %d bytes still counted", served.Load(), held.Load())
		}
	})
}

// stalledCallsStream is a peer's call stream that sends one batch, then
// reads no reply (Send blocks) until release, then ends.
type stalledCallsStream struct {
	grpc.ServerStream
	ctx     context.Context
	first   *internalv1.CallBatch
	release chan struct{}
}

func (s *stalledCallsStream) Context() context.Context { return s.ctx }

func (s *stalledCallsStream) RecvMsg(m any) error {
	if s.first != nil {
		proto.Merge(m.(*codec.Counted).Message, s.first)
		s.first = nil
		return nil
	}
	<-s.release
	return io.EOF
}

func (s *stalledCallsStream) Recv() (*internalv1.CallBatch, error) {
	b := &internalv1.CallBatch{}
	return b, s.RecvMsg(&codec.Counted{Message: b})
}

func (s *stalledCallsStream) Send(*internalv1.ReplyBatch) error {
	<-s.release
	return nil
}
