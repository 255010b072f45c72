package drill

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Criteria are the abort criteria a drill is judged by. The zero value
// means the defaults (DefaultCriteria).
type Criteria struct {
	// MinLocalAvailability is the LOCAL_QUORUM availability, in percent
	// over the whole drill, that each healthy DC's clients must see.
	MinLocalAvailability float64
	// MaxConverge bounds the time from heal until a full Merkle exchange
	// on every node finds no mismatch.
	MaxConverge time.Duration
	// MaxRTO, when positive, bounds the time from the fault until every
	// level is healthy again; zero only requires that they are before
	// the drill ends.
	MaxRTO time.Duration
}

// DefaultCriteria are the criteria of a drill without flags.
func DefaultCriteria() Criteria {
	return Criteria{MinLocalAvailability: 99, MaxConverge: 120 * time.Second}
}

// Validate says which criterion is out of range.
func (c Criteria) Validate() error {
	switch {
	case c.MinLocalAvailability < 0 || c.MinLocalAvailability > 100:
		return fmt.Errorf("--min-availability %g: give a percentage from 0 to 100", c.MinLocalAvailability)
	case c.MaxConverge <= 0:
		return fmt.Errorf("--max-converge %s: give a positive duration (e.g. 120s)", c.MaxConverge)
	case c.MaxRTO < 0:
		return fmt.Errorf("--max-rto %s: give a positive duration, or 0 for no bound", c.MaxRTO)
	}
	return nil
}

// Verdict is one criterion judged.
type Verdict struct {
	Name string `json:"name"`
	Want string `json:"want"`
	Got  string `json:"got"`
	Pass bool   `json:"pass"`
}

// check is one criterion: what it wants, and how a report meets it.
type check struct {
	name, want string
	judge      func(r *Report) (got string, pass bool)
}

func (c Criteria) checks(s Scenario, t Topology, probeTimeout time.Duration) []check {
	healthy := s.HealthyDCs(t)
	var out []check
	out = append(out, check{
		name: "LOCAL_QUORUM availability in healthy DCs",
		want: fmt.Sprintf("≥ %g%% over the whole drill for the clients of %s", c.MinLocalAvailability, orNone(healthy)),
		judge: func(r *Report) (string, bool) {
			if len(healthy) == 0 {
				return "no DC is expected to stay available in this scenario", true
			}
			pass := true
			var got []string
			for _, dc := range healthy {
				a, ok := r.Summary.availability(LocalQuorum, dc, "all")
				if !ok || a.Total == 0 {
					got = append(got, dc+" no requests")
					pass = false
					continue
				}
				got = append(got, fmt.Sprintf("%s %.2f%% of %d", dc, a.Percent, a.Total))
				pass = pass && a.Percent >= c.MinLocalAvailability
			}
			return strings.Join(got, ", "), pass
		},
	})
	out = append(out, check{
		name: "acknowledged writes lost",
		want: "0 (set elements acknowledged but missing from a read at ALL)",
		judge: func(r *Report) (string, bool) {
			w := r.Summary.Writes
			if !w.Checked {
				return "not checked: " + w.Error, false
			}
			got := fmt.Sprintf("%d of %d", w.Lost, w.Acked)
			if len(w.LostExamples) > 0 {
				got += " (e.g. " + strings.Join(w.LostExamples, ", ") + ")"
			}
			if w.Node != "" && w.NodeKeys == 0 {
				// The drill's node stores none of the sets checked: the
				// writes it missed were never looked at.
				return got + "; but no set checked is stored on " + w.Node + ", so nothing is known about the writes it missed", false
			}
			return got, w.Lost == 0 && w.Acked > 0
		},
	})
	out = append(out, check{
		name: "every replica holds every acknowledged element",
		want: "0 missing on every replica (admin ReplicaGet after the drill)",
		judge: func(r *Report) (string, bool) {
			w := r.Summary.Writes
			if !w.Checked {
				return "not checked: " + w.Error, false
			}
			var bad []string
			for node, n := range w.Replicas {
				if n > 0 {
					bad = append(bad, fmt.Sprintf("%s lacks %d", node, n))
				}
			}
			for node, e := range w.ReplicaErrors {
				bad = append(bad, fmt.Sprintf("%s unreadable: %s", node, e))
			}
			sort.Strings(bad)
			if len(bad) > 0 {
				return strings.Join(bad, "; "), false
			}
			return fmt.Sprintf("0 missing on %d replica(s)", len(w.Replicas)), true
		},
	})
	out = append(out, check{
		name: "converged after heal",
		want: fmt.Sprintf("a full Merkle exchange on every node finds 0 mismatches within %s of the heal", c.MaxConverge),
		judge: func(r *Report) (string, bool) {
			if r.Summary.ConvergeS == nil {
				return fmt.Sprintf("not converged (%d round(s))", len(r.Rounds)), false
			}
			return fmt.Sprintf("%.1fs", *r.Summary.ConvergeS), *r.Summary.ConvergeS <= c.MaxConverge.Seconds()
		},
	})
	want := fmt.Sprintf("every level ≥ %g%% in each 1s window again before the drill ends, and stays so", 100*HealthyRatio)
	if c.MaxRTO > 0 {
		want = fmt.Sprintf("every level ≥ %g%% in each 1s window again within %s of the fault, and stays so", 100*HealthyRatio, c.MaxRTO)
	}
	out = append(out, check{
		name: "recovered (RTO)",
		want: want,
		judge: func(r *Report) (string, bool) {
			if r.Summary.RTOS == nil {
				return "not recovered before the drill ended", false
			}
			got := fmt.Sprintf("RTO %.1fs", *r.Summary.RTOS)
			if a := r.Summary.RecoveredAfterHealS; a != nil {
				got += " (" + relHeal(*a) + ")"
			} else {
				got += " (never degraded)"
			}
			return got, c.MaxRTO <= 0 || *r.Summary.RTOS <= c.MaxRTO.Seconds()
		},
	})
	if s.EachQuorumMustFail() {
		out = append(out, check{
			name: "EACH_QUORUM fails fast during the outage",
			want: fmt.Sprintf("every probe in the hold fails, ≥ %g%% with UNAVAILABLE, none by running out of time, each within half its %s deadline", 100*HealthyRatio, probeTimeout),
			judge: func(r *Report) (string, bool) {
				eq := r.Summary.EachQuorumHold
				if eq == nil || eq.Count == 0 {
					return "no EACH_QUORUM probe ran during the hold", false
				}
				got := fmt.Sprintf("%d probes: %s; slowest %.0f ms", eq.Count, codeList(eq.ByCode), eq.MaxLatencyMs)
				unavailable := float64(eq.ByCode["UNAVAILABLE"]) / float64(eq.Count)
				// A probe that hung until its deadline comes back a little
				// before it (the coordinator answers first), so "within the
				// deadline" cannot tell it from a fast failure: none may run
				// out of time, and the slowest must be well inside it.
				fast := eq.ByCode["DEADLINE_EXCEEDED"] == 0 && eq.MaxLatencyMs < eq.DeadlineMs/2
				return got, eq.Succeeded == 0 && unavailable >= HealthyRatio && fast
			},
		})
	}
	return out
}

// Describe lists the criteria as the drill prints them before it starts.
func (c Criteria) Describe(s Scenario, t Topology, probeTimeout time.Duration) []string {
	var out []string
	for _, ch := range c.checks(s, t, probeTimeout) {
		out = append(out, ch.name+": "+ch.want)
	}
	return out
}

// Evaluate judges a report by the criteria, sets its verdicts and Pass,
// and returns Pass.
func (c Criteria) Evaluate(r *Report, probeTimeout time.Duration) bool {
	r.Criteria = nil
	r.Pass = true
	for _, ch := range c.checks(r.Scenario, r.Topology, probeTimeout) {
		got, pass := ch.judge(r)
		r.Criteria = append(r.Criteria, Verdict{Name: ch.name, Want: ch.want, Got: got, Pass: pass})
		r.Pass = r.Pass && pass
	}
	return r.Pass
}

func orNone(dcs []string) string {
	if len(dcs) == 0 {
		return "no DC"
	}
	return strings.Join(dcs, ", ")
}
