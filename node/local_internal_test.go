package node

import (
	"context"
	"net"
	"testing"
	"time"
)

// TestListenAgainWaitsForThePort: a node restarted at its address waits
// while another socket holds the port for a moment, then listens.
func TestListenAgainWaitsForThePort(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := held.Addr().String()
	got := make(chan error, 1)
	go func() {
		lis, err := listenAgain(context.Background(), addr)
		if err == nil {
			lis.Close()
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("listened while the port was held: %v", err)
	case <-time.After(300 * time.Millisecond): // still waiting, as it should
	}
	held.Close()
	if err := <-got; err != nil {
		t.Fatalf("once the port was free: %v", err)
	}
}
