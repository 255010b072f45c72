package drill

import (
	"fmt"
	"net"
	"testing"
)

// TestFreePortsBelowTheEphemeralRange: the ports are distinct, bindable
// for TCP and UDP, and outside the range outgoing connections take theirs
// from.
func TestFreePortsBelowTheEphemeralRange(t *testing.T) {
	ports, err := FreePorts(12)
	if err != nil {
		t.Fatal(err)
	}
	low := ephemeralLow()
	seen := map[int]bool{}
	for _, p := range ports {
		if seen[p] {
			t.Fatalf("port %d returned twice: %v", p, ports)
		}
		seen[p] = true
		if low-20000 >= 1000 && (p < 20000 || p >= low) {
			t.Errorf("port %d outside [20000, %d), below the ephemeral range", p, low)
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Fatalf("port %d not free for TCP: %v", p, err)
		}
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Fatalf("port %d not free for UDP: %v", p, err)
		}
		l.Close()
		u.Close()
	}
}
