package main

import (
	"bytes"
	"encoding/base64"
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
