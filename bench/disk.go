package bench

import (
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// DiskStats is what the cluster's write-ahead logs did during the
// measured part of a run (meridian bench --local: every node's engine):
// how many fsyncs, how many durable writes they served, and how long they
// took. A durable write waits for the fsyncs of W replicas, so their
// latency is a floor under the write's: a tail these explain is the
// disk's.
type DiskStats struct {
	WALFsyncs     uint64 `json:"wal_fsyncs"`
	SyncedCommits uint64 `json:"synced_commits"`
	// CommitsPerFsync is SyncedCommits / WALFsyncs (group commit).
	CommitsPerFsync float64 `json:"commits_per_fsync"`
	FsyncP50Ms      float64 `json:"fsync_p50_ms"`
	FsyncP99Ms      float64 `json:"fsync_p99_ms"`
	FsyncP999Ms     float64 `json:"fsync_p99_9_ms"`
	FsyncMaxMs      float64 `json:"fsync_max_ms"`
}

// DiskProbe measures the storage under a run: Start when the measured
// part begins (it may be called again for a later phase), Stop at its end.
type DiskProbe interface {
	Start()
	Stop() *DiskStats
}

// WALRecorder is a DiskProbe fed by the nodes' engines: Observe each WAL
// fsync's duration (safe for concurrent use); commits reads the nodes'
// cumulative count of synced commits.
type WALRecorder struct {
	commits func() uint64

	mu       sync.Mutex
	on       bool
	hist     *hdrhistogram.Histogram // µs
	fromCmts uint64
}

// NewWALRecorder returns a recorder reading synced commits from commits.
func NewWALRecorder(commits func() uint64) *WALRecorder {
	return &WALRecorder{commits: commits, hist: hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3)}
}

// Observe records one WAL fsync, if the recorder is started.
func (r *WALRecorder) Observe(d time.Duration) {
	r.mu.Lock()
	if r.on {
		r.hist.RecordValue(max(d.Microseconds(), 1)) // beyond a minute: an error, dropped
	}
	r.mu.Unlock()
}

// Start begins a measurement, forgetting any earlier one.
func (r *WALRecorder) Start() {
	c := r.commits()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.on, r.fromCmts = true, c
	r.hist.Reset()
}

// Stop ends the measurement and returns it (nil if it was not started).
func (r *WALRecorder) Stop() *DiskStats {
	c := r.commits()
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.on {
		return nil
	}
	r.on = false
	st := &DiskStats{WALFsyncs: uint64(r.hist.TotalCount()), SyncedCommits: c - min(c, r.fromCmts)}
	if st.WALFsyncs > 0 {
		st.CommitsPerFsync = float64(st.SyncedCommits) / float64(st.WALFsyncs)
		ms := func(us int64) float64 { return float64(us) / 1000 }
		st.FsyncP50Ms, st.FsyncP99Ms = ms(r.hist.ValueAtQuantile(50)), ms(r.hist.ValueAtQuantile(99))
		st.FsyncP999Ms, st.FsyncMaxMs = ms(r.hist.ValueAtQuantile(99.9)), ms(r.hist.Max())
	}
	return st
}
