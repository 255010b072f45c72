package ops_test

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/ops"
)

// TestFaultFanOut: an injection reaches every node and is applied where
// selected; a stopped node is listed as unreachable by inject, list and
// clear; local_only stays on the node asked.
func TestFaultFanOut(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, err := node.StartLocal(ctx, node.LocalSpec{NodesPerDC: 3, Engine: "memory", GossipProfile: "test", Insecure: true,
		Options: node.Options{Register: ops.Register}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	byID := map[string]*node.Node{}
	for _, n := range l.Nodes() {
		byID[n.ID()] = n
	}
	if err := l.Stop("n3"); err != nil {
		t.Fatal(err)
	}
	admin := adminClient(t, byID["n1"].AdminAddr())

	inj, err := admin.InjectFault(ctx, &adminv1.InjectFaultRequest{Fault: &adminv1.Fault{
		Kind: "delay", FromNodes: []string{"n1"}, ToNodes: []string{"n2"}, DelayMs: 40, JitterMs: 10, TtlSeconds: 300}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(inj.Applied, []string{"n1"}) || !slices.Equal(inj.Unreachable, []string{"n3"}) {
		t.Fatalf("inject = %v; want applied by n1 only, n3 unreachable", inj)
	}
	if f := inj.Fault; f.Id == "" || f.DelayMs != 40 || f.JitterMs != 10 || f.ExpiresInSeconds != 300 {
		t.Fatalf("injected fault = %v", f)
	}
	rules := byID["n1"].Faults().List()
	if len(rules) != 1 || rules[0].ID != inj.Fault.Id || rules[0].Delay != 40*time.Millisecond || !slices.Equal(rules[0].Nodes, []string{"n2"}) {
		t.Fatalf("n1's transport rules = %+v", rules)
	}
	if len(byID["n2"].Faults().List()) != 0 {
		t.Fatal("n2 applies a fault it was not selected for (not both ways)")
	}

	// local_only: only the node asked applies it.
	loc, err := adminClient(t, byID["n2"].AdminAddr()).InjectFault(ctx, &adminv1.InjectFaultRequest{LocalOnly: true, Fault: &adminv1.Fault{
		Id: "mine", Kind: "drop", DropPercent: 50, TtlSeconds: 300}})
	if err != nil || !slices.Equal(loc.Applied, []string{"n2"}) {
		t.Fatalf("local inject = %v, %v", loc, err)
	}

	list, err := admin.ListFaults(ctx, &adminv1.ListFaultsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, nf := range list.Nodes {
		var ids []string
		for _, f := range nf.Faults {
			ids = append(ids, f.Id)
		}
		got[nf.Node] = strings.Join(ids, ",")
		if nf.Node == "n3" && nf.Error == "" {
			t.Error("n3 listed without an error")
		}
	}
	if got["n1"] != inj.Fault.Id || got["n2"] != "mine" || got["n3"] != "" || len(got) != 3 {
		t.Fatalf("list = %v", got)
	}

	cl, err := admin.ClearFaults(ctx, &adminv1.ClearFaultsRequest{})
	if err != nil || cl.Cleared != 2 || !slices.Equal(cl.Unreachable, []string{"n3"}) {
		t.Fatalf("clear = %v, %v; want 2 cleared, n3 unreachable", cl, err)
	}
	if len(byID["n1"].Faults().List())+len(byID["n2"].Faults().List()) != 0 {
		t.Fatal("rules left after clear")
	}

	// A fault a node refuses (n2 keeps its data in memory: no slow disk)
	// is removed again; n3, unreachable, may hold it until its TTL, and
	// the error says so rather than claim it removed everywhere.
	_, err = admin.InjectFault(ctx, &adminv1.InjectFaultRequest{Fault: &adminv1.Fault{Kind: "slow-disk", FromNodes: []string{"n2"}, DelayMs: 5, TtlSeconds: 60}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "refused by n2") ||
		!strings.Contains(err.Error(), "may still apply until its TTL (1m0s) on n3") {
		t.Fatalf("a refused fault with n3 down: %v; want FAILED_PRECONDITION naming n3 as maybe still faulted", err)
	}

	// Values that are no durations are refused before any node sees them.
	_, err = admin.InjectFault(ctx, &adminv1.InjectFaultRequest{Fault: &adminv1.Fault{Kind: "delay", DelayMs: math.NaN(), TtlSeconds: 60}})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("NaN delay = %v; want INVALID_ARGUMENT", err)
	}
	_, err = admin.InjectFault(ctx, &adminv1.InjectFaultRequest{Fault: &adminv1.Fault{Kind: "delay", DelayMs: 5, TtlSeconds: math.Inf(1)}})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("infinite TTL = %v; want INVALID_ARGUMENT", err)
	}
	if _, err := admin.InjectFault(ctx, &adminv1.InjectFaultRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("no fault = %v; want INVALID_ARGUMENT", err)
	}
}

// startAdminCluster starts a plaintext in-memory cluster serving the
// admin API, closed when the test ends, and returns it with a context
// bounding the test.
func startAdminCluster(t *testing.T, spec node.LocalSpec) (context.Context, *node.Local) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	spec.Engine, spec.GossipProfile, spec.Insecure = "memory", "test", true
	spec.Options.Register = ops.Register
	l, err := node.StartLocal(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return ctx, l
}

func adminClient(t *testing.T, addr string, opts ...grpc.DialOption) adminv1.AdminClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return adminv1.NewAdminClient(conn)
}
