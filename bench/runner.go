package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Histogram range: 1µs to 60s in nanoseconds, 3 significant digits.
const (
	histMin    = 1_000
	histMax    = 60_000_000_000
	histDigits = 3
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, histDigits) }

// Config is one benchmark phase. Validate names the wrong field.
type Config struct {
	Workload Workload
	// Distribution overrides the workload's: zipfian, uniform or latest.
	Distribution string
	// RecordCount is the number of records loaded (and read from).
	RecordCount uint64
	// ValueSize is the value length; with ValueSizeMax > ValueSize each
	// value's length is uniform in [ValueSize, ValueSizeMax].
	ValueSize, ValueSizeMax int
	// Workers is the number of concurrent clients (default 64).
	Workers int
	// Rate is the target total ops/s for an open loop; 0 = closed loop.
	Rate float64
	// Duration and Ops bound the run (the first reached ends it); at least
	// one must be set for Run. Ops counts the warm-up's operations too;
	// Duration starts after the warm-up. Load always inserts RecordCount
	// records.
	Duration time.Duration
	Ops      int64
	// Warmup: operations scheduled during it run but are not recorded.
	Warmup time.Duration
	// Interval between progress lines and time-series points (default 1s).
	Interval time.Duration
	// Timeout per operation (default 10s).
	Timeout time.Duration
	// Seed makes key and value choices reproducible.
	Seed uint64
	// Hlog, when set, receives an HdrHistogram interval log.
	Hlog io.Writer
	// Contexts holds the causal contexts updates are written with; share
	// one between the load and the run phase. Nil: a fresh cache of scope
	// ContextsShared for this phase.
	Contexts *ContextCache
	// Disk, when set, measures the cluster's write-ahead logs over the
	// measured part (Result.Disk).
	Disk DiskProbe

	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration)
}

// Validate checks the configuration.
func (c *Config) Validate(run bool) error {
	if len(c.Workload.Mix) == 0 {
		return errors.New("workload: none chosen (use A, B, C, D, F or a mix)")
	}
	switch c.dist() {
	case "zipfian", "uniform", "latest":
	default:
		return fmt.Errorf("distribution %q: use zipfian, uniform or latest", c.Distribution)
	}
	if c.RecordCount == 0 {
		return errors.New("records: must be at least 1")
	}
	if c.ValueSize < 0 || c.ValueSizeMax != 0 && c.ValueSizeMax < c.ValueSize {
		return fmt.Errorf("value size %d-%d: want 0 <= min <= max", c.ValueSize, c.ValueSizeMax)
	}
	if c.Workers < 0 || c.Rate < 0 || c.Warmup < 0 || c.Duration < 0 || c.Ops < 0 {
		return errors.New("workers, rate, warmup, duration and ops must not be negative")
	}
	// Checked here, before any worker starts: a negative interval panics
	// the reporter's ticker mid-run, a negative timeout fails every
	// operation at once.
	if c.Interval < 0 {
		return fmt.Errorf("interval %s: must not be negative", c.Interval)
	}
	if c.Timeout < 0 {
		return fmt.Errorf("timeout %s: must not be negative", c.Timeout)
	}
	if run && c.Duration == 0 && c.Ops == 0 {
		return errors.New("run needs a duration or an operation count")
	}
	return nil
}

func (c *Config) dist() string {
	if c.Distribution != "" {
		return c.Distribution
	}
	return c.Workload.Distribution
}

func (c *Config) setDefaults() {
	if c.Workers == 0 {
		c.Workers = 64
	}
	if c.Interval == 0 {
		c.Interval = time.Second
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if c.ValueSize == 0 && c.ValueSizeMax == 0 {
		c.ValueSize = 100
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.sleep == nil {
		c.sleep = func(ctx context.Context, d time.Duration) {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
			}
		}
	}
}

// recorder is one worker's measurements. The interval histograms are
// swapped out by the reporter under mu; the worker holds mu only to record.
type recorder struct {
	mu       sync.Mutex
	total    map[Op]*hdrhistogram.Histogram
	interval map[Op]*hdrhistogram.Histogram
	errors   map[string]int64
	// example is the first error message of each key of errors (one
	// per gRPC code and op: bounded).
	example  map[string]string
	ivErrors int64
	// warm and warmErrors hold the current interval's warm-up operations:
	// they are drawn in the time series (flagged) but never reach the
	// summary, the stored histograms or the interval log.
	warm       *hdrhistogram.Histogram
	warmErrors int64
	// clamped counts measured operations slower than the histograms'
	// range, recorded at its top; notFound reads that found no record.
	clamped, notFound int64
	// unsent counts open-loop operations due before the end never sent.
	unsent int64
}

// fellBehind counts open-loop operations due before the run's end that
// were never sent.
func (r *recorder) fellBehind(n int64) {
	r.mu.Lock()
	r.unsent += n
	r.mu.Unlock()
}

// missing counts a read that found no record.
func (r *recorder) missing() {
	r.mu.Lock()
	r.notFound++
	r.mu.Unlock()
}

func newRecorder() *recorder {
	r := &recorder{total: map[Op]*hdrhistogram.Histogram{}, interval: map[Op]*hdrhistogram.Histogram{}, errors: map[string]int64{}, example: map[string]string{}}
	return r
}

func (r *recorder) record(op Op, d time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		key := status.Code(err).String() + " (" + string(op) + ")"
		if r.errors[key] == 0 {
			r.example[key] = errorMessage(err)
		}
		r.errors[key]++
		r.ivErrors++
		return
	}
	for _, m := range []map[Op]*hdrhistogram.Histogram{r.total, r.interval} {
		h := m[op]
		if h == nil {
			h = newHist()
			m[op] = h
		}
		v := d.Nanoseconds()
		if v < histMin {
			v = histMin
		}
		if v > histMax {
			v = histMax
		}
		_ = h.RecordValue(v)
	}
	if d.Nanoseconds() > histMax {
		r.clamped++
	}
}

// maxExample bounds an example error message kept for the report.
const maxExample = 300

// errorMessage is err's message (a status's own, without the code),
// cut at maxExample bytes.
func errorMessage(err error) string {
	msg := err.Error()
	if st, ok := status.FromError(err); ok {
		msg = st.Message()
	}
	if len(msg) > maxExample {
		msg = strings.ToValidUTF8(msg[:maxExample], "") + "…"
	}
	return msg
}

// recordWarmup counts a warm-up operation for the time series only.
func (r *recorder) recordWarmup(d time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.warmErrors++
		return
	}
	if r.warm == nil {
		r.warm = newHist()
	}
	_ = r.warm.RecordValue(min(max(d.Nanoseconds(), histMin), histMax))
}

// Load inserts RecordCount records (keys 0..RecordCount-1).
func Load(ctx context.Context, cfg Config, s Store, progress io.Writer) (*Result, error) {
	cfg.setDefaults()
	if err := cfg.Validate(false); err != nil {
		return nil, err
	}
	load := cfg
	load.Workload = Workload{Name: "load", Mix: map[Op]float64{OpInsert: 1}, Distribution: "uniform"}
	load.Ops = int64(cfg.RecordCount)
	load.Duration = 0
	load.Rate = 0
	load.Warmup = 0
	return run(ctx, load, s, progress, "load")
}

// Run runs the workload for Duration or Ops, whichever ends first.
func Run(ctx context.Context, cfg Config, s Store, progress io.Writer) (*Result, error) {
	cfg.setDefaults()
	if err := cfg.Validate(true); err != nil {
		return nil, err
	}
	return run(ctx, cfg, s, progress, "run")
}

func run(ctx context.Context, cfg Config, s Store, progress io.Writer, phase string) (*Result, error) {
	if progress == nil {
		progress = io.Discard
	}
	var (
		inserted atomic.Uint64 // records that exist (for latest / uniform)
		nextOp   atomic.Int64  // operations issued (for Ops and loads)
		retried  atomic.Int64  // shed inserts sent again (load phase)
		wg       sync.WaitGroup
	)
	inserted.Store(cfg.RecordCount)
	insertNext := atomic.Uint64{}
	if phase == "load" {
		inserted.Store(0)
	} else {
		insertNext.Store(cfg.RecordCount)
	}
	acked := &ackedInserts{limit: &inserted, done: map[uint64]bool{}}
	recs := make([]*recorder, cfg.Workers)
	for w := range recs {
		recs[w] = newRecorder()
	}
	cache := cfg.Contexts
	if cache == nil {
		cache, _ = NewContextCache(ContextsShared)
	}
	var keys KeyChooser // shared: the generators' tables are per record
	switch {
	case phase == "load":
	case cfg.dist() == "uniform":
		keys = Uniform{Count: &inserted}
	case cfg.dist() == "latest":
		keys = NewLatest(&inserted)
	default:
		keys = NewScrambledZipfian(cfg.RecordCount)
	}
	// The clock starts once the key tables are built (one entry per
	// record: seconds for many), so no operation is charged for them.
	start := cfg.now()
	measureFrom := start.Add(cfg.Warmup)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var endAt time.Time
	if cfg.Duration > 0 {
		endAt = start.Add(cfg.Warmup + cfg.Duration)
		var c2 context.CancelFunc
		runCtx, c2 = context.WithDeadline(runCtx, endAt)
		defer c2()
	}
	stopped, unwatch := stopMoment(ctx, cfg.now)
	defer unwatch()
	// ended reports whether the run is over (an operation cut short by the
	// end is not an error of the system; gRPC may report the deadline a
	// moment before the context does).
	ended := func() bool { return runCtx.Err() != nil || !endAt.IsZero() && !cfg.now().Before(endAt) }
	// cutByEnd reports whether an operation begun at began that failed with
	// err was cut short by the run's end although it failed before it: its
	// deadline was the end (sooner than its own timeout), and a node answers
	// DEADLINE_EXCEEDED a little before its caller's deadline (to say how
	// many replicas answered).
	cutByEnd := func(began time.Time, err error) bool {
		return !endAt.IsZero() && endAt.Before(began.Add(cfg.Timeout)) &&
			(status.Code(err) == codes.DeadlineExceeded || errors.Is(err, context.DeadlineExceeded))
	}
	for w := 0; w < cfg.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wk := &worker{cfg: &cfg, s: s, rec: recs[w], rng: rand.New(rand.NewPCG(cfg.Seed, uint64(w)+1)),
				keys: keys, acked: acked, insertNext: &insertNext, ctxs: cache.forWorker(w),
				loading: phase == "load", retried: &retried}
			var interval time.Duration
			if cfg.Rate > 0 {
				interval = time.Duration(float64(time.Second) * float64(cfg.Workers) / cfg.Rate)
			}
			offset := time.Duration(w) * interval / time.Duration(max(cfg.Workers, 1))
			// unsent counts, when the run ends, this worker's open-loop
			// slots from k on that were due before it ended but never
			// sent: the system fell behind the rate, and their latency is
			// in no figure. A run the caller stopped ended then, not at
			// its planned end: the rest of the schedule was never due.
			unsent := func(k int64) {
				if interval <= 0 || endAt.IsZero() {
					return
				}
				last := endAt
				if at, ok := stopped(); ok && at.Before(last) {
					last = at
				}
				due := int64((last.Sub(start) - offset + interval - 1) / interval) // slots 0..due-1 are due before the end
				if n := due - k; n > 0 && !last.Before(measureFrom) {
					recs[w].fellBehind(n)
				}
			}
			for k := int64(0); ; k++ {
				n := nextOp.Add(1)
				if cfg.Ops > 0 && n > cfg.Ops {
					return
				}
				if runCtx.Err() != nil {
					unsent(k)
					return
				}
				// What the operation sends is made before its clock runs:
				// a large value's bytes are the bench's cost, not the
				// system's.
				op := wk.pick(phase)
				wk.prepare(op)
				intended := cfg.now()
				if interval > 0 {
					// Worker w owns slots w, w+W, w+2W... of the schedule.
					intended = start.Add(time.Duration(k)*interval + offset)
					if wait := intended.Sub(cfg.now()); wait > 0 {
						cfg.sleep(runCtx, wait)
						if runCtx.Err() != nil {
							unsent(k)
							return
						}
					}
				}
				began := cfg.now()
				err := wk.do(runCtx, op)
				if err != nil && (ended() || cutByEnd(began, err)) {
					unsent(k + 1)
					return // the run ended mid-operation: not an error of the system
				}
				if !intended.Before(measureFrom) {
					recs[w].record(op, cfg.now().Sub(intended), err)
				} else {
					recs[w].recordWarmup(cfg.now().Sub(intended), err)
				}
			}
		}()
	}

	res := &Result{Phase: phase, Workload: cfg.Workload.Name, Start: start, Config: describeConfig(cfg), Machine: machine()}
	var hlog *hlogWriter
	if cfg.Hlog != nil && phase == "run" {
		hlog = newHlogWriter(cfg.Hlog, start)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	ticker := time.NewTicker(cfg.Interval)
	defer ticker.Stop()
	last := start
	// The runtime's counters, from the first interval after the warm-up.
	var rtFrom *runtimeSample
	measuring := func() {
		s := sampleRuntime()
		rtFrom = &s
		if cfg.Disk != nil {
			cfg.Disk.Start()
		}
	}
	if cfg.Warmup <= 0 {
		measuring()
	}
	for finished := false; !finished; {
		select {
		case <-done:
			finished = true
		case <-ticker.C:
		}
		now := cfg.now()
		if rtFrom == nil && !finished && !now.Before(measureFrom) {
			measuring()
		}
		iv := collectInterval(recs, last, now, start, measureFrom)
		last = now
		if hlog != nil {
			hlog.write(iv.hists, iv.startMs, iv.endMs)
		}
		// An interval in which nothing finished is a stall, drawn as
		// such (throughput 0); only the empty sliver after the run's
		// end is left out.
		if iv.Ops > 0 || iv.Errors > 0 || !finished {
			res.Intervals = append(res.Intervals, iv.Interval)
		}
		fmt.Fprintln(progress, progressLine(cfg, phase, now.Sub(start), iv.Interval, recs, nextOp.Load()))
	}
	res.Elapsed = cfg.now().Sub(start)
	if n := retried.Load(); n > 0 {
		fmt.Fprintf(progress, "%s phase: %d inserts shed by the cluster (RESOURCE_EXHAUSTED) were sent again after a backoff; fewer --workers load without shedding\n", phase, n)
	}
	res.Partial = ctx.Err() != nil
	if rtFrom != nil {
		res.Runtime = sampleRuntime().since(*rtFrom)
		if cfg.Disk != nil {
			res.Disk = cfg.Disk.Stop()
		}
	}
	res.finish(recs, cfg)
	if hlog != nil && hlog.err != nil {
		// The result stands; the file beside it is cut short.
		res.warn(fmt.Sprintf("the .hlog file is incomplete: %v", hlog.err))
	}
	return res, nil
}

// stopMoment watches ctx, the caller's context, for the moment it stops
// the run (Ctrl-C): stopped reports it, ok once ctx is done; unwatch
// ends the watch. The moment is taken when ctx is cancelled, or by the
// first worker to see it cancelled if that comes sooner, so every worker
// counts its unsent operations up to the same moment.
func stopMoment(ctx context.Context, now func() time.Time) (stopped func() (time.Time, bool), unwatch func()) {
	var (
		mu sync.Mutex
		at time.Time
	)
	mark := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		if at.IsZero() {
			at = now()
		}
		return at
	}
	unregister := context.AfterFunc(ctx, func() { mark() })
	return func() (time.Time, bool) {
		if ctx.Err() == nil {
			return time.Time{}, false
		}
		return mark(), true
	}, func() { unregister() }
}

// worker is one client's state.
type worker struct {
	cfg        *Config
	s          Store
	rec        *recorder
	rng        *rand.Rand
	keys       KeyChooser
	acked      *ackedInserts
	insertNext *atomic.Uint64
	// ctxs remembers the causal context last seen per record, as a real
	// client would, so updates supersede what the client saw instead of
	// piling up siblings (see Config.Contexts for whose).
	ctxs contextCache
	// loading: the load phase, whose shed inserts are retried (counted
	// in retried).
	loading bool
	retried *atomic.Int64
	// val is the value the next write sends (prepare).
	val []byte
}

// prepare makes the value op writes, if it writes one.
func (w *worker) prepare(op Op) {
	if op != OpRead {
		w.val = w.value()
	}
}

func (w *worker) pick(phase string) Op {
	if phase == "load" {
		return OpInsert
	}
	return w.cfg.Workload.pick(w.rng.Float64())
}

func (w *worker) value() []byte {
	n := w.cfg.ValueSize
	if w.cfg.ValueSizeMax > n {
		n += w.rng.IntN(w.cfg.ValueSizeMax - n + 1)
	}
	v := make([]byte, n)
	// Random letters, eight from each draw.
	for i := 0; i < n; i += 8 {
		r := w.rng.Uint64()
		for j := i; j < min(i+8, n); j++ {
			v[j] = byte('a' + (r&0xff)%26)
			r >>= 8
		}
	}
	return v
}

func (w *worker) remember(rec uint64, kvctx []byte) { w.ctxs.put(rec, kvctx) }

func (w *worker) do(ctx context.Context, op Op) error {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	switch op {
	case OpInsert:
		rec := w.insertNext.Add(1) - 1
		value := w.val
		kvctx, err := w.s.Put(ctx, KeyName(rec), value, nil)
		// A record the load skips is missing from every later read: an
		// insert the node shed (RESOURCE_EXHAUSTED: refused before doing
		// anything, so a retry cannot duplicate it) is retried with
		// backoff, within the operation's timeout.
		for backoff := 5 * time.Millisecond; w.loading && status.Code(err) == codes.ResourceExhausted; backoff = min(2*backoff, time.Second) {
			w.retried.Add(1)
			w.cfg.sleep(ctx, backoff+time.Duration(w.rng.Int64N(int64(backoff))))
			if ctx.Err() != nil {
				break
			}
			kvctx, err = w.s.Put(ctx, KeyName(rec), value, nil)
		}
		if err == nil {
			w.remember(rec, kvctx)
		}
		w.acked.complete(rec) // failed too: no later insert waits on it
		return err
	case OpUpdate:
		rec := w.keys.Next(w.rng)
		kvctx, err := w.s.Put(ctx, KeyName(rec), w.val, w.ctxs.get(rec))
		if status.Code(err) == codes.FailedPrecondition {
			// The key reached its sibling limit (writers with stale
			// contexts): do what the error says — read it and write with
			// the fresh context, superseding the siblings — once.
			if fresh, _, gerr := w.s.Get(ctx, KeyName(rec)); gerr == nil {
				kvctx, err = w.s.Put(ctx, KeyName(rec), w.val, fresh)
			}
		}
		if err == nil {
			w.remember(rec, kvctx)
		}
		return err
	case OpRMW:
		rec := w.keys.Next(w.rng)
		kvctx, found, err := w.s.Get(ctx, KeyName(rec))
		if err != nil {
			return err
		}
		if !found {
			w.rec.missing()
		}
		kvctx, err = w.s.Put(ctx, KeyName(rec), w.val, kvctx)
		if err == nil {
			w.remember(rec, kvctx)
		}
		return err
	default:
		rec := w.keys.Next(w.rng)
		kvctx, found, err := w.s.Get(ctx, KeyName(rec))
		if err == nil {
			w.remember(rec, kvctx)
			if !found {
				w.rec.missing()
			}
		}
		return err
	}
}

// ackedInserts is how far inserts have completed without a gap (YCSB's
// acknowledged counter): limit moves past a record only once every record
// below it was inserted (or failed for good), so "latest" and "uniform"
// never choose a record still being inserted. done holds the records
// completed past limit: at most the inserts in flight.
type ackedInserts struct {
	limit *atomic.Uint64
	mu    sync.Mutex
	done  map[uint64]bool
}

func (a *ackedInserts) complete(rec uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.done[rec] = true
	l := a.limit.Load()
	for a.done[l] {
		delete(a.done, l)
		l++
	}
	a.limit.Store(l)
}

type intervalData struct {
	Interval
	hists          map[Op]*hdrhistogram.Histogram
	startMs, endMs int64
}

// collectInterval swaps out every worker's interval histograms and merges
// them. Warm-up operations count in the interval's figures (flagged as
// warm-up when the interval began before measureFrom) but not in hists,
// which feed the interval log.
func collectInterval(recs []*recorder, from, to, start, measureFrom time.Time) intervalData {
	iv := intervalData{hists: map[Op]*hdrhistogram.Histogram{}, startMs: from.UnixMilli(), endMs: to.UnixMilli()}
	all := newHist()
	for _, r := range recs {
		r.mu.Lock()
		for op, h := range r.interval {
			m := iv.hists[op]
			if m == nil {
				m = newHist()
				iv.hists[op] = m
			}
			m.Merge(h)
			all.Merge(h)
			h.Reset()
		}
		if r.warm != nil {
			all.Merge(r.warm)
			r.warm.Reset()
		}
		iv.Errors += r.ivErrors + r.warmErrors
		r.ivErrors, r.warmErrors = 0, 0
		r.mu.Unlock()
	}
	secs := to.Sub(from).Seconds()
	iv.T = to.Sub(start).Seconds()
	iv.Warmup = from.Before(measureFrom)
	iv.Ops = all.TotalCount()
	if secs > 0 {
		iv.Throughput = float64(iv.Ops) / secs
	}
	iv.P50 = ms(all.ValueAtQuantile(50))
	iv.P99 = ms(all.ValueAtQuantile(99))
	return iv
}

func ms(ns int64) float64 { return float64(ns) / 1e6 }

func progressLine(cfg Config, phase string, elapsed time.Duration, iv Interval, recs []*recorder, issued int64) string {
	all := newHist()
	var errs int64
	for _, r := range recs {
		r.mu.Lock()
		for _, h := range r.total {
			all.Merge(h)
		}
		for _, n := range r.errors {
			errs += n
		}
		r.mu.Unlock()
	}
	left := ""
	switch {
	case cfg.Duration > 0:
		rem := cfg.Warmup + cfg.Duration - elapsed
		if rem < 0 {
			rem = 0
		}
		left = fmt.Sprintf("%s left", rem.Round(time.Second))
	case cfg.Ops > 0:
		left = fmt.Sprintf("%d/%d ops", min(issued, cfg.Ops), cfg.Ops)
	}
	warm := ""
	if elapsed < cfg.Warmup {
		warm = " (warm-up, not recorded)"
	}
	return fmt.Sprintf("[%s %6.1fs] %9.0f ops/s  errors %d  p50 %.3fms  p99 %.3fms  %s%s",
		phase, elapsed.Seconds(), iv.Throughput, errs, ms(all.ValueAtQuantile(50)), ms(all.ValueAtQuantile(99)), left, warm)
}

func machine() Machine {
	return Machine{GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, NumCPU: runtime.NumCPU(), GoVersion: runtime.Version()}
}

func describeConfig(c Config) RunConfig {
	mix := make([]string, 0, len(c.Workload.Mix))
	for _, op := range Ops {
		if f := c.Workload.Mix[op]; f > 0 {
			mix = append(mix, fmt.Sprintf("%s=%g", op, f))
		}
	}
	sort.Strings(mix)
	contexts := ContextsShared
	if c.Contexts != nil {
		contexts = c.Contexts.Scope()
	}
	return RunConfig{
		Workload: c.Workload.Name, Mix: strings.Join(mix, ","), Distribution: c.dist(), RecordCount: c.RecordCount,
		ValueSize: c.ValueSize, ValueSizeMax: c.ValueSizeMax, Workers: c.Workers, Rate: c.Rate,
		DurationSeconds: c.Duration.Seconds(), Ops: c.Ops, WarmupSeconds: c.Warmup.Seconds(), Seed: c.Seed,
		Contexts: contexts,
	}
}
