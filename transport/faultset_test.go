package transport

import (
	"context"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newRuleFaults(t *testing.T) (*Faults, *echo, *fakeClock) {
	t.Helper()
	mem := NewMem()
	h := &echo{}
	mem.Register("n1", h)
	mem.Register("n2", h)
	f := NewFaults(mem, func(node string) string { return map[string]string{"n1": "east", "n2": "west"}[node] })
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	f.SetClock(clock.Now)
	return f, h, clock
}

func TestRulesExpireByTheirClock(t *testing.T) {
	f, h, clock := newRuleFaults(t)
	ctx := context.Background()
	f.Add(Rule{ID: "f1", DCs: []string{"west"}, Cut: true, Expires: clock.Now().Add(time.Minute)})
	f.Add(Rule{ID: "f0", Nodes: []string{"n1"}, LoseReplies: true, Expires: clock.Now().Add(2 * time.Minute)})

	_, err := f.Read(ctx, "n2", &internalv1.ReadRequest{})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "f1") || h.calls != 0 {
		t.Fatalf("read from a cut DC = %v (calls %d), want UNAVAILABLE naming the rule and no call", err, h.calls)
	}
	if !f.Drops("n2") || f.Drops("n1") {
		t.Fatal("Drops: want n2 (cut) dropped, n1 (replies lost) not")
	}
	if _, err := f.Read(ctx, "n1", &internalv1.ReadRequest{}); status.Code(err) != codes.Unavailable || h.calls != 1 {
		t.Fatalf("lost reply = %v (calls %d), want UNAVAILABLE after the call", err, h.calls)
	}
	if got := ids(f.List()); got != "f0,f1" {
		t.Fatalf("List = %s, want f0,f1", got)
	}

	clock.Advance(time.Minute) // f1 expires exactly now
	if _, err := f.Read(ctx, "n2", &internalv1.ReadRequest{}); err != nil {
		t.Fatalf("read after the cut expired: %v", err)
	}
	if got := ids(f.List()); got != "f0" {
		t.Fatalf("List after f1 expired = %s, want f0", got)
	}
	clock.Advance(time.Minute)
	if _, err := f.Read(ctx, "n1", &internalv1.ReadRequest{}); err != nil {
		t.Fatalf("read after every rule expired: %v", err)
	}

	// Remove and Clear; the shorthands are rules that never expire.
	f.Cut("n1")
	f.Add(Rule{ID: "x", Cut: true})
	if !f.Remove("x") || f.Remove("x") {
		t.Fatal("Remove: want true once, then false")
	}
	clock.Advance(1000 * time.Hour)
	if got := ids(f.List()); got != "cut/n1" {
		t.Fatalf("List = %s, want cut/n1 (no expiry)", got)
	}
	f.Clear()
	if len(f.List()) != 0 || f.Drops("n1") {
		t.Fatal("Clear left rules")
	}
}

func TestRuleJitterAndDrops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, _, _ := newRuleFaults(t)
		f.SetClock(time.Now) // the bubble's fake clock
		draw := 0.5
		var mu sync.Mutex
		f.SetRand(func() float64 {
			mu.Lock()
			defer mu.Unlock()
			return draw
		})
		setDraw := func(x float64) {
			mu.Lock()
			defer mu.Unlock()
			draw = x
		}
		ctx := context.Background()
		f.Add(Rule{ID: "slow", Nodes: []string{"n1"}, Delay: 100 * time.Millisecond, Jitter: 40 * time.Millisecond})
		start := time.Now()
		if _, err := f.Read(ctx, "n1", &internalv1.ReadRequest{}); err != nil {
			t.Fatal(err)
		}
		if got := time.Since(start); got != 120*time.Millisecond {
			t.Fatalf("delay with jitter drawn at 0.5 = %v, want 120ms", got)
		}
		// Two rules on one target: the longer wait wins.
		f.Add(Rule{ID: "slower", DCs: []string{"east"}, Delay: 300 * time.Millisecond})
		start = time.Now()
		if _, err := f.Read(ctx, "n1", &internalv1.ReadRequest{}); err != nil {
			t.Fatal(err)
		}
		if got := time.Since(start); got != 300*time.Millisecond {
			t.Fatalf("two delays = %v, want the longer, 300ms", got)
		}
		f.Clear()

		f.Add(Rule{ID: "lossy", Nodes: []string{"n2"}, DropPercent: 30})
		setDraw(0.29) // 29 < 30: dropped
		if _, err := f.Read(ctx, "n2", &internalv1.ReadRequest{}); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "dropped") {
			t.Fatalf("drawn under the drop percentage = %v, want UNAVAILABLE (dropped)", err)
		}
		if !f.Drops("n2") {
			t.Fatal("gossip to n2 not dropped at the same draw")
		}
		setDraw(0.3)
		if _, err := f.Read(ctx, "n2", &internalv1.ReadRequest{}); err != nil {
			t.Fatalf("drawn at the drop percentage: %v, want delivered", err)
		}
		if f.Drops("n2") || f.Drops("n1") {
			t.Fatal("gossip dropped above the drop percentage or to another node")
		}
	})
}

func ids(rules []Rule) string {
	var out []string
	for _, r := range rules {
		out = append(out, r.ID)
	}
	return strings.Join(out, ",")
}

// TestDelayEndsWithItsRule: a call waiting out an injected delay goes on
// when the rule is removed or cleared, or expires, instead of waiting the
// whole delay for a fault that is gone.
func TestDelayEndsWithItsRule(t *testing.T) {
	mem := NewMem()
	mem.Register("n2", &echo{})
	f := NewFaults(mem, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, end := range []string{"remove", "clear", "expire"} {
		r := Rule{ID: "slow", Nodes: []string{"n2"}, Delay: 30 * time.Second}
		if end == "expire" {
			r.Expires = time.Now().Add(200 * time.Millisecond)
		}
		f.Add(r)
		done := make(chan error, 1)
		go func() {
			_, err := f.Read(ctx, "n2", &internalv1.ReadRequest{})
			done <- err
		}()
		switch end {
		case "remove":
			waitUntil(t, "the call to wait", func() bool { return f.waiting() })
			f.Remove("slow")
		case "clear":
			waitUntil(t, "the call to wait", func() bool { return f.waiting() })
			f.Clear()
		}
		if err := <-done; err != nil {
			t.Fatalf("%s: %v (the call waited out the 30 s delay: the context's 20 s ran out first)", end, err)
		}
		f.Clear()
	}
}

// waiting reports whether a call waits on the rules changing (tests).
func (f *Faults) waiting() bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.mu.changed != nil
}

// TestDelayedCallDrawsOnce: a call waiting out a delay is not decided
// again when an unrelated rule changes: its drop was drawn once (a second
// draw raised a 50% rule's drop rate), and its wait is not restarted.
func TestDelayedCallDrawsOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := NewMem()
		mem.Register("n2", &echo{})
		f := NewFaults(mem, nil)
		draws := 0
		f.SetRand(func() float64 {
			draws++
			if draws == 1 {
				return 0.9 // not dropped
			}
			return 0.1 // dropped, had it drawn again
		})
		f.Add(Rule{ID: "lossy", Nodes: []string{"n2"}, DropPercent: 50})
		f.Add(Rule{ID: "slow", Nodes: []string{"n2"}, Delay: 10 * time.Second})
		start := time.Now()
		done := make(chan error, 1)
		go func() {
			_, err := f.Read(t.Context(), "n2", &internalv1.ReadRequest{})
			done <- err
		}()
		time.Sleep(4 * time.Second)
		f.Add(Rule{ID: "elsewhere", Nodes: []string{"n9"}, Cut: true})
		if err := <-done; err != nil {
			t.Fatalf("the call failed after an unrelated rule changed: %v", err)
		}
		if took := time.Since(start); took != 10*time.Second || draws != 1 {
			t.Fatalf("the call took %v with %d draws; want the 10 s delay, one draw", took, draws)
		}
	})
}

// TestDelayedCallKeepsItsRule: a call waiting out the delay of one rule
// is not released when the rules change and another, shorter-lived rule
// expires: its own rule ends its wait.
func TestDelayedCallKeepsItsRule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := NewMem()
		mem.Register("n2", &echo{})
		f := NewFaults(mem, nil)
		f.SetRand(func() float64 { return 0.1 })
		f.Add(Rule{ID: "long", Nodes: []string{"n2"}, Delay: 10 * time.Second})
		// Drawn at 3 s for this call; 21 s at most.
		f.Add(Rule{ID: "jittery", Nodes: []string{"n2"}, Delay: time.Second, Jitter: 20 * time.Second, Expires: time.Now().Add(2 * time.Second)})
		start := time.Now()
		done := make(chan error, 1)
		go func() {
			_, err := f.Read(t.Context(), "n2", &internalv1.ReadRequest{})
			done <- err
		}()
		time.Sleep(time.Second)
		f.Add(Rule{ID: "elsewhere", Nodes: []string{"n9"}, Cut: true})
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took != 10*time.Second {
			t.Fatalf("the call took %v; want the 10 s of the rule that set its wait", took)
		}
	})
}
