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
	"google.golang.org/protobuf/proto"

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
	// MaxReplyBytes, with CallLoop.Size, bounds the bytes of a stream's
	// replies not sent yet: past it the stream stops reading calls until
	// its sender reads replies, so a sender that does not read cannot
	// make the node hold MaxRunning large replies (0: no bound).
	// ReplyBytes, when set, counts those bytes over every stream that
	// shares it (a metric).
	MaxReplyBytes int64
	ReplyBytes    *atomic.Int64
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
		// For MaxReplyBytes: a peer that stops reading replies (a stalled
		// process, a congested link) must not make this node hold
		// MaxRunning large reads.
		Size:       func(r *internalv1.Reply) int { return proto.Size(r) },
		CallBounds: s.CallBounds,
	}.Run(stream.Context(), func() ([]*internalv1.Call, error) {
		b := &internalv1.CallBatch{}
		err := RecvBatch(stream, b)
		return b.GetCalls(), err
	}, func(rs []*internalv1.Reply) error {
		// Replies that finished together can be large reads: in batches,
		// and one no message could carry fails its own call only.
		return SendReplies(rs, MaxMessageSize, oversizeReply, func(part []*internalv1.Reply) error {
			batch.Replies = part
			err := stream.Send(batch)
			batch.Replies = nil
			return err
		})
	})
}

// oversizeReply is the reply to a call whose own reply, of n bytes, no
// message between nodes can carry.
func oversizeReply(r *internalv1.Reply, n int) *internalv1.Reply {
	return &internalv1.Reply{Id: r.GetId(), Result: ReplyError(status.Errorf(codes.ResourceExhausted,
		"the reply is %d bytes, over the %d-byte message limit between nodes: read fewer siblings (resolve them with a write)", n, MaxMessageSize))}
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
	// Size, when set, is a reply's size in bytes, for MaxReplyBytes.
	Size func(R) int
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
	o := &outbox[R]{wake: make(chan struct{}, 1), slots: make(chan struct{}, s.MaxRunning), room: make(chan struct{}, 1),
		size: s.Size, maxBytes: s.MaxReplyBytes, total: s.ReplyBytes}
	defer o.close() // replies never sent no longer count
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
		replies, running, held := o.take()
		if len(replies) > 0 {
			err := send(replies)
			n := len(replies)
			clear(replies)
			o.reuse(replies)
			if err != nil {
				return err
			}
			o.sent(held)
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
			// Replies the sender has not read hold too many bytes: read
			// no more calls until it does (flow control then pushes
			// back on it, as for MaxRunning).
			for o.full() {
				select {
				case <-o.room:
				case <-ctx.Done():
					return nil
				}
			}
			select {
			case o.slots <- struct{}{}:
			case <-ctx.Done():
				return nil
			}
			// Counted as running before it is admitted: once Closing
			// fires, Run ends only when no admitted call is without its
			// reply.
			reserved := o.started()
			if s.Enter != nil && !s.Enter() {
				refused := s.Refused
				if refused == nil {
					refused = status.Error(codes.Unavailable, "call refused")
				}
				o.done(s.Refuse(c, refused), reserved)
				continue
			}
			a := arrival[C]{c: c, at: at, reserved: reserved}
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

// arrival is a call, when its batch arrived, and the reply bytes it
// reserved (see outbox).
type arrival[C any] struct {
	c        C
	at       time.Time
	reserved int64
}

// maxIdleWorkers bounds the workers a stream keeps waiting.
const maxIdleWorkers = 64

// work runs c, then the calls handed to it, until the stream ends or
// enough workers wait already.
func (s CallLoop[C, R]) work(ctx context.Context, a arrival[C], o *outbox[R], w *callWorkers[C]) {
	for {
		s.run(ctx, a, o)
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

// run serves a call.
func (s CallLoop[C, R]) run(ctx context.Context, a arrival[C], o *outbox[R]) {
	c, at := a.c, a.at
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
	o.done(s.Serve(ctx, c, at.Add(timeout)), a.reserved)
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

	// Reply bytes (when size is set): bytes is what the replies queued or
	// being sent hold, plus a reservation for each call running (est,
	// the size replies have had lately: a reply is counted only once
	// made, and a batch of calls taken at once must not all make large
	// ones); queued is the bytes of the replies not taken yet, unsent
	// those not sent yet. Past maxBytes the receiver waits on room. total
	// counts the replies' bytes (unsent, not reservations) over every
	// stream.
	size                  func(R) int
	maxBytes              int64
	total                 *atomic.Int64
	bytes, queued, unsent int64
	est                   int64
	room                  chan struct{}
	closed                bool
}

// started counts a call taken, and returns the reply bytes it reserved.
func (o *outbox[R]) started() (reserved int64) {
	o.mu.Lock()
	o.running++
	if o.size != nil && o.maxBytes > 0 && !o.closed {
		if o.est == 0 {
			// Until replies are seen, a sixteenth of the bound each: a
			// first batch of calls cannot make more than sixteen
			// replies of any size at once.
			o.est = o.maxBytes / 16
		}
		reserved = o.est
		o.bytes += reserved
	}
	o.mu.Unlock()
	return reserved
}

// done queues the reply of a started call, which reserved bytes.
func (o *outbox[R]) done(r R, reserved int64) {
	var n int64
	if o.size != nil {
		n = int64(o.size(r))
	}
	o.mu.Lock()
	o.queue = append(o.queue, r)
	o.running-- // with the reply queued: take never sees neither
	if o.size != nil && !o.closed {
		o.bytes += n - reserved
		o.queued += n
		o.unsent += n
		if o.total != nil {
			o.total.Add(n)
		}
		if o.maxBytes > 0 {
			// The estimate follows the replies: at once up to a larger
			// one, slowly (a sixteenth a reply) down to smaller ones.
			o.est = max(n, o.est-o.est/16, minReplyEstimate)
		}
	}
	o.mu.Unlock()
	if reserved > n {
		o.signalRoom()
	}
	o.notify()
}

// minReplyEstimate is the least a running call reserves.
const minReplyEstimate = 512

func (o *outbox[R]) signalRoom() {
	select {
	case o.room <- struct{}{}:
	default:
	}
}

// full reports whether the replies not sent yet hold maxBytes or more.
func (o *outbox[R]) full() bool {
	if o.maxBytes <= 0 {
		return false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.bytes >= o.maxBytes
}

// sent releases the bytes of replies sent (take's held).
func (o *outbox[R]) sent(held int64) {
	if held == 0 {
		return
	}
	o.mu.Lock()
	if !o.closed {
		o.bytes -= held
		o.unsent -= held
		if o.total != nil {
			o.total.Add(-held)
		}
	}
	o.mu.Unlock()
	o.signalRoom()
}

// close ends the accounting when the stream ends: replies never sent,
// and those of calls still running, no longer count.
func (o *outbox[R]) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.total != nil {
		o.total.Add(-o.unsent) // the replies' bytes, not reservations
	}
	o.bytes, o.queued, o.unsent, o.closed = 0, 0, 0, true
}

func (o *outbox[R]) notify() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// take returns the queued replies, the calls still running, and the
// bytes the replies hold (for sent).
func (o *outbox[R]) take() ([]R, int, int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	q := o.queue
	o.queue = o.spare[:0]
	o.spare = nil
	held := o.queued
	o.queued = 0
	return q, o.running, held
}

func (o *outbox[R]) reuse(q []R) {
	o.mu.Lock()
	o.spare = q[:0]
	o.mu.Unlock()
}
