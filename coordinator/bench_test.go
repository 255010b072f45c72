package coordinator

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/engine/memory"
	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/placement"
	"github.com/meridiankv/meridian/replica"
	"github.com/meridiankv/meridian/transport"
)

type allAlive struct{}

func (allAlive) Alive(string) bool                    { return true }
func (allAlive) PendingHints(string) bool             { return false }
func (allAlive) PendingHintsFrom(string, string) bool { return false }
func (allAlive) DiskLow(string) bool                  { return false }

// memCluster is three coordinators (one DC, N=3) on in-memory engines and
// the in-memory transport: the request path without gRPC, so that its own
// allocations can be counted.
func memCluster(b *testing.B) []*Coordinator {
	b.Helper()
	var infos []membership.NodeInfo
	for i := 1; i <= 3; i++ {
		infos = append(infos, membership.NodeInfo{Node: placement.Node{ID: fmt.Sprintf("n%d", i), DC: "dc1", Rack: "r1", Weight: 1}})
	}
	topo, err := membership.NewTopology(1, 64, infos, nil)
	if err != nil {
		b.Fatal(err)
	}
	net := transport.NewMem()
	var cs []*Coordinator
	for _, n := range infos {
		store, err := replica.Open(memory.New(), n.ID)
		if err != nil {
			b.Fatal(err)
		}
		c, err := New(Config{NodeID: n.ID, DC: n.DC, Store: store, Peers: net, Live: allAlive{},
			Topology: func() *membership.Topology { return topo }, Secrets: [][]byte{[]byte("bench-secret")}})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(c.Close)
		net.Register(n.ID, c)
		cs = append(cs, c)
	}
	return cs
}

// BenchmarkCoordinatorPut is a QUORUM put of a 100-byte value to a new key
// through the coordinator of a replica, on the in-memory transport: the
// allocations of the request path itself (node/bench_test.go's
// BenchmarkQuorumPut adds gRPC's).
func BenchmarkCoordinatorPut(b *testing.B) {
	for _, durable := range []bool{true, false} {
		b.Run(fmt.Sprintf("durable=%v", durable), func(b *testing.B) {
			cs := memCluster(b)
			value := make([]byte, 100)
			cons := &kvv1.Consistency{Level: kvv1.Level_LEVEL_QUORUM, Durable: &durable}
			var n atomic.Int64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					i := n.Add(1)
					req := &kvv1.PutRequest{Key: fmt.Appendf(nil, "key-%d", i), Value: value, Consistency: cons}
					if _, err := cs[i%3].Put(ctx, req); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

// BenchmarkCoordinatorGet is a QUORUM get of one of 1,000 keys.
func BenchmarkCoordinatorGet(b *testing.B) {
	cs := memCluster(b)
	ctx := context.Background()
	const keys = 1000
	for i := range keys {
		if _, err := cs[0].Put(ctx, &kvv1.PutRequest{Key: fmt.Appendf(nil, "key-%d", i), Value: make([]byte, 100)}); err != nil {
			b.Fatal(err)
		}
	}
	cons := &kvv1.Consistency{Level: kvv1.Level_LEVEL_QUORUM}
	var n atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			if _, err := cs[i%3].Get(ctx, &kvv1.GetRequest{Key: fmt.Appendf(nil, "key-%d", i%keys), Consistency: cons}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
