package transport

import (
	"context"
	"errors"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
)

// CallServer serves the replica end of a pipe: each call runs on its own
// goroutine, as a unary call would, and the replies queue and go back in
// batches (CallLoop does the work; clients' call streams use it too).
type CallServer struct {
	// Serve runs one call (see CallLoop.Serve).
	Serve func(ctx context.Context, c *internalv1.Call, deadline time.Time) *internalv1.Reply
	CallBounds
}

// CallBounds are what a stream of calls admits and how far: shared by
// CallServer and CallLoop.
type CallBounds struct {
	// Enter admits a call (false: refused as Refused, e.g. while shutting
	// down) and Leave ends it; both may be nil.
	Enter   func() bool
	Leave   func()
	Refused error
	// Closing, once closed, ends the stream as soon as every call taken
	// has its reply; later calls fail over on the sender as UNAVAILABLE.
	Closing <-chan struct{}
	// Check runs before each batch is taken (e.g. that the sender is
	// still a member); an error ends the stream with it.
	Check func() error
	// MaxRunning bounds the calls a stream holds at once, running or with
	// a reply not sent yet (default DefaultCallsRunning): past it the
	// stream stops reading and gRPC flow control pushes back on the
	// sender, so a sender that stops reading its replies cannot grow the
	// queue of replies either.
	MaxRunning int
	// MaxCallTime bounds each call, whatever timeout its sender gave
	// (default 30s); DefaultCallTime bounds a call whose sender named no
	// timeout (default: MaxCallTime).
	MaxCallTime, DefaultCallTime time.Duration
	// Running, when set, counts the calls running (over every stream that
	// shares it: a metric).
	Running *atomic.Int64
}

// DefaultCallsRunning is CallBounds.MaxRunning's default.
const DefaultCallsRunning = 1024

// ServeStream serves stream until the sender closes it, it fails, or Closing.
func (s CallServer) ServeStream(stream internalv1.Replica_CallsServer) error {
	batch := &internalv1.ReplyBatch{}
	return CallLoop[*internalv1.Call, *internalv1.Reply]{
		Serve: func(ctx context.Context, c *internalv1.Call, deadline time.Time) *internalv1.Reply {
			r := s.Serve(ctx, c, deadline)
			r.Id = c.GetId()
			return r
		},
		Refuse: func(c *internalv1.Call, err error) *internalv1.Reply {
			return &internalv1.Reply{Id: c.GetId(), Result: ReplyError(err)}
		},
		CallBounds: s.CallBounds,
	}.Run(stream.Context(), func() ([]*internalv1.Call, error) {
		b, err := stream.Recv()
		return b.GetCalls(), err
	}, func(rs []*internalv1.Reply) error {
		batch.Replies = rs
		err := stream.Send(batch)
		batch.Replies = nil
		return err
	})
}

// TimedCall is a call that names its sender's timeout.
type TimedCall interface {
	GetTimeoutMicros() uint64
}

// CallLoop serves one stream of calls, each answered by a reply that
// carries the call's ID: each call runs on a goroutine of its own (kept
// for the next call), at most MaxRunning at once, and the replies queue
// and go back in batches.
type CallLoop[C TimedCall, R any] struct {
	// Serve runs one call and returns its reply, ID set, by deadline (the
	// sender's timeout bounded by MaxCallTime). ctx is the stream's: a
	// call that waits on anything derives its own context with the
	// deadline; one that does not (a local read or write) costs no timer.
	Serve func(ctx context.Context, c C, deadline time.Time) R
	// Refuse is the reply, ID set, to a call refused with err.
	Refuse func(c C, err error) R
	CallBounds
}

// Run serves calls read by recv (one batch a call; io.EOF when the sender
// closed its side) and sends their replies with send, until the sender
// closes its side and has every reply, the stream fails (ctx ends), or
// Closing. send owns its slice only until it returns.
func (s CallLoop[C, R]) Run(ctx context.Context, recv func() ([]C, error), send func([]R) error) error {
	if s.MaxRunning <= 0 {
		s.MaxRunning = DefaultCallsRunning
	}
	if s.MaxCallTime <= 0 {
		s.MaxCallTime = 30 * time.Second
	}
	o := &outbox[R]{wake: make(chan struct{}, 1), slots: make(chan struct{}, s.MaxRunning)}
	w := &callWorkers[C]{calls: make(chan arrival[C]), idle: make(chan struct{}, maxIdleWorkers), stop: make(chan struct{})}
	defer close(w.stop) // idle workers return; busy ones after their call
	recvDone := make(chan error, 1)
	go func() { recvDone <- s.receive(ctx, recv, o, w) }()
	var recvErr error
	received := false // the receiver has returned
	closing := s.Closing
	for {
		select {
		case <-o.wake:
		case recvErr = <-recvDone:
			received = true
			recvDone = nil
		case <-closing:
			closing = nil
		}
		// Let calls about to finish put their replies first: one message
		// then carries them all (see pipe.run).
		runtime.Gosched()
		replies, running := o.take()
		if len(replies) > 0 {
			err := send(replies)
			n := len(replies)
			clear(replies)
			o.reuse(replies)
			if err != nil {
				return err
			}
			// Sent: their calls' slots are free for the next calls.
			for range n {
				<-o.slots
			}
		}
		if running > 0 {
			continue
		}
		switch {
		case received:
			return recvErr // nil: the sender closed its side and has every reply
		case closing == nil && s.Closing != nil:
			// Every call taken has its reply; the receiver stops with the
			// stream.
			return nil
		}
	}
}

// receive starts each call the sender sends, until the stream ends. It
// returns nil when the sender closed its side.
func (s CallLoop[C, R]) receive(ctx context.Context, recv func() ([]C, error), o *outbox[R], w *callWorkers[C]) error {
	for {
		calls, err := recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		// A call's deadline counts from its arrival: the time it waits
		// for a slot (the stream at MaxRunning) is part of its sender's
		// timeout, so a call whose sender has given up is not served.
		at := time.Now()
		if s.Check != nil {
			if err := s.Check(); err != nil {
				return err
			}
		}
		for _, c := range calls {
			select {
			case o.slots <- struct{}{}:
			case <-ctx.Done():
				return nil
			}
			// Counted as running before it is admitted: once Closing
			// fires, Run ends only when no admitted call is without its
			// reply.
			o.started()
			if s.Enter != nil && !s.Enter() {
				refused := s.Refused
				if refused == nil {
					refused = status.Error(codes.Unavailable, "call refused")
				}
				o.done(s.Refuse(c, refused))
				continue
			}
			a := arrival[C]{c: c, at: at}
			select {
			case w.calls <- a: // an idle worker took it
			default:
				go s.work(ctx, a, o, w)
			}
		}
	}
}

// callWorkers keeps the goroutines that ran a stream's calls, each waiting
// for the next: a call on a fresh goroutine would grow its stack again
// (Pebble's read path is deep), which cost 8% of the CPU in profiles.
type callWorkers[C any] struct {
	calls chan arrival[C] // unbuffered: taken only by an idle worker
	idle  chan struct{}   // a token per idle worker
	stop  chan struct{}
}

// arrival is a call and when its batch arrived.
type arrival[C any] struct {
	c  C
	at time.Time
}

// maxIdleWorkers bounds the workers a stream keeps waiting.
const maxIdleWorkers = 64

// work runs c, then the calls handed to it, until the stream ends or
// enough workers wait already.
func (s CallLoop[C, R]) work(ctx context.Context, a arrival[C], o *outbox[R], w *callWorkers[C]) {
	for {
		s.run(ctx, a.c, a.at, o)
		select {
		case w.idle <- struct{}{}:
		default:
			return
		}
		select {
		case a = <-w.calls:
			<-w.idle
		case <-w.stop:
			<-w.idle
			return
		}
	}
}

// run serves c, which arrived at at.
func (s CallLoop[C, R]) run(ctx context.Context, c C, at time.Time, o *outbox[R]) {
	if s.Running != nil {
		s.Running.Add(1)
		defer s.Running.Add(-1)
	}
	if s.Leave != nil {
		defer s.Leave()
	}
	timeout := s.MaxCallTime
	var t time.Duration
	if us := c.GetTimeoutMicros(); us < uint64(timeout/time.Microsecond) {
		t = time.Duration(us) * time.Microsecond // no overflow: under MaxCallTime
	}
	if t == 0 && c.GetTimeoutMicros() == 0 && s.DefaultCallTime > 0 {
		t = s.DefaultCallTime
	}
	if t > 0 && t < timeout {
		timeout = t
	}
	o.done(s.Serve(ctx, c, at.Add(timeout)))
}

// outbox queues a stream's replies for its sender.
type outbox[R any] struct {
	wake chan struct{}
	// slots holds a token per call taken whose reply is not sent yet
	// (running, or queued): the sender frees them once sent.
	slots chan struct{}
	mu    sync.Mutex
	queue []R
	spare []R
	// running counts calls started whose reply is not queued yet.
	running int
}

func (o *outbox[R]) started() {
	o.mu.Lock()
	o.running++
	o.mu.Unlock()
}

// done queues the reply of a started call.
func (o *outbox[R]) done(r R) {
	o.mu.Lock()
	o.queue = append(o.queue, r)
	o.running-- // with the reply queued: take never sees neither
	o.mu.Unlock()
	o.notify()
}

func (o *outbox[R]) notify() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// take returns the queued replies and the calls still running.
func (o *outbox[R]) take() ([]R, int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	q := o.queue
	o.queue = o.spare[:0]
	o.spare = nil
	return q, o.running
}

func (o *outbox[R]) reuse(q []R) {
	o.mu.Lock()
	o.spare = q[:0]
	o.mu.Unlock()
}
