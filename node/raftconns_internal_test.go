package node

import (
	"context"
	"testing"
	"time"
)

// TestRaftConnectionsOutliveTheHandshakeDeadline: the metadata log's
// connections between members stay open past connection-timeout (its
// deadline covers a connection's first bytes only): through several
// timeouts of quiet, no member accepts a new one (Raft would reconnect
// at once, hiding connections cut under it).
func TestRaftConnectionsOutliveTheHandshakeDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := StartLocal(ctx, LocalSpec{Dir: t.TempDir(), NodesPerDC: 3, Engine: "memory", GossipProfile: "test",
		Configure: func(c *Config) { c.ConnectionTimeout = 300 * time.Millisecond }})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.WaitAgreed(ctx); err != nil {
		t.Fatal(err)
	}
	accepted := func() (n int64) {
		for _, nd := range l.Nodes() {
			n += nd.raftCap.accepted.Load()
		}
		return n
	}
	// Connections settle (heartbeats, the first commits), then stay.
	before := accepted()
	for deadline := time.Now().Add(30 * time.Second); ; {
		time.Sleep(time.Second) // three timeouts
		now := accepted()
		if now == before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("members keep accepting metadata log connections (%d more in the last second): their connections are cut", now-before)
		}
		before = now
	}
	if before == 0 {
		t.Fatal("no metadata log connection was ever accepted: the count sees nothing")
	}
}
