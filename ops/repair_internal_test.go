package ops

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/repair"
	"github.com/meridiankv/meridian/replica"
)

// TestRepairFailure: only the node's refusal to start another run is
// RESOURCE_EXHAUSTED; a run that failed on the way is UNAVAILABLE with how
// far it got, also when what failed it was a peer's RESOURCE_EXHAUSTED.
func TestRepairFailure(t *testing.T) {
	last := repair.Progress{PartitionsDone: 3, PartitionsTotal: 16}
	shed := status.Error(codes.ResourceExhausted, "node n2 is overloaded")
	for _, tc := range []struct {
		name string
		err  error
		code codes.Code
		says string
	}{
		{"too many runs", &node.RepairRunsError{Node: "n1", Runs: 2}, codes.ResourceExhausted, "repair-runs"},
		{"a peer shed a call", fmt.Errorf("partition 4 with n2: %w", shed), codes.Unavailable, "after 3 of 16 partitions"},
		{"a peer unreachable", status.Error(codes.Unavailable, "n3 is down"), codes.Unavailable, "after 3 of 16 partitions"},
		{"only keys refused", fmt.Errorf("n2: 1 key(s) refused, the rest repaired: %w", replica.Refuse("a version 3s ahead")), codes.FailedPrecondition, "refused some keys"},
		{"keys refused and a peer down", errors.Join(fmt.Errorf("n2: %w", replica.Refuse("ahead")), errors.New("n3 is down")), codes.Unavailable, "after 3 of 16 partitions"},
	} {
		err := repairFailure(tc.err, last)
		if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: %v, want %v saying %q", tc.name, err, tc.code, tc.says)
		}
	}
}
