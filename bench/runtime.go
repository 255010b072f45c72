package bench

import (
	"math"
	"runtime/metrics"
)

// RuntimeStats is what the Go runtime of the bench process did during the
// measured part of a run (with --local, the cluster's nodes run in that
// process too): collections, their stop-the-world pauses, and how long
// runnable goroutines waited for a thread. A latency tail that these
// explain is the machine's or the process's, not the system's design; on
// a remote cluster they are the load generator's own, which inflate every
// latency it measures. They cover the run from the first progress
// interval that ends after the warm-up. Pauses and delays come from the
// runtime's own histograms: each figure is the upper bound of its bucket
// (four buckets per power of two: at most a quarter above the true value,
// or under 512 ns for the smallest).
type RuntimeStats struct {
	GCCycles       uint64  `json:"gc_cycles"`
	GCPauseP99Ms   float64 `json:"gc_pause_p99_ms"`
	GCPauseMaxMs   float64 `json:"gc_pause_max_ms"`
	SchedDelayP50  float64 `json:"sched_delay_p50_ms"`
	SchedDelayP99  float64 `json:"sched_delay_p99_ms"`
	SchedDelayP999 float64 `json:"sched_delay_p999_ms"`
	SchedDelayMax  float64 `json:"sched_delay_max_ms"`
}

// The runtime/metrics names read (all in Go since 1.22).
const (
	metricGCCycles = "/gc/cycles/total:gc-cycles"
	metricGCPauses = "/sched/pauses/total/gc:seconds"
	metricSched    = "/sched/latencies:seconds"
)

// runtimeSample is one reading of the cumulative counters.
type runtimeSample struct {
	gcCycles      uint64
	pauses, sched *metrics.Float64Histogram
}

func sampleRuntime() runtimeSample {
	ms := []metrics.Sample{{Name: metricGCCycles}, {Name: metricGCPauses}, {Name: metricSched}}
	metrics.Read(ms)
	var s runtimeSample
	if ms[0].Value.Kind() == metrics.KindUint64 {
		s.gcCycles = ms[0].Value.Uint64()
	}
	if ms[1].Value.Kind() == metrics.KindFloat64Histogram {
		s.pauses = ms[1].Value.Float64Histogram()
	}
	if ms[2].Value.Kind() == metrics.KindFloat64Histogram {
		s.sched = ms[2].Value.Float64Histogram()
	}
	return s
}

// since is what happened between an earlier sample and this one.
func (s runtimeSample) since(prev runtimeSample) *RuntimeStats {
	st := &RuntimeStats{GCCycles: s.gcCycles - prev.gcCycles}
	pauses := histDelta(s.pauses, prev.pauses)
	st.GCPauseP99Ms, st.GCPauseMaxMs = histQuantileMs(pauses, 0.99), histMaxMs(pauses)
	sched := histDelta(s.sched, prev.sched)
	st.SchedDelayP50, st.SchedDelayP99 = histQuantileMs(sched, 0.5), histQuantileMs(sched, 0.99)
	st.SchedDelayP999, st.SchedDelayMax = histQuantileMs(sched, 0.999), histMaxMs(sched)
	return st
}

// histDelta is the counts added between prev and cur (the same buckets:
// one process's histograms never change theirs); nil if either is.
func histDelta(cur, prev *metrics.Float64Histogram) *metrics.Float64Histogram {
	if cur == nil || prev == nil || len(cur.Counts) != len(prev.Counts) {
		return nil
	}
	d := &metrics.Float64Histogram{Buckets: cur.Buckets, Counts: make([]uint64, len(cur.Counts))}
	for i := range cur.Counts {
		d.Counts[i] = cur.Counts[i] - prev.Counts[i]
	}
	return d
}

// histQuantileMs is the upper bound, in ms, of the bucket holding the
// q-quantile (0 for an empty histogram).
func histQuantileMs(h *metrics.Float64Histogram, q float64) float64 {
	if h == nil {
		return 0
	}
	var total uint64
	for _, c := range h.Counts {
		total += c
	}
	if total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(total)))
	var seen uint64
	for i, c := range h.Counts {
		seen += c
		if seen >= rank && c > 0 {
			return bucketTopMs(h, i)
		}
	}
	return histMaxMs(h)
}

// histMaxMs is the upper bound, in ms, of the highest bucket counted.
func histMaxMs(h *metrics.Float64Histogram) float64 {
	if h == nil {
		return 0
	}
	for i := len(h.Counts) - 1; i >= 0; i-- {
		if h.Counts[i] > 0 {
			return bucketTopMs(h, i)
		}
	}
	return 0
}

// bucketTopMs is bucket i's upper bound in ms; for the last, unbounded
// bucket, its lower bound.
func bucketTopMs(h *metrics.Float64Histogram, i int) float64 {
	top := h.Buckets[i+1]
	if math.IsInf(top, 1) {
		top = h.Buckets[i]
	}
	return top * 1000
}
