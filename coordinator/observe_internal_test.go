package coordinator

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// TestReplicaSpanAfterTheRequestAnswered: a replica write that finishes
// after the quorum answered (the request's span has ended) still gets its
// span in the request's trace; an unsampled request gets none.
func TestReplicaSpanAfterTheRequestAnswered(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	c := &Coordinator{tracer: tp.Tracer("test")}

	ctx, req := tp.Tracer("test").Start(context.Background(), "kv.Put")
	req.End() // the client has its answer
	_, span := c.replicaSpan(ctx, "meridian.replica.write", "n3")
	if !span.IsRecording() {
		t.Fatal("a late replica write of a traced request got no span")
	}
	span.End()
	var late sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == "meridian.replica.write" {
			late = s
		}
	}
	if late == nil || late.Parent().SpanID() != req.SpanContext().SpanID() {
		t.Fatalf("late span %v: want a child of the request's span", late)
	}

	// Not sampled: nothing is started.
	unsampled := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}}))
	if _, span := c.replicaSpan(unsampled, "meridian.replica.write", "n3"); span.IsRecording() {
		t.Fatal("an unsampled request got a replica span")
	}
}
