package repair

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	"github.com/meridiankv/meridian/engine"
	"github.com/meridiankv/meridian/engine/memory"
	"github.com/meridiankv/meridian/replica"
	"github.com/meridiankv/meridian/version"
)

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// peers records deliveries; fail makes a target refuse them, refuse makes
// every target refuse a key's set (replica.Refuse).
type peers struct {
	mu      sync.Mutex
	got     []string // "target/key"
	fail    map[string]bool
	refuse  map[string]bool
	onWrite func(node string, req *internalv1.WriteRequest)
}

func (p *peers) Write(_ context.Context, node string, req *internalv1.WriteRequest) error {
	p.mu.Lock()
	if p.fail[node] {
		p.mu.Unlock()
		return errors.New("unreachable")
	}
	if p.refuse[string(req.Key)] {
		p.mu.Unlock()
		return replica.Refuse("a version written an hour ahead of this node's clock")
	}
	p.got = append(p.got, node+"/"+string(req.Key))
	fn := p.onWrite
	p.mu.Unlock()
	if fn != nil {
		fn(node, req)
	}
	return nil
}

func (p *peers) sent() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.got)
}

type allAlive struct{}

func (allAlive) Alive(string) bool   { return true }
func (allAlive) DiskLow(string) bool { return false }

func value(t *testing.T, s string, n int64) version.Set {
	t.Helper()
	set, _ := version.Set{}.Put(version.Clock{}, "n1", version.Value{Bytes: []byte(s)}, n)
	return set
}

var loc = replica.Loc{Keyspace: 7, Partition: 3}

func store(t *testing.T, l *HintLog, target, key string) error {
	t.Helper()
	return l.StoreHint(target, loc, "ks", []byte(key), value(t, "value of "+key, 1), false)
}

func onDisk(t *testing.T, eng engine.Engine, prefix byte) (n int, bytes int64) {
	t.Helper()
	it, err := eng.NewIter([]byte{prefix}, []byte{prefix + 1})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		n++
		bytes += int64(len(it.Key()) + len(it.Value()))
	}
	return n, bytes
}

func statsFor(l *HintLog, target string) TargetStats {
	for _, s := range l.Stats() {
		if s.Target == target {
			return s
		}
	}
	return TargetStats{Target: target}
}

// TestHintLogFoldsAndDeletes: repeated writes fold into one hint per key;
// a hint that changed since it was read is not deleted.
func TestHintLogFoldsAndDeletes(t *testing.T) {
	l, err := NewHintLog(memory.New(), HintLogConfig{})
	if err != nil {
		t.Fatal(err)
	}
	a := value(t, "a", 1)
	b, _ := a.Put(a.Context(), "n1", version.Value{Bytes: []byte("b")}, 2)
	for _, set := range []version.Set{a, b} {
		if err := l.StoreHint("n2", loc, "ks", []byte("k"), set, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := store(t, l, "n3", "k2"); err != nil {
		t.Fatal(err)
	}
	var got []Hint
	l.Hints("n2", func(h Hint) bool { got = append(got, h); return true })
	if len(got) != 1 || got[0].Keyspace != "ks" || string(got[0].Key) != "k" || !got[0].Set.Equal(b) || got[0].Loc != loc {
		t.Fatalf("hints for n2 = %+v, want one folded hint equal to the later write", got)
	}
	if s := statsFor(l, "n2"); s.Count != 1 {
		t.Fatalf("n2 stats %+v, want 1 hint", s)
	}
	stale := got[0]
	stale.Set = a
	if ok, err := l.Delete(stale); err != nil || ok {
		t.Fatalf("Delete(stale) = %v, %v; want not deleted", ok, err)
	}
	if ok, err := l.Delete(got[0]); err != nil || !ok {
		t.Fatalf("Delete = %v, %v; want deleted", ok, err)
	}
	if ts := l.Targets(); !slices.Equal(ts, []string{"n3"}) {
		t.Fatalf("targets %v, want [n3]", ts)
	}
	if err := l.StoreHint("", loc, "ks", []byte("k"), a, false); err == nil || errors.Is(err, ErrHintDropped) {
		t.Fatalf("empty target: %v, want a clear error", err)
	}
}

// TestHintLogReadsOriginalLayout: hints stored before hint times were
// kept (len(ks) | ks | set) still decode and are accounted for.
func TestHintLogReadsOriginalLayout(t *testing.T) {
	eng := memory.New()
	set := value(t, "old", 1)
	b := eng.NewBatch()
	b.Set(hintKey("n2", loc, []byte("k")), set.AppendEncode([]byte{2, 'k', 's'}))
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	c := newClock()
	l, err := NewHintLog(eng, HintLogConfig{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	var got []Hint
	l.Hints("", func(h Hint) bool { got = append(got, h); return true })
	if len(got) != 1 || got[0].Keyspace != "ks" || !got[0].Set.Equal(set) || !got[0].Stored.Equal(c.Now()) {
		t.Fatalf("old-layout hint read as %+v", got)
	}
	if s := statsFor(l, "n2"); s.Count != 1 || s.Bytes == 0 {
		t.Fatalf("stats %+v", s)
	}
}

// TestHintLogByteCap: while a target is down, its hints stay within the
// byte cap, writes past it are refused with ErrHintDropped (and reported
// for repair), other targets are unaffected, and a reopened log accounts
// for the same bytes.
func TestHintLogByteCap(t *testing.T) {
	eng := memory.New()
	var mu sync.Mutex
	dropped := map[replica.Loc]int{}
	cfg := HintLogConfig{MaxBytes: 4 << 10, OnDropped: func(target string, l replica.Loc) {
		mu.Lock()
		defer mu.Unlock()
		dropped[l]++
	}}
	l, err := NewHintLog(eng, cfg)
	if err != nil {
		t.Fatal(err)
	}
	stored, refused := 0, 0
	for i := range 500 {
		err := store(t, l, "n2", fmt.Sprintf("key-%04d", i))
		switch {
		case err == nil:
			stored++
		case errors.Is(err, ErrHintDropped):
			refused++
		default:
			t.Fatal(err)
		}
	}
	if stored == 0 || refused == 0 {
		t.Fatalf("stored %d, refused %d: want both", stored, refused)
	}
	s := statsFor(l, "n2")
	n, bytes := onDisk(t, eng, replica.HintPrefix)
	if s.Bytes > cfg.MaxBytes || bytes != s.Bytes || int64(n) != s.Count || n != stored {
		t.Fatalf("accounted %+v, on disk %d hints %d bytes, stored %d; cap %d", s, n, bytes, stored, cfg.MaxBytes)
	}
	if dropped[loc] != refused || l.Dropped()[DropBytes] != uint64(refused) {
		t.Fatalf("reported %d drops, counted %v; want %d", dropped[loc], l.Dropped(), refused)
	}
	if err := store(t, l, "n3", "key"); err != nil {
		t.Fatalf("another target: %v", err)
	}
	again, err := NewHintLog(eng, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s2 := statsFor(again, "n2"); s2.Count != s.Count || s2.Bytes != s.Bytes {
		t.Fatalf("reopened: %+v, want %+v", s2, s)
	}
}

// TestHintLogCountCapAndOff: the count bound refuses new keys but folds
// writes to held ones; a log that is off stores nothing.
func TestHintLogCountCapAndOff(t *testing.T) {
	l, err := NewHintLog(memory.New(), HintLogConfig{MaxCount: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "b"} {
		if err := store(t, l, "n2", k); err != nil {
			t.Fatal(err)
		}
	}
	if err := store(t, l, "n2", "c"); !errors.Is(err, ErrHintDropped) {
		t.Fatalf("third key: %v, want ErrHintDropped", err)
	}
	if err := l.StoreHint("n2", loc, "ks", []byte("a"), value(t, "newer", 2), false); err != nil {
		t.Fatalf("fold into a held hint: %v", err)
	}
	off, err := NewHintLog(memory.New(), HintLogConfig{Off: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := store(t, off, "n2", "a"); !errors.Is(err, ErrHintDropped) || len(off.Targets()) != 0 {
		t.Fatalf("hints off: %v, targets %v", err, off.Targets())
	}
	if _, err := NewHintLog(memory.New(), HintLogConfig{MaxBytes: -1}); err == nil {
		t.Fatal("negative bound accepted")
	}
}

// TestHintWindow: a target owed hints for longer than the window gets no
// new ones; at delivery every hint held goes to it, those older than the
// window too (the window bounds taking hints, not delivering them: an
// expired hint may be the only copy of an acknowledged write); then the
// target takes hints again.
func TestHintWindow(t *testing.T) {
	c := newClock()
	var drops []string
	var mu sync.Mutex
	l, err := NewHintLog(memory.New(), HintLogConfig{Window: time.Hour, Now: c.Now, OnDropped: func(target string, _ replica.Loc) {
		mu.Lock()
		defer mu.Unlock()
		drops = append(drops, target)
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := store(t, l, "n2", "early"); err != nil {
		t.Fatal(err)
	}
	c.Advance(30 * time.Minute)
	if err := store(t, l, "n2", "late"); err != nil {
		t.Fatal(err)
	}
	c.Advance(31 * time.Minute)
	if err := store(t, l, "n2", "refused"); !errors.Is(err, ErrHintDropped) || !errors.Is(err, ErrHintWindow) {
		t.Fatalf("past the window: %v, want ErrHintDropped and ErrHintWindow", err)
	}
	if err := store(t, l, "n3", "fresh"); err != nil {
		t.Fatalf("another target: %v", err)
	}
	if s := statsFor(l, "n2"); s.OldestAge != 61*time.Minute || s.Count != 2 {
		t.Fatalf("n2 stats %+v", s)
	}
	p := &peers{}
	h := &Handoff{Log: l, Peers: p, Live: allAlive{}, Now: c.Now, Rate: 1e6}
	if _, err := h.DeliverOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := p.sent(); !slices.Equal(slices.Sorted(slices.Values(got)), []string{"n2/early", "n2/late", "n3/fresh"}) {
		t.Fatalf("delivered %v, want every hint held, the expired one too", got)
	}
	if d := l.Dropped(); d[DropWindow] != 1 || d[DropExpired] != 0 || len(drops) != 1 {
		t.Fatalf("dropped %v, reported %v; want only the hint refused past the window", d, drops)
	}
	if err := store(t, l, "n2", "again"); err != nil {
		t.Fatalf("after delivery: %v", err)
	}
}

// TestDeliveryQuarantinesCorruptHint: a hint that does not decode is set
// aside and counted; the others are delivered.
func TestDeliveryQuarantinesCorruptHint(t *testing.T) {
	eng := memory.New()
	l, err := NewHintLog(eng, HintLogConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "c"} {
		if err := store(t, l, "n2", k); err != nil {
			t.Fatal(err)
		}
	}
	b := eng.NewBatch()
	b.Set(hintKey("n2", loc, []byte("b")), []byte{0xff, 1, 2})         // short header
	b.Set(hintKey("n2", loc, []byte("b2")), []byte{2, 'k', 's', 0xee}) // bad set
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	if l, err = NewHintLog(eng, HintLogConfig{}); err != nil {
		t.Fatal(err)
	}
	p := &peers{}
	h := &Handoff{Log: l, Peers: p, Live: allAlive{}, Rate: 1e6}
	n, err := h.DeliverOnce(context.Background())
	if err != nil || n != 2 {
		t.Fatalf("DeliverOnce = %d, %v; want 2 delivered", n, err)
	}
	if got := p.sent(); !slices.Equal(got, []string{"n2/a", "n2/c"}) {
		t.Fatalf("delivered %v", got)
	}
	if s := statsFor(l, "n2"); s.Quarantined != 2 || s.Count != 0 || s.Bytes != 0 {
		t.Fatalf("stats %+v, want 2 quarantined and none held", s)
	}
	if q, _ := onDisk(t, eng, replica.HintQuarantinePrefix); q != 2 {
		t.Fatalf("%d quarantined on disk, want 2", q)
	}
	if n, _ := onDisk(t, eng, replica.HintPrefix); n != 0 {
		t.Fatalf("%d hints left", n)
	}
	// Reopened, the count survives; purge clears it.
	if l, err = NewHintLog(eng, HintLogConfig{}); err != nil {
		t.Fatal(err)
	}
	if s := statsFor(l, "n2"); s.Quarantined != 2 {
		t.Fatalf("reopened stats %+v", s)
	}
	if n, err := l.Purge("n2"); err != nil || n != 2 {
		t.Fatalf("Purge = %d, %v", n, err)
	}
	if len(l.Stats()) != 0 {
		t.Fatalf("stats after purge: %+v", l.Stats())
	}
}

// TestPurgeSendsPartitionsToAntiEntropy: a purge deletes what may be the
// only copies of acknowledged writes (a write at ANY with every replica
// down), so each purged hint's partition is reported like any dropped
// hint's, for anti-entropy to take first; other targets' hints stay.
func TestPurgeSendsPartitionsToAntiEntropy(t *testing.T) {
	var reported []string
	l, err := NewHintLog(memory.New(), HintLogConfig{OnDropped: func(target string, loc replica.Loc) {
		reported = append(reported, fmt.Sprintf("%s %d/%d", target, loc.Keyspace, loc.Partition))
	}})
	if err != nil {
		t.Fatal(err)
	}
	other := replica.Loc{Keyspace: 7, Partition: 9}
	for _, h := range []struct {
		target string
		loc    replica.Loc
		key    string
	}{{"n2", loc, "a"}, {"n2", other, "b"}, {"n3", loc, "c"}} {
		if err := l.StoreHint(h.target, h.loc, "ks", []byte(h.key), value(t, h.key, 1), false); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := l.Purge("n2"); err != nil || n != 2 {
		t.Fatalf("Purge = %d, %v; want 2", n, err)
	}
	slices.Sort(reported)
	if want := []string{"n2 7/3", "n2 7/9"}; !slices.Equal(reported, want) {
		t.Fatalf("partitions reported for anti-entropy: %v, want %v", reported, want)
	}
	if s := statsFor(l, "n3"); s.Count != 1 {
		t.Fatalf("n3's hints after purging n2's: %+v", s)
	}
}

// TestDeliveryDropsNonMembers: hints for an ID no longer in the topology
// are dropped, not delivered.
func TestDeliveryDropsNonMembers(t *testing.T) {
	l, err := NewHintLog(memory.New(), HintLogConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "b", "c"} {
		if err := store(t, l, "gone", k); err != nil {
			t.Fatal(err)
		}
	}
	if err := store(t, l, "n2", "a"); err != nil {
		t.Fatal(err)
	}
	p := &peers{}
	h := &Handoff{Log: l, Peers: p, Live: allAlive{}, Rate: 1e6, IsMember: func(id string) bool { return id != "gone" }}
	if n, err := h.DeliverOnce(context.Background()); err != nil || n != 1 {
		t.Fatalf("DeliverOnce = %d, %v", n, err)
	}
	if got := p.sent(); !slices.Equal(got, []string{"n2/a"}) {
		t.Fatalf("delivered %v", got)
	}
	if d := l.Dropped()[DropNonMember]; d != 3 || len(l.Targets()) != 0 {
		t.Fatalf("dropped %d, targets %v", d, l.Targets())
	}
	l.mu.Lock()
	_, kept := l.mu.targets["gone"]
	l.mu.Unlock()
	if kept {
		t.Fatal("the accounting of a node outside the topology is kept after its hints were dropped")
	}
}

// TestDeliveryResumesFromCursor: each round goes on from the last hint
// handled; a hint left behind (changed while delivered) waits for the
// next pass instead of being sent again at once.
func TestDeliveryResumesFromCursor(t *testing.T) {
	l, err := NewHintLog(memory.New(), HintLogConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := store(t, l, "n2", fmt.Sprintf("k%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	p := &peers{}
	once := sync.Once{}
	p.onWrite = func(_ string, req *internalv1.WriteRequest) {
		if string(req.Key) == "k0" {
			once.Do(func() {
				// A newer write folds into k0 while it is being delivered.
				old := value(t, "value of k0", 1)
				newer, _ := old.Put(old.Context(), "n1", version.Value{Bytes: []byte("newer")}, 2)
				if err := l.StoreHint("n2", loc, "ks", []byte("k0"), newer, false); err != nil {
					t.Error(err)
				}
			})
		}
	}
	h := &Handoff{Log: l, Peers: p, Live: allAlive{}, Rate: 1e6, Batch: 2}
	want := [][]string{{"n2/k0", "n2/k1"}, {"n2/k2", "n2/k3"}, {"n2/k4"}, {"n2/k0"}}
	for round, w := range want {
		before := len(p.sent())
		if _, err := h.DeliverOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := p.sent()[before:]; !slices.Equal(got, w) {
			t.Fatalf("round %d delivered %v, want %v (cursor %q)", round, got, w, h.cursor("n2"))
		}
	}
	if len(l.Targets()) != 0 {
		t.Fatalf("hints left for %v", l.Targets())
	}
}

// TestRefusedHintDoesNotHoldUpTheRest: a hint its target refuses (one
// key's set, not the target) stays in the log for the next pass while
// the hints after it are delivered, with no backoff; once taken it goes.
func TestRefusedHintDoesNotHoldUpTheRest(t *testing.T) {
	l, err := NewHintLog(memory.New(), HintLogConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if err := store(t, l, "n2", fmt.Sprintf("k%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	p := &peers{refuse: map[string]bool{"k1": true}}
	var logged bytes.Buffer
	h := &Handoff{Log: l, Peers: p, Live: allAlive{}, Rate: 1e6, MinBackoff: time.Hour,
		Logger: slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	ctx := context.Background()
	if n, err := h.DeliverOnce(ctx); n != 3 || err != nil {
		t.Fatalf("delivered %d (%v), want the three hints not refused", n, err)
	}
	// The next pass meets the refusal again; the log heard of it once.
	if n, err := h.DeliverOnce(ctx); n != 0 || err != nil {
		t.Fatalf("the next pass delivered %d (%v), want nothing", n, err)
	}
	if n := strings.Count(logged.String(), "hint refused"); n != 1 {
		t.Fatalf("the refusal logged %d times at warning level in two passes, want once:\n%s", n, logged.String())
	}
	if got := p.sent(); !slices.Equal(got, []string{"n2/k0", "n2/k2", "n2/k3"}) {
		t.Fatalf("delivered %v", got)
	}
	if b := h.target("n2").backoff; b != 0 {
		t.Fatalf("backing off %v after a refused key", b)
	}
	if s := statsFor(l, "n2"); s.Count != 1 {
		t.Fatalf("%d hints held for n2, want the refused one kept", s.Count)
	}
	p.mu.Lock()
	p.refuse = nil
	p.mu.Unlock()
	if n, err := h.DeliverOnce(ctx); n != 1 || err != nil {
		t.Fatalf("delivered %d (%v) once the key is taken, want 1", n, err)
	}
	if len(l.Targets()) != 0 {
		t.Fatalf("hints left for %v", l.Targets())
	}
}

// TestRefusedHintsAreNotOwed: once a full pass finds that the target
// refuses every hint left for it, the target is no longer owed hints (the
// coordinator would keep it out of read quorums for the hint window to no
// purpose), though the hints stay; a hint stored since the pass began, or
// after it, makes it owed again until a pass offers that one too.
func TestRefusedHintsAreNotOwed(t *testing.T) {
	l, err := NewHintLog(memory.New(), HintLogConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"k0", "k1"} {
		if err := store(t, l, "n2", k); err != nil {
			t.Fatal(err)
		}
	}
	p := &peers{refuse: map[string]bool{"k1": true, "k2": true}}
	h := &Handoff{Log: l, Peers: p, Live: allAlive{}, Rate: 1e6, MinBackoff: time.Hour}
	ctx := context.Background()
	if got := l.Owed(); !slices.Equal(got, []string{"n2"}) {
		t.Fatalf("owed %v before any delivery, want n2", got)
	}
	if n, err := h.DeliverOnce(ctx); n != 1 || err != nil {
		t.Fatalf("delivered %d (%v), want k0", n, err)
	}
	if got := l.Owed(); len(got) != 0 {
		t.Fatalf("owed %v after n2 refused the only hint left, want none", got)
	}
	if got := l.Targets(); !slices.Equal(got, []string{"n2"}) {
		t.Fatalf("hints held for %v, want the refused one kept for n2", got)
	}
	if s := statsFor(l, "n2"); s.Count != 1 || s.Refused != 1 || s.Owed {
		t.Fatalf("stats %+v, want 1 held, 1 refused, not owed", s)
	}

	// A new hint has not been offered yet: owed again.
	if err := store(t, l, "n2", "k3"); err != nil {
		t.Fatal(err)
	}
	if got := l.Owed(); !slices.Equal(got, []string{"n2"}) {
		t.Fatalf("owed %v with a new hint for n2, want n2", got)
	}
	if n, err := h.DeliverOnce(ctx); n != 1 || err != nil {
		t.Fatalf("delivered %d (%v), want k3", n, err)
	}
	if got := l.Owed(); len(got) != 0 {
		t.Fatalf("owed %v once k3 went, want none", got)
	}

	// A hint stored while a pass runs, behind its cursor, was not offered
	// by that pass: the pass does not clear the target.
	p.mu.Lock()
	p.onWrite = nil
	p.mu.Unlock()
	if err := store(t, l, "n2", "k4"); err != nil {
		t.Fatal(err)
	}
	stored := false
	p.mu.Lock()
	p.onWrite = func(node string, req *internalv1.WriteRequest) {
		if string(req.Key) == "k4" && !stored {
			stored = true
			if err := store(t, l, "n2", "k2"); err != nil { // refused when offered
				t.Error(err)
			}
		}
	}
	p.mu.Unlock()
	if n, err := h.DeliverOnce(ctx); n != 1 || err != nil {
		t.Fatalf("delivered %d (%v), want k4", n, err)
	}
	if got := l.Owed(); !slices.Equal(got, []string{"n2"}) {
		t.Fatalf("owed %v after a hint was stored behind the cursor, want n2", got)
	}
	if n, err := h.DeliverOnce(ctx); n != 0 || err != nil {
		t.Fatalf("delivered %d (%v), want none: k1 and k2 are refused", n, err)
	}
	if got, s := l.Owed(), statsFor(l, "n2"); len(got) != 0 || s.Refused != 2 {
		t.Fatalf("owed %v, stats %+v after a pass offered both refused hints, want none owed, 2 refused", got, s)
	}

	// Taken at last: nothing held.
	p.mu.Lock()
	p.refuse = nil
	p.mu.Unlock()
	if n, err := h.DeliverOnce(ctx); n != 2 || err != nil {
		t.Fatalf("delivered %d (%v) once the keys are taken, want 2", n, err)
	}
	if len(l.Targets()) != 0 || len(l.Owed()) != 0 {
		t.Fatalf("hints left for %v (owed %v)", l.Targets(), l.Owed())
	}
}

// TestDeliveryBacksOff: a target that fails is not tried again until its
// backoff passes, and the pause doubles per failure; others go on.
func TestDeliveryBacksOff(t *testing.T) {
	c := newClock()
	l, err := NewHintLog(memory.New(), HintLogConfig{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{"n2", "n3"} {
		if err := store(t, l, target, "k"); err != nil {
			t.Fatal(err)
		}
	}
	p := &peers{fail: map[string]bool{"n2": true}}
	h := &Handoff{Log: l, Peers: p, Live: allAlive{}, Now: c.Now, Rate: 1e6, MinBackoff: time.Second, MaxBackoff: 3 * time.Second}
	ctx := context.Background()
	if n, _ := h.DeliverOnce(ctx); n != 1 {
		t.Fatalf("first round delivered %d, want n3's hint", n)
	}
	tries := func() time.Duration { return h.target("n2").backoff }
	if tries() != time.Second {
		t.Fatalf("backoff %v after one failure", tries())
	}
	c.Advance(500 * time.Millisecond)
	h.DeliverOnce(ctx)
	if tries() != time.Second {
		t.Fatalf("tried again within the backoff (now %v)", tries())
	}
	c.Advance(time.Second)
	h.DeliverOnce(ctx)
	if tries() != 2*time.Second {
		t.Fatalf("backoff %v after two failures, want 2s", tries())
	}
	c.Advance(2 * time.Second)
	h.DeliverOnce(ctx)
	if tries() != 3*time.Second {
		t.Fatalf("backoff %v, want capped at 3s", tries())
	}
	p.mu.Lock()
	p.fail = nil
	p.mu.Unlock()
	// Still backing off; but gossip saw n2 come back (Wake): its hints go
	// at the next round, not after the rest of the backoff.
	c.Advance(time.Second)
	if n, _ := h.DeliverOnce(ctx); n != 0 {
		t.Fatalf("delivered %d within the backoff", n)
	}
	h.Wake("n2")
	if n, _ := h.DeliverOnce(ctx); n != 1 || tries() != 0 {
		t.Fatalf("after recovery and Wake delivered %d, backoff %v", n, tries())
	}
}

// TestDeliveryParallelUnderRate: many targets are delivered in one round
// by several workers, within the token bucket's rate.
func TestDeliveryParallelUnderRate(t *testing.T) {
	l, err := NewHintLog(memory.New(), HintLogConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 8 {
		for j := range 5 {
			if err := store(t, l, fmt.Sprintf("n%d", i), fmt.Sprintf("k%d", j)); err != nil {
				t.Fatal(err)
			}
		}
	}
	h := &Handoff{Log: l, Peers: &peers{}, Live: allAlive{}, Workers: 3, Rate: 1e5}
	n, err := h.DeliverOnce(context.Background())
	if err != nil || n != 40 || len(l.Targets()) != 0 {
		t.Fatalf("DeliverOnce = %d, %v; targets left %v", n, err, l.Targets())
	}
	for _, s := range l.Stats() {
		t.Errorf("left %+v", s)
	}
}

// TestHintBucket: tokens refill at the rate up to the burst.
func TestHintBucket(t *testing.T) {
	c := newClock()
	b := newTokenBucket(10, 2, c.Now)
	for i := range 2 {
		if _, ok := b.take(1); !ok {
			t.Fatalf("burst token %d refused", i)
		}
	}
	d, ok := b.take(1)
	if ok || d != 100*time.Millisecond {
		t.Fatalf("empty bucket: %v, %v; want wait 100ms", d, ok)
	}
	c.Advance(100 * time.Millisecond)
	if _, ok := b.take(1); !ok {
		t.Fatal("no token after refill")
	}
	c.Advance(time.Hour)
	n := 0
	for {
		if _, ok := b.take(1); !ok {
			break
		}
		n++
	}
	if n != 2 {
		t.Fatalf("%d tokens after a long pause, want the burst of 2", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.wait(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("wait on a done context: %v", err)
	}
}

// TestDeliveryBatchBytesBound: a round reads at most BatchBytes of hints
// into memory (at least one), and later rounds deliver the rest.
func TestDeliveryBatchBytesBound(t *testing.T) {
	l, err := NewHintLog(memory.New(), HintLogConfig{})
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 3000)
	for i := range 4 {
		set, _ := version.Set{}.Put(version.Clock{}, "n1", version.Value{Bytes: big}, 1)
		if err := l.StoreHint("n2", loc, "ks", []byte(fmt.Sprintf("k%d", i)), set, false); err != nil {
			t.Fatal(err)
		}
	}
	p := &peers{}
	h := &Handoff{Log: l, Peers: p, Live: allAlive{}, Rate: 1e6, BatchBytes: 7000}
	var perRound []int
	for len(l.Targets()) > 0 && len(perRound) < 10 {
		before := len(p.sent())
		if _, err := h.DeliverOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
		perRound = append(perRound, len(p.sent())-before)
	}
	if !slices.Equal(perRound, []int{2, 2}) {
		t.Fatalf("hints delivered per round %v, want [2 2] (two ~3 KB hints fit in 7,000 bytes)", perRound)
	}
	h2 := &Handoff{Log: l, Peers: p, Live: allAlive{}, Rate: 1e6, BatchBytes: 1}
	set, _ := version.Set{}.Put(version.Clock{}, "n1", version.Value{Bytes: big}, 1)
	if err := l.StoreHint("n2", loc, "ks", []byte("alone"), set, false); err != nil {
		t.Fatal(err)
	}
	if n, err := h2.DeliverOnce(context.Background()); err != nil || n != 1 {
		t.Fatalf("a hint over the byte bound must still be delivered alone: %d, %v", n, err)
	}
}

// lowSet is liveness where the nodes in it are up but low on disk.
type lowSet struct {
	mu  sync.Mutex
	low map[string]bool
}

func (*lowSet) Alive(string) bool { return true }
func (l *lowSet) DiskLow(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.low[id]
}

// TestDeliveryWaitsForDiskSpace: hints for a node that gossips it is low
// on disk are not offered (it would refuse them), so it collects no
// failed attempts and no backoff; once it has room they go at the next
// round. Other targets are delivered meanwhile.
func TestDeliveryWaitsForDiskSpace(t *testing.T) {
	l, err := NewHintLog(memory.New(), HintLogConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{"n2", "n3"} {
		if err := store(t, l, target, "k"); err != nil {
			t.Fatal(err)
		}
	}
	p := &peers{}
	live := &lowSet{low: map[string]bool{"n2": true}}
	h := &Handoff{Log: l, Peers: p, Live: live, Rate: 1e6}
	ctx := context.Background()
	for range 3 {
		if _, err := h.DeliverOnce(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(p.sent(), []string{"n3/k"}) || h.target("n2").backoff != 0 {
		t.Fatalf("with n2 low on disk: sent %v, n2 backoff %v; want only n3's hint and no backoff", p.sent(), h.target("n2").backoff)
	}
	live.mu.Lock()
	live.low["n2"] = false
	live.mu.Unlock()
	if n, err := h.DeliverOnce(ctx); err != nil || n != 1 || !slices.Equal(p.sent(), []string{"n3/k", "n2/k"}) {
		t.Fatalf("once n2 has room: delivered %d (%v), sent %v; want n2's hint", n, err, p.sent())
	}
}

// TestHintLogRefusesMergePastHardLimit: a write that, folded into the hint
// held, would pass a set's hard limit is refused; the hint held, with the
// writes it carries, stays deliverable.
func TestHintLogRefusesMergePastHardLimit(t *testing.T) {
	var dropped []string
	l, err := NewHintLog(memory.New(), HintLogConfig{OnDropped: func(target string, _ replica.Loc) { dropped = append(dropped, target) }})
	if err != nil {
		t.Fatal(err)
	}
	blind := func(from, to int) version.Set {
		var s version.Set
		for i := from; i < to; i++ {
			one, _ := version.Set{}.Put(version.Clock{}, fmt.Sprintf("w%d", i), version.Value{Bytes: []byte("v")}, 1)
			s = version.Merge(s, one)
		}
		return s
	}
	held := blind(0, version.MaxSiblings-10)
	if err := l.StoreHint("n2", loc, "ks", []byte("k"), held, false); err != nil {
		t.Fatal(err)
	}
	err = l.StoreHint("n2", loc, "ks", []byte("k"), blind(version.MaxSiblings, version.MaxSiblings+20), false)
	if !errors.Is(err, ErrHintDropped) || len(dropped) != 1 {
		t.Fatalf("merge past %d siblings: %v (dropped %v), want ErrHintDropped and the partition marked", version.MaxSiblings, err, dropped)
	}
	var got []Hint
	if err := l.Hints("n2", func(h Hint) bool { got = append(got, h); return true }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !got[0].Set.Equal(held) {
		t.Fatalf("hint held after the refusal: %d hints, want the one held before", len(got))
	}
}

// localMerges records what a Handoff merges into this node's copy.
type localMerges struct {
	mu  sync.Mutex
	got []string // "keyspace/key"
}

func (m *localMerges) MergeLocal(keyspace string, key []byte, _ version.Set) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.got = append(m.got, keyspace+"/"+string(key))
	return nil
}

func (m *localMerges) Sync() error { return nil }

// TestHintsFollowTheirPartition: a hint goes where its data belongs now.
// Its keyspace dropped (here: no keyspace of its name has its ID):
// dropped. Its target no longer a replica of the partition, or gone from
// the topology: handed to the partition's current replicas (merged here
// when this node is one) instead of sent to a node that will drop the
// partition, or dropped with what may be the only copy of an
// acknowledged write. Its target still a replica: kept for it however
// old. Only an expired hint no node can ever take is dropped.
func TestHintsFollowTheirPartition(t *testing.T) {
	c := newClock()
	l, err := NewHintLog(memory.New(), HintLogConfig{Window: time.Hour, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	recreated := replica.Loc{Keyspace: 8, Partition: 3} // no keyspace "old" with ID 8
	if err := l.StoreHint("n2", recreated, "old", []byte("dropped"), value(t, "x", 1), false); err != nil {
		t.Fatal(err)
	}
	if err := store(t, l, "n2", "moved"); err != nil { // loc: partition 3 of ks, now on n3 and here
		t.Fatal(err)
	}
	if err := store(t, l, "gone", "left"); err != nil {
		t.Fatal(err)
	}
	p := &peers{}
	local := &localMerges{}
	h := &Handoff{Log: l, Peers: p, Live: allAlive{}, Now: c.Now, Rate: 1e6, Self: "n1", Local: local,
		IsMember: func(id string) bool { return id != "gone" },
		Place: func(keyspace string, at replica.Loc) ([]string, bool) {
			if keyspace != "ks" || at.Keyspace != loc.Keyspace {
				return nil, true
			}
			return []string{"n3", "n1"}, false
		}}
	if _, err := h.DeliverOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := l.Dropped(); d[DropKeyspace] != 1 || d[DropNonMember] != 0 || d[DropExpired] != 0 {
		t.Fatalf("dropped %v, want only the dropped keyspace's hint", d)
	}
	local.mu.Lock()
	merged := slices.Sorted(slices.Values(local.got))
	local.mu.Unlock()
	if !slices.Equal(merged, []string{"ks/left", "ks/moved"}) {
		t.Fatalf("merged here %v, want the moved and the non-member's hints", merged)
	}
	if s := statsFor(l, "n3"); s.Count != 2 || statsFor(l, "n2").Count != 0 || statsFor(l, "gone").Count != 0 {
		t.Fatalf("hints held: n3 %+v, n2 %+v, gone %+v; want both handed to n3", s, statsFor(l, "n2"), statsFor(l, "gone"))
	}
	if _, err := h.DeliverOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := slices.Sorted(slices.Values(p.sent())); !slices.Equal(got, []string{"n3/left", "n3/moved"}) {
		t.Fatalf("delivered %v, want both to n3 and none to n2", got)
	}

	// Expired while its target, still a replica, did not answer: kept
	// for it (neither handed on nor dropped), and delivered to it once
	// it answers.
	if err := store(t, l, "n3", "late"); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.fail = map[string]bool{"n3": true}
	p.mu.Unlock()
	h.Place = func(string, replica.Loc) ([]string, bool) { return []string{"n3", "n4"}, false }
	c.Advance(2 * time.Hour)
	if _, err := h.DeliverOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := l.Dropped()[DropExpired]; d != 0 || statsFor(l, "n4").Count != 0 || statsFor(l, "n3").Count != 1 {
		t.Fatalf("an expired hint for a replica not answering: %d dropped, n3 holds %+v, n4 %+v; want it kept for n3", d, statsFor(l, "n3"), statsFor(l, "n4"))
	}
	p.mu.Lock()
	p.fail = nil
	p.mu.Unlock()
	h.Wake("n3")
	if _, err := h.DeliverOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := p.sent(); !slices.Contains(got, "n3/late") || statsFor(l, "n3").Count != 0 || statsFor(l, "n4").Count != 0 {
		t.Fatalf("delivered %v, n3 holds %+v, n4 %+v; want the expired hint delivered to n3", got, statsFor(l, "n3"), statsFor(l, "n4"))
	}
	// Its partition moved off its target and no node can ever take it
	// (here: only this node, which merges nothing): kept until it
	// expires, then dropped.
	if err := store(t, l, "n3", "stranded"); err != nil {
		t.Fatal(err)
	}
	h.Local = nil
	h.Place = func(string, replica.Loc) ([]string, bool) { return []string{"n1"}, false }
	if _, err := h.DeliverOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := l.Dropped()[DropExpired]; d != 0 || statsFor(l, "n3").Count != 1 {
		t.Fatalf("a hint no node can take, within the window: %d dropped, n3 holds %+v; want it kept", d, statsFor(l, "n3"))
	}
	c.Advance(2 * time.Hour)
	if _, err := h.DeliverOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := l.Dropped()[DropExpired]; d != 1 || statsFor(l, "n3").Count != 0 {
		t.Fatalf("an expired hint no node can take: %d dropped, n3 holds %+v; want it dropped", d, statsFor(l, "n3"))
	}
}

// TestExpiredHintGoesToItsTarget: a hint held past the window goes to its
// target when the target is alive and still replicates the partition
// (it came back with a backlog just before the window): the window
// bounds taking new hints, and an expired hint may be the only copy of an
// acknowledged write.
func TestExpiredHintGoesToItsTarget(t *testing.T) {
	for _, place := range []bool{true, false} {
		c := newClock()
		var reported int
		l, err := NewHintLog(memory.New(), HintLogConfig{Window: time.Hour, Now: c.Now,
			OnDropped: func(string, replica.Loc) { reported++ }})
		if err != nil {
			t.Fatal(err)
		}
		if err := store(t, l, "n2", "k"); err != nil {
			t.Fatal(err)
		}
		c.Advance(61 * time.Minute)
		p := &peers{}
		h := &Handoff{Log: l, Peers: p, Live: allAlive{}, Now: c.Now, Rate: 1e6, Self: "n1", Local: &localMerges{}}
		if place { // else no placement: the hint goes as stored
			h.Place = func(string, replica.Loc) ([]string, bool) { return []string{"n2"}, false }
		}
		if _, err := h.DeliverOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := p.sent(); !slices.Equal(got, []string{"n2/k"}) {
			t.Fatalf("Place set %v: delivered %v, want the expired hint to n2", place, got)
		}
		if d := l.Dropped(); len(d) != 0 || reported != 0 || statsFor(l, "n2").Count != 0 {
			t.Fatalf("Place set %v: dropped %v, reported %d, n2 holds %+v; want nothing dropped, nothing held", place, d, reported, statsFor(l, "n2"))
		}
	}
}

// TestExpiredHintWaitsForATaker: a hint held past the window whose target
// no longer replicates its partition, and which the partition's replica
// cannot take now (it holds its most hints), stays until it can rather
// than being dropped with what may be the only copy of an acknowledged
// write.
func TestExpiredHintWaitsForATaker(t *testing.T) {
	c := newClock()
	l, err := NewHintLog(memory.New(), HintLogConfig{Window: time.Hour, MaxCount: 1, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := store(t, l, "n2", "moved"); err != nil {
		t.Fatal(err)
	}
	if err := store(t, l, "n3", "held"); err != nil { // n3's one hint: it takes no other
		t.Fatal(err)
	}
	c.Advance(61 * time.Minute)
	live := liveExcept{"n3": true} // n3's hint waits for it
	p := &peers{}
	h := &Handoff{Log: l, Peers: p, Live: live, Now: c.Now, Rate: 1e6, Self: "n1", Local: &localMerges{},
		Place: func(string, replica.Loc) ([]string, bool) { return []string{"n3"}, false }}
	for range 2 {
		if _, err := h.DeliverOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if d := l.Dropped()[DropExpired]; d != 0 || statsFor(l, "n2").Count != 1 || len(p.sent()) != 0 {
		t.Fatalf("an expired hint no replica takes now: %d dropped, n2 holds %+v, sent %v; want it kept, not sent to n2", d, statsFor(l, "n2"), p.sent())
	}
	// Kept for n3, it is not owed to n2: n2 counts for reads and takes
	// new hints whatever the hint's age.
	if st := statsFor(l, "n2"); st.Owed {
		t.Fatalf("n2 %+v: owed hints for a partition it no longer replicates", st)
	}
	// n3 back: its hint delivered, it takes n2's, then gets it.
	delete(live, "n3")
	for range 3 {
		if _, err := h.DeliverOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if got := slices.Sorted(slices.Values(p.sent())); !slices.Equal(got, []string{"n3/held", "n3/moved"}) || statsFor(l, "n2").Count != 0 {
		t.Fatalf("delivered %v, n2 holds %+v; want both to n3", got, statsFor(l, "n2"))
	}
}

// TestHintRefusedThroughTheWindowIsHandedOn: a hint its target refuses
// once held past the window goes to the partition's other replicas
// instead of staying until MaxAge, which would keep the target from new
// hints (its oldest hint past the window) all that time.
func TestHintRefusedThroughTheWindowIsHandedOn(t *testing.T) {
	c, l, h := refusedHint(t, &localMerges{}, []string{"n2", "n3"})
	if _, err := h.DeliverOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if statsFor(l, "n2").Count != 1 || statsFor(l, "n3").Count != 0 {
		t.Fatalf("refused within the window: n2 holds %+v, n3 %+v; want it kept for n2", statsFor(l, "n2"), statsFor(l, "n3"))
	}
	c.Advance(61 * time.Minute)
	if _, err := h.DeliverOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := l.Dropped(); len(d) != 0 || statsFor(l, "n2").Count != 0 || statsFor(l, "n3").Count != 1 {
		t.Fatalf("refused past the window: dropped %v, n2 holds %+v, n3 %+v; want it handed to n3", d, statsFor(l, "n2"), statsFor(l, "n3"))
	}
	if err := store(t, l, "n2", "new"); err != nil {
		t.Fatalf("n2 takes no new hints after its refused one was handed on: %v", err)
	}
}

// TestLargeHintGetsTimeToTravel: a hint's delivery has its base timeout
// plus a second per MiB of its set, so a large set over a slow link is
// not failed by the clock every time (its target's later hints were never
// delivered: each round started again at it).
func TestLargeHintGetsTimeToTravel(t *testing.T) {
	l, err := NewHintLog(memory.New(), HintLogConfig{})
	if err != nil {
		t.Fatal(err)
	}
	big, _ := version.Set{}.Put(version.Clock{}, "n1", version.Value{Bytes: make([]byte, 16<<20)}, 1)
	if err := l.StoreHint("n2", loc, "ks", []byte("big"), big, false); err != nil {
		t.Fatal(err)
	}
	if err := store(t, l, "n2", "small"); err != nil {
		t.Fatal(err)
	}
	left := map[string]time.Duration{}
	p := &peersWithDeadline{peers: &peers{}, left: left}
	h := &Handoff{Log: l, Peers: p, Live: allAlive{}, Rate: 1e6, Self: "n1", Timeout: 5 * time.Second}
	if _, err := h.DeliverOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	// 5 s and 16 s for the 16 MiB; a second's slack for this machine.
	if left["big"] < 20*time.Second || left["small"] > 6*time.Second {
		t.Fatalf("time given: %v; want about 21 s for the 16 MiB set, 5 s for the small one", left)
	}
}

// peersWithDeadline records the time each write was given.
type peersWithDeadline struct {
	*peers
	left map[string]time.Duration
}

func (p *peersWithDeadline) Write(ctx context.Context, node string, req *internalv1.WriteRequest) error {
	if d, ok := ctx.Deadline(); ok {
		p.mu.Lock()
		p.left[string(req.Key)] = time.Until(d)
		p.mu.Unlock()
	}
	return p.peers.Write(ctx, node, req)
}

// refusingMerges refuses every set, as a replica does one past a hard
// limit.
type refusingMerges struct{}

func (refusingMerges) MergeLocal(string, []byte, version.Set) error {
	return replica.Refuse("the merged set would pass a hard limit")
}
func (refusingMerges) Sync() error { return nil }

// TestRefusedHintKeptDoesNotBlockItsTarget: a hint its target refuses
// once held past the window, which no other replica takes either (this
// node, a replica, refuses the same set), stays, but does not keep the
// target from new hints: it is not on its way there. With another taker,
// this node's refusal does not stop the hand-over.
func TestRefusedHintKeptDoesNotBlockItsTarget(t *testing.T) {
	for _, place := range [][]string{{"n2", "n1"}, {"n2", "n1", "n3"}} {
		c, l, h := refusedHint(t, refusingMerges{}, place)
		c.Advance(61 * time.Minute)
		if _, err := h.DeliverOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
		if len(place) == 2 {
			if statsFor(l, "n2").Count != 1 || len(l.Dropped()) != 0 {
				t.Fatalf("no replica takes it: n2 holds %+v, dropped %v; want it kept", statsFor(l, "n2"), l.Dropped())
			}
		} else if statsFor(l, "n2").Count != 0 || statsFor(l, "n3").Count != 1 {
			t.Fatalf("refused here, n3 free: n2 holds %+v, n3 %+v; want it handed to n3", statsFor(l, "n2"), statsFor(l, "n3"))
		}
		if err := store(t, l, "n2", "new"); err != nil {
			t.Fatalf("place %v: n2 takes no new hints while a refused one is kept: %v", place, err)
		}
		// A new write for the kept hint's key merges into it: owed from
		// now, not from the hint's old time.
		if err := store(t, l, "n2", "k"); err != nil {
			t.Fatal(err)
		}
		if err := store(t, l, "n2", "newer"); err != nil {
			t.Fatalf("place %v: n2 takes no new hints once a write merged into the kept one: %v", place, err)
		}
	}
}

// refusedHint is a hint log (window 1 h) holding one hint, "k" for n2,
// which every peer refuses, and the handoff of node n1 (merging through
// local) delivering it where place says its partition lives.
func refusedHint(t *testing.T, local Merger, place []string) (*clock, *HintLog, *Handoff) {
	t.Helper()
	c := newClock()
	l, err := NewHintLog(memory.New(), HintLogConfig{Window: time.Hour, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := store(t, l, "n2", "k"); err != nil {
		t.Fatal(err)
	}
	p := &peers{refuse: map[string]bool{"k": true}}
	h := &Handoff{Log: l, Peers: p, Live: allAlive{}, Now: c.Now, Rate: 1e6, Self: "n1", Local: local,
		Place: func(string, replica.Loc) ([]string, bool) { return place, false }}
	return c, l, h
}

// TestRefusedHintKeptWithoutPlacement: a hint its target refuses once
// held past the window is kept, not dropped as expired, while no
// placement is agreed (no taker is known, not none).
func TestRefusedHintKeptWithoutPlacement(t *testing.T) {
	c, l, h := refusedHint(t, &localMerges{}, nil)
	c.Advance(61 * time.Minute)
	if _, err := h.DeliverOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := l.Dropped(); len(d) != 0 || statsFor(l, "n2").Count != 1 {
		t.Fatalf("dropped %v, n2 holds %+v; want the hint kept", d, statsFor(l, "n2"))
	}
}
