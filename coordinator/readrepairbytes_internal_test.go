package coordinator

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/engine/memory"
	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/placement"
	"github.com/meridiankv/meridian/replica"
	"github.com/meridiankv/meridian/transport"
	"github.com/meridiankv/meridian/version"
)

// shedCounter is an Observer counting what admission control shed.
type shedCounter struct {
	nopObserver
	mu   sync.Mutex
	shed map[string]int
}

func (s *shedCounter) Shed(what string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shed[what]++
}

func (s *shedCounter) count(what string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shed[what]
}

// TestReadRepairCountsItsBytes: a read repair holds the merged set and
// the replies until it ends, so it counts against MaxBackgroundBytes like
// a write's replica calls: over the bound, it is shed (anti-entropy mends
// the replica later) rather than held in memory uncounted.
func TestReadRepairCountsItsBytes(t *testing.T) {
	topo, err := membership.NewTopology(1, 16, []membership.NodeInfo{
		{Node: placement.Node{ID: "n1", DC: "dc1", Rack: "r1", Weight: 1}},
		{Node: placement.Node{ID: "n2", DC: "dc1", Rack: "r2", Weight: 1}},
		{Node: placement.Node{ID: "n3", DC: "dc1", Rack: "r3", Weight: 1}},
	}, []membership.KeyspaceSpec{{Name: "ks", Replication: map[string]int{"dc1": 3}}})
	if err != nil {
		t.Fatal(err)
	}
	ks, _ := topo.Keyspace("ks")
	key := []byte("k")
	loc := replica.Loc{Keyspace: ks.ID, Partition: topo.Ring.Partition(key)}
	value := bytes.Repeat([]byte("v"), 64<<10)
	for _, tc := range []struct {
		bound    int64
		repaired bool
	}{{1 << 20, true}, {32 << 10, false}} {
		net := transport.NewMem()
		obs := &shedCounter{shed: map[string]int{}}
		stores := map[string]*replica.Store{}
		var n1 *Coordinator
		for _, id := range []string{"n1", "n2", "n3"} {
			store, err := replica.Open(memory.New(), id)
			if err != nil {
				t.Fatal(err)
			}
			if id != "n3" { // n3 is stale
				set, _ := version.Set{}.Put(version.Clock{}, "n1", version.Value{Bytes: value}, time.Now().UnixNano())
				if _, err := store.Merge(loc, key, set, false); err != nil {
					t.Fatal(err)
				}
			}
			c, err := New(Config{NodeID: id, DC: "dc1", Store: store, Peers: net, Live: liveExcept{}, Observer: obs,
				ReadRepairChance: 1, MaxBackgroundBytes: tc.bound,
				Topology: func() *membership.Topology { return topo }, Secrets: [][]byte{[]byte("secret")}, RequestTimeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.Close)
			net.Register(id, c)
			stores[id] = store
			if id == "n1" {
				n1 = c
			}
		}
		if _, err := n1.Get(context.Background(), &kvv1.GetRequest{Keyspace: "ks", Key: key, Consistency: &kvv1.Consistency{Level: kvv1.Level_LEVEL_QUORUM}}); err != nil {
			t.Fatal(err)
		}
		n1.Close() // waits for background work: the repair is done or was never started
		set, err := stores["n3"].Get(loc, key)
		if err != nil {
			t.Fatal(err)
		}
		if got := len(set.Siblings) == 1; got != tc.repaired {
			t.Errorf("bound %d: n3 repaired %v, want %v", tc.bound, got, tc.repaired)
		}
		if shed := obs.count("read_repair"); (shed > 0) == tc.repaired {
			t.Errorf("bound %d: %d read repairs shed", tc.bound, shed)
		}
	}
}
