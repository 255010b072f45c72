package coordinator

import (
	"context"
	"fmt"
	"testing"
	"time"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/placement"
	"github.com/meridiankv/meridian/replica"
)

// heldWrites holds replica writes to node until release, reporting each
// one's context error when released.
type heldWrites struct {
	Peers
	node    string
	entered chan struct{}
	release chan struct{}
	outcome chan error
}

func (h *heldWrites) Write(ctx context.Context, node string, req *internalv1.WriteRequest) error {
	if node != h.node {
		return h.Peers.Write(ctx, node, req)
	}
	h.entered <- struct{}{}
	select {
	case <-h.release:
	case <-ctx.Done():
	}
	h.outcome <- ctx.Err()
	if err := ctx.Err(); err != nil {
		return err
	}
	return h.Peers.Write(ctx, node, req)
}

// TestDrainLetsAcknowledgedWritesReachTheirReplicas: a write acknowledged
// at ONE whose call to another replica still runs when the node shuts
// down reaches that replica: Drain waits for it (Close alone cancels it,
// leaving the replica without the write and without a hint).
func TestDrainLetsAcknowledgedWritesReachTheirReplicas(t *testing.T) {
	nodes := []placement.Node{{ID: "n1", DC: "dc1", Rack: "r1", Weight: 1}, {ID: "n2", DC: "dc1", Rack: "r2", Weight: 1}}
	held := &heldWrites{node: "n2", entered: make(chan struct{}, 1), release: make(chan struct{}), outcome: make(chan error, 1)}
	topo, coords, stores := testCluster(t, nodes, map[string]int{"dc1": 2}, func(c *Config) {
		if c.NodeID == "n1" {
			held.Peers, c.Peers = c.Peers, held
		}
	})
	ks, _ := topo.Keyspace("ks")
	var key []byte
	for i := 0; key == nil; i++ {
		if k := fmt.Appendf(nil, "k-%d", i); ks.Table.Replicas(topo.Ring.Partition(k))[0].Node == "n1" {
			key = k
		}
	}
	if _, err := coords["n1"].Put(context.Background(), &kvv1.PutRequest{Keyspace: "ks", Key: key, Value: []byte("v"),
		Consistency: &kvv1.Consistency{Level: kvv1.Level_LEVEL_ONE}}); err != nil {
		t.Fatal(err)
	}
	<-held.entered // n2's call runs, after the write was acknowledged
	drained := make(chan struct{})
	go func() {
		coords["n1"].Drain(time.Minute)
		close(drained)
	}()
	// Drain must leave the call running: released a moment later (the
	// call ending before that can only be its cancellation).
	select {
	case err := <-held.outcome:
		t.Fatalf("the replica write still running at shutdown was cut off: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(held.release)
	if err := <-held.outcome; err != nil {
		t.Fatalf("the replica write still running at shutdown was cut off: %v", err)
	}
	<-drained
	set, err := stores["n2"].Get(replica.Loc{Keyspace: ks.ID, Partition: topo.Ring.Partition(key)}, key)
	if err != nil || len(set.Siblings) != 1 {
		t.Fatalf("n2 after the drain holds %v (%v), want the acknowledged write", set, err)
	}
}
