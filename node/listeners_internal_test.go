package node

import (
	"testing"
	"time"
)

// TestPeerConnectionsAreNotRecycled: client and admin connections are
// recycled after max-connection-age; members' connections, which carry
// their long-lived call streams, are not (a recycled one fails every call
// in flight when its grace runs out).
func TestPeerConnectionsAreNotRecycled(t *testing.T) {
	n := &Node{cfg: Config{MaxConnectionAge: 2 * time.Hour, MaxConnectionIdle: 5 * time.Minute}}
	if ka := n.serverKeepalive(true); ka.MaxConnectionAge != 2*time.Hour || ka.MaxConnectionAgeGrace == 0 || ka.MaxConnectionIdle != 5*time.Minute {
		t.Fatalf("client listener: %+v, want recycled after 2h with a grace, idle closed after 5m", ka)
	}
	if ka := n.serverKeepalive(false); ka.MaxConnectionAge != 0 || ka.MaxConnectionIdle != 5*time.Minute {
		t.Fatalf("peer listener: %+v, want never recycled (0: no age), idle closed after 5m", ka)
	}
}
