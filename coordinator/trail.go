package coordinator

import (
	"sync"
	"time"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
)

// trail records an explained request's events. A nil trail (explain off)
// records nothing and costs nothing.
type trail struct {
	now   func() time.Time
	start time.Time
	mu    struct {
		sync.Mutex
		ev []*kvv1.Event
	}
}

func newTrail(on bool, now func() time.Time) *trail {
	if !on {
		return nil
	}
	return &trail{now: now, start: now()}
}

// on reports whether the trail records anything (explain was asked for):
// callers build costly details only then.
func (t *trail) on() bool { return t != nil }

// add records that node did action with the given outcome, taking d (which
// ended now).
func (t *trail) add(node, action, detail string, d time.Duration) {
	if t == nil {
		return
	}
	end := t.now()
	ev := &kvv1.Event{
		OffsetMicros:   end.Add(-d).Sub(t.start).Microseconds(),
		DurationMicros: d.Microseconds(),
		Node:           node,
		Action:         action,
		Detail:         detail,
	}
	t.mu.Lock()
	t.mu.ev = append(t.mu.ev, ev)
	t.mu.Unlock()
}

// events returns the events so far, in order of their start.
func (t *trail) events() []*kvv1.Event {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*kvv1.Event, len(t.mu.ev))
	copy(out, t.mu.ev)
	sortEvents(out)
	return out
}

func sortEvents(ev []*kvv1.Event) {
	for i := 1; i < len(ev); i++ {
		for j := i; j > 0 && ev[j].OffsetMicros < ev[j-1].OffsetMicros; j-- {
			ev[j], ev[j-1] = ev[j-1], ev[j]
		}
	}
}
