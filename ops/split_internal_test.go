package ops

import (
	"slices"
	"strings"
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
	// A snapshot that timed out may still be under way: not "unreachable".
	still, slow := timedOut(out, unreach)
	if !slices.Equal(still, []string{"n2"}) || len(slow) != 1 || !strings.HasPrefix(slow[0], "n4: no answer within 1m0s; its snapshot may still be under way") {
		t.Errorf("timedOut = %v, %q; want n2 still unreachable and n4 reported as possibly under way", still, slow)
	}
}
