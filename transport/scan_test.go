package transport

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
)

// scanPeers is an in-memory transport that also serves partition scans.
type scanPeers struct {
	*Mem
	scans, sizes int
}

func (p *scanPeers) ScanPartition(context.Context, string, *internalv1.ScanPartitionRequest) (*internalv1.ScanPartitionResponse, error) {
	p.scans++
	return &internalv1.ScanPartitionResponse{Done: true}, nil
}

func (p *scanPeers) PartitionSizes(_ context.Context, _ string, req *internalv1.PartitionSizesRequest) (*internalv1.PartitionSizesResponse, error) {
	p.sizes++
	return &internalv1.PartitionSizesResponse{Bytes: make([]uint64, len(req.GetPartitions()))}, nil
}

func TestFaultsWrapPartitionScans(t *testing.T) {
	ctx := context.Background()
	p := &scanPeers{Mem: NewMem()}
	f := NewFaults(p, nil)
	if resp, err := f.ScanPartition(ctx, "n1", &internalv1.ScanPartitionRequest{}); err != nil || !resp.GetDone() || p.scans != 1 {
		t.Fatalf("healthy scan: %v, %v (calls %d)", resp, err, p.scans)
	}
	if resp, err := f.PartitionSizes(ctx, "n1", &internalv1.PartitionSizesRequest{Partitions: []uint32{1, 2}}); err != nil || len(resp.GetBytes()) != 2 || p.sizes != 1 {
		t.Fatalf("healthy sizes: %v, %v (calls %d)", resp, err, p.sizes)
	}
	f.Cut("n1")
	if _, err := f.ScanPartition(ctx, "n1", &internalv1.ScanPartitionRequest{}); status.Code(err) != codes.Unavailable || p.scans != 1 {
		t.Fatalf("scan of a cut node = %v (calls %d), want UNAVAILABLE without a call", err, p.scans)
	}
	if _, err := f.PartitionSizes(ctx, "n1", &internalv1.PartitionSizesRequest{}); status.Code(err) != codes.Unavailable || p.sizes != 1 {
		t.Fatalf("sizes of a cut node = %v (calls %d), want UNAVAILABLE without a call", err, p.sizes)
	}
	f.Heal()
	f.LoseReplies("n1")
	if _, err := f.ScanPartition(ctx, "n1", &internalv1.ScanPartitionRequest{}); status.Code(err) != codes.Unavailable || p.scans != 2 {
		t.Fatalf("scan with its reply lost = %v (calls %d), want UNAVAILABLE after the call", err, p.scans)
	}

	plain := NewFaults(NewMem(), nil)
	if _, err := plain.ScanPartition(ctx, "n1", &internalv1.ScanPartitionRequest{}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("scan through a transport without scans = %v, want UNIMPLEMENTED", err)
	}
	if _, err := plain.PartitionSizes(ctx, "n1", &internalv1.PartitionSizesRequest{}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("sizes through a transport without scans = %v, want UNIMPLEMENTED", err)
	}
}

func TestGRPCScanUnknownNode(t *testing.T) {
	g := NewGRPC(func(string) (string, bool) { return "", false })
	defer g.Close()
	if _, err := g.ScanPartition(context.Background(), "ghost", &internalv1.ScanPartitionRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("scan of an unknown node = %v, want UNAVAILABLE", err)
	}
	if _, err := g.PartitionSizes(context.Background(), "ghost", &internalv1.PartitionSizesRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("sizes of an unknown node = %v, want UNAVAILABLE", err)
	}
}

// scanServer serves ScanPartition and PartitionSizes over real gRPC.
type scanServer struct {
	internalv1.UnimplementedReplicaServer
}

func (scanServer) ScanPartition(_ context.Context, req *internalv1.ScanPartitionRequest) (*internalv1.ScanPartitionResponse, error) {
	return &internalv1.ScanPartitionResponse{Entries: []*internalv1.ScanEntry{{Key: append(req.GetAfter(), 'x'), Set: []byte{1}}}}, nil
}

func (scanServer) PartitionSizes(_ context.Context, req *internalv1.PartitionSizesRequest) (*internalv1.PartitionSizesResponse, error) {
	out := make([]uint64, len(req.GetPartitions()))
	for i, p := range req.GetPartitions() {
		out[i] = uint64(p) * 10
	}
	return &internalv1.PartitionSizesResponse{Bytes: out}, nil
}

func TestGRPCPartitionScansOverLoopback(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	internalv1.RegisterReplicaServer(srv, scanServer{})
	go srv.Serve(lis)
	defer srv.Stop()
	g := NewGRPC(func(string) (string, bool) { return lis.Addr().String(), true })
	defer g.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := g.ScanPartition(ctx, "n1", &internalv1.ScanPartitionRequest{After: []byte("k")})
	if err != nil || len(resp.GetEntries()) != 1 || string(resp.GetEntries()[0].GetKey()) != "kx" {
		t.Fatalf("ScanPartition over gRPC = %v, %v", resp, err)
	}
	sizes, err := g.PartitionSizes(ctx, "n1", &internalv1.PartitionSizesRequest{Partitions: []uint32{1, 3}})
	if err != nil || len(sizes.GetBytes()) != 2 || sizes.GetBytes()[1] != 30 {
		t.Fatalf("PartitionSizes over gRPC = %v, %v", sizes, err)
	}
}
