package pebble_test

import (
	"testing"
	"time"
)

// TestSyncDelaySlowsSyncedCommits: with a sync delay set, a synced commit
// takes at least the delay (no upper bounds: the machine may be busy).
func TestSyncDelaySlowsSyncedCommits(t *testing.T) {
	e := open(t, t.TempDir())
	defer e.Close()
	const delay = 150 * time.Millisecond
	e.SetSyncDelay(delay, 20*time.Millisecond)
	commit := func(sync bool) time.Duration {
		b := e.NewBatch()
		b.Set([]byte("k"), []byte("v"))
		start := time.Now()
		if err := b.Commit(sync); err != nil {
			t.Fatal(err)
		}
		return time.Since(start)
	}
	if d := commit(true); d < delay {
		t.Fatalf("synced commit took %v with a %v sync delay", d, delay)
	}
	e.SetSyncDelay(0, 0)
	commit(true)
}
