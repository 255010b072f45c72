package version

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"
)

// ErrMalformed is returned (wrapped) when encoded bytes cannot be decoded.
var ErrMalformed = errors.New("version: malformed encoding")

// Dot identifies one write event: the Counter-th write coordinated by Node.
type Dot struct {
	Node    string
	Counter uint64
}

// String renders "node:counter".
func (d Dot) String() string {
	var buf [64]byte // on the stack for the usual actor names
	b := append(append(buf[:0], d.Node...), ':')
	return string(strconv.AppendUint(b, d.Counter, 10))
}

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

// Value is what a client writes: bytes or a tombstone, with its write time
// and, when the writer gave one, the request ID that makes retries of the
// same write idempotent (at most MaxRequestIDLen bytes).
type Value struct {
	Bytes     []byte
	Tombstone bool
	Time      Timestamp
	RequestID []byte
}

// Sibling is one concurrent version of a key.
type Sibling struct {
	Dot   Dot
	Value Value
}

// Entry is one component of a version vector. Time is the unix-nano wall
// time the entry last advanced, or last superseded one of its node's
// siblings (see Mint); it is used only for pruning.
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

// ErrCounterOverflow is returned by Mint when a counter would pass
// MaxCounter.
var ErrCounterOverflow = errors.New("version: counter overflow")

// Mint records a write coordinated by actor whose client had seen ctx: the
// siblings ctx covers are superseded, the clock joins ctx, and the new
// sibling gets the dot (actor, max(clock[actor]+1, ctx[actor]+1, floor)).
// floor comes from the actor's store-wide counter, which only grows: a dot
// minted after the actor's clock entry was pruned is still above every dot
// the actor minted before, so it can never be mistaken for one already seen.
// s is not modified.
func (s Set) Mint(ctx Clock, actor string, floor uint64, v Value, now int64) (Set, Dot, error) {
	if actor == "" || len(actor) > MaxNameLen {
		return Set{}, Dot{}, fmt.Errorf("version: actor name %q invalid", actor)
	}
	seen := max(s.Clock.Get(actor), ctx.Get(actor))
	if seen >= MaxCounter || floor > MaxCounter {
		return Set{}, Dot{}, fmt.Errorf("%w: %s has counter %d", ErrCounterOverflow, actor, max(seen, floor))
	}
	dot := Dot{Node: actor, Counter: max(seen+1, floor)}
	sibs := make([]Sibling, 0, len(s.Siblings)+1)
	superseded := false
	for _, sib := range s.Siblings {
		if !ctx.Covers(sib.Dot) {
			sibs = append(sibs, sib)
		} else {
			superseded = true
		}
	}
	sibs = append(sibs, Sibling{Dot: dot, Value: v})
	sortSiblings(sibs)
	clock := s.Clock.Join(ctx).with(actor, dot.Counter, now)
	if superseded || !s.Clock.Descends(ctx) {
		clock = clock.touch(s, ctx, now)
	}
	return Set{Clock: clock, Siblings: sibs}, dot, nil
}

// touch returns c with the entries stamped now that a write minted on s
// with context ctx may have superseded siblings by (the clock is fresh:
// c's own entries are not shared): those of the siblings of s that ctx
// covers, and every entry where ctx is ahead of s's clock (siblings held
// elsewhere: a fallback minting on no copy, a replica that missed
// writes). Such an entry must outlive the sibling on every replica: were
// Prune to drop it at once (it last advanced long ago), a replica still
// holding the sibling would keep it on merge and the superseded value
// would come back. Join carries the stamp with the write, so every
// replica's Prune spares the entry for MinAge.
func (c Clock) touch(s Set, ctx Clock, now int64) Clock {
	stamp := func(node string) {
		if i, ok := c.find(node); ok && c.Entries[i].Time < now {
			c.Entries[i].Time = now
		}
	}
	for _, sib := range s.Siblings {
		if ctx.Covers(sib.Dot) {
			stamp(sib.Dot.Node)
		}
	}
	for _, e := range ctx.Entries {
		if e.Counter > s.Clock.Get(e.Node) {
			stamp(e.Node)
		}
	}
	return c
}

// Put is Mint with no counter floor, for trusted inputs (tests, tools): it
// panics if a counter would overflow.
func (s Set) Put(ctx Clock, actor string, v Value, now int64) (Set, Dot) {
	out, dot, err := s.Mint(ctx, actor, 0, v, now)
	if err != nil {
		panic(err)
	}
	return out, dot
}

// HasDot reports whether a sibling has the dot d.
func (s Set) HasDot(d Dot) bool {
	for _, sib := range s.Siblings {
		if sib.Dot == d {
			return true
		}
	}
	return false
}

// HasRequest reports whether a sibling was written by the request id.
func (s Set) HasRequest(id []byte) bool {
	if len(id) == 0 {
		return false
	}
	for _, sib := range s.Siblings {
		if bytes.Equal(sib.Value.RequestID, id) {
			return true
		}
	}
	return false
}

func sortSiblings(s []Sibling) {
	slices.SortFunc(s, func(a, b Sibling) int {
		if c := strings.Compare(a.Dot.Node, b.Dot.Node); c != 0 {
			return c
		}
		return cmp.Compare(a.Dot.Counter, b.Dot.Counter)
	})
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
		if a.Dot != b.Dot || a.Value.Tombstone != b.Value.Tombstone || a.Value.Time != b.Value.Time || !bytes.Equal(a.Value.Bytes, b.Value.Bytes) || !bytes.Equal(a.Value.RequestID, b.Value.RequestID) {
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

// TombstonesBefore reports whether the set holds only tombstones, all
// written before cutoff (unix nanoseconds): a deleted key whose tombstone
// may be collected once every replica holds it.
func (s Set) TombstonesBefore(cutoff int64) bool {
	if len(s.Siblings) == 0 {
		return false
	}
	for _, sib := range s.Siblings {
		if !sib.Value.Tombstone || sib.Value.Time.Wall >= cutoff {
			return false
		}
	}
	return true
}

// WrittenBefore reports whether nothing in the set happened at or after
// cutoff (unix nanoseconds): every sibling was written, and every clock
// entry last advanced, before it. The empty set is.
func (s Set) WrittenBefore(cutoff int64) bool {
	for _, sib := range s.Siblings {
		if sib.Value.Time.Wall >= cutoff {
			return false
		}
	}
	for _, e := range s.Clock.Entries {
		if e.Time >= cutoff {
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
	h := xxhash.New()
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
		putS(sib.Value.RequestID)
		putS(sib.Value.Bytes)
	}
	return h.Sum64()
}

// PrunePolicy bounds clock growth (see the package comment). Every replica
// applies the same policy after every write and merge, and the decision
// depends only on the set and the time, so replicas prune alike and a merge
// cannot keep bringing a pruned entry back for long.
type PrunePolicy struct {
	// MaxEntries is the most entries kept once pruning applies: entries
	// beyond it that cover no sibling and are older than MinAge go,
	// oldest first.
	MaxEntries int
	// MinAge: below HardMaxEntries, entries that advanced more recently
	// are never pruned.
	MinAge time.Duration
	// HardMaxEntries bounds the entries that cover no sibling whatever
	// their age: beyond it the oldest go even if younger than MinAge.
	HardMaxEntries int
}

// DefaultPrunePolicy keeps up to 16 entries, never prunes an entry that
// advanced in the last 24 hours unless more than 64 entries cover no
// sibling.
func DefaultPrunePolicy() PrunePolicy {
	return PrunePolicy{MaxEntries: 16, MinAge: 24 * time.Hour, HardMaxEntries: 64}
}

// Prune drops clock entries that cover no current sibling: beyond
// p.MaxEntries those older than p.MinAge, and beyond p.HardMaxEntries the
// oldest whatever their age, except those stamped by the set's latest
// write. Ages count to the set's newest stamp (now only when now is
// before it). Entries covering a live sibling are never dropped. It
// returns the pruned set and how many entries it removed.
func (s Set) Prune(p PrunePolicy, now int64) (Set, int) {
	n := len(s.Clock.Entries)
	if (p.MaxEntries <= 0 || n <= p.MaxEntries) && (p.HardMaxEntries <= 0 || n <= p.HardMaxEntries) {
		return s, 0
	}
	// Ages count to the set's newest stamp (its latest write), not to this
	// replica's clock, unless that clock is behind it: replicas holding
	// the same data then prune it alike, whenever each merges it. (By each
	// one's clock, a replica merging a write a little later dropped an
	// entry another had kept: the two never converged, one descending the
	// other, and anti-entropy repaired the key at every exchange.)
	newest := s.Clock.Entries[0].Time
	for _, e := range s.Clock.Entries[1:] {
		newest = max(newest, e.Time)
	}
	now = min(now, newest)
	live := make(map[string]bool, len(s.Siblings))
	for _, sib := range s.Siblings {
		live[sib.Dot.Node] = true
	}
	var free []int // entries that cover no sibling
	for i, e := range s.Clock.Entries {
		if !live[e.Node] {
			free = append(free, i)
		}
	}
	sort.Slice(free, func(a, b int) bool {
		ea, eb := s.Clock.Entries[free[a]], s.Clock.Entries[free[b]]
		if ea.Time != eb.Time {
			return ea.Time < eb.Time
		}
		return ea.Node < eb.Node
	})
	drop := map[int]bool{}
	// Hard bound: at most HardMaxEntries free entries survive, oldest
	// dropped first, but for those stamped at now or later: the entries a
	// write being pruned just superseded siblings by (Mint stamps them
	// now). Dropped before the write goes out, a replica still holding
	// those siblings would keep them on merge. They go at the next
	// write's or merge's Prune, unless the clock would pass
	// MaxClockEntries (what the decoder takes) first.
	if p.HardMaxEntries > 0 && len(free) > p.HardMaxEntries {
		for _, i := range free[:len(free)-p.HardMaxEntries] {
			if s.Clock.Entries[i].Time >= now && n-len(drop) <= MaxClockEntries {
				break // sorted by time: the rest were stamped now too
			}
			drop[i] = true
		}
	}
	// Soft bound: old free entries beyond MaxEntries.
	if p.MaxEntries > 0 {
		cutoff := now - int64(p.MinAge)
		for _, i := range free {
			if n-len(drop) <= p.MaxEntries {
				break
			}
			if !drop[i] && s.Clock.Entries[i].Time < cutoff {
				drop[i] = true
			}
		}
	}
	if len(drop) == 0 {
		return s, 0
	}
	out := make([]Entry, 0, n-len(drop))
	for i, e := range s.Clock.Entries {
		if !drop[i] {
			out = append(out, e)
		}
	}
	return Set{Clock: Clock{Entries: out}, Siblings: s.Siblings}, len(drop)
}

// Limits bound a stored sibling set. The codec enforces the hard ones
// (MaxSiblings, MaxClockEntries, MaxCounter, MaxNameLen, MaxRequestIDLen);
// keyspaces set tighter ones for writes.
type Limits struct {
	// MaxSiblings is the most siblings a write may leave.
	MaxSiblings int
	// MaxBytes is the largest encoded set a write may leave.
	MaxBytes int
}

// LimitError says which limit a set exceeds.
type LimitError struct {
	Siblings, MaxSiblings int
	Bytes, MaxBytes       int
}

func (e *LimitError) Error() string {
	if e.MaxSiblings > 0 && e.Siblings > e.MaxSiblings {
		return fmt.Sprintf("the key would have %d siblings, over the limit of %d", e.Siblings, e.MaxSiblings)
	}
	return fmt.Sprintf("the key's versions would take %d bytes, over the limit of %d", e.Bytes, e.MaxBytes)
}

// Check returns a *LimitError if s exceeds l (zero fields: no limit) or a
// hard codec limit.
func (s Set) Check(l Limits) error {
	maxSibs := MaxSiblings
	if l.MaxSiblings > 0 && l.MaxSiblings < maxSibs {
		maxSibs = l.MaxSiblings
	}
	if len(s.Siblings) > maxSibs {
		return &LimitError{Siblings: len(s.Siblings), MaxSiblings: maxSibs}
	}
	maxBytes := MaxSetBytes
	if l.MaxBytes > 0 && l.MaxBytes < maxBytes {
		maxBytes = l.MaxBytes
	}
	if size := s.EncodedSize(); size > maxBytes {
		return &LimitError{Bytes: size, MaxBytes: maxBytes}
	}
	if len(s.Clock.Entries) > MaxClockEntries {
		return fmt.Errorf("version: clock has %d entries, over the limit of %d", len(s.Clock.Entries), MaxClockEntries)
	}
	// What the decoder refuses, refused before anything is stored: a set
	// stored past these would never decode again.
	for _, e := range s.Clock.Entries {
		if err := checkDot(Dot{Node: e.Node, Counter: e.Counter}); err != nil {
			return fmt.Errorf("version: clock entry: %w", err)
		}
	}
	for _, sib := range s.Siblings {
		if err := checkDot(sib.Dot); err != nil {
			return fmt.Errorf("version: sibling: %w", err)
		}
		if n := len(sib.Value.RequestID); n > MaxRequestIDLen {
			return fmt.Errorf("version: request ID of %d bytes, over the limit of %d", n, MaxRequestIDLen)
		}
	}
	return nil
}

// checkDot checks a name and counter as the decoder does.
func checkDot(d Dot) error {
	switch {
	case d.Node == "" || len(d.Node) > MaxNameLen:
		return fmt.Errorf("actor name of %d bytes (1 to %d)", len(d.Node), MaxNameLen)
	case d.Counter == 0 || d.Counter > MaxCounter:
		return fmt.Errorf("counter %d of %s (1 to %d)", d.Counter, d.Node, uint64(MaxCounter))
	}
	return nil
}
