package telemetry

import (
	"context"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// The gRPC hooks (otelgrpc) start a span for every RPC they see, sampled
// or not, and an unsampled span still costs its allocations. The gate in
// front of them decides first, from what it can read for free, whether
// the RPC will be traced, and hands only those to otelgrpc:
//
//   - a server RPC whose caller sent a trace context (traceparent) is
//     traced when the caller's trace is sampled, and not otherwise, as
//     the parent-based sampler would decide (so with a ratio of 0 an
//     application's own traces are still followed); on the client and
//     admin listeners at most trace-caller-rate of them a second, as
//     any caller can send a sampled header (a peer's are part of a
//     request this cluster chose to trace, and always followed);
//   - an RPC of a method the server does not have is never traced (its
//     span would be named by the caller);
//   - a server RPC without one starts a new trace with the configured
//     ratio, on the client listener only: replica calls are always part
//     of a client request's trace, never a trace of their own;
//   - a client RPC (a call to a peer) is traced when the caller's span is
//     sampled.
//
// An RPC the gate turns away allocates nothing for tracing; the request
// path starts no span of its own under an unrecorded parent.

// traceparentKey is the W3C trace-context header, as gRPC metadata.
const traceparentKey = "traceparent"

// rootKey marks a context whose RPC the gate chose to start a trace for:
// the root sampler samples it without a second coin.
type rootKey struct{}

// gatedKey marks a context handed to otelgrpc, whose HandleRPC must see
// the RPC's stats too.
type gatedKey struct{}

// traceDecision is the server-side gate: traceparent is the caller's
// header values (nil: none), roots whether this listener may start
// traces, coin a uniform draw in [0,1) compared with ratio. It returns
// whether to trace and whether the trace is a new root.
func traceDecision(traceparent []string, roots bool, coin, ratio float64) (trace, root bool) {
	if len(traceparent) > 0 {
		if sampled, ok := parseSampled(traceparent[0]); ok {
			return sampled, false
		}
		// A malformed header counts as none: the span would be a root.
	}
	if !roots || coin >= ratio {
		return false, false
	}
	return true, true
}

// parseSampled reads the sampled flag of a version-00 W3C traceparent
// ("00-<32 hex trace id>-<16 hex span id>-<2 hex flags>").
func parseSampled(h string) (sampled, ok bool) {
	if len(h) != 55 || h[:3] != "00-" || h[35] != '-' || h[52] != '-' {
		return false, false
	}
	f := h[54]
	var v byte
	switch {
	case f >= '0' && f <= '9':
		v = f - '0'
	case f >= 'a' && f <= 'f':
		v = f - 'a' + 10
	default:
		return false, false
	}
	return v&1 == 1, true
}

// gate is a stats.Handler that passes only the RPCs it lets through to
// inner (otelgrpc).
type gate struct {
	inner  stats.Handler
	decide func(ctx context.Context, method string) (context.Context, bool)
}

func (g *gate) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	ctx, ok := g.decide(ctx, info.FullMethodName)
	if !ok {
		return ctx
	}
	return g.inner.TagRPC(context.WithValue(ctx, gatedKey{}, true), info)
}

func (g *gate) HandleRPC(ctx context.Context, s stats.RPCStats) {
	if ctx.Value(gatedKey{}) != nil {
		g.inner.HandleRPC(ctx, s)
	}
}

func (g *gate) TagConn(ctx context.Context, info *stats.ConnTagInfo) context.Context {
	return g.inner.TagConn(ctx, info)
}

func (g *gate) HandleConn(ctx context.Context, s stats.ConnStats) { g.inner.HandleConn(ctx, s) }

// serverGate lets through the server RPCs traceDecision picks, of the
// methods known says the server has (nil: any).
func (t *Telemetry) serverGate(inner stats.Handler, roots bool, known func(method string) bool) stats.Handler {
	return &gate{inner: inner, decide: func(ctx context.Context, method string) (context.Context, bool) {
		if known != nil && !known(method) {
			return ctx, false
		}
		tp := metadata.ValueFromIncomingContext(ctx, traceparentKey)
		coin := 1.0
		if roots {
			if _, ok := parseFirst(tp); !ok {
				coin = t.coin() // no header, or one that counts as none
			}
		}
		ok, root := traceDecision(tp, roots, coin, t.ratio)
		if ok && !root && roots && t.callers != nil && !t.callers.AllowN(t.now(), 1) {
			// A caller's sampled trace, past trace-caller-rate.
			t.Metrics.callerTracesLimited.Inc()
			return ctx, false
		}
		if root {
			ctx = context.WithValue(ctx, rootKey{}, true)
		}
		return ctx, ok
	}}
}

// parseFirst parses the first traceparent value, if any.
func parseFirst(tp []string) (sampled, ok bool) {
	if len(tp) == 0 {
		return false, false
	}
	return parseSampled(tp[0])
}

// clientGate lets through the calls made under a sampled span.
func clientGate(inner stats.Handler) stats.Handler {
	return &gate{inner: inner, decide: func(ctx context.Context, _ string) (context.Context, bool) {
		return ctx, trace.SpanContextFromContext(ctx).IsSampled()
	}}
}

// NewSampler is the sampler the gate expects: parent-based, and for roots
// it samples what the gate chose (without a second draw), and ratio of
// the other roots (background work that starts its own trace).
func NewSampler(ratio float64) sdktrace.Sampler {
	return sdktrace.ParentBased(rootSampler{ratio: sdktrace.TraceIDRatioBased(ratio)})
}

type rootSampler struct{ ratio sdktrace.Sampler }

func (s rootSampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	if p.ParentContext != nil && p.ParentContext.Value(rootKey{}) != nil {
		return sdktrace.SamplingResult{Decision: sdktrace.RecordAndSample,
			Tracestate: trace.SpanContextFromContext(p.ParentContext).TraceState()}
	}
	return s.ratio.ShouldSample(p)
}

func (s rootSampler) Description() string {
	return "MeridianGate{" + s.ratio.Description() + "}"
}

// StartStreamCall is the gate for one call of a client's call stream
// (kv.v1.KV/Calls), which otelgrpc sees only as one long RPC: with the
// same coin as an RPC without a caller's trace, it starts a server span
// named name as a new root, and otherwise returns ctx and a non-recording
// span (which costs nothing).
func (t *Telemetry) StartStreamCall(ctx context.Context, name string) (context.Context, trace.Span) {
	if t.ratio <= 0 || t.coin() >= t.ratio {
		return ctx, trace.SpanFromContext(ctx)
	}
	// A root of its own, even when the stream's RPC was traced: the
	// sampler takes the gate's choice, as for an RPC's root.
	return t.Tracer("kv").Start(context.WithValue(ctx, rootKey{}, true), name, trace.WithSpanKind(trace.SpanKindServer), trace.WithNewRoot())
}
