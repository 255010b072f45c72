package node_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/client"
	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/telemetry"
)

// benchCluster starts a 3-node Pebble cluster on loopback for benchmarks.
func benchCluster(b *testing.B, opts node.Options) (*node.Local, []kvv1.KVClient) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := node.StartLocal(ctx, node.LocalSpec{Dir: b.TempDir(), NodesPerDC: 3, GossipProfile: "test", Options: opts, Insecure: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	var clients []kvv1.KVClient
	for _, n := range l.Nodes() {
		clients = append(clients, dialB(b, n.Addr()))
	}
	return l, clients
}

func dialB(b *testing.B, addr string) kvv1.KVClient {
	b.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return kvv1.NewKVClient(conn)
}

func benchPut(b *testing.B, l *node.Local, clients []kvv1.KVClient, durable bool) {
	value := make([]byte, 100)
	var n atomic.Int64
	cons := &kvv1.Consistency{Level: kvv1.Level_LEVEL_QUORUM, Durable: &durable}
	b.SetParallelism(16) // 16 × GOMAXPROCS concurrent clients
	b.ReportAllocs()
	b.ResetTimer()
	cpu, syncs := startCPU(), startSyncs(l)
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			i := n.Add(1)
			c := clients[i%int64(len(clients))]
			if _, err := c.Put(ctx, &kvv1.PutRequest{Key: fmt.Appendf(nil, "key-%d", i), Value: value, Consistency: cons}); err != nil {
				b.Fatal(err)
			}
		}
	})
	cpu.report(b)
	syncs.report(b)
}

// syncMeter counts the WAL fsyncs of every node's engine, and the synced
// commits they served, over a benchmark.
type syncMeter struct {
	l               *node.Local
	fsyncs, commits float64
}

func startSyncs(l *node.Local) syncMeter {
	m := syncMeter{l: l}
	m.fsyncs, m.commits = m.read()
	return m
}

func (m syncMeter) read() (fsyncs, commits float64) {
	for _, n := range m.l.Nodes() {
		st := n.Store().Engine().Stats()
		fsyncs += st["wal_fsyncs_total"]
		commits += st["synced_commits_total"]
	}
	return fsyncs, commits
}

func (m syncMeter) report(b *testing.B) {
	fsyncs, commits := m.read()
	fsyncs, commits = fsyncs-m.fsyncs, commits-m.commits
	b.ReportMetric(fsyncs/float64(b.N), "walfsyncs/op")
	if fsyncs > 0 {
		b.ReportMetric(commits/fsyncs, "commits/fsync")
	}
}

// BenchmarkQuorumPut: a 3-node cluster, N=3, QUORUM puts of 100-byte values
// from 16×GOMAXPROCS concurrent clients, durable (fsync) and not.
func BenchmarkQuorumPut(b *testing.B) {
	for _, durable := range []bool{true, false} {
		b.Run(fmt.Sprintf("durable=%v", durable), func(b *testing.B) {
			l, clients := benchCluster(b, node.Options{})
			benchPut(b, l, clients, durable)
		})
	}
}

// BenchmarkQuorumGet reads keys written beforehand, at QUORUM.
func BenchmarkQuorumGet(b *testing.B) {
	l, clients := benchCluster(b, node.Options{})
	ctx := context.Background()
	const keys = 1000
	for i := 0; i < keys; i++ {
		if _, err := clients[0].Put(ctx, &kvv1.PutRequest{Key: fmt.Appendf(nil, "key-%d", i), Value: make([]byte, 100)}); err != nil {
			b.Fatal(err)
		}
	}
	var n atomic.Int64
	cons := &kvv1.Consistency{Level: kvv1.Level_LEVEL_QUORUM}
	b.SetParallelism(16)
	b.ReportAllocs()
	b.ResetTimer()
	cpu, syncs := startCPU(), startSyncs(l)
	defer syncs.report(b)
	defer cpu.report(b)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			if _, err := clients[i%3].Get(ctx, &kvv1.GetRequest{Key: fmt.Appendf(nil, "key-%d", i%keys), Consistency: cons}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkQuorumPutTracing measures the cost of tracing: no tracer
// provider (the default no-op), and an SDK provider sampling 1% and 100%
// of traces into an in-memory exporter.
func BenchmarkQuorumPutTracing(b *testing.B) {
	cases := []struct {
		name  string
		ratio float64
	}{{"off", 0}, {"sample=1%", 0.01}, {"sample=100%", 1}}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			opts := node.Options{}
			if c.ratio > 0 {
				exp := tracetest.NewInMemoryExporter()
				tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(telemetry.NewSampler(c.ratio)), sdktrace.WithBatcher(exp))
				b.Cleanup(func() { tp.Shutdown(context.Background()) })
				opts.TelemetryFor = func(string) *telemetry.Telemetry { return telemetry.NewForTestRatio(tp, c.ratio) }
			}
			l, clients := benchCluster(b, opts)
			benchPut(b, l, clients, false)
		})
	}
}

// BenchmarkGRPCNoop is the ceiling a request can reach: a gRPC round trip
// (the standard health check) to a node, doing no work, from the same
// concurrency as the QUORUM benchmarks.
func BenchmarkGRPCNoop(b *testing.B) {
	l, _ := benchCluster(b, node.Options{})
	conn, err := grpc.NewClient(l.Nodes()[0].Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	b.SetParallelism(16)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU()
	defer cpu.report(b)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkClient is BenchmarkQuorumPut and BenchmarkQuorumGet through
// the Go client, which routes each call to a replica of its key and, by
// default, carries calls on one kv.v1.KV/Calls stream per node
// (calls=stream); calls=unary sends each as its own gRPC call. One
// cluster serves every case (-bench 'BenchmarkClient/calls=stream' for
// one mode).
func BenchmarkClient(b *testing.B) {
	l, _ := benchCluster(b, node.Options{})
	ctx := context.Background()
	dial := func(b *testing.B, opts ...client.Option) *client.Client {
		cl, err := client.Dial(ctx, []string{l.Nodes()[0].Addr()}, append(opts, client.Insecure())...)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cl.Close() })
		return cl
	}
	const keys = 1000
	value := make([]byte, 100)
	// One client loads the keys: a client per key would leave a thousand
	// clients behind, each refreshing its topology in the measured loops.
	loader := dial(b)
	for i := 0; i < keys; i++ {
		if _, err := loader.Put(ctx, "", fmt.Appendf(nil, "get-%d", i), value); err != nil {
			b.Fatal(err)
		}
	}
	loader.Close()
	var n atomic.Int64 // keys written are distinct across cases
	for _, mode := range []string{"stream", "unary"} {
		for _, op := range []string{"put/durable=true", "put/durable=false", "get"} {
			b.Run("calls="+mode+"/"+op, func(b *testing.B) {
				var opts []client.Option
				if mode == "unary" {
					opts = append(opts, client.UnaryCalls())
				}
				cl := dial(b, opts...)
				durable := op == "put/durable=true"
				b.SetParallelism(16)
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						i := n.Add(1)
						var err error
						if op == "get" {
							_, err = cl.Get(ctx, "", fmt.Appendf(nil, "get-%d", i%keys), client.Level(kvv1.Level_LEVEL_QUORUM))
						} else {
							_, err = cl.Put(ctx, "", fmt.Appendf(nil, "key-%d", i), value, client.Level(kvv1.Level_LEVEL_QUORUM), client.Durable(durable))
						}
						if err != nil {
							b.Fatal(err)
						}
					}
				})
			})
		}
	}
}
