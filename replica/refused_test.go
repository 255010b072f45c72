package replica_test

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meridiankv/meridian/replica"
)

// TestRefused: a refusal is recognised as it is and wrapped (as a sender's
// round reports it); other statuses, FAILED_PRECONDITION ones too, and
// plain errors are not refusals of one key.
func TestRefused(t *testing.T) {
	refusal := replica.Refuse("a version written 3s ahead of this node's clock")
	if status.Code(refusal) != codes.FailedPrecondition {
		t.Fatalf("a refusal is %v, want FAILED_PRECONDITION", status.Code(refusal))
	}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"a refusal", refusal, true},
		{"a refusal wrapped", fmt.Errorf("merge %q: %w", "k", refusal), true},
		{"FAILED_PRECONDITION without the reason", status.Error(codes.FailedPrecondition, "wrong cluster"), false},
		{"another code", status.Error(codes.Unavailable, "down"), false},
		{"a plain error", errors.New("disk full"), false},
		{"nil", nil, false},
		{"refusals joined", errors.Join(refusal, fmt.Errorf("n2: %w", refusal)), true},
		{"a refusal and a peer down", errors.Join(fmt.Errorf("n2: %w", refusal), errors.New("n3 is down")), false},
		{"a refusal and a peer unreachable", fmt.Errorf("round: %w, %w", refusal, status.Error(codes.Unavailable, "n3")), false},
	} {
		if got := replica.Refused(tc.err); got != tc.want {
			t.Errorf("%s: Refused %v, want %v", tc.name, got, tc.want)
		}
	}
}
