package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridiankv/meridian/bench"
)

// TestBenchLocalReportsTheDisk: `bench --local` runs its nodes in process
// on Pebble and reports what their write-ahead logs did during the run:
// the durable writes each fsync served and the fsyncs' latency.
func TestBenchLocalReportsTheDisk(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out := filepath.Join(t.TempDir(), "run.json")
	root := newRoot()
	var stdout, stderr bytes.Buffer
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	root.SetArgs([]string{"bench", "--local", "--workload", "A", "--records", "50", "--workers", "4", "--ops", "400", "--warmup", "0s", "--json", out})
	if err := root.ExecuteContext(ctx); err != nil {
		t.Fatalf("bench --local: %v\n%s", err, stderr.String())
	}
	res, err := bench.ReadJSON(out)
	if err != nil {
		t.Fatal(err)
	}
	d := res.Disk
	// Workload A is half updates, each durable on a quorum of the three.
	if d == nil || d.WALFsyncs == 0 || d.SyncedCommits < 200 || d.CommitsPerFsync <= 0 || d.FsyncMaxMs <= 0 || d.FsyncP50Ms > d.FsyncMaxMs {
		t.Fatalf("disk figures %+v: want fsyncs serving at least the run's 200 or so durable updates", d)
	}
	if !strings.Contains(stdout.String(), "the cluster's write-ahead logs:") {
		t.Errorf("the table lacks the disk line:\n%s", stdout.String())
	}
}
