package node_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/node"
)

// BenchmarkOverload measures admission control: the saturation rate of a
// 3-node cluster (closed loop, 64 clients, QUORUM durable puts), then an
// open-loop load at twice that rate for OVERLOAD_SECONDS (default 30): how
// much is shed with RESOURCE_EXHAUSTED, the latency of what is accepted,
// the process's peak heap, and the throughput in the 3 s after the load
// stops. One iteration is the whole experiment (-benchtime 1x).
func BenchmarkOverload(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	secure := getenv("OVERLOAD_TLS") != ""
	l, err := node.StartLocal(ctx, node.LocalSpec{Dir: b.TempDir(), NodesPerDC: 3, GossipProfile: "test", Insecure: !secure,
		Configure: func(c *node.Config) { c.MaxInFlight = inflightLimit() }})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	creds, err := l.DialOption()
	if err != nil {
		b.Fatal(err)
	}
	var clients []kvv1.KVClient
	for _, n := range l.Nodes() {
		conn, err := grpc.NewClient(n.Addr(), creds)
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		clients = append(clients, kvv1.NewKVClient(conn))
	}
	keys := int64(5000)
	if getenv("OVERLOAD_HOT") != "" {
		keys = 20 // a few hot keys, as zipfian clients make
	}
	put := func(ctx context.Context, i int64) error {
		_, err := clients[i%3].Put(ctx, &kvv1.PutRequest{Key: []byte(fmt.Sprint("o", i%keys)), Value: make([]byte, 1000),
			Consistency: &kvv1.Consistency{Level: kvv1.Level_LEVEL_QUORUM}})
		return err
	}
	closedLoop := func(d time.Duration) float64 {
		var n atomic.Int64
		var wg sync.WaitGroup
		end := time.Now().Add(d)
		for w := 0; w < 64; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := int64(w); time.Now().Before(end); i += 64 {
					if put(ctx, i) == nil {
						n.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		return float64(n.Load()) / d.Seconds()
	}
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		saturation := closedLoop(5 * time.Second)
		rate := 2 * saturation
		hold := 30 * time.Second
		if s := envSeconds("OVERLOAD_SECONDS"); s > 0 {
			hold = s
		}
		hist := hdrhistogram.New(1, int64(30*time.Second/time.Microsecond), 3)
		service := hdrhistogram.New(1, int64(30*time.Second/time.Microsecond), 3) // from the actual send
		var mu sync.Mutex
		var ok, shed, late, other atomic.Int64
		var peakHeap, peakSys atomic.Uint64
		stopMem := make(chan struct{})
		go func() {
			var ms runtime.MemStats
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stopMem:
					return
				case <-t.C:
					runtime.ReadMemStats(&ms)
					if ms.HeapInuse > peakHeap.Load() {
						peakHeap.Store(ms.HeapInuse)
					}
					if ms.Sys > peakSys.Load() {
						peakSys.Store(ms.Sys)
					}
				}
			}
		}()
		var wg sync.WaitGroup
		interval := time.Duration(float64(time.Second) / rate)
		start := time.Now()
		for i := int64(0); time.Since(start) < hold; i++ {
			due := start.Add(time.Duration(i) * interval)
			if d := time.Until(due); d > 0 {
				time.Sleep(d)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				defer cancel()
				sent := time.Now()
				err := put(rctx, i)
				svc := time.Since(sent)
				lat := time.Since(due) // from the intended send time
				switch status.Code(err) {
				case codes.OK:
					ok.Add(1)
					mu.Lock()
					hist.RecordValue(lat.Microseconds())
					service.RecordValue(svc.Microseconds())
					mu.Unlock()
					if lat > 2*time.Second {
						late.Add(1)
					}
				case codes.ResourceExhausted:
					shed.Add(1)
				default:
					other.Add(1)
				}
			}()
		}
		wg.Wait()
		close(stopMem)
		after := closedLoop(3 * time.Second)
		if path := getenv("OVERLOAD_HEAP_PROFILE"); path != "" {
			if f, err := os.Create(path); err == nil {
				runtime.GC()
				_ = pprof.WriteHeapProfile(f)
				f.Close()
			}
		}
		total := ok.Load() + shed.Load() + other.Load()
		b.ReportMetric(saturation, "saturation-ops/s")
		b.ReportMetric(rate, "offered-ops/s")
		b.ReportMetric(float64(ok.Load())/hold.Seconds(), "accepted-ops/s")
		b.ReportMetric(100*float64(shed.Load())/float64(total), "shed-%")
		b.ReportMetric(100*float64(other.Load())/float64(total), "other-errors-%")
		b.ReportMetric(float64(hist.ValueAtQuantile(50))/1000, "accepted-p50-ms")
		b.ReportMetric(float64(hist.ValueAtQuantile(99))/1000, "accepted-p99-ms")
		b.ReportMetric(float64(late.Load()), "accepted-past-deadline")
		b.ReportMetric(float64(service.ValueAtQuantile(99))/1000, "accepted-p99-from-send-ms")
		b.ReportMetric(float64(peakHeap.Load())/(1<<20), "peak-heap-MiB")
		b.ReportMetric(float64(peakSys.Load())/(1<<20), "peak-go-sys-MiB")
		b.ReportMetric(float64(peakRSS())/(1<<20), "peak-rss-MiB")
		b.ReportMetric(after, "after-ops/s")
	}
}

func envSeconds(name string) time.Duration {
	var s int
	if _, err := fmt.Sscan(getenv(name), &s); err != nil {
		return 0
	}
	return time.Duration(s) * time.Second
}

func getenv(name string) string { return os.Getenv(name) }

// inflightLimit is OVERLOAD_MAX_IN_FLIGHT, or the node default.
func inflightLimit() int {
	var n int
	if _, err := fmt.Sscan(getenv("OVERLOAD_MAX_IN_FLIGHT"), &n); err != nil {
		return 0
	}
	return n
}

// peakRSS is the process's peak resident set (VmHWM), 0 where unknown.
func peakRSS() int64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb int64
			fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), &kb)
			return kb << 10
		}
	}
	return 0
}
