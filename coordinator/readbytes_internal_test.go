package coordinator

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/placement"
)

// gatedReads holds replica reads of one node until gate is closed.
type gatedReads struct {
	Peers
	node string
	gate chan struct{}
}

func (g gatedReads) Read(ctx context.Context, node string, req *internalv1.ReadRequest) (*internalv1.ReadResponse, error) {
	if node == g.node {
		select {
		case <-g.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return g.Peers.Read(ctx, node, req)
}

// TestReadsBoundTheBytesTheyHold: the replica replies a read in progress
// holds count against MaxReadBytes; past it a new read is shed with
// RESOURCE_EXHAUSTED naming the bound (instead of holding more large
// replies in memory), and once the read ends its bytes are freed.
func TestReadsBoundTheBytesTheyHold(t *testing.T) {
	nodes := []placement.Node{
		{ID: "n1", DC: "dc1", Rack: "r1", Weight: 1},
		{ID: "n2", DC: "dc1", Rack: "r2", Weight: 1},
		{ID: "n3", DC: "dc1", Rack: "r3", Weight: 1},
	}
	gate := make(chan struct{})
	obs := &shedCounter{shed: map[string]int{}}
	topo, coords, stores := testCluster(t, nodes, map[string]int{"dc1": 3}, func(c *Config) {
		c.Observer, c.MaxReadBytes, c.RequestTimeout = obs, 32<<10, 10*time.Second
		c.Peers = gatedReads{Peers: c.Peers, node: "n2", gate: gate}
		c.Live = liveExcept{"n3": true} // the QUORUM read needs n2
	})
	key := []byte("k")
	for _, id := range []string{"n1", "n2"} {
		storeOnly(t, topo, stores[id], key, bytes.Repeat([]byte("v"), 64<<10))
	}
	n1 := coords["n1"]
	get := func() error {
		_, err := n1.Get(context.Background(), &kvv1.GetRequest{Keyspace: "ks", Key: key, Consistency: &kvv1.Consistency{Level: kvv1.Level_LEVEL_QUORUM}})
		return err
	}
	first := make(chan error, 1)
	go func() { first <- get() }()
	deadline := time.Now().Add(10 * time.Second)
	for n1.ReadBytes() < 64<<10 {
		if time.Now().After(deadline) {
			t.Fatalf("reads hold %d bytes, want n1's own 64 KiB reply counted while n2's is awaited", n1.ReadBytes())
		}
		time.Sleep(time.Millisecond)
	}
	err := get()
	var over *OverloadError
	if !errors.As(err, &over) || status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "KiB of replica replies, the limit is 32.0 KiB (max-read-bytes)") || obs.count("read_bytes") != 1 {
		t.Fatalf("a read while others hold over max-read-bytes: %v (%d shed), want RESOURCE_EXHAUSTED naming the bound", err, obs.count("read_bytes"))
	}
	close(gate)
	if err := <-first; err != nil {
		t.Fatalf("the read in progress: %v", err)
	}
	if n := n1.ReadBytes(); n != 0 {
		t.Fatalf("reads hold %d bytes after they ended, want 0", n)
	}
	if err := get(); err != nil {
		t.Fatalf("a read once the others ended: %v", err)
	}
}
