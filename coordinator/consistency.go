package coordinator

import (
	"fmt"
	"sort"
	"strings"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
)

// Op says whether a request reads or writes; some levels exist only for one.
type Op int

const (
	OpRead Op = iota
	OpWrite
)

func (o Op) String() string {
	if o == OpRead {
		return "read"
	}
	return "write"
}

// Need is what a request must collect before it succeeds: Total answers from
// any replica, and at least PerDC[d] answers from primary replicas in DC d.
// It is derived purely from the level, the keyspace's replication and the
// coordinator's DC (see Resolve).
type Need struct {
	Level kvv1.Level
	// N is the keyspace's total replication factor.
	N int
	// Total answers needed from anywhere (0 when only PerDC matters).
	Total int
	// PerDC answers needed from primaries of each listed DC.
	PerDC map[string]int
	// LocalOnly: only replicas in Local are waited for (LOCAL_* levels).
	LocalOnly bool
	Local     string
	// AllLocal: every replica is in Local (a LOCAL_* level over a
	// keyspace kept in that DC alone, where it promises what its global
	// counterpart does).
	AllLocal bool
	// Hints: a hinted copy on a fallback counts toward Total (sloppy
	// quorum); false when the caller asked for primary_only.
	Hints bool
}

// Count is the number of answers the request waits for: the R or W it
// reports back.
func (n Need) Count() int {
	c := n.Total
	sum := 0
	for _, v := range n.PerDC {
		sum += v
	}
	if sum > c {
		c = sum
	}
	return c
}

// Replication is the keyspace's replication factor per DC.
type Replication map[string]int

// Resolve turns a consistency spec into what the request must collect, or an
// INVALID_ARGUMENT error saying what to change. localDC is the DC of the
// coordinator (or the client's override).
func Resolve(c *kvv1.Consistency, op Op, repl Replication, localDC string) (Need, error) {
	n := 0
	for _, rf := range repl {
		n += rf
	}
	level := c.GetLevel()
	if level == kvv1.Level_LEVEL_UNSPECIFIED {
		level = kvv1.Level_LEVEL_QUORUM
	}
	need := Need{Level: level, N: n, Local: localDC, Hints: !c.GetPrimaryOnly()}
	explicit := c.GetR()
	if op == OpWrite {
		explicit = c.GetW()
	}
	if explicit > 0 {
		if int(explicit) > n {
			return Need{}, invalidf("%s %s=%d is more than the keyspace's N=%d: use at most %d",
				op, rw(op), explicit, n, n)
		}
		need.Total = int(explicit)
		need.Level = kvv1.Level_LEVEL_UNSPECIFIED
		return need, nil
	}
	fixed := func(k int) (Need, error) {
		if k > n {
			return Need{}, invalidf("%s needs %d replicas but the keyspace's N is %d: pick a lower level",
				levelName(level), k, n)
		}
		need.Total = k
		return need, nil
	}
	switch level {
	case kvv1.Level_LEVEL_ONE:
		return fixed(1)
	case kvv1.Level_LEVEL_TWO:
		return fixed(2)
	case kvv1.Level_LEVEL_THREE:
		return fixed(3)
	case kvv1.Level_LEVEL_QUORUM:
		return fixed(n/2 + 1)
	case kvv1.Level_LEVEL_ALL:
		// ALL means every primary replica: a hint is not one.
		need.Hints = false
		return fixed(n)
	case kvv1.Level_LEVEL_ANY:
		if op == OpRead {
			return Need{}, invalidf("ANY is for writes only: read at ONE instead")
		}
		if c.GetPrimaryOnly() {
			return Need{}, invalidf("ANY counts hinted copies, which primary_only forbids: use ONE with primary_only instead")
		}
		need.Total = 1
		return need, nil
	case kvv1.Level_LEVEL_LOCAL_ONE, kvv1.Level_LEVEL_LOCAL_QUORUM:
		if localDC == "" {
			return Need{}, invalidf("%s needs the coordinator's datacenter: set consistency.dc", levelName(level))
		}
		rf := repl[localDC]
		if rf == 0 {
			return Need{}, invalidf("%s in datacenter %q, where the keyspace has no replicas (replication %s): use a DC that has replicas, or QUORUM",
				levelName(level), localDC, repl)
		}
		k := 1
		if level == kvv1.Level_LEVEL_LOCAL_QUORUM {
			k = rf/2 + 1
		}
		need.PerDC = map[string]int{localDC: k}
		need.LocalOnly = true
		need.AllLocal = rf == n
		return need, nil
	case kvv1.Level_LEVEL_EACH_QUORUM:
		need.PerDC = make(map[string]int, len(repl))
		for dc, rf := range repl {
			if rf > 0 {
				need.PerDC[dc] = rf/2 + 1
			}
		}
		return need, nil
	default:
		return Need{}, invalidf("unknown consistency level %d", int32(level))
	}
}

func rw(op Op) string {
	if op == OpRead {
		return "r"
	}
	return "w"
}

// String renders a replication map deterministically: "{dc1:3, dc2:2}".
func (r Replication) String() string {
	dcs := make([]string, 0, len(r))
	for dc := range r {
		dcs = append(dcs, dc)
	}
	sort.Strings(dcs)
	s := "{"
	for i, dc := range dcs {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%s:%d", dc, r[dc])
	}
	return s + "}"
}

// levelName is the level without its enum prefix: "LOCAL_QUORUM".
func levelName(l kvv1.Level) string {
	s := l.String()
	if len(s) > len("LEVEL_") {
		return s[len("LEVEL_"):]
	}
	return s
}

// tally counts answers against a Need. It is a pure decision: the request
// shell feeds it replies and asks whether it is done or can no longer win.
type tally struct {
	need Need
	// acks counted toward Total, and primary acks per DC.
	acks  int
	perDC map[string]int
	// pending primaries per DC still able to answer, and pending total.
	pendingDC map[string]int
	pending   int
}

func newTally(need Need) *tally {
	t := makeTally(need)
	return &t
}

// makeTally is newTally as a value. Only the DCs the need names are counted
// per DC (nothing else reads those counts), so the levels without per-DC
// needs allocate no maps.
func makeTally(need Need) tally {
	t := tally{need: need}
	if len(need.PerDC) > 0 {
		t.perDC = make(map[string]int, len(need.PerDC))
		t.pendingDC = make(map[string]int, len(need.PerDC))
	}
	return t
}

// expect registers one request sent to a node in dc; hinted marks a fallback.
func (t *tally) expect(dc string, hinted bool) {
	if t.countsTotal(dc, hinted) {
		t.pending++
	}
	if !hinted && t.need.PerDC[dc] > 0 {
		t.pendingDC[dc]++
	}
}

func (t *tally) countsTotal(dc string, hinted bool) bool {
	if t.need.LocalOnly && dc != t.need.Local {
		return false
	}
	return !hinted || t.need.Hints
}

// answer records the outcome of one expected request.
func (t *tally) answer(dc string, hinted, ok bool) {
	counts := t.countsTotal(dc, hinted)
	perDC := !hinted && t.need.PerDC[dc] > 0
	if counts {
		t.pending--
	}
	if perDC {
		t.pendingDC[dc]--
	}
	if !ok {
		return
	}
	if counts {
		t.acks++
	}
	if perDC {
		t.perDC[dc]++
	}
}

// met reports whether the need is satisfied.
func (t *tally) met() bool {
	if t.acks < t.need.Total {
		return false
	}
	for dc, k := range t.need.PerDC {
		if t.perDC[dc] < k {
			return false
		}
	}
	return true
}

// shortfall describes which part of the need is missing, e.g.
// "dc3: 0 of 2 needed could answer" — for error messages.
func (t *tally) shortfall() string {
	var parts []string
	for dc, k := range t.need.PerDC {
		if got := t.perDC[dc] + t.pendingDC[dc]; got < k {
			parts = append(parts, fmt.Sprintf("%s: %d of %d needed could answer", dc, got, k))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}

// helps reports whether one more answer from a replica in dc could make
// up for what the tally lacks: toward its DC's short count, or toward a
// total short of more than the DCs' counts will bring. (A remote replica
// never helps a LOCAL_* level, nor one more from a DC whose EACH_QUORUM
// count is met.)
func (t *tally) helps(dc string) bool {
	if k := t.need.PerDC[dc]; k > 0 && t.perDC[dc]+t.pendingDC[dc] < k {
		return true
	}
	if !t.countsTotal(dc, false) {
		return false
	}
	short := 0
	for d, k := range t.need.PerDC {
		short += max(0, k-t.perDC[d]-t.pendingDC[d])
	}
	return t.need.Total-t.acks-t.pending > short
}

// hopeless reports whether the need can no longer be met by what is pending.
func (t *tally) hopeless() bool {
	if t.acks+t.pending < t.need.Total {
		return true
	}
	for dc, k := range t.need.PerDC {
		if t.perDC[dc]+t.pendingDC[dc] < k {
			return true
		}
	}
	return false
}
