package drill

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/node"
)

// The restore drill: a cluster's snapshots are restored onto new
// machines. A local cluster takes writes, every node snapshots its data
// while the writes go on, the snapshots are downloaded off the nodes
// (`meridian snapshot download`, over the admin API of one node), the
// cluster stops, each snapshot is restored into a new directory (the new
// machine) with `meridian snapshot restore --from`, and a new cluster
// starts from them on new ports, certificates and secret. What it checks: every write
// acknowledged before the snapshot began reads back at ALL with its value,
// no write sent after every node's snapshot was taken does, each
// key lands on the same replicas as before, the new cluster has its own ID
// and records the one it was restored from, and it takes writes.

// RestoreDrill names the drill.
const RestoreDrill = "restore"

// RestoreConfig configures a restore drill.
type RestoreConfig struct {
	// Keyspace of the writes (created on the old cluster).
	Keyspace string
	RF       int
	// Before is how long the writes run before the snapshot, After how
	// long they go on once every node's snapshot was taken.
	Before, After time.Duration
	// Rate is writes per second per client DC, each a new key at QUORUM.
	Rate      float64
	OpTimeout time.Duration
	// Log receives progress lines (default: discarded).
	Log io.Writer
}

func (c *RestoreConfig) fill() {
	if c.Keyspace == "" {
		c.Keyspace = "drill"
	}
	if c.RF <= 0 {
		c.RF = 3
	}
	if c.Before <= 0 {
		c.Before = 5 * time.Second
	}
	if c.After <= 0 {
		c.After = 3 * time.Second
	}
	if c.Rate <= 0 {
		c.Rate = 50
	}
	if c.OpTimeout <= 0 {
		c.OpTimeout = 2 * time.Second
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
}

// RestoreReport is what a restore drill measured and its verdict.
type RestoreReport struct {
	Drill string `json:"drill"`
	Nodes int    `json:"nodes"`
	// Snapshot is the snapshot's name.
	Snapshot     string `json:"snapshot"`
	OldCluster   string `json:"old_cluster"`
	OldEpoch     uint64 `json:"old_epoch"`
	NewCluster   string `json:"new_cluster"`
	NewEpoch     uint64 `json:"new_epoch"`
	RestoredFrom string `json:"restored_from"`
	// Seconds each step took: every node's snapshot, downloading them
	// off the nodes, restoring them, starting the new cluster until every
	// node is healthy.
	SnapshotSeconds float64 `json:"snapshot_seconds"`
	CopySeconds     float64 `json:"copy_seconds"`
	RestoreSeconds  float64 `json:"restore_seconds"`
	StartSeconds    float64 `json:"start_seconds"`
	// ServingSeconds is from the new cluster's start until reads at ALL
	// succeed from every DC (every node sees every other alive).
	ServingSeconds float64 `json:"serving_seconds"`
	// CopiedBytes is the size of the snapshots downloaded.
	CopiedBytes int64 `json:"copied_bytes"`
	// Writes acknowledged before the snapshot began (all must be found),
	// sent after every node's was taken (none may be found), and the
	// others, in flight while it was taken (either way).
	AckedBefore int `json:"acked_before"`
	FoundBefore int `json:"found_before"`
	AckedDuring int `json:"acked_during"`
	FoundDuring int `json:"found_during"`
	AckedAfter  int `json:"acked_after"`
	FoundAfter  int `json:"found_after"`
	// Missing are keys acknowledged before the snapshot and not found
	// (or found with another value), Resurrected keys sent after
	// it and found (the first 20 of each).
	Missing     []string `json:"missing,omitempty"`
	Resurrected []string `json:"resurrected,omitempty"`
	// PlacementChecked keys were compared; PlacementMoved of them have
	// other replicas in the new cluster.
	PlacementChecked int      `json:"placement_checked"`
	PlacementMoved   []string `json:"placement_moved,omitempty"`
	// WriteError is why a write to the new cluster failed ("": it did not).
	WriteError string   `json:"write_error,omitempty"`
	Pass       bool     `json:"pass"`
	Failures   []string `json:"failures,omitempty"`
}

// Judge sets the verdict from the measurements.
func (r *RestoreReport) Judge() {
	r.Failures = nil
	if r.AckedBefore == 0 {
		r.Failures = append(r.Failures, "no write was acknowledged before the snapshot: nothing was verified (is the cluster taking writes?)")
	}
	// Without a write sent after the snapshot, "none of them came back"
	// holds of nothing: the check that the restore brings back no later
	// write did not run.
	if r.AckedAfter == 0 {
		r.Failures = append(r.Failures, "no write was acknowledged after the snapshot: nothing verified of what must not come back (give a longer --after, or see why the writes failed: is the cluster taking writes?)")
	}
	if r.FoundBefore < r.AckedBefore {
		r.Failures = append(r.Failures, fmt.Sprintf("%d of %d writes acknowledged before the snapshot are missing after the restore (e.g. %s)",
			r.AckedBefore-r.FoundBefore, r.AckedBefore, strings.Join(r.Missing, ", ")))
	}
	if r.FoundAfter > 0 {
		r.Failures = append(r.Failures, fmt.Sprintf("%d writes sent after every node's snapshot was taken are in the restored cluster (e.g. %s)",
			r.FoundAfter, strings.Join(r.Resurrected, ", ")))
	}
	if r.NewCluster == "" || r.NewCluster == r.OldCluster {
		r.Failures = append(r.Failures, fmt.Sprintf("the restored cluster's ID is %q, the old one's %q: it must have its own", r.NewCluster, r.OldCluster))
	}
	if r.RestoredFrom != r.OldCluster {
		r.Failures = append(r.Failures, fmt.Sprintf("the restored cluster says it was restored from %q, not from %q", r.RestoredFrom, r.OldCluster))
	}
	if r.NewEpoch <= r.OldEpoch {
		r.Failures = append(r.Failures, fmt.Sprintf("the restored cluster's epoch %d is not past the old one's %d", r.NewEpoch, r.OldEpoch))
	}
	if len(r.PlacementMoved) > 0 {
		r.Failures = append(r.Failures, fmt.Sprintf("%d of %d keys have other replicas than before (e.g. %s)", len(r.PlacementMoved), r.PlacementChecked, strings.Join(r.PlacementMoved[:min(5, len(r.PlacementMoved))], ", ")))
	}
	if r.WriteError != "" {
		r.Failures = append(r.Failures, "the restored cluster refused a write: "+r.WriteError)
	}
	r.Pass = len(r.Failures) == 0
}

// WriteText prints the report for a person.
func (r *RestoreReport) WriteText(w io.Writer) {
	fmt.Fprintf(w, "restore drill: %d nodes, snapshot %s\n", r.Nodes, r.Snapshot)
	fmt.Fprintf(w, "  old cluster %s (epoch %d) -> new cluster %s (epoch %d, restored from %s)\n", r.OldCluster, r.OldEpoch, r.NewCluster, r.NewEpoch, orDash(r.RestoredFrom))
	fmt.Fprintf(w, "  snapshot %.1f s, download %.1f s (%.1f MiB), restore %.1f s; the new cluster healthy %.1f s after its start, reads at ALL from every DC after %.1f s\n",
		r.SnapshotSeconds, r.CopySeconds, float64(r.CopiedBytes)/(1<<20), r.RestoreSeconds, r.StartSeconds, r.ServingSeconds)
	fmt.Fprintf(w, "  writes acknowledged before the snapshot: %d, found %d\n", r.AckedBefore, r.FoundBefore)
	fmt.Fprintf(w, "  writes in flight while it was taken: %d, found %d (either is right)\n", r.AckedDuring, r.FoundDuring)
	fmt.Fprintf(w, "  writes sent after it: %d, found %d\n", r.AckedAfter, r.FoundAfter)
	fmt.Fprintf(w, "  placement: %d keys compared, %d moved\n", r.PlacementChecked, len(r.PlacementMoved))
	if r.Pass {
		fmt.Fprintln(w, "PASS")
		return
	}
	for _, f := range r.Failures {
		fmt.Fprintf(w, "  FAIL: %s\n", f)
	}
	fmt.Fprintln(w, "FAIL")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// ackedWrite is one write the old cluster acknowledged: sent at sent,
// acknowledged at acked.
type ackedWrite struct {
	dc          string
	key, value  string
	sent, acked time.Time
}

// RunRestore runs the restore drill on local clusters under spec.Dir
// (old/, backup/ and new/ below it): spec describes both clusters.
func RunRestore(ctx context.Context, cfg RestoreConfig, spec LocalSpec) (*RestoreReport, error) {
	cfg.fill()
	log := cfg.Log
	root := spec.Dir
	rep := &RestoreReport{Drill: RestoreDrill, Snapshot: "drill-restore"}
	// A previous restore drill's old cluster, downloaded snapshots or
	// restored data would each refuse this one part way: refuse it here,
	// naming the directory given.
	if err := refuseUsed(root, "old", "backup", "new"); err != nil {
		return nil, err
	}

	oldSpec := spec
	oldSpec.Dir = filepath.Join(root, "old")
	old, err := StartLocal(ctx, oldSpec)
	if err != nil {
		return nil, fmt.Errorf("start the cluster to snapshot: %w", err)
	}
	defer old.Close()
	env, closeOld, err := Connect(ctx, old.Target(), cfg.Keyspace, cfg.RF)
	if err != nil {
		return nil, err
	}
	closeEnv := sync.OnceFunc(closeOld)
	defer closeEnv()
	ids := slices.Sorted(func(yield func(string) bool) {
		for id := range env.Admin {
			if !yield(id) {
				return
			}
		}
	})
	rep.Nodes = len(ids)
	admin := env.Admin[ids[0]]

	// Writes, each to a new key, from a client in every DC.
	fmt.Fprintf(log, "writing for %s before the snapshot ...\n", cfg.Before)
	wctx, stopWrites := context.WithCancel(ctx)
	var (
		mu    sync.Mutex
		acked []ackedWrite
		wg    sync.WaitGroup
	)
	for _, dc := range env.Topology.DCs() {
		kv := env.KV[dc]
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(time.Duration(float64(time.Second) / cfg.Rate))
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-wctx.Done():
					return
				case <-tick.C:
				}
				k, v := fmt.Sprintf("restore-%s-%06d", dc, i), fmt.Sprintf("v%d@%s", i, dc)
				octx, cancel := context.WithTimeout(wctx, cfg.OpTimeout)
				sent := time.Now()
				_, err := kv.Put(octx, []byte(k), []byte(v), nil, kvv1.Level_LEVEL_QUORUM)
				cancel()
				if err == nil {
					mu.Lock()
					acked = append(acked, ackedWrite{dc: dc, key: k, value: v, sent: sent, acked: time.Now()})
					mu.Unlock()
				}
			}
		}()
	}
	stop := func() {
		stopWrites()
		wg.Wait()
	}
	if err := sleepCtx(ctx, cfg.Before); err != nil {
		stop()
		return nil, err
	}
	fmt.Fprintf(log, "every node snapshots its data (%s) while the writes go on ...\n", rep.Snapshot)
	snapStart := time.Now()
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	snap, err := admin.CreateSnapshot(sctx, &adminv1.CreateSnapshotRequest{Name: rep.Snapshot})
	cancel()
	snapEnd := time.Now()
	if err == nil && (len(snap.GetSnapshots()) != len(ids) || len(snap.GetUnreachable()) > 0 || len(snap.GetFailed()) > 0) {
		err = fmt.Errorf("%d of %d nodes took it (unreachable %v, failed %v)", len(snap.GetSnapshots()), len(ids), snap.GetUnreachable(), snap.GetFailed())
	}
	if err != nil {
		stop()
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	rep.SnapshotSeconds = snapEnd.Sub(snapStart).Seconds()
	if err := sleepCtx(ctx, cfg.After); err != nil {
		stop()
		return nil, err
	}
	stop()

	st, err := admin.Status(ctx, &adminv1.StatusRequest{})
	if err != nil {
		return nil, fmt.Errorf("status of the old cluster: %w", err)
	}
	rep.OldCluster, rep.OldEpoch = st.GetClusterId(), st.GetEpoch()
	// Where a sample of the keys lives, to compare after.
	sample := sampleWrites(acked, 100)
	placement := map[string][]string{}
	for _, w := range sample {
		reps, err := replicasOf(ctx, admin, cfg.Keyspace, w.key)
		if err != nil {
			return nil, fmt.Errorf("replicas of %s: %w", w.key, err)
		}
		placement[w.key] = reps
	}
	// The snapshots leave the machines while the cluster still runs, as
	// a backup does: over the admin API of one node, which relays the
	// others' files.
	backup := filepath.Join(root, "backup")
	fmt.Fprintf(log, "downloading %d snapshots to %s (meridian snapshot download) ...\n", len(ids), backup)
	t0 := time.Now()
	cf, err := node.ReadClusterFile(filepath.Join(oldSpec.Dir, "cluster.json"))
	if err != nil {
		return nil, err
	}
	out, err := runCLI(ctx, spec.Binary, "snapshot", "download", rep.Snapshot, "--to", backup, "--addr", old.Target().Nodes[0].AdminAddr,
		"--ca", cf.CA, "--cert", cf.ClientCert, "--key", cf.ClientKey, "--json")
	if err != nil {
		return nil, fmt.Errorf("download the snapshots: %w", err)
	}
	var dl struct {
		Snapshots []struct {
			Node  string `json:"node"`
			Bytes int64  `json:"bytes"`
		} `json:"snapshots"`
	}
	if err := json.Unmarshal(out, &dl); err != nil || len(dl.Snapshots) != len(ids) {
		return nil, fmt.Errorf("download the snapshots: %d of %d copied (%v): %s", len(dl.Snapshots), len(ids), err, out)
	}
	for _, d := range dl.Snapshots {
		rep.CopiedBytes += d.Bytes
	}
	rep.CopySeconds = time.Since(t0).Seconds()
	fmt.Fprintf(log, "stopping the old cluster ...\n")
	closeEnv()
	if err := old.Close(); err != nil {
		return nil, fmt.Errorf("stop the old cluster: %w", err)
	}

	newSpec := spec
	newSpec.Dir = filepath.Join(root, "new")
	fmt.Fprintf(log, "restoring each into an empty data directory under %s (meridian snapshot restore --from) ...\n", newSpec.Dir)
	t0 = time.Now()
	for _, id := range ids {
		out, err := runCLI(ctx, spec.Binary, "snapshot", "restore", "--from", filepath.Join(backup, id), "--data-dir", filepath.Join(newSpec.Dir, id), "--json")
		if err != nil {
			return nil, fmt.Errorf("restore %s: %w", id, err)
		}
		var res struct {
			Snapshot struct {
				Node string `json:"node"`
			} `json:"snapshot"`
		}
		if err := json.Unmarshal(out, &res); err != nil || res.Snapshot.Node != id {
			return nil, fmt.Errorf("restore %s: unexpected answer %s (%v)", id, out, err)
		}
	}
	rep.RestoreSeconds = time.Since(t0).Seconds()

	fmt.Fprintf(log, "starting the new cluster on new ports ...\n")
	started := time.Now()
	restored, err := StartLocal(ctx, newSpec)
	if err != nil {
		return nil, fmt.Errorf("start the restored cluster: %w", err)
	}
	defer restored.Close()
	rep.StartSeconds = time.Since(started).Seconds()
	env, closeNew, err := Connect(ctx, restored.Target(), cfg.Keyspace, cfg.RF)
	if err != nil {
		return nil, err
	}
	defer closeNew()
	admin = env.Admin[ids[0]]
	if st, err = admin.Status(ctx, &adminv1.StatusRequest{}); err != nil {
		return nil, fmt.Errorf("status of the restored cluster: %w", err)
	}
	rep.NewCluster, rep.NewEpoch, rep.RestoredFrom = st.GetClusterId(), st.GetEpoch(), st.GetRestoredFrom()

	// Healthy is not yet every node seeing every other alive (gossip):
	// wait until a read at ALL succeeds from every DC.
	fmt.Fprintf(log, "waiting until reads at ALL succeed from every DC ...\n")
	if len(acked) > 0 {
		for _, dc := range env.Topology.DCs() {
			if err := untilReads(ctx, env.KV[dc], acked[0], cfg.OpTimeout, time.Minute); err != nil {
				return nil, fmt.Errorf("the restored cluster does not serve reads at ALL from %s: %w", dc, err)
			}
		}
	}
	rep.ServingSeconds = time.Since(started).Seconds()
	fmt.Fprintf(log, "reading back %d acknowledged writes at ALL ...\n", len(acked))
	for i, w := range acked {
		if i > 0 && i%1000 == 0 {
			fmt.Fprintf(log, "  %d of %d read\n", i, len(acked))
		}
		found, err := readsBack(ctx, env.KV[w.dc], w, cfg.OpTimeout)
		if err != nil {
			return nil, fmt.Errorf("read %s back: %w", w.key, err)
		}
		// Before: acknowledged before the first snapshot began; after:
		// sent once every snapshot was taken. A write in flight across
		// either moment may or may not be in the snapshots.
		switch {
		case w.acked.Before(snapStart):
			rep.AckedBefore++
			if found {
				rep.FoundBefore++
			} else if len(rep.Missing) < 20 {
				rep.Missing = append(rep.Missing, w.key)
			}
		case w.sent.After(snapEnd):
			rep.AckedAfter++
			if found {
				rep.FoundAfter++
				if len(rep.Resurrected) < 20 {
					rep.Resurrected = append(rep.Resurrected, w.key)
				}
			}
		default:
			rep.AckedDuring++
			if found {
				rep.FoundDuring++
			}
		}
	}
	for _, w := range sample {
		reps, err := replicasOf(ctx, admin, cfg.Keyspace, w.key)
		if err != nil {
			return nil, fmt.Errorf("replicas of %s in the restored cluster: %w", w.key, err)
		}
		rep.PlacementChecked++
		if !slices.Equal(reps, placement[w.key]) {
			rep.PlacementMoved = append(rep.PlacementMoved, w.key)
		}
	}
	octx, cancel := context.WithTimeout(ctx, cfg.OpTimeout)
	if _, err := env.KV[env.Topology.DCs()[0]].Put(octx, []byte("restore-after"), []byte("v"), nil, kvv1.Level_LEVEL_QUORUM); err != nil {
		rep.WriteError = err.Error()
	}
	cancel()
	rep.Judge()
	return rep, nil
}

// runCLI runs the meridian binary and returns what it printed on
// stdout; a failure carries its stderr.
func runCLI(ctx context.Context, bin string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = childEnv(os.Environ())
	out, err := cmd.Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out, fmt.Errorf("%v: %s", err, strings.TrimSpace(string(ee.Stderr)))
	}
	return out, err
}

// readsBack reads w's key at ALL: found means its value is among the
// key's values. A failed read is tried again for a few seconds.
func readsBack(ctx context.Context, kv KV, w ackedWrite, timeout time.Duration) (bool, error) {
	var last error
	for attempt := range 5 {
		if attempt > 0 {
			if err := sleepCtx(ctx, time.Duration(attempt)*200*time.Millisecond); err != nil {
				return false, err
			}
		}
		octx, cancel := context.WithTimeout(ctx, timeout)
		vals, _, err := kv.Get(octx, []byte(w.key), kvv1.Level_LEVEL_ALL)
		cancel()
		if err == nil {
			return slices.ContainsFunc(vals, func(v []byte) bool { return string(v) == w.value }), nil
		}
		last = err
	}
	return false, last
}

// untilReads polls a read of w's key at ALL until one succeeds, for up
// to limit.
func untilReads(ctx context.Context, kv KV, w ackedWrite, timeout, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		octx, cancel := context.WithTimeout(ctx, timeout)
		_, _, err := kv.Get(octx, []byte(w.key), kvv1.Level_LEVEL_ALL)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// replicasOf lists a key's preference list, in order.
func replicasOf(ctx context.Context, admin adminv1.AdminClient, keyspace, key string) ([]string, error) {
	resp, err := admin.Endpoints(ctx, &adminv1.EndpointsRequest{Keyspace: keyspace, Key: []byte(key)})
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, r := range resp.GetReplicas() {
		ids = append(ids, r.GetNode())
	}
	return ids, nil
}

// sampleWrites picks up to n writes spread over all of them.
func sampleWrites(ws []ackedWrite, n int) []ackedWrite {
	if len(ws) <= n {
		return ws
	}
	out := make([]ackedWrite, 0, n)
	for i := range n {
		out = append(out, ws[i*len(ws)/n])
	}
	return out
}

// sleepCtx waits d, or less if ctx ends first (its error).
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
