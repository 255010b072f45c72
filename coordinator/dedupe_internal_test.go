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
		r.Remember(id, now)
		for j, other := range ids {
			if got, want := r.Seen(other, now), i == j; got != want {
				t.Errorf("remembered %q: Seen(%q) = %v, want %v", id, other, got, want)
			}
		}
	}
}

func TestRequestIDsWindowAndBound(t *testing.T) {
	now := time.Unix(1000, 0)
	r := newRequestIDs(3, time.Minute)
	if r.Seen(nil, now) || r.Remember(nil, now) != 0 {
		t.Fatal("an empty ID is never remembered")
	}
	for i := range 3 {
		if n := r.Remember(fmt.Appendf(nil, "id-%d", i), now); n != i+1 {
			t.Fatalf("held %d after %d, want %d", n, i+1, i+1)
		}
	}
	if !r.Seen([]byte("id-0"), now.Add(59*time.Second)) || r.Seen([]byte("id-0"), now.Add(time.Minute)) {
		t.Fatal("an ID is seen within the window and not after it")
	}
	// Remembered again, its time moves on without taking another slot.
	if n := r.Remember([]byte("id-1"), now.Add(time.Minute)); n != 3 {
		t.Fatalf("held %d after remembering id-1 again, want 3", n)
	}
	if !r.Seen([]byte("id-1"), now.Add(90*time.Second)) {
		t.Fatal("remembering again restarts the window")
	}
	// A fourth ID forgets the oldest.
	if n := r.Remember([]byte("id-3"), now); n != 3 {
		t.Fatalf("held %d, want the bound 3", n)
	}
	if r.Seen([]byte("id-0"), now) || !r.Seen([]byte("id-2"), now) || !r.Seen([]byte("id-3"), now) {
		t.Fatal("over the bound, the oldest ID is forgotten and the rest kept")
	}
	if off := newRequestIDs(0, time.Minute); off.Remember([]byte("x"), now) != 0 || off.Seen([]byte("x"), now) {
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
			r.Remember(fmt.Appendf(nil, "%016d", i), now)
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
