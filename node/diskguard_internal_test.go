package node

import (
	"errors"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestDiskLow(t *testing.T) {
	const min = 1000
	for _, c := range []struct {
		was  bool
		free uint64
		want bool
	}{
		{false, 5000, false},
		{false, 1000, false}, // at the threshold: still writable
		{false, 999, true},
		{false, 0, true},
		{true, 999, true},
		{true, 1000, true}, // refusing: needs a tenth more than min
		{true, 1099, true},
		{true, 1100, false},
		{true, 5000, false},
	} {
		if got := diskLow(c.was, c.free, min); got != c.want {
			t.Errorf("diskLow(was %v, free %d, min %d) = %v, want %v", c.was, c.free, min, got, c.want)
		}
	}
}

// TestDiskGuard: the guard refuses once a reading is low, keeps its last
// decision while the volume cannot be read, and accepts again with room.
func TestDiskGuard(t *testing.T) {
	free, fail := uint64(10<<30), false
	g := &diskGuard{node: "n1", dir: "/data", min: 256 << 20, log: slog.New(slog.DiscardHandler),
		space: func(string) (uint64, uint64, error) {
			if fail {
				return 0, 0, errors.New("statfs failed")
			}
			return free, 100 << 30, nil
		}}
	g.check()
	if err := g.refused(); err != nil {
		t.Fatalf("10 GiB free: refused %v", err)
	}
	free = 100 << 20
	g.check()
	err := g.refused()
	var dl *DiskLowError
	if !errors.As(err, &dl) || dl.Free != 100<<20 || dl.Min != 256<<20 || dl.Node != "n1" {
		t.Fatalf("100 MiB free: %v, want a DiskLowError with the figures", err)
	}
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "100.0 MiB free in /data") || !strings.Contains(st.Message(), "free space on the volume") {
		t.Errorf("status %v: want RESOURCE_EXHAUSTED saying how much is free and what to do", st)
	}
	var reason string
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			reason = info.GetReason()
		}
	}
	if reason != "DISK_LOW" {
		t.Errorf("ErrorInfo reason %q, want DISK_LOW", reason)
	}
	fail = true
	g.check()
	if g.refused() == nil {
		t.Fatal("a failed reading dropped the refusal")
	}
	fail, free = false, 10<<30
	g.check()
	if err := g.refused(); err != nil {
		t.Fatalf("space freed: still refused %v", err)
	}
}
