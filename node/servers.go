package node

import (
	"context"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
)

// kvServer is the client API; coordinator errors carry their gRPC status.
type kvServer struct {
	kvv1.UnimplementedKVServer
	n *Node
	z *authorizer
	// maxMsg is the listener's message size limit (call streams split
	// their replies to fit).
	maxMsg int
}

func (s *kvServer) Get(ctx context.Context, req *kvv1.GetRequest) (*kvv1.GetResponse, error) {
	return s.n.coord.Get(ctx, req)
}

func (s *kvServer) Put(ctx context.Context, req *kvv1.PutRequest) (*kvv1.PutResponse, error) {
	return s.n.coord.Put(ctx, req)
}

func (s *kvServer) Delete(ctx context.Context, req *kvv1.DeleteRequest) (*kvv1.DeleteResponse, error) {
	return s.n.coord.Delete(ctx, req)
}

// replicaServer is the node-to-node API.
type replicaServer struct {
	internalv1.UnimplementedReplicaServer
	n *Node
}

func (s *replicaServer) Read(ctx context.Context, req *internalv1.ReadRequest) (*internalv1.ReadResponse, error) {
	return s.n.coord.ServeRead(ctx, req)
}

func (s *replicaServer) Write(ctx context.Context, req *internalv1.WriteRequest) (*internalv1.WriteResponse, error) {
	return s.n.coord.ServeWrite(ctx, req)
}

func (s *replicaServer) Coordinate(ctx context.Context, req *internalv1.CoordinateRequest) (*internalv1.CoordinateResponse, error) {
	return s.n.coord.ServeCoordinate(ctx, req)
}

func (s *replicaServer) Leaves(ctx context.Context, req *internalv1.LeavesRequest) (*internalv1.LeavesResponse, error) {
	return s.n.coord.ServeLeaves(ctx, req)
}

func (s *replicaServer) BucketDigests(ctx context.Context, req *internalv1.BucketDigestsRequest) (*internalv1.BucketDigestsResponse, error) {
	return s.n.coord.ServeBucketDigests(ctx, req)
}

func (s *replicaServer) CollectTombstones(ctx context.Context, req *internalv1.CollectTombstonesRequest) (*internalv1.CollectTombstonesResponse, error) {
	return s.n.coord.ServeCollectTombstones(ctx, req)
}

func (s *replicaServer) ScanPartition(ctx context.Context, req *internalv1.ScanPartitionRequest) (*internalv1.ScanPartitionResponse, error) {
	return s.n.coord.ServeScanPartition(ctx, req)
}

func (s *replicaServer) PartitionSizes(ctx context.Context, req *internalv1.PartitionSizesRequest) (*internalv1.PartitionSizesResponse, error) {
	return s.n.coord.ServePartitionSizes(ctx, req)
}
