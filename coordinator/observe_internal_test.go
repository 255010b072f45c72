package coordinator

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
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

// TestLevelLabelIsBounded: the level label of metrics and spans takes one
// of a fixed set of values whatever number a caller sends, so callers
// cannot create time series at will.
func TestLevelLabelIsBounded(t *testing.T) {
	cases := []struct {
		cons *kvv1.Consistency
		op   Op
		want string
	}{
		{nil, OpRead, "QUORUM"},
		{&kvv1.Consistency{Level: kvv1.Level_LEVEL_LOCAL_QUORUM}, OpWrite, "LOCAL_QUORUM"},
		{&kvv1.Consistency{Level: kvv1.Level_LEVEL_ONE, R: 2}, OpRead, "EXPLICIT"},
		{&kvv1.Consistency{Level: kvv1.Level_LEVEL_ONE, R: 2}, OpWrite, "ONE"},
		{&kvv1.Consistency{Level: kvv1.Level(10)}, OpRead, "INVALID"},
		{&kvv1.Consistency{Level: kvv1.Level(123456)}, OpWrite, "INVALID"},
		{&kvv1.Consistency{Level: kvv1.Level(-3)}, OpWrite, "INVALID"},
	}
	for _, c := range cases {
		if got := levelLabel(c.cons, c.op); got != c.want {
			t.Errorf("levelLabel(%v, %v) = %q, want %q", c.cons, c.op, got, c.want)
		}
	}
	seen := map[string]bool{}
	for l := int32(-100); l < 1000; l++ {
		seen[levelLabel(&kvv1.Consistency{Level: kvv1.Level(l)}, OpRead)] = true
	}
	if len(seen) > len(kvv1.Level_name)+1 {
		t.Fatalf("1,100 level numbers gave %d label values, want at most %d", len(seen), len(kvv1.Level_name)+1)
	}
}

// TestOutcomeLabelIsBounded: a status code outside gRPC's, which a peer
// or a grpc-status header can carry, is labelled Unknown, so errors cannot
// create time series at will.
func TestOutcomeLabelIsBounded(t *testing.T) {
	seen := map[string]bool{}
	for c := uint32(0); c < 1000; c++ {
		seen[outcomeLabel(status.Error(grpccodes.Code(c), "x"))] = true
	}
	seen[outcomeLabel(nil)] = true
	if len(seen) != 17 {
		t.Fatalf("1,000 codes gave %d outcome labels, want gRPC's 17", len(seen))
	}
	if got := outcomeLabel(status.Error(grpccodes.Code(1000), "x")); got != "Unknown" {
		t.Fatalf("code 1000 labelled %q", got)
	}
}
