//go:build !unix

package node_test

import "testing"

// idleFloodSize is 10,000 idle connections; where descriptor limits are not
// read (not a unix), a smaller flood that any limit allows.
func idleFloodSize(t *testing.T) int {
	t.Log("descriptor limit not read on this system: flooding with 1,000 idle connections")
	return 1_000
}
