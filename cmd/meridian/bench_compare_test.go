package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/meridiankv/meridian/bench"
)

// benchResultFile writes a result whose read latencies are scale × 1..10ms.
func benchResultFile(t *testing.T, dir, name string, scale float64) string {
	t.Helper()
	h := hdrhistogram.New(1_000, 60_000_000_000, 3)
	for i := 1; i <= 1000; i++ {
		_ = h.RecordValue(int64(scale * float64(i) * 10_000))
	}
	enc, err := h.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	if err != nil {
		t.Fatal(err)
	}
	st := bench.OpStats{Count: h.TotalCount(), Throughput: 1000 / scale, Mean: h.Mean() / 1e6,
		P50: float64(h.ValueAtQuantile(50)) / 1e6, P99: float64(h.ValueAtQuantile(99)) / 1e6, Max: float64(h.Max()) / 1e6}
	res := &bench.Result{Phase: "run", Workload: "C", Start: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC),
		Elapsed: 3 * time.Second, MeasuredSeconds: 2,
		Config: bench.RunConfig{Workload: "C", Mix: "read=1", Workers: 4, WarmupSeconds: 1},
		Ops:    map[bench.Op]*bench.OpStats{bench.OpRead: &st}, Total: st,
		Histograms: map[bench.Op]string{bench.OpRead: base64.StdEncoding.EncodeToString(enc)},
		Intervals: []bench.Interval{{T: 1, Ops: 500, Throughput: 500 / scale, Warmup: true},
			{T: 2, Ops: 1000, Throughput: 1000 / scale}, {T: 3, Ops: 1000, Throughput: 1000 / scale}}}
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := res.WriteJSON(f); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestBenchCompareHTML: `bench compare a.json b.json --html` prints the text
// comparison and writes one page overlaying both runs with ratios; a single
// file is refused.
func TestBenchCompareHTML(t *testing.T) {
	dir := t.TempDir()
	a := benchResultFile(t, dir, "before.json", 1)
	b := benchResultFile(t, dir, "after.json", 0.5)
	out := filepath.Join(dir, "cmp.html")
	run := func(args ...string) (string, error) {
		root := newRoot()
		var stdout, stderr bytes.Buffer
		root.SetOut(&stdout)
		root.SetErr(&stderr)
		root.SetArgs(args)
		err := root.Execute()
		return stdout.String(), err
	}
	text, err := run("bench", "compare", a, b, "--html", out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, "B/A") || !strings.Contains(text, "0.50x") || !strings.Contains(text, "2.00x") {
		t.Errorf("text comparison lacks the ratios:\n%s", text)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	page := string(raw)
	for _, want := range []string{a, b, "<th>B/A</th>", "0.50×", "2.00×"} {
		if !strings.Contains(page, want) {
			t.Errorf("compare page lacks %q", want)
		}
	}
	charts := strings.Split(page, "<svg")[1:]
	if len(charts) != 2 {
		t.Fatalf("%d charts, want latency and throughput", len(charts))
	}
	for i, svg := range charts {
		for _, run := range []string{"run0", "run1"} {
			if !regexp.MustCompile(`<polyline class="[^"]*\b` + run + `"`).MatchString(svg) {
				t.Errorf("chart %d lacks %s's curve", i, run)
			}
		}
	}
	if strings.Contains(page, "<script") {
		t.Error("compare page is not self-contained")
	}

	_, err = run("bench", "compare", a)
	if err == nil || !strings.Contains(err.Error(), "at least two") {
		t.Errorf("compare with one file: %v, want a clear refusal", err)
	}
	_, err = run("bench", "compare", a, filepath.Join(dir, "missing.json"))
	if err == nil {
		t.Error("compare with a missing file succeeded")
	}
}

// editResultFile rewrites the result at path after edit.
func editResultFile(t *testing.T, path string, edit func(*bench.Result)) {
	t.Helper()
	res, err := bench.ReadJSON(path)
	if err != nil {
		t.Fatal(err)
	}
	edit(res)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := res.WriteJSON(f); err != nil {
		t.Fatal(err)
	}
}

// TestBenchCompareJSON: `bench compare --json` prints the comparison as
// JSON only: each run's file and cautions, every metric's values and
// ratios to the first, null where a run has no such figure (updates that
// all failed have no latency).
func TestBenchCompareJSON(t *testing.T) {
	dir := t.TempDir()
	a := benchResultFile(t, dir, "before.json", 1)
	b := benchResultFile(t, dir, "after.json", 0.5)
	editResultFile(t, a, func(r *bench.Result) {
		r.Ops[bench.OpUpdate] = &bench.OpStats{Count: 100, Throughput: 50, P50: 2, P99: 4, Max: 5}
	})
	editResultFile(t, b, func(r *bench.Result) {
		r.Ops[bench.OpUpdate] = &bench.OpStats{Errors: 7}
		r.Partial, r.Warning = true, "1.2% of operations failed"
	})
	root := newRoot()
	var stdout, stderr bytes.Buffer
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	root.SetArgs([]string{"bench", "compare", a, b, "--json"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	// The field names are the contract: decoded by name, not through the
	// bench package's types.
	var doc struct {
		Runs []struct {
			Label    string   `json:"label"`
			File     string   `json:"file"`
			Workload string   `json:"workload"`
			Partial  bool     `json:"partial"`
			Cautions []string `json:"cautions"`
		} `json:"runs"`
		Rows []struct {
			Op     string     `json:"op"`
			Metric string     `json:"metric"`
			Values []*float64 `json:"values"`
			Ratios []*float64 `json:"ratios"`
		} `json:"rows"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &doc); err != nil {
		t.Fatalf("compare --json printed no JSON document alone: %v\n%s", err, stdout.String())
	}
	if len(doc.Runs) != 2 || doc.Runs[0].Label != "A" || doc.Runs[0].File != a || doc.Runs[1].Label != "B" || doc.Runs[1].File != b ||
		doc.Runs[0].Workload != "C" {
		t.Fatalf("runs %+v, want A: %s and B: %s", doc.Runs, a, b)
	}
	if !strings.Contains(stdout.String(), `"cautions": []`) || doc.Runs[0].Partial {
		t.Errorf("run A has no cautions: want an empty list, not null\n%s", stdout.String())
	}
	if c := doc.Runs[1].Cautions; !doc.Runs[1].Partial || len(c) != 2 || c[0] != "PARTIAL: the run was interrupted" || c[1] != "WARNING: 1.2% of operations failed" {
		t.Errorf("run B's cautions %q (partial %v), want the interruption and the warning", c, doc.Runs[1].Partial)
	}
	found := map[string]bool{}
	for _, r := range doc.Rows {
		if len(r.Values) != 2 || len(r.Ratios) != 2 {
			t.Fatalf("row %s %s: %d values and %d ratios, want one per run", r.Op, r.Metric, len(r.Values), len(r.Ratios))
		}
		key := r.Op + " " + r.Metric
		switch key {
		case "read p99 ms":
			found[key] = true
			if r.Values[0] == nil || r.Values[1] == nil || r.Ratios[0] == nil || *r.Ratios[0] != 1 || r.Ratios[1] == nil || math.Abs(*r.Ratios[1]-0.5) > 0.01 {
				t.Errorf("read p99 row: values %v, ratios %v; want B at half of A", r.Values, r.Ratios)
			}
		case "update p99 ms":
			found[key] = true
			if r.Values[0] == nil || *r.Values[0] != 4 || r.Values[1] != nil || r.Ratios[1] != nil {
				t.Errorf("update p99 row: values %v, ratios %v; want 4 for A, null (no latency) for B and no ratio", r.Values, r.Ratios)
			}
		case "update errors":
			found[key] = true
			if r.Values[0] == nil || *r.Values[0] != 0 || r.Values[1] == nil || *r.Values[1] != 7 || r.Ratios[1] != nil {
				t.Errorf("update errors row: values %v, ratios %v; want 0 and 7, no ratio to 0", r.Values, r.Ratios)
			}
		}
	}
	if len(found) != 3 {
		t.Errorf("rows found %v, want read p99, update p99 and update errors:\n%s", found, stdout.String())
	}
}
