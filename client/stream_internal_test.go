package client

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
)

// fakeNode is a one-node "cluster" on loopback that counts how calls
// arrive: unary, or on Calls streams (unless it serves none, as an older
// node would not).
type fakeNode struct {
	kvv1.UnimplementedKVServer
	internalv1.UnimplementedDiscoveryServer
	addr      string
	noStreams atomic.Bool
	unary     atomic.Int64
	streamed  atomic.Int64
	streams   atomic.Int64 // Calls streams opened
	ended     atomic.Int64 // Calls streams the client closed cleanly
	maxBatch  atomic.Int64 // the largest CallBatch received, bytes
	cancels   atomic.Int64 // call IDs the client cancelled
}

func (f *fakeNode) Topology(context.Context, *internalv1.TopologyRequest) (*internalv1.TopologyResponse, error) {
	return &internalv1.TopologyResponse{Epoch: 1, Partitions: 1,
		Nodes:     []*internalv1.TopologyNode{{Id: "n1", Dc: "dc1", GrpcAddr: f.addr, Alive: true}},
		Keyspaces: []*internalv1.KeyspaceTopology{{Name: "default", Partitions: []*internalv1.PartitionReplicas{{Nodes: []uint32{0}}}}}}, nil
}

func (f *fakeNode) Get(_ context.Context, r *kvv1.GetRequest) (*kvv1.GetResponse, error) {
	f.unary.Add(1)
	return f.get(r)
}

func (f *fakeNode) Put(_ context.Context, r *kvv1.PutRequest) (*kvv1.PutResponse, error) {
	f.unary.Add(1)
	return &kvv1.PutResponse{Context: r.GetKey()}, nil
}

// get answers "missing" with NOT_FOUND's stand-in (an INVALID_ARGUMENT,
// as a node answers a bad key) and echoes every other key as its value.
func (f *fakeNode) get(r *kvv1.GetRequest) (*kvv1.GetResponse, error) {
	if string(r.GetKey()) == "bad" {
		return nil, status.Error(codes.InvalidArgument, "bad key")
	}
	return &kvv1.GetResponse{Siblings: []*kvv1.Sibling{{Value: r.GetKey()}}}, nil
}

func (f *fakeNode) Calls(stream kvv1.KV_CallsServer) error {
	if f.noStreams.Load() {
		return status.Error(codes.Unimplemented, "unknown method Calls")
	}
	f.streams.Add(1)
	for {
		b, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			f.ended.Add(1)
			return nil
		}
		if err != nil {
			return err
		}
		if n := int64(proto.Size(b)); n > f.maxBatch.Load() {
			f.maxBatch.Store(n) // one stream at a time here: no race to lose
		}
		f.cancels.Add(int64(len(b.GetCancel())))
		out := &kvv1.ReplyBatch{}
		for _, c := range b.GetCalls() {
			f.streamed.Add(1)
			if g, ok := c.GetOp().(*kvv1.Call_Get); ok && string(g.Get.GetKey()) == "never" {
				continue // no reply: the caller gives up
			}
			r := &kvv1.Reply{Id: c.GetId()}
			switch op := c.GetOp().(type) {
			case *kvv1.Call_Get:
				resp, err := f.get(op.Get)
				if err != nil {
					enc, _ := proto.Marshal(status.Convert(err).Proto())
					r.Result = &kvv1.Reply_Error{Error: enc}
				} else {
					r.Result = &kvv1.Reply_Get{Get: resp}
				}
			case *kvv1.Call_Put:
				r.Result = &kvv1.Reply_Put{Put: &kvv1.PutResponse{Context: op.Put.GetKey()}}
			}
			out.Replies = append(out.Replies, r)
		}
		if err := stream.Send(out); err != nil {
			return err
		}
	}
}

func startFake(t *testing.T, noStreams bool) *fakeNode {
	t.Helper()
	lis := listenLoopback(t)
	f := &fakeNode{addr: lis.Addr().String()}
	f.noStreams.Store(noStreams)
	serveFake(t, lis, f)
	return f
}

// fakeServer is a fake node: the KV service and the topology.
type fakeServer interface {
	kvv1.KVServer
	internalv1.DiscoveryServer
}

func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return lis
}

// serveFake serves f on lis, with opts, until the test ends.
func serveFake(t *testing.T, lis net.Listener, f fakeServer, opts ...grpc.ServerOption) {
	srv := grpc.NewServer(opts...)
	kvv1.RegisterKVServer(srv, f)
	internalv1.RegisterDiscoveryServer(srv, f)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
}

func dialFake(t *testing.T, f *fakeNode, opts ...Option) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, []string{f.addr}, append([]Option{Insecure()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestCallsGoOnOneStream(t *testing.T) {
	f := startFake(t, false)
	c := dialFake(t, f)
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		r, err := c.Get(ctx, "", []byte("k"))
		if err != nil || len(r.Values) != 1 || string(r.Values[0]) != "k" {
			t.Fatalf("get: %v, %v", r, err)
		}
	}
	if _, err := c.Put(ctx, "", []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	// A node's error comes back as the unary call's would.
	_, err := c.Get(ctx, "", []byte("bad"))
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "bad key") {
		t.Fatalf("get of a bad key: %v, want INVALID_ARGUMENT", err)
	}
	if got, want := f.streamed.Load(), int64(22); got != want || f.unary.Load() != 0 || f.streams.Load() != 1 {
		t.Fatalf("%d calls streamed on %d streams and %d unary; want %d on one stream", got, f.streams.Load(), f.unary.Load(), want)
	}

	// Unary: a traced call (its trace context must travel), one with
	// metadata of its own, a large value; and everything with UnaryCalls.
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}, TraceFlags: trace.FlagsSampled})
	if _, err := c.Get(trace.ContextWithSpanContext(ctx, sc), "", []byte("k")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer x"), "", []byte("k")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "", []byte("k"), make([]byte, maxStreamedCall+1)); err != nil {
		t.Fatal(err)
	}
	if _, err := dialFake(t, f, UnaryCalls()).Get(ctx, "", []byte("k")); err != nil {
		t.Fatal(err)
	}
	if f.unary.Load() != 4 || f.streamed.Load() != 22 {
		t.Fatalf("%d unary, %d streamed; want 4 unary (traced, metadata, large, UnaryCalls) and no more streamed", f.unary.Load(), f.streamed.Load())
	}
}

func TestCallsFallBackToUnaryOnOlderNodes(t *testing.T) {
	f := startFake(t, true)
	c := dialFake(t, f)
	for i := 0; i < 5; i++ {
		r, err := c.Get(context.Background(), "", []byte("k"))
		if err != nil || len(r.Values) != 1 {
			t.Fatalf("get from a node without call streams: %v, %v", r, err)
		}
	}
	if f.unary.Load() != 5 || f.streamed.Load() != 0 {
		t.Fatalf("%d unary calls, %d streamed, want all 5 unary", f.unary.Load(), f.streamed.Load())
	}
	// The node is upgraded: once the client asks again, calls stream.
	f.noStreams.Store(false)
	c.opts.reprobe = -1 // ask at the next call
	for i := 0; i < 3; i++ {
		if _, err := c.Get(context.Background(), "", []byte("k")); err != nil {
			t.Fatal(err)
		}
	}
	if f.streamed.Load() == 0 {
		t.Fatalf("after the upgrade: %d streamed, %d unary; want calls on a stream", f.streamed.Load(), f.unary.Load())
	}
}

func TestCallStreamRetiresCleanly(t *testing.T) {
	f := startFake(t, false)
	c := dialFake(t, f)
	c.opts.streamAge = -1 // every stream is past its age once used
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		if _, err := c.Get(ctx, "", []byte("k")); err != nil {
			t.Fatal(err)
		}
	}
	// Every call was streamed, each stream but the last retired by
	// closing its side (the node saw EOF, not a cancelled stream).
	deadline := time.Now().Add(10 * time.Second)
	for f.ended.Load() < f.streams.Load()-1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if f.streamed.Load() != 5 || f.unary.Load() != 0 || f.streams.Load() < 2 || f.ended.Load() < f.streams.Load()-1 {
		t.Fatalf("%d streamed, %d unary, %d streams, %d ended cleanly; want 5 streamed over several streams, all but the last ended cleanly",
			f.streamed.Load(), f.unary.Load(), f.streams.Load(), f.ended.Load())
	}
}

func TestCallStreamGivesUpWithTheCaller(t *testing.T) {
	f := startFake(t, false)
	c := dialFake(t, f)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Get(ctx, "", []byte("k")); status.Code(err) != codes.Canceled && !errors.Is(err, context.Canceled) {
		t.Fatalf("get with a cancelled context: %v, want CANCELED", err)
	}
	dctx, dcancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer dcancel()
	if _, err := c.Get(dctx, "", []byte("k")); status.Code(err) != codes.DeadlineExceeded && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("get past its deadline: %v, want DEADLINE_EXCEEDED", err)
	}
}

// TestCallStreamCancelsCallsGivenUp: a call sent on the stream whose
// caller gives up (a deadline, a hedged read's loser) is cancelled on the
// node, as a unary call's cancellation would be, and the stream goes on.
func TestCallStreamCancelsCallsGivenUp(t *testing.T) {
	f := startFake(t, false)
	c := dialFake(t, f)
	if _, err := c.Get(context.Background(), "", []byte("k")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := c.Get(ctx, "", []byte("never")); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a get never answered: %v, want DEADLINE_EXCEEDED", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for f.cancels.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the node was told of %d cancelled calls, want 1", f.cancels.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := c.Get(context.Background(), "", []byte("k")); err != nil {
		t.Fatalf("a call after the cancel: %v", err)
	}
	if f.unary.Load() != 0 {
		t.Fatalf("%d unary calls, want all on the stream", f.unary.Load())
	}
}

// TestCallBatchesStayUnderTheMessageLimit: many large calls at once go in
// several messages, none over about 1 MiB (a node's limit is its largest
// value plus 1 MiB; gRPC's default is 4 MiB).
func TestCallBatchesStayUnderTheMessageLimit(t *testing.T) {
	f := startFake(t, false)
	c := dialFake(t, f)
	value := make([]byte, maxStreamedCall-100)
	errs := make(chan error, 200)
	for i := 0; i < 200; i++ {
		go func() {
			_, err := c.Put(context.Background(), "", []byte("k"), value)
			errs <- err
		}()
	}
	for i := 0; i < 200; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if f.streamed.Load() != 200 || f.streams.Load() != 1 {
		t.Fatalf("%d calls streamed on %d streams, want 200 on one", f.streamed.Load(), f.streams.Load())
	}
	if m := f.maxBatch.Load(); m > maxBatchBytes+maxStreamedCall {
		t.Fatalf("a batch of %d bytes, want at most about %d", m, maxBatchBytes)
	}
}

// TestCallStreamQueueBoundedWhileSendBlocked: while the sender is not
// taking calls (blocked on a node that stopped reading; here it never
// runs), calls whose callers give up do not pile up in the queue.
func TestCallStreamQueueBoundedWhileSendBlocked(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &callStream{opened: time.Now(), maxAge: time.Hour, wake: make(chan struct{}, 1), ctx: ctx, stop: cancel}
	s.marshalled.L = &s.mu.Mutex
	s.mu.pending = map[uint64]chan streamResult{}
	gaveUp, giveUp := context.WithCancel(context.Background())
	giveUp()
	for i := range 3 * maxStreamWaiting {
		if _, err := s.call(gaveUp, &kvv1.Call{}); status.Code(err) != codes.Canceled {
			t.Fatalf("call %d: %v, want CANCELED", i, err)
		}
		s.mu.Lock()
		n := len(s.mu.queue)
		s.mu.Unlock()
		if n > maxStreamWaiting {
			t.Fatalf("after %d calls given up, %d queued, over the bound of %d", i+1, n, maxStreamWaiting)
		}
	}
}

// TestCallThatCannotBeMarshalledFailsAlone: a call whose strings are not
// valid UTF-8 (protobuf refuses to marshal them) goes unary, where it
// fails alone, instead of failing the batch and every call on the stream.
func TestCallThatCannotBeMarshalledFailsAlone(t *testing.T) {
	f := startFake(t, false)
	c := dialFake(t, f)
	ctx := context.Background()
	if _, err := c.Get(ctx, "", []byte("k")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, "", []byte("k"), Level(kvv1.Level_LEVEL_LOCAL_QUORUM), ConsistencyDC("dc\xff")); err == nil {
		t.Fatal("a call with a DC name that is not UTF-8 succeeded")
	}
	if _, err := c.Get(ctx, "", []byte("k")); err != nil {
		t.Fatalf("the next call: %v", err)
	}
	if n := f.streams.Load(); n != 1 {
		t.Fatalf("%d streams opened, want the first kept (not failed by the bad call)", n)
	}
}

// TestNegativeTimeoutExpires: a Timeout already past (time.Until of a
// passed deadline) fails the call at once, rather than lift the deadline.
func TestNegativeTimeoutExpires(t *testing.T) {
	f := startFake(t, false)
	c := dialFake(t, f)
	if _, err := c.Get(context.Background(), "", []byte("k"), Timeout(-time.Second)); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a get with a negative timeout: %v, want DEADLINE_EXCEEDED", err)
	}
	if n := f.streamed.Load() + f.unary.Load(); n != 0 {
		t.Fatalf("%d calls reached the node, want none", n)
	}
}

// TestConflictErrorIsAborted: Update's conflict error is ErrConflict for
// errors.Is and ABORTED for status.Code, as every other call error has a
// status.
func TestConflictErrorIsAborted(t *testing.T) {
	var err error = &conflictError{attempts: 3}
	if !errors.Is(err, ErrConflict) || status.Code(err) != codes.Aborted {
		t.Fatalf("conflict error %v: errors.Is ErrConflict %v, code %v; want true, ABORTED", err, errors.Is(err, ErrConflict), status.Code(err))
	}
}

// TestCallStreamRetiresOnGoaway: a node recycling the connection (a
// GOAWAY, then a grace for the calls open) makes the stream on it retire
// at once, well before its maximum age: calls after the GOAWAY go on a
// new stream, on a new connection, so none is cut off when the grace
// ends; the old stream ends cleanly once its calls are answered.
func TestCallStreamRetiresOnGoaway(t *testing.T) {
	lis := listenLoopback(t)
	f := &fakeNode{addr: lis.Addr().String()}
	serveFake(t, lis, f, grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionAge: 200 * time.Millisecond, MaxConnectionAgeGrace: time.Minute}))
	c := dialFake(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Get(ctx, "", []byte("k")); err != nil || f.streams.Load() != 1 {
		t.Fatalf("get: %v, %d streams; want one", err, f.streams.Load())
	}
	eventually(t, "a call after the GOAWAY goes on a new stream", func() bool {
		if _, err := c.Get(ctx, "", []byte("k")); err != nil {
			t.Fatalf("get: %v", err)
		}
		return f.streams.Load() > 1
	})
	eventually(t, "the first stream ends cleanly", func() bool { return f.ended.Load() > 0 })
}
