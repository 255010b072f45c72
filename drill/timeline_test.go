package drill

import (
	"strings"
	"testing"
	"time"
)

const ms = time.Millisecond

// record builds a timeline from phase starts (baseline at 0) and an end.
func record(starts []time.Duration, end time.Duration) Timeline {
	var t Timeline
	t.Begin(Baseline, 0)
	for i, at := range starts {
		t.Begin(Phases[i+1], at)
	}
	t.Finish(end)
	return t
}

func TestTimelinePhaseAt(t *testing.T) {
	tl := record([]time.Duration{10 * time.Second, 10100 * ms, 30100 * ms, 30200 * ms}, 45*time.Second)
	if err := tl.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		at   time.Duration
		want Phase
	}{
		{0, Baseline},
		{9999 * ms, Baseline},
		{10 * time.Second, Induce}, // a boundary belongs to the phase starting there
		{10050 * ms, Induce},
		{10100 * ms, Hold},
		{30099 * ms, Hold},
		{30100 * ms, Heal},
		{30200 * ms, Verify},
		{45 * time.Second, Verify}, // the end belongs to the last phase
		{46 * time.Second, ""},
		{-time.Second, ""},
	} {
		if got := tl.PhaseAt(tc.at); got != tc.want {
			t.Errorf("PhaseAt(%s) = %q, want %q", tc.at, got, tc.want)
		}
	}
	if at, ok := tl.FaultAt(); !ok || at != 10100*ms {
		t.Errorf("FaultAt = %s, %v; want the end of induce, 10.1s", at, ok)
	}
	if at, ok := tl.HealedAt(); !ok || at != 30200*ms {
		t.Errorf("HealedAt = %s, %v; want the end of heal, 30.2s", at, ok)
	}
	if tl.End() != 45*time.Second {
		t.Errorf("End = %s", tl.End())
	}
}

func TestTimelineInstantPhases(t *testing.T) {
	// A kill -9 takes no time: induce has no length and holds no offset.
	tl := record([]time.Duration{5 * time.Second, 5 * time.Second, 9 * time.Second, 12 * time.Second}, 20*time.Second)
	if err := tl.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := tl.PhaseAt(5 * time.Second); got != Hold {
		t.Errorf("PhaseAt(5s) = %q, want hold (induce took no time)", got)
	}
	if at, _ := tl.FaultAt(); at != 5*time.Second {
		t.Errorf("FaultAt = %s, want 5s", at)
	}
}

func TestTimelineUnfinished(t *testing.T) {
	// Interrupted during heal: there is a fault, but no healed time.
	tl := record([]time.Duration{time.Second, 2 * time.Second, 3 * time.Second}, 4*time.Second)
	if _, ok := tl.FaultAt(); !ok {
		t.Error("FaultAt: want the end of induce")
	}
	if _, ok := tl.HealedAt(); ok {
		t.Error("HealedAt: a heal that never reached verify must not count")
	}
}

func TestTimelineValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		tl   Timeline
		want string
	}{
		{"out of order", Timeline{Spans: []Span{{Baseline, 0, time.Second}, {Hold, time.Second, 2 * time.Second}}}, "phase 1 is hold, want induce"},
		{"gap", Timeline{Spans: []Span{{Baseline, 0, time.Second}, {Induce, 2 * time.Second, 3 * time.Second}}}, "not where baseline ended"},
		{"backwards", Timeline{Spans: []Span{{Baseline, time.Second, 0}}}, "ends (0s) before it starts"},
		{"too many", Timeline{Spans: []Span{{Baseline, 0, 0}, {Induce, 0, 0}, {Hold, 0, 0}, {Heal, 0, 0}, {Verify, 0, 0}, {Verify, 0, 0}}}, "want none"},
	} {
		err := tc.tl.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestDurationsValidate(t *testing.T) {
	def := DefaultDurations()
	if err := def.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, tc := range []struct {
		change func(*Durations)
		want   string
	}{
		{func(d *Durations) { d.Baseline = 0 }, "--baseline"},
		{func(d *Durations) { d.Hold = 500 * ms }, "--hold"},
		{func(d *Durations) { d.VerifyMin = 0 }, "--verify-min"},
		{func(d *Durations) { d.VerifyTimeout = d.VerifyMin - time.Second }, "--verify-timeout"},
		{func(d *Durations) { d.VerifyTimeout = d.VerifyMin }, "must be longer than --verify-min"},
	} {
		d := def
		tc.change(&d)
		if err := d.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want an error naming %s", d, err, tc.want)
		}
	}
}
