package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestZipfianMatchesFormula(t *testing.T) {
	const n, draws = 1000, 400_000
	z := NewZipfian(n, ZipfianConstant)
	r := rand.New(rand.NewPCG(1, 2))
	counts := make([]int, n)
	for i := 0; i < draws; i++ {
		counts[z.Next(r)]++
	}
	for i := uint64(0); i < 10; i++ {
		want := z.P(i) * draws
		got := float64(counts[i])
		if math.Abs(got-want) > 0.05*want+30 {
			t.Errorf("rank %d drawn %v times, formula says %.0f", i, got, want)
		}
	}
	// Scrambled: same skew, different (spread) keys, all in range.
	s := NewScrambledZipfian(n)
	sc := make([]int, n)
	for i := 0; i < draws; i++ {
		k := s.Next(r)
		if k >= n {
			t.Fatalf("scrambled key %d out of range", k)
		}
		sc[k]++
	}
	sort.Sort(sort.Reverse(sort.IntSlice(sc)))
	if top := float64(sc[0]) / draws; top < 0.03 {
		t.Errorf("scrambled zipfian's most popular key has share %.3f: not skewed", top)
	}
	if sc[0] == counts[0] && sc[1] == counts[1] {
		t.Error("scrambling changed nothing")
	}
}

// TestScrambledZipfianReachesEveryRecord: the scramble is a permutation of
// the record space, so every record has a rank and is drawn: hashing the
// rank mod the record count (as before) left about a third of the records
// never drawn, a working set smaller than the one loaded.
func TestScrambledZipfianReachesEveryRecord(t *testing.T) {
	for _, n := range []uint64{1, 2, 3, 7, 1000, 1024, 1025, 65537} {
		s := NewScrambledZipfian(n)
		seen := make([]bool, n)
		for x := uint64(0); x < n; x++ {
			k := permute(x, n, s.bits)
			if k >= n || seen[k] {
				t.Fatalf("n=%d: rank %d maps to %d, out of range or taken", n, x, k)
			}
			seen[k] = true
		}
	}
	const n, draws = 1000, 2_000_000
	s := NewScrambledZipfian(n)
	r := rand.New(rand.NewPCG(5, 6))
	hit := map[uint64]bool{}
	for range draws {
		hit[s.Next(r)] = true
	}
	if len(hit) < 995 {
		t.Fatalf("%d draws reached %d of %d records", draws, len(hit), n)
	}
}

func TestUniformAndLatest(t *testing.T) {
	var count atomic.Uint64
	count.Store(100)
	r := rand.New(rand.NewPCG(3, 4))
	u := Uniform{Count: &count}
	seen := map[uint64]bool{}
	for i := 0; i < 10_000; i++ {
		k := u.Next(r)
		if k >= 100 {
			t.Fatalf("uniform key %d out of range", k)
		}
		seen[k] = true
	}
	if len(seen) != 100 {
		t.Errorf("uniform covered %d of 100 keys", len(seen))
	}
	l := NewLatest(&count)
	recent := 0
	for i := 0; i < 10_000; i++ {
		if l.Next(r) >= 90 {
			recent++
		}
	}
	if recent < 5000 {
		t.Errorf("latest chose the newest 10%% only %d/10000 times", recent)
	}
	count.Store(200) // inserts move "latest" along
	if k := l.Next(r); k >= 200 {
		t.Fatalf("latest key %d beyond the insert counter", k)
	}
}

func TestWorkloads(t *testing.T) {
	if _, err := WorkloadByName("E"); !errors.Is(err, ErrScans) {
		t.Fatalf("workload E = %v, want ErrScans", err)
	}
	for _, name := range []string{"a", "B", "C", "D", "F"} {
		if _, err := WorkloadByName(name); err != nil {
			t.Errorf("workload %s: %v", name, err)
		}
	}
	w, err := ParseMix("read=70,update=20,insert=10")
	if err != nil || math.Abs(w.Mix[OpRead]-0.7) > 1e-9 {
		t.Fatalf("mix = %v, %v", w, err)
	}
	if _, err := ParseMix("read=1,scan=2"); err == nil {
		t.Fatal("unknown op accepted")
	}
	cfg := Config{Workload: w, RecordCount: 10}
	if err := cfg.Validate(true); err == nil || !strings.Contains(err.Error(), "duration") {
		t.Fatalf("Validate without duration = %v", err)
	}
	cfg = Config{Workload: w, RecordCount: 10, Duration: time.Second, Distribution: "pareto"}
	if err := cfg.Validate(true); err == nil || !strings.Contains(err.Error(), "distribution") {
		t.Fatalf("Validate bad distribution = %v", err)
	}
}

// memStore is an in-memory Store; stall, when set, decides how long a call
// blocks.
type memStore struct {
	mu    sync.Mutex
	data  map[string][]byte
	stall func() time.Duration
	fail  func() error
}

func newMemStore() *memStore { return &memStore{data: map[string][]byte{}} }

func (m *memStore) wait() error {
	if m.stall != nil {
		if d := m.stall(); d > 0 {
			time.Sleep(d)
		}
	}
	if m.fail != nil {
		return m.fail()
	}
	return nil
}

func (m *memStore) Get(ctx context.Context, key []byte) ([]byte, bool, error) {
	if err := m.wait(); err != nil {
		return nil, false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.data[string(key)]
	return []byte("ctx"), ok, nil
}

func (m *memStore) Put(ctx context.Context, key, value, kvctx []byte) ([]byte, error) {
	if err := m.wait(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.data[string(key)] = value
	return []byte("ctx"), nil
}

// TestOpenLoopCorrectsCoordinatedOmission: the store freezes for 100ms;
// every request scheduled during the freeze must show the wait it suffered
// (measured from its intended start), not just the one that hit it.
func TestOpenLoopCorrectsCoordinatedOmission(t *testing.T) {
	s := newMemStore()
	var stallUntil atomic.Int64
	start := time.Now()
	stallAt := start.Add(300 * time.Millisecond)
	stallUntil.Store(stallAt.Add(100 * time.Millisecond).UnixNano())
	s.stall = func() time.Duration {
		now := time.Now()
		if now.After(stallAt) {
			if until := time.Unix(0, stallUntil.Load()); now.Before(until) {
				return until.Sub(now)
			}
		}
		return 0
	}
	w, _ := WorkloadByName("C")
	res, err := Run(context.Background(), Config{Workload: w, RecordCount: 100, Workers: 4, Rate: 1000,
		Duration: 800 * time.Millisecond, Interval: 100 * time.Millisecond}, s, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	h, err := res.Histogram(OpRead)
	if err != nil {
		t.Fatal(err)
	}
	// ~1000 ops/s × 0.1s = ~100 requests were scheduled during the stall;
	// about half of them waited 50ms or more.
	slow := h.TotalCount() - countBelow(h, 50*time.Millisecond)
	if slow < 30 {
		t.Errorf("only %d requests recorded >= 50ms; the stall was hidden (coordinated omission)", slow)
	}
	if max := time.Duration(h.Max()); max < 90*time.Millisecond || max > 400*time.Millisecond {
		t.Errorf("max latency %v, want about the 100ms stall", max)
	}
	if res.Total.Count < 500 {
		t.Errorf("open loop ran %d ops in 0.8s at 1000/s", res.Total.Count)
	}
}

func countBelow(h *hdrhistogram.Histogram, d time.Duration) int64 {
	var n int64
	for _, b := range h.Distribution() {
		if b.To < d.Nanoseconds() {
			n += b.Count
		}
	}
	return n
}

func TestHistogramMergeEqualsSingle(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	single := newHist()
	recs := []*recorder{newRecorder(), newRecorder(), newRecorder()}
	for i := 0; i < 30_000; i++ {
		d := time.Duration(1000+r.IntN(50_000_000)) * time.Nanosecond
		single.RecordValue(d.Nanoseconds())
		recs[i%3].record(OpRead, d, nil)
	}
	res := &Result{Elapsed: time.Second}
	res.finish(recs, Config{})
	merged, err := res.Histogram(OpRead)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []float64{50, 90, 99, 99.9, 100} {
		if a, b := merged.ValueAtQuantile(q), single.ValueAtQuantile(q); a != b {
			t.Errorf("p%v: merged %d, single %d", q, a, b)
		}
	}
	if merged.TotalCount() != single.TotalCount() {
		t.Errorf("count %d vs %d", merged.TotalCount(), single.TotalCount())
	}
}

func TestErrorsCountedAndFlagged(t *testing.T) {
	s := newMemStore()
	var n atomic.Int64
	s.fail = func() error {
		if i := n.Add(1); i%20 == 0 {
			return status.Errorf(codes.Unavailable, "injected failure %d", i/20)
		}
		return nil
	}
	w, _ := WorkloadByName("A")
	// One worker: the first failure is the first error recorded.
	res, err := Run(context.Background(), Config{Workload: w, RecordCount: 50, Workers: 1, Ops: 2000, Interval: 50 * time.Millisecond}, s, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var errs int64
	for code, c := range res.Errors {
		if !strings.HasPrefix(code, "Unavailable") {
			t.Errorf("unexpected error code %s", code)
		}
		errs += c
	}
	if errs < 80 || errs > 120 {
		t.Errorf("%d errors counted, want ~100 (5%% of 2000)", errs)
	}
	if errs+res.Total.Count != 2000 {
		t.Errorf("ops %d + errors %d != 2000: something was dropped", res.Total.Count, errs)
	}
	if res.Warning == "" {
		t.Error("5% errors not flagged")
	}
	var buf bytes.Buffer
	res.WriteTable(&buf)
	if !strings.Contains(buf.String(), "WARNING") {
		t.Error("table does not show the warning")
	}
	// The report says what the server said: the first message per code.
	var firsts []string
	for code, msg := range res.ErrorExamples {
		firsts = append(firsts, msg)
		if !strings.Contains(buf.String(), "first "+code+": "+msg) {
			t.Errorf("table lacks the example for %s: %s", code, buf.String())
		}
	}
	if len(firsts) != len(res.Errors) || !slices.Contains(firsts, "injected failure 1") {
		t.Errorf("error examples %q, want one per code and op, among them the first failure", res.ErrorExamples)
	}
}

// refusingStore refuses every write.
type refusingStore struct{ *memStore }

func (refusingStore) Put(context.Context, []byte, []byte, []byte) ([]byte, error) {
	return nil, status.Error(codes.Unavailable, "writes refused")
}

// TestEveryOpFailingKeepsItsRow: when every update fails, updates keep
// their row (errors counted, no latency) in the summary, the table, the
// JSON and the stored histograms, rather than vanish from them.
func TestEveryOpFailingKeepsItsRow(t *testing.T) {
	w, _ := WorkloadByName("A")
	res, err := Run(context.Background(), Config{Workload: w, RecordCount: 50, Workers: 2, Ops: 400, Interval: 50 * time.Millisecond},
		refusingStore{newMemStore()}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	up := res.Ops[OpUpdate]
	if up == nil {
		t.Fatalf("no update row though every update failed: ops %v, errors %v", res.Ops, res.Errors)
	}
	if up.Errors == 0 || up.Errors != res.Errors["Unavailable (update)"] || up.Count != 0 || *up != (OpStats{Errors: up.Errors}) {
		t.Errorf("update row %+v, want only its %d errors", *up, res.Errors["Unavailable (update)"])
	}
	if read := res.Ops[OpRead]; read == nil || read.Count+up.Errors != 400 {
		t.Errorf("read row %+v and %d failed updates: want 400 operations in all", read, up.Errors)
	}
	if h, err := res.Histogram(OpUpdate); err != nil || h.TotalCount() != 0 {
		t.Errorf("update histogram: %v, %v; want an empty one", h, err)
	}
	var table bytes.Buffer
	if err := res.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(fmt.Sprintf(`(?m)^\s*update\s+0\s+%d\s+0\s+-\s+-`, up.Errors)).MatchString(table.String()) {
		t.Errorf("table lacks the update row, errors counted and no latency:\n%s", table.String())
	}
	path := filepath.Join(t.TempDir(), "run.json")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := res.WriteJSON(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	back, err := ReadJSON(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := back.Ops[OpUpdate]; got == nil || got.Errors != up.Errors {
		t.Errorf("update row in the JSON: %+v, want %d errors", got, up.Errors)
	}
	var page bytes.Buffer
	if err := res.WriteHTML(&page); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(page.String(), fmt.Sprintf("<td>update</td><td>0</td><td>%d</td><td>0</td><td>-</td>", up.Errors)) {
		t.Error("HTML report lacks the update row, errors counted and no latency")
	}
}

func TestReports(t *testing.T) {
	s := newMemStore()
	dir := t.TempDir()
	hlogPath := filepath.Join(dir, "run.hlog")
	hf, err := os.Create(hlogPath)
	if err != nil {
		t.Fatal(err)
	}
	w, _ := WorkloadByName("F")
	cfg := Config{Workload: w, RecordCount: 100, Workers: 2, Duration: 400 * time.Millisecond, Interval: 100 * time.Millisecond, Hlog: hf}
	if _, err := Load(context.Background(), cfg, s, io.Discard); err != nil {
		t.Fatal(err)
	}
	if len(s.data) != 100 {
		t.Fatalf("load inserted %d records, want 100", len(s.data))
	}
	var progress bytes.Buffer
	var collect sync.Once // one collection during the run, for the runtime's figures
	s.fail = func() error { collect.Do(runtime.GC); return nil }
	res, err := Run(context.Background(), cfg, s, &progress)
	if err != nil {
		t.Fatal(err)
	}
	hf.Close()
	if rt := res.Runtime; rt == nil || rt.GCCycles < 1 || rt.GCPauseMaxMs <= 0 || rt.SchedDelayMax < rt.SchedDelayP50 {
		t.Errorf("runtime figures %+v: want at least the one GC cycle the run forced, its pauses, and ordered delays", rt)
	}
	var table bytes.Buffer
	if err := res.WriteTable(&table); err != nil || !strings.Contains(table.String(), "GC cycles") {
		t.Errorf("table lacks the runtime line (%v): %s", err, table.String())
	}
	if !strings.Contains(progress.String(), "ops/s") || !strings.Contains(progress.String(), "left") {
		t.Errorf("progress lines missing: %q", progress.String())
	}

	// JSON round trip.
	jsonPath := filepath.Join(dir, "run.json")
	jf, _ := os.Create(jsonPath)
	if err := res.WriteJSON(jf); err != nil {
		t.Fatal(err)
	}
	jf.Close()
	back, err := ReadJSON(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	if back.Total.Count != res.Total.Count || back.Ops[OpRMW].P99 != res.Ops[OpRMW].P99 ||
		back.Runtime == nil || *back.Runtime != *res.Runtime {
		t.Fatalf("JSON round trip changed the result")
	}

	// HTML from the loaded result (a recorded run).
	var html bytes.Buffer
	if err := back.WriteHTML(&html); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<svg", "polyline", "99.9%", "rmw", "p99.99"} {
		if !strings.Contains(html.String(), want) {
			t.Errorf("HTML report lacks %q", want)
		}
	}
	if strings.Contains(html.String(), "<script") || strings.Contains(html.String(), "http://") && !strings.Contains(html.String(), "http://www.w3.org/2000/svg") {
		t.Error("HTML report is not self-contained")
	}

	// The interval log parses with HdrHistogram's reader and adds up: the
	// untagged lines (what tools read by default) hold every operation,
	// the tagged ones the same split by type.
	f, _ := os.Open(hlogPath)
	defer f.Close()
	rd := hdrhistogram.NewHistogramLogReader(f)
	var untagged, tagged int64
	for {
		h, err := rd.NextIntervalHistogram()
		if err != nil {
			t.Fatal(err)
		}
		if h == nil {
			break
		}
		if h.Tag() == "" {
			untagged += h.TotalCount()
		} else {
			tagged += h.TotalCount()
		}
	}
	if untagged != res.Total.Count || tagged != res.Total.Count {
		t.Errorf("hlog holds %d values untagged, %d tagged; the result counts %d", untagged, tagged, res.Total.Count)
	}

	// Compare: B against itself is 1.00x; against a doubled copy, 2.00x.
	double := *back
	ops := map[Op]*OpStats{}
	for op, s := range back.Ops {
		c := *s
		c.Throughput *= 2
		ops[op] = &c
	}
	double.Ops = ops
	var cmp bytes.Buffer
	if err := WriteCompare(&cmp, "a.json", "b.json", back, &double); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(cmp.String(), "2.00x") {
		t.Errorf("compare output lacks the 2.00x throughput ratio:\n%s", cmp.String())
	}
	for _, row := range Compare(back, back) {
		if row.A != 0 && row.Ratio != 1 {
			t.Errorf("self-compare %s %s ratio %v", row.Op, row.Metric, row.Ratio)
		}
	}
}

// limitStore refuses a Put whose context is not the latest one it handed
// out with FAILED_PRECONDITION (as a key at its sibling limit does).
type limitStore struct {
	mu      sync.Mutex
	version int
	refused int
}

func (l *limitStore) Get(ctx context.Context, key []byte) ([]byte, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return []byte(fmt.Sprint(l.version)), true, nil
}

func (l *limitStore) Put(ctx context.Context, key, value, kvctx []byte) ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if string(kvctx) != fmt.Sprint(l.version) {
		l.refused++
		return nil, status.Error(codes.FailedPrecondition, "the key would have 101 siblings, over the limit of 100")
	}
	l.version++
	return []byte(fmt.Sprint(l.version)), nil
}

// TestUpdateRefreshesContextAtTheSiblingLimit: an update refused because
// the key is at its sibling limit reads the key and writes again with the
// fresh context, as the error tells clients to.
func TestUpdateRefreshesContextAtTheSiblingLimit(t *testing.T) {
	s := &limitStore{}
	w, _ := ParseMix("update=100")
	res, err := Run(context.Background(), Config{Workload: w, RecordCount: 1, Workers: 1, Ops: 200, Interval: 50 * time.Millisecond}, s, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Errors) != 0 {
		t.Fatalf("updates failed: %v", res.Errors)
	}
	if s.refused == 0 {
		t.Fatal("the store never refused a stale context: the test proves nothing")
	}
}

// ctxStore hands out a new context per write and counts the run's blind
// writes (updates without a context, which would add a sibling).
type ctxStore struct {
	mu      sync.Mutex
	version int
	blind   int
}

func (c *ctxStore) Get(ctx context.Context, key []byte) ([]byte, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return []byte(fmt.Sprint(c.version)), true, nil
}

func (c *ctxStore) Put(ctx context.Context, key, value, kvctx []byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if kvctx == nil {
		c.blind++
	}
	c.version++
	return []byte(fmt.Sprint(c.version)), nil
}

// TestSharedContextsCarryOverFromTheLoad: with one cache for the load and
// the run, every update supersedes what the process saw — none is blind,
// whichever worker loaded the record.
func TestSharedContextsCarryOverFromTheLoad(t *testing.T) {
	s := &ctxStore{}
	cache, err := NewContextCache(ContextsShared)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{RecordCount: 50, Workers: 8, Ops: 400, Interval: 50 * time.Millisecond, Contexts: cache}
	cfg.Workload, _ = ParseMix("update=100")
	if _, err := Load(context.Background(), cfg, s, io.Discard); err != nil {
		t.Fatal(err)
	}
	if s.blind != 50 {
		t.Fatalf("the load wrote %d records blind, want 50 (inserts carry no context)", s.blind)
	}
	s.blind = 0
	res, err := Run(context.Background(), cfg, s, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if res.Total.Count != 400 || s.blind != 0 {
		t.Fatalf("%d updates, %d of them blind; want 400, none blind", res.Total.Count, s.blind)
	}
	if res.Config.Contexts != ContextsShared {
		t.Fatalf("result records contexts %q, want %q", res.Config.Contexts, ContextsShared)
	}
}

// TestContextScopes: shared workers see each other's contexts; per-worker
// caches do not; an unknown scope is refused with the choices.
func TestContextScopes(t *testing.T) {
	shared, _ := NewContextCache("")
	shared.forWorker(0).put(7, []byte("a"))
	if got := shared.forWorker(1).get(7); string(got) != "a" {
		t.Fatalf("shared: worker 1 sees %q, want a", got)
	}
	own, _ := NewContextCache(ContextsWorker)
	own.forWorker(0).put(7, []byte("a"))
	if got := own.forWorker(1).get(7); got != nil {
		t.Fatalf("worker scope: worker 1 sees %q, want nothing", got)
	}
	if got := own.forWorker(0).get(7); string(got) != "a" {
		t.Fatalf("worker scope: worker 0 lost its context, got %q", got)
	}
	if _, err := NewContextCache("global"); err == nil || !strings.Contains(err.Error(), "shared") {
		t.Fatalf("unknown scope: err %v, want one naming the choices", err)
	}
}

// TestLoadRetriesShedInserts: an insert the cluster sheds
// (RESOURCE_EXHAUSTED) is sent again, so the load leaves every record in
// place; other errors are not retried.
func TestLoadRetriesShedInserts(t *testing.T) {
	s := newMemStore()
	var calls atomic.Int64
	s.fail = func() error {
		if calls.Add(1)%3 != 0 { // two of every three calls shed
			return status.Error(codes.ResourceExhausted, "node overloaded")
		}
		return nil
	}
	w, _ := WorkloadByName("A")
	cfg := Config{Workload: w, RecordCount: 50, Workers: 4, Interval: time.Hour,
		sleep: func(context.Context, time.Duration) {}} // no real backoff
	var progress bytes.Buffer
	res, err := Load(context.Background(), cfg, s, &progress)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.data) != 50 || len(res.Errors) != 0 {
		t.Fatalf("load left %d of 50 records, errors %v; want all, none", len(s.data), res.Errors)
	}
	if !strings.Contains(progress.String(), "inserts shed by the cluster (RESOURCE_EXHAUSTED) were sent again") {
		t.Errorf("progress does not say inserts were retried: %q", progress.String())
	}

	// An error that is not a shed is the load's result, not retried.
	s = newMemStore()
	s.fail = func() error { return status.Error(codes.InvalidArgument, "bad") }
	res, err = Load(context.Background(), cfg, s, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.data) != 0 || res.Errors["InvalidArgument (insert)"] != 50 {
		t.Fatalf("errors %v, %d records; want 50 INVALID_ARGUMENT inserts, none stored", res.Errors, len(s.data))
	}
}

// marginStore answers as a node does near its caller's deadline: with less
// than 20ms left it gives up at once with DEADLINE_EXCEEDED, before the
// deadline itself; otherwise an operation takes a millisecond.
type marginStore struct{ *memStore }

func (m marginStore) early(ctx context.Context) error {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < 20*time.Millisecond {
		return status.Error(codes.DeadlineExceeded, "gave up before the caller's deadline")
	}
	time.Sleep(time.Millisecond)
	return nil
}

func (m marginStore) Get(ctx context.Context, key []byte) ([]byte, bool, error) {
	if err := m.early(ctx); err != nil {
		return nil, false, err
	}
	return m.memStore.Get(ctx, key)
}

func (m marginStore) Put(ctx context.Context, key, value, kvctx []byte) ([]byte, error) {
	if err := m.early(ctx); err != nil {
		return nil, err
	}
	return m.memStore.Put(ctx, key, value, kvctx)
}

// TestRunEndIsNotAnError: operations the run's end cuts short are not the
// system's errors, even when the node says so just before the end.
func TestRunEndIsNotAnError(t *testing.T) {
	s := marginStore{newMemStore()}
	w, _ := WorkloadByName("A")
	res, err := Run(context.Background(), Config{Workload: w, RecordCount: 50, Workers: 4, Duration: 300 * time.Millisecond, Interval: time.Hour}, s, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Errors) != 0 {
		t.Fatalf("errors %v: operations cut short by the end were counted", res.Errors)
	}
	if res.Total.Count == 0 {
		t.Fatal("no operation counted")
	}

	// With its own timeout sooner than the end, the same answer is an
	// error of the system.
	res, err = Run(context.Background(), Config{Workload: w, RecordCount: 50, Workers: 4, Duration: 300 * time.Millisecond, Timeout: 10 * time.Millisecond, Interval: time.Hour}, s, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors["DeadlineExceeded (read)"]+res.Errors["DeadlineExceeded (update)"] == 0 {
		t.Fatalf("errors %v: timeouts of the operations' own deadline were not counted", res.Errors)
	}
}

// TestSlowerThanTheHistogramsSaysSo: an operation slower than the
// histograms' 60 s range is recorded at its top, and the result says how
// many were, so a flat p99.9 of 60000 ms is not taken for a measurement.
func TestSlowerThanTheHistogramsSaysSo(t *testing.T) {
	rec := newRecorder()
	rec.record(OpRead, 90*time.Second, nil)
	rec.record(OpRead, time.Millisecond, nil)
	var r Result
	r.Elapsed = time.Second
	r.finish([]*recorder{rec}, Config{})
	if r.Clamped != 1 || !strings.Contains(r.Warning, "1 operation(s) took longer than 1m0s") {
		t.Fatalf("clamped %d, warning %q; want the one 90 s read said", r.Clamped, r.Warning)
	}
	if got := r.Ops[OpRead].Max; got < 59_000 {
		t.Fatalf("max %v ms, want the histogram's top", got)
	}
}

// TestStallsStayInTheTimeSeries: intervals in which no operation finished
// (the store froze) are in the time series with no operations, so the
// throughput plot drops to 0 there instead of joining the points around.
func TestStallsStayInTheTimeSeries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newMemStore()
		start := time.Now()
		s.stall = func() time.Duration {
			if since := time.Since(start); since >= 200*time.Millisecond && since < 500*time.Millisecond {
				return 500*time.Millisecond - since // frozen until 500 ms
			}
			return time.Millisecond
		}
		res, err := Run(context.Background(), Config{Workload: Workload{Name: "C", Mix: map[Op]float64{OpRead: 1}}, Distribution: "uniform",
			RecordCount: 10, Workers: 1, Duration: 800 * time.Millisecond, Interval: 50 * time.Millisecond}, s, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		empty := 0
		for _, iv := range res.Intervals {
			if iv.Ops == 0 && iv.Errors == 0 {
				empty++
			}
		}
		if empty < 4 {
			t.Fatalf("%d empty intervals in a 300 ms freeze at 50 ms intervals, want at least 4: %+v", empty, res.Intervals)
		}
	})
}

// TestValuesAreLettersOfTheirSize: a value is random lowercase letters of
// the configured size (or within the range), whatever its length modulo
// the eight letters drawn at a time.
func TestValuesAreLettersOfTheirSize(t *testing.T) {
	for _, c := range []struct{ lo, hi int }{{1, 0}, {7, 0}, {9, 0}, {1024, 0}, {10, 20}} {
		w := &worker{cfg: &Config{ValueSize: c.lo, ValueSizeMax: c.hi}, rng: rand.New(rand.NewPCG(1, 2))}
		letters := map[byte]bool{}
		for range 200 {
			v := w.value()
			if len(v) < c.lo || c.hi > c.lo && len(v) > c.hi || c.hi <= c.lo && len(v) != c.lo {
				t.Fatalf("size %d-%d: a value of %d bytes", c.lo, c.hi, len(v))
			}
			for _, b := range v {
				if b < 'a' || b > 'z' {
					t.Fatalf("size %d-%d: byte %q is no lowercase letter", c.lo, c.hi, b)
				}
				letters[b] = true
			}
		}
		if c.lo >= 9 && len(letters) < 26 {
			t.Errorf("size %d-%d: only %d distinct letters in 200 values", c.lo, c.hi, len(letters))
		}
	}
}

// TestAckedInsertsMoveOnlyPastContiguousRecords: the records "latest" and
// "uniform" choose among end where inserts stop being contiguous, so a
// record still being inserted (or never inserted) is not read as missing;
// a failed insert does not hold the limit back for good. Reads that find
// no record are counted and warned of.
func TestAckedInsertsMoveOnlyPastContiguousRecords(t *testing.T) {
	var limit atomic.Uint64
	limit.Store(10)
	a := &ackedInserts{limit: &limit, done: map[uint64]bool{}}
	a.complete(11)
	a.complete(12)
	if got := limit.Load(); got != 10 {
		t.Fatalf("limit %d with record 10 still in flight, want 10", got)
	}
	a.complete(10) // done, or failed for good
	if got := limit.Load(); got != 13 || len(a.done) != 0 {
		t.Fatalf("limit %d (%d held) once 10 completed, want 13 and none held", got, len(a.done))
	}

	rec := newRecorder()
	rec.missing()
	rec.record(OpRead, time.Millisecond, nil)
	var r Result
	r.Elapsed = time.Second
	r.finish([]*recorder{rec}, Config{})
	if r.NotFound != 1 || !strings.Contains(r.Warning, "1 read(s) found no record") {
		t.Fatalf("not found %d, warning %q", r.NotFound, r.Warning)
	}
}

// TestOpenLoopCountsWhatItNeverSent: the store freezes for the last
// 300 ms of an open-loop run at 1,000 ops/s: the operations due meanwhile
// and never sent are counted and warned of (their latency is in no
// figure), not silently left out.
func TestOpenLoopCountsWhatItNeverSent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newMemStore()
		start := time.Now()
		s.stall = func() time.Duration {
			if since := time.Since(start); since >= 500*time.Millisecond {
				return time.Second // frozen past the end
			}
			return 0
		}
		res, err := Run(context.Background(), Config{Workload: Workload{Name: "C", Mix: map[Op]float64{OpRead: 1}}, Distribution: "uniform",
			RecordCount: 10, Workers: 4, Rate: 1000, Duration: 800 * time.Millisecond, Interval: 100 * time.Millisecond}, s, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if res.Unsent < 250 || !strings.Contains(res.Warning, "never sent") {
			t.Fatalf("%d operations counted unsent (warning %q); want about 300 of the frozen 300 ms", res.Unsent, res.Warning)
		}
	})
}

// TestNegativeIntervalOrTimeoutRefused: a negative interval or timeout is
// refused by name before any worker starts, not a panic of the ticker
// (interval) or every operation failing at once (timeout).
func TestNegativeIntervalOrTimeoutRefused(t *testing.T) {
	w, _ := WorkloadByName("C")
	for _, c := range []struct {
		name string
		cfg  Config
	}{
		{"interval", Config{Workload: w, RecordCount: 10, Workers: 1, Ops: 1, Interval: -time.Second}},
		{"timeout", Config{Workload: w, RecordCount: 10, Workers: 1, Ops: 1, Timeout: -time.Second}},
	} {
		t.Run(c.name, func(t *testing.T) {
			defer func() {
				if p := recover(); p != nil {
					t.Fatalf("Run panicked: %v", p)
				}
			}()
			_, err := Run(context.Background(), c.cfg, newMemStore(), nil)
			if err == nil || !strings.Contains(err.Error(), c.name) {
				t.Fatalf("Run with a negative %s: err %v, want one naming %s", c.name, err, c.name)
			}
		})
	}
}

// TestRunEndedWithinItsWarmupSaysSo: a run whose operations are all done
// before its warm-up ends measured nothing: it says so, and its figures
// are zeros over zero seconds, not the warm-up's length passed off as the
// measured part.
func TestRunEndedWithinItsWarmupSaysSo(t *testing.T) {
	w, _ := ParseMix("update=100") // no reads of the records never loaded
	res, err := Run(context.Background(), Config{Workload: w, RecordCount: 50, Workers: 2, Ops: 200, Warmup: time.Hour, Interval: time.Hour}, newMemStore(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.MeasuredSeconds != 0 || res.Total.Count != 0 {
		t.Errorf("measured %vs, %d operations; want nothing measured", res.MeasuredSeconds, res.Total.Count)
	}
	if !strings.Contains(res.Warning, "warm-up") || !strings.Contains(res.Warning, "nothing was measured") {
		t.Errorf("warning %q does not say the run ended within its warm-up", res.Warning)
	}
	for name, v := range map[string]float64{"ops/s": res.Total.Throughput, "mean": res.Total.Mean, "p99": res.Total.P99, "max": res.Total.Max, "error rate": res.ErrorRate} {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			t.Errorf("total %s is %v", name, v)
		}
	}
}

// TestInterruptedOpenLoopCountsOnlyWhatWasDue: an open loop the caller
// stops (Ctrl-C) 200 ms into a 10 s run left unsent only the slots due
// before it stopped — none, the store keeping up — not the 9.8 s of the
// schedule it never reached, and the warning does not blame the system.
// A store that froze before the interrupt left unsent what was due from
// the freeze to the interrupt, and that is still said.
func TestInterruptedOpenLoopCountsOnlyWhatWasDue(t *testing.T) {
	const workers = 4
	run := func(t *testing.T, frozenFrom time.Duration) *Result {
		s := newMemStore()
		start := time.Now()
		s.stall = func() time.Duration {
			if time.Since(start) >= frozenFrom {
				return time.Second // frozen past the interrupt
			}
			return time.Millisecond
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		time.AfterFunc(200*time.Millisecond, cancel)
		res, err := Run(ctx, Config{Workload: Workload{Name: "update", Mix: map[Op]float64{OpUpdate: 1}}, Distribution: "uniform",
			RecordCount: 10, Workers: workers, Rate: 1000, Duration: 10 * time.Second, Interval: 100 * time.Millisecond}, s, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if !res.Partial {
			t.Error("an interrupted run is not marked partial")
		}
		return res
	}
	synctest.Test(t, func(t *testing.T) {
		res := run(t, time.Hour)
		if res.Unsent > 2*workers || strings.Contains(res.Warning, "never sent") {
			t.Fatalf("%d operations counted unsent (warning %q); want at most a few, the schedule after the interrupt was never due", res.Unsent, res.Warning)
		}
		if res.Total.Count < 150 {
			t.Fatalf("%d operations in the 200 ms before the interrupt at 1000/s", res.Total.Count)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		res := run(t, 100*time.Millisecond)
		if res.Unsent < 80 || res.Unsent > 120 || !strings.Contains(res.Warning, "never sent") {
			t.Fatalf("%d operations counted unsent (warning %q); want about the 100 due from the freeze to the interrupt", res.Unsent, res.Warning)
		}
	})
}

// failingWriter accepts n bytes, then fails every write.
type failingWriter struct{ n int }

var errDiskFull = errors.New("no space left on device")

func (f *failingWriter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		n := f.n
		f.n = 0
		return n, errDiskFull
	}
	f.n -= len(p)
	return len(p), nil
}

// TestHlogWriteErrorIsReported: an interval log that could not be written
// whole (a full disk) is reported with the result, not silently cut —
// whether its header or one of its intervals failed.
func TestHlogWriteErrorIsReported(t *testing.T) {
	var header bytes.Buffer
	newHlogWriter(&header, time.Now())
	w, _ := ParseMix("update=100") // no reads of the records never loaded
	for _, limit := range []int{10, header.Len() + 10} {
		cfg := Config{Workload: w, RecordCount: 50, Workers: 2, Ops: 500, Interval: time.Hour, Hlog: &failingWriter{n: limit}}
		res, err := Run(context.Background(), cfg, newMemStore(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(res.Warning, "hlog") || !strings.Contains(res.Warning, errDiskFull.Error()) {
			t.Errorf("failing after %d bytes: warning %q does not say the .hlog is incomplete and why", limit, res.Warning)
		}
	}
}
