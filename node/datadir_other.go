//go:build !linux

package node

// lockHolder cannot tell without /proc/locks; Pebble's own lock still
// refuses a second process.
func lockHolder(string) int { return 0 }
