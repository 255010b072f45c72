package bench

import (
	"context"
	"io"
	"math"
	"runtime/metrics"
	"testing"
	"time"
)

func TestRuntimeHistogramFigures(t *testing.T) {
	// Buckets [0,1ms) [1,2ms) [2,4ms) [4ms,+Inf).
	buckets := []float64{0, 0.001, 0.002, 0.004, math.Inf(1)}
	h := func(counts ...uint64) *metrics.Float64Histogram {
		return &metrics.Float64Histogram{Buckets: buckets, Counts: counts}
	}
	cases := []struct {
		name          string
		h             *metrics.Float64Histogram
		p50, p99, max float64
	}{
		{"none", nil, 0, 0, 0},
		{"empty", h(0, 0, 0, 0), 0, 0, 0},
		{"all in the first bucket", h(10, 0, 0, 0), 1, 1, 1},
		{"a tail", h(98, 1, 1, 0), 1, 2, 4},
		{"one in the unbounded bucket: its lower bound", h(50, 49, 0, 1), 1, 2, 4},
		{"half and half", h(50, 0, 50, 0), 1, 4, 4},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := histQuantileMs(c.h, 0.5); got != c.p50 {
				t.Errorf("p50 = %v, want %v", got, c.p50)
			}
			if got := histQuantileMs(c.h, 0.99); got != c.p99 {
				t.Errorf("p99 = %v, want %v", got, c.p99)
			}
			if got := histMaxMs(c.h); got != c.max {
				t.Errorf("max = %v, want %v", got, c.max)
			}
		})
	}
	d := histDelta(h(5, 3, 2, 1), h(5, 1, 0, 1))
	if d == nil || d.Counts[0] != 0 || d.Counts[1] != 2 || d.Counts[2] != 2 || d.Counts[3] != 0 {
		t.Fatalf("delta = %+v, want [0 2 2 0]", d)
	}
	if histDelta(h(1, 2, 3, 4), nil) != nil || histDelta(h(1), h(1, 2)) != nil {
		t.Fatal("a delta against a missing or different histogram must be nil")
	}
}

// A run that ends within its warm-up measured nothing: no runtime figures.
func TestRuntimeFiguresNeedTheMeasuredPart(t *testing.T) {
	w, _ := WorkloadByName("C")
	s := memOnly{data: map[string]bool{}}
	res, err := Run(context.Background(), Config{Workload: w, RecordCount: 10, Workers: 1, Ops: 50, Warmup: time.Hour, Interval: 10 * time.Millisecond}, s, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if res.Runtime != nil {
		t.Fatalf("runtime figures %+v for a run that never left its warm-up", res.Runtime)
	}
}

type memOnly struct{ data map[string]bool }

func (memOnly) Get(context.Context, []byte) ([]byte, bool, error) { return nil, true, nil }
func (memOnly) Put(context.Context, []byte, []byte, []byte) ([]byte, error) {
	return nil, nil
}
