package node_test

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/node"
)

// TestRaftListenerBounded: the metadata log's listener, which anyone can
// reach, holds at most max-connections, and drops a connection that sends
// nothing within connection-timeout (no handshake), instead of keeping a
// goroutine and its buffers for each until the node stops. The log still
// commits afterwards.
func TestRaftListenerBounded(t *testing.T) {
	l := startSecureCluster(t, node.LocalSpec{NodesPerDC: 1, Engine: "memory", Configure: func(c *node.Config) {
		c.MaxConnections = 3
		c.ConnectionTimeout = time.Second
	}})
	n := l.Nodes()[0]
	const dialed = 8
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range dialed {
		c, err := net.Dial("tcp", n.RaftAddr())
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	deadline := time.Now().Add(15 * time.Second)
	for i, c := range conns {
		c.SetReadDeadline(deadline)
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("idle connection %d to the metadata log still open after 15 s (connection-timeout 1s)", i)
		}
	}
	st := n.Connections()["raft"]
	if st[1] < dialed-3-1 {
		t.Fatalf("raft listener refused %d of %d idle connections with a cap of 3", st[1], dialed)
	}
	eventually(t, "the timed-out connections to be closed", func() bool { return n.Connections()["raft"][0] == 0 })
	if _, err := n.CreateKeyspace(ctxT(t), membership.KeyspaceSpec{Name: "after", Replication: map[string]int{"dc1": 1}}); err != nil {
		t.Fatalf("the metadata log after the flood: %v", err)
	}
}
