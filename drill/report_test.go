package drill

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

func judged(t *testing.T) *Report {
	t.Helper()
	in := outage()
	r := Analyze(in)
	r.Started = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	r.Target = "test"
	r.Fault = &FaultInfo{ID: "f-1", Kind: "partition", FromDCs: []string{"dc1", "dc2"}, ToDCs: []string{"dc3"}, BothWays: true, TTLS: 50, AppliedOn: []string{"n1", "n2", "n3"}}
	r.Notes = []string{"a note"}
	DefaultCriteria().Evaluate(r, in.ProbeTimeout)
	return r
}

func TestReportJSONRoundTrip(t *testing.T) {
	r := judged(t)
	path := filepath.Join(t.TempDir(), "r.json")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.WriteJSON(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	back, err := ReadJSON(path)
	if err != nil {
		t.Fatal(err)
	}
	// Round times are not in the JSON (the seconds are).
	for i := range r.Rounds {
		back.Rounds[i].Nodes = r.Rounds[i].Nodes
	}
	if !reflect.DeepEqual(back, r) {
		t.Errorf("the report changed through JSON:\n got %+v\nwant %+v", back, r)
	}
	raw, _ := os.ReadFile(path)
	for _, key := range []string{`"scenario"`, `"availability"`, `"p99_ms"`, `"hints"`, `"repair_rounds"`, `"rto_s": 12`, `"converge_s": 4.5`,
		`"criteria"`, `"pass": true`, `"each_quorum_hold"`, `"lost": 0`} {
		if !bytes.Contains(raw, []byte(key)) {
			t.Errorf("JSON report lacks %s", key)
		}
	}
	if _, err := ReadJSON(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Error("ReadJSON of a missing file: want an error")
	}
}

func TestReportTable(t *testing.T) {
	r := judged(t)
	var b strings.Builder
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"drill dc-outage --dc dc3: dc3 unreachable from every other datacenter, both ways — PASS",
		"phases: baseline 0.0–10.0s, induce 10.0–10.0s, hold 10.0–20.0s, heal 20.0–20.0s, verify 20.0–30.0s",
		"fault f-1: partition from [dc1 dc2] to [dc3]",
		"EACH_QUORUM during hold: 150 probes, UNAVAILABLE=150",
		"hint backlog, peak per target: n3 55",
		"time to converge after heal: 4.5s (3 repair round(s))",
		"RTO (fault to every level healthy): 12.0s, 2.0s after the heal",
		"set workload: 100 acknowledged element(s) over 4 key(s), 0 lost (read at ALL), 0 missing on replicas",
		"note: a note",
		"PASS  acknowledged writes lost: 0 of 100",
		"EACH_QUORUM hold: UNAVAILABLE=150",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if !regexp.MustCompile(`QUORUM\s+dc3\s+.*0\.00% \(50\)`).MatchString(out) {
		t.Errorf("table lacks QUORUM from dc3 at 0%% during the hold:\n%s", out)
	}
	if !strings.HasSuffix(out, "PASS\n") {
		t.Errorf("the table must end with the verdict:\n%s", out)
	}
}

func TestReportHTMLSelfContained(t *testing.T) {
	r := judged(t)
	r.Pass = false
	r.Criteria[0].Pass = false
	var b strings.Builder
	if err := r.WriteHTML(&b); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, want := range []string{"<svg", "Availability per level", "LOCAL_QUORUM latency", "Hint backlog", "round 3: clean", "round 1: 8 mismatches",
		`class="fail">FAIL`, "induce·hold"} {
		if !strings.Contains(page, want) {
			t.Errorf("HTML report lacks %q", want)
		}
	}
	if n := strings.Count(page, "<svg"); n != 5 {
		t.Errorf("%d charts, want 5 (levels, LOCAL_QUORUM by DC, latency, hints, repair)", n)
	}
	// Self-contained: no scripts, nothing loaded from elsewhere.
	for _, bad := range []string{"<script", "src=", "<link", "@import"} {
		if strings.Contains(page, bad) {
			t.Errorf("HTML report contains %q: it must be self-contained", bad)
		}
	}
	if urls := regexp.MustCompile(`https?://[^"]+`).FindAllString(page, -1); len(urls) != strings.Count(page, "<svg") {
		t.Errorf("URLs in the page %v: only the SVG namespace is allowed", urls)
	}
}

func TestTicks(t *testing.T) {
	for _, tc := range []struct {
		max  float64
		n    int
		want []float64
	}{
		{100, 5, []float64{0, 20, 40, 60, 80, 100}},
		{13.3, 10, []float64{0, 2, 4, 6, 8, 10, 12, 14}},
		{0, 5, []float64{0, 0.2, 0.4, 0.6, 0.8, 1}},
		{133, 5, []float64{0, 50, 100, 150}},
	} {
		got, _ := ticks(tc.max, tc.n)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ticks(%g, %d) = %v, want %v", tc.max, tc.n, got, tc.want)
		}
	}
}
