package node_test

import (
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/ops"
	"github.com/meridiankv/meridian/pki"
)

// TestJoinWithTLS: on a TLS cluster a new node joins through a member
// (as the node its certificate names) and receives the metadata log over
// mutual TLS, though it was not a member when the log first reached it.
func TestJoinWithTLS(t *testing.T) {
	l := startSecureCluster(t, node.LocalSpec{NodesPerDC: 3, Partitions: 64})
	first := l.Nodes()[0]
	n4, err := l.Join(ctxT(t), "n4", "dc1", "r1")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "n4 admitted and holding the agreed metadata", func() bool {
		m, ok := first.MetaState().Member("n4")
		return ok && m.State == membership.StateJoining && n4.Topology().Agreed() && n4.Topology().ClusterID == first.Topology().ClusterID
	})
	// cluster.json lists the joined node at the port it serves on (its
	// start picked it), not at the ":0" it was configured with.
	file := filepath.Join(t.TempDir(), "cluster.json")
	if err := l.WriteClusterFile(file); err != nil {
		t.Fatal(err)
	}
	cf, err := node.ReadClusterFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range cf.Nodes {
		if e.ID == "n4" && e.GRPCAddr != n4.Addr() {
			t.Fatalf("cluster.json lists n4 at %s, but it serves on %s", e.GRPCAddr, n4.Addr())
		}
	}
}

// TestJoinRefusesBadPlacement: a joining node's DC, rack, weight and
// addresses are checked before anything is proposed: INVALID_ARGUMENT, and
// the metadata log holds no member for it.
func TestJoinRefusesBadPlacement(t *testing.T) {
	l := startCluster(t, node.LocalSpec{NodesPerDC: 1, Engine: "memory"})
	n := l.Nodes()[0]
	ctx := metadata.AppendToOutgoingContext(ctxT(t), "meridian-cluster", "meridian", "meridian-epoch", "1")
	meta := internalv1.NewMetaClient(dialConn(t, n.PeerAddr()))
	good := func() *internalv1.JoinRequest {
		return &internalv1.JoinRequest{Id: "n9", Dc: "dc1", Rack: "r1", Weight: 1,
			GrpcAddr: "127.0.0.1:1", PeerAddr: "127.0.0.1:2", AdminAddr: "127.0.0.1:3", RaftAddr: "127.0.0.1:4"}
	}
	for name, change := range map[string]func(r *internalv1.JoinRequest){
		"no datacenter":       func(r *internalv1.JoinRequest) { r.Dc = "" },
		"a datacenter of 1MB": func(r *internalv1.JoinRequest) { r.Dc = strings.Repeat("d", 1<<20) },
		"a rack with a comma": func(r *internalv1.JoinRequest) { r.Rack = "r1,r2" },
		"weight 0":            func(r *internalv1.JoinRequest) { r.Weight = 0 },
		"an address of 4KB":   func(r *internalv1.JoinRequest) { r.PeerAddr = strings.Repeat("h", 4096) + ":1" },
	} {
		r := good()
		change(r)
		if _, err := meta.Join(ctx, r); status.Code(err) != codes.InvalidArgument {
			t.Errorf("join with %s: %v, want INVALID_ARGUMENT", name, err)
		}
	}
	// The same records proposed by a member (a forwarded join or address
	// change) are refused the same way.
	bad := good()
	for name, c := range map[string]membership.Command{
		"a join with a datacenter of 1MB": {Kind: membership.CmdJoin, Member: &membership.MemberRecord{ID: "n9", DC: strings.Repeat("d", 1<<20),
			Rack: "r1", Weight: 1, GRPCAddr: bad.GrpcAddr, PeerAddr: bad.PeerAddr, AdminAddr: bad.AdminAddr, RaftAddr: bad.RaftAddr}},
		"addresses of 4KB": {Kind: membership.CmdAddrs, Member: &membership.MemberRecord{ID: n.ID(), GRPCAddr: strings.Repeat("h", 4096) + ":1",
			PeerAddr: bad.PeerAddr, AdminAddr: bad.AdminAddr, RaftAddr: bad.RaftAddr}},
	} {
		if _, err := meta.Propose(ctx, &internalv1.ProposeRequest{Command: c.Encode()}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("proposing %s: %v, want INVALID_ARGUMENT", name, err)
		}
	}
	if _, ok := n.MetaState().Member("n9"); ok {
		t.Fatal("a refused join left a member record")
	}
	if m, _ := n.MetaState().Member(n.ID()); len(m.GRPCAddr) > 100 {
		t.Fatalf("a refused address change was recorded: %.40q…", m.GRPCAddr)
	}
	// And a good join is admitted.
	ok := good()
	ok.Id = "n8"
	if _, err := meta.Join(ctx, ok); err != nil {
		t.Fatalf("a good join: %v", err)
	}
	if _, admitted := n.MetaState().Member("n8"); !admitted {
		t.Fatal("a good join left no member record")
	}
}

// TestOwnCommandsOnlyFromTheirNode: a node's addresses and the transfers
// it received are proposed by that node only. Another member forwarding
// such a command to the leader is refused with PERMISSION_DENIED and the
// metadata is unchanged; the node itself is heard.
func TestOwnCommandsOnlyFromTheirNode(t *testing.T) {
	l := startSecureCluster(t, node.LocalSpec{NodesPerDC: 3, Partitions: 64})
	nodes := l.Nodes()
	leader := metaLeader(t, nodes)
	var others []*node.Node
	for _, n := range nodes {
		if n != leader {
			others = append(others, n)
		}
	}
	from, victim := others[0], others[1]
	ctx := metadata.AppendToOutgoingContext(ctxT(t), "meridian-cluster", "meridian", "meridian-epoch", "1")
	meta := internalv1.NewMetaClient(dialAsNode(t, l, from.ID(), leader.PeerAddr()))
	propose := func(c membership.Command) error {
		_, err := meta.Propose(ctx, &internalv1.ProposeRequest{Command: c.Encode()})
		return err
	}

	rec, _ := leader.MetaState().Member(victim.ID())
	moved := rec
	moved.GRPCAddr, moved.PeerAddr, moved.AdminAddr, moved.RaftAddr = "127.0.0.1:1", victim.PeerAddr(), victim.AdminAddr(), victim.RaftAddr()
	if err := propose(membership.Command{Kind: membership.CmdAddrs, Member: &moved}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("%s recording %s's addresses: %v, want PERMISSION_DENIED", from.ID(), victim.ID(), err)
	}
	if got, _ := leader.MetaState().Member(victim.ID()); got.GRPCAddr != rec.GRPCAddr {
		t.Fatalf("%s's client address is %s after a refused proposal, was %s", victim.ID(), got.GRPCAddr, rec.GRPCAddr)
	}
	if err := propose(membership.Command{Kind: membership.CmdAddrs}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("an address change naming no member: %v, want INVALID_ARGUMENT", err)
	}
	done := membership.Command{Kind: membership.CmdTransferDone, Generation: 1, Node: victim.ID(), Parts: []int{0}}
	if err := propose(done); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("%s reporting %s's transfers done: %v, want PERMISSION_DENIED", from.ID(), victim.ID(), err)
	}

	// The node itself: its own addresses (unchanged) are recorded, and its
	// own transfer report reaches the state, which has no transition to
	// apply it to.
	own, _ := leader.MetaState().Member(from.ID())
	own.GRPCAddr, own.PeerAddr, own.AdminAddr, own.RaftAddr = from.Addr(), from.PeerAddr(), from.AdminAddr(), from.RaftAddr()
	if err := propose(membership.Command{Kind: membership.CmdAddrs, Member: &own}); err != nil {
		t.Fatalf("%s recording its own addresses: %v", from.ID(), err)
	}
	done.Node = from.ID()
	if err := propose(done); err == nil || status.Code(err) == codes.PermissionDenied {
		t.Fatalf("%s reporting its own transfers done with no change under way: %v, want the state's refusal", from.ID(), err)
	}
}

// TestPeerListenerServesNodeToNodeAdminOnly: a member's node certificate
// reaches, on another node's peer listener, only the admin calls nodes
// make of each other (a fan-out's local share, transfers); the rest of
// the admin API (keyspace DDL, status, ...) needs the admin role on the
// admin listener.
func TestPeerListenerServesNodeToNodeAdminOnly(t *testing.T) {
	l := startSecureCluster(t, node.LocalSpec{NodesPerDC: 2, Partitions: 16, Options: node.Options{Register: ops.Register}})
	nodes := l.Nodes()
	target, from := nodes[0], nodes[1]
	admin := adminv1.NewAdminClient(dialAsNode(t, l, from.ID(), target.PeerAddr()))
	ctx := metadata.AppendToOutgoingContext(ctxT(t), "meridian-cluster", "meridian", "meridian-epoch", "1")
	if _, err := admin.DropKeyspace(ctx, &adminv1.DropKeyspaceRequest{Name: "default"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a keyspace drop by a node certificate on the peer listener: %v, want PERMISSION_DENIED", err)
	}
	if _, ok := target.Topology().Keyspaces["default"]; !ok {
		t.Fatal("the keyspace was dropped")
	}
	if _, err := admin.ListFaults(ctx, &adminv1.ListFaultsRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a fan-out (not LocalOnly) by a node certificate on the peer listener: %v, want PERMISSION_DENIED", err)
	}
	if _, err := admin.ListFaults(ctx, &adminv1.ListFaultsRequest{LocalOnly: true}); err != nil {
		t.Fatalf("a fan-out's local share, as nodes ask it: %v", err)
	}
	if _, err := admin.Transfers(ctx, &adminv1.TransfersRequest{}); err != nil {
		t.Fatalf("transfers, as nodes ask them: %v", err)
	}
}

// dialAsNode connects to addr with node id's certificate, as that node's
// own calls to a peer listener do.
func dialAsNode(t *testing.T, l *node.Local, id, addr string) *grpc.ClientConn {
	t.Helper()
	ca, _, _ := l.ClientTLS()
	cert, key := pki.NodeFiles(l.CertDir(), id)
	src, err := pki.NewSource(ca, cert, key, pki.SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return dialWith(t, addr, grpc.WithTransportCredentials(pki.ClientCredentials(src, pki.ClientOptions{})))
}

// TestJoiningNodeForwardsNoClusterCommands: a node still joining (its
// certificate valid, owning nothing) cannot pass a cluster-wide command
// (here a keyspace create; a drop or commit alike) to the leader, which
// refuses it with PERMISSION_DENIED and changes nothing; an active member
// forwarding the same command, as it does for an operator, is heard.
func TestJoiningNodeForwardsNoClusterCommands(t *testing.T) {
	l := startSecureCluster(t, node.LocalSpec{NodesPerDC: 3, Partitions: 64})
	first := l.Nodes()[0]
	if _, err := l.Join(ctxT(t), "n4", "dc1", "r1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "n4 joining", func() bool {
		m, ok := first.MetaState().Member("n4")
		return ok && m.State == membership.StateJoining
	})
	leader := metaLeader(t, l.Nodes()[:3])
	var active *node.Node
	for _, n := range l.Nodes()[:3] {
		if n != leader {
			active = n
		}
	}
	ctx := metadata.AppendToOutgoingContext(ctxT(t), "meridian-cluster", "meridian", "meridian-epoch", "1")
	spec := membership.KeyspaceSpec{Name: "orders", Replication: map[string]int{"dc1": 2}}
	create := membership.Command{Kind: membership.CmdKeyspaceCreate, Keyspace: &spec}
	joining := internalv1.NewMetaClient(dialAsNode(t, l, "n4", leader.PeerAddr()))
	if _, err := joining.Propose(ctx, &internalv1.ProposeRequest{Command: create.Encode()}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a keyspace create forwarded by joining n4: %v, want PERMISSION_DENIED", err)
	}
	if _, ok := leader.MetaState().Keyspaces["orders"]; ok {
		t.Fatal("the keyspace was created by a joining node's proposal")
	}
	member := internalv1.NewMetaClient(dialAsNode(t, l, active.ID(), leader.PeerAddr()))
	if _, err := member.Propose(ctx, &internalv1.ProposeRequest{Command: create.Encode()}); err != nil {
		t.Fatalf("the same create forwarded by active %s: %v", active.ID(), err)
	}
}
