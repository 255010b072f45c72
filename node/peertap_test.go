package node_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/pki"
)

// TestPeerListenerRefusesStrangersBeforeTheBody: a node certificate of
// the cluster's CA that names no member (a removed node, a joiner, another
// cluster's node) is refused as soon as its request's headers arrive, not
// after the node has read its message (up to 256 MiB per call): a request
// whose body never comes is answered PERMISSION_DENIED at once.
func TestPeerListenerRefusesStrangersBeforeTheBody(t *testing.T) {
	l := startSecureCluster(t, node.LocalSpec{NodesPerDC: 1, Engine: "memory"})
	n1 := l.Nodes()[0]
	if err := pki.CreateNode(l.CertDir(), "n9", nil, pki.CertOptions{}); err != nil {
		t.Fatal(err)
	}
	conn := dialAsNode(t, l, "n9", n1.PeerAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "meridian-cluster", "meridian", "meridian-epoch", "1")
	// A unary method, opened as a stream so that its message is never
	// sent: the headers alone.
	stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, internalv1.Replica_Write_FullMethodName)
	if err != nil {
		t.Fatal(err)
	}
	var resp internalv1.WriteResponse
	err = stream.RecvMsg(&resp)
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a stranger's request with no body yet: %v, want PERMISSION_DENIED before the body", err)
	}
}
