package node

import (
	"context"
	"regexp"
	"sort"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meridiankv/meridian/telemetry"
)

// Scheduled snapshots: with snapshot-interval set, a node takes a snapshot
// named auto-<boundary> at every multiple of the interval (of UTC time, so
// every node's snapshot of one boundary has the same name, whatever its
// clock's small skew) and keeps the newest snapshot-keep of them; snapshots
// named otherwise (taken by hand) are never deleted by the schedule. A
// boundary passed while the node was down is not made up; one whose
// snapshot exists (a restart within the interval) is skipped; so is one
// before the node's metadata log agreed (starting), and one while the node
// refuses writes for lack of disk space (a snapshot pins the tables
// compactions would free).

// autoSnapshotPrefix marks the snapshots the schedule takes and prunes.
const autoSnapshotPrefix = "auto-"

// DefaultSnapshotKeep is how many scheduled snapshots a node keeps.
const DefaultSnapshotKeep = 7

// DefaultSnapshotReads is how many snapshot downloads a node serves at
// once.
const DefaultSnapshotReads = 2

// MinSnapshotInterval is the shortest snapshot-interval accepted.
const MinSnapshotInterval = time.Second

// autoSnapshotRE matches exactly the names autoSnapshotName makes: only
// those are the schedule's to prune.
var autoSnapshotRE = regexp.MustCompile(`^auto-\d{8}T\d{6}Z$`)

func isAutoSnapshotName(name string) bool { return autoSnapshotRE.MatchString(name) }

// autoSnapshotName is the name of the scheduled snapshot of boundary b.
func autoSnapshotName(b time.Time) string { return autoSnapshotPrefix + SnapshotName(b) }

// snapshotBoundary is the last multiple of every (of UTC time) at or
// before t.
func snapshotBoundary(t time.Time, every time.Duration) time.Time {
	return t.UTC().Truncate(every)
}

// autoSnapshotsToPrune lists the scheduled snapshots beyond the newest
// keep, oldest first; names are times, so their order is the snapshots'.
func autoSnapshotsToPrune(names []string, keep int) []string {
	var auto []string
	for _, n := range names {
		if isAutoSnapshotName(n) {
			auto = append(auto, n)
		}
	}
	sort.Strings(auto)
	if len(auto) <= keep {
		return nil
	}
	return auto[:len(auto)-keep]
}

// snapshotCounts counts what the snapshot schedule did, and the snapshot reads
// served, for the metrics.
type snapshotCounts struct {
	taken, failed, skipped, pruned atomic.Uint64
	lastOK                         atomic.Int64 // Unix seconds of the last snapshot taken
	reads                          atomic.Int64 // snapshot reads running
	readsRefused, readBytes        atomic.Uint64
}

func (s *snapshotCounts) stats() telemetry.SnapshotStats {
	return telemetry.SnapshotStats{Taken: s.taken.Load(), Failed: s.failed.Load(), Skipped: s.skipped.Load(),
		Pruned: s.pruned.Load(), LastTaken: time.Unix(s.lastOK.Load(), 0),
		Reads: s.reads.Load(), ReadsRefused: s.readsRefused.Load(), ReadBytes: s.readBytes.Load()}
}

// runSnapshots takes a snapshot at every boundary until ctx ends.
func (n *Node) runSnapshots(ctx context.Context, every time.Duration, keep int) {
	for {
		next := snapshotBoundary(n.now(), every).Add(every)
		t := time.NewTimer(next.Sub(n.now()))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		n.scheduledSnapshot(snapshotBoundary(n.now(), every), keep)
	}
}

// scheduledSnapshot takes boundary b's snapshot, then prunes.
func (n *Node) scheduledSnapshot(b time.Time, keep int) {
	name := autoSnapshotName(b)
	if !n.Topology().Agreed() {
		// Starting, before the metadata log agreed: what it holds is
		// not yet known to belong to any epoch.
		n.sched.skipped.Add(1)
		n.log.Info("scheduled snapshot skipped: the cluster metadata is not agreed yet", "name", name)
		return
	}
	if n.DiskLow() {
		n.sched.skipped.Add(1)
		n.log.Warn("scheduled snapshot skipped: low on disk (a snapshot would keep tables that compactions free)", "name", name)
	} else {
		switch _, err := n.snapshot(name); {
		case err == nil:
			n.sched.taken.Add(1)
			n.sched.lastOK.Store(n.now().Unix())
		case status.Code(err) == codes.AlreadyExists:
			n.sched.skipped.Add(1) // taken before a restart within the interval
		default:
			n.sched.failed.Add(1)
			n.log.Error("scheduled snapshot failed", "name", name, "err", err)
		}
	}
	list, err := n.Snapshots()
	if err != nil {
		n.log.Error("scheduled snapshots: list", "err", err)
		return
	}
	names := make([]string, 0, len(list))
	for _, s := range list {
		names = append(names, s.Name)
	}
	for _, old := range autoSnapshotsToPrune(names, keep) {
		if err := n.DeleteSnapshot(old); err != nil {
			n.log.Error("scheduled snapshots: delete an old one", "name", old, "err", err)
			continue
		}
		n.sched.pruned.Add(1)
	}
}
