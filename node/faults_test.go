package node_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/ops"
)

// TestFaultDCPartitionExpires: a both-ways partition between dc1 and dc2,
// injected through one node's admin API, is applied by all six nodes; dc1
// keeps LOCAL_QUORUM writes, refuses EACH_QUORUM ones and gossip in dc1
// sees dc2 down. At its TTL every node drops it by itself — no further
// call — and EACH_QUORUM works again.
func TestFaultDCPartitionExpires(t *testing.T) {
	l := startCluster(t, node.LocalSpec{DCs: 2, NodesPerDC: 3, Engine: "memory", Options: node.Options{Register: ops.Register}})
	var dc1, dc2 []*node.Node
	for _, n := range l.Nodes() {
		if n.DC() == "dc1" {
			dc1 = append(dc1, n)
		} else {
			dc2 = append(dc2, n)
		}
	}
	admin := adminv1.NewAdminClient(dialConn(t, dc1[0].AdminAddr()))
	ctx := ctxT(t)

	// Refusals say what is wrong.
	for _, tc := range []struct {
		f    *adminv1.Fault
		code codes.Code
		want string
	}{
		{&adminv1.Fault{Kind: "flood", TtlSeconds: 60}, codes.InvalidArgument, `kind "flood"`},
		{&adminv1.Fault{Kind: "partition"}, codes.InvalidArgument, "TTL is missing"},
		{&adminv1.Fault{Kind: "partition", TtlSeconds: 25 * 3600}, codes.InvalidArgument, "over the maximum"},
		{&adminv1.Fault{Kind: "drop", DropPercent: 101, TtlSeconds: 60}, codes.InvalidArgument, "outside 0–100"},
		{&adminv1.Fault{Kind: "delay", DelayMs: 61_000, TtlSeconds: 60}, codes.InvalidArgument, "delay 1m1s is outside"},
		{&adminv1.Fault{Kind: "partition", ToNodes: []string{"n9"}, TtlSeconds: 60}, codes.InvalidArgument, `to_nodes names "n9"`},
		{&adminv1.Fault{Kind: "partition", FromDcs: []string{"dc9"}, TtlSeconds: 60}, codes.InvalidArgument, `from_dcs names "dc9"`},
		{&adminv1.Fault{Kind: "slow-disk", DelayMs: 10, TtlSeconds: 60}, codes.FailedPrecondition, "memory engine"},
	} {
		_, err := admin.InjectFault(ctx, &adminv1.InjectFaultRequest{Fault: tc.f})
		if st := status.Convert(err); st.Code() != tc.code || !strings.Contains(st.Message(), tc.want) {
			t.Errorf("inject %v = %v; want %v containing %q", tc.f, err, tc.code, tc.want)
		}
	}

	const ttl = 15 * time.Second
	inj, err := admin.InjectFault(ctx, &adminv1.InjectFaultRequest{Fault: &adminv1.Fault{
		Kind: "partition", FromDcs: []string{"dc1"}, ToDcs: []string{"dc2"}, BothWays: true, TtlSeconds: ttl.Seconds()}})
	if err != nil {
		t.Fatal(err)
	}
	id := inj.Fault.Id
	if id == "" || len(inj.Applied) != 6 || len(inj.Unreachable) != 0 {
		t.Fatalf("inject = %v; want an ID, applied by all 6 nodes", inj)
	}
	list, err := admin.ListFaults(ctx, &adminv1.ListFaultsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, nf := range list.Nodes {
		if nf.Error != "" || len(nf.Faults) != 1 || nf.Faults[0].Id != id || nf.Faults[0].ExpiresInSeconds <= 0 {
			t.Fatalf("list on %s = %v; want fault %s", nf.Node, nf, id)
		}
	}

	kv := dial(t, dc1[0].Addr())
	if _, err := kv.Put(ctx, &kvv1.PutRequest{Key: []byte("a"), Value: []byte("v"), Consistency: lvl(kvv1.Level_LEVEL_LOCAL_QUORUM)}); err != nil {
		t.Fatalf("LOCAL_QUORUM write in dc1 during the partition: %v", err)
	}
	_, err = kv.Put(ctx, &kvv1.PutRequest{Key: []byte("b"), Value: []byte("v"), Consistency: lvl(kvv1.Level_LEVEL_EACH_QUORUM)})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("EACH_QUORUM write during the partition = %v; want UNAVAILABLE", err)
	}
	eventually(t, "gossip in dc1 to see dc2 down", func() bool {
		for _, n := range dc1 {
			for _, o := range dc2 {
				if n.Gossip().Alive(o.ID()) {
					return false
				}
			}
		}
		return true
	})
	// The partition must not cut dc1 from itself. Under load gossip may
	// suspect a node for a moment, so poll, while the fault still holds
	// (a cut would last until the fault expires).
	for alive := false; !alive; {
		alive = true
		for _, n := range dc1 {
			for _, o := range dc1 {
				alive = alive && n.Gossip().Alive(o.ID())
			}
		}
		if !alive {
			if len(dc1[0].ListFaults()) == 0 {
				t.Fatal("the partition cut dc1 from itself: its nodes did not all see each other alive while it held")
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	// No call from here on removes the fault: each node's own clock does.
	eventually(t, "every node to drop the fault at its TTL", func() bool {
		for _, n := range l.Nodes() {
			if len(n.ListFaults()) > 0 || len(n.Faults().List()) > 0 {
				return false
			}
		}
		return true
	})
	eventually(t, "EACH_QUORUM writes to work again", func() bool {
		// A context per attempt: the test's own may be spent by now on a
		// slow machine (the fault lives 15 s).
		pctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := kv.Put(pctx, &kvv1.PutRequest{Key: []byte("b"), Value: []byte("v"), Consistency: lvl(kvv1.Level_LEVEL_EACH_QUORUM)})
		return err == nil
	})
	eventually(t, "gossip to see every node alive again", func() bool {
		for _, n := range l.Nodes() {
			for _, o := range l.Nodes() {
				if !n.Gossip().Alive(o.ID()) {
					return false
				}
			}
		}
		return true
	})
}

// TestFaultSlowDiskAndClear: slow-disk on a Pebble node makes a durable
// write wait at least the injected fsync delay; clearing removes it.
func TestFaultSlowDiskAndClear(t *testing.T) {
	l := startCluster(t, node.LocalSpec{NodesPerDC: 1, Options: node.Options{Register: ops.Register}})
	n := l.Nodes()[0]
	admin := adminv1.NewAdminClient(dialConn(t, n.AdminAddr()))
	kv := dial(t, n.Addr())
	ctx := ctxT(t)
	const delay = 300 * time.Millisecond
	inj, err := admin.InjectFault(ctx, &adminv1.InjectFaultRequest{Fault: &adminv1.Fault{
		Kind: "slow-disk", DelayMs: float64(delay / time.Millisecond), JitterMs: 20, TtlSeconds: 600}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(inj.Applied, []string{n.ID()}) {
		t.Fatalf("applied by %v; want %s", inj.Applied, n.ID())
	}
	start := time.Now()
	if _, err := kv.Put(ctx, &kvv1.PutRequest{Key: []byte("k"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < delay {
		t.Fatalf("durable write took %v with a %v fsync delay", took, delay)
	}
	cl, err := admin.ClearFaults(ctx, &adminv1.ClearFaultsRequest{Id: inj.Fault.Id})
	if err != nil || cl.Cleared != 1 {
		t.Fatalf("clear = %v, %v; want 1 cleared", cl, err)
	}
	list, err := admin.ListFaults(ctx, &adminv1.ListFaultsRequest{})
	if err != nil || len(list.Nodes) != 1 || len(list.Nodes[0].Faults) != 0 {
		t.Fatalf("list after clear = %v, %v; want no fault", list, err)
	}
}

// TestFaultDiskFull: a disk-full fault makes its node refuse writes at
// once (DISK_LOW) while serving reads, through min-free-disk's own path;
// clearing it lets writes in again at once. A memory-engine node has no
// such fault.
func TestFaultDiskFull(t *testing.T) {
	l := startCluster(t, node.LocalSpec{NodesPerDC: 1, Options: node.Options{Register: ops.Register}})
	n := l.Nodes()[0]
	admin := adminv1.NewAdminClient(dialConn(t, n.AdminAddr()))
	kv := dial(t, n.Addr())
	ctx := ctxT(t)
	if _, err := kv.Put(ctx, &kvv1.PutRequest{Key: []byte("k"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.InjectFault(ctx, &adminv1.InjectFaultRequest{Fault: &adminv1.Fault{Kind: "disk-full", ToNodes: []string{n.ID()}, TtlSeconds: 600}}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("disk-full with targets: %v, want INVALID_ARGUMENT", err)
	}
	// A node named twice (a list of one name repeated is only memory,
	// and time scanned on every call) and a node not in the cluster.
	for _, from := range [][]string{{n.ID(), n.ID()}, {"n9"}} {
		if _, err := admin.InjectFault(ctx, &adminv1.InjectFaultRequest{Fault: &adminv1.Fault{Kind: "disk-full", FromNodes: from, TtlSeconds: 600}}); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("disk-full from %v: %v, want INVALID_ARGUMENT", from, err)
		}
	}
	inj, err := admin.InjectFault(ctx, &adminv1.InjectFaultRequest{Fault: &adminv1.Fault{Kind: "disk-full", TtlSeconds: 600}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = kv.Put(ctx, &kvv1.PutRequest{Key: []byte("k2"), Value: []byte("v")})
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "low on disk: 0.0 MiB free") {
		t.Fatalf("put under disk-full: %v, want RESOURCE_EXHAUSTED low on disk", err)
	}
	if got, err := kv.Get(ctx, &kvv1.GetRequest{Key: []byte("k")}); err != nil || len(got.GetSiblings()) != 1 {
		t.Fatalf("get under disk-full: %v %v", got, err)
	}
	// Nor is a snapshot taken by hand: it would keep the tables that
	// compactions free.
	if _, err := n.Snapshot("by-hand"); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "low on disk") {
		t.Fatalf("snapshot under disk-full: %v, want FAILED_PRECONDITION low on disk", err)
	}
	if _, err := admin.ClearFaults(ctx, &adminv1.ClearFaultsRequest{Id: inj.Fault.Id}); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, &kvv1.PutRequest{Key: []byte("k2"), Value: []byte("v")}); err != nil {
		t.Fatalf("put once disk-full is cleared: %v", err)
	}
	if _, err := n.Snapshot("by-hand"); err != nil {
		t.Fatalf("snapshot once disk-full is cleared: %v", err)
	}
	if _, err := n.Snapshot("auto-by-hand"); status.Code(err) != codes.InvalidArgument {
		t.Fatalf(`snapshot named "auto-by-hand": %v, want INVALID_ARGUMENT (the schedule's names)`, err)
	}

	mem := startCluster(t, node.LocalSpec{NodesPerDC: 1, Engine: "memory", Options: node.Options{Register: ops.Register}})
	madmin := adminv1.NewAdminClient(dialConn(t, mem.Nodes()[0].AdminAddr()))
	if _, err := madmin.InjectFault(ctx, &adminv1.InjectFaultRequest{Fault: &adminv1.Fault{Kind: "disk-full", TtlSeconds: 60}}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("disk-full on a memory node: %v, want FAILED_PRECONDITION", err)
	}
}

// TestFaultNeedsAdminRole: the fault RPCs, like the whole admin API, are
// refused to a principal without the admin role.
func TestFaultNeedsAdminRole(t *testing.T) {
	auth := node.AuthConfig{Principals: []node.Principal{
		{Name: "app", TokenSHA256: node.HashToken("app-token"), Keyspaces: map[string]string{"*": "read,write"}},
		{Name: "ops", TokenSHA256: node.HashToken("ops-token"), Admin: true},
	}}
	l := startCluster(t, node.LocalSpec{NodesPerDC: 1, Engine: "memory", Auth: auth, Options: node.Options{Register: ops.Register}})
	admin := adminv1.NewAdminClient(dialConn(t, l.Nodes()[0].AdminAddr()))
	as := func(token string) context.Context {
		return metadata.AppendToOutgoingContext(ctxT(t), "authorization", "Bearer "+token)
	}
	f := &adminv1.Fault{Kind: "delay", DelayMs: 5, TtlSeconds: 60}
	if _, err := admin.InjectFault(as("app-token"), &adminv1.InjectFaultRequest{Fault: f}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("inject without the admin role = %v; want PERMISSION_DENIED", err)
	}
	if _, err := admin.ListFaults(as("app-token"), &adminv1.ListFaultsRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("list without the admin role = %v; want PERMISSION_DENIED", err)
	}
	if _, err := admin.ClearFaults(as("app-token"), &adminv1.ClearFaultsRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("clear without the admin role = %v; want PERMISSION_DENIED", err)
	}
	if _, err := admin.InjectFault(as("ops-token"), &adminv1.InjectFaultRequest{Fault: f}); err != nil {
		t.Fatalf("inject with the admin role: %v", err)
	}
	if cl, err := admin.ClearFaults(as("ops-token"), &adminv1.ClearFaultsRequest{}); err != nil || cl.Cleared != 1 {
		t.Fatalf("clear with the admin role = %v, %v; want 1 cleared", cl, err)
	}
}

// TestFaultCutsTheMetadataLog: a partition cuts the metadata log's Raft
// traffic too, so a leader cut off from the other members loses its
// followers and they elect another; after the heal all three agree on one
// leader again.
func TestFaultCutsTheMetadataLog(t *testing.T) {
	l := startCluster(t, node.LocalSpec{NodesPerDC: 3, Engine: "memory"})
	nodes := l.Nodes()
	leader := metaLeader(t, nodes)
	for _, n := range nodes {
		if n == leader {
			continue
		}
		leader.Faults().Cut(n.ID())
		n.Faults().Cut(leader.ID())
	}
	eventually(t, "the other two to elect another leader", func() bool {
		for _, n := range nodes {
			if n != leader && n.MetaLog().IsLeader() {
				return true
			}
		}
		return false
	})
	for _, n := range nodes {
		n.Faults().Heal()
	}
	eventually(t, "one leader that all three follow after the heal", func() bool {
		id := nodes[0].MetaLog().Leader()
		for _, n := range nodes {
			if l := n.MetaLog().Leader(); l == "" || l != id {
				return false
			}
		}
		return true
	})
}
