package coordinator

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
)

// Observer receives the coordinator's measurements (telemetry.Metrics
// implements it). Methods must be cheap and safe for concurrent use.
type Observer interface {
	RequestDone(op, level, outcome string, d time.Duration)
	ReplicaCall(op, peerDC, outcome string, d time.Duration)
	ReadRepaired(n int)
	SiblingsReturned(n int)
	HintStored()
	// ClockSkewRejected: a timestamp in data was too far ahead to observe.
	ClockSkewRejected()
	// FastClockForward: a last-writer-wins write not coordinated here,
	// this node's clock running ahead of its peers'.
	FastClockForward()
	// ManySiblings: a write left a key at or above its warning count.
	ManySiblings()
	// DuplicateWrite: a retried write was recognised and applied once.
	DuplicateWrite()
	// RequestIDs: how many write request IDs are remembered, and whether
	// remembering one forgot another still within the window.
	RequestIDs(n int, evictedEarly bool)
	// Shed: a request (op "read" or "write") or a read repair
	// ("read_repair") refused by admission control.
	Shed(what string)
}

type nopObserver struct{}

func (nopObserver) RequestDone(string, string, string, time.Duration) {}
func (nopObserver) ReplicaCall(string, string, string, time.Duration) {}
func (nopObserver) ReadRepaired(int)                                  {}
func (nopObserver) SiblingsReturned(int)                              {}
func (nopObserver) HintStored()                                       {}
func (nopObserver) ClockSkewRejected()                                {}
func (nopObserver) FastClockForward()                                 {}
func (nopObserver) ManySiblings()                                     {}
func (nopObserver) DuplicateWrite()                                   {}
func (nopObserver) RequestIDs(int, bool)                              {}
func (nopObserver) Shed(string)                                       {}

// Span attribute keys (OTel semantic conventions have none for these).
const (
	attrKeyspace  = attribute.Key("meridian.keyspace")
	attrLevel     = attribute.Key("meridian.consistency")
	attrN         = attribute.Key("meridian.n")
	attrR         = attribute.Key("meridian.r")
	attrW         = attribute.Key("meridian.w")
	attrContacted = attribute.Key("meridian.replicas.contacted")
	attrAnswered  = attribute.Key("meridian.replicas.answered")
	attrFailed    = attribute.Key("meridian.replicas.failed")
	attrSiblings  = attribute.Key("meridian.siblings")
	attrRepaired  = attribute.Key("meridian.replicas.repaired")
	attrNode      = attribute.Key("meridian.node")
	attrHintFor   = attribute.Key("meridian.hint_for")
	attrSync      = attribute.Key("meridian.sync")
	attrPartition = attribute.Key("meridian.partition")
)

// levelLabel is the request's level as a metric label and span attribute:
// one of the levels this build knows, EXPLICIT, or INVALID for a number it
// does not (refused later as INVALID_ARGUMENT): a label value a caller
// chooses would give it a new time series per request.
func levelLabel(c *kvv1.Consistency, op Op) string {
	if op == OpRead && c.GetR() > 0 || op == OpWrite && c.GetW() > 0 {
		return "EXPLICIT"
	}
	l := c.GetLevel()
	if l == kvv1.Level_LEVEL_UNSPECIFIED {
		l = kvv1.Level_LEVEL_QUORUM
	}
	if _, known := kvv1.Level_name[int32(l)]; !known {
		return "INVALID"
	}
	return levelName(l)
}

// observe wraps one client request in a span and records its metrics.
func (c *Coordinator) observe(ctx context.Context, name string, op Op, keyspace string, cons *kvv1.Consistency, fn func(context.Context, trace.Span) error) error {
	start := time.Now()
	level := levelLabel(cons, op)
	slot, err := c.admit(ctx, op, cons)
	if err != nil {
		c.obs.RequestDone(name[len("kv."):], level, outcomeLabel(err), time.Since(start))
		return err
	}
	defer func() { slot.release(err == nil) }()
	var span trace.Span
	if parent := trace.SpanFromContext(ctx); !parent.IsRecording() {
		// Not traced: tracing is off, or the gRPC hooks chose not to trace
		// this request (they decide sampling; see telemetry's gate). A
		// span here would cost its allocations and, as a root, sample the
		// request a second time.
		span = parent
	} else {
		ctx, span = c.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindInternal),
			trace.WithAttributes(attrKeyspace.String(orDefault(truncate(keyspace, maxKeyspaceName))), attrLevel.String(level)))
	}
	err = fn(ctx, span)
	outcome := outcomeLabel(err)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
	c.obs.RequestDone(name[len("kv."):], level, outcome, time.Since(start))
	return err
}

// outcomeLabel is err's gRPC code as a metric label. A code outside
// gRPC's (a peer's or a unary reply's grpc-status header can carry any
// number) is Unknown: each would otherwise add series for good.
func outcomeLabel(err error) string {
	c := status.Code(err)
	if c > grpccodes.Unauthenticated {
		c = grpccodes.Unknown
	}
	return c.String()
}

func orDefault(ks string) string {
	if ks == "" {
		return "default"
	}
	return ks
}

// replicaSpan starts a span for one replica operation (local or remote).
// When the request is not traced (tracing off, or not sampled) it starts
// nothing and returns the request's own non-recording span, whose End is a
// no-op: the request path then pays nothing for tracing. A request that is
// traced but already answered (a replica write finishing after the quorum)
// still gets its span: its own has ended, so it is no longer recording, but
// it was sampled. attrs is only read (copied when recording), so the
// caller's slice stays on its stack.
func (c *Coordinator) replicaSpan(ctx context.Context, name, node string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	if parent := trace.SpanFromContext(ctx); !parent.IsRecording() && !parent.SpanContext().IsSampled() {
		return ctx, parent
	}
	all := make([]attribute.KeyValue, 0, len(attrs)+1)
	all = append(append(all, attrs...), attrNode.String(node))
	return c.tracer.Start(ctx, name, trace.WithAttributes(all...))
}

func endSpan(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// truncate cuts s to at most n bytes (a caller-chosen string put in a
// span attribute).
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
