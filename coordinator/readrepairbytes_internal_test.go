package coordinator

import (
	"bytes"
	"context"
	"sync"
	"testing"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/placement"
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
