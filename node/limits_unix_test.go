//go:build unix

package node_test

import (
	"syscall"
	"testing"
)

// idleFloodSize is 10,000 idle connections, as many as the process may
// open (each takes a descriptor on both ends), raising the soft limit to
// the hard one first.
func idleFloodSize(t *testing.T) int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	n := 10_000
	if room := int(lim.Cur)/2 - 500; room < n {
		t.Logf("descriptor limit %d: flooding with %d idle connections instead of 10,000", lim.Cur, room)
		n = max(room, 300)
	}
	return n
}
