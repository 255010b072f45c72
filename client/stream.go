package client

import (
	"context"
	"errors"
	"io"
	"math"
	"runtime"
	"sync"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/trace"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/meridiankv/meridian/api/codec"
	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
)

// A unary gRPC call costs a new HTTP/2 stream with headers each way, a
// handler goroutine and a flush for the request and for the reply: for a
// small Get or Put that is most of the client's and the node's work. The
// client instead carries its calls to each node on one kv.v1.KV/Calls
// stream: calls queued while the previous batch was being sent go out
// together, and the replies come back batched, matched by call ID.
//
// A call stays unary when it is traced (its span is sampled, so its trace
// context travels as the RPC's metadata), when its context carries
// outgoing metadata of its own, when it is larger than maxStreamedCall
// (one large value must not hold up the small calls behind it), when the
// node does not serve call streams, and when too many calls already wait
// on the stream.

// maxStreamedCall is the largest request (key, value and context) sent
// on a call stream.
const maxStreamedCall = 64 << 10

// maxStreamWaiting bounds the calls waiting for a reply on one stream;
// past it calls go unary.
const maxStreamWaiting = 4096

// streamMaxAge is how long one stream takes new calls. The node recycles
// connections (a GOAWAY, then 30 s of grace before it closes them, and it
// bounds each call by 30 s too): a stream retires as soon as its
// connection stops being ready (watch), which a GOAWAY does, so that the
// calls it took all came before the GOAWAY and are answered within the
// grace, while a new stream, on a new connection, takes the next ones.
// The age is a backstop: a stream also retires this long after it opened.
const streamMaxAge = 20 * time.Second

// maxBatchBytes bounds one CallBatch of several calls.
const maxBatchBytes = 1 << 20

// callSize is about how many bytes c takes in a CallBatch.
func callSize(c *kvv1.Call) int {
	n := 64 // ID, timeout, tags, lengths, consistency
	switch op := c.GetOp().(type) {
	case *kvv1.Call_Get:
		n += len(op.Get.GetKeyspace()) + len(op.Get.GetKey())
	case *kvv1.Call_Put:
		n += len(op.Put.GetKeyspace()) + len(op.Put.GetKey()) + len(op.Put.GetValue()) + len(op.Put.GetContext()) + len(op.Put.GetRequestId())
	case *kvv1.Call_Delete:
		n += len(op.Delete.GetKeyspace()) + len(op.Delete.GetKey()) + len(op.Delete.GetContext()) + len(op.Delete.GetRequestId())
	}
	return n
}

// errNoStream says a call should go unary: nothing was sent.
var errNoStream = errors.New("call stream unusable")

// callStream is one Calls stream to a node, opened by its sender
// goroutine on first use. A failed or retired stream takes no new calls
// (the client opens another); one that fails fails every call waiting.
type callStream struct {
	opened time.Time
	maxAge time.Duration   // streamMaxAge, but for tests
	wake   chan struct{}   // a token when calls are queued
	ctx    context.Context // the stream's: done once the client closed it
	stop   context.CancelFunc
	// afterTake, when set (tests only), runs in the sender between taking
	// a batch and marshalling it.
	afterTake func()
	// chans are reply channels for reuse: a call's goes back once it is
	// known to be empty and nobody will send on it.
	chans sync.Pool
	// marshalled is signalled (its L is &mu.Mutex) when the sender has
	// marshalled the calls it took.
	marshalled sync.Cond
	mu         struct {
		sync.Mutex
		nextID  uint64
		queue   []*kvv1.Call
		spare   []*kvv1.Call
		pending map[uint64]chan streamResult // buffered: never blocks
		err     error                        // why the stream failed; nil while it works
		retired bool                         // takes no new calls; closes once they are answered
		// unsupported: the node does not serve Calls (an older version).
		unsupported bool
		// The sender reads the requests of the calls with IDs in
		// (marshalled, taken] (their keys and values, the caller's
		// memory): a call in that range that ends without its reply
		// waits (marshalWaiters counts them) until the sender is done
		// with it, so its caller may reuse its buffers once it returns.
		taken, marshalled uint64
		marshalWaiters    int
		// cancels are the IDs of calls sent whose callers gave up, for
		// the next batch (at most maxStreamWaiting): the node cancels
		// them if still running.
		cancels []uint64
	}
}

type streamResult struct {
	reply *kvv1.Reply
	err   error
}

// replyChan is a reply channel from s.chans, or a new one.
func (s *callStream) replyChan() chan streamResult {
	if ch, ok := s.chans.Get().(chan streamResult); ok {
		return ch
	}
	return make(chan streamResult, 1)
}

// openCallStream starts a stream on cc; wg tracks its goroutines.
// afterTake is a test hook (nil but in tests).
func openCallStream(cc *grpc.ClientConn, maxAge time.Duration, afterTake func(), wg *sync.WaitGroup) *callStream {
	ctx, cancel := context.WithCancel(context.Background())
	s := &callStream{opened: time.Now(), maxAge: maxAge, wake: make(chan struct{}, 1), ctx: ctx, stop: cancel, afterTake: afterTake}
	s.marshalled.L = &s.mu.Mutex
	s.mu.pending = map[uint64]chan streamResult{}
	st := cc.GetState() // before the stream opens: a change after is seen
	wg.Add(2)
	go func() {
		defer wg.Done()
		s.run(ctx, kvv1.NewKVClient(cc))
	}()
	go func() {
		defer wg.Done()
		s.watch(ctx, cc, st)
	}()
	return s
}

// watch retires s once cc, its connection, having been ready (from st
// on), is not: the node sent a GOAWAY (it recycles connections), or the
// connection failed. gRPC gives no other sign of a GOAWAY to a stream
// already open, which goes on, on the draining connection, until the
// node closes it at the end of its grace: calls taken after the GOAWAY
// could be cut off then. Retired, s sends what it queued and takes no
// more; the next call opens a stream on a new connection. watch returns
// when s ends (ctx is its own).
func (s *callStream) watch(ctx context.Context, cc *grpc.ClientConn, st connectivity.State) {
	ready := false
	for {
		if st == connectivity.Ready {
			ready = true
		} else if ready {
			s.retire()
			return
		}
		if !cc.WaitForStateChange(ctx, st) {
			return
		}
		st = cc.GetState()
	}
}

// usable reports whether the stream takes new calls; false once it failed
// or retired, or, when it is older than its maximum age, after retiring
// it.
func (s *callStream) usable() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.mu.retired && s.mu.err == nil && time.Since(s.opened) > s.maxAge {
		s.mu.retired = true
		s.notify() // the sender closes its side once the queue is sent
	}
	return s.mu.err == nil && !s.mu.retired
}

// retire stops s taking new calls: the sender closes its side once the
// calls queued are sent, and the node ends the stream once it answered
// them.
func (s *callStream) retire() {
	s.mu.Lock()
	s.mu.retired = true
	s.mu.Unlock()
	s.notify()
}

// unsupported reports whether the node refused the stream as unknown.
func (s *callStream) unsupported() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.unsupported
}

func (s *callStream) close() { s.stop() }

func (s *callStream) notify() {
	select {
	case s.wake <- struct{}{}:
	default: // the sender is awake already and will see it
	}
}

// run opens the stream and sends queued calls until the stream fails, is
// closed, or is retired and has sent everything; a second goroutine takes
// the replies.
func (s *callStream) run(ctx context.Context, kv kvv1.KVClient) {
	// The node bounds what it sends (its message limit); the stream takes
	// any reply it sends rather than fail every call on it for one large
	// reply. The sender marshals batches itself (see sendBatch).
	stream, err := kv.Calls(ctx, grpc.MaxCallRecvMsgSize(math.MaxInt32), grpc.ForceCodecV2(streamCodec{}))
	if err != nil {
		s.fail(err)
		s.stop()
		return
	}
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		s.receive(stream)
	}()
	defer func() { <-recvDone }()
	defer s.stop() // ends the stream, so the receiver returns too
	batch := &kvv1.CallBatch{}
	msg := &preEncoded{}
	for {
		select {
		case <-s.wake:
		case <-ctx.Done():
			s.fail(ctx.Err())
			return
		}
		// Let callers about to queue calls do so first: one message then
		// carries them all (as transport's replica pipe does).
		runtime.Gosched()
		s.mu.Lock()
		calls := s.mu.queue
		s.mu.queue = s.mu.spare[:0]
		s.mu.spare = nil
		retired := s.mu.retired
		batch.Cancel = append(batch.Cancel[:0], s.mu.cancels...)
		s.mu.cancels = s.mu.cancels[:0]
		s.mu.Unlock()
		for rest := calls; (len(rest) > 0 || len(batch.Cancel) > 0) && err == nil; {
			var n int
			batch.Calls, n = s.takeBatch(batch.Calls[:0], rest)
			rest = rest[n:]
			err = s.sendBatch(stream, batch, msg) // the cancels go with the first
		}
		clear(calls)
		s.mu.Lock()
		s.mu.spare = calls[:0]
		s.mu.Unlock()
		if err == nil && retired {
			// Nothing more will be queued: the node answers what it
			// has, then ends the stream, and the receiver returns.
			err = stream.CloseSend()
			if err == nil {
				<-recvDone
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				// The node ended the stream: the receiver gets its status
				// from Recv and fails the stream with it.
				<-recvDone
			}
			s.fail(err) // no-op when the receiver failed it first
			return
		}
	}
}

// takeBatch appends to b the calls of queued still waiting for their reply,
// up to about maxBatchBytes in all, and marks them taken: from now until
// sendBatch marshalled them, a caller giving up on one waits before it
// returns. It returns b and how many of queued it went through.
func (s *callStream) takeBatch(b []*kvv1.Call, queued []*kvv1.Call) ([]*kvv1.Call, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, size := 0, 0
	for ; n < len(queued); n++ {
		c := queued[n]
		if _, waiting := s.mu.pending[c.GetId()]; !waiting {
			continue // its caller gave up: it is not sent
		}
		// A message at most about maxBatchBytes: the node's limit is
		// larger (its largest value plus 1 MiB).
		cs := callSize(c)
		if len(b) > 0 && size+cs > maxBatchBytes {
			break
		}
		size += cs
		b = append(b, c)
	}
	if n > 0 {
		s.mu.taken = queued[n-1].GetId()
	}
	return b, n
}

// sendBatch marshals batch (the calls takeBatch took), lets the callers
// waiting on that go, and sends the bytes; batch is left empty. Sending
// may block (flow control); marshalling does not, so a caller that gives
// up never waits on the network.
func (s *callStream) sendBatch(stream grpc.BidiStreamingClient[kvv1.CallBatch, kvv1.ReplyBatch], batch *kvv1.CallBatch, msg *preEncoded) error {
	if s.afterTake != nil {
		s.afterTake()
	}
	var data mem.BufferSlice
	var err error
	if len(batch.Calls) > 0 || len(batch.Cancel) > 0 {
		data, err = codec.Proto{}.Marshal(batch)
	}
	clear(batch.Calls)
	batch.Calls = batch.Calls[:0]
	batch.Cancel = batch.Cancel[:0]
	s.mu.Lock()
	s.mu.marshalled = s.mu.taken
	if s.mu.marshalWaiters > 0 {
		s.marshalled.Broadcast()
	}
	s.mu.Unlock()
	switch {
	case err != nil:
		return status.Errorf(codes.Internal, "marshal a call batch: %v", err)
	case data == nil:
		return nil // every call taken had been given up
	}
	msg.data = data
	err = stream.SendMsg(msg)
	if msg.data != nil { // gRPC returned before taking it
		msg.data.Free()
		msg.data = nil
	}
	return err
}

// awaitMarshalledLocked waits until the sender no longer reads call id's
// request: it has not taken it (and, the call no longer pending, will
// not), or has marshalled it. s.mu held.
func (s *callStream) awaitMarshalledLocked(id uint64) {
	for id > s.mu.marshalled && id <= s.mu.taken {
		s.mu.marshalWaiters++
		s.marshalled.Wait()
		s.mu.marshalWaiters--
	}
}

// preEncoded is a CallBatch the sender marshalled itself: the stream's
// codec sends its bytes as they are, and gRPC frees them once written.
type preEncoded struct{ data mem.BufferSlice }

// streamCodec is the call streams' codec: api/codec's, except that a
// *preEncoded goes out as the bytes it holds (it takes them).
type streamCodec struct{ codec.Proto }

func (c streamCodec) Marshal(v any) (mem.BufferSlice, error) {
	if p, ok := v.(*preEncoded); ok {
		data := p.data
		p.data = nil
		return data, nil
	}
	return c.Proto.Marshal(v)
}

// receive hands each reply to its caller until the stream ends.
func (s *callStream) receive(stream grpc.BidiStreamingClient[kvv1.CallBatch, kvv1.ReplyBatch]) {
	for {
		batch, err := stream.Recv()
		if err != nil {
			s.fail(err)
			s.stop()
			return
		}
		s.mu.Lock()
		for _, r := range batch.GetReplies() {
			if ch, ok := s.mu.pending[r.GetId()]; ok {
				delete(s.mu.pending, r.GetId())
				ch <- streamResult{reply: r}
			}
		}
		s.mu.Unlock()
	}
}

// fail fails every call waiting and marks the stream failed.
func (s *callStream) fail(err error) {
	unsupported := status.Code(err) == codes.Unimplemented
	err = streamError(err, s.ctx.Err() != nil)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.err == nil {
		s.mu.err = err
		s.mu.unsupported = unsupported
	}
	for id, ch := range s.mu.pending {
		delete(s.mu.pending, id)
		ch <- streamResult{err: s.mu.err}
	}
	s.mu.queue = nil
}

// streamError is the status the calls waiting on a stream get when it
// failed with err; closed says the client closed the stream itself. A
// stream the client closed (a departed node, Close) or the node ended
// fails its calls as UNAVAILABLE, as a dropped connection would: none of
// their callers cancelled anything, and the call may go to another node.
// gRPC reports a stream whose context was cancelled as its own CANCELED
// status, which is not context.Canceled: hence closed.
func streamError(err error, closed bool) error {
	switch {
	case closed || errors.Is(err, context.Canceled):
		return status.Error(codes.Unavailable, "the call stream was closed")
	case errors.Is(err, io.EOF):
		return status.Error(codes.Unavailable, "the node closed the call stream")
	}
	if _, ok := status.FromError(err); !ok {
		return status.Errorf(codes.Unavailable, "call stream: %v", err)
	}
	return err
}

// call sends c and waits for its reply. It returns errNoStream, having
// sent nothing, when the stream takes no new calls or too many wait; and
// errNoStream too when the node turned out not to serve call streams.
func (s *callStream) call(ctx context.Context, c *kvv1.Call) (*kvv1.Reply, error) {
	if d, ok := ctx.Deadline(); ok {
		left := time.Until(d)
		if left <= 0 {
			return nil, status.FromContextError(context.DeadlineExceeded).Err()
		}
		c.TimeoutMicros = uint64((left + time.Microsecond - 1) / time.Microsecond) // never 0 ("none") while time is left
	}
	ch := s.replyChan()
	s.mu.Lock()
	if s.mu.err != nil || s.mu.retired || len(s.mu.pending) >= maxStreamWaiting ||
		len(s.mu.queue) >= maxStreamWaiting && s.dropGivenUpLocked() >= maxStreamWaiting {
		s.mu.Unlock()
		s.chans.Put(ch)
		return nil, errNoStream
	}
	s.mu.nextID++
	c.Id = s.mu.nextID
	s.mu.pending[c.Id] = ch
	s.mu.queue = append(s.mu.queue, c)
	s.mu.Unlock()
	s.notify()
	select {
	case r := <-ch:
		s.chans.Put(ch)
		if r.err != nil {
			// The stream failed: the sender may be marshalling the call
			// still (a reply, though, means the node had it).
			s.mu.Lock()
			s.awaitMarshalledLocked(c.Id)
			unsupported := s.mu.unsupported
			s.mu.Unlock()
			if status.Code(r.err) == codes.Unimplemented && unsupported {
				return nil, errNoStream // refused as a whole: nothing ran
			}
			return nil, r.err
		}
		return r.reply, replyError(r.reply)
	case <-ctx.Done():
		s.mu.Lock()
		_, waiting := s.mu.pending[c.Id]
		delete(s.mu.pending, c.Id) // not sent, if still queued
		s.awaitMarshalledLocked(c.Id)
		// Sent already: the node is told to cancel it (a hedged read's
		// loser, a deadline), as a unary call's cancellation would.
		sent := waiting && c.Id <= s.mu.marshalled && s.mu.err == nil && len(s.mu.cancels) < maxStreamWaiting
		if sent {
			s.mu.cancels = append(s.mu.cancels, c.Id)
		}
		s.mu.Unlock()
		if waiting {
			s.chans.Put(ch) // nobody will send on it now
		}
		if sent {
			s.notify()
		}
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// dropGivenUpLocked removes from the queue the calls whose callers gave
// up (they would not be sent) and returns how many are left: while the
// sender is blocked (a node that stopped reading), callers that time out
// would otherwise leave their calls, and the buffers they hold, queued
// for as long as it lasts. s.mu held.
func (s *callStream) dropGivenUpLocked() int {
	kept := s.mu.queue[:0]
	for _, c := range s.mu.queue {
		if _, waiting := s.mu.pending[c.GetId()]; waiting {
			kept = append(kept, c)
		}
	}
	clear(s.mu.queue[len(kept):])
	s.mu.queue = kept
	return len(kept)
}

// replyError is the status a failed reply carries, nil for success.
func replyError(r *kvv1.Reply) error {
	e, ok := r.GetResult().(*kvv1.Reply_Error)
	if !ok {
		return nil
	}
	var st spb.Status
	if err := proto.Unmarshal(e.Error, &st); err != nil {
		return status.Errorf(codes.Internal, "undecodable error from the node: %v", err)
	}
	if st.GetCode() == int32(codes.OK) {
		return status.Error(codes.Internal, "the node reported an error with code OK")
	}
	return status.FromProto(&st).Err()
}

// streamable reports whether a call of size bytes under ctx may go on a
// call stream (see the top of this file).
func streamable(ctx context.Context, size int) bool {
	if size > maxStreamedCall || trace.SpanContextFromContext(ctx).IsSampled() {
		return false
	}
	md, ok := metadata.FromOutgoingContext(ctx)
	return !ok || len(md) == 0
}

// marshalable reports whether c's strings are valid UTF-8, which protobuf
// requires: a call that cannot be marshalled would fail the whole batch,
// and every call on the stream with it. One that cannot goes unary, where
// it fails alone.
func marshalable(c *kvv1.Call) bool {
	var ks string
	var cons *kvv1.Consistency
	switch op := c.GetOp().(type) {
	case *kvv1.Call_Get:
		ks, cons = op.Get.GetKeyspace(), op.Get.GetConsistency()
	case *kvv1.Call_Put:
		ks, cons = op.Put.GetKeyspace(), op.Put.GetConsistency()
	case *kvv1.Call_Delete:
		ks, cons = op.Delete.GetKeyspace(), op.Delete.GetConsistency()
	}
	return utf8.ValidString(ks) && utf8.ValidString(cons.GetDc())
}

// nodeKV is the kv.v1 client for one node: calls without gRPC call
// options go on the node's call stream when they may, the rest unary.
type nodeKV struct {
	kvv1.KVClient
	s *callStream // nil: every call unary
}

// viaStream sends c on k's stream and returns its result (get picks it
// from the reply); ok is false when the call must go unary instead.
func viaStream[T comparable](k nodeKV, ctx context.Context, size int, opts []grpc.CallOption, c *kvv1.Call, get func(*kvv1.Reply) T, op string) (v T, ok bool, err error) {
	if k.s == nil || len(opts) > 0 || !streamable(ctx, size) || !marshalable(c) {
		return v, false, nil
	}
	r, err := k.s.call(ctx, c)
	switch {
	case errors.Is(err, errNoStream):
		return v, false, nil
	case err != nil:
		return v, true, err
	}
	var none T
	if v = get(r); v == none {
		return v, true, status.Errorf(codes.Internal, "the node's reply to a %s has no %s result", op, op)
	}
	return v, true, nil
}

func (k nodeKV) Get(ctx context.Context, in *kvv1.GetRequest, opts ...grpc.CallOption) (*kvv1.GetResponse, error) {
	if resp, ok, err := viaStream(k, ctx, len(in.GetKey()), opts, &kvv1.Call{Op: &kvv1.Call_Get{Get: in}}, (*kvv1.Reply).GetGet, "Get"); ok {
		return resp, err
	}
	return k.KVClient.Get(ctx, in, opts...)
}

func (k nodeKV) Put(ctx context.Context, in *kvv1.PutRequest, opts ...grpc.CallOption) (*kvv1.PutResponse, error) {
	size := len(in.GetKey()) + len(in.GetValue()) + len(in.GetContext())
	if resp, ok, err := viaStream(k, ctx, size, opts, &kvv1.Call{Op: &kvv1.Call_Put{Put: in}}, (*kvv1.Reply).GetPut, "Put"); ok {
		return resp, err
	}
	return k.KVClient.Put(ctx, in, opts...)
}

func (k nodeKV) Delete(ctx context.Context, in *kvv1.DeleteRequest, opts ...grpc.CallOption) (*kvv1.DeleteResponse, error) {
	size := len(in.GetKey()) + len(in.GetContext())
	if resp, ok, err := viaStream(k, ctx, size, opts, &kvv1.Call{Op: &kvv1.Call_Delete{Delete: in}}, (*kvv1.Reply).GetDelete, "Delete"); ok {
		return resp, err
	}
	return k.KVClient.Delete(ctx, in, opts...)
}
