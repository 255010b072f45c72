package node_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/node"
)

// TestRestoreClusterOntoNewMachines: every node of a cluster snapshots its
// data; the snapshots are copied off, the old cluster and its directories
// are gone; each snapshot is restored into an empty data directory and
// the nodes start as a new cluster on new ports. The new cluster carries
// the old one's ring (not the one its flags would give: n1's weight
// differs in them), keyspaces and epoch, under a new cluster ID and the
// new addresses, and every acknowledged write before the snapshot reads
// back at ALL.
func TestRestoreClusterOntoNewMachines(t *testing.T) {
	dirA := t.TempDir()
	two := membership.KeyspaceSpec{Name: "two", Replication: map[string]int{"dc1": 2}}
	spec := node.LocalSpec{Dir: dirA, NodesPerDC: 3, Partitions: 64, Keyspaces: []membership.KeyspaceSpec{two}}
	a := startCluster(t, spec)
	ctx := ctxT(t)
	c := dial(t, a.Nodes()[0].Addr())
	all := lvl(kvv1.Level_LEVEL_ALL)
	const keys = 40
	for i := range keys {
		for _, ks := range []string{"", "two"} {
			if _, err := c.Put(ctx, &kvv1.PutRequest{Keyspace: ks, Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(ks + fmt.Sprint(i)), Consistency: all}); err != nil {
				t.Fatalf("put k%d in %q: %v", i, ks, err)
			}
		}
	}
	old := a.Nodes()[0].MetaState()
	oldRing, _ := json.Marshal(old.Ring)
	oldAddrs := map[string]string{}
	for _, n := range a.Nodes() {
		oldAddrs[n.ID()] = n.Addr()
		if _, err := n.Snapshot("s1"); err != nil {
			t.Fatalf("snapshot of %s: %v", n.ID(), err)
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	// The snapshots leave the old machines, which are then gone.
	backup := t.TempDir()
	for id := range oldAddrs {
		if err := os.CopyFS(filepath.Join(backup, id), os.DirFS(filepath.Join(dirA, id, "snapshots", "s1"))); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.RemoveAll(dirA); err != nil {
		t.Fatal(err)
	}

	dirB := t.TempDir()
	for id := range oldAddrs {
		res, err := node.RestoreSnapshotFrom(filepath.Join(dirB, id), filepath.Join(backup, id), time.Now(), 24*time.Hour, false)
		if err != nil {
			t.Fatalf("restore %s: %v", id, err)
		}
		if res.Snapshot.Node != id || res.Snapshot.ClusterID != old.ClusterID || res.Replaced != "" {
			t.Errorf("restore of %s: %+v", id, res)
		}
	}
	// Restored data belongs to its node: another node ID is refused on it.
	if _, err := node.RestoreSnapshotFrom(filepath.Join(dirB, "n2"), filepath.Join(backup, "n1"), time.Now(), 24*time.Hour, false); err == nil || !strings.Contains(err.Error(), "belongs to node n2") {
		t.Errorf("n1's snapshot into n2's data directory: %v", err)
	}
	if _, err := node.RestoreSnapshotFrom(filepath.Join(dirB, "n9"), dirB, time.Now(), 24*time.Hour, false); err == nil || !strings.Contains(err.Error(), "is not a snapshot") {
		t.Errorf("restore from a directory that is not a snapshot: %v", err)
	}

	// As if each node had started once and stopped before the new
	// cluster was initialized: a metadata log is there, empty. The
	// restore's mark, not the missing log, keeps them restored.
	for id := range oldAddrs {
		if _, err := os.Stat(filepath.Join(dirB, id, "RESTORED.json")); err != nil {
			t.Fatalf("no restore mark in %s's data directory: %v", id, err)
		}
		if err := os.MkdirAll(filepath.Join(dirB, id, "raft"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dirB, id, "raft", "raft.db"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	specB := spec
	specB.Dir = dirB
	specB.Keyspaces = nil // from the restored metadata
	specB.Configure = func(cfg *node.Config) {
		// n1 weighs 4 in the flags: a fresh init would give another ring.
		cfg.InitialCluster = strings.Replace(cfg.InitialCluster, "/1,", "/4,", 1)
	}
	b := startCluster(t, specB)
	meta := b.Nodes()[0].MetaState()
	if meta.ClusterID == old.ClusterID || meta.RestoredFrom != old.ClusterID {
		t.Errorf("new cluster %q restored from %q; the old one was %q", meta.ClusterID, meta.RestoredFrom, old.ClusterID)
	}
	if meta.Epoch <= old.Epoch {
		t.Errorf("epoch %d, not past the restored %d", meta.Epoch, old.Epoch)
	}
	if ring, _ := json.Marshal(meta.Ring); string(ring) != string(oldRing) {
		t.Error("the new cluster's ring is not the restored one")
	}
	if ks, ok := meta.Keyspaces["two"]; !ok || ks.Replication["dc1"] != 2 {
		t.Errorf("keyspace two: %+v %v", ks, ok)
	}
	eventually(t, "no node gossiping a restore once the cluster is initialized", func() bool {
		for _, m := range b.Nodes()[0].Gossip().Members() {
			if m.Meta.Restored != "" {
				return false
			}
		}
		return true
	})
	for id := range oldAddrs {
		if _, err := os.Stat(filepath.Join(dirB, id, "RESTORED.json")); err == nil {
			t.Errorf("%s still marked restored after adopting the new cluster", id)
		}
		if raw, err := os.ReadFile(filepath.Join(dirB, id, "CLUSTER_ID")); err != nil || strings.TrimSpace(string(raw)) != meta.ClusterID {
			t.Errorf("%s's CLUSTER_ID %q %v, want %s", id, raw, err, meta.ClusterID)
		}
	}
	eventually(t, "every node to record its new addresses", func() bool {
		m := b.Nodes()[0].MetaState()
		for _, n := range b.Nodes() {
			rec := m.Members[n.ID()]
			if rec.GRPCAddr != n.Addr() || rec.PeerAddr != n.PeerAddr() || rec.GRPCAddr == oldAddrs[n.ID()] {
				return false
			}
		}
		return true
	})
	for _, n := range b.Nodes() {
		cb := dial(t, n.Addr())
		for i := range keys {
			for _, ks := range []string{"", "two"} {
				got, err := cb.Get(ctx, &kvv1.GetRequest{Keyspace: ks, Key: []byte(fmt.Sprintf("k%d", i)), Consistency: all})
				if err != nil {
					t.Fatalf("get k%d in %q from %s: %v", i, ks, n.ID(), err)
				}
				if v := vals(got.GetSiblings()); len(v) != 1 || v[0] != ks+fmt.Sprint(i) {
					t.Fatalf("k%d in %q from %s: %v", i, ks, n.ID(), v)
				}
			}
		}
	}
	if _, err := dial(t, b.Nodes()[1].Addr()).Put(ctx, &kvv1.PutRequest{Key: []byte("new"), Value: []byte("v"), Consistency: all}); err != nil {
		t.Errorf("put in the restored cluster: %v", err)
	}
	// A restarted node routes by the new cluster from its start: its
	// store's cached metadata is the new cluster's, not the old one's.
	if err := b.Stop("n2"); err != nil {
		t.Fatal(err)
	}
	n2, err := b.Restart(ctx, "n2")
	if err != nil {
		t.Fatal(err)
	}
	if topo := n2.Topology(); !topo.Agreed() || topo.ClusterID != meta.ClusterID {
		t.Errorf("restarted n2 routes by cluster %q (agreed %v), want the new %q", topo.ClusterID, topo.Agreed(), meta.ClusterID)
	}
	c2 := dial(t, n2.Addr())
	eventually(t, "a read through the restarted n2", func() bool {
		got, err := c2.Get(ctx, &kvv1.GetRequest{Key: []byte("k1"), Consistency: lvl(kvv1.Level_LEVEL_QUORUM)})
		return err == nil && len(got.GetSiblings()) == 1
	})
}

// TestDataOfAnotherClusterIsNotServed: restoring a snapshot of another
// cluster's node of the same ID into a member is refused; if it gets there
// anyway (a data directory that does not say its cluster), the node
// refuses to route by either cluster's metadata: clients get UNAVAILABLE
// saying why, and its health is NOT_SERVING.
func TestDataOfAnotherClusterIsNotServed(t *testing.T) {
	dirA, dirB := t.TempDir(), t.TempDir()
	a := startCluster(t, node.LocalSpec{Dir: dirA, NodesPerDC: 1, Partitions: 16})
	ctx := ctxT(t)
	if _, err := dial(t, a.Nodes()[0].Addr()).Put(ctx, &kvv1.PutRequest{Key: []byte("k"), Value: []byte("a")}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Nodes()[0].Snapshot("s1"); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	b := startCluster(t, node.LocalSpec{Dir: dirB, NodesPerDC: 1, Partitions: 16})
	if err := b.Stop("n1"); err != nil {
		t.Fatal(err)
	}
	// Refused offline: the data directory says which cluster it is of.
	if _, err := node.RestoreSnapshotFrom(filepath.Join(dirB, "n1"), filepath.Join(dirA, "n1", "snapshots", "s1"), time.Now(), time.Hour, false); err == nil || !strings.Contains(err.Error(), "is a member of cluster") {
		t.Fatalf("restore of another cluster's snapshot into a member: %v", err)
	}
	// A data directory from before it said so: the node refuses at start.
	if err := os.Remove(filepath.Join(dirB, "n1", "CLUSTER_ID")); err != nil {
		t.Fatal(err)
	}
	if _, err := node.RestoreSnapshotFrom(filepath.Join(dirB, "n1"), filepath.Join(dirA, "n1", "snapshots", "s1"), time.Now(), time.Hour, false); err != nil {
		t.Fatal(err)
	}
	n, err := b.Restart(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, n.Addr())
	var last error
	eventually(t, "the node to refuse requests", func() bool {
		_, last = c.Get(ctx, &kvv1.GetRequest{Key: []byte("k")})
		return status.Code(last) == codes.Unavailable
	})
	if !strings.Contains(last.Error(), "its metadata log is of cluster") {
		t.Errorf("refusal %v: want the reason", last)
	}
	if n.Topology().Agreed() {
		t.Error("the node routes by agreed metadata of a cluster its data is not of")
	}
	if why := n.NotServing(); why == nil || !strings.Contains(why.Error(), "its metadata log is of cluster") {
		t.Errorf("NotServing %v: want the reason", why)
	}
	resp, err := healthpb.NewHealthClient(dialConn(t, n.Addr())).Check(ctx, &healthpb.HealthCheckRequest{Service: "kv.v1.KV"})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health %v %v, want NOT_SERVING", resp.GetStatus(), err)
	}
}

// TestRestoreWithOneSnapshotLost: of a 3-node cluster's snapshots only
// n2's and n3's are restored; n1 starts empty (and first, so it often
// leads first). Whichever node leads first,
// the new cluster is initialized from the restored metadata (a leader
// without restored data hands the leadership to one with it), n1 joins it,
// and every write reads back at QUORUM.
func TestRestoreWithOneSnapshotLost(t *testing.T) {
	dirA := t.TempDir()
	spec := node.LocalSpec{Dir: dirA, NodesPerDC: 3, Partitions: 16}
	a := startCluster(t, spec)
	ctx := ctxT(t)
	c := dial(t, a.Nodes()[0].Addr())
	const keys = 20
	for i := range keys {
		if _, err := c.Put(ctx, &kvv1.PutRequest{Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(fmt.Sprint(i)), Consistency: lvl(kvv1.Level_LEVEL_ALL)}); err != nil {
			t.Fatal(err)
		}
	}
	old := a.Nodes()[0].MetaState().ClusterID
	for _, n := range a.Nodes() {
		if _, err := n.Snapshot("s1"); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	dirB := t.TempDir()
	for _, id := range []string{"n2", "n3"} {
		if _, err := node.RestoreSnapshotFrom(filepath.Join(dirB, id), filepath.Join(dirA, id, "snapshots", "s1"), time.Now(), time.Hour, false); err != nil {
			t.Fatal(err)
		}
	}
	specB := spec
	specB.Dir = dirB
	b := startCluster(t, specB)
	meta := b.Nodes()[0].MetaState()
	if meta.RestoredFrom != old {
		t.Fatalf("the new cluster was initialized from %q, want the restored %s (n1 had no data)", meta.RestoredFrom, old)
	}
	for _, n := range b.Nodes() {
		cn := dial(t, n.Addr())
		for i := range keys {
			got, err := cn.Get(ctx, &kvv1.GetRequest{Key: []byte(fmt.Sprintf("k%d", i)), Consistency: lvl(kvv1.Level_LEVEL_QUORUM)})
			if err != nil || len(got.GetSiblings()) != 1 {
				t.Fatalf("k%d through %s: %v %v", i, n.ID(), got, err)
			}
		}
	}
}
