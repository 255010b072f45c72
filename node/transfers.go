package node

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/placement"
	"github.com/meridiankv/meridian/repair"
	"github.com/meridiankv/meridian/replica"
)

// Partition transfers during a committed change: this node pulls every
// partition it is a pending replica of from a current replica, catches
// up with an anti-entropy pass, and reports the partition through the
// metadata log, which switches it once every new replica reported. When
// no change is in progress, data of partitions this node no longer
// replicates (and of dropped keyspaces) is deleted.

type transferGlue struct {
	n  *Node
	rt *repair.Transfers

	// apply serializes changed, whole (its tasks and the runner's set
	// together), and applied is the epoch of the newest state it took: at
	// start, Start's cached state and the log's newer one can arrive on
	// two goroutines, and the older must not be set last.
	apply   sync.Mutex
	applied uint64

	mu        sync.Mutex
	gen       uint64
	remaining map[int]int // partition → tasks not done yet
	// finished are the tasks of gen done here: a new state of the same
	// generation lists them again until the partition is reported, but
	// the runner does not run them again (nor call done).
	finished  map[replica.Loc]bool
	reported  map[int]bool // partitions proposed done this generation
	toReport  []int        // partitions done, waiting for the reporter
	reporting bool         // a reporter goroutine runs
	cleaning  bool
	cleanedAt uint64 // the epoch whose clean-up finished, keeping nothing
	// cleanAgain: a clean-up was asked for while one ran; retrying: a
	// retry is scheduled, cleanupWait after the last pass that did not
	// finish (doubling up to cleanupMaxWait).
	cleanAgain bool
	// clean runs one clean-up pass (Node.cleanup; tests replace it).
	clean       func() bool
	retrying    bool
	cleanupWait time.Duration
	// spawned counts the glue's own goroutines (reports, clean-up), which
	// start from the metadata log's callbacks: they are waited for by
	// stop, after the log is closed, not by the node's WaitGroup (an Add
	// racing with the node's Wait).
	spawned sync.WaitGroup
	stopped bool
}

// spawn runs fn in a goroutine unless the glue is stopped.
func (g *transferGlue) spawn(fn func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return
	}
	g.spawned.Add(1)
	go func() {
		defer g.spawned.Done()
		fn()
	}()
}

// stop waits for the glue's goroutines (they end with the node's run
// context) and starts no more.
func (g *transferGlue) stop() {
	g.mu.Lock()
	g.stopped = true
	g.mu.Unlock()
	g.spawned.Wait()
}

// startTransfers wires the transfer runner to the metadata.
func (n *Node) startTransfers(ctx context.Context) {
	g := &transferGlue{n: n, remaining: map[int]int{}, finished: map[replica.Loc]bool{}, reported: map[int]bool{}, clean: n.cleanup}
	g.rt = repair.NewTransfers(repair.TransferConfig{
		Peers:       n.faults,
		Merge:       n.coord,
		Checkpoints: n.store,
		Alive:       g.sourceAlive,
		Partition:   func(key []byte) int { return n.Topology().Ring.Partition(key) },
		SetBytes: func(keyspace string) int {
			if ks, ok := n.Topology().Keyspace(keyspace); ok {
				return ks.Limits.MaxBytes
			}
			return 0
		},
		CatchUp: func(ctx context.Context, t repair.TransferTask) error {
			ae := n.ae.Load()
			if ae == nil {
				return errNotRunning
			}
			// The live sources: a source that is down (or dead and being
			// replaced or removed) cannot hold the move back; what only it
			// holds reaches the new replica through anti-entropy once it is
			// back, as for any replica that was down.
			var live []string
			for _, s := range t.Sources {
				if g.sourceAlive(s) {
					live = append(live, s)
				}
			}
			if len(live) == 0 {
				return fmt.Errorf("no live source among %v to catch up with", t.Sources)
			}
			_, err := ae.SyncWith(ctx, t.Keyspace, t.Loc.Partition, live)
			return err
		},
		Done:           g.done,
		BytesPerSecond: n.cfg.TransferBytesPerSecond,
		Parallel:       8,
		Logger:         n.log,
	})
	n.transfers.Store(g)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		g.rt.Run(ctx)
	}()
	fn := g.changed
	n.onMeta.Store(&fn)
	// Resume transfers from the cached state at once; clean-up (and
	// dropping stale checkpoints) waits for a state from the log.
	if topo := n.Topology(); topo.Agreed() && topo.Meta.Transition != nil {
		g.changed(topo.Meta, topo)
	} else if topo.Agreed() {
		// A pass interrupted by the last stop (or kept partitions) would
		// otherwise wait for the next epoch: one runs a little after the
		// start, once the log had time to bring newer states.
		g.retryCleanup()
	}
}

// sourceAlive: a node to pull from must be known alive through gossip
// (a node that joined after a source died has never heard of it, and
// would otherwise think it alive) and have a known address.
func (g *transferGlue) sourceAlive(id string) bool {
	if id == g.n.cfg.ID || !g.n.Alive(id) {
		return false
	}
	if _, ok := g.n.book.get(id); !ok {
		return false
	}
	return g.n.gossip != nil && g.n.gossip.Alive(id)
}

// Transfers reports the partition transfers this node receives.
func (n *Node) Transfers() []repair.TransferStatus {
	g := n.transfers.Load()
	if g == nil {
		return nil
	}
	return g.rt.Status()
}

// changed recomputes the wanted transfers from a newly agreed state
// (one older than a state already taken is ignored).
func (g *transferGlue) changed(st *membership.MetaState, topo *membership.Topology) {
	g.apply.Lock()
	defer g.apply.Unlock()
	if st.Epoch < g.applied {
		return
	}
	g.applied = st.Epoch
	tr := st.Transition
	if tr == nil {
		g.rt.Set(nil)
		g.maybeCleanup(st.Epoch)
		return
	}
	self := g.n.cfg.ID
	var tasks []repair.TransferTask
	for _, name := range topo.KeyspaceNames() {
		ks := topo.Keyspaces[name]
		for _, p := range tr.Moving {
			if tr.IsDone(p) || slices.Contains(tr.Reported[p], self) {
				continue
			}
			if !slices.ContainsFunc(ks.Table.Pending(p), func(r placement.Replica) bool { return r.Node == self }) {
				continue
			}
			var local, remote []string
			for _, r := range ks.Table.Replicas(p) {
				switch {
				case r.Node == self:
				case r.DC == g.n.self.DC:
					local = append(local, r.Node)
				default:
					remote = append(remote, r.Node)
				}
			}
			tasks = append(tasks, repair.TransferTask{Keyspace: name, Loc: replica.Loc{Keyspace: ks.ID, Partition: p},
				Sources: append(local, remote...), Generation: tr.Generation})
		}
	}
	g.mu.Lock()
	if g.gen != tr.Generation {
		g.gen, g.finished, g.reported, g.toReport = tr.Generation, map[replica.Loc]bool{}, map[int]bool{}, nil
	}
	remaining := map[int]int{}
	for _, t := range tasks {
		if !g.finished[t.Loc] {
			remaining[t.Loc.Partition]++
		}
	}
	g.remaining = remaining
	g.mu.Unlock()
	g.rt.Set(tasks)
}

// done counts a finished task; the last one of a partition reports it.
func (g *transferGlue) done(t repair.TransferTask) {
	g.mu.Lock()
	if t.Generation != g.gen || g.finished[t.Loc] {
		g.mu.Unlock()
		return
	}
	g.finished[t.Loc] = true
	g.remaining[t.Loc.Partition]--
	last := g.remaining[t.Loc.Partition] <= 0 && !g.reported[t.Loc.Partition]
	if last {
		g.reported[t.Loc.Partition] = true
	}
	g.mu.Unlock()
	if !last {
		return
	}
	// Reports coalesce: partitions finished while one report is in flight
	// go together in the next (each still switches in one log entry).
	g.mu.Lock()
	g.toReport = append(g.toReport, t.Loc.Partition)
	start := !g.reporting
	g.reporting = true
	g.mu.Unlock()
	if start {
		g.spawn(g.report)
	}
}

// current reports whether gen is still the generation the glue works on.
func (g *transferGlue) current(gen uint64) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.gen == gen
}

// report proposes the finished partitions until none is left.
func (g *transferGlue) report() {
	n := g.n
	for {
		g.mu.Lock()
		parts, gen := g.toReport, g.gen
		g.toReport = nil
		if len(parts) == 0 || n.runCtx.Err() != nil {
			g.reporting = false
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		for attempt := 1; n.runCtx.Err() == nil && g.current(gen); attempt++ {
			ctx, cancel := context.WithTimeout(n.runCtx, 15*time.Second)
			_, err := n.propose(ctx, membership.Command{Kind: membership.CmdTransferDone, Generation: gen, Node: n.cfg.ID, Parts: parts})
			cancel()
			if err == nil {
				break
			}
			if reportRefused(err) {
				n.log.Warn("transfer report refused", "partitions", parts, "generation", gen, "err", err)
				break
			}
			// Anything else (no leader, a forward that timed out) may
			// not have reached the log: the report is idempotent, so it
			// goes again; dropped, the transition would wait for ever.
			level := slog.LevelDebug
			if attempt == 1 {
				level = slog.LevelWarn
			}
			n.log.Log(n.runCtx, level, "transfer report failed; retrying until it is taken", "partitions", parts, "generation", gen, "attempt", attempt, "err", err)
			select {
			case <-n.runCtx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
}

// reportRefused tells a refusal of a transfer report (by the state:
// another generation by now; or by the leader) from a failure to reach
// the log: sending it again would not change a refusal.
func reportRefused(err error) bool {
	switch status.Code(err) {
	case codes.FailedPrecondition, codes.InvalidArgument, codes.NotFound, codes.PermissionDenied:
		return true
	}
	return false
}

// Clean-up passes that did not finish (a partition kept until its
// replicas can be synced, a newer epoch, an error) are retried after
// cleanupMinWait, doubling up to cleanupMaxWait; so is the first pass
// after a start (the log may not bring a new epoch for a long time).
const (
	cleanupMinWait = 10 * time.Second
	cleanupMaxWait = 5 * time.Minute
)

// maybeCleanup deletes, in the background, the partitions this node no
// longer replicates once no change is in progress. Asked while a pass
// runs, it runs again after it.
func (g *transferGlue) maybeCleanup(epoch uint64) {
	g.mu.Lock()
	if g.cleaning {
		g.cleanAgain = true
		g.mu.Unlock()
		return
	}
	if g.cleanedAt == epoch {
		g.mu.Unlock()
		return
	}
	g.cleaning = true
	g.mu.Unlock()
	g.spawn(func() {
		done := g.clean()
		g.mu.Lock()
		g.cleaning = false
		again := g.cleanAgain
		g.cleanAgain = false
		if done {
			g.cleanedAt, g.cleanupWait = epoch, 0
		}
		g.mu.Unlock()
		switch {
		case again:
			g.maybeCleanup(g.n.Topology().Epoch)
		case !done:
			g.retryCleanup()
		}
	})
}

// retryCleanup runs the clean-up again after a wait (unless a retry is
// already scheduled).
func (g *transferGlue) retryCleanup() {
	g.mu.Lock()
	if g.retrying {
		g.mu.Unlock()
		return
	}
	g.retrying = true
	g.cleanupWait = min(max(2*g.cleanupWait, cleanupMinWait), cleanupMaxWait)
	wait := g.cleanupWait
	g.mu.Unlock()
	g.spawn(func() {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-g.n.runCtx.Done():
		case <-t.C:
		}
		g.mu.Lock()
		g.retrying = false
		g.mu.Unlock()
		if g.n.runCtx.Err() == nil {
			g.maybeCleanup(g.n.Topology().Epoch)
		}
	})
}

// cleanup drops local data no keyspace places on this node. It reports
// whether it finished, keeping nothing it should drop (nothing to do
// during a transition, which ends at a new epoch, counts as finished).
func (n *Node) cleanup() (done bool) {
	topo := n.Topology()
	if !topo.Agreed() || topo.Meta.Transition != nil {
		return true
	}
	locs, err := n.store.Partitions()
	if err != nil {
		n.log.Warn("list partitions for clean-up", "err", err)
		return false
	}
	byID := map[uint32]*membership.Keyspace{}
	for _, ks := range topo.Keyspaces {
		byID[ks.ID] = ks
	}
	dropped, done := 0, true
	unknown := map[uint32]int{} // keyspace storage ID -> partitions kept
	defer func() {
		if dropped > 0 {
			n.log.Info("deleted data this node no longer replicates", "keys", dropped, "epoch", topo.Epoch)
		}
		if len(unknown) > 0 {
			n.log.Warn("keeping data of keyspaces the cluster metadata neither lists nor records as dropped (not served): most likely this node was restored from a snapshot newer than the one the cluster's metadata came from; restore every node from snapshots taken together to serve it",
				"keyspace_ids", slices.Sorted(maps.Keys(unknown)), "epoch", topo.Epoch)
		}
	}()
	for _, loc := range locs {
		if n.runCtx.Err() != nil {
			return false
		}
		ks, ok := byID[loc.Keyspace]
		if !ok && !slices.Contains(topo.Meta.DroppedKeyspaces, loc.Keyspace) {
			// Not dropped: a keyspace created after the metadata this
			// cluster runs by (a restore from snapshots of different
			// epochs). Its data is the only copy this node knows of.
			unknown[loc.Keyspace]++
			continue
		}
		if ok && loc.Partition < topo.Ring.Partitions() && slices.ContainsFunc(ks.Table.Replicas(loc.Partition), func(r placement.Replica) bool { return r.Node == n.cfg.ID }) {
			continue
		}
		if ok && loc.Partition < topo.Ring.Partitions() {
			// Before letting go, make sure the replicas hold everything this
			// copy does: a write acknowledged here alone in the last moments
			// of the move is pushed to them, not deleted with the copy.
			var peers []string
			for _, r := range ks.Table.Replicas(loc.Partition) {
				peers = append(peers, r.Node)
			}
			ae := n.ae.Load()
			if ae == nil {
				return false
			}
			if _, err := ae.SyncBeforeDrop(n.runCtx, ks.Name, loc.Partition, peers); err != nil {
				n.log.Info("keeping a partition this node no longer replicates until its replicas can be synced; retrying later", "keyspace", ks.Name, "partition", loc.Partition, "err", err)
				done = false
				continue
			}
		}
		// Checked again against the newest topology right before the drop.
		if cur := n.Topology(); cur.Epoch != topo.Epoch {
			return false
		}
		keys, err := n.store.DropPartition(loc)
		if err != nil {
			n.log.Warn("drop a partition this node no longer replicates", "keyspace_id", loc.Keyspace, "partition", loc.Partition, "err", err)
			done = false
			continue
		}
		dropped += keys
	}
	return done
}
