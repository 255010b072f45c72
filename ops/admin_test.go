package ops_test

import (
	"context"
	"math"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/ops"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestAdmin(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, err := node.StartLocal(ctx, node.LocalSpec{DCs: 2, NodesPerDC: 3, RacksPerDC: 2, Engine: "memory", GossipProfile: "test", Insecure: true,
		Options: node.Options{Register: ops.Register}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	conn, err := grpc.NewClient(l.Nodes()[0].AdminAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	admin := adminv1.NewAdminClient(conn)

	// Every node alive in the status, once gossip has settled (on a
	// loaded machine a node can be suspected for a moment after start).
	var st *adminv1.StatusResponse
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		st, err = admin.Status(ctx, &adminv1.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var notAlive []string
		for _, n := range st.Nodes {
			if n.State != "alive" {
				notAlive = append(notAlive, n.Id+" is "+n.State)
			}
		}
		if len(st.Nodes) == 6 && len(notAlive) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status lists %d nodes (want 6); not alive: %v", len(st.Nodes), notAlive)
		}
	}

	ring, err := admin.Ring(ctx, &adminv1.RingRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range ring.Nodes {
		if math.Abs(n.OwnedShare-n.WeightShare) > 0.02 {
			t.Errorf("%s owns %.3f of its DC, weight share %.3f", n.Node.Id, n.OwnedShare, n.WeightShare)
		}
		// default keyspace: RF 3 in a 3-node DC, every node holds everything.
		if len(n.Keyspaces) != 1 || n.Keyspaces[0].Keyspace != "default" || n.Keyspaces[0].Share != 1 {
			t.Errorf("%s keyspace shares = %v", n.Node.Id, n.Keyspaces)
		}
	}

	created, err := admin.CreateKeyspace(ctx, &adminv1.CreateKeyspaceRequest{Keyspace: &adminv1.Keyspace{
		Name: "orders", Replication: map[string]uint32{"dc1": 2, "dc2": 1}}})
	if err != nil {
		t.Fatal(err)
	}
	if created.Keyspace.N != 3 {
		t.Fatalf("create = %v", created)
	}
	// Every node serves it once it applied the metadata entry.
	deadline := time.Now().Add(30 * time.Second)
	for _, n := range l.Nodes() {
		for {
			ks, ok := n.Topology().Keyspace("orders")
			if ok && ks.Table.N() == 3 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s lacks keyspace orders", n.ID())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// Creating it again identically is a no-op; differently is refused.
	if _, err := admin.CreateKeyspace(ctx, &adminv1.CreateKeyspaceRequest{Keyspace: &adminv1.Keyspace{
		Name: "orders", Replication: map[string]uint32{"dc1": 2, "dc2": 1}}}); err != nil {
		t.Fatalf("re-create identical: %v", err)
	}
	_, err = admin.CreateKeyspace(ctx, &adminv1.CreateKeyspaceRequest{Keyspace: &adminv1.Keyspace{
		Name: "orders", Replication: map[string]uint32{"dc1": 3}}})
	if status.Code(err) != codes.AlreadyExists {
		t.Fatalf("re-create different = %v, want ALREADY_EXISTS", err)
	}
	_, err = admin.CreateKeyspace(ctx, &adminv1.CreateKeyspaceRequest{Keyspace: &adminv1.Keyspace{
		Name: "bad", Replication: map[string]uint32{"dc9": 1}}})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("unknown DC = %v, want INVALID_ARGUMENT", err)
	}

	ep, err := admin.Endpoints(ctx, &adminv1.EndpointsRequest{Keyspace: "orders", Key: []byte("order-1")})
	if err != nil {
		t.Fatal(err)
	}
	if len(ep.Replicas) != 3 {
		t.Fatalf("endpoints = %v", ep)
	}
	dcs := map[string]int{}
	racks := map[string]bool{}
	for _, r := range ep.Replicas {
		dcs[r.Dc]++
		if r.Dc == "dc1" {
			racks[r.Rack] = true
		}
	}
	if dcs["dc1"] != 2 || dcs["dc2"] != 1 || len(racks) != 2 {
		t.Fatalf("replicas %v: want 2 in dc1 on distinct racks and 1 in dc2", ep.Replicas)
	}
	if len(ep.Fallbacks) == 0 || ep.Fallbacks[0].Dc != "dc1" {
		t.Fatalf("fallbacks %v: want same-DC first", ep.Fallbacks)
	}

	// The new keyspace takes writes.
	kconn, err := grpc.NewClient(l.Nodes()[0].Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer kconn.Close()
	kv := kvv1.NewKVClient(kconn)
	put, err := kv.Put(ctx, &kvv1.PutRequest{Keyspace: "orders", Key: []byte("order-1"), Value: []byte("x"),
		Consistency: &kvv1.Consistency{Level: kvv1.Level_LEVEL_ALL}})
	if err != nil {
		t.Fatal(err)
	}
	if put.Effective.N != 3 || len(put.Effective.Replicas) != 3 {
		t.Fatalf("put effective = %v", put.Effective)
	}
}

// TestKeyspaceReplicationAndNAgreeDuringAChange: while a replication
// change moves data, a keyspace's replication and N are the same spec's,
// the one the data moves to, in the alter's answer and in the list: not
// the replication being left beside the target's N (dc1=2, N=3).
func TestKeyspaceReplicationAndNAgreeDuringAChange(t *testing.T) {
	ctx, l := startAdminCluster(t, node.LocalSpec{NodesPerDC: 4, Partitions: 16,
		Keyspaces: []membership.KeyspaceSpec{{Name: "orders", Replication: map[string]int{"dc1": 2}}}})
	n1 := l.Node("n1")
	admin := adminClient(t, n1.AdminAddr())
	// With n4 down, the copies it must receive never complete: the
	// change stays in progress while it is looked at.
	if err := l.Stop("n4"); err != nil {
		t.Fatal(err)
	}
	grow := &adminv1.Keyspace{Name: "orders", Replication: map[string]uint32{"dc1": 3}}
	var altered *adminv1.AlterKeyspaceResponse
	var err error
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		// UNAVAILABLE while the metadata log elects a leader in n4's
		// stead; a retry of an applied alter is a no-op.
		altered, err = admin.AlterKeyspace(ctx, &adminv1.AlterKeyspaceRequest{Keyspace: grow})
		if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	if !altered.GetMovesData() {
		t.Fatalf("alter dc1=2 -> dc1=3: %v; want data to move", altered)
	}
	if meta := n1.MetaState(); meta == nil || meta.Transition == nil {
		t.Fatal("the replication change finished with n4 down: nothing in progress to look at")
	}
	check := func(what string, ks *adminv1.Keyspace) {
		t.Helper()
		if r := ks.GetReplication(); len(r) != 1 || r["dc1"] != 3 || ks.GetN() != 3 {
			t.Errorf("%s while the change moves data: replication %v, N=%d; want dc1=3, N=3 (the spec the data moves to)", what, r, ks.GetN())
		}
	}
	check("the alter's answer", altered.GetKeyspace())
	list, err := admin.ListKeyspaces(ctx, &adminv1.ListKeyspacesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ks := range list.GetKeyspaces() {
		if ks.GetName() == "orders" {
			found = true
			check("the list", ks)
		}
	}
	if !found {
		t.Fatalf("the list lacks orders: %v", list)
	}
}
