// Package transport carries node-to-node requests: a gRPC client with one
// reused connection per peer, an in-memory transport for single-process
// clusters, and a fault injector (drop, delay, partition by node or DC) that
// wraps either, for tests and failover drills.
package transport

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/meridiankv/meridian/api/codec"
	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
)

// MaxMessageSize bounds node-to-node messages: a sibling set may hold
// several maximum-size values.
const MaxMessageSize = 256 << 20

// Resolver maps a node ID to the address of its peer listener.
type Resolver func(id string) (addr string, ok bool)

// GRPC reaches peers over gRPC, keeping one connection per peer (node and
// address).
type GRPC struct {
	resolve  Resolver
	dialOpts []grpc.DialOption
	// perNode, when set, adds dial options for one node (credentials that
	// check the peer is that node).
	perNode func(node string) []grpc.DialOption
	mu      struct {
		sync.Mutex
		conns  map[peerKey]*grpc.ClientConn
		closed bool
		// retired: connections replaced by Reconnect, closed a while
		// later (calls that took them just before finish on them).
		retired []*grpc.ClientConn
		// pipes: the Calls stream on each connection, when PipeCalls is
		// on.
		pipes map[peerKey]*pipe
	}
	// epoch, when set, turns pipes on and stamps each piped call.
	epoch      func() uint64
	maxWaiting int
	pipes      sync.WaitGroup // the pipes' goroutines
}

// peerKey names a connection: the node it is to and the address it was
// dialled at (a node whose address changes gets a new connection, and
// its credentials check the node, not the address).
type peerKey struct{ node, addr string }

// DialPerNode adds, to every connection to a node, the dial options fn
// gives for it (e.g. credentials that check the peer's identity). Call it
// before the first call.
func (g *GRPC) DialPerNode(fn func(node string) []grpc.DialOption) { g.perNode = fn }

// PipeCalls makes replica reads and writes go over one Calls stream per
// peer (see pipe), each stamped with epoch() (the sender's topology
// epoch), at most maxWaiting of them waiting for a reply per peer (0:
// DefaultPipeWaiting). Call it before the first call.
func (g *GRPC) PipeCalls(epoch func() uint64, maxWaiting int) {
	if maxWaiting <= 0 {
		maxWaiting = DefaultPipeWaiting
	}
	g.epoch, g.maxWaiting = epoch, maxWaiting
}

// retireAfter is how long a replaced connection stays open for the calls
// already on it.
const retireAfter = 30 * time.Second

// FlowWindow is the HTTP/2 flow-control window of every node connection
// and stream, fixed: 16 MiB, the most gRPC's bandwidth-delay estimator
// would grow a window to (enough for 160 MB/s per stream over a 100 ms
// link between DCs), so a connection may buffer no more than it could
// before. The estimator measures with a ping round trip whenever data
// arrives, which on the request path cost a ping frame each way and about
// four allocations per quorum write; a fixed window needs none.
const FlowWindow = 16 << 20

// PeerKeepaliveTime is how long a peer connection may be quiet before it
// is pinged (gRPC's least is 10 s, which peers enforce: a little more).
const PeerKeepaliveTime = 15 * time.Second

// NewGRPC returns a transport that dials peers found by resolve. Extra dial
// options (e.g. tracing stats handlers) are appended to the defaults.
func NewGRPC(resolve Resolver, opts ...grpc.DialOption) *GRPC {
	g := &GRPC{resolve: resolve}
	g.dialOpts = append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize),
			// Calls are marshalled into pooled buffers, small ones too.
			grpc.ForceCodecV2(codec.Proto{})),
		grpc.WithStaticStreamWindowSize(FlowWindow), grpc.WithStaticConnWindowSize(FlowWindow),
		// A restarted peer must be reachable within a second, not after
		// gRPC's default back-off of up to two minutes.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: 2 * time.Second,
		}),
		// A connection that goes silent without closing (a partition, a
		// frozen host, NAT state dropped) fails within about 20 s instead
		// of holding every call to the peer until its deadline, answered
		// as DEADLINE_EXCEEDED, which counts the peer as reached (nothing
		// hinted). Peers allow pings every 10 s.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: PeerKeepaliveTime, Timeout: 5 * time.Second, PermitWithoutStream: true}),
	}, opts...)
	g.mu.conns = map[peerKey]*grpc.ClientConn{}
	g.mu.pipes = map[peerKey]*pipe{}
	return g
}

// Conn returns the shared connection to a node.
func (g *GRPC) Conn(node string) (*grpc.ClientConn, error) {
	addr, ok := g.resolve(node)
	if !ok {
		return nil, status.Errorf(codes.Unavailable, "node %q has no known address", node)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.mu.closed {
		return nil, status.Error(codes.Unavailable, "transport closed")
	}
	return g.connLocked(peerKey{node, addr})
}

// connLocked returns the connection k names, dialling it if there is
// none. The caller holds g.mu.
func (g *GRPC) connLocked(k peerKey) (*grpc.ClientConn, error) {
	if c, ok := g.mu.conns[k]; ok {
		return c, nil
	}
	opts := g.dialOpts
	if g.perNode != nil {
		opts = append(slices.Clip(opts), g.perNode(k.node)...)
	}
	c, err := grpc.NewClient(k.addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("dial %s (%s): %w", k.node, k.addr, err)
	}
	g.mu.conns[k] = c
	return c, nil
}

func (g *GRPC) client(node string) (internalv1.ReplicaClient, error) {
	c, err := g.Conn(node)
	if err != nil {
		return nil, err
	}
	return internalv1.NewReplicaClient(c), nil
}

// pipe returns the working pipe to node, opening one if needed; nil when
// calls must go unary.
func (g *GRPC) pipe(node string) *pipe {
	addr, ok := g.resolve(node)
	if !ok {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.mu.closed {
		return nil
	}
	k := peerKey{node, addr}
	if p := g.mu.pipes[k]; p != nil && !p.failed() {
		return p
	}
	c, err := g.connLocked(k)
	if err != nil {
		return nil
	}
	p := openPipe(c, node, g.epoch, g.maxWaiting, &g.pipes)
	g.mu.pipes[k] = p
	return p
}

// PipedWaiting counts the piped calls waiting for a reply, over every
// peer (a metric).
func (g *GRPC) PipedWaiting() int {
	g.mu.Lock()
	pipes := make([]*pipe, 0, len(g.mu.pipes))
	for _, p := range g.mu.pipes {
		pipes = append(pipes, p)
	}
	g.mu.Unlock()
	n := 0
	for _, p := range pipes {
		p.mu.Lock()
		n += len(p.mu.pending)
		p.mu.Unlock()
	}
	return n
}

// piped sends c on node's pipe when the call qualifies; ok is false when
// the caller must send it unary instead.
func (g *GRPC) piped(ctx context.Context, node string, size int, c *internalv1.Call) (r *internalv1.Reply, ok bool, err error) {
	if g.epoch == nil || size > MaxPipedCall || traced(ctx) || unpiped(ctx) {
		return nil, false, nil
	}
	p := g.pipe(node)
	if p == nil {
		return nil, false, nil
	}
	r, err = p.call(ctx, c)
	if err == errPipeFull {
		return nil, false, nil
	}
	return r, true, err
}

// Read asks a peer for its copy of a key.
func (g *GRPC) Read(ctx context.Context, node string, req *internalv1.ReadRequest) (*internalv1.ReadResponse, error) {
	rc := &readCall{op: internalv1.Call_Read{Read: req}}
	rc.call.Op = &rc.op
	if r, ok, err := g.piped(ctx, node, len(req.GetKey()), &rc.call); ok {
		if err != nil {
			return nil, err
		}
		if resp := r.GetRead(); resp != nil {
			return resp, nil
		}
		return nil, status.Errorf(codes.Internal, "node %s answered a read with %T", node, r.GetResult())
	}
	c, err := g.client(node)
	if err != nil {
		return nil, err
	}
	return c.Read(ctx, req)
}

// readCall and writeCall are a piped call with its operation: one
// allocation for both.
type readCall struct {
	call internalv1.Call
	op   internalv1.Call_Read
}

type writeCall struct {
	call internalv1.Call
	op   internalv1.Call_Write
}

// Write sends a sibling set to a peer to merge (or hold as a hint).
func (g *GRPC) Write(ctx context.Context, node string, req *internalv1.WriteRequest) error {
	wc := &writeCall{op: internalv1.Call_Write{Write: req}}
	wc.call.Op = &wc.op
	if _, ok, err := g.piped(ctx, node, len(req.GetKey())+len(req.GetSet()), &wc.call); ok {
		return err
	}
	c, err := g.client(node)
	if err != nil {
		return err
	}
	_, err = c.Write(ctx, req)
	return err
}

// Coordinate forwards a client write to a replica.
func (g *GRPC) Coordinate(ctx context.Context, node string, req *internalv1.CoordinateRequest) (*internalv1.CoordinateResponse, error) {
	c, err := g.client(node)
	if err != nil {
		return nil, err
	}
	return c.Coordinate(ctx, req)
}

// Reconnect makes the connection to node retry at once (gossip says the
// node is back), instead of waiting out its back-off.
func (g *GRPC) Reconnect(node string) {
	addr, ok := g.resolve(node)
	if !ok {
		return
	}
	// A connection waiting out its back-off is replaced (the next call
	// dials afresh); the old one is closed later, so calls that took it
	// just before are not cut. ClientConn.ResetConnectBackoff would be the
	// direct way, but it iterates the connection's subconns without its
	// lock and races with gRPC creating one (grpc v1.85).
	g.mu.Lock()
	defer g.mu.Unlock()
	k := peerKey{node, addr}
	c := g.mu.conns[k]
	if c == nil || g.mu.closed || c.GetState() != connectivity.TransientFailure {
		return
	}
	delete(g.mu.conns, k)
	if p := g.mu.pipes[k]; p != nil {
		delete(g.mu.pipes, k)
		p.close() // its calls fail over (the connection is down anyway)
	}
	g.retireLocked(c)
}

// Retain keeps the connections and pipes to nodes and closes the others
// (a node removed, or one whose address changed): a pipe held by nothing
// would keep its goroutines, and the peer's handler, for good. A closed
// connection is retired, so calls that took it just before finish.
func (g *GRPC) Retain(nodes []string) {
	keep := make(map[peerKey]bool, len(nodes))
	for _, n := range nodes {
		if addr, ok := g.resolve(n); ok {
			keep[peerKey{n, addr}] = true
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.mu.closed {
		return
	}
	for k, p := range g.mu.pipes {
		if !keep[k] {
			delete(g.mu.pipes, k)
			p.close()
		}
	}
	for k, c := range g.mu.conns {
		if keep[k] {
			continue
		}
		delete(g.mu.conns, k)
		g.retireLocked(c)
	}
}

// retireLocked closes c after retireAfter. The caller holds g.mu.
func (g *GRPC) retireLocked(c *grpc.ClientConn) {
	g.mu.retired = append(g.mu.retired, c)
	time.AfterFunc(retireAfter, func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if i := slices.Index(g.mu.retired, c); i >= 0 {
			g.mu.retired = slices.Delete(g.mu.retired, i, i+1)
			c.Close()
		}
	})
}

// Close closes every connection and pipe.
func (g *GRPC) Close() error {
	defer g.pipes.Wait()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.mu.closed = true
	for addr, p := range g.mu.pipes {
		p.close()
		delete(g.mu.pipes, addr)
	}
	var first error
	for addr, c := range g.mu.conns {
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
		delete(g.mu.conns, addr)
	}
	for _, c := range g.mu.retired {
		c.Close()
	}
	g.mu.retired = nil
	return first
}

// Leaves asks a peer for one partition's Merkle leaves.
func (g *GRPC) Leaves(ctx context.Context, node string, req *internalv1.LeavesRequest) (*internalv1.LeavesResponse, error) {
	c, err := g.client(node)
	if err != nil {
		return nil, err
	}
	return c.Leaves(ctx, req)
}

// BucketDigests asks a peer for the keys and digests of some buckets.
func (g *GRPC) BucketDigests(ctx context.Context, node string, req *internalv1.BucketDigestsRequest) (*internalv1.BucketDigestsResponse, error) {
	c, err := g.client(node)
	if err != nil {
		return nil, err
	}
	return c.BucketDigests(ctx, req)
}

// CollectTombstones asks a peer to delete proven-everywhere tombstones.
func (g *GRPC) CollectTombstones(ctx context.Context, node string, req *internalv1.CollectTombstonesRequest) (*internalv1.CollectTombstonesResponse, error) {
	c, err := g.client(node)
	if err != nil {
		return nil, err
	}
	return c.CollectTombstones(ctx, req)
}

// ScanPartition asks a peer for one page of a partition's keys and sets
// (a partition transfer's pull).
func (g *GRPC) ScanPartition(ctx context.Context, node string, req *internalv1.ScanPartitionRequest) (*internalv1.ScanPartitionResponse, error) {
	c, err := g.client(node)
	if err != nil {
		return nil, err
	}
	return c.ScanPartition(ctx, req)
}

// PartitionSizes asks a peer how many bytes it holds for some partitions.
func (g *GRPC) PartitionSizes(ctx context.Context, node string, req *internalv1.PartitionSizesRequest) (*internalv1.PartitionSizesResponse, error) {
	c, err := g.client(node)
	if err != nil {
		return nil, err
	}
	return c.PartitionSizes(ctx, req)
}
