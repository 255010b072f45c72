package transport

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
)

// A replica read or write costs a whole gRPC call when sent unary: a new
// HTTP/2 stream with its headers each way, a server goroutine, the
// interceptor chain and a flush of the connection for the request and for
// the reply. Under load most of a quorum operation's CPU went there. A
// pipe instead carries the calls to one peer on one long-lived Calls
// stream: the calls queued while the previous message was being sent go
// out together in the next one, and the replies come back batched the same
// way, matched by call ID.
//
// Calls that are traced (their span is sampled) stay unary, so that every
// replica call of a traced request keeps its own client and server span;
// so do calls larger than MaxPipedCall, so that one large sibling set
// never holds up the small calls behind it on the stream.

// MaxPipedCall is the largest key plus sibling set sent on a pipe; larger
// writes go as their own unary calls.
const MaxPipedCall = 64 << 10

// DefaultPipeWaiting bounds the calls waiting for a reply on one pipe
// unless PipeCalls says otherwise; past the bound, calls go unary (each
// then bounded by gRPC's own stream limits).
const DefaultPipeWaiting = 4096

// pipe is one Calls stream to a peer, opened on first use. A pipe whose
// stream failed fails every call waiting on it and is replaced by a new
// one on the next call.
type pipe struct {
	node  string
	epoch func() uint64
	// maxWaiting bounds the calls waiting for a reply.
	maxWaiting int
	wake       chan struct{} // a token when calls are queued
	stop       context.CancelFunc
	closing    atomic.Bool // close was called
	// nextID numbers the calls (unique among those in flight).
	nextID atomic.Uint64
	mu     struct {
		sync.Mutex
		// queue holds encoded calls: a caller's request is not referenced
		// once its call is queued, so it may return at any time (deadline,
		// failed stream) while the sender is still sending. A call whose
		// caller gave up before it was sent is not sent at all, and is
		// dropped from the queue when it reaches maxWaiting calls.
		queue   []queued
		spare   []queued // the previous queue, reused
		pending map[uint64]*waiter
		err     error // why the pipe failed; nil while it works
	}
}

// queued is one encoded call waiting to be sent; deadline is its
// caller's (zero: none).
type queued struct {
	id       uint64
	enc      []byte
	deadline time.Time
}

type waiter struct {
	ch chan result // buffered: the receiver never blocks on it
}

type result struct {
	reply *internalv1.Reply
	err   error
}

var waiters = sync.Pool{New: func() any { return &waiter{ch: make(chan result, 1)} }}

// openPipe starts a pipe on conn. Its stream is opened by its sender
// goroutine; calls queue meanwhile. wg tracks both loops.
func openPipe(conn *grpc.ClientConn, node string, epoch func() uint64, maxWaiting int, wg *sync.WaitGroup) *pipe {
	ctx, cancel := context.WithCancel(context.Background())
	p := &pipe{node: node, epoch: epoch, maxWaiting: maxWaiting, wake: make(chan struct{}, 1), stop: cancel}
	p.mu.pending = map[uint64]*waiter{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.run(ctx, internalv1.NewReplicaClient(conn))
	}()
	return p
}

// failed reports whether the pipe can take no more calls.
func (p *pipe) failed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mu.err != nil
}

// close stops the pipe: calls waiting fail (UNAVAILABLE), and the stream
// ends.
func (p *pipe) close() {
	p.closing.Store(true)
	p.stop()
}

// run opens the stream, then sends queued calls until the stream fails or
// the pipe is closed; a second goroutine takes the replies.
func (p *pipe) run(ctx context.Context, client internalv1.ReplicaClient) {
	stream, err := client.Calls(ctx)
	if err != nil {
		p.fail(err)
		p.stop()
		return
	}
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		p.receive(stream)
	}()
	defer func() { <-recvDone }()
	defer p.stop() // ends the stream, so the receiver returns too
	// Calls are encoded when queued: send CallBatch's wire form.
	batch := &internalv1.EncodedCallBatch{}
	for {
		select {
		case <-p.wake:
		case <-ctx.Done():
			p.fail(ctx.Err())
			return
		}
		// Let the callers that are about to queue calls do so first
		// (gRPC's own writer yields the same way): one message then
		// carries them all, and each message costs gRPC and protobuf
		// about ten allocations and a write. With nothing else to run,
		// the yield returns at once.
		runtime.Gosched()
		// One message at a time, of at most BatchBytes (a larger call
		// goes alone) and MaxBatchCalls calls: a long queue of large
		// writes must not make one message over the limit, nor a longer
		// one of small calls (peer-calls-waiting may pass MaxBatchCalls)
		// one the peer refuses; either would fail every call on the
		// pipe. The rest stay queued for the next round, so that a call
		// whose caller gives up while an earlier message is held up by
		// flow control is not sent, and the time left is stamped as the
		// message goes.
		p.mu.Lock()
		calls := p.mu.queue
		send := batch.Calls[:0]
		now := time.Now()
		size, taken := 0, 0
		for ; taken < len(calls); taken++ {
			c := calls[taken]
			if _, waiting := p.mu.pending[c.id]; !waiting {
				continue
			}
			if len(send) > 0 && (size+len(c.enc) > BatchBytes || len(send) == MaxBatchCalls) {
				break
			}
			if !c.deadline.IsZero() {
				// The time left as sent, not as queued: the time spent
				// behind a send in progress is the caller's too. A later
				// field 3 overrides the one encoded.
				left := c.deadline.Sub(now)
				if left <= 0 {
					continue // its caller is giving up now
				}
				c.enc = protowire.AppendVarint(protowire.AppendTag(c.enc, 3, protowire.VarintType), CeilMicros(left))
			}
			size += len(c.enc)
			send = append(send, c.enc)
		}
		p.mu.queue = append(p.mu.spare[:0], calls[taken:]...)
		p.mu.spare = nil
		more := len(p.mu.queue) > 0
		p.mu.Unlock()
		var err error
		if len(send) > 0 {
			batch.Calls = send
			err = stream.SendMsg(batch)
		}
		clear(send)
		batch.Calls = send[:0]
		clear(calls)
		p.mu.Lock()
		p.mu.spare = calls[:0]
		p.mu.Unlock()
		if more {
			// The rest of the queue goes in the next round.
			select {
			case p.wake <- struct{}{}:
			default:
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				// The replica ended the stream: the receiver gets its
				// status from Recv and fails the pipe with it.
				<-recvDone
			}
			p.fail(err) // no-op when the receiver failed it first
			return
		}
	}
}

// receive hands each reply to its caller until the stream ends.
func (p *pipe) receive(stream grpc.BidiStreamingClient[internalv1.CallBatch, internalv1.ReplyBatch]) {
	for {
		batch, err := stream.Recv()
		if err != nil {
			p.fail(err)
			p.stop() // and the sender with it
			return
		}
		p.mu.Lock()
		for _, r := range batch.GetReplies() {
			if w, ok := p.mu.pending[r.GetId()]; ok {
				delete(p.mu.pending, r.GetId())
				w.ch <- result{reply: r}
			}
		}
		p.mu.Unlock()
	}
}

// fail fails every call waiting and marks the pipe failed.
func (p *pipe) fail(err error) {
	switch {
	case p.closing.Load():
		// Closed here (a departed node, Close): the stream's own status
		// is then gRPC's CANCELED, not context.Canceled, and would race
		// this one; a caller must see the peer unreachable either way.
		err = status.Errorf(codes.Unavailable, "the call stream to node %s was closed", p.node)
	case errors.Is(err, io.EOF):
		err = status.Errorf(codes.Unavailable, "node %s closed the call stream", p.node)
	case errors.Is(err, context.Canceled):
		err = status.Errorf(codes.Unavailable, "the call stream to node %s was closed", p.node)
	default:
		if _, ok := status.FromError(err); !ok {
			err = status.Errorf(codes.Unavailable, "call stream to node %s: %v", p.node, err)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.err == nil {
		p.mu.err = err
	}
	for id, w := range p.mu.pending {
		delete(p.mu.pending, id)
		w.ch <- result{err: err}
	}
	p.mu.queue = nil
}

// timeoutRoom is the most a call's timeout field takes (tag, varint).
const timeoutRoom = 1 + binary.MaxVarintLen64

// CeilMicros is d in whole microseconds, rounded up: a positive time left
// never becomes 0, which a call's receiver takes for "no timeout".
func CeilMicros(d time.Duration) uint64 {
	return uint64((d + time.Microsecond - 1) / time.Microsecond)
}

// errPipeFull says a call should go unary instead.
var errPipeFull = errors.New("pipe full")

// call sends c and waits for its reply. It returns errPipeFull, before
// sending anything, when the pipe is failed or too many calls wait.
func (p *pipe) call(ctx context.Context, c *internalv1.Call) (*internalv1.Reply, error) {
	c.Epoch = p.epoch()
	if d, ok := ctx.Deadline(); ok {
		left := time.Until(d)
		if left <= 0 {
			return nil, status.FromContextError(context.DeadlineExceeded).Err()
		}
		c.TimeoutMicros = CeilMicros(left)
	}
	// Encoded before the lock: the ID comes from a counter, so calls may
	// be queued out of ID order (replies are matched by ID, not order).
	c.Id = p.nextID.Add(1)
	deadline, _ := ctx.Deadline()
	// Room for the time left written again when sent (tag and varint).
	enc, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(make([]byte, 0, proto.Size(c)+timeoutRoom), c)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encode call: %v", err)
	}
	w := waiters.Get().(*waiter)
	p.mu.Lock()
	if p.mu.err != nil || len(p.mu.pending) >= p.maxWaiting || len(p.mu.queue) >= p.maxWaiting && p.dropGivenUpLocked() >= p.maxWaiting {
		p.mu.Unlock()
		waiters.Put(w)
		return nil, errPipeFull
	}
	p.mu.pending[c.Id] = w
	p.mu.queue = append(p.mu.queue, queued{id: c.Id, enc: enc, deadline: deadline})
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default: // the sender is awake already and will see the call
	}
	select {
	case r := <-w.ch:
		waiters.Put(w)
		if r.err != nil {
			return nil, r.err
		}
		return r.reply, replyError(r.reply)
	case <-ctx.Done():
		p.mu.Lock()
		_, waiting := p.mu.pending[c.Id]
		delete(p.mu.pending, c.Id)
		p.mu.Unlock()
		if waiting {
			waiters.Put(w) // nobody will send on it now
		}
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// dropGivenUpLocked removes from the queue the calls whose callers gave
// up (they would not be sent) and returns how many are left. While the
// sender is blocked (a peer that stopped reading: its flow-control window
// full) callers that time out leave their encoded calls queued, so
// without it the queue would grow by one call, up to MaxPipedCall bytes,
// per replica call to that peer for as long as it stalls; with it, the
// queue is bounded as the calls waiting are (maxWaiting), and the calls
// past the bound go unary. p.mu held.
func (p *pipe) dropGivenUpLocked() int {
	kept := p.mu.queue[:0]
	for _, c := range p.mu.queue {
		if _, waiting := p.mu.pending[c.id]; waiting {
			kept = append(kept, c)
		}
	}
	clear(p.mu.queue[len(kept):])
	p.mu.queue = kept
	return len(kept)
}

// replyError is the status a failed reply carries, nil for success.
func replyError(r *internalv1.Reply) error {
	if r.GetError() == nil {
		return nil
	}
	return ReplyStatus(r).Err()
}

// ReplyStatus decodes a reply's status (OK when it carries no error).
func ReplyStatus(r *internalv1.Reply) *status.Status {
	e := r.GetError()
	if e == nil {
		return status.New(codes.OK, "")
	}
	var s spb.Status
	if err := proto.Unmarshal(e.GetStatus(), &s); err != nil {
		return status.Newf(codes.Internal, "undecodable error from peer: %v", err)
	}
	if s.GetCode() == int32(codes.OK) {
		return status.New(codes.Internal, "peer reported an error with code OK")
	}
	if s.GetCode() < 0 || s.GetCode() > int32(codes.Unauthenticated) {
		// Not a gRPC code: passed on as one, it would reach clients and
		// metric labels as a new value each time.
		return status.Newf(codes.Unknown, "peer reported code %d: %s", s.GetCode(), s.GetMessage())
	}
	return status.FromProto(&s)
}

// ReplyError encodes err as a Reply's error (for the serving side).
func ReplyError(err error) *internalv1.Reply_Error {
	return &internalv1.Reply_Error{Error: &internalv1.CallError{Status: EncodeStatus(err)}}
}

// EncodeStatus is err as an encoded google.rpc.Status (code, message and
// details), as a unary call would have returned it: errors without a
// status are UNKNOWN, as there.
func EncodeStatus(err error) []byte {
	s, _ := status.FromError(err)
	b, mErr := proto.Marshal(s.Proto())
	if mErr != nil {
		b, _ = proto.Marshal(status.New(codes.Internal, err.Error()).Proto())
	}
	return b
}

// Unpiped marks ctx's calls to go as unary RPCs, not on a peer's pipe:
// for a sender whose pipes peers refuse (a node removed from the cluster
// handing its hints over), whose calls each need the unary method's own
// admission.
func Unpiped(ctx context.Context) context.Context {
	return context.WithValue(ctx, unpipedKey{}, true)
}

type unpipedKey struct{}

func unpiped(ctx context.Context) bool {
	v, _ := ctx.Value(unpipedKey{}).(bool)
	return v
}

// traced reports whether ctx carries a sampled span: such calls stay
// unary, so that their spans are recorded as their own gRPC calls.
func traced(ctx context.Context) bool {
	return trace.SpanContextFromContext(ctx).IsSampled()
}
