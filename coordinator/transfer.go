package coordinator

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
)

// The source side of partition transfers: a new owner pulls a partition
// from this replica page by page (ServeScanPartition), and an operator's
// plan sizes the moves (ServePartitionSizes).

// Page bounds of ServeScanPartition: the defaults for a request that sets
// none, and the most a request may ask for (larger asks are clamped).
const (
	DefaultScanKeys  = 1000
	DefaultScanBytes = 4 << 20
	MaxScanKeys      = 10_000
	MaxScanBytes     = 16 << 20
)

// MaxSizePartitions bounds the partitions of one PartitionSizes request
// (the most a ring may have).
const MaxSizePartitions = 65536

// ServeScanPartition returns one page of a partition's keys with their
// stored sets, in key order after req.After. The page bounds default to
// DefaultScanKeys and DefaultScanBytes and are clamped to MaxScanKeys and
// MaxScanBytes.
func (c *Coordinator) ServeScanPartition(ctx context.Context, req *internalv1.ScanPartitionRequest) (*internalv1.ScanPartitionResponse, error) {
	loc, err := c.locatePartition(req.GetKeyspace(), req.GetPartition())
	if err != nil {
		return nil, err
	}
	if len(req.GetAfter()) > MaxKeySize {
		return nil, invalidf("after is %d bytes, longer than any key (%d): resume from the last key received", len(req.GetAfter()), MaxKeySize)
	}
	maxKeys := pageBound(req.GetMaxKeys(), DefaultScanKeys, MaxScanKeys)
	maxBytes := pageBound(req.GetMaxBytes(), DefaultScanBytes, MaxScanBytes)
	entries, done, err := c.cfg.Store.ScanPage(loc, req.GetAfter(), maxKeys, maxBytes)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "scan partition: %v", err)
	}
	resp := &internalv1.ScanPartitionResponse{Entries: make([]*internalv1.ScanEntry, len(entries)), Done: done}
	for i, e := range entries {
		resp.Entries[i] = &internalv1.ScanEntry{Key: e.Key, Set: e.Set}
	}
	return resp, nil
}

// pageBound is a caller's page bound: def for 0, at most limit.
func pageBound(asked uint32, def, limit int) int {
	if asked == 0 {
		return def
	}
	return int(min(uint64(asked), uint64(limit)))
}

// ServePartitionSizes returns the bytes this node holds for each requested
// partition of a keyspace, in request order (at most MaxSizePartitions
// partitions per request).
func (c *Coordinator) ServePartitionSizes(ctx context.Context, req *internalv1.PartitionSizesRequest) (*internalv1.PartitionSizesResponse, error) {
	if n := len(req.GetPartitions()); n > MaxSizePartitions {
		return nil, invalidf("%d partitions in one request, at most %d: split the request", n, MaxSizePartitions)
	}
	resp := &internalv1.PartitionSizesResponse{Bytes: make([]uint64, len(req.GetPartitions()))}
	for i, p := range req.GetPartitions() {
		if err := ctx.Err(); err != nil {
			return nil, status.FromContextError(err).Err()
		}
		loc, err := c.locatePartition(req.GetKeyspace(), p)
		if err != nil {
			return nil, err
		}
		if resp.Bytes[i], err = c.cfg.Store.PartitionBytes(loc); err != nil {
			return nil, status.Errorf(codes.Internal, "size of partition %d: %v", p, err)
		}
	}
	return resp, nil
}
