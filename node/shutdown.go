package node

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// DefaultDrainTimeout bounds how long Close waits for the calls in flight
// (Options.DrainTimeout).
const DefaultDrainTimeout = 10 * time.Second

// errShuttingDown refuses calls once Close has begun. It carries no
// Meridian ErrorInfo: the caller may retry on another node, since nothing
// was done here.
var errShuttingDown = status.Error(codes.Unavailable, "node is shutting down")

// gate counts the unary calls in flight, so that Close records a clean
// shutdown only after every handler (and so every write it makes) has
// returned. Once closed, it refuses new calls.
type gate struct {
	mu      sync.Mutex
	closed  bool
	running int
	idle    chan struct{} // closed when closed and running == 0
	closing chan struct{} // closed by close
}

func newGate() *gate { return &gate{idle: make(chan struct{}), closing: make(chan struct{})} }

// enter admits a call; false once the gate is closed.
func (g *gate) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.running++
	return true
}

func (g *gate) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.running--
	if g.closed && g.running == 0 {
		close(g.idle)
	}
}

// close refuses every later call.
func (g *gate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	g.closed = true
	close(g.closing)
	if g.running == 0 {
		close(g.idle)
	}
}

// wait closes the gate and waits for the calls in flight to return, at most
// timeout; it reports whether they all did.
func (g *gate) wait(timeout time.Duration) bool {
	g.close()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-g.idle:
		return true
	case <-t.C:
		return false
	}
}

// unary is the server interceptor. Health checks pass: they must keep
// answering (NOT_SERVING) while the node drains.
func (g *gate) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if strings.HasPrefix(info.FullMethod, "/grpc.health.v1.Health/") {
		return handler(ctx, req)
	}
	if !g.enter() {
		return nil, errShuttingDown
	}
	defer g.leave()
	return handler(ctx, req)
}

// watchStorage stops the node's service when its engine fails (a failed
// fsync): the node can no longer promise durability, so it must not keep
// acknowledging anything. It returns when the engine fails or stop closes.
func (n *Node) watchStorage(stop <-chan struct{}) {
	select {
	case <-n.eng.Failed():
		n.storageFailed(n.eng.Failure())
	case <-stop:
	}
}

// storageFailed marks every service NOT_SERVING, logs why and closes
// Failed. The process that runs the node is expected to Close it and exit.
func (n *Node) storageFailed(err error) {
	n.failOnce.Do(func() {
		n.failure = fmt.Errorf("storage failed to sync: %w", err)
		if n.health != nil {
			n.health.Shutdown() // every service NOT_SERVING, for good
		}
		n.log.Error(fmt.Sprintf("storage failed to sync: %v; stopping: the node cannot promise durability. Check the disk, then restart", err))
		close(n.failed)
	})
}

// Failed is closed when the node's storage has failed (a failed fsync).
// The node then answers health checks NOT_SERVING and its storage refuses
// every read and write; the caller should Close it and exit with an error
// (Failure).
func (n *Node) Failed() <-chan struct{} { return n.failed }

// Failure is why the node failed, nil while Failed is open.
func (n *Node) Failure() error {
	select {
	case <-n.failed:
		return n.failure
	default:
		return nil
	}
}

// within runs f and waits for it until deadline; it reports whether f
// returned in time (if not, f goes on in the background).
func within(deadline time.Time, f func()) bool {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}
