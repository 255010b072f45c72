//go:build !unix

package drill

import "syscall"

// sysProcAttr: nothing special where there are no process groups. The
// nodes of a drill that dies without stopping them keep running: their
// process IDs are in DIR/ID.pid.
func sysProcAttr() *syscall.SysProcAttr { return nil }
