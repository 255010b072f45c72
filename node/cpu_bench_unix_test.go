//go:build unix

package node_test

import (
	"syscall"
	"testing"
	"time"
)

// cpuMeter reports the process's CPU time per operation of a benchmark:
// user and system apart, every node and the callers together. On two
// cores, ns/op is about (user+sys)/op ÷ 2 ÷ utilisation: what an operation
// costs in CPU is what bounds these benchmarks.
type cpuMeter struct{ user, sys time.Duration }

func startCPU() cpuMeter {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return cpuMeter{}
	}
	return cpuMeter{time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())}
}

func (m cpuMeter) report(b *testing.B) {
	b.Helper()
	end := startCPU()
	if b.N == 0 {
		return
	}
	b.ReportMetric(float64((end.user-m.user).Microseconds())/float64(b.N), "user-µs/op")
	b.ReportMetric(float64((end.sys-m.sys).Microseconds())/float64(b.N), "sys-µs/op")
}
