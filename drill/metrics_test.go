package drill

import (
	"reflect"
	"testing"
	"time"
)

func TestRecovery(t *testing.T) {
	h := func(s string) []bool { // "+" healthy second, "-" unhealthy
		out := make([]bool, len(s))
		for i, c := range s {
			out[i] = c == '+'
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		healthy string
		faultAt time.Duration
		want    Recovery
	}{
		{"never degraded", "++++++++++", 3 * time.Second, Recovery{Recovered: true, At: 3 * time.Second}},
		{"outage of three seconds", "+++---++++", 3 * time.Second, Recovery{Recovered: true, RTO: 3 * time.Second, At: 6 * time.Second}},
		{"fault mid-second", "+++---++++", 3400 * ms, Recovery{Recovered: true, RTO: 2600 * ms, At: 6 * time.Second}},
		{"a failure before the fault does not count", "-++---++++", 3 * time.Second, Recovery{Recovered: true, RTO: 3 * time.Second, At: 6 * time.Second}},
		{"flapping: the last unhealthy second decides", "+++-+-++++", 3 * time.Second, Recovery{Recovered: true, RTO: 3 * time.Second, At: 6 * time.Second}},
		{"still down at the end", "+++-------", 3 * time.Second, Recovery{}},
		{"too few healthy seconds at the end", "+++-----++", 3 * time.Second, Recovery{}},
		{"exactly StableWindows healthy seconds", "+++----+++", 3 * time.Second, Recovery{Recovered: true, RTO: 4 * time.Second, At: 7 * time.Second}},
		{"fault after the last window", "+++", 5 * time.Second, Recovery{}},
	} {
		if got := recovery(h(tc.healthy), tc.faultAt); got != tc.want {
			t.Errorf("%s: recovery(%s, %s) = %+v, want %+v", tc.name, tc.healthy, tc.faultAt, got, tc.want)
		}
	}
}

// steady returns samples of one level from one DC: n per second from
// `from` to `to`, failing with code where fail says so.
func steady(level, dc string, from, to time.Duration, n int, fail func(at time.Duration) string) []Sample {
	var out []Sample
	step := time.Second / time.Duration(n)
	for at := from; at < to; at += step {
		code := CodeOK
		if fail != nil {
			if c := fail(at); c != "" {
				code = c
			}
		}
		out = append(out, Sample{At: at, DC: dc, Level: level, Op: OpWrite, Latency: 5 * ms, Code: code})
	}
	return out
}

func between(from, to time.Duration, code string) func(time.Duration) string {
	return func(at time.Duration) string {
		if at >= from && at < to {
			return code
		}
		return ""
	}
}

func TestAvailabilitySeriesAndGaps(t *testing.T) {
	var s []Sample
	s = append(s, steady(LocalQuorum, "dc1", 0, 4*time.Second, 10, between(time.Second, 2*time.Second, "UNAVAILABLE"))...)
	s = append(s, steady(LocalQuorum, "dc2", 2*time.Second, 4*time.Second, 4, nil)...) // nothing in 0-2s
	s = append(s, Sample{At: 3500 * ms, DC: "dc2", Level: LocalQuorum, Code: "DEADLINE_EXCEEDED"})
	tl := record([]time.Duration{time.Second, time.Second, 2 * time.Second, 2 * time.Second}, 4*time.Second)
	r := Analyze(Input{Topology: topo3(1), Timeline: tl, Samples: s})
	got := map[string][]float64{}
	for _, a := range r.Availability {
		got[a.Level+"/"+a.DC] = a.Values
	}
	want := map[string][]float64{
		LocalQuorum + "/all": {1, 0, 1, 0.9333}, // 14 of 15
		LocalQuorum + "/dc1": {1, 0, 1, 1},
		LocalQuorum + "/dc2": {-1, -1, 1, 0.8},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("availability series = %v, want %v", got, want)
	}
	a, ok := r.Summary.availability(LocalQuorum, "dc2", "all")
	if !ok || a.Total != 9 || a.OK != 8 || a.Failures["DEADLINE_EXCEEDED"] != 1 {
		t.Errorf("dc2 over the drill = %+v, want 8 of 9 with one DEADLINE_EXCEEDED", a)
	}
	if a, ok := r.Summary.availability(LocalQuorum, "dc1", Hold); !ok || a.Total != 10 || a.OK != 0 {
		t.Errorf("dc1 during the hold = %+v, want 0 of 10", a)
	}
}

func topo3(rf int) Topology {
	t := Topology{RF: map[string]int{}}
	for i, dc := range []string{"dc1", "dc2", "dc3"} {
		t.RF[dc] = rf
		for j := range rf {
			t.Nodes = append(t.Nodes, Node{ID: "n" + string(rune('1'+i*rf+j)), DC: dc})
		}
	}
	return t
}

// outage builds the samples of a dc-outage drill of dc3: fault at 10s,
// healed at 20s, EACH_QUORUM failing from the fault until 22s and QUORUM
// from dc3's clients until 21s.
func outage() Input {
	tl := record([]time.Duration{10 * time.Second, 10 * time.Second, 20 * time.Second, 20 * time.Second}, 30*time.Second)
	var s []Sample
	for _, dc := range []string{"dc1", "dc2", "dc3"} {
		s = append(s, steady(LocalQuorum, dc, 0, 30*time.Second, 20, nil)...)
		s = append(s, steady(EachQuorum, dc, 0, 30*time.Second, 5, between(10*time.Second, 22*time.Second, "UNAVAILABLE"))...)
		var q func(time.Duration) string
		if dc == "dc3" {
			q = between(10*time.Second, 21*time.Second, "UNAVAILABLE")
		}
		s = append(s, steady(Quorum, dc, 0, 30*time.Second, 5, q)...)
	}
	return Input{
		Scenario: Scenario{Name: DCOutage, DC: "dc3"}, Topology: topo3(1), Timeline: tl, Samples: s,
		Hints: []HintSample{{At: 12 * time.Second, Target: "n3", Count: 40}, {At: 12500 * ms, Target: "n3", Count: 55},
			{At: 12 * time.Second, Target: "n1", Count: 0}, {At: 21 * time.Second, Target: "n3", Count: 0}},
		Rounds: []RepairRound{
			{Round: 1, Start: 20 * time.Second, End: 22 * time.Second, Nodes: []NodeRepair{{Node: "n1", Mismatches: 3}, {Node: "n2"}, {Node: "n3", Mismatches: 5}}},
			{Round: 2, Start: 22 * time.Second, End: 23 * time.Second, Nodes: []NodeRepair{{Node: "n1"}, {Node: "n2"}, {Node: "n3", Err: "unreachable"}}},
			{Round: 3, Start: 23 * time.Second, End: 24500 * ms, Nodes: []NodeRepair{{Node: "n1"}, {Node: "n2"}, {Node: "n3"}}},
		},
		Set:          SetCheck{Checked: true, Keys: 4, Acked: 100, Replicas: map[string]int{"n1": 0, "n2": 0, "n3": 0}},
		ProbeTimeout: 2 * time.Second,
	}
}

func TestAnalyzeOutage(t *testing.T) {
	r := Analyze(outage())
	if r.Summary.RTOS == nil || *r.Summary.RTOS != 12 {
		t.Errorf("RTO = %v, want 12s (fault at 10s, every level healthy from 22s)", fmtSecs(r.Summary.RTOS))
	}
	if r.Summary.RecoveredAfterHealS == nil || *r.Summary.RecoveredAfterHealS != 2 {
		t.Errorf("recovered after heal = %v, want 2s", fmtSecs(r.Summary.RecoveredAfterHealS))
	}
	if r.Summary.ConvergeS == nil || *r.Summary.ConvergeS != 4.5 {
		t.Errorf("converge = %v, want 4.5s: round 3 is the first clean one (round 2 did not finish on n3)", fmtSecs(r.Summary.ConvergeS))
	}
	eq := r.Summary.EachQuorumHold
	if eq == nil || eq.Count != 150 || eq.Succeeded != 0 || eq.ByCode["UNAVAILABLE"] != 150 || eq.DeadlineMs != 2000 {
		t.Errorf("EACH_QUORUM during the hold = %+v, want 150 probes, all UNAVAILABLE, deadline 2000 ms", eq)
	}
	if len(r.Hints) != 1 || r.Hints[0].Target != "n3" || r.Hints[0].Peak != 55 || r.Hints[0].Values[12] != 55 || r.Hints[0].Values[11] != -1 || r.Hints[0].Values[21] != 0 {
		t.Errorf("hints = %+v, want only n3 (n1 never had any), peak 55 in second 12, a gap before, 0 in second 21", r.Hints)
	}
	if !reflect.DeepEqual(r.HealthyDCs, []string{"dc1", "dc2"}) {
		t.Errorf("healthy DCs = %v, want dc1, dc2", r.HealthyDCs)
	}
	if a, _ := r.Summary.availability(Quorum, "dc3", Hold); a.Percent != 0 {
		t.Errorf("QUORUM from dc3 during the hold = %+v, want 0%%", a)
	}
	if a, _ := r.Summary.availability(Quorum, "dc1", Hold); a.Percent != 100 {
		t.Errorf("QUORUM from dc1 during the hold = %+v, want 100%%", a)
	}
}

func TestAnalyzeNotRecovered(t *testing.T) {
	in := outage()
	for i, s := range in.Samples {
		if s.Level == EachQuorum && s.At >= 10*time.Second {
			in.Samples[i].Code = "UNAVAILABLE" // never comes back
		}
	}
	in.Rounds = in.Rounds[:2]
	r := Analyze(in)
	if r.Summary.RTOS != nil || r.Summary.ConvergeS != nil {
		t.Errorf("RTO %s, converge %s: want neither", fmtSecs(r.Summary.RTOS), fmtSecs(r.Summary.ConvergeS))
	}
}

func TestStableSince(t *testing.T) {
	var s []Sample
	s = append(s, steady(Quorum, "dc1", 0, 10*time.Second, 10, between(4*time.Second, 6*time.Second, "UNAVAILABLE"))...)
	s = append(s, steady(EachQuorum, "dc1", 0, 10*time.Second, 10, nil)...)
	for _, tc := range []struct {
		upTo time.Duration
		want bool
	}{
		{3 * time.Second, true},
		{5 * time.Second, false},
		{8 * time.Second, false}, // second 5 is among the last three
		{9 * time.Second, true},
		{9500 * ms, true}, // the partial second does not count
		{2 * time.Second, false},
	} {
		if got := StableSince(s, []string{Quorum, EachQuorum}, tc.upTo); got != tc.want {
			t.Errorf("StableSince(%s) = %v, want %v", tc.upTo, got, tc.want)
		}
	}
	if StableSince(s, []string{LocalQuorum}, 9*time.Second) {
		t.Error("a level without samples is not healthy")
	}
}

func TestLatencyPerSecond(t *testing.T) {
	var s []Sample
	for i := range 100 {
		s = append(s, Sample{At: time.Duration(i) * 10 * ms, DC: "dc1", Level: LocalQuorum, Code: CodeOK, Latency: time.Duration(i+1) * ms})
	}
	s = append(s, Sample{At: 500 * ms, DC: "dc1", Level: LocalQuorum, Code: "UNAVAILABLE", Latency: time.Minute}) // failures do not count
	s = append(s, Sample{At: 500 * ms, DC: "dc1", Level: Quorum, Code: CodeOK, Latency: time.Minute})             // nor other levels
	lat := latencyPerSecond(s, []string{"dc1", "dc2"}, 2)
	p50, p99 := lat["dc1"][0], lat["dc1"][1]
	near := func(got, want float64) bool { return got >= want && got <= want*1.001 } // HdrHistogram keeps 3 digits
	if !near(p50[0], 50) || !near(p99[0], 99) || p50[1] != -1 {
		t.Errorf("dc1 p50 %v p99 %v, want 50 and 99 ms in second 0, nothing in second 1", p50, p99)
	}
	if lat["dc2"][0][0] != -1 {
		t.Errorf("dc2 = %v, want no value", lat["dc2"])
	}
}

func TestRoundClean(t *testing.T) {
	nodes := []string{"n1", "n2"}
	for _, tc := range []struct {
		name string
		rd   RepairRound
		want bool
	}{
		{"all zero", RepairRound{Nodes: []NodeRepair{{Node: "n1"}, {Node: "n2"}}}, true},
		{"a mismatch", RepairRound{Nodes: []NodeRepair{{Node: "n1", Mismatches: 1}, {Node: "n2"}}}, false},
		{"a node did not finish", RepairRound{Nodes: []NodeRepair{{Node: "n1"}, {Node: "n2", Err: "deadline"}}}, false},
		{"a node is missing", RepairRound{Nodes: []NodeRepair{{Node: "n1"}}}, false},
	} {
		if got := tc.rd.Clean(nodes); got != tc.want {
			t.Errorf("%s: Clean = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestAnalyzeLoadEnd(t *testing.T) {
	// The workload stopped at 30s; verify went on to 40s for the repair
	// rounds. Seconds without load are gaps, not outages.
	in := outage()
	in.Timeline.Finish(40 * time.Second)
	in.LoadEnd = 30 * time.Second
	r := Analyze(in)
	if r.Summary.RTOS == nil || *r.Summary.RTOS != 12 || r.LoadEndS != 30 || r.Seconds != 40 {
		t.Errorf("RTO %s, load end %gs, %d seconds: want 12s, 30s, 40", fmtSecs(r.Summary.RTOS), r.LoadEndS, r.Seconds)
	}
	if v := r.Availability[0].Values[35]; v != -1 {
		t.Errorf("availability after the load stopped = %g, want -1 (nothing measured)", v)
	}
	in.LoadEnd = 0 // judged to the end: the quiet seconds would be unhealthy
	if r := Analyze(in); r.Summary.RTOS != nil {
		t.Errorf("without LoadEnd: RTO %s, want none", fmtSecs(r.Summary.RTOS))
	}
}

func TestProbeOutcomeAtTheEdges(t *testing.T) {
	hold := Span{Phase: Hold, Start: 10 * time.Second, End: 20 * time.Second}
	s := []Sample{
		{At: 9990 * ms, Level: EachQuorum, Latency: 20 * ms, Code: "UNAVAILABLE"}, // due in the baseline
		{At: 10 * time.Second, Level: EachQuorum, Latency: 2 * ms, Code: "UNAVAILABLE"},
		{At: 19 * time.Second, Level: EachQuorum, Latency: 2 * time.Second, Code: "DEADLINE_EXCEEDED"}, // hung past the heal: counts
		{At: 19990 * ms, Level: EachQuorum, Latency: 30 * ms, Code: CodeOK},                            // served after the heal: left out
		{At: 15 * time.Second, Level: Quorum, Code: CodeOK},                                            // another level
	}
	got := probeOutcome(s, EachQuorum, hold)
	if got.Count != 2 || got.Succeeded != 0 || got.ByCode["DEADLINE_EXCEEDED"] != 1 || got.MaxLatency != 2*time.Second {
		t.Errorf("probeOutcome = %+v, want the two failures due in the hold, the hang included", got)
	}
}

func TestRecoveredMatchesTheReport(t *testing.T) {
	in := outage()
	levels := in.Scenario.ExpectedAfterHeal()
	for _, upTo := range []time.Duration{15 * time.Second, 24 * time.Second, 25 * time.Second, 30 * time.Second} {
		in.LoadEnd = upTo
		want := Analyze(in).Summary.RTOS != nil
		if got := Recovered(in.Samples, levels, 10*time.Second, upTo); got != want {
			t.Errorf("Recovered(up to %s) = %v, the report says %v", upTo, got, want)
		}
	}
}
