package ops_test

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/node"
)

// TestPlanSizesCountUnsizedMoves: a plan shown with its sizes says
// (unsized_moves) how many moves could not be sized: here those of a
// keyspace with one replica, whose only current replica is down.
func TestPlanSizesCountUnsizedMoves(t *testing.T) {
	ctx, l := startAdminCluster(t, node.LocalSpec{NodesPerDC: 4, Partitions: 16,
		Keyspaces: []membership.KeyspaceSpec{{Name: "solo", Replication: map[string]int{"dc1": 1}}}})
	n1 := l.Node("n1")
	admin := adminClient(t, n1.AdminAddr())
	if _, err := admin.ClusterPlan(ctx, &adminv1.ClusterPlanRequest{Op: &adminv1.PlanOp{Op: "decommission", Node: "n4"}}); err != nil {
		t.Fatal(err)
	}
	show := func() (*adminv1.Plan, uint32) {
		t.Helper()
		resp, err := admin.ClusterPlanShow(ctx, &adminv1.ClusterPlanShowRequest{Sizes: true})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetPlan(), resp.GetPlan().GetUnsizedMoves()
	}
	if _, unsized := show(); unsized != 0 {
		t.Fatalf("every node up: %d moves could not be sized, want 0", unsized)
	}

	if err := l.Stop("n4"); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); n1.Alive("n4"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("n1 still takes n4 for alive")
		}
	}
	plan, unsized := show()
	want := 0 // the moves whose only current replica is n4
	for _, m := range plan.GetMoves() {
		onlyN4 := len(m.GetOld()) == 1 && m.GetOld()[0] == "n4"
		if onlyN4 {
			want++
		}
		if m.GetUnsized() != onlyN4 {
			t.Fatalf("move of partition %d from %v: unsized %v, want %v", m.GetPartition(), m.GetOld(), m.GetUnsized(), onlyN4)
		}
	}
	if want == 0 || unsized != uint32(want) {
		t.Fatalf("n4 down: %d moves could not be sized, want %d (of %d)", unsized, want, len(plan.GetMoves()))
	}
}

// TestStatusShowsAPlanThatNoLongerFits: a pending plan that a keyspace
// created since makes impossible (four replicas, and the plan takes one
// of the four nodes away) is still shown by cluster status, with its
// steps (plan show says why it does not fit); status never sends the
// plan's moves, only their count.
func TestStatusShowsAPlanThatNoLongerFits(t *testing.T) {
	ctx, l := startAdminCluster(t, node.LocalSpec{NodesPerDC: 4, Partitions: 16})
	admin := adminClient(t, l.Node("n1").AdminAddr())
	if _, err := admin.ClusterPlan(ctx, &adminv1.ClusterPlanRequest{Op: &adminv1.PlanOp{Op: "decommission", Node: "n4"}}); err != nil {
		t.Fatal(err)
	}
	st, err := admin.ClusterStatus(ctx, &adminv1.ClusterStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if p := st.GetPending(); len(p.GetOps()) != 1 || p.GetPartitionsChanged() == 0 || len(p.GetMoves()) != 0 {
		t.Fatalf("a pending plan that fits: %v; want its step and count, no moves", p)
	}
	if _, err := admin.CreateKeyspace(ctx, &adminv1.CreateKeyspaceRequest{Keyspace: &adminv1.Keyspace{Name: "wide", Replication: map[string]uint32{"dc1": 4}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.ClusterPlanShow(ctx, &adminv1.ClusterPlanShowRequest{}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("plan show of a plan that no longer fits: %v, want FAILED_PRECONDITION", err)
	}
	st, err = admin.ClusterStatus(ctx, &adminv1.ClusterStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if ops := st.GetPending().GetOps(); len(ops) != 1 || ops[0].GetOp() != "decommission" || ops[0].GetNode() != "n4" {
		t.Fatalf("cluster status with a plan that no longer fits: pending %v, want the decommission of n4 shown", st.GetPending())
	}
}
