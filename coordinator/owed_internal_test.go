package coordinator

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/placement"
)

// owedLive is a liveness view: nodes down, nodes some live node holds
// hints for, and the DC of the holders.
type owedLive struct {
	down   map[string]bool
	owedBy map[string]string // node -> DC of the node holding its hints
}

func (l owedLive) Alive(n string) bool { return !l.down[n] }
func (l owedLive) PendingHints(n string) bool {
	_, ok := l.owedBy[n]
	return ok
}
func (l owedLive) PendingHintsFrom(n, dc string) bool {
	holder, ok := l.owedBy[n]
	return ok && holder == dc
}
func (owedLive) DiskLow(string) bool { return false }

// TestOwedReplicasNeverMakeAQuorum: a replica that live nodes hold hints
// for does not count toward a read's R — the coordinating node itself
// included (back from an outage, its copy may lack an acknowledged write
// that a fallback holds for it), and at LOCAL_QUORUM over a keyspace kept
// in one DC, whose hints may be held in another. The only copy of the
// acknowledged write here is on a down replica (the other being a hint),
// so the honest answer is UNAVAILABLE, not a quorum without it.
func TestOwedReplicasNeverMakeAQuorum(t *testing.T) {
	nodes := []placement.Node{
		{ID: "n1", DC: "dc1", Rack: "r1", Weight: 1},
		{ID: "n2", DC: "dc1", Rack: "r2", Weight: 1},
		{ID: "n3", DC: "dc1", Rack: "r3", Weight: 1},
		{ID: "x1", DC: "dc2", Rack: "r1", Weight: 1},
	}
	key := []byte("k")
	for _, tc := range []struct {
		name   string
		at     string
		level  kvv1.Level
		owedBy string // DC of the node holding n3's hint
	}{
		{"the coordinator itself is owed", "n3", kvv1.Level_LEVEL_QUORUM, "dc1"},
		{"LOCAL_QUORUM, a single-DC keyspace, hint held in another DC", "n2", kvv1.Level_LEVEL_LOCAL_QUORUM, "dc2"},
		{"QUORUM, hint held in another DC", "n2", kvv1.Level_LEVEL_QUORUM, "dc2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			live := owedLive{down: map[string]bool{"n1": true}, owedBy: map[string]string{"n3": tc.owedBy}}
			topo, coords, stores := testCluster(t, nodes, map[string]int{"dc1": 3}, func(c *Config) { c.Live = live })
			storeOnly(t, topo, stores["n1"], key, []byte("new")) // the acknowledged write's one primary copy
			resp, err := coords[tc.at].Get(context.Background(), &kvv1.GetRequest{Keyspace: "ks", Key: key, Consistency: &kvv1.Consistency{Level: tc.level}})
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("read at %s: %v, %v; want UNAVAILABLE (the write's copies are on a down node and in a hint)", tc.at, resp.GetSiblings(), err)
			}
		})
	}
}
