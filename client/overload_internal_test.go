package client

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/coordinator"
)

// shedCluster is five fake nodes, each a replica of the one partition, in
// preference order (more than the shed passes allow asking); a node set to shed refuses every call as a node's
// admission control does.
type shedCluster struct {
	nodes []*shedNode
}

type shedNode struct {
	kvv1.UnimplementedKVServer
	internalv1.UnimplementedDiscoveryServer
	c     *shedCluster
	id    string
	addr  string
	shed  atomic.Bool
	calls atomic.Int64
	// diskLow: it refuses writes as a node low on disk does (DISK_LOW);
	// writes and reads count what reached it.
	diskLow       atomic.Bool
	writes, reads atomic.Int64
}

func (n *shedNode) Topology(context.Context, *internalv1.TopologyRequest) (*internalv1.TopologyResponse, error) {
	resp := &internalv1.TopologyResponse{Epoch: 1, Partitions: 1,
		Keyspaces: []*internalv1.KeyspaceTopology{{Name: "default", Partitions: []*internalv1.PartitionReplicas{{Nodes: []uint32{0, 1, 2, 3, 4}}}}}}
	for _, m := range n.c.nodes {
		resp.Nodes = append(resp.Nodes, &internalv1.TopologyNode{Id: m.id, Dc: "dc1", GrpcAddr: m.addr, Alive: true})
	}
	return resp, nil
}

func (n *shedNode) refusal() error {
	n.calls.Add(1)
	if n.shed.Load() {
		return (&coordinator.OverloadError{What: "requests", InFlight: 64, Max: 64}).GRPCStatus().Err()
	}
	return nil
}

func (n *shedNode) Get(_ context.Context, r *kvv1.GetRequest) (*kvv1.GetResponse, error) {
	n.reads.Add(1)
	if err := n.refusal(); err != nil {
		return nil, err
	}
	return &kvv1.GetResponse{Siblings: []*kvv1.Sibling{{Value: []byte(n.id)}}}, nil
}

func (n *shedNode) Put(_ context.Context, r *kvv1.PutRequest) (*kvv1.PutResponse, error) {
	n.writes.Add(1)
	if err := n.refusal(); err != nil {
		return nil, err
	}
	if n.diskLow.Load() {
		st, _ := status.New(codes.ResourceExhausted, "node "+n.id+" is low on disk").WithDetails(
			&errdetails.ErrorInfo{Reason: coordinator.ReasonDiskLow, Domain: coordinator.ErrorDomain})
		return nil, st.Err()
	}
	return &kvv1.PutResponse{}, nil
}

func startShedCluster(t *testing.T) *shedCluster {
	t.Helper()
	c := &shedCluster{}
	for _, id := range []string{"n1", "n2", "n3", "n4", "n5"} {
		lis := listenLoopback(t)
		n := &shedNode{c: c, id: id, addr: lis.Addr().String()}
		serveFake(t, lis, n)
		c.nodes = append(c.nodes, n)
	}
	return c
}

// TestShedCallsGoToTheNextReplica: a node that sheds a call for overload
// did nothing with it, so the client gives it to the next replica (at
// most twice); when every node sheds, the caller gets RESOURCE_EXHAUSTED,
// not "no replica reachable". Unary and hedged routing alike.
func TestShedCallsGoToTheNextReplica(t *testing.T) {
	for _, hedge := range []time.Duration{0, time.Hour} {
		t.Run("hedge="+hedge.String(), func(t *testing.T) {
			cl := startShedCluster(t)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := Dial(ctx, []string{cl.nodes[0].addr}, Insecure(), UnaryCalls())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()

			cl.nodes[0].shed.Store(true)
			res, err := c.Get(ctx, "", []byte("k"), Hedge(hedge))
			if err != nil {
				t.Fatalf("get with the first replica shedding: %v", err)
			}
			if res.Node != "n2" || string(res.Values[0]) != "n2" {
				t.Fatalf("answered by %s, want the next replica n2", res.Node)
			}
			put, err := c.Put(ctx, "", []byte("k"), []byte("v"), Hedge(hedge))
			if err != nil || put.Node != "n2" {
				t.Fatalf("put with the first replica shedding: node %v, err %v; want n2", put, err)
			}

			for _, n := range cl.nodes {
				n.shed.Store(true)
				n.calls.Store(0)
			}
			_, err = c.Get(ctx, "", []byte("k"), Hedge(hedge))
			if status.Code(err) != codes.ResourceExhausted || errors.Is(err, ErrNoReplica) {
				t.Fatalf("every node shedding: err %v, want RESOURCE_EXHAUSTED", err)
			}
			var asked int64
			for _, n := range cl.nodes {
				asked += n.calls.Load()
			}
			if asked != 1+maxShedPasses {
				t.Fatalf("%d nodes asked, want %d: the first and at most %d more", asked, 1+maxShedPasses, maxShedPasses)
			}

			// A cluster shedding everything gets about a tenth more
			// requests, not three times as many: the budget.
			for _, n := range cl.nodes {
				n.calls.Store(0)
			}
			const calls = 200
			for range calls {
				if _, err := c.Get(ctx, "", []byte("k"), Hedge(hedge)); status.Code(err) != codes.ResourceExhausted {
					t.Fatalf("every node shedding: err %v", err)
				}
			}
			asked = 0
			for _, n := range cl.nodes {
				asked += n.calls.Load()
			}
			// At most the passes left from before and a tenth of a pass per call.
			if max := int64(calls + maxPassTenths/10 + calls/10); asked > max {
				t.Fatalf("%d calls asked nodes %d times, want at most %d", calls, asked, max)
			}

			// Other RESOURCE_EXHAUSTED (gRPC's own, a message too large) is
			// final: no Meridian overload reason.
			if overloaded(status.Error(codes.ResourceExhausted, "grpc: received message larger than max")) {
				t.Fatal("a plain RESOURCE_EXHAUSTED taken for a node's shedding")
			}
		})
	}
}

// TestWritesTryANodeLowOnDiskLast: after a node refused a write for lack
// of disk space (it did nothing with it), the client's writes go to the
// next replica first, for downFor, with no refused round trip each; reads
// still go to it, as it serves them. Stream and unary calls alike.
func TestWritesTryANodeLowOnDiskLast(t *testing.T) {
	for _, unary := range []bool{false, true} {
		t.Run(fmt.Sprintf("unary=%v", unary), func(t *testing.T) {
			cl := startShedCluster(t)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			opts := []Option{Insecure()}
			if unary {
				opts = append(opts, UnaryCalls())
			}
			c, err := Dial(ctx, []string{cl.nodes[0].addr}, opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			low := cl.nodes[0]
			low.diskLow.Store(true)
			for i := range 20 {
				put, err := c.Put(ctx, "", []byte("k"), []byte("v"))
				if err != nil || put.Node != "n2" {
					t.Fatalf("put %d with the first replica low on disk: %v, %v; want n2", i, put, err)
				}
			}
			if got := low.writes.Load(); got != 1 {
				t.Fatalf("%d of 20 writes reached the node low on disk, want only the first", got)
			}
			if _, err := c.Get(ctx, "", []byte("k")); err != nil || low.reads.Load() != 1 {
				t.Fatalf("get: %v, %d reads reached the node low on disk, want 1 (it serves reads)", err, low.reads.Load())
			}
			// Once downFor is over it is asked first again.
			c.mu.Lock()
			c.lowOnDisk[low.id] = time.Now().Add(-2 * c.opts.downFor)
			c.mu.Unlock()
			low.diskLow.Store(false)
			if put, err := c.Put(ctx, "", []byte("k"), []byte("v")); err != nil || put.Node != "n1" {
				t.Fatalf("put once the mark expired: %v, %v; want n1", put, err)
			}
		})
	}
}
