package coordinator

import (
	"context"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/placement"
)

// countingReads counts the reads sent to each node and fails those sent
// to the nodes in fail.
type countingReads struct {
	Peers
	fail map[string]bool
	mu   sync.Mutex
	n    map[string]int
}

func (p *countingReads) Read(ctx context.Context, node string, req *internalv1.ReadRequest) (*internalv1.ReadResponse, error) {
	p.mu.Lock()
	p.n[node]++
	p.mu.Unlock()
	if p.fail[node] {
		return nil, status.Error(codes.Unavailable, "unreachable")
	}
	return p.Peers.Read(ctx, node, req)
}

// TestFailedLocalReadStaysInItsDC: a LOCAL_QUORUM read whose local
// replicas fail is UNAVAILABLE without reading the other DC's replicas,
// whose answers could not count; a QUORUM read in the same state does go
// to them.
func TestFailedLocalReadStaysInItsDC(t *testing.T) {
	nodes := []placement.Node{
		{ID: "n1", DC: "dc1", Rack: "r1", Weight: 1}, {ID: "n2", DC: "dc1", Rack: "r2", Weight: 1}, {ID: "n3", DC: "dc1", Rack: "r3", Weight: 1},
		{ID: "n4", DC: "dc2", Rack: "r1", Weight: 1}, {ID: "n5", DC: "dc2", Rack: "r2", Weight: 1}, {ID: "n6", DC: "dc2", Rack: "r3", Weight: 1},
	}
	reads := &countingReads{fail: map[string]bool{"n2": true, "n3": true}, n: map[string]int{}}
	_, coords, _ := testCluster(t, nodes, map[string]int{"dc1": 3, "dc2": 3}, func(c *Config) {
		c.ReadRepairChance = -1 // no read asks every replica for repair's sake
		if c.NodeID == "n1" {
			reads.Peers = c.Peers
			c.Peers = reads
		}
	})
	get := func(lvl kvv1.Level) error {
		_, err := coords["n1"].Get(context.Background(), &kvv1.GetRequest{Keyspace: "ks", Key: []byte("k"), Consistency: &kvv1.Consistency{Level: lvl}})
		return err
	}
	if err := get(kvv1.Level_LEVEL_LOCAL_QUORUM); status.Code(err) != codes.Unavailable {
		t.Fatalf("LOCAL_QUORUM with two of dc1's three replicas failing: %v, want UNAVAILABLE", err)
	}
	reads.mu.Lock()
	remote := reads.n["n4"] + reads.n["n5"] + reads.n["n6"]
	reads.mu.Unlock()
	if remote != 0 {
		t.Fatalf("the failed LOCAL_QUORUM read asked dc2's replicas %d times, want none", remote)
	}
	if err := get(kvv1.Level_LEVEL_QUORUM); err != nil {
		t.Fatalf("QUORUM with two of six replicas failing: %v", err)
	}
}

func TestTallyHelps(t *testing.T) {
	local := makeTally(Need{Total: 2, Local: "dc1", LocalOnly: true})
	local.expect("dc1", false)
	local.answer("dc1", false, false)
	if !local.helps("dc1") || local.helps("dc2") {
		t.Fatalf("LOCAL_QUORUM short: helps(dc1) %v, helps(dc2) %v; want true, false", local.helps("dc1"), local.helps("dc2"))
	}
	each := makeTally(Need{Total: 4, PerDC: map[string]int{"dc1": 2, "dc2": 2}})
	for range 2 {
		each.expect("dc1", false)
		each.answer("dc1", false, true)
	}
	each.expect("dc2", false)
	each.answer("dc2", false, false)
	if each.helps("dc1") || !each.helps("dc2") {
		t.Fatalf("EACH_QUORUM with dc1 met, dc2 short: helps(dc1) %v, helps(dc2) %v; want false, true", each.helps("dc1"), each.helps("dc2"))
	}
}
