package ops

import (
	"context"
	"fmt"
	"testing"

	"github.com/meridiankv/meridian/membership"
)

// TestPlanAnswerListsBoundedMoves: a plan on a large ring with several
// keyspaces has more moves than an answer lists: the answer lists the
// first MaxPlanMovesListed and counts them all (moves_total), so it stays
// under the message limit and `plan show` can show the plan.
func TestPlanAnswerListsBoundedMoves(t *testing.T) {
	var ms []membership.MemberRecord
	for i := 1; i <= 4; i++ {
		ms = append(ms, membership.MemberRecord{ID: fmt.Sprintf("n%d", i), DC: "dc1", Rack: fmt.Sprintf("r%d", i), Weight: 1, GRPCAddr: "127.0.0.1:1"})
	}
	var specs []membership.KeyspaceSpec
	for i := range 6 {
		specs = append(specs, membership.KeyspaceSpec{Name: fmt.Sprintf("ks%d", i), Replication: map[string]int{"dc1": 3}})
	}
	st := &membership.MetaState{}
	if err := st.Apply(membership.Command{Kind: membership.CmdInit, ClusterID: "c1", Partitions: 16384, Members: ms, Keyspaces: specs}); err != nil {
		t.Fatal(err)
	}
	if err := st.Apply(membership.Command{Kind: membership.CmdPlan, Rules: membership.CommandRules, Op: &membership.PlanOp{Op: membership.OpDecommission, Node: "n4"}}); err != nil {
		t.Fatal(err)
	}
	plan, err := (&Server{}).planView(context.Background(), st, false)
	if err != nil {
		t.Fatal(err)
	}
	if total := int(plan.GetMovesTotal()); total <= MaxPlanMovesListed || len(plan.GetMoves()) != MaxPlanMovesListed {
		t.Fatalf("%d moves listed of %d, want the first %d of more", len(plan.GetMoves()), total, MaxPlanMovesListed)
	}
}
