//go:build !unix

package node

import "errors"

// volumeSpace cannot read free space here: min-free-disk is not enforced
// (the node logs so once).
func volumeSpace(string) (free, total uint64, err error) {
	return 0, 0, errors.New("reading free disk space is not supported on this platform")
}
