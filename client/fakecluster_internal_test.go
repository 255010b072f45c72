package client

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
)

// kvCluster is fake nodes, each a replica of the one partition in the
// order started, serving kv.v1 (unary and Calls) and the topology, and
// recording what reached them.
type kvCluster struct {
	nodes []*kvNode
	epoch atomic.Uint64 // the topology's
}

// kvNode is one fake node. Its knobs: breakWrites (the next writes that
// reach it break the connection, as a node crashing or a reset would:
// bare UNAVAILABLE, and on a Calls stream the stream ends), readErr (reads
// are answered with it), writeErr (puts are answered with it), holdReads (reads on a Calls stream are never
// answered), holdTopology (topology requests wait for it to close, or for
// their caller to give up), dead (the topology lists it as not alive),
// effEpoch (the epoch its answers carry).
type kvNode struct {
	kvv1.UnimplementedKVServer
	internalv1.UnimplementedDiscoveryServer
	cl         *kvCluster
	id, dc     string
	addr       string
	topologies atomic.Int64

	breakWrites  atomic.Int64
	readErr      atomic.Pointer[error]
	writeErr     atomic.Pointer[error]
	holdReads    atomic.Bool
	holdPuts     atomic.Pointer[chan struct{}] // set: puts on a Calls stream wait for it to close
	holdTopology atomic.Pointer[chan struct{}]
	dead         atomic.Bool
	effEpoch     atomic.Uint64

	mu       sync.Mutex
	received []received
	listed   string // the address the topology lists: addr, or a proxy's
}

// received is one request as a node got it.
type received struct {
	op   string // get, put, delete
	id   []byte // the request ID of a write
	cons *kvv1.Consistency
}

// errBroken is what a node answers a write that breaks its connection:
// UNAVAILABLE without Meridian's ErrorInfo, as gRPC reports a failed
// connection.
var errBroken = status.Error(codes.Unavailable, "fake: connection reset")

// startKVCluster starts one node per DC name given.
func startKVCluster(t *testing.T, dcs ...string) *kvCluster {
	t.Helper()
	cl := &kvCluster{}
	cl.epoch.Store(1)
	for i, dc := range dcs {
		lis := listenLoopback(t)
		n := &kvNode{cl: cl, id: "n" + string(rune('1'+i)), dc: dc, addr: lis.Addr().String()}
		n.listed = n.addr // before it serves: no race
		serveFake(t, lis, n)
		cl.nodes = append(cl.nodes, n)
	}
	return cl
}

func (cl *kvCluster) dial(t *testing.T, opts ...Option) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, []string{cl.nodes[0].listedAddr()}, append([]Option{Insecure()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// topologies is how many topology requests the nodes answered.
func (cl *kvCluster) topologies() int64 {
	var n int64
	for _, m := range cl.nodes {
		n += m.topologies.Load()
	}
	return n
}

func (n *kvNode) Topology(ctx context.Context, _ *internalv1.TopologyRequest) (*internalv1.TopologyResponse, error) {
	n.topologies.Add(1)
	if hold := n.holdTopology.Load(); hold != nil {
		select {
		case <-*hold:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	resp := &internalv1.TopologyResponse{Epoch: n.cl.epoch.Load(), Partitions: 1}
	reps := &internalv1.PartitionReplicas{}
	for i, m := range n.cl.nodes {
		resp.Nodes = append(resp.Nodes, &internalv1.TopologyNode{Id: m.id, Dc: m.dc, GrpcAddr: m.listedAddr(), Alive: !m.dead.Load()})
		reps.Nodes = append(reps.Nodes, uint32(i))
	}
	resp.Keyspaces = []*internalv1.KeyspaceTopology{{Name: "default", Partitions: []*internalv1.PartitionReplicas{reps}}}
	return resp, nil
}

// listedAddr is the address the topology lists for n.
func (n *kvNode) listedAddr() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.listed
}

// listAt makes the topology list addr for n (a proxy in front of it).
func (n *kvNode) listAt(addr string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.listed = addr
}

func (n *kvNode) record(op string, id []byte, cons *kvv1.Consistency) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.received = append(n.received, received{op: op, id: id, cons: cons})
}

// got returns what reached the node.
func (n *kvNode) got() []received {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]received(nil), n.received...)
}

// breaks reports whether a write breaks the connection (using up one of
// breakWrites).
func (n *kvNode) breaks() bool {
	for {
		v := n.breakWrites.Load()
		if v <= 0 {
			return false
		}
		if n.breakWrites.CompareAndSwap(v, v-1) {
			return true
		}
	}
}

func (n *kvNode) effective() *kvv1.Effective {
	return &kvv1.Effective{Coordinator: n.id, Epoch: n.effEpoch.Load()}
}

func (n *kvNode) get(r *kvv1.GetRequest) (*kvv1.GetResponse, error) {
	n.record("get", nil, r.GetConsistency())
	if err := n.readErr.Load(); err != nil {
		return nil, *err
	}
	return &kvv1.GetResponse{Siblings: []*kvv1.Sibling{{Value: []byte(n.id)}}, Effective: n.effective()}, nil
}

func (n *kvNode) put(r *kvv1.PutRequest) (*kvv1.PutResponse, error) {
	n.record("put", r.GetRequestId(), r.GetConsistency())
	if n.breaks() {
		return nil, errBroken
	}
	if err := n.writeErr.Load(); err != nil {
		return nil, *err
	}
	return &kvv1.PutResponse{Siblings: []*kvv1.Sibling{{Value: r.GetValue()}}, Effective: n.effective()}, nil
}

func (n *kvNode) delete(r *kvv1.DeleteRequest) (*kvv1.DeleteResponse, error) {
	n.record("delete", r.GetRequestId(), r.GetConsistency())
	if n.breaks() {
		return nil, errBroken
	}
	return &kvv1.DeleteResponse{Effective: n.effective()}, nil
}

func (n *kvNode) Get(_ context.Context, r *kvv1.GetRequest) (*kvv1.GetResponse, error) {
	return n.get(r)
}

func (n *kvNode) Put(_ context.Context, r *kvv1.PutRequest) (*kvv1.PutResponse, error) {
	return n.put(r)
}

func (n *kvNode) Delete(_ context.Context, r *kvv1.DeleteRequest) (*kvv1.DeleteResponse, error) {
	return n.delete(r)
}

func (n *kvNode) Calls(stream kvv1.KV_CallsServer) error {
	for {
		b, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		out := &kvv1.ReplyBatch{}
		for _, c := range b.GetCalls() {
			r := &kvv1.Reply{Id: c.GetId()}
			var err error
			switch op := c.GetOp().(type) {
			case *kvv1.Call_Get:
				if n.holdReads.Load() {
					n.record("get", nil, op.Get.GetConsistency())
					continue // never answered
				}
				var resp *kvv1.GetResponse
				if resp, err = n.get(op.Get); err == nil {
					r.Result = &kvv1.Reply_Get{Get: resp}
				}
			case *kvv1.Call_Put:
				if ch := n.holdPuts.Load(); ch != nil {
					n.record("held put", nil, nil)
					<-*ch
				}
				var resp *kvv1.PutResponse
				if resp, err = n.put(op.Put); err == nil {
					r.Result = &kvv1.Reply_Put{Put: resp}
				}
			case *kvv1.Call_Delete:
				var resp *kvv1.DeleteResponse
				if resp, err = n.delete(op.Delete); err == nil {
					r.Result = &kvv1.Reply_Delete{Delete: resp}
				}
			}
			if err == errBroken {
				return err // the stream ends, with its calls
			}
			if err != nil {
				enc, _ := proto.Marshal(status.Convert(err).Proto())
				r.Result = &kvv1.Reply_Error{Error: enc}
			}
			out.Replies = append(out.Replies, r)
		}
		if err := stream.Send(out); err != nil {
			return err
		}
	}
}

// eventually polls cond until it holds, failing the test after a generous
// deadline.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}

// proxy forwards TCP connections to a node until it goes silent: then it
// drops whatever either side sends and closes nothing, as a host that
// crashed or a partition dropping packets would.
type proxy struct {
	lis    net.Listener
	target string
	silent atomic.Bool
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	p := &proxy{lis: listenLoopback(t), target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		p.lis.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		down, err := p.lis.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			down.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, down, up)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(up, down)
		go p.pipe(down, up)
	}
}

// cut makes p silent and closes the connections it carries: the client's
// connection drops, and a new one is taken but never answered.
func (p *proxy) cut() {
	p.silent.Store(true)
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

func (p *proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.silent.Load() {
			if _, err := dst.Write(buf[:n]); err != nil {
				src.Close()
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}
