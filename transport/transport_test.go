package transport

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
)

type echo struct{ calls int }

func (e *echo) ServeRead(context.Context, *internalv1.ReadRequest) (*internalv1.ReadResponse, error) {
	e.calls++
	return &internalv1.ReadResponse{Set: []byte("x")}, nil
}
func (e *echo) ServeWrite(context.Context, *internalv1.WriteRequest) (*internalv1.WriteResponse, error) {
	e.calls++
	return &internalv1.WriteResponse{}, nil
}
func (e *echo) ServeCoordinate(context.Context, *internalv1.CoordinateRequest) (*internalv1.CoordinateResponse, error) {
	e.calls++
	return &internalv1.CoordinateResponse{}, nil
}

func TestMemAndFaults(t *testing.T) {
	mem := NewMem()
	h := &echo{}
	mem.Register("n1", h)
	f := NewFaults(mem, func(node string) string { return map[string]string{"n1": "east", "n2": "west"}[node] })
	ctx := context.Background()
	if _, err := f.Read(ctx, "n1", &internalv1.ReadRequest{}); err != nil || h.calls != 1 {
		t.Fatalf("read through healthy faults: %v (calls %d)", err, h.calls)
	}
	if err := f.Write(ctx, "n2", &internalv1.WriteRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("write to an unregistered node = %v, want UNAVAILABLE", err)
	}
	f.CutDC("east")
	if _, err := f.Coordinate(ctx, "n1", &internalv1.CoordinateRequest{}); status.Code(err) != codes.Unavailable || h.calls != 1 {
		t.Fatalf("cut DC: %v (calls %d)", err, h.calls)
	}
	f.Heal()
	f.Delay("n1", 50*time.Millisecond)
	start := time.Now()
	if _, err := f.Read(ctx, "n1", &internalv1.ReadRequest{}); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) < 50*time.Millisecond {
		t.Fatal("delay not applied")
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	f.DelayDC("east", time.Hour)
	if _, err := f.Read(dctx, "n1", &internalv1.ReadRequest{}); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("delayed past the deadline = %v, want DEADLINE_EXCEEDED", err)
	}
	mem.Register("n1", nil)
	f.Heal()
	if _, err := f.Read(ctx, "n1", &internalv1.ReadRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("deregistered node = %v", err)
	}
}

func TestGRPCUnknownNode(t *testing.T) {
	g := NewGRPC(func(string) (string, bool) { return "", false })
	defer g.Close()
	if err := g.Write(context.Background(), "ghost", &internalv1.WriteRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("unknown node = %v, want UNAVAILABLE", err)
	}
}
