//go:build unix && !linux

package drill

import "syscall"

// sysProcAttr puts a node in its own process group (a Ctrl-C in the
// terminal reaches the drill, which stops the nodes itself). Outside
// Linux nothing kills the nodes of a drill that dies without stopping
// them: their process IDs are in DIR/ID.pid.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
