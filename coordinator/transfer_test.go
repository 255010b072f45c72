package coordinator

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	"github.com/meridiankv/meridian/engine/memory"
	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/placement"
	"github.com/meridiankv/meridian/replica"
	"github.com/meridiankv/meridian/version"
)

// transferCoordinator is a coordinator with just a store and a topology of
// one keyspace ("ks") on a ring of 16 partitions.
func transferCoordinator(t *testing.T) (*Coordinator, *replica.Store, uint32) {
	t.Helper()
	store, err := replica.Open(memory.New(), "n1")
	if err != nil {
		t.Fatal(err)
	}
	topo, err := membership.NewTopology(1, 16,
		[]membership.NodeInfo{{Node: placement.Node{ID: "n1", DC: "dc1", Rack: "r1", Weight: 1}}},
		[]membership.KeyspaceSpec{{Name: "ks", Replication: map[string]int{"dc1": 1}}})
	if err != nil {
		t.Fatal(err)
	}
	ks, _ := topo.Keyspace("ks")
	return &Coordinator{cfg: Config{Store: store, Topology: func() *membership.Topology { return topo }}}, store, ks.ID
}

func storeValue(t *testing.T, s *replica.Store, loc replica.Loc, key []byte, size int) {
	t.Helper()
	_, err := s.Update(loc, key, false, func(cur version.Set) (version.Set, error) {
		next, _ := cur.Put(cur.Context(), s.Actor(), version.Value{Bytes: bytes.Repeat([]byte{'v'}, size)}, 1)
		return next, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestServeScanPartition(t *testing.T) {
	c, store, id := transferCoordinator(t)
	loc := replica.Loc{Keyspace: id, Partition: 3}
	for i := range 12_000 {
		storeValue(t, store, loc, fmt.Appendf(nil, "k%05d", i), 8)
	}
	ctx := context.Background()
	scan := func(req *internalv1.ScanPartitionRequest) *internalv1.ScanPartitionResponse {
		t.Helper()
		resp, err := c.ServeScanPartition(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}

	// Defaults: 1,000 keys.
	resp := scan(&internalv1.ScanPartitionRequest{Keyspace: "ks", Partition: 3})
	if len(resp.GetEntries()) != DefaultScanKeys || resp.GetDone() {
		t.Fatalf("default page: %d entries (done %v), want %d", len(resp.GetEntries()), resp.GetDone(), DefaultScanKeys)
	}
	set, err := version.DecodeSet(resp.GetEntries()[0].GetSet())
	if err != nil || len(set.Live()) != 1 || string(resp.GetEntries()[0].GetKey()) != "k00000" {
		t.Fatalf("first entry %q: %v, %v", resp.GetEntries()[0].GetKey(), set, err)
	}
	// A greedy caller is clamped to 10,000 keys.
	resp = scan(&internalv1.ScanPartitionRequest{Keyspace: "ks", Partition: 3, MaxKeys: 1 << 30, MaxBytes: 1 << 31})
	if len(resp.GetEntries()) != MaxScanKeys {
		t.Fatalf("page asked for 2^30 keys: %d entries, want the clamp %d", len(resp.GetEntries()), MaxScanKeys)
	}
	// Paging from the last key to the end.
	last := resp.GetEntries()[len(resp.GetEntries())-1].GetKey()
	resp = scan(&internalv1.ScanPartitionRequest{Keyspace: "ks", Partition: 3, After: last, MaxKeys: 5000})
	if len(resp.GetEntries()) != 2000 || !resp.GetDone() || string(resp.GetEntries()[0].GetKey()) != "k10000" {
		t.Fatalf("last page: %d entries from %q (done %v), want 2000 from k10000, done", len(resp.GetEntries()), resp.GetEntries()[0].GetKey(), resp.GetDone())
	}
	// Byte bound.
	resp = scan(&internalv1.ScanPartitionRequest{Keyspace: "ks", Partition: 3, MaxBytes: 1})
	if len(resp.GetEntries()) != 1 || resp.GetDone() {
		t.Fatalf("page of 1 byte: %d entries, want 1", len(resp.GetEntries()))
	}
	// An empty partition is done at once.
	resp = scan(&internalv1.ScanPartitionRequest{Keyspace: "ks", Partition: 4})
	if len(resp.GetEntries()) != 0 || !resp.GetDone() {
		t.Fatalf("empty partition: %d entries, done %v", len(resp.GetEntries()), resp.GetDone())
	}

	for _, tc := range []struct {
		req  *internalv1.ScanPartitionRequest
		code codes.Code
	}{
		{&internalv1.ScanPartitionRequest{Keyspace: "nope", Partition: 3}, codes.NotFound},
		{&internalv1.ScanPartitionRequest{Keyspace: "ks", Partition: 16}, codes.InvalidArgument},
		{&internalv1.ScanPartitionRequest{Keyspace: "ks", Partition: 3, After: make([]byte, MaxKeySize+1)}, codes.InvalidArgument},
	} {
		if _, err := c.ServeScanPartition(ctx, tc.req); status.Code(err) != tc.code {
			t.Errorf("scan %q partition %d (after %d bytes) = %v, want %v", tc.req.GetKeyspace(), tc.req.GetPartition(), len(tc.req.GetAfter()), err, tc.code)
		}
	}
}

// TestServeScanPartitionClampsBytes: a page never carries much more than
// MaxScanBytes, whatever the caller asks.
func TestServeScanPartitionClampsBytes(t *testing.T) {
	c, store, id := transferCoordinator(t)
	loc := replica.Loc{Keyspace: id, Partition: 1}
	for i := range 40 {
		storeValue(t, store, loc, fmt.Appendf(nil, "big%02d", i), 1<<20)
	}
	resp, err := c.ServeScanPartition(context.Background(), &internalv1.ScanPartitionRequest{Keyspace: "ks", Partition: 1, MaxBytes: ^uint32(0)})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(resp.GetEntries()); n < 16 || n > 17 {
		t.Fatalf("page of 1 MiB values asked for 4 GiB: %d entries, want the 16 MiB clamp (16-17)", n)
	}
	resp, err = c.ServeScanPartition(context.Background(), &internalv1.ScanPartitionRequest{Keyspace: "ks", Partition: 1})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(resp.GetEntries()); n < 4 || n > 5 {
		t.Fatalf("default page of 1 MiB values: %d entries, want the 4 MiB default (4-5)", n)
	}
}

func TestServePartitionSizes(t *testing.T) {
	c, store, id := transferCoordinator(t)
	storeValue(t, store, replica.Loc{Keyspace: id, Partition: 2}, []byte("a"), 100)
	storeValue(t, store, replica.Loc{Keyspace: id, Partition: 5}, []byte("b"), 1000)
	ctx := context.Background()
	resp, err := c.ServePartitionSizes(ctx, &internalv1.PartitionSizesRequest{Keyspace: "ks", Partitions: []uint32{5, 0, 2}})
	if err != nil {
		t.Fatal(err)
	}
	b := resp.GetBytes()
	if len(b) != 3 || b[0] <= 1000 || b[1] != 0 || b[2] <= 100 || b[2] >= b[0] {
		t.Fatalf("sizes of partitions 5, 0, 2 = %v", b)
	}
	if _, err := c.ServePartitionSizes(ctx, &internalv1.PartitionSizesRequest{Keyspace: "ks", Partitions: make([]uint32, MaxSizePartitions+1)}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("%d partitions = %v, want INVALID_ARGUMENT", MaxSizePartitions+1, err)
	}
	if _, err := c.ServePartitionSizes(ctx, &internalv1.PartitionSizesRequest{Keyspace: "ks", Partitions: []uint32{1, 99}}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("partition out of range = %v, want INVALID_ARGUMENT", err)
	}
	if _, err := c.ServePartitionSizes(ctx, &internalv1.PartitionSizesRequest{Keyspace: "nope", Partitions: []uint32{1}}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown keyspace = %v, want NOT_FOUND", err)
	}
}
