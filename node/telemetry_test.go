package node_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/telemetry"
)

func attr(s sdktrace.ReadOnlySpan, key string) (attribute.Value, bool) {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

// TestQuorumPutIsOneTrace checks that a QUORUM put on a 3-node cluster
// produces one trace: client call → coordinator → every replica write →
// the remote engine commits, with the right parents and attributes.
func TestQuorumPutIsOneTrace(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())

	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, err := node.StartLocal(ctx, node.LocalSpec{Dir: dir, NodesPerDC: 3, Engine: "memory", GossipProfile: "test", Insecure: true,
		Options: node.Options{TelemetryFor: func(string) *telemetry.Telemetry { return telemetry.NewForTest(tp) }}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	prop := propagation.TraceContext{}
	conn, err := grpc.NewClient(l.Nodes()[0].Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithTracerProvider(tp), otelgrpc.WithPropagators(prop))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := kvv1.NewKVClient(conn).Put(ctx, &kvv1.PutRequest{Key: []byte("traced"), Value: []byte("v"),
		Consistency: &kvv1.Consistency{Level: kvv1.Level_LEVEL_QUORUM}}); err != nil {
		t.Fatal(err)
	}

	var root sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == "kv.v1.KV/Put" && !s.Parent().IsValid() {
			root = s
		}
	}
	if root == nil {
		t.Fatal("no client span kv.v1.KV/Put")
	}
	trace := root.SpanContext().TraceID()
	// The third replica's write may finish after the reply: poll.
	var spans []sdktrace.ReadOnlySpan
	var seen string // what the last poll found, said if it never completes
	defer func() {
		if t.Failed() {
			t.Logf("the trace had: %s", seen)
		}
	}()
	eventually(t, "the server span, three replica writes and two remote engine commits in the trace", func() bool {
		spans = spans[:0]
		writes, commits, server := map[string]bool{}, 0, false
		defer func() {
			var names []string
			for _, s := range spans {
				names = append(names, s.Name()+" ("+s.Status().Code.String()+")")
			}
			seen = fmt.Sprintf("replica writes to %v, %d engine commits, server span %v; spans %v", writes, commits, server, names)
		}()
		for _, s := range rec.Ended() {
			if s.SpanContext().TraceID() != trace {
				continue
			}
			spans = append(spans, s)
			// The server span may end just after the client has its reply.
			server = server || s.Name() == "kv.v1.KV/Put" && s.Parent().IsValid()
			if s.Name() == "meridian.replica.write" {
				v, _ := attr(s, "meridian.node")
				writes[v.AsString()] = true
			}
			if s.Name() == "meridian.engine.commit" {
				commits++
			}
		}
		return len(writes) == 3 && commits == 2 && server
	})
	byID := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		byID[s.SpanContext().SpanID().String()] = s
	}
	parentName := func(s sdktrace.ReadOnlySpan) string {
		if p, ok := byID[s.Parent().SpanID().String()]; ok {
			return p.Name()
		}
		return ""
	}
	var coord sdktrace.ReadOnlySpan
	for _, s := range spans {
		switch s.Name() {
		case "kv.Put":
			coord = s
			if got := parentName(s); got != "kv.v1.KV/Put" {
				t.Errorf("kv.Put's parent = %q, want the server span kv.v1.KV/Put", got)
			}
		case "meridian.engine.commit":
			if got := parentName(s); got != "internal.v1.Replica/Write" {
				t.Errorf("engine commit's parent = %q, want internal.v1.Replica/Write", got)
			}
		case "meridian.replica.write":
			if got := parentName(s); got != "kv.Put" {
				t.Errorf("replica write's parent = %q, want kv.Put", got)
			}
		}
	}
	if coord == nil {
		t.Fatal("no coordinator span kv.Put in the trace")
	}
	for key, want := range map[string]int64{"meridian.n": 3, "meridian.w": 2} {
		if v, ok := attr(coord, key); !ok || v.AsInt64() != want {
			t.Errorf("kv.Put %s = %v, want %d", key, v, want)
		}
	}
	if v, _ := attr(coord, "meridian.consistency"); v.AsString() != "QUORUM" {
		t.Errorf("kv.Put consistency = %q", v.AsString())
	}
	if v, _ := attr(coord, "meridian.keyspace"); v.AsString() != "default" {
		t.Errorf("kv.Put keyspace = %q", v.AsString())
	}
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func metricValue(t *testing.T, body, series string) float64 {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` ([0-9.e+-]+)$`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		return 0
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestMetricsEndpoint(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := node.Config{
		ID: "m1", GRPCAddr: lis.Addr().String(), DataDir: t.TempDir(),
		InitialCluster: "m1=" + lis.Addr().String(), GossipProfile: "test",
		ClusterSecrets: []string{node.GenerateSecret()}, Insecure: true,
	}
	cfg.Telemetry.MetricsAddr = "127.0.0.1:0"
	ctx := ctxT(t)
	n, err := node.Start(ctx, cfg, node.Options{Listener: lis})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	// A new cluster serves once its metadata log agreed on the topology.
	if err := n.WaitAgreed(ctx); err != nil {
		t.Fatal(err)
	}
	addr := n.Telemetry().MetricsAddr()
	before := scrape(t, addr)
	c := dial(t, n.Addr())
	for i := 0; i < 5; i++ {
		if _, err := c.Put(ctx, &kvv1.PutRequest{Key: []byte("m"), Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Get(ctx, &kvv1.GetRequest{Key: []byte("m")}); err != nil {
			t.Fatal(err)
		}
	}
	after := scrape(t, addr)
	puts := `meridian_requests_total{level="QUORUM",op="Put",outcome="OK"}`
	if b, a := metricValue(t, before, puts), metricValue(t, after, puts); a-b != 5 {
		t.Errorf("%s moved from %v to %v, want +5", puts, b, a)
	}
	// After the first read, the key's reads and its writes' reads of the
	// current version come from the row cache.
	hits := "meridian_engine_row_cache_hits_total"
	if b, a := metricValue(t, before, hits), metricValue(t, after, hits); a-b < 8 {
		t.Errorf("%s moved from %v to %v, want at least +8", hits, b, a)
	}
	// Durable writes (the default): each a synced commit, covered by WAL
	// fsyncs whose durations the histogram has.
	for series, least := range map[string]float64{
		"meridian_engine_synced_commits_total":      5,
		"meridian_engine_wal_fsyncs_total":          1,
		"meridian_wal_fsync_duration_seconds_count": 1,
	} {
		if b, a := metricValue(t, before, series), metricValue(t, after, series); a-b < least {
			t.Errorf("%s moved from %v to %v, want at least +%v", series, b, a, least)
		}
	}
	for _, want := range []string{
		`meridian_request_duration_seconds_bucket{level="QUORUM",op="Get",outcome="OK",le=`,
		`meridian_siblings_bucket{le="1"}`,
		`meridian_gossip_members{state="alive"} 1`,
		`meridian_engine_`,
		`meridian_read_repairs_total`,
		`meridian_hints_delivered_total`,
		"meridian_peer_calls_waiting 0", // idle: nothing waits, nothing runs
		"meridian_peer_calls_running 0",
		"meridian_client_calls_running 0",
		"meridian_client_call_reply_bytes 0",
		"meridian_gossip_refused_total 0",
		"meridian_background_work ", // bounded work and bytes, exported
		"meridian_background_bytes ",
		"meridian_request_ids_evicted_early_total 0",
		`go_goroutines`,
	} {
		if !strings.Contains(after, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// The metadata log: a one-node cluster leads it, has applied entries,
	// and reports the epoch it routes by.
	for series, want := range map[string]float64{
		"meridian_meta_leader":                     1,
		"meridian_meta_leader_contact_age_seconds": 0,
	} {
		if got := metricValue(t, after, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	// The epoch may move on after the scrape (the node publishing its own
	// addresses): the scraped one is one the node has applied.
	if got := metricValue(t, after, "meridian_meta_epoch"); got < 1 || got > float64(n.Topology().Epoch) {
		t.Errorf("meridian_meta_epoch = %v, want 1 to %d", got, n.Topology().Epoch)
	}
	for _, series := range []string{"meridian_meta_term", `meridian_meta_index{kind="applied"}`, `meridian_meta_index{kind="commit"}`} {
		if metricValue(t, after, series) < 1 {
			t.Errorf("%s = %v, want at least 1", series, metricValue(t, after, series))
		}
	}
}

// TestUntracedRequestsRecordNothing: with a sample ratio of 0, a request
// whose caller sent no trace records no span anywhere — no server span,
// no coordinator or replica span, no span for the replica calls or the
// background traffic — while a caller's sampled trace is still followed
// through the whole quorum path. (The provider samples everything it is
// asked about: only the gate keeps spans out.)
func TestUntracedRequestsRecordNothing(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, err := node.StartLocal(ctx, node.LocalSpec{Dir: t.TempDir(), NodesPerDC: 3, Engine: "memory", GossipProfile: "test", Insecure: true,
		Options: node.Options{TelemetryFor: func(string) *telemetry.Telemetry { return telemetry.NewForTestRatio(tp, 0) }}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	plain, err := grpc.NewClient(l.Nodes()[0].Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	all := &kvv1.Consistency{Level: kvv1.Level_LEVEL_ALL}
	for i := range 20 {
		if _, err := kvv1.NewKVClient(plain).Put(ctx, &kvv1.PutRequest{Key: fmt.Appendf(nil, "plain-%d", i), Value: []byte("v"), Consistency: all}); err != nil {
			t.Fatal(err)
		}
	}

	traced, err := grpc.NewClient(l.Nodes()[0].Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithTracerProvider(tp), otelgrpc.WithPropagators(propagation.TraceContext{}))))
	if err != nil {
		t.Fatal(err)
	}
	defer traced.Close()
	if _, err := kvv1.NewKVClient(traced).Put(ctx, &kvv1.PutRequest{Key: []byte("traced"), Value: []byte("v"), Consistency: all}); err != nil {
		t.Fatal(err)
	}
	var client sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == "kv.v1.KV/Put" && !s.Parent().IsValid() {
			client = s
		}
	}
	if client == nil {
		t.Fatal("no client span for the traced put")
	}
	id := client.SpanContext().TraceID()
	eventually(t, "the traced put's server span and three replica writes", func() bool {
		writes, server := 0, false
		for _, s := range rec.Ended() {
			if s.SpanContext().TraceID() == id {
				server = server || s.Name() == "kv.v1.KV/Put" && s.Parent().IsValid()
				if s.Name() == "meridian.replica.write" {
					writes++
				}
			}
		}
		return writes == 3 && server
	})
	for _, s := range rec.Ended() {
		if s.SpanContext().TraceID() != id {
			t.Errorf("span %q of trace %s recorded for an untraced request or background work", s.Name(), s.SpanContext().TraceID())
		}
	}
}

// TestStreamCallsAreTracedAtTheRatio: calls on a client's call stream are
// traced as roots of their own at the node's ratio (here all, then none),
// with the quorum path under them.
func TestStreamCallsAreTracedAtTheRatio(t *testing.T) {
	for _, ratio := range []float64{1, 0} {
		rec := tracetest.NewSpanRecorder()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(telemetry.NewSampler(ratio)))
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		l, err := node.StartLocal(ctx, node.LocalSpec{Dir: t.TempDir(), NodesPerDC: 3, Engine: "memory", GossipProfile: "test", Insecure: true,
			Options: node.Options{TelemetryFor: func(string) *telemetry.Telemetry { return telemetry.NewForTestRatio(tp, ratio) }}})
		if err != nil {
			t.Fatal(err)
		}
		stream, err := kvv1.NewKVClient(dialConn(t, l.Nodes()[0].Addr())).Calls(ctx)
		if err != nil {
			t.Fatal(err)
		}
		all := &kvv1.Consistency{Level: kvv1.Level_LEVEL_ALL}
		exchange(t, stream,
			&kvv1.Call{Id: 1, Op: &kvv1.Call_Put{Put: &kvv1.PutRequest{Key: []byte("x"), Value: []byte("v"), Consistency: all}}},
			&kvv1.Call{Id: 2, Op: &kvv1.Call_Put{Put: &kvv1.PutRequest{Key: []byte("y"), Value: []byte("v"), Consistency: all}}})
		if ratio == 0 {
			l.Close() // every span the cluster started has ended
			for _, s := range rec.Ended() {
				if strings.HasPrefix(s.Name(), "kv.") || strings.HasPrefix(s.Name(), "meridian.") {
					t.Errorf("ratio 0: span %q recorded", s.Name())
				}
			}
		} else {
			eventually(t, "two traced stream puts, each a root with its quorum write under it", func() bool {
				roots := map[[16]byte]bool{}
				for _, s := range rec.Ended() {
					if s.Name() == "kv.v1.KV/Calls/Put" && !s.Parent().IsValid() {
						roots[s.SpanContext().TraceID()] = true
					}
				}
				writes := 0
				for _, s := range rec.Ended() {
					if s.Name() == "meridian.replica.write" && roots[s.SpanContext().TraceID()] {
						writes++
					}
				}
				return len(roots) == 2 && writes == 6
			})
			l.Close()
		}
		cancel()
		tp.Shutdown(context.Background())
	}
}
