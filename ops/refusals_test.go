package ops_test

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/placement"
)

// TestAdminRefusals: what the caller got wrong is INVALID_ARGUMENT
// naming the field and what it takes, a keyspace that does not exist is
// NOT_FOUND whatever the call, and a repair of a partition the node asked
// does not hold is FAILED_PRECONDITION naming the nodes that hold it.
func TestAdminRefusals(t *testing.T) {
	ctx, l := startAdminCluster(t, node.LocalSpec{NodesPerDC: 3, Partitions: 16,
		Keyspaces: []membership.KeyspaceSpec{{Name: "orders", Replication: map[string]int{"dc1": 1}}}})
	n1 := l.Nodes()[0]
	admin := adminClient(t, n1.AdminAddr())

	// Reweight out of 1..MaxWeight: refused before it reaches the
	// metadata log, naming the field and the range.
	for _, w := range []uint32{0, placement.MaxWeight + 1, 5000} {
		_, err := admin.ClusterPlan(ctx, &adminv1.ClusterPlanRequest{Op: &adminv1.PlanOp{Op: "reweight", Node: "n2", Weight: w}})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), fmt.Sprintf("weight %d", w)) ||
			!strings.Contains(err.Error(), fmt.Sprintf("from 1 to %d", placement.MaxWeight)) {
			t.Errorf("reweight n2=%d: %v; want INVALID_ARGUMENT naming the weight and 1..%d", w, err, placement.MaxWeight)
		}
	}

	// A snapshot name that is no plain name: INVALID_ARGUMENT before any
	// node is asked (not a failure reported by each).
	if _, err := admin.DeleteSnapshot(ctx, &adminv1.DeleteSnapshotRequest{Name: "../x"}); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "snapshot name") {
		t.Errorf("delete of snapshot ../x: %v; want INVALID_ARGUMENT naming the name", err)
	}

	// A keyspace that does not exist: NOT_FOUND from AlterKeyspace as
	// from Endpoints (once the metadata log answers at all).
	missing := &adminv1.Keyspace{Name: "nosuch", Replication: map[string]uint32{"dc1": 1}}
	var err error
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		_, err = admin.AlterKeyspace(ctx, &adminv1.AlterKeyspaceRequest{Keyspace: missing})
		if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
			break
		}
	}
	if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), `"nosuch" does not exist`) {
		t.Errorf("alter of a missing keyspace: %v; want NOT_FOUND", err)
	}
	if _, err := admin.Endpoints(ctx, &adminv1.EndpointsRequest{Keyspace: "nosuch", Key: []byte("k")}); status.Code(err) != codes.NotFound {
		t.Errorf("endpoints of a missing keyspace: %v; want NOT_FOUND", err)
	}
	// A keyspace that exists still alters.
	if _, err := admin.AlterKeyspace(ctx, &adminv1.AlterKeyspaceRequest{Keyspace: &adminv1.Keyspace{
		Name: "orders", Replication: map[string]uint32{"dc1": 1}, MaxSiblings: 8}}); err != nil {
		t.Errorf("alter orders: %v", err)
	}

	// orders has one replica per partition: n1 lacks some.
	orders, ok := n1.Topology().Keyspace("orders")
	if !ok {
		t.Fatal("n1 lacks keyspace orders")
	}
	notHeld, held := -1, -1
	var holder string
	for p := range 16 {
		r := orders.Table.Replicas(p)[0].Node
		if r == n1.ID() {
			held = p
		} else if notHeld < 0 {
			notHeld, holder = p, r
		}
	}
	if notHeld < 0 || held < 0 {
		t.Fatalf("n1 holds partitions %d, not %d of orders: want one of each", held, notHeld)
	}
	repairRun := func(ks string, p int) (*adminv1.RepairProgress, error) {
		stream, err := admin.RepairRun(ctx, &adminv1.RepairRunRequest{Keyspace: ks, Partition: int32(p)})
		if err != nil {
			return nil, err
		}
		for {
			pr, err := stream.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = errors.New("the stream ended without a last progress")
				}
				return nil, err
			}
			if pr.GetDone() {
				return pr, nil
			}
		}
	}
	_, err = repairRun("orders", notHeld)
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), holder) || !strings.Contains(err.Error(), "--addr") {
		t.Errorf("repair of orders partition %d, held by %s only, on n1: %v; want FAILED_PRECONDITION naming %s and --addr", notHeld, holder, err, holder)
	}
	// Partitions n1 holds repair as before: its own of orders, and the
	// one it lacks in orders with every keyspace (default has it).
	for _, tc := range []struct {
		ks string
		p  int
	}{{"orders", held}, {"", notHeld}} {
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			pr, err := repairRun(tc.ks, tc.p)
			if err == nil {
				if pr.GetPartitionsTotal() == 0 {
					t.Errorf("repair of %q partition %d: %v, want at least one partition", tc.ks, tc.p, pr)
				}
				break
			}
			if status.Code(err) == codes.FailedPrecondition || time.Now().After(deadline) {
				t.Errorf("repair of %q partition %d on n1: %v", tc.ks, tc.p, err)
				break
			}
		}
	}
}
