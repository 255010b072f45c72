package version

import (
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"
	"time"
)

// ErrMalformed is returned (wrapped) when encoded bytes cannot be decoded.
var ErrMalformed = errors.New("version: malformed encoding")

// Dot identifies one write event: the Counter-th write coordinated by Node.
type Dot struct {
	Node    string
	Counter uint64
}

// String renders "node:counter".
func (d Dot) String() string { return fmt.Sprintf("%s:%d", d.Node, d.Counter) }

func (d Dot) less(o Dot) bool {
	if d.Node != o.Node {
		return d.Node < o.Node
	}
	return d.Counter < o.Counter
}

// Timestamp is a hybrid logical clock reading: Wall is unix nanoseconds,
// Logical orders events within one Wall value.
type Timestamp struct {
	Wall    int64
	Logical uint32
}

// Compare returns -1, 0 or 1 as t is before, equal to or after o.
func (t Timestamp) Compare(o Timestamp) int {
	switch {
	case t.Wall < o.Wall:
		return -1
	case t.Wall > o.Wall:
		return 1
	case t.Logical < o.Logical:
		return -1
	case t.Logical > o.Logical:
		return 1
	}
	return 0
}

// Time converts the wall part to a time.Time.
func (t Timestamp) Time() time.Time { return time.Unix(0, t.Wall) }

// Value is what a client writes: bytes or a tombstone, with its write time.
type Value struct {
	Bytes     []byte
	Tombstone bool
	Time      Timestamp
}

// Sibling is one concurrent version of a key.
type Sibling struct {
	Dot   Dot
	Value Value
}

// Entry is one component of a version vector. Time is the unix-nano wall
// time the entry last advanced; it is used only for pruning.
type Entry struct {
	Node    string
	Counter uint64
	Time    int64
}

// Clock is a version vector: entries sorted by Node, one per node, counters
// above zero. The zero Clock is empty.
type Clock struct {
	Entries []Entry
}

func (c Clock) find(node string) (int, bool) {
	i := sort.Search(len(c.Entries), func(i int) bool { return c.Entries[i].Node >= node })
	return i, i < len(c.Entries) && c.Entries[i].Node == node
}

// Get returns the counter for node (0 if absent).
func (c Clock) Get(node string) uint64 {
	if i, ok := c.find(node); ok {
		return c.Entries[i].Counter
	}
	return 0
}

// Covers reports whether the clock has seen the event d.
func (c Clock) Covers(d Dot) bool { return d.Counter <= c.Get(d.Node) }

// Descends reports whether c has seen everything o has (c >= o).
func (c Clock) Descends(o Clock) bool {
	i := 0
	for _, e := range o.Entries {
		for i < len(c.Entries) && c.Entries[i].Node < e.Node {
			i++
		}
		if i == len(c.Entries) || c.Entries[i].Node != e.Node || c.Entries[i].Counter < e.Counter {
			return false
		}
	}
	return true
}

// Concurrent reports whether neither clock descends the other.
func (c Clock) Concurrent(o Clock) bool { return !c.Descends(o) && !o.Descends(c) }

// Equal reports whether both clocks have the same counters (times ignored).
func (c Clock) Equal(o Clock) bool {
	if len(c.Entries) != len(o.Entries) {
		return false
	}
	for i := range c.Entries {
		if c.Entries[i].Node != o.Entries[i].Node || c.Entries[i].Counter != o.Entries[i].Counter {
			return false
		}
	}
	return true
}

// Join returns the component-wise maximum (times: the maximum too).
func (c Clock) Join(o Clock) Clock {
	if len(o.Entries) == 0 {
		return c
	}
	if len(c.Entries) == 0 {
		return o
	}
	out := make([]Entry, 0, len(c.Entries)+len(o.Entries))
	i, j := 0, 0
	for i < len(c.Entries) || j < len(o.Entries) {
		switch {
		case j == len(o.Entries) || i < len(c.Entries) && c.Entries[i].Node < o.Entries[j].Node:
			out = append(out, c.Entries[i])
			i++
		case i == len(c.Entries) || o.Entries[j].Node < c.Entries[i].Node:
			out = append(out, o.Entries[j])
			j++
		default:
			e := c.Entries[i]
			e.Counter = max(e.Counter, o.Entries[j].Counter)
			e.Time = max(e.Time, o.Entries[j].Time)
			out = append(out, e)
			i++
			j++
		}
	}
	return Clock{Entries: out}
}

// IsEmpty reports whether the clock has no entries.
func (c Clock) IsEmpty() bool { return len(c.Entries) == 0 }

// with returns a copy of c with node's entry set to (counter, time).
func (c Clock) with(node string, counter uint64, t int64) Clock {
	i, ok := c.find(node)
	out := make([]Entry, 0, len(c.Entries)+1)
	out = append(out, c.Entries[:i]...)
	out = append(out, Entry{Node: node, Counter: counter, Time: t})
	if ok {
		i++
	}
	out = append(out, c.Entries[i:]...)
	return Clock{Entries: out}
}

// String renders "{n1:3, n2:1}".
func (c Clock) String() string {
	var b strings.Builder
	b.WriteByte('{')
	for i, e := range c.Entries {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s:%d", e.Node, e.Counter)
	}
	b.WriteByte('}')
	return b.String()
}

// Set is the stored state of one key. Invariants: every sibling's dot is
// covered by Clock; no two siblings share a dot; siblings are sorted by dot.
type Set struct {
	Clock    Clock
	Siblings []Sibling
}

// Put records a write coordinated by node whose client had seen ctx: the
// siblings ctx covers are superseded, the clock joins ctx, and the new
// sibling gets the dot (node, max(clock[node], ctx[node]) + 1). s is not
// modified.
func (s Set) Put(ctx Clock, node string, v Value, now int64) (Set, Dot) {
	dot := Dot{Node: node, Counter: max(s.Clock.Get(node), ctx.Get(node)) + 1}
	sibs := make([]Sibling, 0, len(s.Siblings)+1)
	for _, sib := range s.Siblings {
		if !ctx.Covers(sib.Dot) {
			sibs = append(sibs, sib)
		}
	}
	sibs = append(sibs, Sibling{Dot: dot, Value: v})
	sortSiblings(sibs)
	clock := s.Clock.Join(ctx).with(node, dot.Counter, now)
	return Set{Clock: clock, Siblings: sibs}, dot
}

func sortSiblings(s []Sibling) {
	sort.Slice(s, func(i, j int) bool { return s[i].Dot.less(s[j].Dot) })
}

// Merge combines two replicas' sets. A sibling survives if both sides have
// it, or if the other side's clock does not cover it.
func Merge(a, b Set) Set {
	if len(a.Siblings) == 0 && a.Clock.IsEmpty() {
		return b
	}
	if len(b.Siblings) == 0 && b.Clock.IsEmpty() {
		return a
	}
	sibs := make([]Sibling, 0, len(a.Siblings)+len(b.Siblings))
	i, j := 0, 0
	for i < len(a.Siblings) || j < len(b.Siblings) {
		switch {
		case j == len(b.Siblings) || i < len(a.Siblings) && a.Siblings[i].Dot.less(b.Siblings[j].Dot):
			if !b.Clock.Covers(a.Siblings[i].Dot) {
				sibs = append(sibs, a.Siblings[i])
			}
			i++
		case i == len(a.Siblings) || b.Siblings[j].Dot.less(a.Siblings[i].Dot):
			if !a.Clock.Covers(b.Siblings[j].Dot) {
				sibs = append(sibs, b.Siblings[j])
			}
			j++
		default: // the same dot on both sides: the same write
			sibs = append(sibs, a.Siblings[i])
			i++
			j++
		}
	}
	return Set{Clock: a.Clock.Join(b.Clock), Siblings: sibs}
}

// Context is the causal context to hand to clients: the clock.
func (s Set) Context() Clock { return s.Clock }

// IsEmpty reports whether the set has no siblings and an empty clock.
func (s Set) IsEmpty() bool { return len(s.Siblings) == 0 && s.Clock.IsEmpty() }

// Equal reports whether both sets have the same clock counters and the same
// siblings (dots, values, tombstones and times).
func (s Set) Equal(o Set) bool {
	if !s.Clock.Equal(o.Clock) || len(s.Siblings) != len(o.Siblings) {
		return false
	}
	for i := range s.Siblings {
		a, b := s.Siblings[i], o.Siblings[i]
		if a.Dot != b.Dot || a.Value.Tombstone != b.Value.Tombstone || a.Value.Time != b.Value.Time || !bytes.Equal(a.Value.Bytes, b.Value.Bytes) {
			return false
		}
	}
	return true
}

// Descends reports whether s already has everything o has: merging o into
// s would not change s.
func (s Set) Descends(o Set) bool {
	if !s.Clock.Descends(o.Clock) {
		return false
	}
	// Every sibling of o is either in s or superseded (covered but absent):
	// both hold once s's clock covers it, which Descends implies. And every
	// sibling of s must survive o's clock.
	i := 0
	for _, sib := range s.Siblings {
		for i < len(o.Siblings) && o.Siblings[i].Dot.less(sib.Dot) {
			i++
		}
		has := i < len(o.Siblings) && o.Siblings[i].Dot == sib.Dot
		if !has && o.Clock.Covers(sib.Dot) {
			return false
		}
	}
	return true
}

// Live returns the siblings that are not tombstones.
func (s Set) Live() []Sibling {
	var out []Sibling
	for _, sib := range s.Siblings {
		if !sib.Value.Tombstone {
			out = append(out, sib)
		}
	}
	return out
}

// ResolveLWW keeps only the sibling with the greatest write time (ties
// broken by dot), for last-writer-wins keyspaces. The clock is unchanged.
func (s Set) ResolveLWW() Set {
	if len(s.Siblings) <= 1 {
		return s
	}
	best := s.Siblings[0]
	for _, sib := range s.Siblings[1:] {
		if c := sib.Value.Time.Compare(best.Value.Time); c > 0 || c == 0 && best.Dot.less(sib.Dot) {
			best = sib
		}
	}
	return Set{Clock: s.Clock, Siblings: []Sibling{best}}
}

// Digest is a stable 64-bit hash of the causal content: clock counters,
// sibling dots, tombstone flags and value bytes. Equal sets have equal
// digests across processes.
func (s Set) Digest() uint64 {
	h := fnv.New64a()
	var buf [10]byte
	putU := func(v uint64) {
		n := 0
		for v >= 0x80 {
			buf[n] = byte(v) | 0x80
			v >>= 7
			n++
		}
		buf[n] = byte(v)
		h.Write(buf[:n+1])
	}
	putS := func(b []byte) { putU(uint64(len(b))); h.Write(b) }
	putU(uint64(len(s.Clock.Entries)))
	for _, e := range s.Clock.Entries {
		putS([]byte(e.Node))
		putU(e.Counter)
	}
	putU(uint64(len(s.Siblings)))
	for _, sib := range s.Siblings {
		putS([]byte(sib.Dot.Node))
		putU(sib.Dot.Counter)
		if sib.Value.Tombstone {
			putU(1)
		} else {
			putU(0)
		}
		putS(sib.Value.Bytes)
	}
	return h.Sum64()
}

// PrunePolicy bounds clock growth (see the package comment for the risk).
type PrunePolicy struct {
	// MaxEntries is the most entries kept once pruning applies.
	MaxEntries int
	// MinAge: entries that advanced more recently are never pruned.
	MinAge time.Duration
}

// DefaultPrunePolicy keeps up to 16 entries and never prunes an entry that
// advanced in the last 24 hours.
func DefaultPrunePolicy() PrunePolicy { return PrunePolicy{MaxEntries: 16, MinAge: 24 * time.Hour} }

// Retired reports whether an actor can never mint another dot, judging by
// the actors of a clock: a one-off actor ("n4~…", used once by a fallback
// coordinator) or an incarnation older than another one of the same node in
// the clock ("n1" or "n1#1" when "n1#2" is present).
func Retired(actor string, c Clock) bool {
	if strings.Contains(actor, "~") {
		return true
	}
	base, inc := splitIncarnation(actor)
	for _, e := range c.Entries {
		if b, i := splitIncarnation(e.Node); b == base && i > inc {
			return true
		}
	}
	return false
}

// splitIncarnation splits "n1#3" into ("n1", 3); "n1" is incarnation 0.
func splitIncarnation(actor string) (string, uint64) {
	i := strings.LastIndexByte(actor, '#')
	if i < 0 {
		return actor, 0
	}
	var n uint64
	for _, ch := range actor[i+1:] {
		if ch < '0' || ch > '9' {
			return actor, 0
		}
		n = n*10 + uint64(ch-'0')
	}
	return actor[:i], n
}

// Prune drops the oldest clock entries beyond p.MaxEntries that are older
// than p.MinAge, cover no current sibling and belong to retired actors (see
// Retired), so a dropped actor never mints a dot again. It returns the
// pruned set and how many entries it removed.
func (s Set) Prune(p PrunePolicy, now int64) (Set, int) {
	if p.MaxEntries <= 0 || len(s.Clock.Entries) <= p.MaxEntries {
		return s, 0
	}
	live := map[string]bool{}
	for _, sib := range s.Siblings {
		live[sib.Dot.Node] = true
	}
	cutoff := now - int64(p.MinAge)
	var candidates []int
	for i, e := range s.Clock.Entries {
		if !live[e.Node] && e.Time < cutoff && Retired(e.Node, s.Clock) {
			candidates = append(candidates, i)
		}
	}
	sort.Slice(candidates, func(a, b int) bool {
		ea, eb := s.Clock.Entries[candidates[a]], s.Clock.Entries[candidates[b]]
		if ea.Time != eb.Time {
			return ea.Time < eb.Time
		}
		return ea.Node < eb.Node
	})
	excess := len(s.Clock.Entries) - p.MaxEntries
	if len(candidates) > excess {
		candidates = candidates[:excess]
	}
	if len(candidates) == 0 {
		return s, 0
	}
	drop := map[int]bool{}
	for _, i := range candidates {
		drop[i] = true
	}
	out := make([]Entry, 0, len(s.Clock.Entries)-len(drop))
	for i, e := range s.Clock.Entries {
		if !drop[i] {
			out = append(out, e)
		}
	}
	return Set{Clock: Clock{Entries: out}, Siblings: s.Siblings}, len(drop)
}
