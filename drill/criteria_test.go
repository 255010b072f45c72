package drill

import (
	"strings"
	"testing"
	"time"
)

func TestEvaluate(t *testing.T) {
	crit := DefaultCriteria()
	verdicts := func(r *Report) map[string]Verdict {
		out := map[string]Verdict{}
		for _, v := range r.Criteria {
			out[v.Name] = v
		}
		return out
	}
	const (
		lq       = "LOCAL_QUORUM availability in healthy DCs"
		lost     = "acknowledged writes lost"
		replicas = "every replica holds every acknowledged element"
		conv     = "converged after heal"
		rto      = "recovered (RTO)"
		eq       = "EACH_QUORUM fails fast during the outage"
	)
	for _, tc := range []struct {
		name   string
		crit   func(*Criteria)
		change func(*Input)
		fail   []string // criteria that must fail; every other one passes
		got    string   // in the failing verdict's Got
	}{
		{name: "a clean outage passes"},
		{name: "LOCAL_QUORUM below 99% in a healthy DC", change: func(in *Input) {
			for i, s := range in.Samples {
				if s.Level == LocalQuorum && s.DC == "dc2" && s.At >= 10*time.Second && s.At < 16*time.Second {
					in.Samples[i].Code = "UNAVAILABLE"
				}
			}
		}, fail: []string{lq}, got: "dc2 80.00% of 600"},
		{name: "LOCAL_QUORUM down in the outaged DC does not count", change: func(in *Input) {
			for i, s := range in.Samples {
				if s.Level == LocalQuorum && s.DC == "dc3" && s.At >= 10*time.Second && s.At < 20*time.Second {
					in.Samples[i].Code = "UNAVAILABLE"
				}
			}
		}}, // and it was back (20s) before EACH_QUORUM (22s): the RTO stays 12s
		{name: "a lost write", change: func(in *Input) {
			in.Set.Lost, in.Set.LostExamples = 1, []string{"dc1-000007 in drill/set/2"}
		}, fail: []string{lost}, got: "1 of 100 (e.g. dc1-000007 in drill/set/2)"},
		{name: "the set could not be checked", change: func(in *Input) {
			in.Set = SetCheck{Error: "read at ALL: UNAVAILABLE"}
		}, fail: []string{lost, replicas}, got: "not checked: read at ALL: UNAVAILABLE"},
		{name: "nothing acknowledged proves nothing", change: func(in *Input) { in.Set.Acked = 0 }, fail: []string{lost}},
		{name: "a node-level drill's node stores some sets checked", change: func(in *Input) { in.Set.Node, in.Set.NodeKeys = "n2", 1 }},
		{name: "a node-level drill's node stores no set checked", change: func(in *Input) { in.Set.Node, in.Set.NodeKeys = "n2", 0 },
			fail: []string{lost}, got: "no set checked is stored on n2"},
		{name: "a replica missing elements", change: func(in *Input) { in.Set.Replicas["n2"] = 3 }, fail: []string{replicas}, got: "n2 lacks 3"},
		{name: "a replica unreadable", change: func(in *Input) { in.Set.ReplicaErrors = map[string]string{"n3": "deadline"} }, fail: []string{replicas}, got: "n3 unreadable: deadline"},
		{name: "never converged", change: func(in *Input) { in.Rounds = in.Rounds[:2] }, fail: []string{conv}, got: "not converged (2 round(s))"},
		{name: "converged too late", crit: func(c *Criteria) { c.MaxConverge = 4 * time.Second }, fail: []string{conv}, got: "4.5s"},
		{name: "RTO over its bound", crit: func(c *Criteria) { c.MaxRTO = 10 * time.Second }, fail: []string{rto}, got: "RTO 12.0s (2.0s after the heal)"},
		{name: "RTO within its bound", crit: func(c *Criteria) { c.MaxRTO = 12 * time.Second }},
		{name: "EACH_QUORUM hangs until its deadline", change: func(in *Input) {
			for i, s := range in.Samples {
				if s.Level == EachQuorum && s.At >= 10*time.Second && s.At < 11*time.Second {
					in.Samples[i].Code, in.Samples[i].Latency = "DEADLINE_EXCEEDED", 2*time.Second
				}
			}
		}, fail: []string{eq}, got: "150 probes: DEADLINE_EXCEEDED=15 UNAVAILABLE=135; slowest 2000 ms"},
		{name: "a few EACH_QUORUM probes hang, answered just before their deadline", change: func(in *Input) {
			hung := 0
			for i, s := range in.Samples {
				if s.Level == EachQuorum && s.At >= 10*time.Second && hung < 1 {
					in.Samples[i].Code, in.Samples[i].Latency = "DEADLINE_EXCEEDED", 1980*ms
					hung++
				}
			}
		}, fail: []string{eq}},
		{name: "EACH_QUORUM UNAVAILABLE, but only after most of its deadline", change: func(in *Input) {
			in.Samples = append(in.Samples, Sample{At: 15 * time.Second, DC: "dc1", Level: EachQuorum, Latency: 1500 * ms, Code: "UNAVAILABLE"})
		}, fail: []string{eq}},
		{name: "EACH_QUORUM slow but UNAVAILABLE, past the deadline", change: func(in *Input) {
			in.Samples = append(in.Samples, Sample{At: 15 * time.Second, DC: "dc1", Level: EachQuorum, Latency: 2100 * ms, Code: "UNAVAILABLE"})
		}, fail: []string{eq}},
		{name: "EACH_QUORUM succeeded during the outage", change: func(in *Input) {
			in.Samples = append(in.Samples, Sample{At: 15 * time.Second, DC: "dc1", Level: EachQuorum, Latency: ms, Code: CodeOK})
		}, fail: []string{eq}},
		{name: "no EACH_QUORUM probe", change: func(in *Input) {
			var keep []Sample
			for _, s := range in.Samples {
				if s.Level != EachQuorum {
					keep = append(keep, s)
				}
			}
			in.Samples = keep
		}, fail: []string{eq, rto}, got: "no EACH_QUORUM probe ran during the hold"},
		{name: "slow-dc has no EACH_QUORUM criterion", change: func(in *Input) {
			in.Scenario = Scenario{Name: SlowDC, DC: "dc3", Delay: 50 * ms}
		}}, // EACH_QUORUM failing for 12s only lengthens the RTO
	} {
		in := outage()
		if tc.change != nil {
			tc.change(&in)
		}
		c := crit
		if tc.crit != nil {
			tc.crit(&c)
		}
		r := Analyze(in)
		pass := c.Evaluate(r, in.ProbeTimeout)
		vs := verdicts(r)
		if pass != (len(tc.fail) == 0) || r.Pass != pass {
			t.Errorf("%s: Evaluate = %v, report.Pass = %v, want %v", tc.name, pass, r.Pass, len(tc.fail) == 0)
		}
		for name, v := range vs {
			failing := false
			for _, f := range tc.fail {
				failing = failing || f == name
			}
			if v.Pass == failing {
				t.Errorf("%s: %q pass = %v, want %v (got %q)", tc.name, name, v.Pass, !failing, v.Got)
			}
			if failing && tc.got != "" && name == tc.fail[0] && !strings.Contains(v.Got, tc.got) {
				t.Errorf("%s: %q got %q, want it to contain %q", tc.name, name, v.Got, tc.got)
			}
		}
		if _, ok := vs[eq]; ok != (in.Scenario.Name == DCOutage) {
			t.Errorf("%s: the EACH_QUORUM criterion is there: %v; want it only for dc-outage", tc.name, ok)
		}
	}
}

func TestCriteriaDescribedUpFront(t *testing.T) {
	lines := DefaultCriteria().Describe(Scenario{Name: DCOutage, DC: "dc3"}, topo3(3), 2*time.Second)
	text := strings.Join(lines, "\n")
	for _, want := range []string{
		"LOCAL_QUORUM availability in healthy DCs: ≥ 99% over the whole drill for the clients of dc1, dc2",
		"acknowledged writes lost: 0",
		"within 2m0s of the heal",
		"EACH_QUORUM fails fast during the outage: every probe in the hold fails, ≥ 99% with UNAVAILABLE, none by running out of time, each within half its 2s deadline",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("criteria:\n%s\nwant a line with %q", text, want)
		}
	}
	if strings.Contains(strings.Join(DefaultCriteria().Describe(Scenario{Name: NodeCrash, Node: "n9"}, topo3(3), time.Second), "\n"), "EACH_QUORUM") {
		t.Error("node-crash: EACH_QUORUM must not be required to fail")
	}
}

func TestCriteriaValidate(t *testing.T) {
	for _, tc := range []struct {
		c    Criteria
		want string
	}{
		{Criteria{MinLocalAvailability: 101, MaxConverge: time.Second}, "--min-availability"},
		{Criteria{MinLocalAvailability: 99}, "--max-converge"},
		{Criteria{MinLocalAvailability: 99, MaxConverge: time.Second, MaxRTO: -time.Second}, "--max-rto"},
	} {
		if err := tc.c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want an error naming %s", tc.c, err, tc.want)
		}
	}
}
