package drill

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is a drill's result: what ran, the per-second series, the
// summaries and the verdicts. It is what --json writes. Per-second series
// have one value per second since the drill's start; -1 means nothing was
// measured in that second.
type Report struct {
	Scenario Scenario `json:"scenario"`
	// Started is when the drill's baseline began.
	Started  time.Time `json:"started"`
	Target   string    `json:"target"`
	Topology Topology  `json:"topology"`
	Settings Settings  `json:"settings"`
	// Fault is the injected fault, as the admin API returned it.
	Fault *FaultInfo `json:"fault,omitempty"`
	// HealthyDCs are the client DCs whose LOCAL_QUORUM must stay available.
	HealthyDCs []string    `json:"healthy_dcs"`
	Phases     []PhaseSpan `json:"phases"`
	FaultAtS   *float64    `json:"fault_at_s,omitempty"`
	HealedAtS  *float64    `json:"healed_at_s,omitempty"`
	EndS       float64     `json:"end_s"`
	// LoadEndS is when the workload stopped: availability and the RTO
	// are judged up to it; the repair rounds after it run on a quiet
	// cluster.
	LoadEndS float64 `json:"load_end_s"`
	// Seconds is the length of every per-second series.
	Seconds      int                  `json:"seconds"`
	Availability []AvailabilitySeries `json:"availability"`
	Latency      []LatencySeries      `json:"latency"`
	Hints        []HintSeries         `json:"hints"`
	Repair       []RepairSample       `json:"repair"`
	Rounds       []RoundReport        `json:"repair_rounds"`
	Summary      Summary              `json:"summary"`
	// ErrorExamples are the first few error messages clients saw, per
	// "LEVEL CODE".
	ErrorExamples map[string][]string `json:"error_examples,omitempty"`
	Criteria      []Verdict           `json:"criteria"`
	Pass          bool                `json:"pass"`
	// Notes are what the drill observed beyond the numbers (a node that
	// could not be restarted, a fault that had to be cleared node by
	// node ...).
	Notes []string `json:"notes,omitempty"`
}

// Settings are the drill's knobs, as run.
type Settings struct {
	BaselineS      float64 `json:"baseline_s"`
	HoldS          float64 `json:"hold_s"`
	VerifyMinS     float64 `json:"verify_min_s"`
	VerifyTimeoutS float64 `json:"verify_timeout_s"`
	Keyspace       string  `json:"keyspace"`
	// Rates are per client DC, operations per second.
	Rate          float64 `json:"rate"`
	ProbeRate     float64 `json:"probe_rate"`
	SetRate       float64 `json:"set_rate"`
	SetKeys       int     `json:"set_keys"`
	OpTimeoutS    float64 `json:"op_timeout_s"`
	ProbeTimeoutS float64 `json:"probe_timeout_s"`
	FaultTTLS     float64 `json:"fault_ttl_s,omitempty"`
	// MinLocalAvailability, MaxConvergeS and MaxRTOS are the criteria.
	MinLocalAvailability float64 `json:"min_local_availability_percent"`
	MaxConvergeS         float64 `json:"max_converge_s"`
	MaxRTOS              float64 `json:"max_rto_s,omitempty"`
}

// FaultInfo is the injected fault.
type FaultInfo struct {
	ID        string   `json:"id"`
	Kind      string   `json:"kind"`
	FromDCs   []string `json:"from_dcs,omitempty"`
	ToDCs     []string `json:"to_dcs,omitempty"`
	BothWays  bool     `json:"both_ways,omitempty"`
	DelayMs   float64  `json:"delay_ms,omitempty"`
	JitterMs  float64  `json:"jitter_ms,omitempty"`
	TTLS      float64  `json:"ttl_s"`
	AppliedOn []string `json:"applied_on"`
}

// PhaseSpan is when a phase ran, in seconds since the start.
type PhaseSpan struct {
	Phase  Phase   `json:"phase"`
	StartS float64 `json:"start_s"`
	EndS   float64 `json:"end_s"`
}

// AvailabilitySeries is a level's availability per second (0 to 1) for
// the clients of one DC, or of all (DC "all").
type AvailabilitySeries struct {
	Level  string    `json:"level"`
	DC     string    `json:"dc"`
	Values []float64 `json:"values"`
}

// LatencySeries is one DC's LOCAL_QUORUM latency per second (successful
// operations, ms).
type LatencySeries struct {
	DC    string    `json:"dc"`
	P50Ms []float64 `json:"p50_ms"`
	P99Ms []float64 `json:"p99_ms"`
}

// HintSeries is the hints held for one target (over every node) per
// second, and the peak.
type HintSeries struct {
	Target string    `json:"target"`
	Values []float64 `json:"values"`
	Peak   uint64    `json:"peak"`
}

// RepairSample is a convergence round's progress at one moment (summed
// over nodes).
type RepairSample struct {
	AtS        float64 `json:"at_s"`
	Round      int     `json:"round"`
	Done       int     `json:"done"`
	Total      int     `json:"total"`
	Mismatches uint64  `json:"mismatches"`
}

// RoundReport is one convergence round.
type RoundReport struct {
	Round  int          `json:"round"`
	StartS float64      `json:"start_s"`
	EndS   float64      `json:"end_s"`
	Clean  bool         `json:"clean"`
	Nodes  []NodeRepair `json:"nodes"`
}

// Summary is the drill's numbers.
type Summary struct {
	Availability []PhaseAvailability `json:"availability"`
	Latency      []PhaseLatency      `json:"latency"`
	// RTOS is from the fault until every level stayed healthy; nil: the
	// drill ended before that.
	RTOS *float64 `json:"rto_s"`
	// RecoveredAfterHealS is the part of the RTO after the heal;
	// negative: the levels recovered before the heal (a crashed node's
	// DC served again before the node came back). Nil when the RTO is 0:
	// no level was ever unhealthy.
	RecoveredAfterHealS *float64 `json:"recovered_after_heal_s"`
	// ConvergeS is from the heal to the end of the first round in which
	// every node's full Merkle exchange found no mismatch; nil: never.
	ConvergeS *float64 `json:"converge_s"`
	// EachQuorumHold is how EACH_QUORUM probes ended during the hold.
	EachQuorumHold *ProbeSummary `json:"each_quorum_hold,omitempty"`
	Writes         SetCheck      `json:"writes"`
}

// PhaseAvailability is a level's availability in one phase ("all": the
// whole drill) for one client DC or all.
type PhaseAvailability struct {
	Level   string  `json:"level"`
	DC      string  `json:"dc"`
	Phase   Phase   `json:"phase"`
	Total   int     `json:"total"`
	OK      int     `json:"ok"`
	Percent float64 `json:"percent"`
	// Failures counts the failed operations by gRPC code.
	Failures map[string]int `json:"failures,omitempty"`
}

// PhaseLatency is the latency of one level's successful operations from
// one client DC (or "all") in one phase.
type PhaseLatency struct {
	Level string  `json:"level"`
	DC    string  `json:"dc"`
	Phase Phase   `json:"phase"`
	Count int64   `json:"count"`
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
}

// ProbeSummary is how probes of one level ended in one phase.
type ProbeSummary struct {
	Count        int            `json:"count"`
	Succeeded    int            `json:"succeeded"`
	ByCode       map[string]int `json:"by_code"`
	MaxLatencyMs float64        `json:"max_latency_ms"`
	DeadlineMs   float64        `json:"deadline_ms"`
}

// availability looks up a phase summary.
func (s Summary) availability(level, dc string, phase Phase) (PhaseAvailability, bool) {
	i := slices.IndexFunc(s.Availability, func(a PhaseAvailability) bool { return a.Level == level && a.DC == dc && a.Phase == phase })
	if i < 0 {
		return PhaseAvailability{}, false
	}
	return s.Availability[i], true
}

func (s Summary) latency(level, dc string, phase Phase) (PhaseLatency, bool) {
	i := slices.IndexFunc(s.Latency, func(l PhaseLatency) bool { return l.Level == level && l.DC == dc && l.Phase == phase })
	if i < 0 {
		return PhaseLatency{}, false
	}
	return s.Latency[i], true
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// ReadJSON reads a report written by WriteJSON.
func ReadJSON(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}

// Verdict returns "PASS" or "FAIL".
func (r *Report) Verdict() string {
	if r.Pass {
		return "PASS"
	}
	return "FAIL"
}

// relHeal says when, relative to the heal, the levels recovered.
func relHeal(s float64) string {
	if s < 0 {
		return fmt.Sprintf("%.1fs before the heal", -s)
	}
	return fmt.Sprintf("%.1fs after the heal", s)
}

// clip shortens s to at most n runes.
func clip(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// codeList formats counts by code as "A=1 B=2", sorted by code.
func codeList(m map[string]int) string {
	out := make([]string, 0, len(m))
	for c, n := range m {
		out = append(out, fmt.Sprintf("%s=%d", c, n))
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func fmtPct(a PhaseAvailability, ok bool) string {
	if !ok || a.Total == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f%% (%d)", a.Percent, a.Total)
}

func fmtSecs(v *float64) string {
	if v == nil {
		return "never"
	}
	return fmt.Sprintf("%.1fs", *v)
}

// WriteTable writes the human summary: phases, availability per level and
// DC per phase, latency, hints, convergence, RTO, writes, and the
// verdicts.
func (r *Report) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "drill %s — %s\n", r.Scenario, r.Verdict())
	var ph []string
	for _, p := range r.Phases {
		ph = append(ph, fmt.Sprintf("%s %.1f–%.1fs", p.Phase, p.StartS, p.EndS))
	}
	fmt.Fprintf(w, "phases: %s\n", strings.Join(ph, ", "))
	if r.Fault != nil {
		fmt.Fprintf(w, "fault %s: %s from %v to %v (both ways: %v), ttl %.0fs, applied on %s\n", r.Fault.ID, r.Fault.Kind,
			r.Fault.FromDCs, r.Fault.ToDCs, r.Fault.BothWays, r.Fault.TTLS, strings.Join(r.Fault.AppliedOn, ","))
	}
	fmt.Fprintln(w)

	cols := []Phase{"all"}
	for _, p := range Phases {
		if _, ok := r.Summary.availability(LocalQuorum, AllDCs, p); ok || p == Hold {
			cols = append(cols, p)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	header := "AVAILABILITY\tDC\t"
	for _, c := range cols {
		header += string(c) + "\t"
	}
	fmt.Fprintln(tw, header)
	for _, l := range Levels {
		for _, dc := range append([]string{AllDCs}, r.Topology.DCs()...) {
			if _, ok := r.Summary.availability(l, dc, "all"); !ok {
				continue
			}
			row := l + "\t" + dc + "\t"
			for _, c := range cols {
				row += fmtPct(r.Summary.availability(l, dc, c)) + "\t"
			}
			fmt.Fprintln(tw, row)
		}
	}
	tw.Flush()
	fmt.Fprintln(w)

	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	header = "LATENCY ms p50 / p99\tDC\t"
	for _, c := range cols {
		header += string(c) + "\t"
	}
	fmt.Fprintln(tw, header)
	type ld struct{ level, dc string }
	var lds []ld
	for _, dc := range r.Topology.DCs() {
		lds = append(lds, ld{LocalQuorum, dc})
	}
	lds = append(lds, ld{Quorum, AllDCs}, ld{EachQuorum, AllDCs})
	for _, x := range lds {
		if _, ok := r.Summary.latency(x.level, x.dc, "all"); !ok {
			continue
		}
		row := x.level + "\t" + x.dc + "\t"
		for _, c := range cols {
			if l, ok := r.Summary.latency(x.level, x.dc, c); ok {
				row += fmt.Sprintf("%.1f / %.1f", l.P50Ms, l.P99Ms) + "\t"
			} else {
				row += "-\t"
			}
		}
		fmt.Fprintln(tw, row)
	}
	tw.Flush()
	fmt.Fprintln(w)

	var failed []string
	for _, l := range Levels {
		for _, p := range Phases {
			if a, ok := r.Summary.availability(l, AllDCs, p); ok && len(a.Failures) > 0 {
				failed = append(failed, fmt.Sprintf("%s %s: %s", l, p, codeList(a.Failures)))
			}
		}
	}
	if len(failed) > 0 {
		fmt.Fprintf(w, "failures by code:\n  %s\n", strings.Join(failed, "\n  "))
	}
	if len(r.ErrorExamples) > 0 {
		keys := make([]string, 0, len(r.ErrorExamples))
		for k := range r.ErrorExamples {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		fmt.Fprintln(w, "first errors seen:")
		for _, k := range keys {
			for _, msg := range r.ErrorExamples[k] {
				fmt.Fprintf(w, "  %s: %s\n", k, clip(msg, 240))
			}
		}
	}
	if len(r.Hints) > 0 {
		var hs []string
		for _, h := range r.Hints {
			hs = append(hs, fmt.Sprintf("%s %d", h.Target, h.Peak))
		}
		fmt.Fprintf(w, "hint backlog, peak per target: %s\n", strings.Join(hs, ", "))
	} else {
		fmt.Fprintln(w, "hint backlog: none seen")
	}
	if eq := r.Summary.EachQuorumHold; eq != nil && eq.Count > 0 {
		fmt.Fprintf(w, "EACH_QUORUM during hold: %d probes, %s, slowest %.0f ms (deadline %.0f ms)\n", eq.Count, codeList(eq.ByCode), eq.MaxLatencyMs, eq.DeadlineMs)
	}
	clean := 0
	for _, rd := range r.Rounds {
		if rd.Clean {
			clean++
		}
	}
	fmt.Fprintf(w, "time to converge after heal: %s (%d repair round(s))\n", fmtSecs(r.Summary.ConvergeS), len(r.Rounds))
	fmt.Fprintf(w, "RTO (fault to every level healthy): %s", fmtSecs(r.Summary.RTOS))
	if a := r.Summary.RecoveredAfterHealS; a != nil {
		fmt.Fprintf(w, ", %s", relHeal(*a))
	} else if r.Summary.RTOS != nil {
		fmt.Fprintf(w, " (no level fell below %g%% in any second)", 100*HealthyRatio)
	}
	fmt.Fprintln(w)
	wr := r.Summary.Writes
	if wr.Checked {
		fmt.Fprintf(w, "set workload: %d acknowledged element(s) over %d key(s), %d lost (read at ALL), %d missing on replicas\n",
			wr.Acked, wr.Keys, wr.Lost, wr.ReplicaMissing())
		if wr.Node != "" {
			fmt.Fprintf(w, "set keys stored on %s: %d of %d\n", wr.Node, wr.NodeKeys, wr.Keys)
		}
	} else {
		fmt.Fprintf(w, "set workload: not checked: %s\n", wr.Error)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "criteria:")
	for _, v := range r.Criteria {
		mark := "PASS"
		if !v.Pass {
			mark = "FAIL"
		}
		fmt.Fprintf(w, "  %s  %s: %s\n", mark, v.Name, v.Got)
	}
	fmt.Fprintf(w, "%s\n", r.Verdict())
	return nil
}
