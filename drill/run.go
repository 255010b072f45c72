package drill

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
)

// Config is how a drill runs. The zero value of a field means its
// default.
type Config struct {
	Scenario  Scenario
	Durations Durations
	Criteria  Criteria
	// Keyspace the workload writes (default "drill").
	Keyspace string
	// Rate is the LOCAL_QUORUM operations per second of each client DC,
	// half reads and half writes (default 50).
	Rate float64
	// ProbeRate is the QUORUM probes, and again the EACH_QUORUM probes,
	// per second of each client DC (default 5).
	ProbeRate float64
	// SetRate is the set workload's read-modify-writes per second of
	// each client DC (default 5).
	SetRate float64
	// Keys is how many keys each DC's LOCAL_QUORUM workload uses (default
	// 100); SetKeys how many sets every DC adds to (default 4).
	Keys, SetKeys int
	// OpTimeout is the deadline of a workload operation (default 2s),
	// ProbeTimeout that of a probe (default 2s).
	OpTimeout, ProbeTimeout time.Duration
	// FaultTTL is the injected fault's time to live: if the drill dies,
	// the fault expires by itself this long after it was injected
	// (default: the hold plus 30s).
	FaultTTL time.Duration
	// RestartPause is the pause between nodes of a rolling restart
	// (default 2s).
	RestartPause time.Duration
	// HintPoll is how often the hint backlog of every node is sampled
	// (default 1s).
	HintPoll time.Duration
	// Log receives progress lines (default: discarded).
	Log io.Writer
}

func (c *Config) fill() {
	def := DefaultDurations()
	if c.Durations.Baseline == 0 {
		c.Durations.Baseline = def.Baseline
	}
	if c.Durations.Hold == 0 {
		c.Durations.Hold = def.Hold
	}
	if c.Durations.VerifyMin == 0 {
		c.Durations.VerifyMin = def.VerifyMin
	}
	if c.Durations.Settle <= 0 {
		c.Durations.Settle = def.Settle
	}
	// Convergence is seen only while verifying: the criterion and the
	// verification's end default to each other.
	if c.Durations.VerifyTimeout == 0 {
		c.Durations.VerifyTimeout = max(def.VerifyTimeout, c.Durations.VerifyMin, c.Criteria.MaxConverge)
	}
	dc := DefaultCriteria()
	if c.Criteria.MinLocalAvailability == 0 {
		c.Criteria.MinLocalAvailability = dc.MinLocalAvailability
	}
	if c.Criteria.MaxConverge == 0 {
		c.Criteria.MaxConverge = min(dc.MaxConverge, c.Durations.VerifyTimeout)
	}
	if c.Keyspace == "" {
		c.Keyspace = "drill"
	}
	if c.Rate == 0 {
		c.Rate = 50
	}
	if c.ProbeRate == 0 {
		c.ProbeRate = 5
	}
	if c.SetRate == 0 {
		c.SetRate = 5
	}
	if c.Keys == 0 {
		c.Keys = 100
	}
	if c.SetKeys == 0 {
		c.SetKeys = 4
	}
	if c.OpTimeout == 0 {
		c.OpTimeout = 2 * time.Second
	}
	if c.HintPoll == 0 {
		c.HintPoll = time.Second
	}
	if c.ProbeTimeout == 0 {
		c.ProbeTimeout = 2 * time.Second
	}
	if c.FaultTTL == 0 {
		c.FaultTTL = c.Durations.Hold + 30*time.Second
	}
	if c.RestartPause == 0 {
		c.RestartPause = 2 * time.Second
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
}

// Validate says which setting is wrong (after defaults are filled in).
func (c Config) Validate() error {
	if err := c.Durations.Validate(); err != nil {
		return err
	}
	if err := c.Criteria.Validate(); err != nil {
		return err
	}
	switch {
	case c.Rate < 0 || c.ProbeRate < 0 || c.SetRate < 0:
		return fmt.Errorf("--rate, --probe-rate and --set-rate must not be negative")
	// Health is judged second by second, and a second with no operation
	// of a level due is no evidence that the level works: below one per
	// second per DC, the seconds without one are unhealthy, and a healthy
	// cluster may never show StableWindows healthy seconds in a row
	// (counting them as healthy instead would declare a recovery, and
	// place the RTO, on seconds nothing was measured in). The set
	// workload's rate needs no floor: --rate alone keeps every second of
	// LOCAL_QUORUM measured.
	case c.Rate < 1:
		return fmt.Errorf("--rate %g: give at least 1 per second per DC, so that every second of LOCAL_QUORUM has operations to judge it by", c.Rate)
	case c.ProbeRate < 1:
		return fmt.Errorf("--probe-rate %g: give at least 1 per second per DC, so that every second of QUORUM and EACH_QUORUM has probes to judge it by", c.ProbeRate)
	case c.Keys < 1 || c.SetKeys < 1:
		return fmt.Errorf("--keys and --set-keys must be at least 1")
	case c.OpTimeout <= 0 || c.ProbeTimeout <= 0:
		return fmt.Errorf("--op-timeout and --probe-timeout must be positive")
	case c.Durations.VerifyTimeout <= c.recoverySeen():
		return fmt.Errorf("--verify-timeout %s is too short: verify can see a recovery no sooner than %s after the heal (%d healthy seconds after the heal's own, the last judged once the longer of --op-timeout %s and --probe-timeout %s, + %s, passed), so the drill could only fail; give a --verify-timeout longer than %s, or a shorter --op-timeout and --probe-timeout",
			c.Durations.VerifyTimeout, c.recoverySeen(), StableWindows, c.OpTimeout, c.ProbeTimeout, finalMargin, c.recoverySeen())
	case c.FaultTTL < c.Durations.Hold:
		return fmt.Errorf("--fault-ttl %s is shorter than --hold %s: the fault would expire during the hold; give a TTL of at least the hold", c.FaultTTL, c.Durations.Hold)
	case c.FaultTTL > 24*time.Hour:
		return fmt.Errorf("--fault-ttl %s: at most 24h", c.FaultTTL)
	case c.Criteria.MaxConverge > c.Durations.VerifyTimeout:
		return fmt.Errorf("--max-converge %s is longer than --verify-timeout %s: verification stops before the criterion could be met; give a --verify-timeout of at least %s", c.Criteria.MaxConverge, c.Durations.VerifyTimeout, c.Criteria.MaxConverge)
	}
	return nil
}

// finalMargin is how long, past the longest deadline, verify waits for
// the last operations of a second to be recorded.
const finalMargin = 200 * time.Millisecond

// secondFinal is how long after a second ends that second is final: every
// operation started in it has ended, by its deadline at the latest.
func (c Config) secondFinal() time.Duration {
	return max(c.OpTimeout, c.ProbeTimeout) + finalMargin
}

// recoverySeen is the earliest, after the heal, that verify can see every
// level recovered: StableWindows healthy seconds after the heal's own
// (partial) one, the last of them final. A verify timeout no longer than
// it ends every drill unrecovered and unconverged, whatever the cluster
// does.
func (c Config) recoverySeen() time.Duration {
	return (StableWindows+1)*time.Second + c.secondFinal()
}

// Processes kills and restarts the nodes of a cluster the drill started.
type Processes interface {
	// Kill sends SIGKILL to a node and waits for it to exit.
	Kill(id string) error
	// Stop sends SIGTERM to a node and waits for it to exit.
	Stop(ctx context.Context, id string) error
	// Start starts a stopped node again and returns once it is healthy.
	Start(ctx context.Context, id string) error
}

// Env is the cluster a drill runs against.
type Env struct {
	// Target names the cluster in the report.
	Target   string
	Topology Topology
	// KV is a client per datacenter.
	KV map[string]KV
	// Admin is an admin client per node.
	Admin map[string]adminv1.AdminClient
	// Procs is nil unless the drill owns the node processes.
	Procs Processes
}

// driller is one drill run.
type driller struct {
	cfg   Config
	env   Env
	ids   []string
	start time.Time
	tl    Timeline
	rec   *recorder
	logMu sync.Mutex // guards Log and notes
	notes []string
	// runID names this drill's sets (setKey) and its fault.
	runID string
	// setKeys are the sets the workload adds to and the final check
	// reads (chooseSetKeys).
	setKeys [][]byte
	// down is a node the drill stopped and has not started again.
	down string
	// loadEnd is when the workload stopped; quiet when its last
	// operation had ended, and loadStopped is quiet plus one (0 until
	// then), for the repair rounds' goroutine.
	loadEnd, quiet time.Duration
	loadStopped    atomic.Int64

	hintsMu struct {
		sync.Mutex
		samples []HintSample
	}
	repairMu struct {
		sync.Mutex
		points []RepairPoint
		rounds []RepairRound
	}
	converged atomic.Bool
}

// logf writes a progress line (from any goroutine).
func (d *driller) logf(format string, args ...any) {
	d.logMu.Lock()
	defer d.logMu.Unlock()
	fmt.Fprintf(d.cfg.Log, "[%6.1fs] %s\n", d.now().Seconds(), fmt.Sprintf(format, args...))
}

// note logs a line that also goes into the report.
func (d *driller) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	d.logf("%s", msg)
	d.logMu.Lock()
	defer d.logMu.Unlock()
	d.notes = append(d.notes, msg)
}

func (d *driller) now() time.Duration {
	if d.start.IsZero() {
		return 0
	}
	return time.Since(d.start)
}

// Prepare fills in defaults and checks cfg against env, so that a drill
// that cannot run fails before it touches the cluster.
func Prepare(cfg *Config, env Env) error {
	cfg.fill()
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := cfg.Scenario.Validate(env.Topology); err != nil {
		return err
	}
	if cfg.Scenario.NeedsProcesses() && env.Procs == nil {
		return fmt.Errorf("%s kills and restarts nodes, which only a drill that started them can do: run it with --local", cfg.Scenario.Name)
	}
	for _, dc := range env.Topology.DCs() {
		if env.KV[dc] == nil {
			return fmt.Errorf("no client for datacenter %s", dc)
		}
	}
	for _, n := range env.Topology.Nodes {
		if env.Admin[n.ID] == nil {
			return fmt.Errorf("no admin connection to node %s", n.ID)
		}
	}
	return nil
}

// Run runs one drill and returns its report, judged by cfg.Criteria. It
// returns an error only when the drill could not run (the report is then
// nil): a drill that ran and failed its criteria returns a report whose
// Pass is false. Whatever happens, a fault it injected is cleared and a
// node it stopped is started again before it returns.
func Run(ctx context.Context, cfg Config, env Env) (*Report, error) {
	if err := Prepare(&cfg, env); err != nil {
		return nil, err
	}
	d := &driller{cfg: cfg, env: env}
	for _, n := range env.Topology.Nodes {
		d.ids = append(d.ids, n.ID)
	}
	var rf []string
	for _, dc := range env.Topology.DCs() {
		rf = append(rf, fmt.Sprintf("%s=%d", dc, env.Topology.RF[dc]))
	}
	fmt.Fprintf(cfg.Log, "drill %s\ncluster: %s, %d node(s) in %s; keyspace %s, replication %s\n", cfg.Scenario, env.Target,
		len(d.ids), strings.Join(env.Topology.DCs(), ", "), cfg.Keyspace, strings.Join(rf, " "))
	fmt.Fprintln(cfg.Log, "abort criteria:")
	for _, c := range cfg.Criteria.Describe(cfg.Scenario, env.Topology, cfg.ProbeTimeout) {
		fmt.Fprintf(cfg.Log, "  - %s\n", c)
	}
	if err := d.preflight(ctx); err != nil {
		return nil, err
	}
	return d.run(ctx)
}

// preflightTimeout bounds the wait for a healthy cluster before the
// baseline (a freshly started cluster's gossip may take a while on a busy
// machine).
const preflightTimeout = 2 * time.Minute

// preflight refuses to start on a cluster that already has faults or
// where an EACH_QUORUM write does not succeed from every DC.
func (d *driller) preflight(ctx context.Context) error {
	for _, id := range d.ids {
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := d.env.Admin[id].ListFaults(lctx, &adminv1.ListFaultsRequest{LocalOnly: true})
		cancel()
		if status.Code(err) == codes.Unimplemented {
			return fmt.Errorf("node %s does not support fault injection (admin ListFaults is unimplemented): run the drill against nodes built with it", id)
		}
		if err != nil {
			return fmt.Errorf("list faults on %s: %w (is the node up? see 'meridian status')", id, err)
		}
		for _, nf := range resp.GetNodes() {
			for _, f := range nf.GetFaults() {
				return fmt.Errorf("node %s already has fault %s (%s, expires in %.0fs): wait for it to expire or clear it ('meridian fault clear'), then run the drill again",
					id, f.GetId(), f.GetKind(), f.GetExpiresInSeconds())
			}
		}
	}
	deadline := time.Now().Add(preflightTimeout)
	for _, dc := range d.env.Topology.DCs() {
		for tries := 0; ; tries++ {
			// A new key per attempt: a failed write may still land on
			// some replicas, and blind writes to one key would pile up
			// siblings.
			wctx, cancel := context.WithTimeout(ctx, d.cfg.ProbeTimeout)
			_, err := d.env.KV[dc].Put(wctx, fmt.Appendf(nil, "drill/ready/%s/%d", dc, time.Now().UnixNano()), []byte("ready"), nil, kvv1.Level_LEVEL_EACH_QUORUM)
			cancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("the cluster is not healthy before the drill: an EACH_QUORUM write from %s's client still fails after %s: %w (check 'meridian status' and 'meridian hints')", dc, preflightTimeout, err)
			}
			if tries == 10 {
				fmt.Fprintf(d.cfg.Log, "waiting for an EACH_QUORUM write from %s to succeed before the baseline: %v\n", dc, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}

func (d *driller) run(ctx context.Context) (*Report, error) {
	d.runID = newRunID()
	// Before the baseline: a drill whose check could not cover its node
	// fails before it touches the cluster.
	keys, err := d.chooseSetKeys(ctx)
	if err != nil {
		return nil, err
	}
	d.setKeys = keys
	d.start = time.Now()
	d.rec = &recorder{start: d.start}
	w := &workload{cfg: d.cfg, setKeys: d.setKeys, kv: d.env.KV, rec: d.rec, maxInflight: max(16, int(2*d.cfg.Rate*d.cfg.OpTimeout.Seconds()))}

	// Background work: the workload runs until every level is healthy
	// again after the heal (stopLoad), the hints poller until verify
	// ends (stopPoll); each stop waits for its goroutines.
	loadCtx, cancelLoad := context.WithCancel(ctx)
	pollCtx, cancelPoll := context.WithCancel(ctx)
	var load, poll sync.WaitGroup
	load.Add(1)
	poll.Add(1)
	go func() { defer load.Done(); w.run(loadCtx, d.env.Topology.DCs()) }()
	go func() { defer poll.Done(); d.pollHints(pollCtx) }()
	loadStopped := false
	stopLoad := func() {
		if !loadStopped {
			loadStopped = true
			d.loadEnd = d.now()
			cancelLoad()
			load.Wait() // operations in flight end, by their own deadlines
			d.quiet = d.now()
			d.loadStopped.Store(int64(d.quiet) + 1)
		}
	}
	stopPoll := func() { cancelPoll(); poll.Wait() }
	defer stopPoll()
	defer stopLoad()

	var fault *adminv1.Fault
	var applied []string
	// heal undoes the fault whatever happened; it is idempotent.
	healed := false
	heal := func() error {
		if healed {
			return nil
		}
		healed = true
		hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
		defer cancel()
		if fault != nil {
			d.clearFault(hctx, fault.GetId())
		}
		if id := d.down; id != "" {
			t0 := time.Now()
			if err := d.env.Procs.Start(hctx, id); err != nil {
				return fmt.Errorf("start %s again: %w (see its log)", id, err)
			}
			d.reconnect(hctx, id)
			d.down = ""
			d.logf("heal: %s started again, healthy after %.1fs", id, time.Since(t0).Seconds())
		}
		return nil
	}
	defer func() { _ = heal() }() // a no-op after the heal phase

	d.tl.Begin(Baseline, 0)
	d.logf("baseline: workload only, %s", d.cfg.Durations.Baseline)
	if err := sleepCtx(ctx, d.cfg.Durations.Baseline); err != nil {
		return nil, fmt.Errorf("interrupted during the baseline: %w", err)
	}

	d.tl.Begin(Induce, d.now())
	switch s := d.cfg.Scenario; {
	case s.Fault(d.env.Topology, d.cfg.FaultTTL) != nil:
		var err error
		fault, applied, err = d.inject(ctx, s.Fault(d.env.Topology, d.cfg.FaultTTL))
		if err != nil {
			return nil, err // a fault that reached some nodes is cleared by heal
		}
		d.logf("induce: fault %s (%s) applied on %s; it expires by itself in %s", fault.GetId(), fault.GetKind(), strings.Join(applied, ","), d.cfg.FaultTTL)
	case s.Name == NodeCrash:
		d.down = s.Node
		if err := d.env.Procs.Kill(s.Node); err != nil {
			return nil, fmt.Errorf("kill -9 %s: %w", s.Node, err)
		}
		d.logf("induce: %s killed (SIGKILL)", s.Node)
	case s.Name == RollingRestart:
		d.logf("induce: rolling restart of %s", strings.Join(d.ids, ", "))
	}

	d.tl.Begin(Hold, d.now())
	if d.cfg.Scenario.Name == RollingRestart {
		if err := d.roll(ctx); err != nil {
			return nil, err
		}
	} else {
		d.logf("hold: %s", d.cfg.Durations.Hold)
		if err := sleepCtx(ctx, d.cfg.Durations.Hold); err != nil {
			return nil, fmt.Errorf("interrupted during the hold (the fault is cleared): %w", err)
		}
	}

	d.tl.Begin(Heal, d.now())
	if err := heal(); err != nil {
		return nil, err
	}
	if fault != nil {
		d.logf("heal: fault %s cleared", fault.GetId())
	}

	d.tl.Begin(Verify, d.now())
	healedAt := d.now()
	repairCtx, stopRepair := context.WithCancel(ctx)
	var repairDone sync.WaitGroup
	repairDone.Add(1)
	go func() { defer repairDone.Done(); d.converge(repairCtx) }()
	err = d.verify(ctx, healedAt, stopLoad)
	stopRepair()
	repairDone.Wait()
	stopLoad()
	d.tl.Finish(d.now())
	stopPoll()
	if err != nil {
		return nil, fmt.Errorf("interrupted during verify: %w", err)
	}

	d.logf("final check: the set workload's acknowledged elements, on every replica, then read at ALL")
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 90*time.Second)
	set := d.checkSet(cctx, w.acked.snapshot())
	cancel()

	d.hintsMu.Lock()
	hints := slices.Clone(d.hintsMu.samples)
	d.hintsMu.Unlock()
	d.repairMu.Lock()
	points, rounds := slices.Clone(d.repairMu.points), slices.Clone(d.repairMu.rounds)
	d.repairMu.Unlock()
	r := Analyze(Input{Scenario: d.cfg.Scenario, Topology: d.env.Topology, Timeline: d.tl, Samples: d.rec.snapshot(),
		Hints: hints, Repair: points, Rounds: rounds, Set: set, ProbeTimeout: d.cfg.ProbeTimeout, LoadEnd: d.loadEnd, Quiet: d.quiet,
		ErrorExamples: d.rec.errorExamples()})
	r.Started = d.start
	r.Target = d.env.Target
	d.logMu.Lock()
	r.Notes = slices.Clone(d.notes)
	d.logMu.Unlock()
	c := d.cfg
	r.Settings = Settings{BaselineS: c.Durations.Baseline.Seconds(), HoldS: c.Durations.Hold.Seconds(), VerifyMinS: c.Durations.VerifyMin.Seconds(),
		VerifyTimeoutS: c.Durations.VerifyTimeout.Seconds(), Keyspace: c.Keyspace, Rate: c.Rate, ProbeRate: c.ProbeRate, SetRate: c.SetRate,
		SetKeys: c.SetKeys, OpTimeoutS: c.OpTimeout.Seconds(), ProbeTimeoutS: c.ProbeTimeout.Seconds(),
		MinLocalAvailability: c.Criteria.MinLocalAvailability, MaxConvergeS: c.Criteria.MaxConverge.Seconds(), MaxRTOS: c.Criteria.MaxRTO.Seconds()}
	if fault != nil {
		r.Settings.FaultTTLS = c.FaultTTL.Seconds()
		r.Fault = &FaultInfo{ID: fault.GetId(), Kind: fault.GetKind(), FromDCs: fault.GetFromDcs(), ToDCs: fault.GetToDcs(), BothWays: fault.GetBothWays(),
			DelayMs: fault.GetDelayMs(), JitterMs: fault.GetJitterMs(), TTLS: fault.GetTtlSeconds(), AppliedOn: applied}
	}
	c.Criteria.Evaluate(r, c.ProbeTimeout)
	return r, nil
}

// inject adds the fault through any node (which fans it out to the
// others) and checks that every node it selects applied it. The fault is
// named here, once, so every attempt injects the same fault: one whose
// reply was lost (or cut short by Ctrl-C) may have applied it anywhere,
// and whatever it returns, errors too, names the fault heal must clear.
func (d *driller) inject(ctx context.Context, f *adminv1.Fault) (*adminv1.Fault, []string, error) {
	f = proto.CloneOf(f)
	if f.GetId() == "" {
		f.Id = "f-drill-" + d.runID
	}
	var errs []error
	for _, id := range d.ids {
		ictx, cancel := context.WithTimeout(ctx, 15*time.Second)
		resp, err := d.env.Admin[id].InjectFault(ictx, &adminv1.InjectFaultRequest{Fault: f})
		cancel()
		if status.Code(err) == codes.Unimplemented {
			return f, nil, fmt.Errorf("node %s does not support fault injection (admin InjectFault is unimplemented): run the drill against nodes built with it", id)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", id, err))
			if status.Code(err) == codes.InvalidArgument || status.Code(err) == codes.PermissionDenied {
				break
			}
			continue
		}
		if len(resp.GetUnreachable()) > 0 {
			return resp.GetFault(), nil, fmt.Errorf("fault %s reached only %s; %s could not be reached: check those nodes are up ('meridian status') and run the drill again (the fault was cleared where it applied)",
				resp.GetFault().GetId(), strings.Join(resp.GetApplied(), ","), strings.Join(resp.GetUnreachable(), ","))
		}
		applied := slices.Clone(resp.GetApplied())
		slices.SortFunc(applied, func(a, b string) int {
			if idLess(a, b) {
				return -1
			}
			if idLess(b, a) {
				return 1
			}
			return 0
		})
		return resp.GetFault(), applied, nil
	}
	return f, nil, fmt.Errorf("inject the fault: no node accepted it: %w", errors.Join(errs...))
}

// clearFault removes the fault from every node, asking each node directly
// (a fan-out from one node could itself be cut by the fault), then checks
// that none still lists it. What it cannot clear expires by its TTL.
func (d *driller) clearFault(ctx context.Context, id string) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed []string
	for _, node := range d.ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := d.clearOn(ctx, node, id)
			if err != nil {
				mu.Lock()
				failed = append(failed, fmt.Sprintf("%s (%v)", node, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(failed) > 0 {
		slices.Sort(failed)
		d.note("could not confirm fault %s was cleared on %s: it expires by itself after its TTL (%s)", id, strings.Join(failed, ", "), d.cfg.FaultTTL)
	}
}

func (d *driller) clearOn(ctx context.Context, node, id string) error {
	var last error
	for attempt := 0; attempt < 5; attempt++ {
		if attempt > 0 {
			time.Sleep(200 * time.Millisecond)
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := d.env.Admin[node].ClearFaults(cctx, &adminv1.ClearFaultsRequest{Id: id, LocalOnly: true})
		cancel()
		if err != nil && status.Code(err) != codes.NotFound {
			last = err
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := d.env.Admin[node].ListFaults(lctx, &adminv1.ListFaultsRequest{LocalOnly: true})
		cancel()
		if err != nil {
			last = err
			continue
		}
		still := false
		for _, nf := range resp.GetNodes() {
			for _, f := range nf.GetFaults() {
				still = still || f.GetId() == id
			}
		}
		if !still {
			return nil
		}
		last = errors.New("still listed after ClearFaults")
	}
	return last
}

// roll restarts every node in turn: SIGTERM, start again, wait until it
// is healthy and the hints written for it while it was away are
// delivered, pause. (A returning replica is not counted toward reads
// while it is owed hints, so restarting its DC's next node before they
// are delivered leaves that DC one replica short: the runbook waits, as
// for Cassandra's hint replay.)
func (d *driller) roll(ctx context.Context) error {
	for i, id := range d.ids {
		t0 := time.Now()
		d.down = id
		if err := d.env.Procs.Stop(ctx, id); err != nil {
			return fmt.Errorf("rolling restart: stop %s: %w", id, err)
		}
		if err := d.env.Procs.Start(ctx, id); err != nil {
			return fmt.Errorf("rolling restart: start %s again: %w (see its log)", id, err)
		}
		d.reconnect(ctx, id)
		d.down = ""
		d.logf("hold: %s restarted and healthy in %.1fs (%d of %d)", id, time.Since(t0).Seconds(), i+1, len(d.ids))
		if i < len(d.ids)-1 {
			t1 := time.Now()
			if err := d.waitHintsDelivered(ctx, id, maxHintWait); err != nil {
				return err
			}
			d.logf("hold: hints for %s delivered in %.1fs", id, time.Since(t1).Seconds())
		}
		if i < len(d.ids)-1 {
			if err := sleepCtx(ctx, d.cfg.RestartPause); err != nil {
				return err
			}
		}
	}
	return nil
}

// maxHintWait bounds how long a rolling restart waits for a node's hints.
const maxHintWait = 60 * time.Second

// waitHintsDelivered polls every node until none holds hints for id, at
// most limit (then it notes that it went on regardless).
func (d *driller) waitHintsDelivered(ctx context.Context, id string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		held, unknown := uint64(0), 0
		for _, n := range d.ids {
			hctx, cancel := context.WithTimeout(ctx, time.Second)
			resp, err := d.env.Admin[n].Hints(hctx, &adminv1.HintsRequest{})
			cancel()
			if err != nil {
				unknown++
				continue
			}
			for _, ht := range resp.GetTargets() {
				if ht.GetTarget() == id {
					held += ht.GetCount()
				}
			}
		}
		if held == 0 && unknown == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			d.note("rolling restart: %d hint(s) for %s still held (%d node(s) did not answer) after %s; restarting the next node anyway", held, id, unknown, limit)
			return nil
		}
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

// reconnect waits until the drill's admin connection to a restarted node
// works again (gRPC backs a connection off while its node is down; the
// node's health was checked on a fresh one).
func (d *driller) reconnect(ctx context.Context, id string) {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := d.env.Admin[id].ListFaults(rctx, &adminv1.ListFaultsRequest{LocalOnly: true}, grpc.WaitForReady(true)); err != nil {
		d.note("the admin connection to %s did not come back within 10s of its restart: %v", id, err)
	}
}

// pollHints records, every HintPoll, the hints all nodes hold per target.
func (d *driller) pollHints(ctx context.Context) {
	t := time.NewTicker(d.cfg.HintPoll)
	defer t.Stop()
	for {
		at := d.now()
		sums := map[string]uint64{}
		for _, id := range d.ids {
			sums[id] = 0
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, id := range d.ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				hctx, cancel := context.WithTimeout(ctx, d.cfg.HintPoll*9/10)
				defer cancel()
				resp, err := d.env.Admin[id].Hints(hctx, &adminv1.HintsRequest{})
				if err != nil {
					return
				}
				mu.Lock()
				defer mu.Unlock()
				for _, ht := range resp.GetTargets() {
					sums[ht.GetTarget()] += ht.GetCount()
				}
			}()
		}
		wg.Wait()
		if ctx.Err() != nil {
			return
		}
		d.hintsMu.Lock()
		for target, n := range sums {
			d.hintsMu.samples = append(d.hintsMu.samples, HintSample{At: at, Target: target, Count: n})
		}
		d.hintsMu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// converge runs rounds of full Merkle exchanges on every node until one
// round finds no mismatch anywhere (or ctx ends).
func (d *driller) converge(ctx context.Context) {
	for round := 1; ctx.Err() == nil; round++ {
		rd := d.repairRound(ctx, round)
		if ctx.Err() != nil {
			return // cut short: not a round
		}
		d.repairMu.Lock()
		d.repairMu.rounds = append(d.repairMu.rounds, rd)
		d.repairMu.Unlock()
		var mism uint64
		var errs []string
		for _, n := range rd.Nodes {
			mism += n.Mismatches
			if n.Err != "" {
				errs = append(errs, n.Node+": "+n.Err)
			}
		}
		if rd.Clean(d.ids) {
			// Proven only on a quiet cluster: a round that began while
			// the workload still wrote never compared its last writes.
			if end := d.loadStopped.Load(); end > 0 && rd.Start >= time.Duration(end-1) {
				d.converged.Store(true)
				d.logf("verify: repair round %d found no mismatch on any node: converged", round)
				return
			}
			d.logf("verify: repair round %d found no mismatch, but began while the workload still wrote: another round once it stops", round)
			for d.loadStopped.Load() == 0 { // no more rounds under load
				if sleepCtx(ctx, 250*time.Millisecond) != nil {
					return
				}
			}
			continue
		} else {
			d.logf("verify: repair round %d: %d mismatch(es)%s", round, mism, errSuffix(errs))
		}
		if sleepCtx(ctx, 250*time.Millisecond) != nil {
			return
		}
	}
}

func errSuffix(errs []string) string {
	if len(errs) == 0 {
		return ""
	}
	return "; not finished on " + strings.Join(errs, "; ")
}

func (d *driller) repairRound(ctx context.Context, round int) RepairRound {
	rd := RepairRound{Round: round, Start: d.now()}
	var mu sync.Mutex
	progress := map[string]*adminv1.RepairProgress{}
	lastPoint := time.Time{}
	record := func(force bool) { // mu held
		if !force && time.Since(lastPoint) < 200*time.Millisecond {
			return
		}
		lastPoint = time.Now()
		p := RepairPoint{At: d.now(), Round: round}
		for _, pr := range progress {
			p.Done += int(pr.GetPartitionsDone())
			p.Total += int(pr.GetPartitionsTotal())
			p.Mismatches += pr.GetMismatches()
		}
		d.repairMu.Lock()
		d.repairMu.points = append(d.repairMu.points, p)
		d.repairMu.Unlock()
	}
	results := make([]NodeRepair, len(d.ids))
	var wg sync.WaitGroup
	for i, id := range d.ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := NodeRepair{Node: id}
			defer func() { results[i] = res }()
			stream, err := d.env.Admin[id].RepairRun(ctx, &adminv1.RepairRunRequest{Keyspace: d.cfg.Keyspace, Partition: -1})
			if err != nil {
				res.Err = err.Error()
				return
			}
			for {
				p, err := stream.Recv()
				if err == io.EOF {
					res.Err = "the run ended without reporting done"
					return
				}
				if err != nil {
					res.Err = status.Convert(err).Message()
					return
				}
				mu.Lock()
				progress[id] = p
				record(false)
				mu.Unlock()
				res.Partitions, res.Mismatches, res.KeysRepaired = int(p.GetPartitionsTotal()), p.GetMismatches(), p.GetKeysRepaired()
				if p.GetDone() {
					return
				}
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	record(true)
	mu.Unlock()
	rd.End = d.now()
	rd.Nodes = results
	return rd
}

// verify runs the verify phase in two steps. First the workload goes
// on until every level has been healthy for StableWindows seconds (and at
// least VerifyMin passed since the heal): that measures the recovery.
// Then stopLoad stops the workload, and verify waits for a repair round
// that finds no mismatch: under a steady write load some round always
// catches a write on its way to a replica, so convergence is proven on a
// quiet cluster. Both steps end at VerifyTimeout after the heal.
func (d *driller) verify(ctx context.Context, healedAt time.Duration, stopLoad func()) error {
	d.logf("verify: until every level is healthy again (at least %s), then the workload stops until a repair round finds no mismatch (at most %s in all)",
		d.cfg.Durations.VerifyMin, d.cfg.Durations.VerifyTimeout)
	// A second is final once every operation started in it has ended.
	settle := d.cfg.secondFinal()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	recovered := false
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		since := d.now() - healedAt
		if since >= d.cfg.Durations.VerifyTimeout {
			d.note("verify timed out %s after the heal (every level healthy again: %v; converged: %v)", d.cfg.Durations.VerifyTimeout, recovered, d.converged.Load())
			return nil
		}
		if !recovered {
			upTo := healedAt + since - settle
			// since >= recoverySeen: StableWindows final seconds after
			// the heal's own (Validate keeps VerifyTimeout past it).
			recovered = since >= d.cfg.recoverySeen() && StableSince(d.rec.snapshot(), d.cfg.Scenario.ExpectedAfterHeal(), upTo)
			if !recovered || since < d.cfg.Durations.VerifyMin {
				recovered = false
				continue
			}
			if !d.converged.Load() {
				d.logf("verify: every level healthy for %d s: the workload stops, so that a repair round can find the replicas equal", StableWindows)
			}
			stopLoad()
			// The report judges every second up to the stop, including
			// the last ones this decision could not see yet.
			if faultAt, ok := d.tl.FaultAt(); ok && !Recovered(d.rec.snapshot(), d.cfg.Scenario.ExpectedAfterHeal(), faultAt, d.loadEnd) {
				d.note("every level was healthy for %d s, but operations due in the last %s before the workload stopped failed again: no recovery is established (see the availability plot)",
					StableWindows, settle.Round(100*time.Millisecond))
			}
		}
		if d.converged.Load() {
			return nil
		}
	}
}
