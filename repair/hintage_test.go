package repair

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	"github.com/meridiankv/meridian/engine/memory"
	"github.com/meridiankv/meridian/replica"
	"github.com/meridiankv/meridian/version"
)

// TestHintKeepsItsAgeWhenHandedOn: a hint handed to other replicas (its
// partition moved off its target) keeps the age of its write, and one first
// hinted longer ago than MaxAge (nine tenths of the tombstone grace on a
// node) is dropped undelivered and its partition reported: delivered
// after the grace, it could bring back a value deleted since, whose
// tombstone the replicas collected meanwhile.
func TestHintKeepsItsAgeWhenHandedOn(t *testing.T) {
	c := newClock()
	var mu sync.Mutex
	var reported []string
	l, err := NewHintLog(memory.New(), HintLogConfig{Window: 3 * time.Hour, MaxAge: 21 * time.Hour, Now: c.Now,
		OnDropped: func(target string, _ replica.Loc) {
			mu.Lock()
			reported = append(reported, target)
			mu.Unlock()
		}})
	if err != nil {
		t.Fatal(err)
	}
	born := c.Now()
	if err := store(t, l, "away", "k"); err != nil {
		t.Fatal(err)
	}
	// The other replicas are unreachable for now: what is handed to them
	// stays here as their hints.
	p := &peers{fail: map[string]bool{"away": true, "n2": true, "n3": true}}
	h := &Handoff{Log: l, Peers: p, Live: allAlive{}, Now: c.Now, Rate: 1e6, Self: "n1",
		Place: func(string, replica.Loc) ([]string, bool) { return []string{"n2", "n3"}, false }}
	c.Advance(4 * time.Hour) // the partition moved off "away" meanwhile: handed on
	if _, err := h.DeliverOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{"n2", "n3"} {
		var got []Hint
		if err := l.Hints(target, func(h Hint) bool { got = append(got, h); return true }); err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 {
			t.Fatalf("hints handed to %s: %d, want 1", target, len(got))
		}
		if !got[0].Born.Equal(born) || !got[0].Stored.Equal(c.Now()) {
			t.Fatalf("hint handed to %s: born %v, stored %v; want born %v (its write's), stored now", target, got[0].Born, got[0].Stored, born)
		}
	}
	// A newer write folded into a handed-on hint keeps the older age.
	later, _ := value(t, "value of k", 1).Put(version.Clock{}, "n9", version.Value{Bytes: []byte("newer")}, 1)
	if err := l.StoreHint("n2", loc, "ks", []byte("k"), later, false); err != nil {
		t.Fatal(err)
	}
	l.Hints("n2", func(h Hint) bool {
		if !h.Born.Equal(born) {
			t.Errorf("folded hint born %v, want %v", h.Born, born)
		}
		return true
	})

	// Reachable again, but past MaxAge since the write was hinted.
	c.Advance(18 * time.Hour)
	p.mu.Lock()
	p.fail = nil
	p.mu.Unlock()
	for range 2 {
		if _, err := h.DeliverOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if sent := p.sent(); len(sent) != 0 {
		t.Fatalf("delivered %v, a hint first stored 22h ago (MaxAge 21h)", sent)
	}
	if d := l.Dropped(); d[DropAged] != 2 {
		t.Fatalf("dropped %v, want the 2 handed-on hints as %q", d, DropAged)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reported) != 2 {
		t.Fatalf("partitions reported for repair: %v, want one per dropped hint", reported)
	}
}

// failingMerges fails every merge while fail is set.
type failingMerges struct {
	localMerges
	fail bool
}

func (m *failingMerges) MergeLocal(keyspace string, key []byte, set version.Set) error {
	m.mu.Lock()
	fail := m.fail
	m.mu.Unlock()
	if fail {
		return errors.New("low on disk")
	}
	return m.localMerges.MergeLocal(keyspace, key, set)
}

// TestHintsOfARemovedNodeWaitForATaker: a hint for a node removed from
// the topology, which this node (now the partition's replica) fails to
// merge for the moment, stays for the next round instead of being
// dropped: it may be the only copy of an acknowledged write.
func TestHintsOfARemovedNodeWaitForATaker(t *testing.T) {
	c := newClock()
	l := logHolding(t, HintLogConfig{Window: time.Hour, Now: c.Now}, "gone")
	local := &failingMerges{fail: true}
	h := &Handoff{Log: l, Peers: &peers{}, Live: allAlive{}, Now: c.Now, Rate: 1e6, Self: "n1", Local: local,
		IsMember: func(id string) bool { return id != "gone" },
		Place:    func(string, replica.Loc) ([]string, bool) { return []string{"n1"}, false }}
	for range 2 {
		if _, err := h.DeliverOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if s := statsFor(l, "gone"); s.Count != 1 {
		t.Fatalf("hints held for the removed node after failed merges: %+v, want the one kept", s)
	}
	if d := l.Dropped(); len(d) != 0 && (d[DropNonMember] != 0 || d[DropExpired] != 0) {
		t.Fatalf("dropped %v", d)
	}
	local.mu.Lock()
	local.fail = false
	local.mu.Unlock()
	if _, err := h.DeliverOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	local.mu.Lock()
	got := local.got
	local.mu.Unlock()
	if len(got) != 1 || got[0] != "ks/k" || statsFor(l, "gone").Count != 0 {
		t.Fatalf("merged %v, held %+v; want the hint merged here and gone from the log", got, statsFor(l, "gone"))
	}
}

// TestLeavingNodeHandsOverHints: a node leaving the cluster (no peer
// takes its calls once it is removed) hands the hints of a target it
// cannot reach to a live replica of the partition, as fsynced hints for
// that target; a node staying keeps them for the target's return.
func TestLeavingNodeHandsOverHints(t *testing.T) {
	for _, leaving := range []bool{false, true} {
		c := newClock()
		l, err := NewHintLog(memory.New(), HintLogConfig{Window: time.Hour, Now: c.Now})
		if err != nil {
			t.Fatal(err)
		}
		born := c.Now()
		if err := store(t, l, "away", "k"); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var got []string
		p := &peers{fail: map[string]bool{"away": true}, onWrite: func(node string, req *internalv1.WriteRequest) {
			mu.Lock()
			got = append(got, fmt.Sprintf("%s hint_for=%s sync=%v born=%v", node, req.GetHintFor(), req.GetSync(), req.GetHintBornUnixNanos() == born.UnixNano()))
			mu.Unlock()
		}}
		live := liveExcept{"away": true, "n2": true} // n2 is down too: n3 takes them
		h := &Handoff{Log: l, Peers: p, Live: live, Now: c.Now, Rate: 1e6, Self: "n4", Batch: 1,
			Leaving: func() bool { return leaving },
			Place:   func(string, replica.Loc) ([]string, bool) { return []string{"away", "n2", "n3", "n4"}, false }}
		if _, err := h.DeliverOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		sent := slices.Clone(got)
		mu.Unlock()
		held := statsFor(l, "away").Count
		switch {
		case leaving && (len(sent) != 1 || sent[0] != "n3 hint_for=away sync=true born=true" || held != 0):
			t.Fatalf("leaving: sent %v, still held %d; want the hint handed to n3 for away, fsynced, with its age, and gone here", sent, held)
		case !leaving && (len(sent) != 0 || held != 1):
			t.Fatalf("staying: sent %v, still held %d; want it kept for away", sent, held)
		}
	}
}

// TestRemovedNodeHandsEveryHintOver: a node removed from the cluster
// (peers take only its hint hand-overs) hands every hint over, a live
// target's as well: to the target itself first, as a hint naming it,
// else to another live replica; none is sent as a plain write. A node
// that fails is not asked again that round, and a hint that does not
// decode is set aside, so the log empties.
func TestRemovedNodeHandsEveryHintOver(t *testing.T) {
	c := newClock()
	eng := memory.New()
	l, err := NewHintLog(eng, HintLogConfig{Window: time.Hour, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{"up", "away", "away"} {
		if err := store(t, l, target, fmt.Sprint("k", len(target))); err != nil {
			t.Fatal(err)
		}
	}
	if err := store(t, l, "away", "k2"); err != nil {
		t.Fatal(err)
	}
	b := eng.NewBatch()
	b.Set(hintKey("up", replica.Loc{Keyspace: 1, Partition: 3}, []byte("bad")), []byte{0xff, 1, 2})
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []string
	tries := map[string]int{}
	p := &peers{fail: map[string]bool{"n2": true}, onWrite: func(node string, req *internalv1.WriteRequest) {
		mu.Lock()
		got = append(got, fmt.Sprintf("%s hint_for=%s", node, req.GetHintFor()))
		mu.Unlock()
	}}
	counting := writerFunc(func(ctx context.Context, node string, req *internalv1.WriteRequest) error {
		mu.Lock()
		tries[node]++
		mu.Unlock()
		return p.Write(ctx, node, req)
	})
	h := &Handoff{Log: l, Peers: counting, Live: liveExcept{"away": true}, Now: c.Now, Rate: 1e6, Self: "n4", Batch: 8,
		Leaving: func() bool { return true }, Removed: func() bool { return true },
		Place: func(_ string, loc replica.Loc) ([]string, bool) { return []string{"n2", "n3", "up", "away"}, false }}
	if _, err := h.DeliverOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	sent := slices.Clone(got)
	n2Tries := tries["n2"]
	mu.Unlock()
	slices.Sort(sent)
	if want := []string{"n3 hint_for=away", "n3 hint_for=away", "up hint_for=up"}; !slices.Equal(sent, want) {
		t.Fatalf("sent %v, want %v", sent, want)
	}
	if n2Tries != 1 {
		t.Errorf("n2, unreachable, was asked %d times in the round, want once", n2Tries)
	}
	if s := statsFor(l, "up"); s.Count+statsFor(l, "away").Count != 0 || s.Quarantined != 1 {
		t.Fatalf("still held: up %+v, away %+v; want none, the bad hint quarantined", s, statsFor(l, "away"))
	}
}

// TestDeniedNodeHandsItsHintsOver: a node its peers refuse as not a
// member (removed while it was down, it never applied its removal, so it
// does not know) hands its hints over, as a removed node does, once a
// delivery was refused so; it tries plain delivery again a minute later.
func TestDeniedNodeHandsItsHintsOver(t *testing.T) {
	c := newClock()
	l, err := NewHintLog(memory.New(), HintLogConfig{Window: time.Hour, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := store(t, l, "up", "k"); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []string
	peers := writerFunc(func(_ context.Context, node string, req *internalv1.WriteRequest) error {
		mu.Lock()
		defer mu.Unlock()
		if req.GetHintFor() == "" {
			got = append(got, node+" plain: denied")
			return status.Error(codes.PermissionDenied, `node "n4" is not a member of this cluster`)
		}
		got = append(got, node+" hint_for="+req.GetHintFor())
		return nil
	})
	h := &Handoff{Log: l, Peers: peers, Live: liveExcept{}, Now: c.Now, Rate: 1e6, Self: "n4", Batch: 8,
		MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond,
		Removed: func() bool { return false }, // its own metadata says it is a member
		Place:   func(string, replica.Loc) ([]string, bool) { return []string{"up", "n2"}, false }}
	for range 2 {
		if _, err := h.DeliverOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
		c.Advance(time.Second)
	}
	mu.Lock()
	sent := slices.Clone(got)
	mu.Unlock()
	if want := []string{"up plain: denied", "up hint_for=up"}; !slices.Equal(sent, want) || statsFor(l, "up").Count != 0 {
		t.Fatalf("sent %v, still held %d; want %v and nothing held", sent, statsFor(l, "up").Count, want)
	}
	c.Advance(time.Minute)
	if h.deniedRecently() {
		t.Fatal("still handing over a minute after the last refusal: plain delivery is never tried again")
	}
}

// writerFunc is a Writer from a function.
type writerFunc func(ctx context.Context, node string, req *internalv1.WriteRequest) error

func (f writerFunc) Write(ctx context.Context, node string, req *internalv1.WriteRequest) error {
	return f(ctx, node, req)
}

// liveExcept is every node alive but those listed.
type liveExcept map[string]bool

func (l liveExcept) Alive(id string) bool { return !l[id] }
func (liveExcept) DiskLow(string) bool    { return false }

// TestLeavingNodeDropsAgedHints: a leaving node hands over no hint past
// MaxAge (it is dropped and reported, as at delivery).
func TestLeavingNodeDropsAgedHints(t *testing.T) {
	c := newClock()
	l := logHolding(t, HintLogConfig{Window: time.Hour, MaxAge: 2 * time.Hour, Now: c.Now}, "away")
	c.Advance(3 * time.Hour)
	p := &peers{}
	h := &Handoff{Log: l, Peers: p, Live: liveExcept{"away": true}, Now: c.Now, Rate: 1e6, Self: "n4",
		Leaving: func() bool { return true },
		Place:   func(string, replica.Loc) ([]string, bool) { return []string{"away", "n3"}, false }}
	if _, err := h.DeliverOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if sent := p.sent(); len(sent) != 0 || l.Dropped()[DropAged] != 1 || statsFor(l, "away").Count != 0 {
		t.Fatalf("sent %v, dropped %v, held %d; want nothing sent, the hint dropped as aged", sent, l.Dropped(), statsFor(l, "away").Count)
	}
}

// TestHintsOfARemovedNodeRefusedForGoodAreDropped: a hint of a departed
// target that its taker refuses for good (here: hints turned off) is
// dropped once, not kept and refused (and counted) every round.
func TestHintsOfARemovedNodeRefusedForGoodAreDropped(t *testing.T) {
	c := newClock()
	l := logHolding(t, HintLogConfig{Window: time.Hour, Now: c.Now}, "gone")
	l.cfg.Off = true
	h := &Handoff{Log: l, Peers: &peers{}, Live: allAlive{}, Now: c.Now, Rate: 1e6, Self: "n1",
		IsMember: func(id string) bool { return id != "gone" },
		Place:    func(string, replica.Loc) ([]string, bool) { return []string{"n2"}, false }}
	for range 3 {
		if _, err := h.DeliverOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if held, off := statsFor(l, "gone").Count, l.Dropped()[DropOff]; held != 0 || off != 1 {
		t.Fatalf("held %d, refused %d times; want the hint dropped after one refusal", held, off)
	}
}

// logHolding is a hint log on the memory engine holding one hint, of key
// "k", for target.
func logHolding(t *testing.T, cfg HintLogConfig, target string) *HintLog {
	t.Helper()
	l, err := NewHintLog(memory.New(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := store(t, l, target, "k"); err != nil {
		t.Fatal(err)
	}
	return l
}
