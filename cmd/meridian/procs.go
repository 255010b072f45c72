package main

// schedulerProcs is the GOMAXPROCS a meridian process runs with: twice what
// Go would choose (the CPUs it may use), unless GOMAXPROCS is set in the
// environment, which wins as usual.
//
// A node's write-ahead-log fsyncs (and its socket reads and writes) are
// system calls during which the goroutine keeps its P, the scheduler's
// right to run Go code, until the runtime's monitor notices and hands the P
// to another thread, which takes from 20 µs to 10 ms. With as many Ps as
// CPUs, a CPU sat idle while a goroutine waited on the disk and runnable
// goroutines queued: on the 2-core reference machine an execution trace of
// workload A showed about 1.1 fsyncs in progress and 13 runnable goroutines
// on average while the process used 1.3 of its 2 cores. Twice the Ps
// (the OS still runs at most one thread per CPU) took workload A from
// about 4,100 to 5,900 ops/s (docs/PERFORMANCE.md).
func schedulerProcs(getenv func(string) string, current int) int {
	if getenv("GOMAXPROCS") != "" {
		return current
	}
	return 2 * current
}
