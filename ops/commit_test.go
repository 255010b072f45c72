package ops_test

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
	"github.com/meridiankv/meridian/node"
)

// TestCommitExpectsTheReviewedPlan: a commit naming the plan its caller
// reviewed commits nothing once another step was added; the plan as it
// now is commits, and the same commit sent again (a retry after a
// timeout) is an unchanged success, not "no pending plan".
func TestCommitExpectsTheReviewedPlan(t *testing.T) {
	ctx, l := startAdminCluster(t, node.LocalSpec{NodesPerDC: 4, Partitions: 16})
	admin := adminClient(t, l.Node("n1").AdminAddr())
	reviewed := []*adminv1.PlanOp{{Op: "decommission", Node: "n4"}}
	if _, err := admin.ClusterPlan(ctx, &adminv1.ClusterPlanRequest{Op: reviewed[0]}); err != nil {
		t.Fatal(err)
	}
	added := &adminv1.PlanOp{Op: "reweight", Node: "n1", Weight: 2}
	if _, err := admin.ClusterPlan(ctx, &adminv1.ClusterPlanRequest{Op: added}); err != nil {
		t.Fatal(err)
	}
	_, err := admin.ClusterCommit(ctx, &adminv1.ClusterCommitRequest{Expect: reviewed})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("commit of the plan reviewed before a step was added: %v, want FAILED_PRECONDITION", err)
	}
	if st, err := admin.ClusterStatus(ctx, &adminv1.ClusterStatusRequest{}); err != nil || st.InTransition || len(st.GetPending().GetOps()) != 2 {
		t.Fatalf("after the refused commit: %v, %v; want nothing moving and both steps pending", st, err)
	}

	now := append(reviewed, added)
	first, err := admin.ClusterCommit(ctx, &adminv1.ClusterCommitRequest{Expect: now})
	if err != nil || len(first.GetOps()) != 2 {
		t.Fatalf("commit of the plan as it is: %v, %v", first, err)
	}
	again, err := admin.ClusterCommit(ctx, &adminv1.ClusterCommitRequest{Expect: now})
	if err != nil {
		t.Fatalf("the same commit sent again: %v, want an unchanged success", err)
	}
	if again.GetEpoch() < first.GetEpoch() {
		t.Fatalf("the commit sent again answered epoch %d, before the commit's %d", again.GetEpoch(), first.GetEpoch())
	}
	if _, err := admin.ClusterCommit(ctx, &adminv1.ClusterCommitRequest{}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("a commit naming no plan with none pending: %v, want FAILED_PRECONDITION", err)
	}
}
