// Package coordinator runs Meridian's request path: it turns a consistency
// level into N/R/W, fans a request out to the key's replicas, waits for the
// quorum, merges sibling sets, forwards writes to a replica that mints the
// version's dot, sends copies meant for unreachable replicas to fallbacks as
// hints, and repairs stale replicas after reads.
//
// The decisions are pure: who a write goes to, whose answers count and where
// the copies for down replicas go (planWrite, plan.go), and when a request is
// done (tally); the local write, the fan-out and the waiting around them are
// a thin shell.
package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	nooptrace "go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/placement"
	"github.com/meridiankv/meridian/replica"
	"github.com/meridiankv/meridian/version"
)

// Peers reaches other nodes' replica service. The gRPC implementation lives
// in transport/; tests use an in-memory one with fault injection.
type Peers interface {
	Read(ctx context.Context, node string, req *internalv1.ReadRequest) (*internalv1.ReadResponse, error)
	Write(ctx context.Context, node string, req *internalv1.WriteRequest) error
	Coordinate(ctx context.Context, node string, req *internalv1.CoordinateRequest) (*internalv1.CoordinateResponse, error)
}

// Liveness says whether a node is up for routing, and whether a live node
// still holds hints for it (it has missed writes).
type Liveness interface {
	Alive(id string) bool
	PendingHints(id string) bool
	// PendingHintsFrom is PendingHints counting only hints held by nodes
	// in dc: a LOCAL_* read in dc overlaps the writes whose copies could
	// count there, and a copy hinted elsewhere never counted toward them.
	PendingHintsFrom(id, dc string) bool
	// DiskLow reports whether a live node gossips that it refuses writes
	// of data for lack of disk space: a write's copy for it goes to a
	// fallback as for a down node.
	DiskLow(id string) bool
}

// Hints stores copies held for unreachable replicas (see repair.Hints). A
// refusal that stored nothing (a bound reached, hints off) is a
// *HintRefusedError.
type Hints interface {
	// StoreHint holds set for target; born is when its write was first
	// hinted, on any node (zero: now).
	StoreHint(target string, loc replica.Loc, keyspace string, key []byte, set version.Set, sync bool, born time.Time) error
}

// Config wires a coordinator. Zero durations and sizes mean the defaults.
type Config struct {
	NodeID   string
	DC       string
	Store    *replica.Store
	Peers    Peers
	Live     Liveness
	Hints    Hints
	Topology func() *membership.Topology
	// Ready, when set, refuses client requests (UNAVAILABLE) while it
	// returns an error (the node has no agreed metadata yet).
	Ready func() error
	// CheckRoute, when set, may refuse a replica read or write for a
	// partition (a sender routing by a stale ring).
	CheckRoute func(ctx context.Context, partition int) error
	// AwaitEpoch, when set, waits until this node applied a metadata
	// epoch: a request refused by a replica for a stale route waits for it
	// and runs once more by the new ring.
	AwaitEpoch func(ctx context.Context, epoch uint64) error
	// RequestTimeout bounds a request when the caller set no deadline.
	RequestTimeout time.Duration
	// MaxValueSize is the largest value accepted (default 16 MiB).
	MaxValueSize int
	// Prune bounds version vectors (default version.DefaultPrunePolicy()).
	Prune  version.PrunePolicy
	Now    func() time.Time
	Logger *slog.Logger
	// Tracer traces requests (default: no-op).
	Tracer trace.Tracer
	// Observer receives metrics (default: none).
	Observer Observer
	// ReadRepairChance is the fraction of reads sent to every live replica
	// rather than only as many as the level needs, so that read repair
	// reaches replicas outside the quorum (default 0.1; replicas inside it
	// are always repaired). Negative means never.
	ReadRepairChance float64
	// Rand draws uniformly from [0, 1) (default math/rand/v2's Float64).
	Rand func() float64
	// Secrets authenticate the causal contexts handed to clients: the
	// first signs, all verify. Required.
	Secrets [][]byte
	// MaxClockOffset is how far ahead of this node's clock a timestamp in
	// data may be and still advance its hybrid logical clock (default
	// 500ms).
	MaxClockOffset time.Duration
	// FutureWriteLimit is how far ahead of this node's clock a version
	// sent by a peer may be written, in a last-writer-wins keyspace, to
	// be stored (default 2 × MaxClockOffset): further ahead, it would
	// win over every write made meanwhile.
	FutureWriteLimit time.Duration
	// TombstoneGrace is how old a tombstone must be before this node
	// deletes it when a peer's anti-entropy asks (CollectTombstones):
	// its own setting, whatever the peer's (default 24h; negative: it
	// collects none).
	TombstoneGrace time.Duration
	// ClockAhead, when set, estimates how far this node's clock runs ahead
	// of its peers' (gossip's ClockAhead). Ahead by more than
	// MaxClockOffset, the node coordinates no last-writer-wins write: it
	// forwards each to another replica, whose timestamp will not win over
	// the writes made until real time passes it, and refuses the write
	// (FAILED_PRECONDITION) when none takes it.
	ClockAhead func() time.Duration
	// RequestIDWindow is how long write request IDs are remembered to
	// apply retries once (default 10m); MaxRequestIDs bounds how many
	// (default 100,000; negative turns the memory off).
	RequestIDWindow time.Duration
	MaxRequestIDs   int
	// MaxInFlight bounds the client requests this node coordinates at once
	// (default DefaultMaxInFlight: 16 per P). Below it the limit adapts
	// to latency (down to an eighth of it) when requests start queueing;
	// ShedAfter is how long a request waits for a slot
	// before it is refused with RESOURCE_EXHAUSTED (default 20ms).
	MaxInFlight int
	ShedAfter   time.Duration
	// MaxBackground bounds background work: the rest of writes' fan-outs
	// and read repairs (default 4,096).
	MaxBackground int
	// OnTombstone, when set, is told of every partition that stores a
	// tombstone (anti-entropy looks there for tombstones to collect).
	OnTombstone func(loc replica.Loc)
	// MaxBackgroundBytes bounds the bytes of sibling sets held by replica
	// writes still running (default 256 MiB): past it new writes are shed.
	MaxBackgroundBytes int64
	// MaxReadBytes bounds the bytes of replica replies held by reads in
	// progress (default 256 MiB): past it new reads are shed until they
	// drain. (Reads already running are not cut: with MaxInFlight, what
	// they hold is bounded by the largest sets.)
	MaxReadBytes int64
	// MaxRequestTimeout caps every request and its background work,
	// whatever deadline the caller sent (default 30s).
	MaxRequestTimeout time.Duration
}

// Defaults for Config.
const (
	DefaultRequestTimeout = 5 * time.Second
	DefaultMaxValueSize   = 16 << 20
	MaxKeySize            = replica.MaxKeyLen
)

func (c *Config) setDefaults() {
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.MaxValueSize == 0 {
		c.MaxValueSize = DefaultMaxValueSize
	}
	if c.Prune.MaxEntries == 0 {
		c.Prune = version.DefaultPrunePolicy()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Tracer == nil {
		c.Tracer = nooptrace.NewTracerProvider().Tracer("")
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	if c.ReadRepairChance == 0 {
		c.ReadRepairChance = DefaultReadRepairChance
	}
	if c.Rand == nil {
		c.Rand = rand.Float64
	}
	if c.MaxClockOffset == 0 {
		c.MaxClockOffset = DefaultMaxClockOffset
	}
	if c.FutureWriteLimit == 0 {
		c.FutureWriteLimit = 2 * c.MaxClockOffset
	}
	if c.RequestIDWindow == 0 {
		c.RequestIDWindow = DefaultRequestIDWindow
	}
	if c.TombstoneGrace == 0 {
		c.TombstoneGrace = 24 * time.Hour
	}
	if c.MaxRequestIDs == 0 {
		c.MaxRequestIDs = DefaultMaxRequestIDs
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight()
	}
	if c.ShedAfter == 0 {
		c.ShedAfter = DefaultShedAfter
	}
	if c.MaxBackground == 0 {
		c.MaxBackground = DefaultMaxBackground
	}
	if c.MaxRequestTimeout == 0 {
		c.MaxRequestTimeout = DefaultMaxRequestTimeout
	}
	if c.MaxBackgroundBytes == 0 {
		c.MaxBackgroundBytes = DefaultMaxBackgroundBytes
	}
	if c.MaxReadBytes == 0 {
		c.MaxReadBytes = DefaultMaxReadBytes
	}
	c.RequestTimeout = min(c.RequestTimeout, c.MaxRequestTimeout)
}

// DefaultMaxInFlight is 16 requests per P (GOMAXPROCS; the meridian binary
// runs with two per CPU): about what a node needs to keep its CPUs and its
// disk's group commit busy. Far more only queues work the node cannot do
// in time (measured in docs/PERFORMANCE.md: at 2x saturation, 128 in
// flight on 2 CPUs let most accepted requests miss a 2 s deadline; 32 kept
// p99 at 350 ms, and 64, with twice the Ps, at 365 ms).
func DefaultMaxInFlight() int { return 16 * runtime.GOMAXPROCS(0) }

// Defaults for admission control.
const (
	DefaultShedAfter          = 20 * time.Millisecond
	DefaultMaxBackground      = 4096
	DefaultMaxBackgroundBytes = 256 << 20
	DefaultMaxReadBytes       = 256 << 20
	DefaultMaxRequestTimeout  = 30 * time.Second
)

// Defaults for the write-identity settings of Config.
const (
	DefaultMaxClockOffset  = 500 * time.Millisecond
	DefaultRequestIDWindow = 10 * time.Minute
	DefaultMaxRequestIDs   = 100_000
)

// DefaultReadRepairChance is Config.ReadRepairChance's default.
const DefaultReadRepairChance = 0.1

// Coordinator serves client requests on one node and the replica side of
// other coordinators' requests.
type Coordinator struct {
	cfg    Config
	hlc    *HLC
	tracer trace.Tracer
	obs    Observer
	seal   *sealer
	reqIDs *requestIDs
	// skewWarn and siblingWarn rate-limit their log lines separately.
	skewWarn, siblingWarn, fastWarn warnLimiter

	inflight *limiter
	bgSlots  *admitter
	work     workers      // goroutines kept for writes' tasks (workers.go)
	bgBytes  atomic.Int64 // bytes held by replica writes still running
	rdBytes  atomic.Int64 // bytes of replica replies held by reads in progress

	// Background work (remaining replica writes, read repair) runs under
	// bgCtx and is waited for by Close.
	bgCtx    context.Context
	bgCancel context.CancelFunc
	bg       sync.WaitGroup
	// unfinished counts the background work of answered requests (a
	// write's drain, a read repair): Drain waits for it to end by itself
	// (bg also counts the goroutines kept waiting for tasks). idle gets
	// a token when it falls to 0.
	unfinished atomic.Int64
	idle       chan struct{}

	timers sync.Pool // *time.Timer for requests' deadlines (waitTimer)
}

// New returns a coordinator. Close stops its background work.
func New(cfg Config) (*Coordinator, error) {
	cfg.setDefaults()
	switch {
	case cfg.NodeID == "":
		return nil, errors.New("coordinator: NodeID is empty")
	case cfg.Store == nil:
		return nil, errors.New("coordinator: Store is nil")
	case cfg.Peers == nil:
		return nil, errors.New("coordinator: Peers is nil")
	case cfg.Live == nil:
		return nil, errors.New("coordinator: Live is nil")
	case cfg.Topology == nil:
		return nil, errors.New("coordinator: Topology is nil")
	}
	seal, err := newSealer(cfg.Secrets)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Coordinator{cfg: cfg, hlc: NewHLC(cfg.Now), tracer: cfg.Tracer, obs: cfg.Observer, seal: seal,
		reqIDs:   newRequestIDs(cfg.MaxRequestIDs, cfg.RequestIDWindow),
		inflight: newLimiter(cfg.MaxInFlight, max(1, cfg.MaxInFlight/8), cfg.MaxInFlight, cfg.ShedAfter),
		bgSlots:  newAdmitter(cfg.MaxBackground, 0),
		work:     newWorkers(4 * cfg.MaxInFlight),
		bgCtx:    ctx, bgCancel: cancel, idle: make(chan struct{}, 1)}, nil
}

// SetSecrets replaces the cluster secrets that authenticate contexts: the
// first signs, all verify.
func (c *Coordinator) SetSecrets(secrets [][]byte) error { return c.seal.set(secrets) }

// Close cancels background work and waits for it to stop.
func (c *Coordinator) Close() {
	c.bgCancel()
	c.bg.Wait()
}

// Drain is Close after waiting up to grace for the background work of
// answered requests to end by itself: a write acknowledged at W whose
// other replicas' calls are still running reaches them (a cancelled call
// leaves them without it, and without a hint) unless grace runs out.
func (c *Coordinator) Drain(grace time.Duration) {
	t := time.NewTimer(grace)
	defer t.Stop()
	for c.unfinished.Load() > 0 {
		select {
		case <-c.idle:
		case <-t.C:
			c.Close()
			return
		}
	}
	c.Close()
}

// began and ended count a piece of background work (Drain waits for it).
func (c *Coordinator) began() { c.unfinished.Add(1) }

func (c *Coordinator) ended() {
	if c.unfinished.Add(-1) == 0 {
		select {
		case c.idle <- struct{}{}:
		default:
		}
	}
}

// target is one replica or fallback a request goes to.
type target struct {
	placement.Replica
	hintFor string // non-empty: a fallback holding a hint for this node
	// extra: a pending replica (a partition moving to it) that receives
	// writes but counts toward nothing.
	extra bool
	// behind: a replica that live nodes hold undelivered hints for; read
	// for merging and repair, but never counted toward R.
	behind bool
}

// request is what every operation resolves first.
type request struct {
	ks    *membership.Keyspace
	loc   replica.Loc
	key   []byte
	reps  []placement.Replica
	need  Need
	trail *trail
}

func (c *Coordinator) resolve(keyspace string, key []byte, cons *kvv1.Consistency, op Op) (*request, error) {
	if len(key) == 0 {
		return nil, invalidf("key is empty: give a key of 1 byte to 64 KiB")
	}
	if len(key) > MaxKeySize {
		return nil, invalidf("key is %d bytes, over the 64 KiB limit: use a shorter key (hash long identifiers)", len(key))
	}
	if c.cfg.Ready != nil {
		if err := c.cfg.Ready(); err != nil {
			return nil, status.Error(codes.Unavailable, err.Error())
		}
	}
	topo := c.cfg.Topology()
	ks, ok := topo.Keyspace(keyspace)
	if !ok {
		return nil, &NotFoundError{Keyspace: keyspace}
	}
	localDC := c.cfg.DC
	if d := cons.GetDc(); d != "" {
		if _, known := ks.Replication[d]; !known && !contains(topo.Ring.DCs(), d) {
			// %.64q: the name is the caller's, of any size.
			return nil, invalidf("consistency.dc %.64q (%d bytes) is not a datacenter of this cluster (have %v)", d, len(d), topo.Ring.DCs())
		}
		localDC = d
	}
	p := topo.Ring.Partition(key)
	// The replication of p's list: during a replication change, p's
	// list may already be the next one, and the spec is the old one
	// until every partition has switched.
	repl := ks.Table.ReplicationAt(p)
	explicit := cons.GetR() // an explicit R or W overrides the level (Resolve)
	if op == OpWrite {
		explicit = cons.GetW()
	}
	if lvl := cons.GetLevel(); (lvl == kvv1.Level_LEVEL_LOCAL_ONE || lvl == kvv1.Level_LEVEL_LOCAL_QUORUM) && explicit == 0 && repl[localDC] == 0 && ks.Table.RF(localDC) > 0 {
		// The keyspace is gaining replicas in this DC, and p's are not
		// serving yet: a wait, not a mistake of the caller's. Every node
		// answers the same: Meridian's answer (with its reason), so a
		// client does not take it for an unreachable node and try them all.
		st := status.Newf(codes.Unavailable, "%s in datacenter %s: the keyspace's replicas there are being added (a replication change is in progress) and partition %d's do not serve yet: retry later, or use QUORUM meanwhile",
			levelName(lvl), localDC, p)
		return nil, withInfo(st, ReasonReplicasPending, map[string]string{"dc": localDC, "partition": strconv.Itoa(p)}).Err()
	}
	need, err := Resolve(cons, op, Replication(repl), localDC)
	if err != nil {
		return nil, err
	}
	return &request{
		ks:   ks,
		loc:  replica.Loc{Keyspace: ks.ID, Partition: p},
		key:  key,
		reps: ks.Table.Replicas(p),
		need: need,
	}, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// owed reports whether id missed writes that a read at need must see:
// some live node holds hints for it. For a LOCAL_* level over a keyspace
// with replicas in other DCs too, only a node of the local DC counts:
// hinted copies elsewhere count toward no write such a read promises to
// overlap. Over a keyspace kept in the local DC alone, LOCAL_QUORUM is
// QUORUM, and a hint held anywhere (a fallback found in another DC) may
// have counted toward an acknowledged QUORUM write.
func (c *Coordinator) owed(need Need, id string) bool {
	if need.LocalOnly && !need.AllLocal {
		return c.cfg.Live.PendingHintsFrom(id, need.Local)
	}
	return c.cfg.Live.PendingHints(id)
}

func (c *Coordinator) alive(id string) bool {
	return id == c.cfg.NodeID || c.cfg.Live.Alive(id)
}

// deadline is when a request gives up: after the default timeout when the
// caller set none; with a caller's deadline slightly before it (a tenth of
// the time left, at most 20ms), so the caller receives the
// DEADLINE_EXCEEDED that says how many replicas answered instead of its own
// bare one. The request waits for it on a recycled timer (waitTimer), not a
// context of its own: a context with a deadline costs about seven
// allocations per request; its replica calls run under the fan-out's.
func (c *Coordinator) deadline(ctx context.Context) time.Time {
	now := time.Now()
	if dl, ok := ctx.Deadline(); ok {
		if limit := now.Add(c.cfg.MaxRequestTimeout); dl.After(limit) {
			dl = limit
		}
		margin := min(dl.Sub(now)/10, 20*time.Millisecond)
		return dl.Add(-max(margin, 0))
	}
	return now.Add(c.cfg.RequestTimeout)
}

// waitTimer is a timer that fires at the request's deadline, from the
// coordinator's pool; stopTimer returns it.
func (c *Coordinator) waitTimer(deadline time.Time) *time.Timer {
	if t, ok := c.timers.Get().(*time.Timer); ok {
		t.Reset(time.Until(deadline))
		return t
	}
	return time.NewTimer(time.Until(deadline))
}

// stopTimer stops t and keeps it for another request: since Go 1.23 a
// stopped timer's channel holds no stale tick, so a reset one is as new.
func (c *Coordinator) stopTimer(t *time.Timer) {
	t.Stop()
	c.timers.Put(t)
}

// fanoutContext outlives the request so that slow replicas still finish
// (and get repaired) after the quorum answered; it keeps the request's
// values (trace) but not its cancellation. It lasts the request's time
// (to deadline) or the default timeout, whichever is longer.
func (c *Coordinator) fanoutContext(ctx context.Context, deadline time.Time) (context.Context, context.CancelFunc) {
	d := c.cfg.RequestTimeout
	if rem := time.Until(deadline); rem > d {
		d = min(rem, c.cfg.MaxRequestTimeout)
	}
	return context.WithTimeout(detached{Context: c.bgCtx, values: ctx}, d)
}

// detached is a context with the request's values (its trace) and the
// coordinator's background lifetime (bgCtx: its Done, Err and Deadline), for
// work that outlives the request but stops on Close. A context derived from
// it registers with bgCtx directly, as a child of bgCtx would, since the
// lookup of context's own cancellation key reaches bgCtx (which holds no
// other values); without that it would still be correct, with a goroutine
// per derived context.
type detached struct {
	context.Context // bgCtx
	values          context.Context
}

func (d detached) Value(key any) any {
	if v := d.Context.Value(key); v != nil {
		return v
	}
	return d.values.Value(key)
}

// reply is one replica's answer.
type reply struct {
	t   target
	set version.Set
	err error
	// replaced is the primary a hinted reply stands in for.
	replaced target
}

// Get reads a key at the requested consistency.
func (c *Coordinator) Get(ctx context.Context, req *kvv1.GetRequest) (resp *kvv1.GetResponse, err error) {
	err = c.observe(ctx, "kv.Get", OpRead, req.GetKeyspace(), req.GetConsistency(), func(ctx context.Context, span trace.Span) error {
		return c.staleRetry(ctx, func() (err error) {
			resp, err = c.get(ctx, span, req)
			return err
		})
	})
	return resp, err
}

func (c *Coordinator) get(ctx context.Context, span trace.Span, req *kvv1.GetRequest) (*kvv1.GetResponse, error) {
	r, err := c.resolve(req.GetKeyspace(), req.GetKey(), req.GetConsistency(), OpRead)
	if err != nil {
		return nil, err
	}
	if span.IsRecording() {
		span.SetAttributes(attrN.Int(r.need.N), attrR.Int(r.need.Count()), attrPartition.Int(r.loc.Partition))
	}
	r.trail = newTrail(req.GetExplain(), c.cfg.Now)
	deadline := c.deadline(ctx)

	// Every live replica could answer; ask only as many as the level
	// needs (this node first, then its DC), keep the rest as spares for
	// failures, and — for ReadRepairChance of reads — ask them all so that
	// read repair reaches replicas the quorum did not.
	live := make([]target, 0, len(r.reps))
	var behind []target
	for _, rep := range r.reps {
		switch {
		case !c.alive(rep.Node):
			r.trail.add(rep.Node, "skip replica", "down", 0)
		case c.owed(r.need, rep.Node):
			// It missed writes that are still on their way as hints: it
			// may answer with less than an acknowledged write, so it must
			// not make up a quorum that R + W > N promises overlaps it.
			// This node too: back from an outage, its own copy may lack
			// what live nodes hold for it.
			behind = append(behind, target{Replica: rep, behind: true})
			r.trail.add(rep.Node, "not counted", "live nodes hold undelivered hints for it", 0)
		default:
			live = append(live, target{Replica: rep})
		}
	}
	full := makeTally(r.need)
	for _, t := range live {
		full.expect(t.DC, false)
	}
	if full.hopeless() {
		return nil, &UnavailableError{Op: OpRead, Need: r.need, Alive: len(live), Detail: readShortfall(full.shortfall(), len(behind))}
	}
	all := c.cfg.Rand() < c.cfg.ReadRepairChance
	asked, spares := c.pickReads(r.need, live, all)
	tl := makeTally(r.need)
	fctx, fcancel := c.fanoutContext(ctx, deadline)
	timer := c.waitTimer(deadline)
	defer c.stopTimer(timer)
	// Room for every reply: a reader never blocks, not even this
	// goroutine reading its own copy.
	ch := make(chan reply, len(live)+len(behind))
	rd := &readFan{c: c, ctx: fctx, r: r, ch: ch}
	launch := func(t target) {
		if !t.behind {
			tl.expect(t.DC, false)
		}
		c.goTask(task{kind: taskRead, rd: rd, t: t})
	}
	targets := asked
	if all {
		// Read repair reaches replicas that are behind, too.
		targets = append(targets, behind...)
	}
	// The peers first; this node's own copy is read here meanwhile,
	// without handing it to another goroutine.
	var self *target
	for i, t := range targets {
		if t.Node == c.cfg.NodeID {
			self = &targets[i]
			continue
		}
		launch(t)
	}
	if self != nil {
		if !self.behind {
			tl.expect(self.DC, false)
		}
		rd.read(*self)
	}

	var (
		merged  version.Set
		got     = make([]reply, 0, len(live)+len(behind))
		lastErr error
		held    int64 // replies' bytes counted in rdBytes, until this returns
	)
	defer func() { c.rdBytes.Add(-held) }()
	for !tl.met() {
		if tl.hopeless() {
			// A replica failed: ask the next one that could count
			// instead (none in another DC for a LOCAL_* level: its
			// answer would only cost a cross-DC read).
			if i := slices.IndexFunc(spares, func(s target) bool { return tl.helps(s.DC) }); i >= 0 {
				s := spares[i]
				spares = append(spares[:i], spares[i+1:]...)
				launch(s)
				targets = append(targets, s)
				continue
			}
		}
		if tl.hopeless() {
			c.finishRead(fctx, fcancel, r, ch, len(targets)-len(got), got, merged)
			return nil, &FailedError{Op: OpRead, Need: r.need, Answered: tl.acks, Failed: failed(got), Asked: len(targets), Short: tl.shortfall(), Cause: lastErr}
		}
		select {
		case rp := <-ch:
			if !rp.t.behind {
				tl.answer(rp.t.DC, false, rp.err == nil)
			}
			got = append(got, rp)
			if rp.err != nil {
				lastErr = rp.err
				continue
			}
			n := int64(rp.set.EncodedSize())
			held += n
			c.rdBytes.Add(n)
			merged = version.Merge(merged, rp.set)
		case <-ctx.Done():
			answered := tl.acks
			c.finishRead(fctx, fcancel, r, ch, len(targets)-len(got), got, merged)
			return nil, c.ctxErr(ctx, &TimeoutError{Op: OpRead, Need: r.need, Answered: answered, Asked: len(targets)})
		case <-timer.C:
			answered := tl.acks
			c.finishRead(fctx, fcancel, r, ch, len(targets)-len(got), got, merged)
			return nil, &TimeoutError{Op: OpRead, Need: r.need, Answered: answered, Asked: len(targets)}
		}
	}
	c.finishRead(fctx, fcancel, r, ch, len(targets)-len(got), got, merged)
	if span.IsRecording() {
		span.SetAttributes(attrContacted.Int(len(targets)), attrAnswered.Int(tl.acks), attrFailed.Int(len(got)-tl.acks), attrSiblings.Int(len(merged.Siblings)))
	}
	c.obs.SiblingsReturned(len(merged.Siblings))

	if r.ks.Conflict == membership.ConflictLWW {
		merged = merged.ResolveLWW()
	}
	resp := &kvv1.GetResponse{
		Siblings:  siblingsProto(merged),
		Context:   c.seal.Seal(r.ks.Name, r.key, merged.Context()),
		Effective: c.effective(r.need, got, nil),
		Explain:   r.trail.events(),
	}
	resp.Effective.R = uint32(r.need.Count())
	return resp, nil
}

// readShortfall says why a read cannot be answered: the tally's
// shortfall, and the replicas up but not counted because hints are still
// owed to them.
func readShortfall(shortfall string, behind int) string {
	if behind == 0 {
		return shortfall
	}
	owed := fmt.Sprintf("%d replica(s) up but still owed hints, not counted until delivered", behind)
	if shortfall == "" {
		return owed
	}
	return shortfall + "; " + owed
}

// readFan is a read's fan-out: what each replica read needs.
type readFan struct {
	c   *Coordinator
	ctx context.Context // the fan-out's, outliving the request
	r   *request
	ch  chan<- reply // room for every read: a send never blocks
}

// read reads from one replica and sends the reply.
func (rd *readFan) read(t target) {
	start := rd.c.cfg.Now()
	set, err := rd.c.readFrom(rd.ctx, t.Node, rd.r)
	if rd.r.trail.on() {
		rd.r.trail.add(t.Node, "replica read", outcome(set, err), rd.c.cfg.Now().Sub(start))
	}
	rd.ch <- reply{t: t, set: set, err: err}
}

// ctxErr returns the caller's cancellation as CANCELED, a deadline as the
// given timeout error.
func (c *Coordinator) ctxErr(ctx context.Context, timeout error) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return status.Error(codes.Canceled, "request canceled by the caller")
	}
	return timeout
}

// finishRead collects the replies still outstanding in the background, then
// pushes the merged set to every replica that answered with less.
func (c *Coordinator) finishRead(fctx context.Context, fcancel context.CancelFunc, r *request, ch <-chan reply, outstanding int, got []reply, merged version.Set) {
	var stale []reply
	if outstanding == 0 {
		// Every reply is in (the usual case: the level asked only as many
		// replicas as it needs): compare here, and start background work
		// only to repair. (The background part is a method of its own so
		// that this path moves nothing to the heap.)
		if stale = staleReplies(got, merged); len(stale) == 0 {
			fcancel()
			return
		}
	}
	// What the repair holds until it ends (the merged set, its encoding,
	// the replies): counted against MaxBackgroundBytes with the writes'
	// replica calls, the replies still out estimated by the largest set
	// seen (repairRead counts them as they are once in).
	held := repairBytes(merged, got, outstanding)
	if c.bgBytes.Load()+held > c.cfg.MaxBackgroundBytes {
		fcancel()
		c.obs.Shed("read_repair")
		return
	}
	c.bgBytes.Add(held)
	link := trace.LinkFromContext(fctx)
	c.began()
	started := c.goBackground(func() {
		defer c.ended()
		defer func() { c.bgBytes.Add(-held) }()
		defer fcancel()
		c.repairRead(fctx, link, r, ch, outstanding, got, merged, stale, &held)
	})
	if !started {
		// No room for background work: drop the stragglers; anti-entropy
		// and later reads repair instead.
		c.ended()
		c.bgBytes.Add(-held)
		fcancel()
		c.obs.Shed("read_repair")
	}
}

// repairBytes is what a read repair holds: the merged set (and its
// encoding), each reply in, and each still out at the largest size seen.
func repairBytes(merged version.Set, got []reply, outstanding int) int64 {
	largest := int64(merged.EncodedSize())
	total := 2 * largest
	for _, rp := range got {
		n := int64(rp.set.EncodedSize())
		total += n
		largest = max(largest, n)
	}
	return total + int64(outstanding)*largest
}

// repairRead, in the background, collects the outstanding replies (stale
// is then recomputed, and *held, the bytes counted for the repair, made
// what they are), then writes merged to the stale replicas.
func (c *Coordinator) repairRead(fctx context.Context, link trace.Link, r *request, ch <-chan reply, outstanding int, got []reply, merged version.Set, stale []reply, held *int64) {
	if outstanding > 0 {
		for ; outstanding > 0; outstanding-- {
			rp := <-ch // every read sends exactly once; fctx bounds them
			got = append(got, rp)
			if rp.err == nil {
				merged = version.Merge(merged, rp.set)
			}
		}
		stale = staleReplies(got, merged)
		actual := repairBytes(merged, got, 0)
		c.bgBytes.Add(actual - *held)
		*held = actual
	}
	if len(stale) == 0 {
		return
	}
	// Repair is background work: its own trace, linked to the read.
	rctx, span := c.tracer.Start(trace.ContextWithSpanContext(fctx, trace.SpanContext{}), "meridian.read_repair",
		trace.WithLinks(link), trace.WithAttributes(attrKeyspace.String(r.ks.Name)))
	repaired := 0
	enc := merged.Encode()
	for _, rp := range stale {
		if c.cfg.Live.DiskLow(rp.t.Node) {
			// It would refuse the write; anti-entropy mends it once it
			// has room (reads meanwhile merge its copy with the others).
			continue
		}
		err := c.writeTo(rctx, rp.t, r, merged, enc, true, nil)
		c.cfg.Logger.DebugContext(rctx, "read repair", "replica", rp.t.Node, "keyspace", r.ks.Name, "err", err)
		if err == nil {
			repaired++
		}
	}
	span.SetAttributes(attrRepaired.Int(repaired))
	span.End()
	c.obs.ReadRepaired(repaired)
}

// staleReplies are the successful replies that lack some of merged: the
// replicas read repair writes to.
func staleReplies(got []reply, merged version.Set) []reply {
	var stale []reply
	for _, rp := range got {
		if rp.err == nil && !rp.set.Descends(merged) {
			stale = append(stale, rp)
		}
	}
	return stale
}

// readFrom reads a key from one replica, locally when it is this node.
func (c *Coordinator) readFrom(ctx context.Context, node string, r *request) (set version.Set, err error) {
	ctx, span := c.replicaSpan(ctx, "meridian.replica.read", node)
	defer func() { endSpan(span, err) }()
	if node == c.cfg.NodeID {
		return c.cfg.Store.Get(r.loc, r.key)
	}
	start := time.Now()
	resp, err := c.cfg.Peers.Read(ctx, node, &internalv1.ReadRequest{Keyspace: r.ks.Name, Key: r.key})
	c.obs.ReplicaCall("read", c.dcOf(node), outcomeLabel(err), time.Since(start))
	if err != nil {
		return version.Set{}, err
	}
	return version.DecodeSetShared(resp.GetSet()) // the response's own bytes
}

// pickReads orders the live replicas (this node, then the need's local DC,
// then the rest) and returns the fewest that can meet the need, and the
// others as spares. With all, every live replica is asked.
func (c *Coordinator) pickReads(need Need, live []target, all bool) (asked, spares []target) {
	ordered := make([]target, 0, len(live))
	rank := func(t target) int {
		switch {
		case t.Node == c.cfg.NodeID:
			return 0
		case t.DC == need.Local:
			return 1
		}
		return 2
	}
	for k := 0; k <= 2; k++ {
		for _, t := range live {
			if rank(t) == k {
				ordered = append(ordered, t)
			}
		}
	}
	if all {
		return ordered, nil
	}
	// asked and spares share one array: together they are ordered.
	buf := make([]target, 2*len(ordered))
	asked, spares = buf[:0:len(ordered)], buf[len(ordered):len(ordered)]
	total, perDC := 0, map[string]int{}
	for _, t := range ordered {
		useful := false
		if need.PerDC[t.DC] > perDC[t.DC] {
			useful = true
		}
		if total < need.Total && (!need.LocalOnly || t.DC == need.Local) {
			useful = true
		}
		if useful {
			asked = append(asked, t)
			total++
			perDC[t.DC]++
		} else {
			spares = append(spares, t)
		}
	}
	return asked, spares
}

func (c *Coordinator) dcOf(node string) string {
	return c.cfg.Topology().Nodes[node].DC
}

// writeTo merges a set into one replica (or stores it as a hint on a
// fallback), locally when the target is this node. enc is the set's
// encoding, made once for every replica a set goes to; wr, when not nil,
// is where to build the request (the caller's, unused until writeTo
// returns), so that a write's requests are allocated with it.
func (c *Coordinator) writeTo(ctx context.Context, t target, r *request, set version.Set, enc []byte, sync bool, wr *internalv1.WriteRequest) (err error) {
	attrs := make([]attribute.KeyValue, 1, 2) // on the stack: replicaSpan copies it
	attrs[0] = attrSync.Bool(sync)
	if t.hintFor != "" {
		attrs = append(attrs, attrHintFor.String(t.hintFor))
	}
	ctx, span := c.replicaSpan(ctx, "meridian.replica.write", t.Node, attrs...)
	defer func() { endSpan(span, err) }()
	if t.Node == c.cfg.NodeID {
		if t.hintFor != "" {
			return c.storeHint(t.hintFor, r.loc, r.ks.Name, r.key, set, sync, time.Time{})
		}
		// Read repair of this node's copy: the set merges peers' replies,
		// so it gets the checks of any write arriving from a peer (a
		// version of this node's actor it never minted, one stamped too
		// far ahead in a last-writer-wins keyspace).
		if err := c.checkIncoming(r.ks, set); err != nil {
			return err
		}
		return c.merge(r.loc, r.key, set, sync)
	}
	if wr == nil {
		wr = new(internalv1.WriteRequest)
	}
	wr.Keyspace, wr.Key, wr.Set, wr.Sync, wr.HintFor = r.ks.Name, r.key, enc, sync, t.hintFor
	start := time.Now()
	err = c.cfg.Peers.Write(ctx, t.Node, wr)
	c.obs.ReplicaCall("write", t.DC, outcomeLabel(err), time.Since(start))
	return err
}

// keepHint stores on this node the hint for a replica no fallback could
// take; it never counts toward W, and a hint not stored (a bound reached)
// is left to anti-entropy.
func (c *Coordinator) keepHint(r *request, target string, set version.Set, sync bool) {
	err := c.storeHint(target, r.loc, r.ks.Name, r.key, set, sync, time.Time{})
	if r.trail.on() {
		r.trail.add(c.cfg.NodeID, "kept hint for "+target, errText(err), 0)
	}
	if err != nil {
		c.cfg.Logger.Debug("hint not kept (anti-entropy will repair it)", "target", target, "err", err)
	}
}

func (c *Coordinator) storeHint(target string, loc replica.Loc, ks string, key []byte, set version.Set, sync bool, born time.Time) error {
	if c.cfg.Hints == nil {
		return errors.New("this node keeps no hints")
	}
	if err := c.cfg.Hints.StoreHint(target, loc, ks, key, set, sync, born); err != nil {
		return err
	}
	c.obs.HintStored()
	return nil
}

// Put writes a value.
func (c *Coordinator) Put(ctx context.Context, req *kvv1.PutRequest) (resp *kvv1.PutResponse, err error) {
	err = c.observe(ctx, "kv.Put", OpWrite, req.GetKeyspace(), req.GetConsistency(), func(ctx context.Context, span trace.Span) error {
		req := withRequestID(req)
		return c.staleRetry(ctx, func() (err error) {
			resp, err = c.write(ctx, span, req, writeOpts{})
			return err
		})
	})
	return resp, err
}

// withRequestID gives a write without a request ID one, so that running
// it again (after a stale route) applies it once.
func withRequestID(req *kvv1.PutRequest) *kvv1.PutRequest {
	if len(req.GetRequestId()) > 0 {
		return req
	}
	return &kvv1.PutRequest{Keyspace: req.GetKeyspace(), Key: req.GetKey(), Value: req.GetValue(), Context: req.GetContext(),
		Consistency: req.GetConsistency(), Explain: req.GetExplain(), RequestId: newRequestID()}
}

// staleRetry runs op; if a replica refused it as routed by a ring older
// than the partition's last change, it waits (at most a second) for this
// node to apply that change and runs op once more, by the new ring.
func (c *Coordinator) staleRetry(ctx context.Context, op func() error) error {
	err := op()
	epoch, ok := StaleRoute(err)
	if !ok || c.cfg.AwaitEpoch == nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	werr := c.cfg.AwaitEpoch(wctx, epoch)
	cancel()
	if werr != nil {
		return err
	}
	return op()
}

// Delete writes a tombstone superseding what the context has seen.
func (c *Coordinator) Delete(ctx context.Context, req *kvv1.DeleteRequest) (*kvv1.DeleteResponse, error) {
	var resp *kvv1.PutResponse
	err := c.observe(ctx, "kv.Delete", OpWrite, req.GetKeyspace(), req.GetConsistency(), func(ctx context.Context, span trace.Span) (err error) {
		put := withRequestID(&kvv1.PutRequest{
			Keyspace: req.GetKeyspace(), Key: req.GetKey(), Context: req.GetContext(),
			Consistency: req.GetConsistency(), Explain: req.GetExplain(), RequestId: req.GetRequestId(),
		})
		return c.staleRetry(ctx, func() (err error) {
			resp, err = c.write(ctx, span, put, writeOpts{tombstone: true})
			return err
		})
	})
	if err != nil {
		return nil, err
	}
	return &kvv1.DeleteResponse{Context: resp.Context, Effective: resp.Effective, Explain: resp.Explain}, nil
}

// writeOpts say how a write reached this node.
type writeOpts struct {
	tombstone bool
	// originDC is the DC of the node that forwarded the write (its
	// LOCAL_* levels count that DC as local).
	originDC string
	// forwarded: another node sent the write here to coordinate.
	forwarded bool
	// clockAhead: this node's clock leads its peers' by this much, more
	// than MaxClockOffset: the write goes to another replica, never
	// coordinated here.
	clockAhead time.Duration
}

func (c *Coordinator) write(ctx context.Context, span trace.Span, req *kvv1.PutRequest, o writeOpts) (*kvv1.PutResponse, error) {
	cons := req.GetConsistency()
	if o.originDC != "" && cons.GetDc() == "" {
		cons = withDC(cons, o.originDC)
	}
	r, err := c.resolve(req.GetKeyspace(), req.GetKey(), cons, OpWrite)
	if err != nil {
		return nil, err
	}
	if span.IsRecording() {
		span.SetAttributes(attrN.Int(r.need.N), attrW.Int(r.need.Count()), attrPartition.Int(r.loc.Partition))
	}
	if !o.tombstone && len(req.GetValue()) > c.cfg.MaxValueSize {
		return nil, invalidf("value is %d bytes, over the %d-byte limit: split it or raise max-value-size", len(req.GetValue()), c.cfg.MaxValueSize)
	}
	if n := len(req.GetRequestId()); n > version.MaxRequestIDLen {
		return nil, invalidf("request_id is %d bytes, over the %d-byte limit: use a UUID or similar", n, version.MaxRequestIDLen)
	}
	clk, err := c.seal.Open(r.ks.Name, r.key, req.GetContext())
	if err != nil {
		return nil, invalidf("%v: pass the context exactly as a Get or Put of this key returned it, or none for a blind write", err)
	}
	r.trail = newTrail(req.GetExplain(), c.cfg.Now)
	deadline := c.deadline(ctx)
	if r.ks.Conflict == membership.ConflictLWW {
		if ahead := c.clockAhead(); ahead > c.cfg.MaxClockOffset {
			c.fastClock(ahead)
			if o.forwarded {
				// Nothing written: the sender goes on to another replica
				// (it never forwards back here: a forwarded write is not
				// forwarded again).
				return nil, &ClockAheadError{Ahead: ahead, Limit: c.cfg.MaxClockOffset}
			}
			o.clockAhead = ahead
			return c.forward(ctx, deadline, span, r, req, clk, o)
		}
	}
	if !o.forwarded && !isReplica(r.reps, c.cfg.NodeID) {
		return c.forward(ctx, deadline, span, r, req, clk, o)
	}
	return c.coordinate(ctx, deadline, span, r, req, clk, o)
}

// clockAhead is Config.ClockAhead's estimate (0 without one).
func (c *Coordinator) clockAhead() time.Duration {
	if c.cfg.ClockAhead == nil {
		return 0
	}
	return c.cfg.ClockAhead()
}

func isReplica(reps []placement.Replica, node string) bool {
	for _, rep := range reps {
		if rep.Node == node {
			return true
		}
	}
	return false
}

func withDC(c *kvv1.Consistency, dc string) *kvv1.Consistency {
	out := &kvv1.Consistency{}
	if c != nil {
		out.Level, out.R, out.W, out.PrimaryOnly, out.Durable = c.Level, c.R, c.W, c.PrimaryOnly, c.Durable
	}
	out.Dc = dc
	return out
}

// forward sends a write to a live replica, preferring the local DC, which
// mints the dot. If no replica is alive and hinted copies may count, this
// node coordinates the write itself as a fallback.
func (c *Coordinator) forward(ctx context.Context, deadline time.Time, span trace.Span, r *request, req *kvv1.PutRequest, clk version.Clock, o writeOpts) (*kvv1.PutResponse, error) {
	// The replica's call carries the request's deadline.
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	if len(req.GetRequestId()) == 0 {
		// A forward may be retried on another replica after the first
		// applied it: one request ID makes the retry a no-op there.
		req = proto.CloneOf(req)
		req.RequestId = newRequestID()
	}
	order := forwardOrder(r.reps, r.need.Local, c.alive, c.cfg.Live.DiskLow)
	var (
		lastErr error
		low     []string // replicas that refused it for lack of disk
	)
	for _, rep := range order {
		if rep.Node == c.cfg.NodeID {
			continue // a replica forwarding: its clock runs ahead
		}
		start := c.cfg.Now()
		fctx, fspan := c.replicaSpan(ctx, "meridian.forward", rep.Node)
		resp, err := c.cfg.Peers.Coordinate(fctx, rep.Node, &internalv1.CoordinateRequest{
			// The level's "local" DC is this node's (or the client's
			// choice), not the replica's that coordinates.
			Put: req, Tombstone: o.tombstone, OriginDc: r.need.Local,
		})
		if err == nil && resp.GetPut() == nil {
			// An answer without a response (a peer's bug, or another
			// release's): not a success to pass on, nor a nil to use; the
			// node was reached, so it stands (wrote, below).
			err = status.Errorf(codes.Internal, "node %s answered the forwarded write without a response", rep.Node)
		}
		endSpan(fspan, err)
		r.trail.add(rep.Node, "forward to replica", errText(err), c.cfg.Now().Sub(start))
		if err == nil {
			out := resp.GetPut()
			out.Explain = append(r.trail.events(), out.GetExplain()...)
			return out, nil
		}
		if wrote(err) {
			// It was reached and answered: its answer is the write's.
			// (Unreachable, or refused for lack of disk before writing
			// anything: the next replica may take it.)
			return nil, err
		}
		if st := status.Convert(err); st.Code() == codes.ResourceExhausted && HasReason(st, ReasonDiskLow) {
			low = append(low, rep.Node)
		}
		lastErr = err
	}
	if o.clockAhead > 0 {
		return nil, &ClockAheadError{Ahead: o.clockAhead, Limit: c.cfg.MaxClockOffset, Detail: "no other replica took this write: " + errText(lastErr)}
	}
	if r.need.Hints && r.need.Total > 0 && !r.need.LocalOnly {
		// Sloppy quorum: every primary is unreachable; write here and
		// keep hints for them.
		return c.coordinate(ctx, deadline, span, r, req, clk, o)
	}
	// None took it: those low on disk are named (the operator's next
	// step), the others were unreachable from here.
	return nil, &UnavailableError{Op: OpWrite, Need: r.need, Alive: 0, LowOnDisk: low, Detail: "no replica could coordinate the write: " + errText(lastErr)}
}

// forwardOrder lists the live replicas a forwarded write may go to: the
// need's local DC first, then the others, each in preference order, and
// those gossiping that they are low on disk (they would refuse it) only
// after every other.
func forwardOrder(reps []placement.Replica, local string, alive, diskLow func(string) bool) []placement.Replica {
	order := make([]placement.Replica, 0, len(reps))
	for _, low := range []bool{false, true} {
		for _, inLocal := range []bool{true, false} {
			for _, rep := range reps {
				if (rep.DC == local) == inLocal && alive(rep.Node) && diskLow(rep.Node) == low {
					order = append(order, rep)
				}
			}
		}
	}
	return order
}

// unreachable reports whether a peer error means the request never reached
// a working coordinator (so another replica may be tried safely).
func unreachable(err error) bool {
	st, ok := status.FromError(err)
	if !ok {
		return true
	}
	if st.Code() != codes.Unavailable {
		return false
	}
	return !IsMeridianStatus(st)
}

// wrote reports whether a replica's failed write may have left anything
// on it: not when it was never reached, nor when it refused for lack of
// disk space (ReasonDiskLow, answered before writing), nor a fallback that
// refused to keep a hint (ReasonHintRefused), nor a replica whose clock
// runs ahead refusing to coordinate (ReasonClockAhead). A write that wrote nothing
// is handed to a fallback as a hint, as for a replica that is down.
func wrote(err error) bool {
	if unreachable(err) {
		return false
	}
	st, _ := status.FromError(err)
	if st.Code() == codes.Unavailable && HasReason(st, ReasonClockAhead) {
		return false
	}
	return !(st.Code() == codes.ResourceExhausted && (HasReason(st, ReasonDiskLow) || HasReason(st, ReasonHintRefused)))
}

// coordinate applies a write locally (as a replica, or as a fallback that
// keeps hints when no replica is reachable) and replicates the result. The
// decisions are planWrite's and writePlan.afterFailure's; this is the I/O
// around them.
func (c *Coordinator) coordinate(ctx context.Context, deadline time.Time, span trace.Span, r *request, req *kvv1.PutRequest, clk version.Clock, o writeOpts) (*kvv1.PutResponse, error) {
	// Decide who gets the write, and whether it can succeed at all,
	// before writing anything: an unavailable write leaves no trace.
	p, perr := planWrite(c.writeInput(r))
	f := &fanout{c: c, r: r, plan: p, sync: durable(req.GetConsistency())}
	m := &f.m
	if err := c.initMinter(m, r, req, clk, o.tombstone, p.local); err != nil {
		return nil, err
	}
	for _, down := range p.down {
		r.trail.add(down, "skip replica", "down", 0)
	}
	for _, low := range p.lowOnDisk {
		r.trail.add(low, "skip replica", "low on disk, refusing writes", 0)
	}
	if perr != nil {
		return nil, perr
	}

	start := c.cfg.Now()
	fctx, fcancel := c.fanoutContext(ctx, deadline)
	f.ctx, f.cancel = fctx, fcancel
	f.ch = make(chan reply, p.asked()+len(p.extras))
	var err error
	if p.local {
		// Apply locally, then send the new set to the other replicas while
		// the local fsync is still running: the two happen in parallel.
		// (If this node crashes before its fsync, its next start is a new
		// incarnation, so the dot it minted is never minted again.)
		_, f.lspan = c.replicaSpan(ctx, "meridian.replica.write", c.cfg.NodeID, attrSync.Bool(f.sync))
		// The encoding stored is the one sent on (nil when nothing new
		// was stored: encoded below).
		f.local, err = c.cfg.Store.UpdateEncoded(r.loc, r.key, f.sync, m.mint)
		f.set, f.enc = f.local.Set, f.local.Encoded
		if err != nil {
			endSpan(f.lspan, err)
			fcancel()
			if _, ok := status.FromError(err); ok {
				return nil, err // a refusal the caller must act on
			}
			return nil, status.Errorf(codes.Internal, "local write failed: %v", err)
		}
		f.start = start
		if o.tombstone && c.cfg.OnTombstone != nil {
			// Marked once stored, as the replica path does: marked before,
			// a collection scan in between finds nothing and marks the
			// partition clean, and this tombstone is never collected.
			c.cfg.OnTombstone(r.loc)
		}
		c.goTask(task{f: f, kind: taskLocal})
	} else if f.set, err = m.mint(version.Set{}); err != nil {
		fcancel()
		return nil, err
	}
	if p.local {
		// Stored here: a retry reaching this node again is a duplicate.
		// (A coordinator that stores nothing remembers the ID only once
		// the write met its level, below: one that failed must be
		// written again when retried, not answered as applied.)
		c.rememberRequest(r, req.GetRequestId())
	}
	if m.duplicate {
		r.trail.add(c.cfg.NodeID, "duplicate request", "already applied: nothing written", 0)
		c.obs.DuplicateWrite()
		if !p.local {
			// A fallback holds no copy to send again: the first attempt's
			// hints carry the write.
			fcancel()
			return &kvv1.PutResponse{Effective: &kvv1.Effective{N: uint32(r.need.N), Level: r.need.Level, Coordinator: c.cfg.NodeID, Epoch: c.cfg.Topology().Epoch},
				Explain: r.trail.events()}, nil
		}
	}

	if f.enc == nil && len(p.targets)+len(p.extras) > 0 {
		f.enc = f.set.Encode()
	}
	// The bytes this write's replica calls hold until they all answer:
	// counted against MaxBackgroundBytes (admission sheds writes past it).
	f.held = int64(f.set.EncodedSize()) * int64(len(p.targets)+len(p.extras))
	c.bgBytes.Add(f.held)
	// A moving partition's new replicas receive every write too (they
	// count toward nothing); one that misses it gets a hint when this
	// node is a replica (afterFailure), and its transfer's catch-up pass
	// covers the rest.
	for i := range p.extras {
		c.goTask(task{f: f, kind: taskExtra, i: i})
	}
	for i := range p.targets {
		c.goTask(task{f: f, kind: taskSend, i: i})
	}
	got, hinted, received, werr := f.wait(ctx, deadline)
	// The rest of the replicas finish in the background.
	f.outstanding = p.asked() + len(p.extras) - received
	// Background work: it takes a slot of MaxBackground when one is free.
	// Over the bound (admission sheds new writes until it drains), the
	// replica writes already started still finish.
	f.slotted = c.bgSlots.tryAcquire()
	c.began() // ended by drain
	c.goTask(task{f: f, kind: taskDrain})
	if span.IsRecording() {
		span.SetAttributes(attrContacted.Int(p.asked()), attrAnswered.Int(p.tally.acks), attrFailed.Int(failed(got)))
	}
	if werr != nil {
		return nil, werr
	}
	if !p.local {
		if n, early := c.reqIDs.RememberMet(r.loc.Keyspace, r.key, req.GetRequestId(), c.cfg.Now()); n > 0 {
			c.obs.RequestIDs(n, early)
		}
	}
	resp := &kvv1.PutResponse{
		Context:   c.seal.Seal(r.ks.Name, r.key, f.set.Context()),
		Effective: c.effective(r.need, got, hinted),
		Siblings:  siblingsProto(f.set),
		Explain:   r.trail.events(),
	}
	resp.Effective.W = uint32(r.need.Count())
	return resp, nil
}

// durable says whether a write waits for fsync (the default).
func durable(cons *kvv1.Consistency) bool {
	return cons == nil || cons.Durable == nil || cons.GetDurable()
}

// writeInput gathers what planWrite decides from.
func (c *Coordinator) writeInput(r *request) writeInput {
	return writeInput{
		self:      placement.Replica{Node: c.cfg.NodeID, DC: c.cfg.DC},
		replicas:  r.reps,
		pending:   r.ks.Table.Pending(r.loc.Partition),
		need:      r.need,
		live:      c.cfg.Live,
		hints:     c.cfg.Hints != nil,
		table:     r.ks.Table,
		partition: r.loc.Partition,
	}
}

// minter mints a write's new version from the current set, under the key's
// lock (replica.Store.Update's callback).
type minter struct {
	c     *Coordinator
	r     *request
	clk   version.Clock
	actor string
	value version.Value
	// duplicate: the request was a retry of a write already applied.
	duplicate bool
	// local: this node stores the key (else it coordinates as a fallback).
	local bool
}

func (c *Coordinator) initMinter(m *minter, r *request, req *kvv1.PutRequest, clk version.Clock, tombstone, local bool) error {
	actor := c.cfg.Store.Actor()
	if !local {
		// A fallback has no stored copy to mint sequential dots from: use
		// a one-off actor, named by a store-wide counter that never
		// repeats, so its dot can never collide with another.
		n, err := c.cfg.Store.NextCounter()
		if err != nil {
			return status.Errorf(codes.Internal, "mint a fallback actor: %v", err)
		}
		actor = fmt.Sprintf("%s~%d", actor, n)
	}
	*m = minter{c: c, r: r, clk: clk, actor: actor, local: local,
		value: version.Value{Bytes: req.GetValue(), Tombstone: tombstone, RequestID: req.GetRequestId()}}
	if tombstone {
		m.value.Bytes = nil
	}
	return nil
}

// rememberRequest remembers a write's request ID for its key.
func (c *Coordinator) rememberRequest(r *request, id []byte) {
	if n, early := c.reqIDs.Remember(r.loc.Keyspace, r.key, id, c.cfg.Now()); n > 0 {
		c.obs.RequestIDs(n, early)
	}
}

// seen reports whether a write with request ID id was applied before: a
// replica takes any ID it remembers (it stored the write, or a copy of
// it); a coordinator holding no copy only one whose write met its level
// (one it only merged, as a pending replica say, may belong to a write
// that failed, which a retry must write again).
func (m *minter) seen(id []byte) bool {
	if m.local {
		return m.c.reqIDs.Seen(m.r.loc.Keyspace, m.r.key, id, m.c.cfg.Now())
	}
	return m.c.reqIDs.SeenMet(m.r.loc.Keyspace, m.r.key, id, m.c.cfg.Now())
}

func (m *minter) mint(cur version.Set) (version.Set, error) {
	c, r := m.c, m.r
	if id := m.value.RequestID; len(id) > 0 && (cur.HasRequest(id) || m.seen(id)) {
		// A retry of a write already applied: store nothing new and
		// answer with the current versions.
		m.duplicate = true
		return cur, nil
	}
	for _, s := range cur.Siblings {
		if !c.hlc.Observe(s.Value.Time, c.cfg.MaxClockOffset) {
			c.clockSkew(s.Value.Time)
		}
	}
	m.value.Time = c.hlc.Now()
	if r.ks.Conflict == membership.ConflictLWW {
		m.value.Time = after(m.value.Time, cur)
	}
	now := c.cfg.Now().UnixNano()
	floor, err := c.cfg.Store.NextCounter()
	if err != nil {
		return version.Set{}, err
	}
	next, _, err := cur.Mint(m.clk, m.actor, floor, m.value, now)
	if err != nil {
		return version.Set{}, invalidf("%v: the context's counters are out of range", err)
	}
	next, _ = next.Prune(c.cfg.Prune, now)
	if r.ks.Conflict == membership.ConflictLWW {
		next = next.ResolveLWW()
	}
	if err := next.Check(r.ks.Limits); err != nil {
		return version.Set{}, &LimitError{Keyspace: r.ks.Name, Key: r.key, Err: err}
	}
	if n := len(next.Siblings); n >= r.ks.WarnSiblings {
		c.manySiblings(r, n)
	}
	return next, nil
}

// after returns t, or just past the newest sibling of cur when that is not
// before t: a last-writer-wins write coordinated after the versions
// stored here must win over them. (A version stamped by a clock running
// ahead, up to FutureWriteLimit, is stored but not observed by the HLC
// past MaxClockOffset: stamped by the HLC alone, this write would be
// acknowledged and lose to it at once.)
func after(t version.Timestamp, cur version.Set) version.Timestamp {
	for _, s := range cur.Siblings {
		if s.Value.Time.Compare(t) < 0 {
			continue
		}
		t = s.Value.Time
		if t.Logical == math.MaxUint32 {
			t.Wall, t.Logical = t.Wall+1, 0
		} else {
			t.Logical++
		}
	}
	return t
}

// fanout is one write on its coordinator (all in one allocation): it mints
// the new set, sends it to the plan's targets and collects their replies.
type fanout struct {
	c      *Coordinator
	ctx    context.Context // outlives the request (fanoutContext)
	cancel context.CancelFunc
	r      *request
	plan   *writePlan
	m      minter
	set    version.Set
	enc    []byte // set's encoding, shared by every target's request
	sync   bool
	ch     chan reply
	// mu serializes plan.afterFailure (it marks fallbacks used).
	mu sync.Mutex
	// held is the bytes counted against MaxBackgroundBytes until every
	// target answered; outstanding the replies not yet taken from ch.
	held        int64
	outstanding int
	// slotted: the drain holds a MaxBackground slot.
	slotted bool
	// local is this node's write (when a replica), lspan its span and
	// start when the write began.
	local replica.Written
	lspan trace.Span
	start time.Time
	// reqs hold the requests to the first targets, one each (the other
	// two replicas at the usual replication factor of 3).
	reqs [2]internalv1.WriteRequest
}

// drain takes the replies still to come, then releases the fan-out's
// context, held bytes and background slot: the rest of a write, in the
// background.
func (f *fanout) drain() {
	defer f.c.ended()
	if f.slotted {
		defer f.c.bgSlots.release()
	}
	defer f.cancel()
	defer f.c.bgBytes.Add(-f.held)
	for ; f.outstanding > 0; f.outstanding-- {
		<-f.ch
	}
}

// awaitLocal waits for the local write's fsync, keeps the hints no
// fallback could take, and replies for this node.
func (f *fanout) awaitLocal() {
	c, r := f.c, f.r
	err := f.local.Wait()
	for _, down := range f.plan.keep {
		c.keepHint(r, down, f.set, f.sync)
	}
	endSpan(f.lspan, err)
	if r.trail.on() {
		r.trail.add(c.cfg.NodeID, "coordinator write", outcome(f.set, err), c.cfg.Now().Sub(f.start))
	}
	f.ch <- reply{t: target{Replica: placement.Replica{Node: c.cfg.NodeID, DC: c.cfg.DC}}, err: err}
}

// sendExtra writes to the plan's i-th pending replica; one that misses the
// write gets a kept hint.
func (f *fanout) sendExtra(i int) {
	t := f.plan.extras[i]
	err := f.c.writeTo(f.ctx, t, f.r, f.set, f.enc, f.sync, nil)
	f.r.trail.add(t.Node, "pending replica write", errText(err), 0)
	if err != nil {
		f.mu.Lock()
		_, act := f.plan.afterFailure(t, true)
		f.mu.Unlock()
		if act == failKeepHint {
			f.c.keepHint(f.r, t.Node, f.set, f.sync)
		}
	}
	f.ch <- reply{t: t, err: err}
}

// send writes to the plan's i-th target: a replica, or a fallback as a
// hint; a replica that went away since the request began has its copy
// handed to a fallback, as if it had been down from the start.
func (f *fanout) send(i int) {
	c, t := f.c, f.plan.targets[i]
	var wr *internalv1.WriteRequest
	if i < len(f.reqs) {
		wr = &f.reqs[i]
	}
	start := c.cfg.Now()
	err := c.writeTo(f.ctx, t, f.r, f.set, f.enc, f.sync, wr)
	if f.r.trail.on() {
		action := "replica write"
		if t.hintFor != "" {
			action = "hinted write for " + t.hintFor
		}
		f.r.trail.add(t.Node, action, errText(err), c.cfg.Now().Sub(start))
	}
	if err != nil {
		f.mu.Lock()
		// A fallback refusing a hint for a replica owed hints past the
		// window stands: another would start the window again.
		hinted, act := f.plan.afterFailure(t, wrote(err) || overHintWindow(err))
		f.mu.Unlock()
		switch act {
		case failKeepHint:
			// No fallback: keep the hint here; it does not count.
			c.keepHint(f.r, hinted.Node, f.set, f.sync)
		case failToFallback:
			start = c.cfg.Now()
			herr := c.writeTo(f.ctx, hinted, f.r, f.set, f.enc, f.sync, nil)
			if f.r.trail.on() {
				f.r.trail.add(hinted.Node, "hinted write for "+hinted.hintFor, errText(herr), c.cfg.Now().Sub(start))
			}
			if herr == nil {
				f.ch <- reply{t: hinted, err: nil, replaced: t}
				return
			}
		}
	}
	f.ch <- reply{t: t, err: err}
}

// wait feeds replies to the plan's tally until the need is met or can no
// longer be. It returns the replies counted, the fallbacks whose hinted
// copies succeeded, and how many replies it took from the channel.
func (f *fanout) wait(ctx context.Context, deadline time.Time) (got []reply, hinted []string, received int, err error) {
	r, p, tl := f.r, f.plan, &f.plan.tally
	got = make([]reply, 0, p.asked())
	timer := f.c.waitTimer(deadline)
	defer f.c.stopTimer(timer)
	var lastErr error
	for !tl.met() {
		if tl.hopeless() {
			return got, hinted, received, &FailedError{Op: OpWrite, Need: r.need, Answered: tl.acks, Failed: failed(got), Asked: p.asked(), Short: tl.shortfall(), Cause: lastErr}
		}
		select {
		case rp := <-f.ch:
			received++
			if rp.t.extra {
				continue
			}
			if rp.replaced.Node != "" {
				// Expected as a primary (or as an earlier fallback),
				// answered by a fallback.
				tl.answer(rp.replaced.DC, rp.replaced.hintFor != "", false)
				tl.expect(rp.t.DC, true)
			}
			tl.answer(rp.t.DC, rp.t.hintFor != "", rp.err == nil)
			got = append(got, rp)
			if rp.err != nil {
				lastErr = rp.err
			} else if rp.t.hintFor != "" {
				hinted = append(hinted, rp.t.Node)
			}
		case <-ctx.Done():
			return got, hinted, received, f.c.ctxErr(ctx, &TimeoutError{Op: OpWrite, Need: r.need, Answered: tl.acks, Asked: p.asked()})
		case <-timer.C:
			return got, hinted, received, &TimeoutError{Op: OpWrite, Need: r.need, Answered: tl.acks, Asked: p.asked()}
		}
	}
	return got, hinted, received, nil
}

func failed(rs []reply) int {
	n := 0
	for _, r := range rs {
		if r.err != nil {
			n++
		}
	}
	return n
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (c *Coordinator) effective(need Need, got []reply, hinted []string) *kvv1.Effective {
	e := &kvv1.Effective{N: uint32(need.N), Level: need.Level, Coordinator: c.cfg.NodeID, Hinted: hinted,
		Replicas: make([]string, 0, len(got)), Epoch: c.cfg.Topology().Epoch}
	for _, rp := range got {
		if rp.err == nil && rp.t.hintFor == "" {
			e.Replicas = append(e.Replicas, rp.t.Node)
		}
	}
	return e
}

func siblingsProto(s version.Set) []*kvv1.Sibling {
	out := make([]*kvv1.Sibling, 0, len(s.Siblings))
	for _, sib := range s.Siblings {
		out = append(out, &kvv1.Sibling{
			Value:              sib.Value.Bytes,
			Tombstone:          sib.Value.Tombstone,
			WriteTimeUnixNanos: sib.Value.Time.Wall,
			Dot:                sib.Dot.String(),
		})
	}
	return out
}

func outcome(set version.Set, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	if set.IsEmpty() {
		return "ok, not found"
	}
	return fmt.Sprintf("ok, %d siblings, %s", len(set.Siblings), set.Context())
}

func errText(err error) string {
	if err == nil {
		return "ok"
	}
	return "error: " + err.Error()
}
