package coordinator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/placement"
	"github.com/meridiankv/meridian/replica"
	"github.com/meridiankv/meridian/version"
)

// keptHints records the hints a node keeps; refuse makes it refuse them
// for room (or, with window, for the hint window) instead.
type keptHints struct {
	refuse, window bool
	mu             sync.Mutex
	targets        []string
}

func (h *keptHints) StoreHint(target string, _ replica.Loc, _ string, _ []byte, _ version.Set, _ bool, _ time.Time) error {
	if h.refuse {
		return &HintRefusedError{Err: errors.New("hint not stored: a bound is reached"), Window: h.window}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.targets = append(h.targets, target)
	return nil
}

func (h *keptHints) kept() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.targets)
}

// TestRefusedHintGoesToTheNextFallback: a fallback refusing a hint for
// lack of room took nothing, so the hint goes to the replica's next free
// fallback and counts there (the write meets W=2 with one replica down);
// one refusing it past the hint window stands (another fallback would
// start the window again), and the write fails.
func TestRefusedHintGoesToTheNextFallback(t *testing.T) {
	nodes := []placement.Node{
		{ID: "n1", DC: "dc1", Rack: "r1", Weight: 1}, {ID: "n2", DC: "dc1", Rack: "r2", Weight: 1},
		{ID: "n3", DC: "dc1", Rack: "r3", Weight: 1}, {ID: "n4", DC: "dc1", Rack: "r4", Weight: 1},
	}
	for _, window := range []bool{false, true} {
		t.Run(fmt.Sprintf("window=%v", window), func(t *testing.T) {
			hints := map[string]*keptHints{}
			for _, n := range nodes {
				hints[n.ID] = &keptHints{}
			}
			topo, coords, _ := testCluster(t, nodes, map[string]int{"dc1": 2}, func(c *Config) {
				c.Hints, c.Live = hints[c.NodeID], liveExcept{"n2": true}
			})
			ks, _ := topo.Keyspace("ks")
			var key []byte
			var p int
			for i := 0; key == nil; i++ {
				k := fmt.Appendf(nil, "k-%d", i)
				p = topo.Ring.Partition(k)
				if reps := ks.Table.Replicas(p); reps[0].Node == "n1" && reps[1].Node == "n2" {
					key = k
				}
			}
			fbs := ks.Table.Fallbacks(p, "dc1")
			first, second := hints[fbs[0].Node], hints[fbs[1].Node]
			first.refuse, first.window = true, window
			_, err := coords["n1"].Put(context.Background(), &kvv1.PutRequest{Keyspace: "ks", Key: key, Value: []byte("v"), Consistency: &kvv1.Consistency{W: 2}})
			if window {
				if err == nil || len(second.kept()) != 0 {
					t.Fatalf("a hint refused past the window: %v, %s kept %v; want the write failed and no other fallback asked", err, fbs[1].Node, second.kept())
				}
				return
			}
			if err != nil {
				t.Fatalf("W=2 with n2 down and its first fallback %s refusing the hint: %v", fbs[0].Node, err)
			}
			if got := second.kept(); !slices.Equal(got, []string{"n2"}) {
				t.Fatalf("the next fallback %s kept hints for %v, want [n2]", fbs[1].Node, got)
			}
		})
	}
}
