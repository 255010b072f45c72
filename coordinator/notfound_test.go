package coordinator_test

import (
	"strings"
	"testing"

	"github.com/meridiankv/meridian/coordinator"
)

// TestNotFoundDoesNotEchoHugeNames: an unknown keyspace's name is echoed
// in the error (to the caller, logs and spans) only while it could be a
// keyspace's; a caller's 1 MiB name is not sent back twice.
func TestNotFoundDoesNotEchoHugeNames(t *testing.T) {
	msg := (&coordinator.NotFoundError{Keyspace: strings.Repeat("k", 1<<20)}).Error()
	if len(msg) > 512 || !strings.Contains(msg, "1048576 bytes") {
		t.Fatalf("error of %d bytes for a 1 MiB keyspace name: %.200s", len(msg), msg)
	}
	if msg := (&coordinator.NotFoundError{Keyspace: "orders"}).Error(); !strings.Contains(msg, `keyspace "orders" does not exist`) || !strings.Contains(msg, "meridian keyspace create orders") {
		t.Fatalf("error for an unknown keyspace: %s", msg)
	}
}
