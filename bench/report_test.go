package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestNiceTicks(t *testing.T) {
	for _, c := range []struct {
		min, max float64
		n        int
		want     []float64
	}{
		{0, 105, 7, []float64{0, 20, 40, 60, 80, 100, 120}},
		{0, 100, 6, []float64{0, 20, 40, 60, 80, 100}},
		{0, 1, 6, []float64{0, 0.2, 0.4, 0.6, 0.8, 1}},
		{0, 0.7, 8, []float64{0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7}},
		{0, 0.0123, 5, []float64{0, 0.005, 0.01, 0.015}},
		{0, 38250, 7, []float64{0, 10000, 20000, 30000, 40000}},
		{0, 9.7, 11, []float64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
		{3, 17, 5, []float64{0, 5, 10, 15, 20}},
		{-7, 7, 5, []float64{-10, -5, 0, 5, 10}},
		{0, 0, 7, []float64{0, 0.2, 0.4, 0.6, 0.8, 1}},
		{40, 40, 7, []float64{36, 38, 40, 42, 44}},
		{10, 0, 3, []float64{0, 5, 10}},
		{0, 1, 1, []float64{0, 1}},
	} {
		got := niceTicks(c.min, c.max, c.n)
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("niceTicks(%v, %v, %d) = %v, want %v", c.min, c.max, c.n, got, c.want)
		}
	}
	// Properties over many ranges: at most n ticks, covering the range,
	// evenly spaced by 1, 2 or 5 × 10^k.
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		max := r.Float64() * float64(int(1)<<r.IntN(40)) / 1000
		n := 2 + r.IntN(10)
		ticks := niceTicks(0, max, n)
		if len(ticks) > n || len(ticks) < 2 || ticks[0] > 0 || ticks[len(ticks)-1] < max {
			t.Fatalf("niceTicks(0, %v, %d) = %v", max, n, ticks)
		}
		step := ticks[1] - ticks[0]
		mant := step / pow10floor(step)
		if !near(mant, 1) && !near(mant, 2) && !near(mant, 5) && !near(mant, 10) {
			t.Fatalf("niceTicks(0, %v, %d) = %v: step %v is not 1, 2 or 5 × 10^k", max, n, ticks, step)
		}
	}
}

func pow10floor(v float64) float64 {
	p := 1.0
	for p > v {
		p /= 10
	}
	for p*10 <= v {
		p *= 10
	}
	return p
}

func near(a, b float64) bool { return a > b*0.999999 && a < b*1.000001 }

// fakeResult is a finished result whose latencies are scale × a fixed
// spread, with a time series that includes two warm-up intervals.
func fakeResult(t *testing.T, scale float64) *Result {
	t.Helper()
	rec := newRecorder()
	r := rand.New(rand.NewPCG(7, 8))
	for i := 0; i < 5000; i++ {
		d := time.Duration(scale * float64(100_000+r.IntN(5_000_000)))
		rec.record(OpRead, d, nil)
		if i%2 == 0 {
			rec.record(OpUpdate, 2*d, nil)
		}
	}
	w, _ := WorkloadByName("A")
	cfg := Config{Workload: w, RecordCount: 1000, Workers: 8, Warmup: 2 * time.Second, Duration: 4 * time.Second}
	res := &Result{Phase: "run", Workload: "A", Start: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC),
		Elapsed: 6 * time.Second, Config: describeConfig(cfg), Machine: machine()}
	res.finish([]*recorder{rec}, cfg)
	for i, ops := range []float64{400, 900, 1250, 1300, 1280, 1310} {
		res.Intervals = append(res.Intervals, Interval{T: float64(i + 1), Ops: int64(ops / scale), Throughput: ops / scale, Warmup: i < 2})
	}
	return res
}

var polylineRE = regexp.MustCompile(`<polyline class="([^"]*)"[^>]*points="([^"]*)"`)

func TestHTMLReportTableTicksAndWarmup(t *testing.T) {
	res := fakeResult(t, 1)
	var buf bytes.Buffer
	if err := res.WriteHTML(&buf); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	// Every summary row is a table row, nothing is boxed behind a scroll bar.
	for _, name := range []string{"read", "update", "total"} {
		if !regexp.MustCompile(`<tr[^>]*><td>` + name + `</td><td>\d+</td>`).MatchString(page) {
			t.Errorf("summary table lacks the %s row", name)
		}
	}
	for _, bad := range []string{"overflow", "max-height", "<pre"} {
		if strings.Contains(page, bad) {
			t.Errorf("report still contains %q: the table may be cut off", bad)
		}
	}
	// Round y ticks on the throughput chart (max 1310 ops/s → 0..1400 by 200).
	for _, want := range []string{">200</text>", ">1400</text>", ">99.999%</text>", "warm-up (not in the summary)"} {
		if !strings.Contains(page, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	// The last x label of each chart is anchored at its end, inside the picture.
	if n := strings.Count(page, `text-anchor="end">99.999%`); n != 1 {
		t.Errorf("99.999%% label end-anchored %d times, want 1", n)
	}
	// Warm-up throughput is drawn (dashed), joined to the measured line.
	var warm, measured []string
	for _, m := range polylineRE.FindAllStringSubmatch(page, -1) {
		switch {
		case strings.HasPrefix(m[1], "warmup"):
			warm = strings.Fields(m[2])
		case strings.HasPrefix(m[1], "measured"):
			measured = strings.Fields(m[2])
		}
	}
	if len(warm) != 3 || len(measured) != 4 {
		t.Fatalf("warm-up line has %d points (want 2 + the first measured), measured %d (want 4):\n%s", len(warm), len(measured), page)
	}
	if warm[2] != measured[0] {
		t.Errorf("warm-up line ends at %s, measured starts at %s", warm[2], measured[0])
	}
	if !regexp.MustCompile(`class="warmup run0"[^>]*stroke-dasharray`).MatchString(page) {
		t.Error("warm-up line is not dashed")
	}
}

// TestHTMLReportShowsErrorExamples: the report says what the server said,
// escaped.
func TestHTMLReportShowsErrorExamples(t *testing.T) {
	rec := newRecorder()
	rec.record(OpRead, time.Millisecond, nil)
	rec.record(OpUpdate, 0, status.Error(codes.ResourceExhausted, "node overloaded: 9 requests in flight (limit 8) <b>"))
	rec.record(OpUpdate, 0, status.Error(codes.ResourceExhausted, "a later one"))
	res := &Result{Phase: "run", Workload: "A", Elapsed: time.Second, Machine: machine()}
	res.finish([]*recorder{rec}, Config{})
	var buf bytes.Buffer
	if err := res.WriteHTML(&buf); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	if !strings.Contains(page, "first ResourceExhausted (update): <code>node overloaded: 9 requests in flight (limit 8) &lt;b&gt;</code>") {
		t.Errorf("report lacks the first error's message, escaped:\n%s", page)
	}
	if strings.Contains(page, "a later one") {
		t.Error("report shows a later message of the same code")
	}
}

// TestWarmupIntervalsKept: warm-up operations appear in the time series,
// flagged, and nowhere in the summary.
func TestWarmupIntervalsKept(t *testing.T) {
	w, _ := WorkloadByName("C")
	res, err := Run(context.Background(), Config{Workload: w, RecordCount: 100, Workers: 2, Rate: 1000,
		Warmup: 300 * time.Millisecond, Duration: 300 * time.Millisecond, Interval: 50 * time.Millisecond}, newMemStore(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var warmOps, measuredOps int64
	for _, iv := range res.Intervals {
		if iv.Warmup {
			warmOps += iv.Ops
			if iv.T > 0.3+0.05+0.1 {
				t.Errorf("interval ending at %.3fs flagged warm-up", iv.T)
			}
		} else {
			measuredOps += iv.Ops
		}
	}
	if warmOps < 100 {
		t.Errorf("warm-up intervals hold %d ops, want ~300 (1000/s for 0.3s)", warmOps)
	}
	if res.Total.Count > 310 {
		t.Errorf("summary counts %d ops: more than the 300 scheduled after the warm-up", res.Total.Count)
	}
	h, _ := res.Histogram(OpRead)
	if h.TotalCount() != res.Total.Count {
		t.Errorf("stored histogram %d, summary %d", h.TotalCount(), res.Total.Count)
	}
	if measuredOps == 0 || res.Total.Count == 0 {
		t.Error("no measured operations")
	}
}

func TestCompareHTML(t *testing.T) {
	a, b := fakeResult(t, 1), fakeResult(t, 0.5)
	var buf bytes.Buffer
	if err := WriteCompareHTML(&buf, []string{"before.json", "after.json"}, []*Result{a, b}); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	for _, want := range []string{"A: before.json", "B: after.json", "<th>B/A</th>", "0.50×", "<h2>Latency by percentile: all operations", "<h2>Latency by percentile: read", "<h2>Latency by percentile: update"} {
		if !strings.Contains(page, want) {
			t.Errorf("compare page lacks %q", want)
		}
	}
	// Each chart overlays both runs.
	for i, svg := range strings.Split(page, "<svg")[1:] {
		for run := 0; run < 2; run++ {
			if !regexp.MustCompile(`<polyline class="[^"]*\brun` + string(rune('0'+run)) + `"`).MatchString(svg) {
				t.Errorf("chart %d lacks run %d's curve", i, run)
			}
		}
	}
	if n := strings.Count(page, "<svg"); n != 4 {
		t.Errorf("%d charts, want 4 (all, read, update, throughput)", n)
	}
	// The ratio column holds B/A of every metric: p99 of B is half of A's.
	rows := CompareN([]*Result{a, b})
	for _, r := range rows {
		if r.Metric == "p99 ms" && (r.Ratios[1] < 0.49 || r.Ratios[1] > 0.51) {
			t.Errorf("%s p99 ratio %.3f, want 0.50", r.Op, r.Ratios[1])
		}
	}
	if err := WriteCompareHTML(&buf, []string{"a.json"}, []*Result{a}); err == nil {
		t.Error("compare of one result accepted")
	}
	var txt bytes.Buffer
	if err := WriteCompareN(&txt, []string{"a", "b", "c"}, []*Result{a, b, a}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(txt.String(), "C/A") || !strings.Contains(txt.String(), "0.50x") {
		t.Errorf("three-way text compare:\n%s", txt.String())
	}
	if strings.Contains(txt.String(), "sched delay") {
		t.Errorf("runtime rows for results that carry no runtime figures:\n%s", txt.String())
	}
	// With every result's runtime figures, they are lined up too.
	a.Runtime = &RuntimeStats{GCCycles: 10, SchedDelayP999: 4}
	b.Runtime = &RuntimeStats{GCCycles: 5, SchedDelayP999: 1}
	var found int
	for _, r := range CompareN([]*Result{a, b}) {
		switch {
		case r.Op == "runtime" && r.Metric == "GC cycles" && r.Values[1] == 5 && r.Ratios[1] == 0.5:
			found++
		case r.Op == "runtime" && r.Metric == "sched delay p99.9 ms" && r.Values[0] == 4 && r.Ratios[1] == 0.25:
			found++
		}
	}
	if found != 2 {
		t.Errorf("runtime rows missing or wrong: %+v", CompareN([]*Result{a, b}))
	}
	// The disk's rows need every result's disk figures; they do not need
	// the runtime's.
	a.Disk = &DiskStats{CommitsPerFsync: 4, FsyncP99Ms: 8}
	for _, r := range CompareN([]*Result{a, b}) {
		if r.Op == "disk" {
			t.Errorf("disk row for results of which one has no disk figures: %+v", r)
		}
	}
	b.Disk = &DiskStats{CommitsPerFsync: 8, FsyncP99Ms: 2}
	a.Runtime = nil
	found = 0
	for _, r := range CompareN([]*Result{a, b}) {
		switch {
		case r.Op == "runtime":
			t.Errorf("runtime row for a result without runtime figures: %+v", r)
		case r.Op == "disk" && r.Metric == "durable writes per fsync" && r.Ratios[1] == 2:
			found++
		case r.Op == "disk" && r.Metric == "WAL fsync p99 ms" && r.Values[0] == 8 && r.Ratios[1] == 0.25:
			found++
		}
	}
	if found != 2 {
		t.Errorf("disk rows missing or wrong: %+v", CompareN([]*Result{a, b}))
	}
}

// TestCompareFlagsRunsThatDoNotStandAlone: a comparison says which run was
// interrupted or failing, and each run's levels and value size, in text
// and HTML; a metric that fell to 0 reads 0.00, a 0 baseline "-".
func TestCompareFlagsRunsThatDoNotStandAlone(t *testing.T) {
	a, b := fakeResult(t, 1), fakeResult(t, 0.5)
	a.Config.ReadConsistency, a.Config.WriteConsistency, a.Config.ValueSize = "QUORUM", "QUORUM", 1024
	b.Config.ReadConsistency, b.Config.WriteConsistency, b.Config.ValueSize = "ONE", "ONE", 100
	b.Partial, b.Warning = true, "31.0% of operations failed"
	var txt, page bytes.Buffer
	if err := WriteCompareN(&txt, []string{"a.json", "b.json"}, []*Result{a, b}); err != nil {
		t.Fatal(err)
	}
	if err := WriteCompareHTML(&page, []string{"a.json", "b.json"}, []*Result{a, b}); err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{txt.String(), page.String()} {
		for _, want := range []string{"reads QUORUM, writes QUORUM, 1024-byte values", "reads ONE, writes ONE, 100-byte values",
			"PARTIAL: the run was interrupted", "WARNING: 31.0% of operations failed"} {
			if !strings.Contains(out, want) {
				t.Errorf("compare output lacks %q:\n%.600s", want, out)
			}
		}
	}
	if got := ratioText(0, 5, "x"); got != "0.00x" {
		t.Errorf("errors 5 -> 0 read %q", got)
	}
	if got := ratioText(0, 0, "x"); got != "-" {
		t.Errorf("a zero baseline read %q", got)
	}
}

// failedUpdates is fakeResult's run at scale 1, but with every update
// failed (refused): updates have errors and no latency.
func failedUpdates(t *testing.T) *Result {
	t.Helper()
	rec := newRecorder()
	r := rand.New(rand.NewPCG(7, 8))
	for i := 0; i < 5000; i++ {
		rec.record(OpRead, time.Duration(100_000+r.IntN(5_000_000)), nil)
		if i%2 == 0 {
			rec.record(OpUpdate, time.Millisecond, status.Error(codes.Unavailable, "writes refused"))
		}
	}
	w, _ := WorkloadByName("A")
	cfg := Config{Workload: w, RecordCount: 1000, Workers: 8, Warmup: 2 * time.Second, Duration: 4 * time.Second}
	res := &Result{Phase: "run", Workload: "A", Start: time.Date(2025, 3, 2, 12, 0, 0, 0, time.UTC),
		Elapsed: 6 * time.Second, Config: describeConfig(cfg), Machine: machine()}
	res.finish([]*recorder{rec}, cfg)
	return res
}

// TestCompareOpWithNoLatency: an operation type that failed every time
// in one run has no latency there: its latency cells and ratios read "-"
// (null in JSON), whichever run it is, never 0.00x (which reads as
// infinitely faster); its errors are lined up as they are.
func TestCompareOpWithNoLatency(t *testing.T) {
	ok, failed := fakeResult(t, 1), failedUpdates(t)
	for _, tc := range []struct {
		name    string
		results []*Result
		failing int // the index of the run whose updates failed
	}{{"failed second", []*Result{ok, failed}, 1}, {"failed first", []*Result{failed, ok}, 0}} {
		var latency, errs int
		for _, r := range CompareN(tc.results) {
			if r.Op != "update" {
				continue
			}
			switch r.Metric {
			case "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "p99.99 ms", "max ms":
				latency++
				if r.HasValue(tc.failing) || !r.HasValue(1-tc.failing) || r.HasRatio(1) || r.Ratios[1] != 0 {
					t.Errorf("%s: update %s %+v: want no value for run %d and no ratio", tc.name, r.Metric, r, tc.failing)
				}
			case "errors":
				errs++
				if r.Values[tc.failing] != 2500 || r.Values[1-tc.failing] != 0 {
					t.Errorf("%s: update errors %v, want 2500 in run %d", tc.name, r.Values, tc.failing)
				}
			}
		}
		if latency != 6 || errs != 1 {
			t.Errorf("%s: %d update latency rows and %d errors rows, want 6 and 1", tc.name, latency, errs)
		}
	}
	names := []string{"ok.json", "failed.json"}
	var txt, page, doc bytes.Buffer
	if err := WriteCompareN(&txt, names, []*Result{ok, failed}); err != nil {
		t.Fatal(err)
	}
	if err := WriteCompareHTML(&page, names, []*Result{ok, failed}); err != nil {
		t.Fatal(err)
	}
	for _, metric := range []string{"p50 ms", "p99 ms", "max ms"} {
		if !regexp.MustCompile(`(?m)^\s*update\s+` + metric + `\s+\d+\.\d{3}\s+-\s+-\s*$`).MatchString(txt.String()) {
			t.Errorf("text compare: the update %s row lacks '-' for the failed run and its ratio:\n%s", metric, txt.String())
		}
		if !regexp.MustCompile(`<td>update</td><td class="l">` + metric + `</td><td>\d+\.\d{3}</td><td>-</td><td class="ratio">-</td>`).MatchString(page.String()) {
			t.Errorf("compare page: the update %s row lacks '-' for the failed run and its ratio", metric)
		}
	}
	if err := WriteCompareJSON(&doc, names, []*Result{ok, failed}); err != nil {
		t.Fatal(err)
	}
	var rep CompareReport
	if err := json.Unmarshal(doc.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(rep.Rows, func(r CompareReportRow) bool { return r.Op == "update" && r.Metric == "p99 ms" })
	if i < 0 || rep.Rows[i].Values[0] == nil || rep.Rows[i].Values[1] != nil || rep.Rows[i].Ratios[1] != nil {
		t.Errorf("JSON without an update p99 row that has a value for run A, none (null) for B, and no ratio:\n%s", doc.String())
	}
}
