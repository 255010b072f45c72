package drill

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/client"
)

// KV is one client datacenter's access to the cluster, as the workload
// uses it: every call carries its consistency level; LOCAL_* levels count
// in the client's DC.
type KV interface {
	Get(ctx context.Context, key []byte, level kvv1.Level) (values [][]byte, causal []byte, err error)
	Put(ctx context.Context, key, value, causal []byte, level kvv1.Level) (newCausal []byte, err error)
}

// ClientKV is a KV over the partition-aware Go client.
type ClientKV struct {
	Client   *client.Client
	Keyspace string
	// DC is the client's datacenter: LOCAL_* levels count there.
	DC string
}

func (k ClientKV) opts(level kvv1.Level) []client.CallOption {
	opts := []client.CallOption{client.Level(level)}
	if level == kvv1.Level_LEVEL_LOCAL_QUORUM || level == kvv1.Level_LEVEL_LOCAL_ONE {
		opts = append(opts, client.ConsistencyDC(k.DC))
	}
	return opts
}

// Get implements KV.
func (k ClientKV) Get(ctx context.Context, key []byte, level kvv1.Level) ([][]byte, []byte, error) {
	res, err := k.Client.Get(ctx, k.Keyspace, key, k.opts(level)...)
	if err != nil {
		return nil, nil, err
	}
	return res.Values, res.Context, nil
}

// Put implements KV.
func (k ClientKV) Put(ctx context.Context, key, value, causal []byte, level kvv1.Level) ([]byte, error) {
	res, err := k.Client.Put(ctx, k.Keyspace, key, value, append(k.opts(level), client.Context(causal))...)
	if err != nil {
		return nil, err
	}
	return res.Context, nil
}

// levelOf maps a level name to the API's enum.
func levelOf(name string) kvv1.Level {
	switch name {
	case LocalQuorum:
		return kvv1.Level_LEVEL_LOCAL_QUORUM
	case Quorum:
		return kvv1.Level_LEVEL_QUORUM
	case EachQuorum:
		return kvv1.Level_LEVEL_EACH_QUORUM
	case "ALL":
		return kvv1.Level_LEVEL_ALL
	}
	panic("drill: unknown level " + name)
}

// CodeName is the gRPC code name of an operation's error, as samples carry
// it: "OK", "UNAVAILABLE", "DEADLINE_EXCEEDED"... A client that reached
// no node at all counts as UNAVAILABLE.
func CodeName(err error) string {
	switch {
	case err == nil:
		return CodeOK
	case errors.Is(err, client.ErrNoReplica):
		return "UNAVAILABLE"
	case errors.Is(err, context.DeadlineExceeded):
		return "DEADLINE_EXCEEDED"
	case errors.Is(err, context.Canceled):
		return "CANCELED"
	}
	return screaming(status.Code(err))
}

// screaming turns codes.DeadlineExceeded ("DeadlineExceeded") into
// DEADLINE_EXCEEDED.
func screaming(c codes.Code) string {
	var b strings.Builder
	for i, r := range c.String() {
		if i > 0 && unicode.IsUpper(r) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}

// recorder collects samples from every workload goroutine.
type recorder struct {
	start time.Time
	mu    struct {
		sync.Mutex
		samples  []Sample
		examples map[string][]string // "LEVEL CODE" -> first error messages
	}
}

// maxExamples is how many error messages the report keeps per level and
// code.
const maxExamples = 3

// failed keeps the first few distinct messages of a level's failures.
func (r *recorder) failed(level, code string, err error) {
	key := level + " " + code
	msg := err.Error()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mu.examples == nil {
		r.mu.examples = map[string][]string{}
	}
	if ex := r.mu.examples[key]; len(ex) < maxExamples && !slices.Contains(ex, msg) {
		r.mu.examples[key] = append(ex, msg)
	}
}

func (r *recorder) errorExamples() map[string][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string][]string, len(r.mu.examples))
	for k, v := range r.mu.examples {
		out[k] = slices.Clone(v)
	}
	return out
}

func (r *recorder) add(s Sample) {
	r.mu.Lock()
	r.mu.samples = append(r.mu.samples, s)
	r.mu.Unlock()
}

func (r *recorder) snapshot() []Sample {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.mu.samples)
}

// contexts keeps the causal context a client last saw per key, as real
// clients do, so updates supersede instead of piling up siblings.
type contexts struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (c *contexts) get(k string) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[k]
}

func (c *contexts) set(k string, v []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string][]byte{}
	}
	c.m[k] = v
}

// ackedSet records the set elements whose write was acknowledged.
type ackedSet struct {
	mu sync.Mutex
	m  map[string][]string // key -> elements
}

func (a *ackedSet) add(key, elem string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.m == nil {
		a.m = map[string][]string{}
	}
	a.m[key] = append(a.m[key], elem)
}

func (a *ackedSet) snapshot() map[string][]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string][]string, len(a.m))
	for k, v := range a.m {
		out[k] = slices.Clone(v)
	}
	return out
}

// Set values are their elements, sorted, one per line.
func encodeSet(elems map[string]bool) []byte {
	out := make([]string, 0, len(elems))
	for e := range elems {
		out = append(out, e)
	}
	slices.Sort(out)
	return []byte(strings.Join(out, "\n"))
}

// decodeSets unions the elements of every sibling.
func decodeSets(values [][]byte) map[string]bool {
	out := map[string]bool{}
	for _, v := range values {
		for _, e := range strings.Split(string(v), "\n") {
			if e != "" {
				out[e] = true
			}
		}
	}
	return out
}

// workload is every client goroutine of a drill: per DC, a LOCAL_QUORUM
// mix of reads and writes, QUORUM and EACH_QUORUM probes and the set
// workload, each paced open-loop.
type workload struct {
	cfg Config
	// setKeys are this drill's sets, as the driller chose them
	// (chooseSetKeys): the final check reads the same ones.
	setKeys [][]byte
	kv      map[string]KV
	rec     *recorder
	acked   ackedSet
	// inflight bounds each pacer's outstanding operations; a tick that
	// finds no room is recorded as a failure (the client is overloaded,
	// which is what a real client would see as well).
	maxInflight int
	wg          sync.WaitGroup // operations
}

// setKey is the i-th set of the drill named run: a drill run again on a
// cluster adds its elements (dc1-000001, ...) to sets of its own, so an
// earlier run's copies of the same names cannot hide a lost write. try 0
// is the set's plain name; the others (drill/set/RUN/i.1, ...) are the
// names chooseSetKeys tries when the set must live on a given node.
func setKey(run string, i, try int) []byte {
	if try == 0 {
		return fmt.Appendf(nil, "drill/set/%s/%d", run, i)
	}
	return fmt.Appendf(nil, "drill/set/%s/%d.%d", run, i, try)
}

// newRunID names a drill's sets.
func newRunID() string { return fmt.Sprintf("%08x", rand.Uint32()) }

// run starts every pacer and returns when ctx ends and every operation
// started has finished (each has its own deadline).
func (w *workload) run(ctx context.Context, dcs []string) {
	var pacers sync.WaitGroup
	start := func(rate float64, op func(due time.Time)) {
		if rate <= 0 {
			return
		}
		pacers.Add(1)
		go func() {
			defer pacers.Done()
			w.pace(ctx, rate, op)
		}()
	}
	for _, dc := range dcs {
		kv := w.kv[dc]
		ctxs := &contexts{}
		intn := rand.IntN
		start(w.cfg.Rate, w.limited(func(due time.Time) {
			key := fmt.Sprintf("drill/lq/%s/%d", dc, intn(w.cfg.Keys))
			if intn(2) == 0 {
				w.read(due, kv, dc, LocalQuorum, key, ctxs, w.cfg.OpTimeout)
			} else {
				w.write(due, kv, dc, LocalQuorum, key, ctxs, w.cfg.OpTimeout)
			}
		}, dc, LocalQuorum))
		for _, level := range []string{Quorum, EachQuorum} {
			n := 0
			var nmu sync.Mutex
			start(w.cfg.ProbeRate, w.limited(func(due time.Time) {
				nmu.Lock()
				n++
				i := n
				nmu.Unlock()
				key := fmt.Sprintf("drill/probe/%s/%s/%d", level, dc, i%10)
				if i%2 == 0 {
					w.read(due, kv, dc, level, key, ctxs, w.cfg.ProbeTimeout)
				} else {
					w.write(due, kv, dc, level, key, ctxs, w.cfg.ProbeTimeout)
				}
			}, dc, level))
		}
		seq := 0
		var smu sync.Mutex
		start(w.cfg.SetRate, w.limited(func(due time.Time) {
			smu.Lock()
			seq++
			elem := fmt.Sprintf("%s-%06d", dc, seq)
			smu.Unlock()
			w.setAdd(due, kv, dc, w.setKeys[intn(len(w.setKeys))], elem)
		}, dc, LocalQuorum))
	}
	pacers.Wait()
	w.wg.Wait()
}

// pace calls op at rate per second, at the times due, until ctx ends.
func (w *workload) pace(ctx context.Context, rate float64, op func(due time.Time)) {
	interval := time.Duration(float64(time.Second) / rate)
	due := time.Now()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		op(due)
		due = due.Add(interval)
		t.Reset(time.Until(due))
	}
}

// limited runs op in its own goroutine unless the pacer already has
// maxInflight operations outstanding; then the tick fails at once.
func (w *workload) limited(op func(due time.Time), dc, level string) func(time.Time) {
	sem := make(chan struct{}, w.maxInflight)
	return func(due time.Time) {
		select {
		case sem <- struct{}{}:
		default:
			w.rec.add(Sample{At: due.Sub(w.rec.start), DC: dc, Level: level, Op: "overloaded", Code: "RESOURCE_EXHAUSTED"})
			return
		}
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			defer func() { <-sem }()
			op(due)
		}()
	}
}

func (w *workload) done(due time.Time, dc, level, op string, err error) {
	code := CodeName(err)
	w.rec.add(Sample{At: due.Sub(w.rec.start), DC: dc, Level: level, Op: op, Latency: time.Since(due), Code: code})
	if err != nil {
		w.rec.failed(level, code, err)
	}
}

// Operations run with a context of their own (not the pacers'): an
// operation started before the drill stops pacing finishes, or times out.
func (w *workload) read(due time.Time, kv KV, dc, level, key string, ctxs *contexts, timeout time.Duration) {
	ctx, cancel := context.WithDeadline(context.Background(), due.Add(timeout))
	defer cancel()
	_, causal, err := kv.Get(ctx, []byte(key), levelOf(level))
	if err == nil && causal != nil {
		ctxs.set(key, causal)
	}
	w.done(due, dc, level, OpRead, err)
}

func (w *workload) write(due time.Time, kv KV, dc, level, key string, ctxs *contexts, timeout time.Duration) {
	ctx, cancel := context.WithDeadline(context.Background(), due.Add(timeout))
	defer cancel()
	causal, err := kv.Put(ctx, []byte(key), fmt.Appendf(nil, "%s@%d", dc, due.UnixNano()), ctxs.get(key), levelOf(level))
	if err == nil {
		ctxs.set(key, causal)
	}
	w.done(due, dc, level, OpWrite, err)
}

// setAdd adds elem to the set at key: read at LOCAL_QUORUM, union every
// sibling, add, write with the read's context. An acknowledged write makes
// the element one that must never be lost.
func (w *workload) setAdd(due time.Time, kv KV, dc string, key []byte, elem string) {
	ctx, cancel := context.WithDeadline(context.Background(), due.Add(w.cfg.OpTimeout))
	defer cancel()
	values, causal, err := kv.Get(ctx, key, kvv1.Level_LEVEL_LOCAL_QUORUM)
	if err == nil {
		set := decodeSets(values)
		set[elem] = true
		_, err = kv.Put(ctx, key, encodeSet(set), causal, kvv1.Level_LEVEL_LOCAL_QUORUM)
		if err == nil {
			w.acked.add(string(key), elem)
		}
	}
	w.done(due, dc, LocalQuorum, OpSet, err)
}
