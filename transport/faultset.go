package transport

import (
	"math/rand/v2"
	"slices"
	"time"
)

// Rule is one injected fault toward a set of target nodes. Calls to a
// target are cut (fail as unreachable), dropped (DropPercent of them fail
// the same way before they are sent), delayed (Delay plus up to Jitter) or
// lose their replies, until the rule expires.
type Rule struct {
	// ID names the rule: adding a rule with the ID of another replaces it.
	ID string
	// Nodes and DCs are the targets, by node ID and by datacenter; both
	// empty: every node.
	Nodes []string
	DCs   []string
	// Cut fails every call to a target as unreachable.
	Cut bool
	// Delay (plus a uniform random part of Jitter) is waited before each
	// call to a target is sent.
	Delay, Jitter time.Duration
	// DropPercent (0–100) of calls to a target fail as unreachable before
	// they are sent.
	DropPercent float64
	// LoseReplies lets calls reach a target but fails them as if the
	// connection dropped after the request was applied.
	LoseReplies bool
	// Expires is when the rule stops applying (zero: never).
	Expires time.Time
}

// live reports whether the rule still applies at now.
func (r Rule) live(now time.Time) bool { return r.Expires.IsZero() || now.Before(r.Expires) }

// targets reports whether node (in dc) is one of the rule's targets.
func (r Rule) targets(node string, dc func() string) bool {
	if len(r.Nodes) == 0 && len(r.DCs) == 0 {
		return true
	}
	return slices.Contains(r.Nodes, node) || (len(r.DCs) > 0 && slices.Contains(r.DCs, dc()))
}

// verdict is what the live rules say about one call (or gossip message).
type verdict struct {
	cut, drop, lose bool
	rule            string // the rule that cut or dropped it
	waitRule        string // the rule that set wait
	wait            time.Duration
	// waitEnds is when the rule that set wait expires (zero: never): a
	// wait never outlasts its rule.
	waitEnds time.Time
}

// decide applies the live rules to one call to node: each dropping rule
// draws once, each delaying rule draws its jitter once; the longest wait
// wins.
func (f *Faults) decide(node string) verdict { return f.decideOnce(node, true) }

// redecide is decide for a call already decided, while it waits out a
// delay and the rules change: it draws nothing (its drops were drawn,
// once; a rule's jitter counts in full, so only a shorter delay shortens
// the wait), and only a cut, an expired or removed delay, or a lost reply
// changes the verdict.
func (f *Faults) redecide(node string) verdict { return f.decideOnce(node, false) }

func (f *Faults) decideOnce(node string, draw bool) verdict {
	var v verdict
	f.eachLive(node, func(r Rule, rnd func() float64) bool {
		switch {
		case r.Cut:
			if !v.cut && !v.drop {
				v.rule = r.ID
			}
			v.cut = true
		case draw && r.DropPercent > 0 && !v.drop && !v.cut && rnd()*100 < r.DropPercent:
			v.drop, v.rule = true, r.ID
		}
		v.lose = v.lose || r.LoseReplies
		d := r.Delay
		switch {
		case r.Jitter > 0 && draw:
			d += time.Duration(rnd() * float64(r.Jitter))
		case r.Jitter > 0:
			d += r.Jitter
		}
		if d > v.wait {
			v.wait, v.waitEnds, v.waitRule = d, r.Expires, r.ID
		}
		return true
	})
	return v
}

// liveRule returns the live rule id if it targets node.
func (f *Faults) liveRule(node, id string) (Rule, bool) {
	var found Rule
	ok := false
	f.eachLive(node, func(r Rule, _ func() float64) bool {
		if r.ID == id {
			found, ok = r, true
			return false
		}
		return true
	})
	return found, ok
}

// eachLive calls fn with each live rule that targets node, in order, until
// fn returns false; node's DC is looked up at most once, and only if a
// rule names DCs.
func (f *Faults) eachLive(node string, fn func(r Rule, rnd func() float64) bool) {
	f.mu.RLock()
	rules, now, rnd := f.mu.rules, f.mu.now, f.mu.rand
	f.mu.RUnlock()
	if len(rules) == 0 {
		return
	}
	t := now()
	dcKnown, dc := false, ""
	dcOf := func() string {
		if !dcKnown && f.DCOf != nil {
			dc, dcKnown = f.DCOf(node), true
		}
		return dc
	}
	for _, r := range rules {
		if r.live(t) && r.targets(node, dcOf) && !fn(r, rnd) {
			return
		}
	}
}

// Add adds a rule, replacing the rule with the same ID if there is one.
func (f *Faults) Add(r Rule) {
	r.Nodes, r.DCs = slices.Clone(r.Nodes), slices.Clone(r.DCs)
	f.mu.Lock()
	defer f.mu.Unlock()
	// Copy on write: decide reads the slice without the lock.
	rules := slices.DeleteFunc(slices.Clone(f.mu.rules), func(x Rule) bool { return x.ID == r.ID })
	f.mu.rules = append(rules, r)
	f.changedLocked()
}

// changedLocked wakes the calls waiting out a delay: the rules changed.
func (f *Faults) changedLocked() {
	if f.mu.changed != nil {
		close(f.mu.changed)
		f.mu.changed = nil
	}
}

// changes returns a channel closed at the next change of the rules.
func (f *Faults) changes() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mu.changed == nil {
		f.mu.changed = make(chan struct{})
	}
	return f.mu.changed
}

// Remove removes the rule with this ID and reports whether there was one.
func (f *Faults) Remove(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := slices.IndexFunc(f.mu.rules, func(x Rule) bool { return x.ID == id })
	if i < 0 {
		return false
	}
	f.mu.rules = slices.Delete(slices.Clone(f.mu.rules), i, i+1)
	f.changedLocked()
	return true
}

// Clear removes every rule.
func (f *Faults) Clear() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mu.rules = nil
	f.changedLocked()
}

// List returns the rules that have not expired, sorted by ID.
func (f *Faults) List() []Rule {
	f.mu.RLock()
	rules, now := f.mu.rules, f.mu.now
	f.mu.RUnlock()
	t := now()
	out := make([]Rule, 0, len(rules))
	for _, r := range rules {
		if r.live(t) {
			r.Nodes, r.DCs = slices.Clone(r.Nodes), slices.Clone(r.DCs)
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b Rule) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

// Drops reports whether a message to node is lost: the node is cut off,
// or a drop rule drew it. Gossip asks it for every message it sends.
func (f *Faults) Drops(node string) bool {
	v := f.decide(node)
	return v.cut || v.drop
}

// Cuts reports whether a live rule cuts the link to node. Drops and
// delays do not count (and draw nothing): they model a lossy or slow
// network, which slows a connection rather than breaking it.
func (f *Faults) Cuts(node string) bool {
	cut := false
	f.eachLive(node, func(r Rule, _ func() float64) bool {
		cut = r.Cut
		return !cut
	})
	return cut
}

// SetClock replaces the clock rules expire by (default time.Now).
func (f *Faults) SetClock(now func() time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mu.now = now
}

// SetRand replaces the random source of drops and jitter: it returns a
// number in [0, 1) and must be safe for concurrent use (default
// math/rand/v2's Float64).
func (f *Faults) SetRand(rnd func() float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mu.rand = rnd
}

var defaultRand = rand.Float64

// now reads the faults' clock.
func (f *Faults) now() time.Time {
	f.mu.RLock()
	now := f.mu.now
	f.mu.RUnlock()
	return now()
}
