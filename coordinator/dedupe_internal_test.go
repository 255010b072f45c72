package coordinator

import (
	"bytes"
	"fmt"
	"runtime"
	"testing"
	"time"
)

func TestRequestIDsTellIDsApart(t *testing.T) {
	long := func(b byte) []byte { return append(bytes.Repeat([]byte("u"), 35), b) } // 36 bytes, like a UUID as text
	ids := [][]byte{
		[]byte("a"), []byte("a\x00"), []byte("\x00a"), bytes.Repeat([]byte{0}, 16), bytes.Repeat([]byte{0}, 15),
		[]byte("0123456789abcdef"), []byte("0123456789abcdeg"), []byte("0123456789abcdef0"), []byte("0123456789abcdef1"),
		long('1'), long('2'), bytes.Repeat([]byte{0xff}, 64),
	}
	now := time.Unix(1000, 0)
	for i, id := range ids {
		r := newRequestIDs(100, time.Minute)
		r.Remember(1, []byte("k"), id, now)
		for j, other := range ids {
			if got, want := r.Seen(1, []byte("k"), other, now), i == j; got != want {
				t.Errorf("remembered %q: Seen(%q) = %v, want %v", id, other, got, want)
			}
		}
	}
}

// TestRequestIDsArePerKey: an ID is a retry only of a write of the same
// key of the same keyspace; clients may reuse one across keys (an order
// number), and key and ID never run into each other.
func TestRequestIDsArePerKey(t *testing.T) {
	now := time.Unix(1000, 0)
	r := newRequestIDs(100, time.Minute)
	r.Remember(1, []byte("k1"), []byte("order-42"), now)
	for _, c := range []struct {
		ks      uint32
		key, id string
		seen    bool
	}{
		{1, "k1", "order-42", true},
		{1, "k2", "order-42", false},
		{2, "k1", "order-42", false},
		{1, "k1o", "rder-42", false},
		{1, "k", "1order-42", false},
	} {
		if got := r.Seen(c.ks, []byte(c.key), []byte(c.id), now); got != c.seen {
			t.Errorf("Seen(%d, %q, %q) = %v, want %v", c.ks, c.key, c.id, got, c.seen)
		}
	}
}

func TestRequestIDsWindowAndBound(t *testing.T) {
	now := time.Unix(1000, 0)
	k := []byte("key")
	r := newRequestIDs(3, time.Minute)
	if n, _ := r.Remember(1, k, nil, now); r.Seen(1, k, nil, now) || n != 0 {
		t.Fatal("an empty ID is never remembered")
	}
	for i := range 3 {
		if n, _ := r.Remember(1, k, fmt.Appendf(nil, "id-%d", i), now); n != i+1 {
			t.Fatalf("held %d after %d, want %d", n, i+1, i+1)
		}
	}
	if !r.Seen(1, k, []byte("id-0"), now.Add(59*time.Second)) || r.Seen(1, k, []byte("id-0"), now.Add(time.Minute)) {
		t.Fatal("an ID is seen within the window and not after it")
	}
	// Remembered again, its time moves on without taking another slot.
	if n, _ := r.Remember(1, k, []byte("id-1"), now.Add(time.Minute)); n != 3 {
		t.Fatalf("held %d after remembering id-1 again, want 3", n)
	}
	if !r.Seen(1, k, []byte("id-1"), now.Add(90*time.Second)) {
		t.Fatal("remembering again restarts the window")
	}
	// A fourth ID forgets the oldest, still within its window: said so.
	if n, early := r.Remember(1, k, []byte("id-3"), now); n != 3 || !early {
		t.Fatalf("held %d (early %v), want the bound 3 and an early eviction", n, early)
	}
	if r.Seen(1, k, []byte("id-0"), now) || !r.Seen(1, k, []byte("id-2"), now) || !r.Seen(1, k, []byte("id-3"), now) {
		t.Fatal("over the bound, the oldest ID is forgotten and the rest kept")
	}
	// One forgotten once its window is over is no early eviction.
	if _, early := r.Remember(1, k, []byte("id-4"), now.Add(2*time.Minute)); early {
		t.Fatal("forgetting an ID past its window counted as early")
	}
	off := newRequestIDs(0, time.Minute)
	if n, _ := off.Remember(1, k, []byte("x"), now); n != 0 || off.Seen(1, k, []byte("x"), now) {
		t.Fatal("max 0 remembers nothing")
	}
}

// BenchmarkRequestIDsGC: a full garbage collection with three full tables
// of request IDs (a local three-node cluster in one process): the tables
// hold no pointers, so collecting costs what it would without them.
func BenchmarkRequestIDsGC(b *testing.B) {
	var tables []*requestIDs
	now := time.Now()
	for range 3 {
		r := newRequestIDs(DefaultMaxRequestIDs, time.Minute)
		for i := range DefaultMaxRequestIDs {
			r.Remember(1, []byte("key"), fmt.Appendf(nil, "%016d", i), now)
		}
		tables = append(tables, r)
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ResetTimer()
	for range b.N {
		runtime.GC()
	}
	b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "heap-MiB")
	runtime.KeepAlive(tables)
}

// TestRequestIDsMet: an ID remembered as met stays so when remembered
// again as merged; one only merged is seen but not met until its write is
// remembered as met.
func TestRequestIDsMet(t *testing.T) {
	r := newRequestIDs(10, time.Minute)
	now := time.Unix(1000, 0)
	k := []byte("k")
	r.Remember(1, k, []byte("merged"), now)
	if !r.Seen(1, k, []byte("merged"), now) || r.SeenMet(1, k, []byte("merged"), now) {
		t.Fatal("an ID only merged: want seen, not met")
	}
	r.RememberMet(1, k, []byte("merged"), now)
	r.Remember(1, k, []byte("merged"), now.Add(time.Second))
	if !r.SeenMet(1, k, []byte("merged"), now.Add(time.Second)) {
		t.Fatal("an ID remembered as met, then merged again: want met")
	}
	if r.SeenMet(1, k, []byte("merged"), now.Add(2*time.Minute)) {
		t.Fatal("an ID past the window: want not met")
	}
}
