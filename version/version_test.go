package version

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func val(s string) Value { return Value{Bytes: []byte(s)} }

func values(s Set) []string {
	var out []string
	for _, sib := range s.Siblings {
		out = append(out, string(sib.Value.Bytes))
	}
	return out
}

func TestPut(t *testing.T) {
	var s Set
	s, d1 := s.Put(Clock{}, "n1", val("a"), 1)
	if d1 != (Dot{"n1", 1}) || fmt.Sprint(values(s)) != "[a]" {
		t.Fatalf("first put: dot %v, values %v", d1, values(s))
	}
	ctx := s.Context()
	// Two writes with the same context are concurrent.
	s, _ = s.Put(ctx, "n1", val("b"), 2)
	s, _ = s.Put(ctx, "n2", val("c"), 3)
	if got := fmt.Sprint(values(s)); got != "[b c]" {
		t.Fatalf("concurrent puts = %v, want [b c]", got)
	}
	// A put with the merged context supersedes both.
	s, d := s.Put(s.Context(), "n2", val("bc"), 4)
	if got := fmt.Sprint(values(s)); got != "[bc]" {
		t.Fatalf("merged put = %v, want [bc]", got)
	}
	if d != (Dot{"n2", 2}) {
		t.Fatalf("dot = %v, want n2:2", d)
	}
	// A delete is a tombstone put.
	s, _ = s.Put(s.Context(), "n1", Value{Tombstone: true}, 5)
	if len(s.Siblings) != 1 || !s.Siblings[0].Value.Tombstone || len(s.Live()) != 0 {
		t.Fatalf("after delete: %+v", s)
	}
	// The minted counter is past both the stored clock and the context.
	var fresh Set
	_, d = fresh.Put(Clock{Entries: []Entry{{Node: "n1", Counter: 7}}}, "n1", val("x"), 6)
	if d.Counter != 8 {
		t.Fatalf("counter = %d, want 8 (past the context)", d.Counter)
	}
}

// history generates random puts and merges on a few replicas and checks the
// invariants after every step.
type history struct {
	rng      *rand.Rand
	replicas []Set
	// acknowledged writes and the contexts that superseded them
	written map[Dot]string
}

func newHistory(seed uint64, n int) *history {
	return &history{rng: rand.New(rand.NewPCG(seed, seed^0x9e37)), replicas: make([]Set, n), written: map[Dot]string{}}
}

func (h *history) step(t *testing.T, now int64) {
	i := h.rng.IntN(len(h.replicas))
	switch h.rng.IntN(3) {
	case 0, 1: // a put at replica i with a context read from replica j (or none)
		var ctx Clock
		if h.rng.IntN(3) > 0 {
			ctx = h.replicas[h.rng.IntN(len(h.replicas))].Context()
		}
		v := fmt.Sprintf("v%d", now)
		var d Dot
		h.replicas[i], d = h.replicas[i].Put(ctx, fmt.Sprintf("r%d", i), val(v), now)
		h.written[d] = v
	case 2: // anti-entropy between i and j
		j := h.rng.IntN(len(h.replicas))
		m := Merge(h.replicas[i], h.replicas[j])
		h.replicas[i], h.replicas[j] = m, m
	}
	for k, s := range h.replicas {
		checkInvariants(t, fmt.Sprintf("replica %d", k), s)
	}
}

func checkInvariants(t *testing.T, what string, s Set) {
	t.Helper()
	seen := map[Dot]bool{}
	for i, sib := range s.Siblings {
		if !s.Clock.Covers(sib.Dot) {
			t.Fatalf("%s: sibling %v not covered by %v", what, sib.Dot, s.Clock)
		}
		if seen[sib.Dot] {
			t.Fatalf("%s: duplicate dot %v", what, sib.Dot)
		}
		seen[sib.Dot] = true
		if i > 0 && !s.Siblings[i-1].Dot.less(sib.Dot) {
			t.Fatalf("%s: siblings out of order", what)
		}
	}
	if size, n := s.EncodedSize(), len(s.Encode()); size != n {
		t.Fatalf("%s: EncodedSize %d, encoding %d bytes", what, size, n)
	}
}

// TestEncodedSizeIsExact: EncodedSize is the encoding's length at the
// extremes of every field too (a row cache charges it, and a buffer sized
// by it is never grown), and the encoding then holds no spare capacity.
func TestEncodedSizeIsExact(t *testing.T) {
	long := string(bytes.Repeat([]byte("a"), MaxNameLen))
	entries := []Entry{{Node: "a", Counter: 1, Time: -1 << 63}, {Node: long, Counter: MaxCounter, Time: 1<<63 - 1}, {Node: "m", Counter: 127, Time: -64}, {Node: "n", Counter: 128, Time: 63}, {Node: "o", Counter: 16384, Time: 64}}
	for _, tc := range []struct {
		name string
		set  Set
	}{
		{"empty", Set{}},
		{"clock only", Set{Clock: Clock{Entries: entries}}},
		{"every field at its extremes", Set{Clock: Clock{Entries: entries}, Siblings: []Sibling{
			{Dot: Dot{Node: "a", Counter: 1}, Value: Value{Tombstone: true, Time: Timestamp{Wall: -1 << 63, Logical: 1<<32 - 1}}},
			{Dot: Dot{Node: long, Counter: MaxCounter}, Value: Value{Bytes: make([]byte, 1<<14), Time: Timestamp{Wall: 1<<63 - 1}, RequestID: make([]byte, MaxRequestIDLen)}},
			{Dot: Dot{Node: "o", Counter: 200}, Value: Value{Bytes: make([]byte, 127), RequestID: []byte("r")}},
		}}},
		{"a sibling whose node has no clock entry", Set{Clock: Clock{Entries: entries[:1]}, Siblings: []Sibling{{Dot: Dot{Node: "zz", Counter: 3}, Value: val("x")}}}},
		{"over 127 entries", func() Set {
			var s Set
			for i := range 200 {
				s, _ = s.Put(s.Context(), fmt.Sprintf("n%03d", i), val("v"), int64(i)<<40)
			}
			return s
		}()},
	} {
		enc := tc.set.Encode()
		if size := tc.set.EncodedSize(); size != len(enc) {
			t.Errorf("%s: EncodedSize %d, encoding %d bytes", tc.name, size, len(enc))
		}
		if len(enc) > 0 && cap(enc) != len(enc) {
			t.Errorf("%s: encoding of %d bytes in a buffer of %d", tc.name, len(enc), cap(enc))
		}
		if size, n := tc.set.Clock.EncodedSize(), len(tc.set.Clock.Encode()); size != n {
			t.Errorf("%s: clock EncodedSize %d, encoding %d bytes", tc.name, size, n)
		}
	}
}

func TestMergeProperties(t *testing.T) {
	for seed := uint64(1); seed <= 200; seed++ {
		h := newHistory(seed, 4)
		for step := int64(1); step <= 40; step++ {
			h.step(t, step)
		}
		a, b, c := h.replicas[0], h.replicas[1], h.replicas[2]
		if !Merge(a, b).Equal(Merge(b, a)) {
			t.Fatalf("seed %d: merge not commutative", seed)
		}
		if !Merge(Merge(a, b), c).Equal(Merge(a, Merge(b, c))) {
			t.Fatalf("seed %d: merge not associative", seed)
		}
		if !Merge(a, a).Equal(a) {
			t.Fatalf("seed %d: merge not idempotent", seed)
		}
		m := Merge(a, b)
		if !m.Descends(a) || !m.Descends(b) {
			t.Fatalf("seed %d: merge does not descend its inputs", seed)
		}
		if a.Descends(b) != Merge(a, b).Equal(a) {
			t.Fatalf("seed %d: Descends disagrees with Merge", seed)
		}
		for _, s := range []Set{a, b, c, m} {
			got, err := DecodeSet(s.Encode())
			if err != nil || !got.Equal(s) {
				t.Fatalf("seed %d: round trip: %v", seed, err)
			}
			if got.Digest() != s.Digest() {
				t.Fatalf("seed %d: digest changed in round trip", seed)
			}
		}
	}
}

// TestNoWriteLost: after all replicas converge, every write is either still
// a sibling or its dot is covered by the clock of a write whose context saw
// it — never silently dropped. Concretely: converged siblings are exactly the
// writes not covered by the context of any later write.
func TestNoWriteLost(t *testing.T) {
	for seed := uint64(1); seed <= 200; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		replicas := make([]Set, 3)
		type write struct {
			dot Dot
			ctx Clock
		}
		var writes []write
		for step := int64(1); step <= 30; step++ {
			i := rng.IntN(3)
			if rng.IntN(4) == 0 {
				j := rng.IntN(3)
				m := Merge(replicas[i], replicas[j])
				replicas[i], replicas[j] = m, m
				continue
			}
			var ctx Clock
			if rng.IntN(2) == 0 {
				ctx = replicas[rng.IntN(3)].Context()
			}
			var d Dot
			replicas[i], d = replicas[i].Put(ctx, fmt.Sprintf("r%d", i), val(fmt.Sprint(step)), step)
			writes = append(writes, write{dot: d, ctx: ctx})
		}
		final := Merge(Merge(replicas[0], replicas[1]), replicas[2])
		have := map[Dot]bool{}
		for _, sib := range final.Siblings {
			have[sib.Dot] = true
		}
		for _, w := range writes {
			superseded := false
			for _, later := range writes {
				if later.ctx.Covers(w.dot) {
					superseded = true
				}
			}
			if have[w.dot] == superseded {
				t.Fatalf("seed %d: write %v present=%v superseded=%v", seed, w.dot, have[w.dot], superseded)
			}
		}
	}
}

func TestConcurrentWritesSurviveMerges(t *testing.T) {
	var base Set
	base, _ = base.Put(Clock{}, "n1", val("base"), 1)
	a, _ := base.Put(base.Context(), "n1", val("a"), 2)
	b, _ := base.Put(base.Context(), "n2", val("b"), 3)
	m := Merge(Merge(a, b), Merge(b, base))
	if got := fmt.Sprint(values(m)); got != "[a b]" {
		t.Fatalf("merged = %v, want [a b]", got)
	}
	r, _ := m.Put(m.Context(), "n3", val("ab"), 4)
	if got := fmt.Sprint(values(Merge(r, a))); got != "[ab]" {
		t.Fatalf("after resolving write = %v, want [ab]", got)
	}
}

func TestClock(t *testing.T) {
	a := Clock{Entries: []Entry{{Node: "n1", Counter: 2}, {Node: "n2", Counter: 1}}}
	b := Clock{Entries: []Entry{{Node: "n1", Counter: 1}, {Node: "n3", Counter: 4}}}
	if a.Descends(b) || b.Descends(a) || !a.Concurrent(b) {
		t.Fatal("a and b should be concurrent")
	}
	j := a.Join(b)
	if j.String() != "{n1:2, n2:1, n3:4}" || !j.Descends(a) || !j.Descends(b) {
		t.Fatalf("join = %v", j)
	}
	got, err := DecodeClock(j.Encode())
	if err != nil || !got.Equal(j) {
		t.Fatalf("clock round trip: %v %v", got, err)
	}
	if c, err := DecodeClock(nil); err != nil || !c.IsEmpty() {
		t.Fatal("empty context should decode to the empty clock")
	}
	for _, bad := range [][]byte{{9}, {1, 5}, {1, 1, 2, 'n'}, {1, 2, 2, 'n', '2', 1, 0, 2, 'n', '1', 1, 0}} {
		if _, err := DecodeClock(bad); err == nil {
			t.Errorf("DecodeClock(%v) accepted malformed input", bad)
		}
	}
}

func TestResolveLWW(t *testing.T) {
	var s Set
	s, _ = s.Put(Clock{}, "n1", Value{Bytes: []byte("late"), Time: Timestamp{Wall: 10}}, 1)
	s, _ = s.Put(Clock{}, "n2", Value{Bytes: []byte("early"), Time: Timestamp{Wall: 5}}, 1)
	if got := values(s.ResolveLWW()); fmt.Sprint(got) != "[late]" {
		t.Fatalf("lww = %v", got)
	}
}

func TestPrune(t *testing.T) {
	day := int64(24 * time.Hour)
	var s Set
	// Old entries of one-off actors and an old incarnation, long ago.
	for i := 0; i < 20; i++ {
		s, _ = s.Put(s.Context(), fmt.Sprintf("f~%02d", i), val("x"), 1)
	}
	s, _ = s.Put(Clock{}, "n1", val("n1 old"), 1)
	s, _ = s.Put(s.Context(), "n1#1", val("current"), 1)  // supersedes everything so far
	s, _ = s.Put(Clock{}, "live~1", val("concurrent"), 1) // a live sibling
	p := PrunePolicy{MaxEntries: 4, MinAge: time.Hour, HardMaxEntries: 64}
	// Ages count to the set's newest stamp: a day later, a write.
	later, _ := s.Put(Clock{}, "w", val("a day later"), 1+day)
	pruned, n := later.Prune(p, 1+day)
	if n == 0 || len(pruned.Clock.Entries) != 4 {
		t.Fatalf("pruned %d entries to %d, want down to 4", n, len(pruned.Clock.Entries))
	}
	for _, sib := range pruned.Siblings {
		if !pruned.Clock.Covers(sib.Dot) {
			t.Fatalf("pruning dropped the entry of live sibling %v", sib.Dot)
		}
	}
	// Too recent: nothing pruned below the hard bound. Nor without a
	// newer write, however late the clock says it is: replicas merging
	// the same data at different times must prune it alike.
	if _, n := s.Prune(p, 2); n != 0 {
		t.Fatalf("pruned %d entries younger than MinAge", n)
	}
	if _, n := s.Prune(p, 1+day); n != 0 {
		t.Fatalf("pruned %d entries a day old by the clock, with no write since", n)
	}
	// Beyond the hard bound, young entries go too, oldest first.
	var hot Set
	for i := 0; i < 100; i++ {
		hot, _ = hot.Put(hot.Context(), fmt.Sprintf("f~%03d", i), val("x"), int64(i))
	}
	hard := PrunePolicy{MaxEntries: 4, MinAge: time.Hour, HardMaxEntries: 10}
	hp, _ := hot.Prune(hard, 100)
	if len(hp.Clock.Entries) != 11 { // 10 free + the one covering the sibling
		t.Fatalf("hard bound kept %d entries, want 11", len(hp.Clock.Entries))
	}
	if hp.Clock.Get("f~000") != 0 || hp.Clock.Get("f~099") == 0 {
		t.Fatalf("hard bound did not drop the oldest: %v", hp.Clock)
	}
}

// TestPrunedLiveActorNeverReMints: pruning is decided from data alone, so
// a live actor's entry can be pruned; its next dot comes from its store-wide
// counter (floor) and is never one that other replicas already saw.
func TestPrunedLiveActorNeverReMints(t *testing.T) {
	day := int64(24 * time.Hour)
	var a Set
	floor := uint64(0)
	next := func() uint64 { floor++; return floor }
	// The live actor "n1#x" writes five times, then "n2#y" supersedes it.
	for i := 0; i < 5; i++ {
		a, _, _ = a.Mint(a.Context(), "n1#x", next(), val(fmt.Sprint(i)), 1)
	}
	a, _ = a.Put(a.Context(), "n2#y", val("n2"), 1)
	b := a // replica b keeps the full clock
	p := PrunePolicy{MaxEntries: 1, MinAge: time.Hour, HardMaxEntries: 64}
	a, _ = a.Put(a.Context(), "n2#y", val("n2 again"), 2*day) // ages count to it
	a, n := a.Prune(p, 2*day)
	if n != 1 || a.Clock.Get("n1#x") != 0 {
		t.Fatalf("expected n1#x pruned, got %v", a.Clock)
	}
	// n1#x writes again from the pruned copy, concurrently with nothing.
	a, dot, err := a.Mint(a.Context(), "n1#x", next(), val("after prune"), 3*day)
	if err != nil {
		t.Fatal(err)
	}
	if b.Clock.Covers(dot) {
		t.Fatalf("re-minted %v, which replica b already covers", dot)
	}
	m := Merge(b, a)
	if !m.Equal(Merge(a, b)) || fmt.Sprint(values(m)) != "[after prune]" {
		t.Fatalf("merged values %v, want [after prune]", values(m))
	}
}

func TestMintRefusesOverflow(t *testing.T) {
	ctx := Clock{Entries: []Entry{{Node: "n1", Counter: MaxCounter}}}
	if _, _, err := (Set{}).Mint(ctx, "n1", 0, val("x"), 1); !errors.Is(err, ErrCounterOverflow) {
		t.Fatalf("Mint with counter at MaxCounter: %v, want ErrCounterOverflow", err)
	}
	if _, _, err := (Set{}).Mint(Clock{}, "n1", MaxCounter+1, val("x"), 1); !errors.Is(err, ErrCounterOverflow) {
		t.Fatalf("Mint with floor beyond MaxCounter: %v", err)
	}
	// What the encoder may write, the decoder reads back.
	s, _, err := (Set{}).Mint(Clock{Entries: []Entry{{Node: "n1", Counter: MaxCounter - 1}}}, "n1", 0, val("x"), 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeSet(s.Encode()); err != nil {
		t.Fatalf("a minted set at the counter limit does not decode: %v", err)
	}
	over := Clock{Entries: []Entry{{Node: "n1", Counter: MaxCounter + 1}}}
	if _, err := DecodeClock(over.Encode()); err == nil {
		t.Fatal("a clock over MaxCounter decoded")
	}
}

func TestCheckLimits(t *testing.T) {
	var s Set
	for i := 0; i < 30; i++ {
		s, _ = s.Put(Clock{}, fmt.Sprintf("n%d", i), val("x"), 1)
	}
	var le *LimitError
	if err := s.Check(Limits{MaxSiblings: 25}); !errors.As(err, &le) || le.Siblings != 30 {
		t.Fatalf("30 siblings against a limit of 25: %v", err)
	}
	if err := s.Check(Limits{MaxSiblings: 30}); err != nil {
		t.Fatalf("at the limit: %v", err)
	}
	if err := s.Check(Limits{MaxBytes: 100}); !errors.As(err, &le) || le.MaxBytes != 100 {
		t.Fatalf("byte limit: %v", err)
	}
	// Hard limit: beyond MaxSiblings the set is refused whatever the keyspace says.
	var big Set
	for i := 0; i <= MaxSiblings; i++ {
		big, _ = big.Put(Clock{}, fmt.Sprintf("a%d", i), val(""), 1)
	}
	if err := big.Check(Limits{}); err == nil {
		t.Fatal("a set over the hard sibling limit passed Check")
	}
	if _, err := DecodeSet(big.Encode()); err == nil {
		t.Fatal("decoder accepted more siblings than Check allows")
	}
}

func TestRequestIDRoundTrip(t *testing.T) {
	s, _ := Set{}.Put(Clock{}, "n1", Value{Bytes: []byte("v"), RequestID: []byte("req-1")}, 1)
	got, err := DecodeSet(s.Encode())
	if err != nil || !got.Equal(s) || !got.HasRequest([]byte("req-1")) || got.HasRequest([]byte("req-2")) {
		t.Fatalf("request ID did not round-trip: %v %+v", err, got)
	}
}

func TestDecodeSetRejectsCorruption(t *testing.T) {
	var s Set
	s, _ = s.Put(Clock{}, "n1", val("hello"), 1)
	s, _ = s.Put(Clock{}, "n2", val("world"), 2)
	enc := s.Encode()
	for cut := 0; cut < len(enc); cut++ {
		if cut == 0 {
			continue // empty is the empty set
		}
		if _, err := DecodeSet(enc[:cut]); err == nil {
			t.Errorf("truncated encoding (%d of %d bytes) accepted", cut, len(enc))
		}
	}
	if _, err := DecodeSet(append(bytes.Clone(enc), 0)); err == nil {
		t.Error("trailing byte accepted")
	}
}

func FuzzDecodeSet(f *testing.F) {
	var s Set
	s, _ = s.Put(Clock{}, "n1", val("a"), 1)
	s, _ = s.Put(Clock{}, "n2", Value{Tombstone: true}, 2)
	f.Add(s.Encode())
	s, _ = s.Put(s.Context(), "n1", Value{Bytes: []byte("b"), RequestID: []byte("req-1")}, 3)
	f.Add(s.Encode())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		set, err := DecodeSet(b)
		// The shared decoder accepts exactly the same input and decodes
		// the same set; appending to a value it hands out never writes
		// into the rest of the input.
		orig := bytes.Clone(b)
		shared, serr := DecodeSetShared(b)
		if (err == nil) != (serr == nil) || err == nil && !shared.Equal(set) {
			t.Fatalf("DecodeSet: %v; DecodeSetShared: %v (equal %v)", err, serr, shared.Equal(set))
		}
		for _, sib := range shared.Siblings {
			_ = append(sib.Value.Bytes, 0xee)
			_ = append(sib.Value.RequestID, 0xee)
		}
		if !bytes.Equal(b, orig) {
			t.Fatal("an append to a shared value wrote into the input")
		}
		if err != nil {
			return
		}
		enc := set.Encode()
		if size := set.EncodedSize(); size != len(enc) {
			t.Fatalf("EncodedSize %d, encoding %d bytes", size, len(enc))
		}
		again, err := DecodeSet(enc)
		if err != nil || !again.Equal(set) {
			t.Fatalf("re-decode: %v", err)
		}
	})
}

func FuzzDecodeClock(f *testing.F) {
	f.Add(Clock{Entries: []Entry{{Node: "n1", Counter: 3, Time: 5}}}.Encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeClock(b)
		if err != nil {
			return
		}
		again, err := DecodeClock(c.Encode())
		if err != nil || !again.Equal(c) {
			t.Fatalf("re-decode: %v", err)
		}
	})
}

func benchSet(n int) Set {
	var s Set
	for i := 0; i < n; i++ {
		s, _ = s.Put(Clock{}, fmt.Sprintf("n%d", i), Value{Bytes: make([]byte, 100)}, int64(i))
	}
	return s
}

func BenchmarkMerge(b *testing.B) {
	x, y := benchSet(3), benchSet(5)
	b.ReportAllocs()
	for b.Loop() {
		Merge(x, y)
	}
}

func BenchmarkPut(b *testing.B) {
	s := benchSet(3)
	ctx := s.Context()
	b.ReportAllocs()
	for b.Loop() {
		s.Put(ctx, "n1", Value{Bytes: make([]byte, 100)}, 1)
	}
}

func BenchmarkEncode(b *testing.B) {
	s := benchSet(3)
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		s.AppendEncode(buf[:0])
	}
}

func BenchmarkDecodeSet(b *testing.B) {
	enc := benchSet(3).Encode()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeSet(enc); err != nil {
			b.Fatal(err)
		}
	}
}

func TestDotString(t *testing.T) {
	for _, d := range []Dot{{"n1", 1}, {"n1.0123456789abcdef", 1 << 62}, {strings.Repeat("x", 100), 42}, {"", 0}} {
		if got, want := d.String(), fmt.Sprintf("%s:%d", d.Node, d.Counter); got != want {
			t.Errorf("String() = %q, want %q", got, want)
		}
	}
}

// TestPruneSparesWhatAWriteJustSuperseded: the entries of siblings a
// write supersedes are stamped with the write's time, so the writer's
// Prune keeps them and a replica still holding those siblings drops them
// on merge, however long ago their actors last wrote. (Pruned at once,
// the superseded values came back on every replica through the merge.)
func TestPruneSparesWhatAWriteJustSuperseded(t *testing.T) {
	day := int64(24 * time.Hour)
	var b Set
	for i := 0; i < 17; i++ { // 17 blind writes, one-off actors, long ago
		b, _ = b.Put(Clock{}, fmt.Sprintf("f~%02d", i), val(fmt.Sprint(i)), 0)
	}
	a, _ := b.Put(b.Context(), "a", val("resolved"), 2*day)
	a, _ = a.Prune(DefaultPrunePolicy(), 2*day)
	if got := values(Merge(b, a)); len(got) != 1 || got[0] != "resolved" {
		t.Fatalf("a replica holding the superseded siblings merged the write back to %v", got)
	}
	if got := values(Merge(a, b)); len(got) != 1 || got[0] != "resolved" {
		t.Fatalf("merged the other way: %v", got)
	}
	// A day after the write spread, at the next write, the entries may go.
	later, _ := a.Put(a.Context(), "a", val("later"), 3*day+1)
	if _, n := later.Prune(DefaultPrunePolicy(), 3*day+1); n == 0 {
		t.Fatal("entries superseded over a day ago were never pruned")
	}
	// A write minted where the siblings are not (a fallback, holding no
	// copy; a replica that missed them) supersedes them all the same: a
	// delete with the read's context deletes every one.
	for _, held := range []Set{{}, func() Set { s, _ := Set{}.Put(Clock{}, "f~00", val("0"), 0); return s }()} {
		del, _ := held.Put(b.Context(), "n9#x~1", Value{Tombstone: true}, 2*day)
		del, _ = del.Prune(DefaultPrunePolicy(), 2*day)
		if live := Merge(b, del).Live(); len(live) != 0 {
			t.Fatalf("a delete minted on a copy holding %d of the 17 siblings: %d came back", len(held.Siblings), len(live))
		}
	}
}

// TestCheckRefusesWhatCannotDecode: Check refuses what the decoder would
// (a set stored past these would never decode again), and what it
// accepts round-trips.
func TestCheckRefusesWhatCannotDecode(t *testing.T) {
	longID, _ := Set{}.Put(Clock{}, "n1", Value{RequestID: make([]byte, MaxRequestIDLen+1)}, 1)
	longName := Set{Clock: Clock{Entries: []Entry{{Node: strings.Repeat("n", MaxNameLen+1), Counter: 1}}}}
	highCounter := Set{Clock: Clock{Entries: []Entry{{Node: "n1", Counter: MaxCounter + 1}}}}
	zero := Set{Clock: Clock{Entries: []Entry{{Node: "n1", Counter: 0}}}}
	for name, s := range map[string]Set{"request ID too long": longID, "name too long": longName, "counter too high": highCounter, "zero counter": zero} {
		if err := s.Check(Limits{}); err == nil {
			t.Errorf("%s: Check accepted it", name)
		}
		if _, err := DecodeSet(s.Encode()); err == nil {
			t.Errorf("%s: the decoder accepted it (the test's premise)", name)
		}
	}
	ok, _ := Set{}.Put(Clock{}, "n1", Value{Bytes: []byte("v"), RequestID: make([]byte, MaxRequestIDLen)}, 1)
	if err := ok.Check(Limits{}); err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeSet(ok.Encode()); err != nil {
		t.Fatalf("a set Check accepts does not decode: %v", err)
	}
}

// TestPruneHardBoundSparesWhatAWriteJustSuperseded: a delete superseding
// siblings of more actors than the hard bound (a hot key written blind by
// fallbacks through an outage) keeps every entry it stamped, so a replica
// still holding those siblings drops them all on merge. (The hard bound
// dropped the excess before the write went out, and those values came
// back on every replica.) The next Prune after the write brings the clock
// back within the bound.
func TestPruneHardBoundSparesWhatAWriteJustSuperseded(t *testing.T) {
	day := int64(24 * time.Hour)
	p := DefaultPrunePolicy()
	var b Set
	for i := 0; i < p.HardMaxEntries+6; i++ {
		b, _ = b.Put(Clock{}, fmt.Sprintf("f~%02d", i), val(fmt.Sprint(i)), 0)
	}
	for name, held := range map[string]Set{"a replica": b, "a fallback": {}} {
		del, _ := held.Put(b.Context(), "n9#x~1", Value{Tombstone: true}, 2*day)
		del, _ = del.Prune(p, 2*day)
		if err := del.Check(Limits{}); err != nil {
			t.Fatal(err)
		}
		if live := Merge(b, del).Live(); len(live) != 0 {
			t.Fatalf("a delete minted on %s: %d of %d superseded siblings came back", name, len(live), len(b.Siblings))
		}
		next, _ := del.Put(del.Context(), "n9#x~2", val("after"), 2*day+1)
		later, n := next.Prune(p, 2*day+1)
		if free := len(later.Clock.Entries) - len(later.Siblings); n == 0 || free > p.HardMaxEntries {
			t.Fatalf("%s: the next write's Prune kept %d free entries (dropped %d), over the bound %d", name, free, n, p.HardMaxEntries)
		}
	}
	// Stamped entries are spared only up to what the decoder takes.
	var wide Set
	for i := 0; i < MaxClockEntries+10; i++ {
		wide.Clock.Entries = append(wide.Clock.Entries, Entry{Node: fmt.Sprintf("f~%05d", i), Counter: 1, Time: 2 * day})
	}
	if pruned, _ := wide.Prune(p, 2*day); len(pruned.Clock.Entries) != MaxClockEntries {
		t.Fatalf("kept %d stamped entries, want the decoder's limit %d", len(pruned.Clock.Entries), MaxClockEntries)
	}
}

// TestPruneAlikeWheneverMerged: replicas that merge the same write at
// different times (one a moment after it, one ten minutes later from a
// hint) prune it to the same set: ages count to the set's newest stamp,
// not each replica's clock. (By the clock, the later one dropped an entry
// the first kept; the first descended the second, neither ever changed,
// and anti-entropy repaired the key at every exchange.)
func TestPruneAlikeWheneverMerged(t *testing.T) {
	p := DefaultPrunePolicy()
	t0, day := int64(100*time.Hour), int64(24*time.Hour)
	var s Set
	for i := range 16 {
		s.Clock.Entries = append(s.Clock.Entries, Entry{Node: fmt.Sprintf("a%02d", i), Counter: 1, Time: t0 + int64(time.Hour)})
	}
	s.Clock.Entries = append(s.Clock.Entries, Entry{Node: "x", Counter: 1, Time: t0})
	w, _ := s.Put(Clock{}, "c", val("w"), t0+day-int64(time.Second))
	a, _ := w.Prune(p, t0+day-int64(time.Second))
	b, _ := w.Prune(p, t0+day+int64(10*time.Minute))
	if !a.Equal(b) || a.Digest() != b.Digest() {
		t.Fatalf("pruned a moment after the write: %v; ten minutes later: %v; want the same", a.Clock, b.Clock)
	}
	// The next write, a day on, prunes x everywhere alike.
	w2, _ := a.Put(Clock{}, "d", val("w2"), t0+2*day)
	if got, _ := w2.Prune(p, t0+2*day); got.Clock.Get("x") != 0 {
		t.Fatalf("x kept a day after its last stamp, at the next write: %v", got.Clock)
	}
}

// TestWrittenBefore: a set is written before a time when every sibling's
// write and every clock entry's last advance are.
func TestWrittenBefore(t *testing.T) {
	var s Set
	if !s.WrittenBefore(0) {
		t.Fatal("the empty set is written before any time")
	}
	s, _ = s.Put(Clock{}, "n1", Value{Bytes: []byte("v"), Time: Timestamp{Wall: 100}}, 100)
	if !s.WrittenBefore(101) || s.WrittenBefore(100) {
		t.Fatalf("a set written at 100: before 101 %v (want true), before 100 %v (want false)", s.WrittenBefore(101), s.WrittenBefore(100))
	}
	// A delete superseding it later: its clock entry advanced at 200.
	s, _ = s.Put(s.Context(), "n1", Value{Tombstone: true, Time: Timestamp{Wall: 150}}, 200)
	if s.WrittenBefore(200) || !s.WrittenBefore(201) {
		t.Fatalf("a set whose clock last advanced at 200: before 200 %v, before 201 %v", s.WrittenBefore(200), s.WrittenBefore(201))
	}
}
