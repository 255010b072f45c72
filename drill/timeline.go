package drill

import (
	"fmt"
	"time"
)

// Phase is one step of a drill.
type Phase string

// The phases, in order.
const (
	Baseline Phase = "baseline"
	Induce   Phase = "induce"
	Hold     Phase = "hold"
	Heal     Phase = "heal"
	Verify   Phase = "verify"
)

// Phases lists the phases in order.
var Phases = []Phase{Baseline, Induce, Hold, Heal, Verify}

// Durations are the drill's phase lengths. Induce and heal take as long as
// injecting and clearing the fault (or killing and restarting a node)
// take; verify runs until the cluster recovered and converged, at least
// VerifyMin and at most VerifyTimeout.
type Durations struct {
	Baseline      time.Duration `json:"baseline"`
	Hold          time.Duration `json:"hold"`
	VerifyMin     time.Duration `json:"verify_min"`
	VerifyTimeout time.Duration `json:"verify_timeout"`
	// Settle is how long the final check waits, in all, for replicas that
	// lack acknowledged elements to receive them (the last writes'
	// background replication, hints) before it counts them missing
	// (default 15s). It reads the replicas before anything at ALL, so no
	// read repair of its own can fill them.
	Settle time.Duration `json:"settle,omitempty"`
}

// DefaultDurations are the phase lengths of a drill without flags.
func DefaultDurations() Durations {
	return Durations{Baseline: 10 * time.Second, Hold: 20 * time.Second, VerifyMin: 5 * time.Second, VerifyTimeout: 120 * time.Second, Settle: 15 * time.Second}
}

// Validate says which duration is wrong.
func (d Durations) Validate() error {
	switch {
	case d.Baseline < time.Second:
		return fmt.Errorf("--baseline %s: give at least 1s, so the drill has healthy seconds to compare with", d.Baseline)
	case d.Hold < time.Second:
		return fmt.Errorf("--hold %s: give at least 1s", d.Hold)
	case d.VerifyMin < time.Second:
		return fmt.Errorf("--verify-min %s: give at least 1s", d.VerifyMin)
	case d.VerifyTimeout <= d.VerifyMin:
		// Verify times out at VerifyTimeout before it may pass at
		// VerifyMin: equal, the drill could only fail.
		return fmt.Errorf("--verify-timeout %s must be longer than --verify-min %s (verification may end no sooner than --verify-min, and fails at --verify-timeout)", d.VerifyTimeout, d.VerifyMin)
	}
	return nil
}

// Span is when one phase ran, as offsets from the drill's start.
type Span struct {
	Phase Phase         `json:"phase"`
	Start time.Duration `json:"start"`
	End   time.Duration `json:"end"`
}

// Timeline is when each phase ran. The fault is in place from the end of
// induce to the start of heal; the cluster is healed from the end of heal.
type Timeline struct {
	Spans []Span `json:"spans"`
}

// Begin ends the current phase at `at` and starts p (the shell's recorder).
func (t *Timeline) Begin(p Phase, at time.Duration) {
	if n := len(t.Spans); n > 0 && t.Spans[n-1].End < at {
		t.Spans[n-1].End = at
	}
	t.Spans = append(t.Spans, Span{Phase: p, Start: at, End: at})
}

// Finish ends the last phase at `at`.
func (t *Timeline) Finish(at time.Duration) {
	if n := len(t.Spans); n > 0 {
		t.Spans[n-1].End = at
	}
}

// Span returns the span of phase p.
func (t Timeline) Span(p Phase) (Span, bool) {
	for _, s := range t.Spans {
		if s.Phase == p {
			return s, true
		}
	}
	return Span{}, false
}

// PhaseAt returns the phase running at offset d ("" outside the drill).
// A boundary belongs to the phase that starts there (the drill's end to
// the last phase); a phase of no length holds no offset.
func (t Timeline) PhaseAt(d time.Duration) Phase {
	for i := len(t.Spans) - 1; i >= 0; i-- {
		s := t.Spans[i]
		if d >= s.Start && (d < s.End || (i == len(t.Spans)-1 && d == s.End)) {
			return s.Phase
		}
	}
	return ""
}

// FaultAt is when the fault was in place (the end of induce).
func (t Timeline) FaultAt() (time.Duration, bool) {
	s, ok := t.Span(Induce)
	return s.End, ok
}

// HealedAt is when the cluster was healed (the end of heal).
func (t Timeline) HealedAt() (time.Duration, bool) {
	s, ok := t.Span(Heal)
	if !ok {
		return 0, false
	}
	if _, verifying := t.Span(Verify); !verifying {
		return 0, false // heal never finished
	}
	return s.End, ok
}

// End is when the last phase ended.
func (t Timeline) End() time.Duration {
	if len(t.Spans) == 0 {
		return 0
	}
	return t.Spans[len(t.Spans)-1].End
}

// Validate checks that the phases are in order, contiguous and none runs
// backwards.
func (t Timeline) Validate() error {
	for i, s := range t.Spans {
		if s.End < s.Start {
			return fmt.Errorf("phase %s ends (%s) before it starts (%s)", s.Phase, s.End, s.Start)
		}
		if i >= len(Phases) || s.Phase != Phases[i] {
			return fmt.Errorf("phase %d is %s, want %s", i, s.Phase, phaseName(i))
		}
		if i > 0 && s.Start != t.Spans[i-1].End {
			return fmt.Errorf("phase %s starts at %s, not where %s ended (%s)", s.Phase, s.Start, t.Spans[i-1].Phase, t.Spans[i-1].End)
		}
	}
	return nil
}

func phaseName(i int) Phase {
	if i < len(Phases) {
		return Phases[i]
	}
	return "none"
}
