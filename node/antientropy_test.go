package node_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/replica"
	"github.com/meridiankv/meridian/version"
)

// inject writes a key straight into one node's store, as if a write had
// reached only that replica (its hints lost, read repair never run).
func inject(t *testing.T, n *node.Node, key, value string) {
	t.Helper()
	topo := n.Topology()
	ks, _ := topo.Keyspace("")
	loc := replica.Loc{Keyspace: ks.ID, Partition: topo.Ring.Partition([]byte(key))}
	_, err := n.Store().Update(loc, []byte(key), false, func(cur version.Set) (version.Set, error) {
		next, _ := cur.Put(cur.Context(), n.Store().Actor(), version.Value{Bytes: []byte(value)}, time.Now().UnixNano())
		return next, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func localGet(t *testing.T, n *node.Node, key string) version.Set {
	t.Helper()
	topo := n.Topology()
	ks, _ := topo.Keyspace("")
	set, err := n.Store().Get(replica.Loc{Keyspace: ks.ID, Partition: topo.Ring.Partition([]byte(key))}, []byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// treesEqual reports whether every node holds equal Merkle leaves for every
// partition of the default keyspace.
func treesEqual(t *testing.T, l *node.Local) bool {
	t.Helper()
	nodes := l.Nodes()
	topo := nodes[0].Topology()
	ks, _ := topo.Keyspace("")
	for p := 0; p < topo.Ring.Partitions(); p++ {
		loc := replica.Loc{Keyspace: ks.ID, Partition: p}
		first, err := nodes[0].Store().Leaves(loc)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes[1:] {
			other, err := n.Store().Leaves(loc)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(first, other) {
				return false
			}
		}
	}
	return true
}

// TestRepairRunConverges: keys that reached one replica only reach every
// replica after a repair run, and every partition's trees end equal.
func TestRepairRunConverges(t *testing.T) {
	l := startCluster(t, node.LocalSpec{NodesPerDC: 3, Engine: "memory", Partitions: 64,
		Configure: func(c *node.Config) { c.AntiEntropyPeriod = time.Hour }})
	n1, n3 := l.Node("n1"), l.Node("n3")
	const keys = 300
	for i := 0; i < keys; i++ {
		inject(t, n1, fmt.Sprint("k", i), fmt.Sprint("v", i))
	}
	if treesEqual(t, l) {
		t.Fatal("trees equal before repair")
	}
	progress, done := n3.RunRepair("", -1)
	var last int
	for p := range progress {
		last = p.PartitionsDone
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if last != 64 {
		t.Fatalf("repair reported %d partitions done, want 64", last)
	}
	for i := 0; i < keys; i++ {
		for _, n := range l.Nodes() {
			if set := localGet(t, n, fmt.Sprint("k", i)); len(set.Siblings) != 1 {
				t.Fatalf("%s lacks k%d after repair: %v", n.ID(), i, set)
			}
		}
	}
	if !treesEqual(t, l) {
		t.Fatal("trees differ after repair")
	}
	st := n3.AntiEntropy().Status("")
	var repaired uint64
	for _, s := range st {
		repaired += s.KeysRepaired
		if s.Verified.IsZero() {
			t.Fatalf("partition %d not verified after a full run", s.Partition)
		}
	}
	if repaired == 0 {
		t.Fatal("status counts no repaired keys")
	}
}

// TestBackgroundAntiEntropy: with no run asked for, the continuous
// exchange alone brings a divergent replica up to date within its period.
func TestBackgroundAntiEntropy(t *testing.T) {
	l := startCluster(t, node.LocalSpec{NodesPerDC: 3, Engine: "memory", Partitions: 16,
		Configure: func(c *node.Config) { c.AntiEntropyPeriod = 2 * time.Second }})
	n2 := l.Node("n2")
	for i := 0; i < 50; i++ {
		inject(t, n2, fmt.Sprint("bg", i), "x")
	}
	eventually(t, "the background exchange to converge", func() bool {
		for i := 0; i < 50; i++ {
			for _, n := range l.Nodes() {
				if len(localGet(t, n, fmt.Sprint("bg", i)).Siblings) != 1 {
					return false
				}
			}
		}
		return treesEqual(t, l)
	})
}

// TestTombstonesCollectedOnlyWhenEveryReplicaHoldsThem: a delete that one
// replica missed never lets the old value come back; its tombstone is
// collected only once every replica holds it and its grace has passed.
func TestTombstonesCollectedOnlyWhenEveryReplicaHoldsThem(t *testing.T) {
	l := startCluster(t, node.LocalSpec{NodesPerDC: 3, Engine: "memory", Partitions: 16,
		Configure: func(c *node.Config) {
			c.AntiEntropyPeriod = time.Hour
			c.TombstoneGrace = 50 * time.Millisecond
			off := node.Bytes(0)
			c.MaxHintBytes = &off // hints off: only anti-entropy can carry the delete
		}})
	n1, n3 := l.Node("n1"), l.Node("n3")
	c1 := dial(t, n1.Addr())
	ctx := ctxT(t)
	key := []byte("doomed")
	put, err := c1.Put(ctx, &kvv1.PutRequest{Key: key, Value: []byte("old"), Consistency: lvl(kvv1.Level_LEVEL_ALL)})
	if err != nil {
		t.Fatal(err)
	}
	// n3 misses the delete, and with hints off nobody keeps it for n3.
	n1.Faults().Cut("n3")
	if _, err := c1.Delete(ctx, &kvv1.DeleteRequest{Key: key, Context: put.Context, Consistency: lvl(kvv1.Level_LEVEL_QUORUM)}); err != nil {
		t.Fatal(err)
	}
	if set := localGet(t, n3, "doomed"); len(set.Live()) != 1 {
		t.Fatalf("n3 should still hold the old value: %v", set)
	}
	// n3 is down for the repair: nothing can be proven, nothing collected.
	n1.Faults().Heal()
	if err := l.Stop("n3"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "n1 to see n3 down", func() bool { return !n1.Alive("n3") })
	deleted := time.Now()
	eventually(t, "the tombstone to pass its 50ms grace", func() bool { return time.Since(deleted) > 60*time.Millisecond })
	progress, done := n1.RunRepair("", -1)
	for range progress {
	}
	<-done // incomplete: n3 is down
	if set := localGet(t, n1, "doomed"); !set.TombstonesBefore(time.Now().UnixNano()) {
		t.Fatalf("n1 collected or lost its tombstone with a replica down: %v", set)
	}
	// n3 returns with its old value; a repair spreads the tombstone and,
	// all replicas now proven equal, collects it everywhere.
	if _, err := l.Restart(ctx, "n3"); err != nil {
		t.Fatal(err)
	}
	n3 = l.Node("n3")
	eventually(t, "the tombstone spread and collected everywhere", func() bool {
		progress, done := n1.RunRepair("", -1)
		for range progress {
		}
		<-done
		for _, n := range l.Nodes() {
			if !localGet(t, n, "doomed").IsEmpty() {
				return false
			}
		}
		return true
	})
	for _, lv := range []kvv1.Level{kvv1.Level_LEVEL_ONE, kvv1.Level_LEVEL_ALL} {
		get, err := dial(t, n3.Addr()).Get(ctx, &kvv1.GetRequest{Key: key, Consistency: lvl(lv)})
		if err != nil || len(get.Siblings) != 0 {
			t.Fatalf("deleted key at %v: %v (%v), want nothing", lv, vals(get.GetSiblings()), err)
		}
	}
}

// TestHintCapThenRepair: a target down while writes continue gets hints
// only up to the byte cap; the writes still succeed, and once the target
// returns, hints plus anti-entropy bring it every key.
func TestHintCapThenRepair(t *testing.T) {
	capBytes := int64(4 << 10)
	l := startCluster(t, node.LocalSpec{NodesPerDC: 3, Engine: "memory", Partitions: 16,
		Configure: func(c *node.Config) {
			c.MaxHintBytes = new(node.Bytes(capBytes))
			c.AntiEntropyPeriod = 2 * time.Second
		}})
	n1 := l.Node("n1")
	ctx := ctxT(t)
	if err := l.Stop("n3"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "n3 seen down", func() bool { return !n1.Alive("n3") })
	c1 := dial(t, n1.Addr())
	const keys = 400
	for i := 0; i < keys; i++ {
		if _, err := c1.Put(ctx, &kvv1.PutRequest{Key: []byte(fmt.Sprint("capped", i)), Value: make([]byte, 100),
			Consistency: lvl(kvv1.Level_LEVEL_QUORUM)}); err != nil {
			t.Fatalf("write %d with the hint store full: %v", i, err)
		}
	}
	for _, n := range l.Nodes() {
		for _, st := range n.HintLog().Stats() {
			if st.Target == "n3" && st.Bytes > capBytes {
				t.Fatalf("%s holds %d bytes of hints for n3, over the cap of %d", n.ID(), st.Bytes, capBytes)
			}
		}
	}
	if _, err := l.Restart(ctx, "n3"); err != nil {
		t.Fatal(err)
	}
	n3 := l.Node("n3")
	eventually(t, "n3 to converge through hints and anti-entropy", func() bool {
		for i := 0; i < keys; i++ {
			if len(localGet(t, n3, fmt.Sprint("capped", i)).Siblings) != 1 {
				return false
			}
		}
		return true
	})
}

// TestRepairRunsAreBounded: past repair-runs full repairs at once, another
// is refused with RESOURCE_EXHAUSTED naming the setting; the gauge shows
// the runs, and once one ends another may start.
func TestRepairRunsAreBounded(t *testing.T) {
	l := startCluster(t, node.LocalSpec{NodesPerDC: 2, Partitions: 16, Engine: "memory", Configure: func(c *node.Config) {
		c.RepairRuns = 1
		c.Telemetry.MetricsAddr = "127.0.0.1:0"
	}})
	n1, n2 := l.Nodes()[0], l.Nodes()[1]
	n1.Faults().Delay(n2.ID(), 100*time.Millisecond) // the first run lasts
	progress, done := n1.RunRepair("", -1)
	_, refused := n1.RunRepair("", -1)
	if err := <-refused; status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "repair-runs") {
		t.Fatalf("a second run with repair-runs 1: %v, want RESOURCE_EXHAUSTED naming the setting", err)
	}
	if v := metricValue(t, scrape(t, n1.Telemetry().MetricsAddr()), "meridian_repair_runs_running"); v != 1 {
		t.Errorf("meridian_repair_runs_running %v while one runs, want 1", v)
	}
	n1.Faults().Heal()
	for range progress {
	}
	if err := <-done; err != nil {
		t.Fatalf("the first run: %v", err)
	}
	if v := metricValue(t, scrape(t, n1.Telemetry().MetricsAddr()), "meridian_repair_runs_running"); v != 0 {
		t.Errorf("meridian_repair_runs_running %v after the run, want 0", v)
	}
	progress, done = n1.RunRepair("", -1)
	for range progress {
	}
	if err := <-done; err != nil {
		t.Fatalf("a run after the first ended: %v", err)
	}
}
