package node_test

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/meridiankv/meridian/node"
)

// TestGossipIslandsMerge: four nodes start as two gossip islands (n2 seeded
// with n1, n4 with n3, and n1 and n3 with an address nobody answers on),
// as nodes starting together can end up. Memberlist only talks to members
// it knows, so without help the islands never meet; each node looks up the
// members its gossip lacks and joins them, until all four see each other.
func TestGossipIslandsMerge(t *testing.T) {
	ctx := ctxT(t)
	ids := []string{"n1", "n2", "n3", "n4"}
	lis := make([]net.Listener, len(ids))
	var initial []string
	for i, id := range ids {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lis[i] = l
		initial = append(initial, fmt.Sprintf("%s=%s", id, l.Addr()))
	}
	// An address nobody answers on: a listener closed at once.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nowhere := dead.Addr().String()
	dead.Close()
	secret := node.GenerateSecret()
	nodes := make([]*node.Node, len(ids))
	for i, id := range ids {
		cfg := node.Config{ID: id, GRPCAddr: lis[i].Addr().String(), GossipAddr: "127.0.0.1:0", DataDir: t.TempDir(),
			InitialCluster: strings.Join(initial, ","), Engine: "memory", GossipProfile: "test",
			ClusterSecrets: []string{secret}, Insecure: true}
		switch id {
		case "n2":
			cfg.GossipSeeds = []string{nodes[0].GossipAddr()}
		case "n4":
			cfg.GossipSeeds = []string{nodes[2].GossipAddr()}
		default:
			cfg.GossipSeeds = []string{nowhere}
		}
		n, err := node.Start(ctx, cfg, node.Options{Listener: lis[i]})
		if err != nil {
			t.Fatal(err)
		}
		nodes[i] = n
		t.Cleanup(func() { n.Close() })
	}
	eventually(t, "every node's gossip to list all four alive", func() bool {
		for _, n := range nodes {
			for _, id := range ids {
				if !n.Gossip().Alive(id) {
					return false
				}
			}
		}
		return true
	})
}
