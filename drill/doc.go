// Package drill runs failover drills against a Meridian cluster: a
// scenario (a datacenter outage, a partition between two datacenters, a
// slow datacenter, a crashed node, a rolling restart) is induced on a
// running cluster while a workload measures what clients see, then healed,
// and the cluster is verified to recover and converge without losing an
// acknowledged write. The restore drill (restore.go) is apart: it
// replaces the cluster by one restored from its snapshots.
//
// A drill has five phases: baseline (the workload alone), induce (the
// fault is injected through the admin API's InjectFault, or a process is
// killed), hold (the fault stays), heal (the fault is cleared, or the node
// restarted) and verify (until every level is healthy again and a full
// Merkle exchange finds no difference on any node, or a timeout).
//
// The package is split like the coordinator's quorum logic: the pure part
// (scenario.go, timeline.go, metrics.go, criteria.go, report.go, html.go)
// turns a timeline of samples into metrics, verdicts and reports with no
// clock, goroutine or I/O of its own, so it tests with tables; the shell
// (run.go, workload.go, cluster.go, local.go) does the RPCs, the pacing and
// the processes.
//
// What is measured, per second: availability per consistency level and per
// client datacenter (LOCAL_QUORUM workload, QUORUM and EACH_QUORUM probes,
// and a set workload of read-modify-writes), p50/p99 latency per
// datacenter, the hint backlog per target node, and repair progress. What
// is derived: the RTO (fault to every level healthy again), the time from
// heal to convergence, and acknowledged writes lost (the set workload's
// acknowledged elements missing from a read at ALL or from a replica).
package drill
