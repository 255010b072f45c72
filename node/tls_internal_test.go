package node

import (
	"context"
	"strings"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meridiankv/meridian/transport"
)

// TestPeerDialChecksTheNode: a node dialling a peer requires the
// certificate of the node it means to reach, not any member's: an address
// that another node answers (a stale or spoofed gossip address) gets no
// traffic meant for the first.
func TestPeerDialChecksTheNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := StartLocal(ctx, LocalSpec{Dir: t.TempDir(), NodesPerDC: 2, Engine: "memory", GossipProfile: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	n1, n2 := l.Node("n1"), l.Node("n2")
	// Every node resolves to n2's peer listener.
	g := transport.NewGRPC(func(string) (string, bool) { return n2.PeerAddr(), true }, n1.sec.peerDial())
	g.DialPerNode(n1.sec.peerDialTo)
	defer g.Close()
	check := func(node string) error {
		conn, err := g.Conn(node)
		if err != nil {
			return err
		}
		_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	if err := check("n2"); err != nil {
		t.Fatalf("n2 at its own address: %v", err)
	}
	if err := check("n3"); err == nil || !strings.Contains(err.Error(), "presented the certificate of") {
		t.Fatalf("n2's address dialled as n3: %v, want the handshake refused", err)
	}
}
