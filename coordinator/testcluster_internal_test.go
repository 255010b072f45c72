package coordinator

import (
	"testing"
	"time"

	"github.com/meridiankv/meridian/engine/memory"
	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/placement"
	"github.com/meridiankv/meridian/replica"
	"github.com/meridiankv/meridian/transport"
	"github.com/meridiankv/meridian/version"
)

// testCluster starts a coordinator per node on one in-memory transport,
// over a topology with keyspace "ks" replicated by repl. configure
// completes each node's Config (Live, Observer, ...) before it starts;
// the coordinators close when the test ends.
func testCluster(t *testing.T, nodes []placement.Node, repl map[string]int, configure func(*Config)) (*membership.Topology, map[string]*Coordinator, map[string]*replica.Store) {
	t.Helper()
	var infos []membership.NodeInfo
	for _, n := range nodes {
		infos = append(infos, membership.NodeInfo{Node: n})
	}
	topo, err := membership.NewTopology(1, 16, infos, []membership.KeyspaceSpec{{Name: "ks", Replication: repl}})
	if err != nil {
		t.Fatal(err)
	}
	net := transport.NewMem()
	coords, stores := map[string]*Coordinator{}, map[string]*replica.Store{}
	for _, n := range nodes {
		store, err := replica.Open(memory.New(), n.ID)
		if err != nil {
			t.Fatal(err)
		}
		cfg := Config{NodeID: n.ID, DC: n.DC, Store: store, Peers: net, Live: liveExcept{},
			Topology: func() *membership.Topology { return topo }, Secrets: [][]byte{[]byte("secret")}, RequestTimeout: time.Second}
		if configure != nil {
			configure(&cfg)
		}
		c, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		net.Register(n.ID, c)
		coords[n.ID], stores[n.ID] = c, store
	}
	return topo, coords, stores
}

// storeOnly puts a version of key in keyspace "ks" into one store alone,
// as if only that replica had received the write.
func storeOnly(t *testing.T, topo *membership.Topology, store *replica.Store, key, value []byte) replica.Loc {
	t.Helper()
	ks, _ := topo.Keyspace("ks")
	loc := replica.Loc{Keyspace: ks.ID, Partition: topo.Ring.Partition(key)}
	set, _ := version.Set{}.Put(version.Clock{}, "n1", version.Value{Bytes: value}, time.Now().UnixNano())
	if _, err := store.Merge(loc, key, set, false); err != nil {
		t.Fatal(err)
	}
	return loc
}
