package repair

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	"github.com/meridiankv/meridian/replica"
	"github.com/meridiankv/meridian/version"
)

// Partition transfers, the receiving side. While a partition moves to a
// new owner, the new owner pulls it from a current owner page by page
// (ScanPartition), merging every key as replica writes do and recording
// after each page, once the page is durable, the last key merged (a
// checkpoint in the store's meta area): a crash or a restart of either
// side resumes after it, and never skips a key. When the stream is done,
// an anti-entropy pass against the sources (CatchUp) picks up what was
// written behind the scan, and the task is reported done; the caller
// proposes the switch of the partition's owners.

// TransferTask is one partition this node must pull.
type TransferTask struct {
	Keyspace string      // name
	Loc      replica.Loc // keyspace ID and partition
	// Sources are the replicas to pull from, in preference order (never
	// this node).
	Sources []string
	// Generation is the ID of the transition the task belongs to;
	// checkpoints of other generations are stale.
	Generation uint64
}

// TransferPeers is what transfers need from the transport.
type TransferPeers interface {
	ScanPartition(ctx context.Context, node string, req *internalv1.ScanPartitionRequest) (*internalv1.ScanPartitionResponse, error)
}

// Checkpoints is a durable name → value area (the replica store's meta
// area has it) where transfers record how far each task got.
type Checkpoints interface {
	PutMeta(name string, value []byte) error
	ScanMeta(prefix string, fn func(name string, value []byte) error) error
	DeleteMeta(name string) error
}

// TransferConfig configures Transfers. Zero values mean defaults.
type TransferConfig struct {
	Peers       TransferPeers // required
	Merge       Merger        // required: merges pulled sets as replica writes do
	Checkpoints Checkpoints   // required
	// Alive says whether a source is up (nil: every source is).
	Alive func(node string) bool
	// Partition is the ring's partition of a key: a page holding a key
	// of another partition is refused (nil: not checked).
	Partition func(key []byte) int
	// CatchUp, if set, runs after a task's stream: an anti-entropy pass
	// against the task's sources (AntiEntropy.SyncWith). An error retries
	// it later; the stream is not repeated.
	CatchUp func(ctx context.Context, t TransferTask) error
	// Done is called once a task streamed and caught up (the caller
	// proposes the partition's switch); it may be called again for the
	// same task after a restart, so it must be idempotent.
	Done func(t TransferTask)
	// BytesPerSecond throttles the pulls, all tasks together (default
	// 20 MiB/s).
	BytesPerSecond float64
	// Parallel is how many tasks stream at once (default 2).
	Parallel int
	// PageKeys is the most keys asked for per page (default 1000; the
	// source also bounds a page's bytes).
	PageKeys int
	// PageBytes is the most bytes of keys and sets asked for per page
	// (default 4 MiB; a page ends with the set that passes it, so it can
	// be larger by one set).
	PageBytes int
	// SetBytes is the largest set a keyspace holds (its limit; nil or
	// 0: version.MaxSetBytes), which a page may carry past PageBytes.
	SetBytes func(keyspace string) int
	// Timeout bounds each page call, plus a second for every MiB a page
	// may carry (PageBytes and the keyspace's SetBytes): a page that ends
	// with a large set takes longer on a slow link (default 10s).
	Timeout time.Duration
	Now     func() time.Time
	Logger  *slog.Logger
}

func (c *TransferConfig) setDefaults() {
	if c.BytesPerSecond <= 0 {
		c.BytesPerSecond = 20 << 20
	}
	if c.Parallel <= 0 {
		c.Parallel = 2
	}
	if c.PageKeys <= 0 {
		c.PageKeys = 1000
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.PageBytes <= 0 {
		c.PageBytes = 4 << 20
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Transfer states, as TransferStatus.State reports them.
const (
	TransferWaiting    = "waiting"     // for a slot, a live source or a retry
	TransferStreaming  = "streaming"   // pulling pages
	TransferCatchingUp = "catching-up" // stream done, CatchUp running
	TransferDone       = "done"        // streamed, caught up and reported
	TransferFailed     = "failed"      // the last attempt failed; retried after a back-off
)

// TransferStatus is the state of one task.
type TransferStatus struct {
	Keyspace   string
	Partition  int
	Generation uint64
	// Source is the replica pulled from (last or current).
	Source string
	State  string
	// Keys and Bytes count what this process merged for the task (a
	// resumed task counts from its checkpoint); BytesPerSecond is the
	// rate of the current or last stream.
	Keys, Bytes    uint64
	BytesPerSecond float64
	// Err is why the last attempt failed or the task waits ("" if none).
	Err string
}

// Retry pacing of a task: the back-off after consecutive failures doubles
// from transferMinBackoff to transferMaxBackoff; a task without a live
// source looks again every transferMaxBackoff.
const (
	transferMinBackoff = 250 * time.Millisecond
	transferMaxBackoff = 4 * time.Second
)

// checkpointPrefix starts every transfer checkpoint's name:
// transfer/<generation>/<keyspace ID>/<partition>.
const checkpointPrefix = "transfer/"

func checkpointName(t TransferTask) string {
	return fmt.Sprintf("%s%d/%d/%d", checkpointPrefix, t.Generation, t.Loc.Keyspace, t.Loc.Partition)
}

type taskKey struct {
	gen uint64
	ks  uint32
	p   int
}

func keyOf(t TransferTask) taskKey { return taskKey{t.Generation, t.Loc.Keyspace, t.Loc.Partition} }

// taskState is a task's record; guarded by Transfers.mu.
type taskState struct {
	task    TransferTask
	status  TransferStatus
	running bool
	cancel  context.CancelFunc // of the running attempt
	// unwanted: Set dropped the task while it ran; forgotten once it exits.
	unwanted bool
	done     bool
	fails    int       // consecutive failed attempts
	next     int       // index of the source to try first
	retryAt  time.Time // no attempt before
	started  time.Time // start of the current stream, for the rate
	streamed uint64    // bytes of the current stream
}

// Transfers pulls the partitions this node is becoming an owner of: Set
// says which, Run does the work, Status reports it.
type Transfers struct {
	cfg    TransferConfig
	bucket *tokenBucket
	wake   chan struct{}
	mu     struct {
		sync.Mutex
		tasks map[taskKey]*taskState
		gens  map[uint64]bool // generations of the wanted tasks
		// finished: tasks done in a generation still wanted, so a task
		// dropped and wanted again in that generation is not rerun.
		finished map[taskKey]bool
		// sweep: delete the checkpoints of generations no longer wanted,
		// once none of their tasks runs.
		sweep bool
	}
}

// NewTransfers returns a transfer runner with no tasks; Set gives it some
// and Run works on them. Peers, Merge and Checkpoints are required.
func NewTransfers(cfg TransferConfig) *Transfers {
	if cfg.Peers == nil || cfg.Merge == nil || cfg.Checkpoints == nil {
		panic("repair: NewTransfers needs Peers, Merge and Checkpoints")
	}
	cfg.setDefaults()
	t := &Transfers{cfg: cfg, bucket: perSecond(cfg.BytesPerSecond, cfg.Now), wake: make(chan struct{}, 1)}
	t.mu.tasks = map[taskKey]*taskState{}
	t.mu.gens = map[uint64]bool{}
	t.mu.finished = map[taskKey]bool{}
	return t
}

func (t *Transfers) signal() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// Set replaces the tasks wanted now. Running tasks no longer wanted are
// cancelled; tasks already done in their generation are not run again;
// the checkpoints of generations no longer wanted are deleted (by Run,
// once none of their tasks runs).
func (t *Transfers) Set(tasks []TransferTask) {
	wanted := make(map[taskKey]TransferTask, len(tasks))
	gens := map[uint64]bool{}
	for _, task := range tasks {
		wanted[keyOf(task)] = task
		gens[task.Generation] = true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, st := range t.mu.tasks {
		if _, ok := wanted[k]; ok {
			continue
		}
		if !st.running {
			delete(t.mu.tasks, k)
			continue
		}
		st.unwanted = true
		st.cancel()
	}
	for k := range t.mu.finished {
		if !gens[k.gen] {
			delete(t.mu.finished, k)
		}
	}
	for k, task := range wanted {
		st := t.mu.tasks[k]
		if st == nil {
			st = &taskState{status: TransferStatus{
				Keyspace: task.Keyspace, Partition: task.Loc.Partition, Generation: task.Generation, State: TransferWaiting,
			}}
			if t.mu.finished[k] {
				st.done = true
				st.status.State = TransferDone
			}
			t.mu.tasks[k] = st
		}
		st.task = task
		st.unwanted = false
	}
	t.mu.gens = gens
	t.mu.sweep = true
	t.signal()
}

// Status reports every wanted task, by keyspace, partition and generation.
func (t *Transfers) Status() []TransferStatus {
	t.mu.Lock()
	out := make([]TransferStatus, 0, len(t.mu.tasks))
	for _, st := range t.mu.tasks {
		if !st.unwanted {
			out = append(out, st.status)
		}
	}
	t.mu.Unlock()
	slices.SortFunc(out, func(a, b TransferStatus) int {
		return cmp.Or(cmp.Compare(a.Keyspace, b.Keyspace), cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Generation, b.Generation))
	})
	return out
}

// Run works on the tasks until ctx ends, at most Parallel at a time; every
// goroutine it starts has stopped when it returns. Run one Run at a time.
func (t *Transfers) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if ctx.Err() != nil {
			return
		}
		t.sweep()
		next := t.schedule(ctx, &wg)
		if next <= 0 {
			next = time.Hour
		}
		timer.Reset(next)
		select {
		case <-ctx.Done():
			return
		case <-t.wake:
		case <-timer.C:
		}
	}
}

// schedule starts the tasks that are due while slots are free, and
// returns how long until the next retry is due (0: none pending).
func (t *Transfers) schedule(ctx context.Context, wg *sync.WaitGroup) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.cfg.Now()
	running := 0
	keys := make([]taskKey, 0, len(t.mu.tasks))
	for k, st := range t.mu.tasks {
		if st.running {
			running++
		}
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b taskKey) int {
		return cmp.Or(cmp.Compare(a.gen, b.gen), cmp.Compare(a.ks, b.ks), cmp.Compare(a.p, b.p))
	})
	var next time.Duration
	soonest := func(d time.Duration) {
		if next == 0 || d < next {
			next = d
		}
	}
	for _, k := range keys {
		st := t.mu.tasks[k]
		if st.running || st.done || st.unwanted {
			continue
		}
		if st.retryAt.After(now) {
			soonest(st.retryAt.Sub(now))
			continue
		}
		if running >= t.cfg.Parallel {
			continue // a finishing task wakes Run
		}
		src, idx, ok := t.pickSource(st)
		if !ok {
			st.status.State = TransferWaiting
			st.status.Err = fmt.Sprintf("no live source among %v: waiting for one to come back", st.task.Sources)
			st.retryAt = now.Add(transferMaxBackoff)
			soonest(transferMaxBackoff)
			continue
		}
		running++
		actx, cancel := context.WithCancel(ctx)
		st.running, st.cancel = true, cancel
		st.status.Source = src
		task := st.task
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cancel()
			err := t.attempt(actx, k, task, src)
			t.finish(k, idx, err, actx.Err() != nil)
		}()
	}
	return next
}

// pickSource returns the first live source from the task's rotation point.
func (t *Transfers) pickSource(st *taskState) (string, int, bool) {
	n := len(st.task.Sources)
	for i := range n {
		idx := (st.next + i) % n
		if src := st.task.Sources[idx]; t.cfg.Alive == nil || t.cfg.Alive(src) {
			return src, idx, true
		}
	}
	return "", 0, false
}

// finish records the end of an attempt that used source idx.
func (t *Transfers) finish(k taskKey, idx int, err error, cancelled bool) {
	defer t.signal()
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.mu.tasks[k]
	st.running, st.cancel = false, nil
	switch {
	case st.unwanted:
		delete(t.mu.tasks, k)
		if err == nil && t.mu.gens[k.gen] {
			t.mu.finished[k] = true // reported done: not rerun in its generation
		}
	case err == nil:
		st.done, st.fails = true, 0
		st.status.State, st.status.Err = TransferDone, ""
		t.mu.finished[k] = true
	case cancelled:
		st.status.State = TransferWaiting
	default:
		st.fails++
		if n := len(st.task.Sources); n > 0 {
			st.next = (idx + 1) % n // the next source gets the next attempt
		}
		backoff := min(transferMinBackoff<<min(st.fails-1, 16), transferMaxBackoff)
		st.retryAt = t.cfg.Now().Add(backoff)
		st.status.State, st.status.Err = TransferFailed, err.Error()
		t.cfg.Logger.Warn("partition transfer failed; retrying", "keyspace", st.task.Keyspace, "partition", k.p,
			"generation", k.gen, "source", st.status.Source, "retry_in", backoff, "err", err)
	}
}

// update changes a task's record under the lock.
func (t *Transfers) update(k taskKey, fn func(st *taskState)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if st := t.mu.tasks[k]; st != nil {
		fn(st)
	}
}

// pageTimeout bounds one page of keyspace: Timeout, plus the time the
// most a page can carry takes at minTransferRate (a fixed bound failed
// every attempt at a page ending with a large set over a slow link, from
// every source, and the transition never ended).
func (t *Transfers) pageTimeout(keyspace string) time.Duration {
	set := 0
	if t.cfg.SetBytes != nil {
		set = t.cfg.SetBytes(keyspace)
	}
	if set <= 0 {
		set = version.MaxSetBytes
	}
	return sizedTimeout(t.cfg.Timeout, t.cfg.PageBytes+set)
}

// attempt streams a task from src (from its checkpoint), catches up and
// reports it done.
func (t *Transfers) attempt(ctx context.Context, k taskKey, task TransferTask, src string) error {
	name := checkpointName(task)
	after, err := t.readCheckpoint(name)
	if err != nil {
		return fmt.Errorf("read checkpoint %s: %w", name, err)
	}
	refused := 0 // keys this node refused to merge
	t.update(k, func(st *taskState) {
		st.status.State, st.status.Err = TransferStreaming, ""
		st.started, st.streamed = t.cfg.Now(), 0
	})
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		cctx, cancel := context.WithTimeout(ctx, t.pageTimeout(task.Keyspace))
		resp, err := t.cfg.Peers.ScanPartition(cctx, src, &internalv1.ScanPartitionRequest{
			Keyspace: task.Keyspace, Partition: uint32(task.Loc.Partition), After: after,
			MaxKeys: uint32(t.cfg.PageKeys), MaxBytes: uint32(t.cfg.PageBytes),
		})
		cancel()
		if err != nil {
			return fmt.Errorf("scan partition from %s after %q: %w", src, after, err)
		}
		sets, n, err := decodePage(after, resp, task.Loc.Partition, t.cfg.Partition)
		if err != nil {
			return fmt.Errorf("page from %s after %q refused, nothing of it stored: %w", src, after, err)
		}
		entries := resp.GetEntries()
		for i, e := range entries {
			if err := t.cfg.Merge.MergeLocal(task.Keyspace, e.GetKey(), sets[i]); err != nil {
				if replica.Refused(err) {
					// This node refuses the key (a version too far ahead
					// of its clock): the rest of the partition moves. The
					// source keeps its copy — it lets a partition go only
					// once an exchange pushed everything to the replicas —
					// and anti-entropy brings the key once it is taken.
					refused++
					t.cfg.Logger.Warn("partition transfer: a key refused, the rest goes on", "keyspace", task.Keyspace,
						"partition", task.Loc.Partition, "key", fmt.Sprintf("%.64q", e.GetKey()), "err", err)
					continue
				}
				return fmt.Errorf("merge %q: %w", e.GetKey(), err)
			}
		}
		if len(entries) > 0 {
			// Durable first, then the checkpoint: a crash between the two
			// pulls the page again, never skips it.
			if err := t.cfg.Merge.Sync(); err != nil {
				return fmt.Errorf("sync merged page: %w", err)
			}
			after = entries[len(entries)-1].GetKey()
			// The last page needs no checkpoint: the catch-up and the
			// report follow (a crash before the report redoes one page).
			if !resp.GetDone() {
				if err := t.cfg.Checkpoints.PutMeta(name, after); err != nil {
					return fmt.Errorf("write checkpoint %s: %w", name, err)
				}
			}
			t.update(k, func(st *taskState) {
				st.fails = 0
				st.status.Keys += uint64(len(entries))
				st.status.Bytes += uint64(n)
				st.streamed += uint64(n)
			})
		}
		if err := t.bucket.wait(ctx, n); err != nil {
			return err
		}
		now := t.cfg.Now()
		t.update(k, func(st *taskState) {
			if el := now.Sub(st.started).Seconds(); el > 0 {
				st.status.BytesPerSecond = float64(st.streamed) / el
			}
		})
		if resp.GetDone() {
			break
		}
	}
	t.update(k, func(st *taskState) { st.status.State = TransferCatchingUp })
	if t.cfg.CatchUp != nil {
		if err := t.cfg.CatchUp(ctx, task); err != nil {
			if !replica.Refused(err) {
				return fmt.Errorf("catch up with %v: %w", task.Sources, err)
			}
			// Only keys refused, the rest caught up: as for the pages.
			t.cfg.Logger.Warn("partition transfer: keys refused while catching up, the rest caught up", "keyspace", task.Keyspace,
				"partition", task.Loc.Partition, "err", err)
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if t.cfg.Done != nil {
		t.cfg.Done(task)
	}
	// The checkpoint stays until its generation is no longer wanted
	// (sweep): Done may only queue the report, and a restart before the
	// report is committed resumes from the last page, not from the first.
	t.cfg.Logger.Info("partition transfer done", "keyspace", task.Keyspace, "partition", task.Loc.Partition, "generation", task.Generation, "source", src, "keys_refused", refused)
	return nil
}

// decodePage checks a page and decodes its sets: keys non-empty, in
// increasing order after `after`, every set decodable, and a page that is
// not the last not empty. It returns the sets and the page's bytes.
func decodePage(after []byte, resp *internalv1.ScanPartitionResponse, part int, partition func([]byte) int) ([]version.Set, int, error) {
	entries := resp.GetEntries()
	if len(entries) == 0 && !resp.GetDone() {
		return nil, 0, errors.New("the source sent an empty page that is not the last (it would never end)")
	}
	sets := make([]version.Set, len(entries))
	n := 0
	prev := after
	for i, e := range entries {
		key := e.GetKey()
		if len(key) == 0 || len(key) > replica.MaxKeyLen {
			return nil, 0, fmt.Errorf("entry %d: key length %d out of range", i, len(key))
		}
		if len(prev) > 0 && bytes.Compare(key, prev) <= 0 {
			return nil, 0, fmt.Errorf("entry %d: key %q not after %q (pages must be in key order)", i, key, prev)
		}
		if partition != nil && partition(key) != part {
			return nil, 0, fmt.Errorf("entry %d: key %q is of partition %d, not %d", i, key, partition(key), part)
		}
		set, err := version.DecodeSet(e.GetSet())
		if err != nil {
			return nil, 0, fmt.Errorf("entry %d (key %q): undecodable set: %w", i, key, err)
		}
		sets[i] = set
		n += len(key) + len(e.GetSet())
		prev = key
	}
	return sets, n, nil
}

// readCheckpoint returns the last key merged of a task (nil: none yet).
func (t *Transfers) readCheckpoint(name string) ([]byte, error) {
	var after []byte
	err := t.cfg.Checkpoints.ScanMeta(name, func(got string, value []byte) error {
		if got == name {
			after = bytes.Clone(value)
		}
		return nil
	})
	return after, err
}

// sweep deletes the checkpoints of generations no longer wanted, once none
// of their tasks runs. A failure is logged and retried at the next Set.
func (t *Transfers) sweep() {
	t.mu.Lock()
	if !t.mu.sweep {
		t.mu.Unlock()
		return
	}
	for _, st := range t.mu.tasks {
		if st.running && !t.mu.gens[st.task.Generation] {
			t.mu.Unlock()
			return // its exit wakes Run
		}
	}
	t.mu.sweep = false
	gens := maps.Clone(t.mu.gens)
	t.mu.Unlock()
	var stale []string
	err := t.cfg.Checkpoints.ScanMeta(checkpointPrefix, func(name string, _ []byte) error {
		g, _, _ := strings.Cut(strings.TrimPrefix(name, checkpointPrefix), "/")
		if gen, err := strconv.ParseUint(g, 10, 64); err != nil || !gens[gen] {
			stale = append(stale, name)
		}
		return nil
	})
	for _, name := range stale {
		err = errors.Join(err, t.cfg.Checkpoints.DeleteMeta(name))
	}
	if err != nil {
		t.cfg.Logger.Warn("delete stale transfer checkpoints", "err", err)
	}
}
