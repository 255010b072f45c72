//go:build unix

package node

import "golang.org/x/sys/unix"

// volumeSpace is DiskSpace from statfs(2).
func volumeSpace(dir string) (free, total uint64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	bs := uint64(st.Bsize) //nolint:unconvert // int64 on Linux, uint32 elsewhere
	return uint64(st.Bavail) * bs, uint64(st.Blocks) * bs, nil
}
