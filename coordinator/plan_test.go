package coordinator

import (
	"errors"
	"strings"
	"testing"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/placement"
)

// The plan tests run on one partition of a two-DC keyspace: replicas
// n1 n2 n3 in east and n4 n5 in west (N=5), fallbacks e6 e7 in east and w6
// in west, and pending replicas p1 (east) and p2 (west) when a case moves
// the partition.
var (
	planReplicas = []placement.Replica{
		{Node: "n1", DC: "east"}, {Node: "n2", DC: "east"}, {Node: "n3", DC: "east"},
		{Node: "n4", DC: "west"}, {Node: "n5", DC: "west"},
	}
	planFallbacks = map[string][]placement.Replica{
		"east": {{Node: "e6", DC: "east"}, {Node: "e7", DC: "east"}},
		"west": {{Node: "w6", DC: "west"}},
	}
	planPending = []placement.Replica{{Node: "p1", DC: "east"}, {Node: "p2", DC: "west"}}
	planRepl    = Replication{"east": 3, "west": 2}
)

type planCase struct {
	name        string
	cons        *kvv1.Consistency
	self        string // this node, in east unless it is w6
	down        string // nodes down, space-separated
	low         string // nodes up but low on disk (refusing writes)
	noHints     bool
	moving      bool   // the partition has pending replicas
	targets     string // "n2 e6>n1": e6 holds a hint for n1
	counted     string // the nodes whose answers can count toward the need
	keep        string // hints this node keeps
	extras      string
	unavailable string // the UnavailableError's message, or ""
}

func (pc planCase) input(t *testing.T) writeInput {
	t.Helper()
	live := planLive{down: map[string]bool{}, low: map[string]bool{}}
	for _, n := range strings.Fields(pc.down) {
		live.down[n] = true
	}
	for _, n := range strings.Fields(pc.low) {
		live.low[n] = true
	}
	self := placement.Replica{Node: pc.self, DC: "east"}
	if strings.HasPrefix(pc.self, "w") || pc.self == "n4" || pc.self == "n5" {
		self.DC = "west"
	}
	need, err := Resolve(pc.cons, OpWrite, planRepl, self.DC)
	if err != nil {
		t.Fatal(err)
	}
	in := writeInput{
		self:      self,
		replicas:  planReplicas,
		need:      need,
		live:      live,
		hints:     !pc.noHints,
		table:     planTable{},
		partition: 7,
	}
	if pc.moving {
		in.pending = planPending
	}
	return in
}

// planLive is liveness: the nodes in down are down, those in low up but
// low on disk.
type planLive struct{ down, low map[string]bool }

func (l planLive) Alive(n string) bool   { return !l.down[n] }
func (l planLive) DiskLow(n string) bool { return l.low[n] }

// planTable lists planFallbacks, the down replica's DC first.
type planTable struct{}

func (planTable) Fallbacks(p int, dc string) []placement.Replica {
	if p != 7 {
		panic("fallbacks of another partition")
	}
	out := append([]placement.Replica(nil), planFallbacks[dc]...)
	for _, other := range []string{"east", "west"} {
		if other != dc {
			out = append(out, planFallbacks[other]...)
		}
	}
	return out
}

func lvl(l kvv1.Level) *kvv1.Consistency { return &kvv1.Consistency{Level: l} }

func TestPlanWrite(t *testing.T) {
	all := "n1 n2 n3 n4 n5"
	cases := []planCase{
		// Every level with every replica up: the write goes to all of
		// them; what counts depends on the level.
		{name: "ONE", cons: lvl(kvv1.Level_LEVEL_ONE), self: "n1", targets: "n2 n3 n4 n5", counted: all},
		{name: "QUORUM", cons: lvl(kvv1.Level_LEVEL_QUORUM), self: "n1", targets: "n2 n3 n4 n5", counted: all},
		{name: "ALL", cons: lvl(kvv1.Level_LEVEL_ALL), self: "n1", targets: "n2 n3 n4 n5", counted: all},
		{name: "LOCAL_QUORUM counts only the local DC", cons: lvl(kvv1.Level_LEVEL_LOCAL_QUORUM), self: "n1", targets: "n2 n3 n4 n5", counted: "n1 n2 n3"},
		{name: "LOCAL_QUORUM from west", cons: lvl(kvv1.Level_LEVEL_LOCAL_QUORUM), self: "n4", targets: "n1 n2 n3 n5", counted: "n4 n5"},
		{name: "EACH_QUORUM", cons: lvl(kvv1.Level_LEVEL_EACH_QUORUM), self: "n1", targets: "n2 n3 n4 n5", counted: all},
		{name: "ANY", cons: lvl(kvv1.Level_LEVEL_ANY), self: "n1", targets: "n2 n3 n4 n5", counted: all},

		// Down replicas get their copy on a fallback of their own DC
		// first, then of another DC; a fallback holds one hint.
		{name: "QUORUM, two down, hints count", cons: lvl(kvv1.Level_LEVEL_QUORUM), self: "n1", down: "n2 n3",
			targets: "n4 n5 e6>n2 e7>n3", counted: "n1 n4 n5 e6 e7"},
		{name: "fallbacks of the own DC used up, then another DC's", cons: lvl(kvv1.Level_LEVEL_QUORUM), self: "n1", down: "n2 n3 e7",
			targets: "n4 n5 e6>n2 w6>n3", counted: "n1 n4 n5 e6 w6"},
		{name: "a west replica's fallback is west's first", cons: lvl(kvv1.Level_LEVEL_QUORUM), self: "n1", down: "n4",
			targets: "n2 n3 n5 w6>n4", counted: "n1 n2 n3 n5 w6"},
		{name: "QUORUM primary_only: hinted copies do not count", cons: &kvv1.Consistency{Level: kvv1.Level_LEVEL_QUORUM, PrimaryOnly: true}, self: "n1", down: "n2",
			targets: "n3 n4 n5 e6>n2", counted: "n1 n3 n4 n5"},
		{name: "QUORUM primary_only, too few primaries", cons: &kvv1.Consistency{Level: kvv1.Level_LEVEL_QUORUM, PrimaryOnly: true}, self: "n1", down: "n2 n3 n4",
			unavailable: "write at QUORUM needs 3 replicas but only 2 of N=5 are alive"},
		{name: "QUORUM, three down, met by hints", cons: lvl(kvv1.Level_LEVEL_QUORUM), self: "n1", down: "n2 n3 n4",
			targets: "n5 e6>n2 e7>n3 w6>n4", counted: "n1 n5 e6 e7 w6"},
		{name: "QUORUM, three down, no fallback up", cons: lvl(kvv1.Level_LEVEL_QUORUM), self: "n1", down: "n2 n3 n4 e6 e7 w6",
			unavailable: "write at QUORUM needs 3 replicas but only 2 of N=5 are alive"},
		{name: "ONE, no fallback up: this node keeps the hints", cons: lvl(kvv1.Level_LEVEL_ONE), self: "n1", down: "n2 n4 e6 e7 w6",
			targets: "n3 n5", counted: "n1 n3 n5", keep: "n2 n4"},
		{name: "one fallback for two down: the second hint is kept", cons: lvl(kvv1.Level_LEVEL_ONE), self: "n1", down: "n2 n3 n4 n5 e7 w6",
			targets: "e6>n2", counted: "n1 e6", keep: "n3 n4 n5"},
		{name: "without hints no fallback and nothing kept", cons: lvl(kvv1.Level_LEVEL_ONE), self: "n1", down: "n2", noHints: true,
			targets: "n3 n4 n5", counted: "n1 n3 n4 n5"},
		{name: "ALL: a hint is not a replica", cons: lvl(kvv1.Level_LEVEL_ALL), self: "n1", down: "n2",
			unavailable: "write at ALL needs 5 replicas but only 4 of N=5 are alive"},
		{name: "LOCAL_QUORUM: remote replicas down do not matter", cons: lvl(kvv1.Level_LEVEL_LOCAL_QUORUM), self: "n1", down: "n4 n5 w6",
			targets: "n2 n3 e6>n4 e7>n5", counted: "n1 n2 n3"},
		{name: "LOCAL_QUORUM: local hints do not count", cons: lvl(kvv1.Level_LEVEL_LOCAL_QUORUM), self: "n1", down: "n2 n3",
			unavailable: "write at LOCAL_QUORUM needs 2 replicas but only 3 of N=5 are alive (east: 1 of 2 needed could answer)"},
		{name: "EACH_QUORUM: one DC short", cons: lvl(kvv1.Level_LEVEL_EACH_QUORUM), self: "n1", down: "n5",
			unavailable: "write at EACH_QUORUM needs 4 replicas but only 4 of N=5 are alive (west: 1 of 2 needed could answer)"},
		{name: "EACH_QUORUM: a DC's minority down", cons: lvl(kvv1.Level_LEVEL_EACH_QUORUM), self: "n1", down: "n3",
			targets: "n2 n4 n5 e6>n3", counted: "n1 n2 n4 n5"},

		// A replica gossiping that it is low on disk would refuse the
		// write: its copy goes to a fallback as a down replica's does, and
		// a fallback low on disk is passed over.
		{name: "QUORUM, a replica low on disk: its copy is hinted", cons: lvl(kvv1.Level_LEVEL_QUORUM), self: "n1", low: "n2",
			targets: "n3 n4 n5 e6>n2", counted: "n1 n3 n4 n5 e6"},
		{name: "a fallback low on disk is passed over", cons: lvl(kvv1.Level_LEVEL_QUORUM), self: "n1", down: "n2", low: "e6",
			targets: "n3 n4 n5 e7>n2", counted: "n1 n3 n4 n5 e7"},
		{name: "low on disk and no fallback: this node keeps the hint", cons: lvl(kvv1.Level_LEVEL_ONE), self: "n1", low: "n2 e6 e7 w6",
			targets: "n3 n4 n5", counted: "n1 n3 n4 n5", keep: "n2"},
		{name: "ALL with a replica low on disk says so", cons: lvl(kvv1.Level_LEVEL_ALL), self: "n1", low: "n3",
			unavailable: "write at ALL needs 5 replicas but only 4 of N=5 are alive and accepting writes; 1 more low on disk (n3)"},
		{name: "LOCAL_QUORUM, the local DC's others down and low", cons: lvl(kvv1.Level_LEVEL_LOCAL_QUORUM), self: "n1", down: "n2", low: "n3",
			unavailable: "write at LOCAL_QUORUM needs 2 replicas but only 3 of N=5 are alive and accepting writes; 1 more low on disk (n3) (east: 1 of 2 needed could answer)"},

		// A coordinator that is not a replica (a forwarded write, or the
		// sloppy quorum of forward) writes nothing itself unless it is
		// picked as a fallback, and keeps no hints.
		{name: "not a replica, all up", cons: lvl(kvv1.Level_LEVEL_QUORUM), self: "e6", targets: all, counted: all},
		{name: "ANY with every replica down: this node is a fallback", cons: lvl(kvv1.Level_LEVEL_ANY), self: "e6", down: all,
			targets: "e6>n1 e7>n2 w6>n3", counted: "e6 e7 w6"},
		{name: "not a replica, no fallback up", cons: lvl(kvv1.Level_LEVEL_ANY), self: "e6", down: all + " e7 w6",
			targets: "e6>n1", counted: "e6"},
		{name: "not a replica, without hints", cons: lvl(kvv1.Level_LEVEL_ANY), self: "e6", down: all, noHints: true,
			unavailable: "write at ANY needs 1 replicas but only 0 of N=5 are alive"},
		{name: "not a replica: this node may hold a down replica's hint", cons: lvl(kvv1.Level_LEVEL_ONE), self: "e7", down: "n1 e6 w6",
			targets: "n2 n3 n4 n5 e7>n1", counted: "n2 n3 n4 n5 e7"},

		// A moving partition's pending replicas receive every write and
		// count toward nothing.
		{name: "pending replicas", cons: lvl(kvv1.Level_LEVEL_QUORUM), self: "n1", moving: true,
			targets: "n2 n3 n4 n5", counted: all, extras: "p1 p2"},
		{name: "pending replicas receive writes even when down", cons: lvl(kvv1.Level_LEVEL_QUORUM), self: "n1", moving: true, down: "p2",
			targets: "n2 n3 n4 n5", counted: all, extras: "p1 p2"},
		{name: "pending replicas do not save an unavailable write", cons: lvl(kvv1.Level_LEVEL_ALL), self: "n1", moving: true, down: "n5",
			unavailable: "write at ALL needs 5 replicas but only 4 of N=5 are alive"},
		{name: "a pending coordinator gets no extra copy", cons: lvl(kvv1.Level_LEVEL_QUORUM), self: "p1", moving: true,
			targets: all, counted: all, extras: "p2"},
	}
	for _, pc := range cases {
		t.Run(pc.name, func(t *testing.T) {
			p, err := planWrite(pc.input(t))
			if pc.unavailable != "" {
				var ue *UnavailableError
				want := pc.unavailable + ": retry later or use a lower consistency level"
				if pc.low != "" {
					want = pc.unavailable + ": free disk space on " + strings.Join(strings.Fields(pc.low), ", ") + ", retry later or use a lower consistency level"
				}
				if !errors.As(err, &ue) || err.Error() != want {
					t.Fatalf("err = %v, want UnavailableError %q", err, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			check := func(what, got, want string) {
				t.Helper()
				if got != want {
					t.Errorf("%s = %q, want %q", what, got, want)
				}
			}
			check("targets", targetNames(p.targets), pc.targets)
			check("counted", counted(p), pc.counted)
			check("keep", strings.Join(p.keep, " "), pc.keep)
			check("extras", targetNames(p.extras), pc.extras)
			if p.tally.hopeless() || p.tally.met() {
				t.Errorf("tally hopeless=%v met=%v before any answer", p.tally.hopeless(), p.tally.met())
			}
			if want := len(p.targets) + b2i(p.local); p.asked() != want {
				t.Errorf("asked = %d, want %d", p.asked(), want)
			}
		})
	}
}

func targetNames(ts []target) string {
	var s []string
	for _, t := range ts {
		if t.hintFor != "" {
			s = append(s, t.Node+">"+t.hintFor)
		} else {
			s = append(s, t.Node)
		}
	}
	return strings.Join(s, " ")
}

// counted lists the nodes (this one first) whose answers the plan's tally
// can count toward its need.
func counted(p *writePlan) string {
	tl := &p.tally
	counts := func(dc string, hinted bool) bool {
		return tl.need.Total > 0 && tl.countsTotal(dc, hinted) || !hinted && tl.need.PerDC[dc] > 0
	}
	var s []string
	if p.local && counts(p.in.self.DC, false) {
		s = append(s, p.in.self.Node)
	}
	for _, t := range p.targets {
		if counts(t.DC, t.hintFor != "") {
			s = append(s, t.Node)
		}
	}
	return strings.Join(s, " ")
}

// TestPlanWriteMet checks the tally the plan hands over: with this node's
// answer and the counted targets', the need is met, and it is hopeless once
// enough of them failed.
func TestPlanWriteMet(t *testing.T) {
	pc := planCase{cons: lvl(kvv1.Level_LEVEL_QUORUM), self: "n1", down: "n2 n3"}
	p, err := planWrite(pc.input(t))
	if err != nil {
		t.Fatal(err)
	}
	tl := &p.tally
	tl.answer("east", false, true) // n1
	tl.answer("west", false, true) // n4
	if tl.met() {
		t.Fatal("QUORUM of 5 met by two answers")
	}
	tl.answer("east", true, true) // e6 for n2
	if !tl.met() {
		t.Fatal("QUORUM not met by two primaries and a hinted copy")
	}

	pc.cons = &kvv1.Consistency{Level: kvv1.Level_LEVEL_QUORUM, PrimaryOnly: true}
	pc.down = "n2"
	if p, err = planWrite(pc.input(t)); err != nil {
		t.Fatal(err)
	}
	tl = &p.tally
	tl.answer("east", false, true)  // n1
	tl.answer("east", false, false) // n3
	tl.answer("west", false, true)  // n4
	tl.answer("east", true, true)   // e6 for n2
	if tl.met() || tl.hopeless() {
		t.Fatalf("primary_only: met=%v hopeless=%v with n5 still to answer", tl.met(), tl.hopeless())
	}
	tl.answer("west", false, false) // n5
	if !tl.hopeless() {
		t.Fatal("primary_only: not hopeless with two primaries answered and none left")
	}
}

func TestAfterFailure(t *testing.T) {
	primary := func(n, dc string) target { return target{Replica: placement.Replica{Node: n, DC: dc}} }
	cases := []struct {
		name    string
		self    string
		down    string
		low     string
		noHints bool
		used    string // fallbacks already holding the write
		failed  target
		reached bool
		act     failAction
		to      string // the fallback's target, "e6>n2"
	}{
		{name: "unreachable primary goes to a fallback", self: "n1", failed: primary("n2", "east"), act: failToFallback, to: "e6>n2"},
		{name: "its own DC's fallbacks first", self: "n1", failed: primary("n4", "west"), act: failToFallback, to: "w6>n4"},
		{name: "a down fallback is skipped", self: "n1", down: "e6", failed: primary("n2", "east"), act: failToFallback, to: "e7>n2"},
		{name: "a fallback low on disk is skipped", self: "n1", low: "e6", failed: primary("n2", "east"), act: failToFallback, to: "e7>n2"},
		{name: "a reached replica's failure stands", self: "n1", failed: primary("n2", "east"), reached: true, act: failStands},
		{name: "a fallback that took nothing of its hint: the replica's next one", self: "n1", used: "e6", failed: target{Replica: placement.Replica{Node: "e6", DC: "east"}, hintFor: "n2"}, act: failToFallback, to: "e7>n2"},
		{name: "a fallback that may have kept the hint stands", self: "n1", used: "e6", failed: target{Replica: placement.Replica{Node: "e6", DC: "east"}, hintFor: "n2"}, reached: true, act: failStands},
		{name: "a fallback that took nothing, none left: the hint is kept for the replica", self: "n1", used: "e6", down: "e7 w6", failed: target{Replica: placement.Replica{Node: "e6", DC: "east"}, hintFor: "n2"}, act: failKeepHint, to: "n2"},
		{name: "a fallback that took nothing, for a node not a replica: stands", self: "n1", used: "e6", failed: target{Replica: placement.Replica{Node: "e6", DC: "east"}, hintFor: "zz"}, act: failStands},
		{name: "no fallback: a replica coordinator keeps the hint", self: "n1", down: "e6 e7 w6", failed: primary("n2", "east"), act: failKeepHint, to: "n2"},
		{name: "a coordinator that is not a replica may be the fallback", self: "e6", down: "e7 w6", failed: primary("n2", "east"), act: failToFallback, to: "e6>n2"},
		{name: "without hints every failure stands", self: "n1", noHints: true, failed: primary("n2", "east"), act: failStands},
		{name: "a pending replica that missed it gets a kept hint", self: "n1", failed: target{Replica: planPending[0], extra: true}, reached: true, act: failKeepHint},
		{name: "not by a coordinator that is not a replica", self: "e6", failed: target{Replica: planPending[0], extra: true}, act: failStands},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := planWrite(planCase{cons: lvl(kvv1.Level_LEVEL_ONE), self: tc.self, down: tc.down, low: tc.low, noHints: tc.noHints}.input(t))
			if err != nil {
				t.Fatal(err)
			}
			if tc.used != "" {
				p.used = append(p.used, strings.Fields(tc.used)...)
			}
			to, act := p.afterFailure(tc.failed, tc.reached)
			if got := targetNames([]target{to}); act != tc.act || got != tc.to {
				t.Fatalf("afterFailure = %s %q, want %s %q", act, got, tc.act, tc.to)
			}
			if act == failToFallback && !p.isUsed(to.Node) {
				t.Errorf("fallback %s not marked used", to.Node)
			}
		})
	}

	// A fallback takes one hint: the next failure gets the next one, and
	// when none is left only a replica coordinator keeps the hint.
	for _, tc := range []struct{ self, want string }{
		{"n1", "e6>n2 e7>n3 w6>n5 keep"},
		{"e6", "e6>n2 e7>n3 w6>n5 stands"},
	} {
		p, err := planWrite(planCase{cons: lvl(kvv1.Level_LEVEL_ONE), self: tc.self}.input(t))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, failed := range []target{primary("n2", "east"), primary("n3", "east"), primary("n5", "west"), primary("n4", "west")} {
			switch to, act := p.afterFailure(failed, false); act {
			case failToFallback:
				got = append(got, targetNames([]target{to}))
			default:
				got = append(got, act.String())
			}
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("coordinator %s, successive failures: %s, want %s", tc.self, strings.Join(got, " "), tc.want)
		}
	}
}

func (a failAction) String() string {
	return [...]string{"stands", "fallback", "keep"}[a]
}

// TestForwardOrder: a forwarded write goes to the need's local DC first,
// then the others, in preference order, skipping down replicas and trying
// those low on disk only after every other.
func TestForwardOrder(t *testing.T) {
	cases := []struct {
		name, local, down, low, want string
	}{
		{name: "all up, east", local: "east", want: "n1 n2 n3 n4 n5"},
		{name: "all up, west first", local: "west", want: "n4 n5 n1 n2 n3"},
		{name: "down replicas are left out", local: "east", down: "n1 n4", want: "n2 n3 n5"},
		{name: "low on disk last", local: "east", low: "n1", want: "n2 n3 n4 n5 n1"},
		{name: "low on disk last, local DC first among them", local: "west", low: "n1 n5", want: "n4 n2 n3 n5 n1"},
		{name: "every replica low", local: "east", low: "n1 n2 n3 n4 n5", want: "n1 n2 n3 n4 n5"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			live := planCase{down: tc.down, low: tc.low, self: "e6", cons: lvl(kvv1.Level_LEVEL_ONE)}.input(t).live
			var got []string
			for _, rep := range forwardOrder(planReplicas, tc.local, live.Alive, live.DiskLow) {
				got = append(got, rep.Node)
			}
			if strings.Join(got, " ") != tc.want {
				t.Fatalf("forwardOrder = %q, want %q", strings.Join(got, " "), tc.want)
			}
		})
	}
}
