package node_test

import (
	"testing"

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
