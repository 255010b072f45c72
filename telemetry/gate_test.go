package telemetry

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
)

const (
	sampledParent   = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	unsampledParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
)

func TestTraceDecision(t *testing.T) {
	for _, c := range []struct {
		name        string
		traceparent []string
		roots       bool
		coin, ratio float64
		trace, root bool
	}{
		{"sampled parent", []string{sampledParent}, true, 0.99, 0.01, true, false},
		{"sampled parent, ratio 0", []string{sampledParent}, true, 0.99, 0, true, false},
		{"sampled parent, peer listener", []string{sampledParent}, false, 0.99, 0.01, true, false},
		{"flags with more bits", []string{sampledParent[:53] + "03"}, false, 1, 0, true, false},
		{"unsampled parent: never a root instead", []string{unsampledParent}, true, 0, 0.01, false, false},
		{"no parent, coin under the ratio", nil, true, 0.005, 0.01, true, true},
		{"no parent, coin over the ratio", nil, true, 0.5, 0.01, false, false},
		{"no parent, ratio 0", nil, true, 0, 0, false, false},
		{"no parent, ratio 1", nil, true, 0.999, 1, true, true},
		{"no parent on the peer listener", nil, false, 0, 1, false, false},
		{"malformed parent counts as none", []string{"00-xyz"}, true, 0, 0.5, true, true},
		{"malformed flags count as none", []string{sampledParent[:53] + "0g"}, false, 0, 1, false, false},
		{"another version counts as none", []string{"01" + sampledParent[2:]}, false, 0, 1, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr, root := traceDecision(c.traceparent, c.roots, c.coin, c.ratio)
			if tr != c.trace || root != c.root {
				t.Fatalf("trace, root = %v, %v; want %v, %v", tr, root, c.trace, c.root)
			}
		})
	}
}

// countingHandler records what reaches it.
type countingHandler struct{ tags, rpcs int }

func (h *countingHandler) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	h.tags++
	return ctx
}
func (h *countingHandler) HandleRPC(context.Context, stats.RPCStats) { h.rpcs++ }
func (h *countingHandler) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (h *countingHandler) HandleConn(context.Context, stats.ConnStats) {}

// TestGateLetsThroughOnlyTracedRPCs: otelgrpc sees the traced RPCs (both
// their tag and their stats) and nothing of the others, which allocate
// nothing in the gate.
func TestGateLetsThroughOnlyTracedRPCs(t *testing.T) {
	tel := NewForTestRatio(sdktrace.NewTracerProvider(), 0.01) // the gate never calls the provider
	draws := 0.5
	tel.coin = func() float64 { return draws }
	inner := &countingHandler{}
	g := tel.serverGate(inner, true, nil)
	info := &stats.RPCTagInfo{FullMethodName: "/kv.v1.KV/Put"}
	plain := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer x"))

	end := &stats.End{}
	allocs := testing.AllocsPerRun(100, func() {
		ctx := g.TagRPC(plain, info)
		g.HandleRPC(ctx, end)
	})
	if allocs != 0 || inner.tags != 0 || inner.rpcs != 0 {
		t.Fatalf("untraced RPC: %v allocations, otelgrpc saw %d tags and %d stats; want none", allocs, inner.tags, inner.rpcs)
	}

	draws = 0.001
	ctx := g.TagRPC(plain, info)
	g.HandleRPC(ctx, &stats.End{})
	if inner.tags != 1 || inner.rpcs != 1 || ctx.Value(rootKey{}) == nil {
		t.Fatalf("root chosen by the coin: otelgrpc saw %d tags, %d stats, root mark %v; want 1, 1, set", inner.tags, inner.rpcs, ctx.Value(rootKey{}))
	}

	draws = 0.5
	parented := metadata.NewIncomingContext(context.Background(), metadata.Pairs(traceparentKey, sampledParent))
	if ctx := tel.serverGate(inner, false, nil).TagRPC(parented, info); inner.tags != 2 || ctx.Value(rootKey{}) != nil {
		t.Fatalf("sampled parent on the peer listener: otelgrpc saw %d tags, root mark %v; want 2, unset", inner.tags, ctx.Value(rootKey{}))
	}
}

func TestClientGateFollowsTheCallersSpan(t *testing.T) {
	inner := &countingHandler{}
	g := clientGate(inner)
	info := &stats.RPCTagInfo{FullMethodName: "/meridian.internal.v1.Replica/Put"}
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	unsampled := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid}))
	end := &stats.End{}
	if allocs := testing.AllocsPerRun(100, func() { g.HandleRPC(g.TagRPC(unsampled, info), end) }); allocs != 0 || inner.tags != 0 {
		t.Fatalf("call under an unsampled span: %v allocations, %d tags reached otelgrpc; want none", allocs, inner.tags)
	}
	sampled := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled}))
	g.HandleRPC(g.TagRPC(sampled, info), &stats.End{})
	if inner.tags != 1 || inner.rpcs != 1 {
		t.Fatalf("call under a sampled span: %d tags, %d stats reached otelgrpc; want 1, 1", inner.tags, inner.rpcs)
	}
}

// TestSamplerTakesTheGatesChoice: a root the gate chose is sampled even at
// a ratio of 0; other roots follow the ratio; children follow the parent.
func TestSamplerTakesTheGatesChoice(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(NewSampler(0)), sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	tr := tp.Tracer("t")
	_, chosen := tr.Start(context.WithValue(context.Background(), rootKey{}, true), "chosen")
	_, other := tr.Start(context.Background(), "other")
	if !chosen.SpanContext().IsSampled() || other.SpanContext().IsSampled() {
		t.Fatalf("chosen root sampled %v, other root sampled %v; want true, false", chosen.SpanContext().IsSampled(), other.SpanContext().IsSampled())
	}
	_, child := tr.Start(trace.ContextWithSpan(context.Background(), chosen), "child")
	if !child.SpanContext().IsSampled() {
		t.Fatal("a child of a sampled span was not sampled")
	}
}

// TestGateUnknownMethodsAndBadHeaders: an RPC of a method the server does
// not have is never traced, whatever its header says (its span would be
// named by the caller); a malformed traceparent counts as none, so the
// ratio's coin decides.
func TestGateUnknownMethodsAndBadHeaders(t *testing.T) {
	tel := NewForTestRatio(sdktrace.NewTracerProvider(), 1)
	tel.coin = func() float64 { return 0 }
	inner := &countingHandler{}
	g := tel.serverGate(inner, true, func(m string) bool { return m == "/kv.v1.KV/Put" })
	sampled := metadata.NewIncomingContext(context.Background(), metadata.Pairs(traceparentKey, sampledParent))
	g.TagRPC(sampled, &stats.RPCTagInfo{FullMethodName: "/zz.Rand/abc"})
	if inner.tags != 0 {
		t.Fatal("an unknown method was traced")
	}
	bad := metadata.NewIncomingContext(context.Background(), metadata.Pairs(traceparentKey, "01"+sampledParent[2:]))
	ctx := g.TagRPC(bad, &stats.RPCTagInfo{FullMethodName: "/kv.v1.KV/Put"})
	if inner.tags != 1 || ctx.Value(rootKey{}) == nil {
		t.Fatalf("a request with a malformed traceparent at ratio 1: %d tags, root %v; want a new root", inner.tags, ctx.Value(rootKey{}))
	}
}

// TestGateBoundsCallersTraces: on the client and admin listeners a
// caller's sampled trace is followed at most trace-caller-rate times a
// second (each refusal counted); the ratio's own roots and a peer's
// traces are not bounded by it.
func TestGateBoundsCallersTraces(t *testing.T) {
	tel := NewForTestRatio(sdktrace.NewTracerProvider(), 1)
	now := time.Unix(1_700_000_000, 0)
	tel.now = func() time.Time { return now }
	tel.coin = func() float64 { return 0 }
	tel.callers = newCallerLimiter(2)
	inner := &countingHandler{}
	client, peer := tel.serverGate(inner, true, nil), tel.serverGate(inner, false, nil)
	info := &stats.RPCTagInfo{FullMethodName: "/kv.v1.KV/Put"}
	sampled := metadata.NewIncomingContext(context.Background(), metadata.Pairs(traceparentKey, sampledParent))
	plain := metadata.NewIncomingContext(context.Background(), metadata.MD{})

	for range 5 {
		client.TagRPC(sampled, info)
	}
	if inner.tags != 2 || counterValue(t, tel.Metrics.callerTracesLimited) != 3 {
		t.Fatalf("5 callers' traces at 2 a second: %d followed, %v counted as limited; want 2 and 3", inner.tags, counterValue(t, tel.Metrics.callerTracesLimited))
	}
	if ctx := client.TagRPC(plain, info); inner.tags != 3 || ctx.Value(rootKey{}) == nil {
		t.Fatalf("a root chosen by the ratio past the callers' bound: %d tags, root %v; want it traced", inner.tags, ctx.Value(rootKey{}))
	}
	peer.TagRPC(sampled, info)
	if inner.tags != 4 {
		t.Fatal("a peer's sampled trace was bounded by the callers' rate")
	}
	now = now.Add(time.Second)
	client.TagRPC(sampled, info)
	if inner.tags != 5 {
		t.Fatal("a caller's trace a second later was not followed")
	}

	none := NewForTestRatio(sdktrace.NewTracerProvider(), 0)
	none.callers = newCallerLimiter(0)
	none.serverGate(inner, true, nil).TagRPC(sampled, info)
	if inner.tags != 5 {
		t.Fatal("trace-caller-rate 0 followed a caller's trace")
	}
}

func TestCallerTraceRateConfig(t *testing.T) {
	for _, c := range []struct {
		in   *float64
		want float64
		ok   bool
	}{
		{nil, DefaultCallerTraceRate, true},
		{ptr(0.0), 0, true},
		{ptr(2.5), 2.5, true},
		{ptr(-1.0), 0, false},
		{ptr(math.NaN()), 0, false},
		{ptr(math.Inf(1)), 0, false},
	} {
		got, err := callerTraceRate(Config{CallerTraceRate: c.in})
		if (err == nil) != c.ok || (c.ok && got != c.want) {
			t.Errorf("callerTraceRate(%v) = %v, %v; want %v, ok %v", c.in, got, err, c.want, c.ok)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
