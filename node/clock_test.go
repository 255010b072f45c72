package node_test

import (
	"testing"
	"time"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/replica"
)

// TestFastClockNode: in a cluster where one node's clock runs 5 s fast,
// that node learns it from gossip (meridian_clock_ahead_seconds), and a
// last-writer-wins write sent to it is coordinated by another replica:
// the version stored carries a timestamp of a correct clock, not one 5 s
// ahead that would win over every write of the next 5 seconds.
func TestFastClockNode(t *testing.T) {
	const skew = 5 * time.Second
	fastID := ""
	l := startCluster(t, node.LocalSpec{NodesPerDC: 3, Engine: "memory",
		Keyspaces: []membership.KeyspaceSpec{{Name: "cache", Replication: map[string]int{"dc1": 3}, Conflict: "lww"}},
		Configure: func(c *node.Config) { c.Telemetry.MetricsAddr = "127.0.0.1:0" },
		NodeOptions: func(id string, o *node.Options) {
			if fastID == "" {
				fastID = id
				o.Now = func() time.Time { return time.Now().Add(skew) }
			}
		}})
	var fast *node.Node
	for _, n := range l.Nodes() {
		if n.ID() == fastID {
			fast = n
		}
	}
	eventually(t, "the fast node to find its clock ahead of its peers'", func() bool {
		return metricValue(t, scrape(t, fast.Telemetry().MetricsAddr()), "meridian_clock_ahead_seconds") > 4
	})
	key := []byte("session")
	if _, err := dial(t, fast.Addr()).Put(ctxT(t), &kvv1.PutRequest{Keyspace: "cache", Key: key, Value: []byte("v"),
		Consistency: lvl(kvv1.Level_LEVEL_ALL)}); err != nil {
		t.Fatal(err)
	}
	topo := fast.Topology()
	ks := topo.Keyspaces["cache"]
	set, err := fast.Store().Get(replica.Loc{Keyspace: ks.ID, Partition: topo.Ring.Partition(key)}, key)
	if err != nil || len(set.Siblings) != 1 {
		t.Fatalf("the fast node holds %v (%v), want the write", set, err)
	}
	if ahead := time.Until(set.Siblings[0].Value.Time.Time()); ahead > time.Second {
		t.Fatalf("the write is stamped %v ahead of real time: the fast node coordinated it", ahead.Round(time.Millisecond))
	}
	if v := metricValue(t, scrape(t, fast.Telemetry().MetricsAddr()), "meridian_fast_clock_forwards_total"); v < 1 {
		t.Fatalf("meridian_fast_clock_forwards_total %v, want the write counted", v)
	}
}
