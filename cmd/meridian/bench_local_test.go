package main

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
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

// cancelOn is a writer that cancels a context once what is written to it
// contains a phrase.
type cancelOn struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	phrase string
	cancel context.CancelFunc
}

func (w *cancelOn) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.phrase) {
		w.cancel()
	}
	return len(p), nil
}

// TestBenchInterrupted: a bench interrupted in its run phase still
// writes its result, marked partial, and fails, so a script does not go
// on to compare it as a whole run; --phase load refuses the run's report
// flags rather than writing nothing.
func TestBenchInterrupted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	runCtx, interrupt := context.WithCancel(ctx)
	defer interrupt()
	out := filepath.Join(t.TempDir(), "run.json")
	root := newRoot()
	var stdout bytes.Buffer
	stderr := &cancelOn{phrase: "run phase:", cancel: interrupt}
	root.SetOut(&stdout)
	root.SetErr(stderr)
	root.SetArgs([]string{"bench", "--local", "--local-engine", "memory", "--workload", "A", "--records", "50", "--workers", "4", "--duration", "1m", "--warmup", "0s", "--json", out})
	err := root.ExecuteContext(runCtx)
	if !errors.Is(err, errInterrupted) || !strings.Contains(err.Error(), "run phase was interrupted") {
		t.Fatalf("an interrupted run returned %v, want the interruption", err)
	}
	res, rerr := bench.ReadJSON(out)
	if rerr != nil || !res.Partial {
		t.Fatalf("the interrupted run's JSON: %+v, %v; want it written, marked partial", res, rerr)
	}

	root = newRoot()
	root.SetOut(&stdout)
	root.SetErr(&stdout)
	root.SetArgs([]string{"bench", "--addr", "127.0.0.1:1", "--phase", "load", "--json", out})
	if err := root.ExecuteContext(ctx); err == nil || !strings.Contains(err.Error(), "--phase load skips") {
		t.Fatalf("--phase load --json: %v, want it refused", err)
	}
}
