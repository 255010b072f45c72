package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
)

// TestMain checks that no test leaves a goroutine behind (pipes stop
// their loops on Close).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pipePeer is a replica service on loopback whose Calls stream is served
// by CallServer; its unary Read and Write count the calls that did not
// take the pipe.
type pipePeer struct {
	internalv1.UnimplementedReplicaServer
	piped, unary atomic.Int64
	closing      chan struct{}
	release      chan struct{} // "block" calls wait for it
	sawDeadline  atomic.Int64  // microseconds left, seen by a "deadline" call
}

func (p *pipePeer) Read(ctx context.Context, req *internalv1.ReadRequest) (*internalv1.ReadResponse, error) {
	p.unary.Add(1)
	return &internalv1.ReadResponse{Set: req.GetKey()}, nil
}

func (p *pipePeer) Write(ctx context.Context, req *internalv1.WriteRequest) (*internalv1.WriteResponse, error) {
	p.unary.Add(1)
	return &internalv1.WriteResponse{}, nil
}

func (p *pipePeer) Calls(stream internalv1.Replica_CallsServer) error {
	return CallServer{Serve: p.serve, CallBounds: CallBounds{Closing: p.closing, MaxCallTime: time.Minute}}.ServeStream(stream)
}

func (p *pipePeer) serve(ctx context.Context, c *internalv1.Call, deadline time.Time) *internalv1.Reply {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	p.piped.Add(1)
	if r := c.GetRead(); r != nil {
		switch string(r.GetKey()) {
		case "stale":
			st, _ := status.New(codes.FailedPrecondition, "stale route").WithDetails(&errdetails.ErrorInfo{Reason: "STALE_ROUTE", Domain: "test", Metadata: map[string]string{"epoch": "7"}})
			return &internalv1.Reply{Result: ReplyError(st.Err())}
		case "block":
			select {
			case <-p.release:
			case <-ctx.Done():
				return &internalv1.Reply{Result: ReplyError(status.FromContextError(ctx.Err()).Err())}
			}
		case "deadline":
			d, ok := ctx.Deadline()
			if ok {
				p.sawDeadline.Store(int64(time.Until(d) / time.Microsecond))
			}
		}
		return &internalv1.Reply{Result: &internalv1.Reply_Read{Read: &internalv1.ReadResponse{Set: r.GetKey()}}}
	}
	return &internalv1.Reply{Result: &internalv1.Reply_Write{Write: &internalv1.WriteResponse{}}}
}

func startPipePeer(t *testing.T, opts ...grpc.ServerOption) (*pipePeer, *grpc.Server, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pipePeer{closing: make(chan struct{}), release: make(chan struct{})}
	srv := grpc.NewServer(opts...)
	internalv1.RegisterReplicaServer(srv, p)
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return p, srv, lis.Addr().String()
}

// pipeSetup starts a peer and a piped client resolving "n2" to addr
// (which a test may point elsewhere), closed at the test's end, and a
// context for the test's calls.
func pipeSetup(t *testing.T) (peer *pipePeer, srv *grpc.Server, addr *atomic.Value, g *GRPC, ctx context.Context) {
	t.Helper()
	peer, srv, a := startPipePeer(t)
	addr = &atomic.Value{}
	addr.Store(a)
	g = NewGRPC(func(string) (string, bool) { return addr.Load().(string), true })
	g.PipeCalls(func() uint64 { return 3 }, 0)
	t.Cleanup(func() { g.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return peer, srv, addr, g, ctx
}

func TestPipeCarriesConcurrentCallsAndErrors(t *testing.T) {
	peer, _, _, g, ctx := pipeSetup(t)

	// Many concurrent reads and writes: each read gets its own key back.
	var wg sync.WaitGroup
	errs := make(chan error, 400)
	for i := range 200 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			key := fmt.Appendf(nil, "key-%d", i)
			resp, err := g.Read(ctx, "n2", &internalv1.ReadRequest{Key: key})
			if err != nil || !bytes.Equal(resp.GetSet(), key) {
				errs <- fmt.Errorf("read %s = %q, %v", key, resp.GetSet(), err)
			}
		}()
		go func() {
			defer wg.Done()
			if err := g.Write(ctx, "n2", &internalv1.WriteRequest{Key: []byte("w"), Set: []byte("s")}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	drain := func() {
		for {
			select {
			case err := <-errs:
				t.Error(err)
			default:
				return
			}
		}
	}
	drain()
	if got := peer.piped.Load(); got != 400 || peer.unary.Load() != 0 {
		t.Fatalf("piped %d, unary %d; want all 400 piped", got, peer.unary.Load())
	}

	// A failed call's status keeps its code, message and details.
	_, err := g.Read(ctx, "n2", &internalv1.ReadRequest{Key: []byte("stale")})
	st := status.Convert(err)
	if st.Code() != codes.FailedPrecondition || st.Message() != "stale route" {
		t.Fatalf("stale = %v", err)
	}
	if d := st.Details(); len(d) != 1 || d[0].(*errdetails.ErrorInfo).GetMetadata()["epoch"] != "7" {
		t.Fatalf("details = %v", d)
	}

	// The sender's deadline travels with the call.
	dctx, dcancel := context.WithTimeout(ctx, 20*time.Second)
	if _, err := g.Read(dctx, "n2", &internalv1.ReadRequest{Key: []byte("deadline")}); err != nil {
		t.Fatal(err)
	}
	dcancel()
	if left := time.Duration(peer.sawDeadline.Load()) * time.Microsecond; left <= 0 || left > 20*time.Second {
		t.Fatalf("replica saw %v left, want (0, 20s]", left)
	}
	// A caller that gives up gets DEADLINE_EXCEEDED, and the pipe goes on.
	sctx, scancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err = g.Read(sctx, "n2", &internalv1.ReadRequest{Key: []byte("block")})
	scancel()
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("blocked call = %v, want DEADLINE_EXCEEDED", err)
	}
	if _, err := g.Read(ctx, "n2", &internalv1.ReadRequest{Key: []byte("after")}); err != nil {
		t.Fatal(err)
	}
	// A caller that gave up owns its request again at once, even while
	// the pipe is still sending its call (the race detector would see
	// the pipe reading it).
	var gaveUp sync.WaitGroup
	for range 100 {
		gaveUp.Add(1)
		go func() {
			defer gaveUp.Done()
			req := &internalv1.ReadRequest{Key: []byte("block")}
			qctx, qcancel := context.WithTimeout(ctx, 500*time.Microsecond)
			defer qcancel()
			if _, err := g.Read(qctx, "n2", req); status.Code(err) != codes.DeadlineExceeded {
				errs <- fmt.Errorf("blocked call with a short deadline = %v", err)
			}
			req.Key[0] = 'x'
			req.Keyspace = "reused"
		}()
	}
	gaveUp.Wait()
	drain()

	// Large and traced calls go unary.
	before := peer.unary.Load()
	if err := g.Write(ctx, "n2", &internalv1.WriteRequest{Key: []byte("big"), Set: make([]byte, MaxPipedCall+1)}); err != nil {
		t.Fatal(err)
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}, TraceFlags: trace.FlagsSampled})
	if _, err := g.Read(trace.ContextWithSpanContext(ctx, sc), "n2", &internalv1.ReadRequest{Key: []byte("traced")}); err != nil {
		t.Fatal(err)
	}
	if got := peer.unary.Load() - before; got != 2 {
		t.Fatalf("unary calls = %d, want 2 (the large write and the traced read)", got)
	}
}

func TestPipeFailsOverWhenThePeerGoes(t *testing.T) {
	peer, srv, addr, g, ctx := pipeSetup(t)
	if _, err := g.Read(ctx, "n2", &internalv1.ReadRequest{Key: []byte("first")}); err != nil {
		t.Fatal(err)
	}

	// A call in flight when the peer stops fails as UNAVAILABLE.
	blocked := make(chan error, 1)
	go func() {
		_, err := g.Read(ctx, "n2", &internalv1.ReadRequest{Key: []byte("block")})
		blocked <- err
	}()
	for peer.piped.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	srv.Stop()
	if err := <-blocked; status.Code(err) != codes.Unavailable {
		t.Fatalf("call in flight when the peer stopped = %v, want UNAVAILABLE", err)
	}

	// The peer comes back elsewhere: a new pipe carries the calls.
	peer2, _, a2 := startPipePeer(t)
	addr.Store(a2)
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := g.Read(ctx, "n2", &internalv1.ReadRequest{Key: []byte("again")})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no call reached the restarted peer: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if peer2.piped.Load() == 0 {
		t.Fatal("the restarted peer got no piped call")
	}
}

func TestPipeEndsWhenTheReplicaCloses(t *testing.T) {
	peer, _, _, g, ctx := pipeSetup(t)

	// A call running when the replica starts closing still gets its reply.
	blocked := make(chan error, 1)
	go func() {
		_, err := g.Read(ctx, "n2", &internalv1.ReadRequest{Key: []byte("block")})
		blocked <- err
	}()
	for peer.piped.Load() < 1 {
		time.Sleep(time.Millisecond)
	}
	close(peer.closing)
	close(peer.release)
	if err := <-blocked; err != nil {
		t.Fatalf("call running at close = %v, want its reply", err)
	}
	// Later calls fail over as UNAVAILABLE (a closing replica takes no
	// more), never hang.
	for range 3 {
		if _, err := g.Read(ctx, "n2", &internalv1.ReadRequest{Key: []byte("next")}); err != nil && status.Code(err) != codes.Unavailable {
			t.Fatalf("call to a closing replica = %v, want UNAVAILABLE", err)
		}
	}
}

// heldStream is a Calls stream whose sends block until released, and
// which records the call IDs of every batch sent.
type heldStream struct {
	grpc.ClientStream // unused methods
	ctx               context.Context
	entered           chan struct{} // a token per SendMsg entered
	release           chan struct{} // one SendMsg returns per token
	mu                sync.Mutex
	sent              [][]uint64
	bytes             []int    // of each message sent
	timeouts          []uint64 // of each call sent
}

func (s *heldStream) SendMsg(m any) error {
	var ids []uint64
	n := 0
	for _, enc := range m.(*internalv1.EncodedCallBatch).Calls {
		n += len(enc)
		c := &internalv1.Call{}
		if err := proto.Unmarshal(enc, c); err != nil {
			return err
		}
		ids = append(ids, c.GetId())
		s.mu.Lock()
		s.timeouts = append(s.timeouts, c.GetTimeoutMicros())
		s.mu.Unlock()
	}
	s.mu.Lock()
	s.sent = append(s.sent, ids)
	s.bytes = append(s.bytes, n)
	s.mu.Unlock()
	s.entered <- struct{}{}
	select {
	case <-s.release:
		return nil
	case <-s.ctx.Done():
		return s.ctx.Err()
	}
}

func (s *heldStream) Send(b *internalv1.CallBatch) error { return s.SendMsg(b) }

func (s *heldStream) Recv() (*internalv1.ReplyBatch, error) {
	<-s.ctx.Done()
	return nil, s.ctx.Err()
}

func (s *heldStream) Context() context.Context { return s.ctx }

type heldClient struct {
	internalv1.ReplicaClient
	stream *heldStream
}

func (c heldClient) Calls(ctx context.Context, _ ...grpc.CallOption) (grpc.BidiStreamingClient[internalv1.CallBatch, internalv1.ReplyBatch], error) {
	c.stream.ctx = ctx
	return c.stream, nil
}

// runHeldPipe runs a pipe to "n2" over a heldStream (each send waits for
// a release) until the test ends.
func runHeldPipe(t *testing.T, maxWaiting int) (*pipe, *heldStream) {
	t.Helper()
	s := &heldStream{entered: make(chan struct{}, 4), release: make(chan struct{}, 4)}
	p := &pipe{node: "n2", epoch: func() uint64 { return 1 }, maxWaiting: maxWaiting, wake: make(chan struct{}, 1)}
	p.mu.pending = map[uint64]*waiter{}
	ctx, cancel := context.WithCancel(context.Background())
	p.stop = cancel
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.run(ctx, heldClient{stream: s})
	}()
	t.Cleanup(func() { p.close(); <-done })
	return p, s
}

// TestPipeDropsCallsGivenUpBeforeSending: a call whose caller gave up while
// it waited behind a send in progress is not sent; the others are.
func TestPipeDropsCallsGivenUpBeforeSending(t *testing.T) {
	p, s := runHeldPipe(t, DefaultPipeWaiting)

	bg := context.Background()
	call := func(ctx context.Context) chan error {
		errc := make(chan error, 1)
		go func() {
			_, err := p.call(ctx, &internalv1.Call{})
			errc <- err
		}()
		return errc
	}
	first := call(bg)
	<-s.entered // the first batch is being sent, and held
	queuedIDs := func() int {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.mu.queue)
	}
	keptCtx, keptCancel := context.WithCancel(bg)
	kept := call(keptCtx)
	waitUntil(t, "the second call to queue", func() bool { return queuedIDs() == 1 })
	giveUp, giveUpCancel := context.WithCancel(bg)
	gaveUp := call(giveUp)
	waitUntil(t, "the third call to queue", func() bool { return queuedIDs() == 2 })
	giveUpCancel()
	if err := <-gaveUp; status.Code(err) != codes.Canceled {
		t.Fatalf("the call given up returned %v, want CANCELED", err)
	}
	s.release <- struct{}{} // the first send returns; the queue goes next
	<-s.entered
	s.mu.Lock()
	sent := s.sent
	s.mu.Unlock()
	if len(sent) != 2 || len(sent[0]) != 1 || len(sent[1]) != 1 || sent[1][0] == sent[0][0] {
		t.Fatalf("batches sent %v: want the first call, then only the call still waited for", sent)
	}
	s.release <- struct{}{}
	keptCancel()
	p.close()
	<-first
	<-kept
}

// TestPipeQueueBoundedWhileSendBlocked: while a send is held (a peer that
// stopped reading), calls whose callers give up do not pile up in the
// queue: it stays within maxWaiting calls, and past that a call goes unary
// (errPipeFull) rather than queue.
func TestPipeQueueBoundedWhileSendBlocked(t *testing.T) {
	const bound = 8
	p, s := runHeldPipe(t, bound)

	first := make(chan error, 1)
	go func() {
		_, err := p.call(context.Background(), &internalv1.Call{})
		first <- err
	}()
	<-s.entered // the first batch is being sent, and held
	queued := func() int {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.mu.queue)
	}
	// Many callers, each giving up at once: their calls are queued, then
	// not waited for.
	gaveUp, giveUp := context.WithCancel(context.Background())
	giveUp()
	for i := range 20 * bound {
		if _, err := p.call(gaveUp, &internalv1.Call{}); status.Code(err) != codes.Canceled {
			t.Fatalf("call %d: %v, want CANCELED", i, err)
		}
		if n := queued(); n > bound {
			t.Fatalf("after %d calls given up, %d queued, over the bound of %d", i+1, n, bound)
		}
	}
	// Calls still waited for fill the queue to the bound; the next goes unary.
	waiting, stopWaiting := context.WithCancel(context.Background())
	errs := make(chan error, bound)
	for range bound - 1 { // the first call is still pending too
		go func() {
			_, err := p.call(waiting, &internalv1.Call{})
			errs <- err
		}()
	}
	waitUntil(t, "the waiting calls to queue", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.mu.pending) == bound
	})
	if _, err := p.call(context.Background(), &internalv1.Call{}); !errors.Is(err, errPipeFull) {
		t.Fatalf("a call past the bound: %v, want errPipeFull (sent unary)", err)
	}
	stopWaiting()
	for range bound - 1 {
		<-errs
	}
	s.release <- struct{}{}
	p.close()
	<-first
}

// waitUntil polls cond for up to ten seconds.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestRetainClosesPipesToFormerNodes: Retain closes the pipe and the
// connection of a node no longer listed (removed from the cluster), and
// keeps those of the nodes listed; a later call to a listed node opens
// what it needs again.
func TestRetainClosesPipesToFormerNodes(t *testing.T) {
	_, _, _, g, ctx := pipeSetup(t)
	if _, err := g.Read(ctx, "n2", &internalv1.ReadRequest{Key: []byte("k")}); err != nil {
		t.Fatal(err)
	}
	held := func() (pipes, conns int) {
		g.mu.Lock()
		defer g.mu.Unlock()
		return len(g.mu.pipes), len(g.mu.conns)
	}
	if p, c := held(); p != 1 || c != 1 {
		t.Fatalf("%d pipes, %d connections after a call, want 1 and 1", p, c)
	}
	g.Retain([]string{"n2"})
	if p, c := held(); p != 1 || c != 1 {
		t.Fatalf("n2 kept: %d pipes, %d connections, want 1 and 1", p, c)
	}
	g.Retain(nil) // n2 removed
	if p, c := held(); p != 0 || c != 0 {
		t.Fatalf("n2 removed: %d pipes, %d connections, want none", p, c)
	}
	g.pipes.Wait() // the closed pipe's goroutines end
	if _, err := g.Read(ctx, "n2", &internalv1.ReadRequest{Key: []byte("k")}); err != nil {
		t.Fatalf("a call after Retain: %v", err)
	}
}

// TestReplyStatusBoundsCodes: a peer's reply carrying a code outside
// gRPC's is Unknown here (keeping the peer's words), not a new code.
func TestReplyStatusBoundsCodes(t *testing.T) {
	for _, code := range []int32{17, 1000, -1} {
		b, err := proto.Marshal(&spb.Status{Code: code, Message: "odd"})
		if err != nil {
			t.Fatal(err)
		}
		st := ReplyStatus(&internalv1.Reply{Result: &internalv1.Reply_Error{Error: &internalv1.CallError{Status: b}}})
		if st.Code() != codes.Unknown || !strings.Contains(st.Message(), "odd") {
			t.Errorf("code %d: %v %q, want Unknown with the peer's message", code, st.Code(), st.Message())
		}
	}
	st := ReplyStatus(&internalv1.Reply{Result: ReplyError(status.Error(codes.NotFound, "gone"))})
	if st.Code() != codes.NotFound || st.Message() != "gone" {
		t.Fatalf("NOT_FOUND came back as %v %q", st.Code(), st.Message())
	}
}

// TestPipeSplitsLargeBatches: calls queued together, and replies finished
// together, go in messages of at most BatchBytes, so a burst of large
// writes or reads never makes one message over the peer's limit (which
// failed every call on the pipe); a reply no message can carry fails its
// own call only.
func TestPipeSplitsLargeBatches(t *testing.T) {
	p, s := runHeldPipe(t, DefaultPipeWaiting)
	go p.call(context.Background(), &internalv1.Call{})
	<-s.entered // the first batch is being sent, and held
	value := make([]byte, 400<<10)
	gaveUp, giveUp := context.WithCancel(context.Background())
	defer giveUp()
	for range 40 { // 16 MiB queued behind it
		go p.call(gaveUp, &internalv1.Call{Op: &internalv1.Call_Write{Write: &internalv1.WriteRequest{Key: []byte("w"), Set: value}}})
	}
	waitUntil(t, "the writes to queue", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.mu.queue) == 40
	})
	for sent := 0; sent < 400<<10*40; {
		s.release <- struct{}{}
		<-s.entered
		s.mu.Lock()
		n := s.bytes[len(s.bytes)-1]
		s.mu.Unlock()
		if n > BatchBytes {
			t.Fatalf("a message of %d bytes of calls (bound %d): over a peer's 4 MiB limit, every call on the pipe fails", n, BatchBytes)
		}
		sent += n
	}
	s.release <- struct{}{}
	giveUp()

	// Replies: the server side splits them the same way, and replaces one
	// too large for any message.
	small := &internalv1.Reply{Id: 1, Result: &internalv1.Reply_Write{Write: &internalv1.WriteResponse{}}}
	big := func(id uint64, n int) *internalv1.Reply {
		return &internalv1.Reply{Id: id, Result: &internalv1.Reply_Read{Read: &internalv1.ReadResponse{Set: make([]byte, n)}}}
	}
	rs := []*internalv1.Reply{small, big(2, 3<<20), big(3, 3<<20), big(4, 9<<20), small}
	var sizes []int
	var got []*internalv1.Reply
	if err := SendReplies(rs, 8<<20, oversizeReply, func(part []*internalv1.Reply) error {
		n := 0
		for _, r := range part {
			n += proto.Size(r)
		}
		sizes = append(sizes, n)
		got = append(got, part...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, n := range sizes {
		if n > BatchBytes+16*len(rs) && n > 3<<20+64 {
			t.Fatalf("a batch of %d bytes (bound %d)", n, BatchBytes)
		}
	}
	if len(got) != 5 || ReplyStatus(got[3]).Code() != codes.ResourceExhausted || got[3].GetId() != 4 || got[1].GetRead() == nil {
		t.Fatalf("replies sent: %d, the 9 MiB one: %v", len(got), got[3])
	}
}

// silentProxy forwards TCP to target until silenced, then drops what
// either side sends while keeping the connections open: a partition that
// closes nothing.
type silentProxy struct {
	lis    net.Listener
	silent atomic.Bool
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
}

func startSilentProxy(t *testing.T, target string) *silentProxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &silentProxy{lis: lis}
	pipe := func(dst, src net.Conn) {
		defer p.wg.Done()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if err != nil {
				return
			}
			if !p.silent.Load() {
				if _, err := dst.Write(buf[:n]); err != nil {
					return
				}
			}
		}
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			in, err := lis.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, in, out)
			p.mu.Unlock()
			p.wg.Add(2)
			go pipe(out, in)
			go pipe(in, out)
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

// TestSilentPeerConnectionFails: a peer connection that goes silent
// without closing fails within the keepalive's time, so calls to the peer
// fail as UNAVAILABLE (hinted elsewhere, the peer counted down) instead
// of each waiting out its deadline as DEADLINE_EXCEEDED.
func TestSilentPeerConnectionFails(t *testing.T) {
	_, _, target := startPipePeer(t, grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}))
	proxy := startSilentProxy(t, target)
	g := NewGRPC(func(string) (string, bool) { return proxy.lis.Addr().String(), true })
	g.PipeCalls(func() uint64 { return 3 }, 0)
	defer g.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := g.Read(ctx, "n2", &internalv1.ReadRequest{Key: []byte("k")}); err != nil {
		t.Fatal(err)
	}
	proxy.silent.Store(true)
	_, err := g.Read(ctx, "n2", &internalv1.ReadRequest{Key: []byte("k")})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("a call over a connection gone silent: %v, want UNAVAILABLE once keepalive finds it dead", err)
	}
}

// TestClosedPipeFailsCallsAsUnavailable: closing a pipe (a node leaving
// the cluster, Close) fails the calls waiting on it as UNAVAILABLE, never
// as gRPC's CANCELED from the stream ending, which would neither hint the
// write nor count the peer down.
func TestClosedPipeFailsCallsAsUnavailable(t *testing.T) {
	for i := range 50 {
		peer, _, a := startPipePeer(t)
		g := NewGRPC(func(string) (string, bool) { return a, true })
		g.PipeCalls(func() uint64 { return 3 }, 0)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		errc := make(chan error, 1)
		go func() {
			_, err := g.Read(ctx, "n2", &internalv1.ReadRequest{Key: []byte("block")})
			errc <- err
		}()
		waitUntil(t, "the call to be served", func() bool { return peer.piped.Load() == 1 })
		g.Retain(nil) // n2 is no longer a member
		err := <-errc
		cancel()
		g.Close()
		close(peer.release)
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("round %d: a call on a pipe closed under it: %v, want UNAVAILABLE", i, err)
		}
	}
}

// TestPipeSendsTheTimeLeftWhenSent: a call queued behind a send in
// progress tells the replica the time its caller has left when it is
// sent, not when it was queued; and a positive time left is never sent
// as 0, which means "no timeout".
func TestPipeSendsTheTimeLeftWhenSent(t *testing.T) {
	// Real time: the call's waiter comes from a pool that outlives any
	// synctest bubble.
	p, s := runHeldPipe(t, DefaultPipeWaiting)
	go p.call(context.Background(), &internalv1.Call{})
	<-s.entered // the first batch is being sent, and held
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	go p.call(ctx, &internalv1.Call{})
	waitUntil(t, "the call to queue", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.mu.queue) == 1
	})
	// The call waits behind the held send: that time is its caller's.
	time.Sleep(time.Second)
	s.release <- struct{}{}
	<-s.entered
	s.mu.Lock()
	got := s.timeouts[len(s.timeouts)-1]
	s.mu.Unlock()
	if got == 0 || got > 1_000_000 {
		t.Fatalf("the queued call was sent with %d µs left; its caller had under 1,000,000 left", got)
	}
	s.release <- struct{}{}
	cancel()
	if CeilMicros(time.Nanosecond) != 1 || CeilMicros(0) != 0 || CeilMicros(1500*time.Nanosecond) != 2 {
		t.Fatal("CeilMicros does not round up")
	}
}

// TestPipeDropsCallsGivenUpBetweenMessages: a queue too large for one
// message goes one message at a time, so a call whose caller gives up
// while an earlier message of the same queue is held up (flow control) is
// not sent. (Split after taking the whole queue, it was sent, with the
// time left it had before the wait.)
func TestPipeDropsCallsGivenUpBetweenMessages(t *testing.T) {
	p, s := runHeldPipe(t, DefaultPipeWaiting)
	bg := context.Background()
	call := func(ctx context.Context, size int) chan error {
		errc := make(chan error, 1)
		go func() {
			_, err := p.call(ctx, &internalv1.Call{Op: &internalv1.Call_Write{Write: &internalv1.WriteRequest{Key: []byte("w"), Set: make([]byte, size)}}})
			errc <- err
		}()
		return errc
	}
	queued := func(n int) func() bool {
		return func() bool {
			p.mu.Lock()
			defer p.mu.Unlock()
			return len(p.mu.queue) == n
		}
	}
	sent := func() [][]uint64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return slices.Clone(s.sent)
	}
	first := call(bg, 0)
	<-s.entered // the first message is being sent, and held
	a := call(bg, 3<<20)
	waitUntil(t, "a to queue", queued(1))
	giveUp, giveUpCancel := context.WithCancel(bg)
	b := call(giveUp, 3<<20) // with a, over BatchBytes: a message of its own
	waitUntil(t, "b to queue", queued(2))
	p.mu.Lock()
	bID := p.mu.queue[1].id
	p.mu.Unlock()
	s.release <- struct{}{}
	<-s.entered // a's message is being sent, and held
	if got := sent(); len(got) != 2 || len(got[1]) != 1 {
		t.Fatalf("messages %v: want the first call, then a alone", got)
	}
	giveUpCancel()
	if err := <-b; status.Code(err) != codes.Canceled {
		t.Fatalf("b given up returned %v, want CANCELED", err)
	}
	s.release <- struct{}{}
	c := call(bg, 0)
	<-s.entered // the next message: c's, without b
	got := sent()
	if len(got) != 3 || len(got[2]) != 1 || got[2][0] == bID {
		t.Fatalf("messages %v: want the first call, a, then c alone (b, %d, was given up before its message)", got, bID)
	}
	s.release <- struct{}{}
	p.close()
	<-first
	<-a
	<-c
}
