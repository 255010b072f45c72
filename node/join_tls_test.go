package node_test

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/node"
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
	if _, ok := n.MetaState().Member("n9"); ok {
		t.Fatal("a refused join left a member record")
	}
}
