package coordinator

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/placement"
)

// emptyCoordinate answers every forwarded write OK with no response in it.
type emptyCoordinate struct{ Peers }

func (emptyCoordinate) Coordinate(context.Context, string, *internalv1.CoordinateRequest) (*internalv1.CoordinateResponse, error) {
	return &internalv1.CoordinateResponse{}, nil
}

// TestForwardAnsweredWithoutAResponse: a replica answering a forwarded
// write OK but without a response (a peer's bug, another release) fails
// the write as INTERNAL, naming the node, instead of crashing this one.
func TestForwardAnsweredWithoutAResponse(t *testing.T) {
	nodes := []placement.Node{
		{ID: "n1", DC: "dc1", Rack: "r1", Weight: 1},
		{ID: "n2", DC: "dc1", Rack: "r2", Weight: 1},
		{ID: "n3", DC: "dc1", Rack: "r3", Weight: 1},
	}
	topo, coords, _ := testCluster(t, nodes, map[string]int{"dc1": 2}, func(c *Config) {
		if c.NodeID == "n1" {
			c.Peers = emptyCoordinate{c.Peers}
		}
	})
	ks, _ := topo.Keyspace("ks")
	var key []byte
	for i := 0; key == nil; i++ {
		k := fmt.Appendf(nil, "k-%d", i)
		if !slices.ContainsFunc(ks.Table.Replicas(topo.Ring.Partition(k)), func(r placement.Replica) bool { return r.Node == "n1" }) {
			key = k
		}
	}
	_, err := coords["n1"].Put(context.Background(), &kvv1.PutRequest{Keyspace: "ks", Key: key, Value: []byte("v")})
	if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "answered the forwarded write without a response") {
		t.Fatalf("a forward answered without a response: %v, want INTERNAL", err)
	}
}
