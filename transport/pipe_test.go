package transport

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
	return CallServer{Serve: p.serve, Closing: p.closing, MaxCallTime: time.Minute}.ServeStream(stream)
}

func (p *pipePeer) serve(ctx context.Context, c *internalv1.Call) *internalv1.Reply {
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

func startPipePeer(t *testing.T) (*pipePeer, *grpc.Server, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pipePeer{closing: make(chan struct{}), release: make(chan struct{})}
	srv := grpc.NewServer()
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
	g.PipeCalls(func() uint64 { return 3 })
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
