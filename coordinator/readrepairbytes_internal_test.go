package coordinator

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/placement"
	"github.com/meridiankv/meridian/replica"
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
	nodes := []placement.Node{
		{ID: "n1", DC: "dc1", Rack: "r1", Weight: 1},
		{ID: "n2", DC: "dc1", Rack: "r2", Weight: 1},
		{ID: "n3", DC: "dc1", Rack: "r3", Weight: 1},
	}
	key := []byte("k")
	value := bytes.Repeat([]byte("v"), 64<<10)
	for _, tc := range []struct {
		bound    int64
		repaired bool
	}{{1 << 20, true}, {32 << 10, false}} {
		obs := &shedCounter{shed: map[string]int{}}
		topo, coords, stores := testCluster(t, nodes, map[string]int{"dc1": 3}, func(c *Config) {
			c.Observer, c.ReadRepairChance, c.MaxBackgroundBytes = obs, 1, tc.bound
		})
		loc := storeOnly(t, topo, stores["n1"], key, value)
		storeOnly(t, topo, stores["n2"], key, value) // the same version; n3 is stale
		n1 := coords["n1"]
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

// TestReadRepairChecksWhatItStoresHere: read repair of this node's own
// copy runs the checks every incoming write does: a set claiming versions
// of this node's actor it never minted (a peer's corrupt or crafted copy)
// is not stored here, while a sound one is.
func TestReadRepairChecksWhatItStoresHere(t *testing.T) {
	nodes := []placement.Node{
		{ID: "n1", DC: "dc1", Rack: "r1", Weight: 1},
		{ID: "n2", DC: "dc1", Rack: "r2", Weight: 1},
	}
	for _, tc := range []struct {
		ownActor bool // n2 alone holds a version of n1's actor (else of n2's)
		repaired bool
	}{{false, true}, {true, false}} {
		topo, coords, stores := testCluster(t, nodes, map[string]int{"dc1": 2}, func(c *Config) { c.ReadRepairChance = 1 })
		key := []byte("k")
		ks, _ := topo.Keyspace("ks")
		loc := replica.Loc{Keyspace: ks.ID, Partition: topo.Ring.Partition(key)}
		actor := stores["n2"].Actor()
		if tc.ownActor {
			actor = stores["n1"].Actor() // at counter 1: n1 has minted none
		}
		set, _ := version.Set{}.Put(version.Clock{}, actor, version.Value{Bytes: []byte("v")}, time.Now().UnixNano())
		if _, err := stores["n2"].Merge(loc, key, set, false); err != nil {
			t.Fatal(err)
		}
		n1 := coords["n1"]
		if _, err := n1.Get(context.Background(), &kvv1.GetRequest{Keyspace: "ks", Key: key, Consistency: &kvv1.Consistency{Level: kvv1.Level_LEVEL_ALL}}); err != nil {
			t.Fatal(err)
		}
		n1.Close() // waits for background work: the repair is done
		got, err := stores["n1"].Get(loc, key)
		if err != nil {
			t.Fatal(err)
		}
		if repaired := len(got.Siblings) == 1; repaired != tc.repaired {
			t.Fatalf("a version of %s held by n2 alone: n1 repaired %v (holds %v), want %v", actor, repaired, got, tc.repaired)
		}
	}
}
