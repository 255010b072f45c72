package drill

import "syscall"

// sysProcAttr puts a node in its own process group (a Ctrl-C in the
// terminal reaches the drill, which stops the nodes itself) and has the
// kernel kill it if the drill dies without stopping it, so a killed drill
// leaves no nodes behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
