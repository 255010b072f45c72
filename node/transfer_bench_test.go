package node_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/replica"
	"github.com/meridiankv/meridian/version"
)

// BenchmarkJoinTransfer: three Pebble nodes hold JOIN_KEYS keys (default
// 50,000) of 1 KiB at RF 3; a fourth node joins and a plan adds it while a
// closed-loop QUORUM workload (4 workers, half reads, half writes) runs.
// It reports the transfer rate into the new node (MB/s: bytes it pulled
// over the time from commit to the last partition switched), and the
// workload's p99 before the join and during the transfer.
// JOIN_TRANSFER_BPS sets the transfer throttle (default: the node default,
// 20 MiB/s).
func BenchmarkJoinTransfer(b *testing.B) {
	keys := envInt("JOIN_KEYS", 50_000)
	bps := float64(envInt("JOIN_TRANSFER_BPS", 0))
	for i := 0; i < b.N; i++ {
		runJoinTransfer(b, keys, bps)
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func runJoinTransfer(b *testing.B, keys int, bps float64) {
	b.StopTimer()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	l, err := node.StartLocal(ctx, node.LocalSpec{Dir: b.TempDir(), NodesPerDC: 3, GossipProfile: "test", Insecure: true,
		Configure: func(c *node.Config) { c.TransferBytesPerSecond = bps }})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	nodes := l.Nodes()
	topo := nodes[0].Topology()
	ks, _ := topo.Keyspace("")
	value := make([]byte, 1024)
	for i := 0; i < keys; i++ {
		key := fmt.Sprintf("user%08d", i)
		set, _ := version.Set{}.Put(version.Clock{}, "loader#1", version.Value{Bytes: value}, 1)
		loc := replica.Loc{Keyspace: ks.ID, Partition: topo.Ring.Partition([]byte(key))}
		for _, n := range nodes {
			if _, err := n.Store().Merge(loc, []byte(key), set, false); err != nil {
				b.Fatal(err)
			}
		}
	}

	// The foreground workload, recording latencies into the current phase.
	var (
		mu     sync.Mutex
		phase  = hdrhistogram.New(1, int64(10*time.Second/time.Microsecond), 3)
		wctx   context.Context
		wstop  context.CancelFunc
		wg     sync.WaitGroup
		failed int
	)
	wctx, wstop = context.WithCancel(ctx)
	for w := 0; w < 4; w++ {
		c := dialB(b, nodes[w%3].Addr())
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for wctx.Err() == nil {
				key := []byte(fmt.Sprintf("user%08d", rng.IntN(keys)))
				start := time.Now()
				var err error
				rctx, rcancel := context.WithTimeout(wctx, 5*time.Second)
				if rng.IntN(2) == 0 {
					_, err = c.Get(rctx, &kvv1.GetRequest{Key: key, Consistency: lvl(kvv1.Level_LEVEL_QUORUM)})
				} else {
					_, err = c.Put(rctx, &kvv1.PutRequest{Key: key, Value: value, Consistency: lvl(kvv1.Level_LEVEL_QUORUM)})
				}
				rcancel()
				mu.Lock()
				if err != nil {
					if wctx.Err() == nil {
						failed++
					}
				} else {
					phase.RecordValue(time.Since(start).Microseconds())
				}
				mu.Unlock()
			}
		}()
	}
	swap := func() *hdrhistogram.Histogram {
		mu.Lock()
		defer mu.Unlock()
		h := phase
		phase = hdrhistogram.New(1, int64(10*time.Second/time.Microsecond), 3)
		return h
	}
	time.Sleep(5 * time.Second) // the "before" phase: a measurement window, not a wait for a condition
	before := swap()

	n4, err := l.Join(ctx, "n4", "dc1", "r1")
	if err != nil {
		b.Fatal(err)
	}
	for {
		if m, ok := nodes[0].MetaState().Member("n4"); ok && m.State == membership.StateJoining && n4.Topology().Agreed() {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := nodes[0].Propose(ctx, membership.Command{Kind: membership.CmdPlan, Op: &membership.PlanOp{Op: membership.OpAdd, Node: "n4"}}); err != nil {
		b.Fatal(err)
	}
	swap() // the join itself is not the transfer
	b.StartTimer()
	start := time.Now()
	if _, err := nodes[0].Propose(ctx, membership.Command{Kind: membership.CmdCommit, Expect: nodes[0].MetaState().Plan}); err != nil {
		b.Fatal(err)
	}
	// Bytes per task, as the node last reported them (tasks leave the
	// list when the transition ends).
	pulled := map[string]uint64{}
	note := func() {
		for _, t := range n4.Transfers() {
			k := fmt.Sprint(t.Keyspace, "/", t.Partition)
			pulled[k] = max(pulled[k], t.Bytes)
		}
	}
	last := time.Now()
	for nodes[0].MetaState().Transition != nil {
		note()
		if os.Getenv("JOIN_TRACE") != "" && time.Since(last) > time.Second {
			last = time.Now()
			states := map[string]int{}
			for _, t := range n4.Transfers() {
				states[t.State]++
			}
			tr := nodes[0].MetaState().Transition
			b.Logf("%v: switched %d/%d, n4 tasks %v", time.Since(start).Round(time.Second), len(tr.Done), len(tr.Moving), states)
		}
		time.Sleep(10 * time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	during := swap()
	wstop()
	wg.Wait()
	note()
	var moved uint64
	for _, v := range pulled {
		moved += v
	}
	b.ReportMetric(float64(moved)/elapsed.Seconds()/1e6, "transfer-MB/s")
	b.ReportMetric(float64(moved)/1e6, "moved-MB")
	b.ReportMetric(float64(before.ValueAtQuantile(99))/1000, "p99-before-ms")
	b.ReportMetric(float64(during.ValueAtQuantile(99))/1000, "p99-during-ms")
	b.ReportMetric(float64(failed), "failed-requests")
}
