package pebble

import (
	"testing"
	"time"
)

// TestMinSyncIntervalOnlyWithWritersToShare: after two fsyncs in a row
// that each served one synced commit (or none) since the one before, the
// next sync starts at once; after one that served more, it waits the
// interval.
func TestMinSyncIntervalOnlyWithWritersToShare(t *testing.T) {
	const d = 2 * time.Millisecond
	e := &Engine{}
	for i, step := range []struct {
		commits uint64 // synced commits since the previous fsync
		want    time.Duration
	}{
		{0, d}, // one small fsync: maybe a lull in a loaded WAL
		{1, 0}, // the second in a row: a lone writer, nobody to wait for
		{1, 0},
		{2, d}, // two writers: the next sync may serve both
		{16, d},
		{1, d}, // one small fsync under load
		{3, d},
		{1, d},
		{0, 0}, // load gone
	} {
		e.syncedCommits.Add(step.commits)
		if got := e.minSyncInterval(d); got != step.want {
			t.Errorf("step %d (%d commits since the last fsync): interval %v, want %v", i, step.commits, got, step.want)
		}
	}
}
