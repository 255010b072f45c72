package node_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/node"
)

// TestSnapshotAndRestore: every node snapshots its data; writes after the
// snapshot are gone once every node is restored from it (the cluster as
// it was), each node comes back under a new incarnation, the data it
// replaced is kept aside, and the cluster takes writes again. Names are
// checked, a name is not reused, and a running node's data is never
// replaced.
func TestSnapshotAndRestore(t *testing.T) {
	dir := t.TempDir()
	l := startCluster(t, node.LocalSpec{Dir: dir, NodesPerDC: 3})
	ctx := ctxT(t)
	c := dial(t, l.Nodes()[0].Addr())
	all := lvl(kvv1.Level_LEVEL_ALL)
	put := func(c kvv1.KVClient, k, v string, cctx []byte) []byte {
		t.Helper()
		resp, err := c.Put(ctx, &kvv1.PutRequest{Key: []byte(k), Value: []byte(v), Context: cctx, Consistency: all})
		if err != nil {
			t.Fatalf("put %s: %v", k, err)
		}
		return resp.GetContext()
	}
	k1 := put(c, "k1", "v1", nil)

	actors := map[string]string{}
	for _, n := range l.Nodes() {
		info, err := n.Snapshot("s1")
		if err != nil {
			t.Fatalf("snapshot of %s: %v", n.ID(), err)
		}
		if info.Bytes == 0 || info.Node != n.ID() || info.Actor != n.Store().Actor() {
			t.Errorf("snapshot %+v", info)
		}
		list, err := n.Snapshots()
		if err != nil || len(list) != 1 || list[0].Name != "s1" {
			t.Errorf("snapshots of %s: %+v %v", n.ID(), list, err)
		}
		actors[n.ID()] = n.Store().Actor()
	}
	n1 := l.Nodes()[0]
	if _, err := n1.Snapshot("s1"); status.Code(err) != codes.AlreadyExists {
		t.Errorf("a second snapshot named s1: %v, want ALREADY_EXISTS", err)
	}
	if _, err := n1.Snapshot("../escape"); status.Code(err) != codes.InvalidArgument {
		t.Errorf("snapshot named ../escape: %v, want INVALID_ARGUMENT", err)
	}
	if _, err := node.RestoreSnapshot(filepath.Join(dir, n1.ID()), "s1", time.Now(), 24*time.Hour, false); err == nil || !strings.Contains(err.Error(), "stop the node first") {
		t.Fatalf("restore under a running node: %v, want a refusal", err)
	}
	put(c, "k1", "v2", k1)
	put(c, "k2", "after", nil)

	for _, n := range l.Nodes() {
		if err := l.Stop(n.ID()); err != nil {
			t.Fatal(err)
		}
	}
	for id := range actors {
		res, err := node.RestoreSnapshot(filepath.Join(dir, id), "s1", time.Now(), 24*time.Hour, false)
		if err != nil {
			t.Fatalf("restore %s: %v", id, err)
		}
		if _, err := os.Stat(filepath.Join(res.Replaced, "LOCK")); err != nil {
			t.Errorf("the replaced data of %s is not kept at %s: %v", id, res.Replaced, err)
		}
		// Too old for the tombstone grace: refused without force.
		if _, err := node.RestoreSnapshot(filepath.Join(dir, id), "s1", time.Now().Add(48*time.Hour), 24*time.Hour, false); !errors.Is(err, node.ErrSnapshotTooOld) {
			t.Errorf("restore of a snapshot older than the grace: %v, want ErrSnapshotTooOld", err)
		}
	}
	for id := range actors {
		n, err := l.Restart(ctx, id)
		if err != nil {
			t.Fatalf("restart %s: %v", id, err)
		}
		if n.Store().Actor() == actors[id] {
			t.Errorf("%s restored kept its incarnation %s: it could mint dots it minted after the snapshot", id, actors[id])
		}
	}
	c = dial(t, l.Nodes()[0].Addr())
	var got *kvv1.GetResponse
	eventually(t, "the restored cluster to read at ALL", func() bool {
		var err error
		got, err = c.Get(ctx, &kvv1.GetRequest{Key: []byte("k1"), Consistency: all})
		return err == nil
	})
	if vals := vals(got.GetSiblings()); len(vals) != 1 || vals[0] != "v1" {
		t.Errorf("k1 after the restore: %v, want the snapshot's v1", vals)
	}
	if got, err := c.Get(ctx, &kvv1.GetRequest{Key: []byte("k2"), Consistency: all}); err != nil || len(got.GetSiblings()) != 0 {
		t.Errorf("k2, written after the snapshot: %v %v, want absent", got, err)
	}
	put(c, "k3", "new", nil)
}

// TestConcurrentSnapshotsOfOneName: of two snapshots created at once
// under one name, one is taken and the other refused; neither fails.
func TestConcurrentSnapshotsOfOneName(t *testing.T) {
	l := startCluster(t, node.LocalSpec{NodesPerDC: 1})
	n := l.Nodes()[0]
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := n.Snapshot("same")
			errs <- err
		}()
	}
	var ok, exists int
	for range 2 {
		switch err := <-errs; status.Code(err) {
		case codes.OK:
			ok++
		case codes.AlreadyExists:
			exists++
		default:
			t.Errorf("concurrent snapshot: %v", err)
		}
	}
	if ok != 1 || exists != 1 {
		t.Errorf("%d taken, %d refused as existing; want one each", ok, exists)
	}
	if list, err := n.Snapshots(); err != nil || len(list) != 1 {
		t.Errorf("snapshots after: %+v %v", list, err)
	}
}

// TestScheduledSnapshots: with snapshot-interval set, a node snapshots its
// data at every boundary under auto-<time>, keeps the newest snapshot-keep
// of them, never deletes a snapshot taken by hand, and exports what it did.
func TestScheduledSnapshots(t *testing.T) {
	keep := 2
	l := startCluster(t, node.LocalSpec{NodesPerDC: 1, Configure: func(c *node.Config) {
		c.SnapshotInterval = time.Second
		c.SnapshotKeep = keep
		c.Telemetry.MetricsAddr = "127.0.0.1:0"
	}})
	n := l.Nodes()[0]
	ctx := ctxT(t)
	if _, err := dial(t, n.Addr()).Put(ctx, &kvv1.PutRequest{Key: []byte("k"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Snapshot("by-hand"); err != nil {
		t.Fatal(err)
	}
	taken := `meridian_snapshots_scheduled_total{outcome="taken"}`
	early := map[string]bool{} // scheduled snapshots seen taken before the metadata log agreed
	eventually(t, "four scheduled snapshots", func() bool {
		list, err := n.Snapshots()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range list {
			if strings.HasPrefix(s.Name, "auto-") && s.Epoch == 0 {
				early[s.Name] = true
			}
		}
		return metricValue(t, scrape(t, n.Telemetry().MetricsAddr()), taken) >= 4
	})
	if len(early) > 0 {
		t.Errorf("scheduled snapshots taken before the metadata log agreed (epoch 0): %v", early)
	}
	var auto []string
	byHand := false
	list, err := n.Snapshots()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range list {
		switch {
		case s.Name == "by-hand":
			byHand = true
		case strings.HasPrefix(s.Name, "auto-"):
			auto = append(auto, s.Name)
			if _, err := time.Parse("20060102T150405Z", strings.TrimPrefix(s.Name, "auto-")); err != nil {
				t.Errorf("scheduled snapshot %s is not named by its time: %v", s.Name, err)
			}
		}
	}
	// A prune may be a moment behind the snapshot it follows: at most one
	// more than keep.
	if !byHand || len(auto) < keep || len(auto) > keep+1 {
		t.Fatalf("snapshots %v: want the one taken by hand and %d (or, mid-round, %d) scheduled ones", list, keep, keep+1)
	}
	body := scrape(t, n.Telemetry().MetricsAddr())
	if pruned := metricValue(t, body, `meridian_snapshots_scheduled_total{outcome="pruned"}`); pruned < 1 {
		t.Errorf("pruned = %v, want at least 1 after four snapshots with keep %d", pruned, keep)
	}
	if last := metricValue(t, body, "meridian_snapshot_last_scheduled_timestamp_seconds"); time.Since(time.Unix(int64(last), 0)) > time.Minute {
		t.Errorf("last scheduled snapshot at %v, want just now", time.Unix(int64(last), 0))
	}
}

// TestSnapshotReadsAreBounded: a node serves at most snapshot-reads
// snapshot downloads at once; one more is refused with RESOURCE_EXHAUSTED
// until one ends, and the metrics show what runs, what was refused and
// the bytes sent.
func TestSnapshotReadsAreBounded(t *testing.T) {
	l := startCluster(t, node.LocalSpec{NodesPerDC: 1, Partitions: 16, Configure: func(c *node.Config) {
		c.SnapshotReads = 1
		c.Telemetry.MetricsAddr = "127.0.0.1:0"
	}})
	n := l.Nodes()[0]
	done, err := n.StartSnapshotRead()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.StartSnapshotRead(); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "snapshot-reads") {
		t.Fatalf("a second read with snapshot-reads 1: %v, want RESOURCE_EXHAUSTED naming the setting", err)
	}
	body := scrape(t, n.Telemetry().MetricsAddr())
	if metricValue(t, body, "meridian_snapshot_reads_running") != 1 || metricValue(t, body, "meridian_snapshot_reads_refused_total") != 1 {
		t.Errorf("metrics while one read runs and one was refused:\n%s", grepLines(body, "meridian_snapshot_read"))
	}
	done(4096)
	done(4096) // ending twice counts once
	again, err := n.StartSnapshotRead()
	if err != nil {
		t.Fatalf("a read after the first ended: %v", err)
	}
	again(0)
	body = scrape(t, n.Telemetry().MetricsAddr())
	if metricValue(t, body, "meridian_snapshot_reads_running") != 0 || metricValue(t, body, "meridian_snapshot_read_bytes_total") != 4096 {
		t.Errorf("metrics after both ended:\n%s", grepLines(body, "meridian_snapshot_read"))
	}
}

func grepLines(body, prefix string) string {
	var out []string
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, prefix) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// TestMemoryNodeHasNoSnapshots: a node keeping its data in memory lists,
// serves and deletes no snapshots, even with a data directory holding
// some (not its own: another node's, or a reused directory's).
func TestMemoryNodeHasNoSnapshots(t *testing.T) {
	dir := t.TempDir()
	other := filepath.Join(dir, "snapshots", "s1")
	if err := os.MkdirAll(other, 0o700); err != nil {
		t.Fatal(err)
	}
	info := []byte(`{"node":"n9","name":"s1","created":"2026-12-01T00:00:00Z","epoch":1}`)
	if err := os.WriteFile(filepath.Join(other, "SNAPSHOT.json"), info, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := soloConfig(t, "n1", "127.0.0.1:0", dir)
	cfg.Engine = "memory"
	n, err := node.Start(ctxT(t), cfg, node.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if list, err := n.Snapshots(); err != nil || len(list) != 0 {
		t.Fatalf("a memory node lists %v, %v; want none", list, err)
	}
	if _, err := n.SnapshotFiles("s1"); status.Code(err) != codes.NotFound {
		t.Fatalf("a memory node serving s1: %v, want NOT_FOUND", err)
	}
	if err := n.DeleteSnapshot("s1"); status.Code(err) != codes.NotFound {
		t.Fatalf("a memory node deleting s1: %v, want NOT_FOUND", err)
	}
	if _, err := os.Stat(filepath.Join(other, "SNAPSHOT.json")); err != nil {
		t.Fatalf("the directory's snapshot is gone after a memory node's delete: %v", err)
	}
}
