package coordinator

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/meridiankv/meridian/version"
)

// TestFanoutContext: a fan-out's context keeps the request's values but not
// its cancellation, has its own deadline, and stops on Close.
func TestFanoutContext(t *testing.T) {
	c := &Coordinator{cfg: Config{RequestTimeout: time.Minute, MaxRequestTimeout: 2 * time.Minute}}
	c.bgCtx, c.bgCancel = context.WithCancel(context.Background())
	type key struct{}
	req, cancelReq := context.WithTimeout(context.WithValue(context.Background(), key{}, "trace"), 90*time.Second)
	fctx, fcancel := c.fanoutContext(req, time.Now().Add(90*time.Second))
	defer fcancel()

	if got := fctx.Value(key{}); got != "trace" {
		t.Fatalf("value = %v, want the request's", got)
	}
	if dl, ok := fctx.Deadline(); !ok || time.Until(dl) < 80*time.Second || time.Until(dl) > 90*time.Second {
		t.Fatalf("deadline %v (set %v), want the request's time left", time.Until(dl), ok)
	}
	cancelReq()
	if err := fctx.Err(); err != nil {
		t.Fatalf("the request's cancellation reached the fan-out: %v", err)
	}

	// It registers with the background context as a child of it would,
	// not through a goroutine per context.
	before := runtime.NumGoroutine()
	var cancels []context.CancelFunc
	for range 200 {
		_, cancel := c.fanoutContext(req, time.Now().Add(90*time.Second))
		cancels = append(cancels, cancel)
	}
	if n := runtime.NumGoroutine() - before; n >= 100 {
		t.Errorf("200 fan-out contexts started %d goroutines", n)
	}
	for _, cancel := range cancels {
		cancel()
	}

	c.bgCancel() // Close
	select {
	case <-fctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not stop the fan-out")
	}
}

// TestSealWireForm pins a context's bytes: format, the first 16 bytes of
// HMAC-SHA256(secret, tag | uvarint len(keyspace) | keyspace |
// uvarint len(key) | key | clock), clock; Open takes them back.
func TestSealWireForm(t *testing.T) {
	s, err := newSealer([][]byte{[]byte("secret-1")})
	if err != nil {
		t.Fatal(err)
	}
	clk := version.Clock{Entries: []version.Entry{{Node: "n1.0123456789abcdef", Counter: 7, Time: 3}, {Node: "n2.fedcba9876543210", Counter: 300, Time: -4}}}
	enc := clk.Encode()
	h := hmac.New(sha256.New, []byte("secret-1"))
	h.Write([]byte("meridian/context/v1"))
	h.Write([]byte{2})
	h.Write([]byte("ks"))
	h.Write([]byte{3})
	h.Write([]byte("key"))
	h.Write(enc)
	want := append(append([]byte{1}, h.Sum(nil)[:16]...), enc...)
	for range 3 { // the pooled HMAC and its scratch are reused
		if got := s.Seal("ks", []byte("key"), clk); !bytes.Equal(got, want) {
			t.Fatalf("Seal = %x, want %x", got, want)
		}
	}
	got, err := s.Open("ks", []byte("key"), want)
	if err != nil || !got.Equal(clk) {
		t.Fatalf("Open = %v, %v", got, err)
	}
	if _, err := s.Open("ks", []byte("other"), want); err == nil {
		t.Fatal("a context opened for another key")
	}
}

// TestWaitTimerFiresAtItsDeadline: a timer taken from the pool (after one
// that expired unread went back) waits for its own deadline, not the last
// one's; one for a deadline already past fires. (That a stopped timer's
// channel holds no old tick is Go's guarantee since 1.23, not tested here.)
func TestWaitTimerFiresAtItsDeadline(t *testing.T) {
	c := &Coordinator{}
	for range 100 {
		c.stopTimer(c.waitTimer(time.Now().Add(-time.Second))) // expired, unread
		next := c.waitTimer(time.Now().Add(time.Hour))
		select {
		case <-next.C:
			t.Fatal("a recycled timer delivered an old tick")
		default:
		}
		c.stopTimer(next)
	}
	late := c.waitTimer(time.Now().Add(-time.Second))
	defer c.stopTimer(late)
	select {
	case <-late.C:
	case <-time.After(10 * time.Second):
		t.Fatal("a timer for a past deadline did not fire")
	}
}

// TestLargestContextOpens: a context for the largest clock a set can hold
// (every entry at the longest actor name) opens again, so a key with many
// siblings never gets a context the cluster then refuses; one byte over
// the bound is refused before anything is hashed or decoded.
func TestLargestContextOpens(t *testing.T) {
	s, err := newSealer([][]byte{[]byte("secret-1")})
	if err != nil {
		t.Fatal(err)
	}
	entries := make([]version.Entry, version.MaxClockEntries)
	for i := range entries {
		name := fmt.Sprintf("%04d", i) + strings.Repeat("x", version.MaxNameLen-4)
		entries[i] = version.Entry{Node: name, Counter: version.MaxCounter, Time: math.MinInt64}
	}
	clk := version.Clock{Entries: entries}
	ctx := s.Seal("ks", []byte("key"), clk)
	if len(ctx) <= 64<<10 {
		t.Fatalf("the largest context is %d bytes: the test clock is too small", len(ctx))
	}
	got, err := s.Open("ks", []byte("key"), ctx)
	if err != nil || !got.Equal(clk) {
		t.Fatalf("the largest context (%d bytes) did not open: %v", len(ctx), err)
	}
	if _, err := s.Open("ks", []byte("key"), make([]byte, MaxContextBytes+1)); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("a context over the bound: %v", err)
	}
}
