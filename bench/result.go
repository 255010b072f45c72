package bench

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Result is one phase's outcome. Its JSON form is stable: field names are
// the report's contract (see docs/PERFORMANCE.md).
type Result struct {
	Phase    string    `json:"phase"`
	Workload string    `json:"workload"`
	Start    time.Time `json:"start"`
	// Elapsed includes the warm-up.
	Elapsed time.Duration `json:"elapsed_ns"`
	// MeasuredSeconds is the recorded part of the run (Elapsed minus
	// warm-up): 0 when the run ended within its warm-up.
	MeasuredSeconds float64   `json:"measured_seconds"`
	Config          RunConfig `json:"config"`
	Machine         Machine   `json:"machine"`
	// Partial is true when the run was interrupted.
	Partial bool             `json:"partial"`
	Ops     map[Op]*OpStats  `json:"ops"`
	Total   OpStats          `json:"total"`
	Errors  map[string]int64 `json:"errors_by_code"`
	// ErrorExamples is the first message seen for each key of Errors:
	// what the server said (which limit shed a request, say).
	ErrorExamples map[string]string `json:"error_examples,omitempty"`
	// ErrorRate is errors / (operations + errors).
	ErrorRate float64 `json:"error_rate"`
	// Warning is set when more than 1% of operations failed, when
	// operations took longer than the histograms hold (Clamped), when the
	// run ended within its warm-up (nothing measured), or when the
	// interval log could not be written whole.
	Warning string `json:"warning,omitempty"`
	// Clamped counts operations slower than the histograms' 60 s range,
	// recorded as 60 s: the top percentiles are then a floor.
	Clamped int64 `json:"clamped,omitempty"`
	// NotFound counts reads (and read-modify-writes) that found no
	// record, which a run over loaded records should never see: records
	// the load skipped, or data lost.
	NotFound int64 `json:"not_found,omitempty"`
	// Unsent counts open-loop operations due before the run ended (its
	// planned end, or when it was interrupted) that were never sent: the
	// system fell behind --rate at the end, and their latency (at least
	// the time they were overdue) is in no figure.
	Unsent    int64      `json:"unsent,omitempty"`
	Intervals []Interval `json:"intervals"`
	// Histograms are the whole run's latency histograms per op type
	// (HdrHistogram V2 compressed, base64), so reports can be redrawn.
	Histograms map[Op]string `json:"histograms"`
	// Runtime is what this process's Go runtime did meanwhile (nil when
	// the run ended within its warm-up).
	Runtime *RuntimeStats `json:"runtime,omitempty"`
	// Disk is what the cluster's write-ahead logs did meanwhile (only
	// when the bench can see the nodes' engines: --local).
	Disk *DiskStats `json:"disk,omitempty"`
}

// RunConfig records the parameters of a run.
type RunConfig struct {
	Workload        string  `json:"workload"`
	Mix             string  `json:"mix"`
	Distribution    string  `json:"distribution"`
	RecordCount     uint64  `json:"record_count"`
	ValueSize       int     `json:"value_size"`
	ValueSizeMax    int     `json:"value_size_max,omitempty"`
	Workers         int     `json:"workers"`
	Rate            float64 `json:"rate_ops_per_sec"`
	DurationSeconds float64 `json:"duration_seconds,omitempty"`
	Ops             int64   `json:"ops,omitempty"`
	WarmupSeconds   float64 `json:"warmup_seconds"`
	Seed            uint64  `json:"seed"`
	// Contexts is whose causal contexts updates carry: shared (one cache
	// for every worker) or worker (each its own); empty in runs recorded
	// before the choice existed, which were per worker.
	Contexts string `json:"contexts,omitempty"`
	// Target describes what was measured (filled in by the caller).
	Target string `json:"target,omitempty"`
	// ReadConsistency / WriteConsistency, filled in by the caller.
	ReadConsistency  string `json:"read_consistency,omitempty"`
	WriteConsistency string `json:"write_consistency,omitempty"`
}

// Machine is where the benchmark ran.
type Machine struct {
	GOOS      string `json:"goos"`
	GOARCH    string `json:"goarch"`
	NumCPU    int    `json:"num_cpu"`
	GoVersion string `json:"go_version"`
}

// OpStats summarizes one operation type; latencies in milliseconds.
type OpStats struct {
	Count      int64   `json:"count"`
	Errors     int64   `json:"errors"`
	Throughput float64 `json:"ops_per_sec"`
	Mean       float64 `json:"mean_ms"`
	P50        float64 `json:"p50_ms"`
	P90        float64 `json:"p90_ms"`
	P99        float64 `json:"p99_ms"`
	P999       float64 `json:"p99_9_ms"`
	P9999      float64 `json:"p99_99_ms"`
	Max        float64 `json:"max_ms"`
}

// Interval is one point of the time series.
type Interval struct {
	// T is seconds since the start, at the end of the interval.
	T          float64 `json:"t"`
	Ops        int64   `json:"ops"`
	Errors     int64   `json:"errors"`
	Throughput float64 `json:"ops_per_sec"`
	P50        float64 `json:"p50_ms"`
	P99        float64 `json:"p99_ms"`
	// Warmup marks an interval that began during the warm-up: its
	// operations ran but are excluded from the summary and histograms.
	Warmup bool `json:"warmup,omitempty"`
}

func stats(h *hdrhistogram.Histogram, secs float64) OpStats {
	// An empty histogram (every operation of the type failed) has no
	// latency: zeros, not the bottom bucket's edge it reports as its max.
	if h.TotalCount() == 0 {
		return OpStats{}
	}
	// secs is 0 when nothing was measured: no throughput then, rather
	// than a division by zero (NaN or +Inf in the JSON).
	s := OpStats{
		Count: h.TotalCount(), Mean: h.Mean() / 1e6,
		P50: ms(h.ValueAtQuantile(50)), P90: ms(h.ValueAtQuantile(90)), P99: ms(h.ValueAtQuantile(99)),
		P999: ms(h.ValueAtQuantile(99.9)), P9999: ms(h.ValueAtQuantile(99.99)), Max: ms(h.Max()),
	}
	if secs > 0 {
		s.Throughput = float64(s.Count) / secs
	}
	return s
}

// finish merges the workers' histograms into the summary.
func (r *Result) finish(recs []*recorder, cfg Config) {
	merged := map[Op]*hdrhistogram.Histogram{}
	all := newHist()
	r.Errors = map[string]int64{}
	r.ErrorExamples = nil
	r.Clamped, r.NotFound, r.Unsent = 0, 0, 0
	for _, rec := range recs {
		rec.mu.Lock()
		for op, h := range rec.total {
			if merged[op] == nil {
				merged[op] = newHist()
			}
			merged[op].Merge(h)
			all.Merge(h)
		}
		r.Clamped += rec.clamped
		r.NotFound += rec.notFound
		r.Unsent += rec.unsent
		for code, n := range rec.errors {
			r.Errors[code] += n
			if _, ok := r.ErrorExamples[code]; !ok && rec.example[code] != "" {
				if r.ErrorExamples == nil {
					r.ErrorExamples = map[string]string{}
				}
				r.ErrorExamples[code] = rec.example[code]
			}
		}
		rec.mu.Unlock()
	}
	// A run that ended within its warm-up measured nothing: its figures
	// are zeros over 0 s (stats leaves the throughput 0), and it says so
	// rather than pass the warm-up off as the measured part.
	measured := r.Elapsed - cfg.Warmup
	r.MeasuredSeconds = max(measured, 0).Seconds()
	r.setHistograms(merged, all, cfg.Workload.Mix)
	if cfg.Warmup > 0 && measured <= 0 {
		r.warn(nothingMeasured(cfg.Warmup, r.Partial))
	}
}

// nothingMeasured is the warning of a run that ended within its warm-up.
func nothingMeasured(warmup time.Duration, interrupted bool) string {
	if interrupted {
		return fmt.Sprintf("the run was interrupted within its warm-up (%s): nothing was measured", warmup)
	}
	return fmt.Sprintf("the run ended within its warm-up (%s): nothing was measured; give a longer --duration or more --ops (the warm-up's operations count toward it), or a shorter --warmup", warmup)
}

// warn adds msg to the result's warning.
func (r *Result) warn(msg string) {
	if r.Warning != "" {
		r.Warning += "; "
	}
	r.Warning += msg
}

// setHistograms fills in the summary per operation type: one for every
// type in mix or with errors, whether or not any of its operations
// succeeded.
func (r *Result) setHistograms(merged map[Op]*hdrhistogram.Histogram, all *hdrhistogram.Histogram, mix map[Op]float64) {
	r.Ops = map[Op]*OpStats{}
	r.Histograms = map[Op]string{}
	for _, op := range Ops {
		var errs int64
		for code, n := range r.Errors {
			if strings.HasSuffix(code, "("+string(op)+")") {
				errs += n
			}
		}
		h := merged[op]
		if h == nil {
			if mix[op] <= 0 && errs == 0 {
				continue
			}
			// Every operation of the type failed (all updates refused,
			// say), or none was measured: it keeps its row, errors and an
			// empty histogram, rather than vanish from the report and
			// read as no change (0 errors) in a comparison.
			h = newHist()
		}
		s := stats(h, r.MeasuredSeconds)
		s.Errors = errs
		r.Ops[op] = &s
		if enc, err := h.Encode(hdrhistogram.V2CompressedEncodingCookieBase); err == nil {
			r.Histograms[op] = base64.StdEncoding.EncodeToString(enc)
		}
	}
	r.Total = stats(all, r.MeasuredSeconds)
	var errs int64
	for _, n := range r.Errors {
		errs += n
	}
	r.Total.Errors = errs
	if n := r.Total.Count + errs; n > 0 {
		r.ErrorRate = float64(errs) / float64(n)
	}
	var warn []string
	if r.ErrorRate > 0.01 {
		warn = append(warn, fmt.Sprintf("%.2f%% of operations failed (%d errors): the figures describe a degraded system", 100*r.ErrorRate, errs))
	}
	if r.Unsent > int64(r.Config.Workers) { // one per worker: the end's own jitter
		warn = append(warn, fmt.Sprintf("%d operation(s) due before the end were never sent: the system fell behind the rate, and the tail is worse than shown", r.Unsent))
	}
	if r.NotFound > 0 {
		warn = append(warn, fmt.Sprintf("%d read(s) found no record: the load skipped records, or the store lost them", r.NotFound))
	}
	if r.Clamped > 0 {
		warn = append(warn, fmt.Sprintf("%d operation(s) took longer than %s, recorded as %s: the top percentiles and max are a floor", r.Clamped, time.Duration(histMax), time.Duration(histMax)))
	}
	r.Warning = strings.Join(warn, "; ")
}

// Histogram decodes the stored whole-run histogram of op.
func (r *Result) Histogram(op Op) (*hdrhistogram.Histogram, error) {
	enc, ok := r.Histograms[op]
	if !ok {
		return nil, fmt.Errorf("no histogram for %s", op)
	}
	raw, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return nil, err
	}
	return hdrhistogram.Decode(raw)
}

// WriteJSON writes the result as indented JSON.
func (r *Result) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// ReadJSON loads a result written by WriteJSON.
func ReadJSON(path string) (*Result, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s is not a meridian bench result: %w", path, err)
	}
	if r.Ops == nil {
		return nil, fmt.Errorf("%s has no operations: is it a meridian bench --json file?", path)
	}
	return &r, nil
}

func (r *Result) ops() []Op {
	var out []Op
	for _, op := range Ops {
		if _, ok := r.Ops[op]; ok {
			out = append(out, op)
		}
	}
	return out
}

// WriteTable prints the human summary.
func (r *Result) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "\n%s phase, workload %s (%s), %s distribution, %d records, %d workers",
		r.Phase, r.Workload, r.Config.Mix, r.Config.Distribution, r.Config.RecordCount, r.Config.Workers)
	if r.Config.Rate > 0 {
		fmt.Fprintf(w, ", open loop at %.0f ops/s", r.Config.Rate)
	} else {
		fmt.Fprint(w, ", closed loop")
	}
	fmt.Fprintf(w, "\nmeasured %.1fs (after %.0fs warm-up) on %s/%s, %d CPUs\n", r.MeasuredSeconds, r.Config.WarmupSeconds, r.Machine.GOOS, r.Machine.GOARCH, r.Machine.NumCPU)
	if r.Partial {
		fmt.Fprintln(w, "PARTIAL: the run was interrupted")
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "op\tcount\terrors\tops/s\tmean ms\tp50\tp90\tp99\tp99.9\tp99.99\tmax\t")
	row := func(name string, s OpStats) {
		if s.Count == 0 {
			// Nothing succeeded: no latency, rather than zeros that read
			// as instant.
			fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t-\t-\t-\t-\t-\t-\t-\t\n", name, s.Count, s.Errors, s.Throughput)
			return
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t\n", name, s.Count, s.Errors, s.Throughput, s.Mean, s.P50, s.P90, s.P99, s.P999, s.P9999, s.Max)
	}
	for _, op := range r.ops() {
		row(string(op), *r.Ops[op])
	}
	row("total", r.Total)
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Errors) > 0 {
		codes := make([]string, 0, len(r.Errors))
		for c := range r.Errors {
			codes = append(codes, c)
		}
		sort.Strings(codes)
		fmt.Fprint(w, "errors by code:")
		for _, c := range codes {
			fmt.Fprintf(w, " %s=%d", c, r.Errors[c])
		}
		fmt.Fprintln(w)
		for _, c := range codes {
			if ex := r.ErrorExamples[c]; ex != "" {
				fmt.Fprintf(w, "  first %s: %s\n", c, ex)
			}
		}
	}
	if rt := r.Runtime; rt != nil {
		fmt.Fprintf(w, "this process's Go runtime: %d GC cycles, GC pauses p99 %.3f ms, max %.3f ms; goroutines waited for a thread p50 %.3f, p99 %.3f, p99.9 %.3f, max %.3f ms\n",
			rt.GCCycles, rt.GCPauseP99Ms, rt.GCPauseMaxMs, rt.SchedDelayP50, rt.SchedDelayP99, rt.SchedDelayP999, rt.SchedDelayMax)
	}
	if d := r.Disk; d != nil {
		fmt.Fprintf(w, "the cluster's write-ahead logs: %d fsyncs serving %d durable writes (%.1f each); fsync p50 %.3f, p99 %.3f, p99.9 %.3f, max %.3f ms\n",
			d.WALFsyncs, d.SyncedCommits, d.CommitsPerFsync, d.FsyncP50Ms, d.FsyncP99Ms, d.FsyncP999Ms, d.FsyncMaxMs)
	}
	if r.Warning != "" {
		fmt.Fprintf(w, "\n!!! WARNING: %s !!!\n", r.Warning)
	}
	return nil
}
