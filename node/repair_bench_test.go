package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/replica"
	"github.com/meridiankv/meridian/version"
)

// BenchmarkRepairOnePercent: three Pebble replicas hold the same 100,000
// keys; 1% of them (1,000 new versions) reach one replica only; one full
// repair run on another replica finds and repairs them. It reports the run's
// time (ns/op), the bytes exchanged to repair and, for comparison, the
// bytes of a full copy of the data.
func BenchmarkRepairOnePercent(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	l, err := node.StartLocal(ctx, node.LocalSpec{Dir: b.TempDir(), NodesPerDC: 3, GossipProfile: "test", Insecure: true,
		Configure: func(c *node.Config) {
			c.AntiEntropyPeriod = 24 * time.Hour // only the runs below
			c.RepairKeysPerSecond = 1e9
			c.RepairBytesPerSecond = 1e12
			c.RepairCrossDCBytesPerSecond = 1e12
		}})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	nodes := l.Nodes()
	topo := nodes[0].Topology()
	ks, _ := topo.Keyspace("")
	const keys = 100_000
	value := make([]byte, 100)
	full := 0
	put := func(n *node.Node, key string, set version.Set) {
		loc := replica.Loc{Keyspace: ks.ID, Partition: topo.Ring.Partition([]byte(key))}
		if _, err := n.Store().Merge(loc, []byte(key), set, false); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < keys; i++ {
		key := fmt.Sprintf("user%08d", i)
		set, _ := version.Set{}.Put(version.Clock{}, "loader#1", version.Value{Bytes: value}, 1)
		full += len(key) + len(set.Encode())
		for _, n := range nodes {
			put(n, key, set)
		}
	}
	round := 0
	b.ReportAllocs()
	b.ResetTimer()
	var bytes uint64
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		round++
		for j := 0; j < keys/100; j++ {
			key := fmt.Sprintf("user%08d", (j*100+round)%keys)
			set, _ := version.Set{}.Put(version.Clock{}, fmt.Sprintf("diverge#%d", round), version.Value{Bytes: value}, 2)
			put(nodes[0], key, set)
		}
		b.StartTimer()
		progress, done := nodes[1].RunRepair("", -1)
		var last uint64
		for p := range progress {
			last = p.BytesRepaired
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		bytes += last
	}
	b.ReportMetric(float64(bytes)/float64(b.N), "repair-bytes/op")
	b.ReportMetric(float64(full), "full-copy-bytes")
}
