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
	coords, key := forwardingN1(t, func(p Peers) Peers { return emptyCoordinate{p} })
	_, err := coords["n1"].Put(context.Background(), &kvv1.PutRequest{Keyspace: "ks", Key: key, Value: []byte("v")})
	if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "answered the forwarded write without a response") {
		t.Fatalf("a forward answered without a response: %v, want INTERNAL", err)
	}
}

// diskLowCoordinate refuses every forwarded write for lack of disk.
type diskLowCoordinate struct{ Peers }

func (diskLowCoordinate) Coordinate(_ context.Context, node string, _ *internalv1.CoordinateRequest) (*internalv1.CoordinateResponse, error) {
	return nil, withInfo(status.Newf(codes.ResourceExhausted, "node %s is low on disk", node), ReasonDiskLow, nil).Err()
}

// TestForwardRefusedForDiskNamesTheReplicas: a write forwarded (a local
// level: no fallback takes it) that every replica refuses for lack of
// disk fails UNAVAILABLE naming them as low on disk, so the operator
// frees disk there, rather than "0 alive".
func TestForwardRefusedForDiskNamesTheReplicas(t *testing.T) {
	coords, key := forwardingN1(t, func(p Peers) Peers { return diskLowCoordinate{p} })
	_, err := coords["n1"].Put(context.Background(), &kvv1.PutRequest{Keyspace: "ks", Key: key, Value: []byte("v"),
		Consistency: &kvv1.Consistency{Level: kvv1.Level_LEVEL_LOCAL_QUORUM}})
	st := status.Convert(err)
	var md map[string]string
	for _, d := range st.Details() {
		if info, ok := d.(interface{ GetMetadata() map[string]string }); ok {
			md = info.GetMetadata()
		}
	}
	if st.Code() != codes.Unavailable || md["low_on_disk"] != "2" || !strings.Contains(err.Error(), "free disk space on") {
		t.Fatalf("a forward every replica refused for disk: %v (details %v), want UNAVAILABLE with low_on_disk 2 and what to do", err, md)
	}
}

// forwardingN1 is three nodes with replication 2, n1's peers wrapped by
// wrap, and a key n1 does not replicate (its writes are forwarded).
func forwardingN1(t *testing.T, wrap func(Peers) Peers) (map[string]*Coordinator, []byte) {
	t.Helper()
	nodes := []placement.Node{
		{ID: "n1", DC: "dc1", Rack: "r1", Weight: 1},
		{ID: "n2", DC: "dc1", Rack: "r2", Weight: 1},
		{ID: "n3", DC: "dc1", Rack: "r3", Weight: 1},
	}
	topo, coords, _ := testCluster(t, nodes, map[string]int{"dc1": 2}, func(c *Config) {
		if c.NodeID == "n1" {
			c.Peers = wrap(c.Peers)
		}
	})
	ks, _ := topo.Keyspace("ks")
	for i := 0; ; i++ {
		k := fmt.Appendf(nil, "k-%d", i)
		if !slices.ContainsFunc(ks.Table.Replicas(topo.Ring.Partition(k)), func(r placement.Replica) bool { return r.Node == "n1" }) {
			return coords, k
		}
	}
}
