package version

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// sim is a handful of replicas of one key, each minting under its own
// actor with a store-wide counter, pruning after every write and merge as
// every Meridian replica does.
type sim struct {
	t        *testing.T
	replicas []Set
	floors   []uint64
	acked    map[Dot]string
	contexts []Clock // contexts handed out (what a MAC lets a client send back)
	accepted []Clock // contexts writes were made with
	policy   PrunePolicy
	limits   Limits
	now      int64
}

func newSim(t *testing.T, n int) *sim {
	return &sim{
		t: t, replicas: make([]Set, n), floors: make([]uint64, n), acked: map[Dot]string{},
		contexts: []Clock{{}},
		policy:   PrunePolicy{MaxEntries: 3, MinAge: 10, HardMaxEntries: 6},
		limits:   Limits{MaxSiblings: 8},
	}
}

// step applies one operation chosen by op and arg.
func (s *sim) step(op, a, b byte) {
	s.now++
	i := int(a) % len(s.replicas)
	switch op % 5 {
	case 0, 1: // a write at replica i with a context handed out earlier
		ctx := s.contexts[int(b)%len(s.contexts)]
		s.floors[i]++
		actor := fmt.Sprintf("r%d", i)
		next, dot, err := s.replicas[i].Mint(ctx, actor, s.floors[i], Value{Bytes: []byte{a, b, byte(s.now)}}, s.now)
		if err != nil {
			return
		}
		next, _ = next.Prune(s.policy, s.now)
		if next.Check(s.limits) != nil {
			return // refused: nothing stored, nothing acknowledged
		}
		s.replicas[i] = next
		if _, dup := s.acked[dot]; dup {
			s.t.Fatalf("dot %v minted twice: two writes would be taken for one", dot)
		}
		s.acked[dot] = string([]byte{a, b, byte(s.now)})
		s.accepted = append(s.accepted, ctx)
		s.contexts = append(s.contexts, next.Context())
	case 2: // replica i sends its set to replica j (replication, read repair)
		j := int(b) % len(s.replicas)
		m, _ := Merge(s.replicas[j], s.replicas[i]).Prune(s.policy, s.now)
		if m.Check(Limits{}) != nil {
			return
		}
		s.replicas[j] = m
	case 3: // a read: hand out the merged context of two replicas
		j := int(b) % len(s.replicas)
		s.contexts = append(s.contexts, Merge(s.replicas[i], s.replicas[j]).Context())
	case 4: // a fallback coordinates a write (holding no copy, a one-off
		// actor) and hands it to replica i as a hint
		ctx := s.contexts[int(b)%len(s.contexts)]
		actor := fmt.Sprintf("f~%d", s.now)
		next, dot, err := Set{}.Mint(ctx, actor, 1, Value{Bytes: []byte{a, b, byte(s.now)}}, s.now)
		if err != nil {
			return
		}
		next, _ = next.Prune(s.policy, s.now)
		if next.Check(s.limits) != nil {
			return
		}
		m, _ := Merge(s.replicas[i], next).Prune(s.policy, s.now)
		if m.Check(Limits{}) != nil {
			return // the hint is kept, not delivered: not acknowledged here
		}
		s.replicas[i] = m
		s.acked[dot] = string([]byte{a, b, byte(s.now)})
		s.accepted = append(s.accepted, ctx)
		s.contexts = append(s.contexts, next.Context())
	}
}

// olderFree counts the clock entries of s that cover no sibling and were
// stamped before its newest entry: those the hard bound keeps within
// HardMaxEntries (it spares what the latest write stamped).
func olderFree(s Set) int {
	var now int64
	for _, e := range s.Clock.Entries {
		now = max(now, e.Time)
	}
	n := 0
	for _, e := range s.Clock.Entries {
		live := false
		for _, sib := range s.Siblings {
			live = live || sib.Dot.Node == e.Node
		}
		if !live && e.Time < now {
			n++
		}
	}
	return n
}

// checkSuperseded asserts, once every replica's set is merged, that no
// write's context saw a sibling still held: a write removes what its
// context covered, wherever it was minted. Only without pruning: a pruned
// entry may bring a superseded sibling back (see the package comment).
func (s *sim) checkSuperseded() {
	var all Set
	for _, r := range s.replicas {
		all = Merge(all, r)
	}
	for _, sib := range all.Siblings {
		for _, c := range s.accepted {
			if c.Covers(sib.Dot) {
				s.t.Fatalf("sibling %v survives though a write's context %v saw it", sib.Dot, c)
			}
		}
	}
}

// check asserts the invariants: every replica's set decodes to itself and
// stays within the limits, and every acknowledged dot is either still held
// by some replica or was seen by a context a later write was made with.
func (s *sim) check() {
	for i, r := range s.replicas {
		got, err := DecodeSet(r.Encode())
		if err != nil || !got.Equal(r) {
			s.t.Fatalf("replica %d does not round-trip: %v", i, err)
		}
		if err := r.Check(Limits{}); err != nil {
			s.t.Fatalf("replica %d over a hard limit: %v", i, err)
		}
		if free := olderFree(r); s.policy.HardMaxEntries > 0 && free > s.policy.HardMaxEntries {
			s.t.Fatalf("replica %d keeps %d free clock entries older than now, over the bound %d", i, free, s.policy.HardMaxEntries)
		}
	}
	for dot, value := range s.acked {
		held := false
		for _, r := range s.replicas {
			for _, sib := range r.Siblings {
				held = held || sib.Dot == dot && string(sib.Value.Bytes) == value
			}
		}
		if held {
			continue
		}
		seen := false
		for _, c := range s.accepted {
			seen = seen || c.Covers(dot)
		}
		if !seen {
			s.t.Fatalf("acknowledged write %v lost: no replica holds it and no accepted context saw it", dot)
		}
	}
}

func TestPropertyNoAcknowledgedWriteLost(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for run := 0; run < 300; run++ {
		s := newSim(t, 2+run%3)
		for i := 0; i < 200; i++ {
			s.step(byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256)))
			if i%10 == 0 {
				s.check()
			}
		}
		s.check()
	}
}

// TestPropertyWritesRemoveWhatTheySaw: without pruning, whatever replica
// or fallback coordinated each write, the converged set holds no sibling a
// write's context covered.
func TestPropertyWritesRemoveWhatTheySaw(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for run := 0; run < 300; run++ {
		s := newSim(t, 2+run%3)
		s.policy = PrunePolicy{}
		for i := 0; i < 200; i++ {
			s.step(byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256)))
		}
		s.check()
		s.checkSuperseded()
	}
}

func FuzzNoAcknowledgedWriteLost(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 1, 0, 2, 0, 1, 3, 1, 0, 0, 2, 5})
	f.Fuzz(func(t *testing.T, ops []byte) {
		s := newSim(t, 3)
		for i := 0; i+2 < len(ops); i += 3 {
			s.step(ops[i], ops[i+1], ops[i+2])
		}
		s.check()
	})
}

// FuzzMintDecodedContext feeds arbitrary bytes as a client context and a
// stored set: whatever decodes, a write either fails cleanly or produces a
// set that decodes and keeps every stored sibling the context did not see.
func FuzzMintDecodedContext(f *testing.F) {
	s, _ := Set{}.Put(Clock{}, "n1", val("a"), 1)
	f.Add(s.Context().Encode(), s.Encode(), uint64(3))
	f.Add(Clock{Entries: []Entry{{Node: "n1", Counter: MaxCounter}}}.Encode(), s.Encode(), uint64(0))
	f.Fuzz(func(t *testing.T, ctxBytes, setBytes []byte, floor uint64) {
		ctx, err := DecodeClock(ctxBytes)
		if err != nil {
			return
		}
		cur, err := DecodeSet(setBytes)
		if err != nil {
			return
		}
		next, dot, err := cur.Mint(ctx, "n1", floor, val("new"), 1)
		if err != nil {
			return
		}
		if err := next.Check(Limits{}); err != nil {
			return // the store refuses it; nothing written
		}
		got, err := DecodeSet(next.Encode())
		if err != nil || !got.Equal(next) {
			t.Fatalf("minted set does not decode: %v", err)
		}
		for _, sib := range cur.Siblings {
			if !ctx.Covers(sib.Dot) && !next.HasDot(sib.Dot) {
				t.Fatalf("sibling %v lost though the context %v did not see it", sib.Dot, ctx)
			}
		}
		if !next.HasDot(dot) {
			t.Fatalf("new dot %v missing", dot)
		}
	})
}

// TestLongOutageOnHotKey simulates days of a hot key whose primaries are
// all down: every write is coordinated by a fallback under a one-off actor
// (one new clock entry each), with the context of the latest read, while
// three replicas exchange sets now and then. Every replica prunes with the
// default policy after every write and merge. The clock must stay within
// its bound, and no acknowledged write may be lost.
func TestLongOutageOnHotKey(t *testing.T) {
	p := DefaultPrunePolicy()
	minute := int64(time.Minute)
	replicas := make([]Set, 3)
	type acked struct {
		dot   Dot
		value string
	}
	var writes []acked
	seenBy := map[string]uint64{} // per actor, the highest counter any write's context saw
	r := rand.New(rand.NewPCG(7, 7))
	for step := 0; step < 5000; step++ { // about three and a half days
		now := int64(step) * minute
		i := r.IntN(3)
		// A reader saw replica i (sometimes stale), then wrote.
		ctx := replicas[i].Context()
		actor := fmt.Sprintf("n%d#inc~%d", 4+r.IntN(3), step)
		next, dot, err := replicas[i].Mint(ctx, actor, uint64(step+1), Value{Bytes: []byte(fmt.Sprint(step))}, now)
		if err != nil {
			t.Fatal(err)
		}
		next, _ = next.Prune(p, now)
		if err := next.Check(Limits{MaxSiblings: 100}); err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		replicas[i] = next
		writes = append(writes, acked{dot, fmt.Sprint(step)})
		for _, e := range ctx.Entries {
			seenBy[e.Node] = max(seenBy[e.Node], e.Counter)
		}
		if step%7 == 0 { // replication catches up now and then
			j := r.IntN(3)
			replicas[j], _ = Merge(replicas[j], replicas[i]).Prune(p, now)
		}
		for _, s := range replicas {
			if free := len(s.Clock.Entries) - len(s.Siblings); free > p.HardMaxEntries {
				t.Fatalf("step %d: %d clock entries beyond the siblings', over the bound %d", step, free, p.HardMaxEntries)
			}
		}
	}
	// Heal: everything converges; every acknowledged write is either held
	// or was seen by the context of a later write.
	end := int64(5000) * minute
	final, _ := Merge(Merge(replicas[0], replicas[1]), replicas[2]).Prune(p, end)
	for _, w := range writes {
		held := false
		for _, sib := range final.Siblings {
			held = held || sib.Dot == w.dot && string(sib.Value.Bytes) == w.value
		}
		if !held && seenBy[w.dot.Node] < w.dot.Counter {
			t.Fatalf("acknowledged write %v lost", w.dot)
		}
	}
	if len(final.Clock.Entries) > p.HardMaxEntries+len(final.Siblings) {
		t.Fatalf("final clock has %d entries", len(final.Clock.Entries))
	}
}
