package bench

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestWALRecorder(t *testing.T) {
	commits := uint64(100)
	r := NewWALRecorder(func() uint64 { return commits })
	if st := r.Stop(); st != nil {
		t.Fatalf("Stop before Start = %+v, want nil", st)
	}
	r.Observe(time.Second) // before Start: not part of any measurement
	r.Start()
	for _, d := range []time.Duration{time.Millisecond, 2 * time.Millisecond, 3 * time.Millisecond, 40 * time.Millisecond} {
		r.Observe(d)
	}
	commits += 20
	st := r.Stop()
	if st == nil || st.WALFsyncs != 4 || st.SyncedCommits != 20 || st.CommitsPerFsync != 5 {
		t.Fatalf("stats %+v, want 4 fsyncs serving 20 commits (5 each)", st)
	}
	if st.FsyncP50Ms < 1.99 || st.FsyncP50Ms > 2.01 || st.FsyncMaxMs < 39.9 || st.FsyncMaxMs > 40.1 || st.FsyncP99Ms > st.FsyncMaxMs {
		t.Errorf("fsync p50 %v, p99 %v, max %v ms; want 2, at most max, 40", st.FsyncP50Ms, st.FsyncP99Ms, st.FsyncMaxMs)
	}
	r.Observe(time.Hour) // after Stop: ignored
	// A second measurement forgets the first.
	r.Start()
	r.Observe(5 * time.Millisecond)
	if st := r.Stop(); st.WALFsyncs != 1 || st.SyncedCommits != 0 || st.FsyncMaxMs < 4.99 || st.FsyncMaxMs > 5.01 {
		t.Errorf("second measurement %+v, want one fsync of 5ms and no commits", st)
	}

	var table bytes.Buffer
	res := &Result{Ops: map[Op]*OpStats{}, Disk: st}
	if err := res.WriteTable(&table); err != nil || !strings.Contains(table.String(), "write-ahead logs: 4 fsyncs serving 20") {
		t.Errorf("table lacks the disk line (%v): %s", err, table.String())
	}
}

// probe counts how the runner uses a DiskProbe.
type probe struct{ starts, stops int }

func (p *probe) Start() { p.starts++ }
func (p *probe) Stop() *DiskStats {
	p.stops++
	return &DiskStats{WALFsyncs: 7}
}

// The runner starts the probe with the measured part and stops it at the
// end; a run that never leaves its warm-up measures nothing.
func TestRunnerMeasuresTheDisk(t *testing.T) {
	w, _ := WorkloadByName("C")
	s := memOnly{data: map[string]bool{}}
	p := &probe{}
	res, err := Run(t.Context(), Config{Workload: w, RecordCount: 10, Workers: 1, Ops: 50, Interval: 10 * time.Millisecond, Disk: p}, s, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if p.starts != 1 || p.stops != 1 || res.Disk == nil || res.Disk.WALFsyncs != 7 {
		t.Errorf("probe started %d, stopped %d times, result %+v; want once each and its stats", p.starts, p.stops, res.Disk)
	}
	p = &probe{}
	res, err = Run(t.Context(), Config{Workload: w, RecordCount: 10, Workers: 1, Ops: 50, Warmup: time.Hour, Interval: 10 * time.Millisecond, Disk: p}, s, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if p.starts != 0 || res.Disk != nil {
		t.Errorf("a run within its warm-up started the probe %d times, result %+v", p.starts, res.Disk)
	}
}
