package ops

import (
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
)

// TestSplitFanOutResults: a fan-out's results are answers, nodes that
// could not be reached, and nodes that answered with an error, which
// failures reports with their reasons (not as unreachable).
func TestSplitFanOutResults(t *testing.T) {
	out := map[string]result[*adminv1.ClearFaultsResponse]{
		"n1": {resp: &adminv1.ClearFaultsResponse{Cleared: 2}},
		"n2": {err: status.Error(codes.Unavailable, "connection refused")},
		"n3": {err: status.Error(codes.Unimplemented, "unknown method ClearFaults")},
		"n4": {err: status.Error(codes.DeadlineExceeded, "too slow")},
		"n5": {err: status.Error(codes.PermissionDenied, "not an operator")},
	}
	answers, unreach, refused := split(out)
	if len(answers) != 1 || answers[0].GetCleared() != 2 {
		t.Errorf("answers = %v, want n1's", answers)
	}
	if !slices.Equal(unreach, []string{"n2", "n4"}) {
		t.Errorf("unreachable = %v, want [n2 n4]", unreach)
	}
	want := []string{"n3: unknown method ClearFaults", "n5: not an operator"}
	if got := failures(refused); !slices.Equal(got, want) {
		t.Errorf("failures = %q, want %q", got, want)
	}
}
