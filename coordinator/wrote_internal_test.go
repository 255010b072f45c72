package coordinator

import (
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestWrote: which failed replica writes may have left something on the
// replica (the failure stands) and which wrote nothing (the copy goes to a
// fallback as a hint).
func TestWrote(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"not a status (the network)", errors.New("connection reset"), false},
		{"UNAVAILABLE from the transport", status.Error(codes.Unavailable, "connection refused"), false},
		{"UNAVAILABLE from a coordinator", withInfo(status.New(codes.Unavailable, "only 1 of 3"), "UNAVAILABLE", nil).Err(), true},
		{"refused low on disk", withInfo(status.New(codes.ResourceExhausted, "low on disk"), ReasonDiskLow, nil).Err(), false},
		{"a fallback refused the hint", (&HintRefusedError{Err: errors.New("hint not stored: over the count")}).GRPCStatus().Err(), false},
		{"shed for overload", withInfo(status.New(codes.ResourceExhausted, "overloaded"), "OVERLOADED", nil).Err(), true},
		{"RESOURCE_EXHAUSTED without Meridian's reason", status.Error(codes.ResourceExhausted, "message too large"), true},
		{"internal error", status.Error(codes.Internal, "merge failed"), true},
	} {
		if got := wrote(c.err); got != c.want {
			t.Errorf("%s: wrote = %v, want %v", c.name, got, c.want)
		}
	}
}
