package transport

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
)

// Peers is the node-to-node interface Faults wraps (the coordinator's view).
type Peers interface {
	Read(ctx context.Context, node string, req *internalv1.ReadRequest) (*internalv1.ReadResponse, error)
	Write(ctx context.Context, node string, req *internalv1.WriteRequest) error
	Coordinate(ctx context.Context, node string, req *internalv1.CoordinateRequest) (*internalv1.CoordinateResponse, error)
}

// Faults wraps Peers and injects failures for tests and drills: requests to
// a cut node fail as unreachable, requests to a delayed node wait first.
// Nodes are matched by ID, or through DCOf by datacenter.
type Faults struct {
	next Peers
	// DCOf maps a node ID to its DC, for DC-wide rules (may be nil).
	DCOf func(node string) string
	mu   struct {
		sync.RWMutex
		cut   map[string]bool          // node ID or "dc:NAME"
		delay map[string]time.Duration // node ID or "dc:NAME"
		lose  map[string]bool          // node ID: replies lost
	}
}

// NewFaults wraps next with no faults active.
func NewFaults(next Peers, dcOf func(string) string) *Faults {
	f := &Faults{next: next, DCOf: dcOf}
	f.mu.cut = map[string]bool{}
	f.mu.delay = map[string]time.Duration{}
	f.mu.lose = map[string]bool{}
	return f
}

// Cut makes requests to a node fail as if it were unreachable.
func (f *Faults) Cut(node string) { f.set(node, true, -1) }

// CutDC makes requests to every node of a DC fail.
func (f *Faults) CutDC(dc string) { f.set("dc:"+dc, true, -1) }

// Delay makes requests to a node wait d before being sent.
func (f *Faults) Delay(node string, d time.Duration) { f.set(node, false, d) }

// DelayDC makes requests to every node of a DC wait d.
func (f *Faults) DelayDC(dc string, d time.Duration) { f.set("dc:"+dc, false, d) }

// LoseReplies makes requests to a node reach it, but its replies fail as
// if the connection dropped after the request was applied (the case a
// retry must not apply twice).
func (f *Faults) LoseReplies(node string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mu.lose[node] = true
}

// after applies reply loss for node.
func (f *Faults) after(node string, err error) error {
	f.mu.RLock()
	lose := f.mu.lose[node]
	f.mu.RUnlock()
	if lose && err == nil {
		return status.Errorf(codes.Unavailable, "fault injection: reply from %s lost", node)
	}
	return err
}

// Heal removes every fault.
func (f *Faults) Heal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.mu.cut)
	clear(f.mu.delay)
	clear(f.mu.lose)
}

func (f *Faults) set(k string, cut bool, d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if cut {
		f.mu.cut[k] = true
	}
	if d >= 0 {
		f.mu.delay[k] = d
	}
}

// before applies the faults for node: an error if cut, a wait if delayed.
func (f *Faults) before(ctx context.Context, node string) error {
	dcKey := ""
	if f.DCOf != nil {
		dcKey = "dc:" + f.DCOf(node)
	}
	f.mu.RLock()
	cut := f.mu.cut[node] || f.mu.cut[dcKey]
	d := max(f.mu.delay[node], f.mu.delay[dcKey])
	f.mu.RUnlock()
	if cut {
		return status.Errorf(codes.Unavailable, "fault injection: node %s is cut off", node)
	}
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
	return nil
}

// call applies node's faults around one call: an error before it if the
// node is cut (or a wait if delayed), a lost reply after it.
func call[Resp any](f *Faults, ctx context.Context, node string, do func() (Resp, error)) (Resp, error) {
	var zero Resp
	if err := f.before(ctx, node); err != nil {
		return zero, err
	}
	resp, err := do()
	if err = f.after(node, err); err != nil {
		return zero, err
	}
	return resp, nil
}

// Read applies faults, then reads.
func (f *Faults) Read(ctx context.Context, node string, req *internalv1.ReadRequest) (*internalv1.ReadResponse, error) {
	return call(f, ctx, node, func() (*internalv1.ReadResponse, error) { return f.next.Read(ctx, node, req) })
}

// Write applies faults, then writes.
func (f *Faults) Write(ctx context.Context, node string, req *internalv1.WriteRequest) error {
	_, err := call(f, ctx, node, func() (struct{}, error) { return struct{}{}, f.next.Write(ctx, node, req) })
	return err
}

// Coordinate applies faults, then forwards.
func (f *Faults) Coordinate(ctx context.Context, node string, req *internalv1.CoordinateRequest) (*internalv1.CoordinateResponse, error) {
	return call(f, ctx, node, func() (*internalv1.CoordinateResponse, error) { return f.next.Coordinate(ctx, node, req) })
}

// exchanger is the part of a transport that carries Merkle exchanges
// (GRPC has it; Mem does not).
type exchanger interface {
	Leaves(context.Context, string, *internalv1.LeavesRequest) (*internalv1.LeavesResponse, error)
	BucketDigests(context.Context, string, *internalv1.BucketDigestsRequest) (*internalv1.BucketDigestsResponse, error)
	CollectTombstones(context.Context, string, *internalv1.CollectTombstonesRequest) (*internalv1.CollectTombstonesResponse, error)
}

func (f *Faults) exchanger() (exchanger, error) {
	x, ok := f.next.(exchanger)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "transport has no Merkle exchange")
	}
	return x, nil
}

// Leaves applies faults, then asks for Merkle leaves.
func (f *Faults) Leaves(ctx context.Context, node string, req *internalv1.LeavesRequest) (*internalv1.LeavesResponse, error) {
	x, err := f.exchanger()
	if err != nil {
		return nil, err
	}
	return call(f, ctx, node, func() (*internalv1.LeavesResponse, error) { return x.Leaves(ctx, node, req) })
}

// BucketDigests applies faults, then asks for bucket digests.
func (f *Faults) BucketDigests(ctx context.Context, node string, req *internalv1.BucketDigestsRequest) (*internalv1.BucketDigestsResponse, error) {
	x, err := f.exchanger()
	if err != nil {
		return nil, err
	}
	return call(f, ctx, node, func() (*internalv1.BucketDigestsResponse, error) { return x.BucketDigests(ctx, node, req) })
}

// CollectTombstones applies faults, then asks a peer to collect.
func (f *Faults) CollectTombstones(ctx context.Context, node string, req *internalv1.CollectTombstonesRequest) (*internalv1.CollectTombstonesResponse, error) {
	x, err := f.exchanger()
	if err != nil {
		return nil, err
	}
	return call(f, ctx, node, func() (*internalv1.CollectTombstonesResponse, error) { return x.CollectTombstones(ctx, node, req) })
}

// scanner is the part of a transport that carries partition transfers
// (GRPC has it; Mem does not).
type scanner interface {
	ScanPartition(context.Context, string, *internalv1.ScanPartitionRequest) (*internalv1.ScanPartitionResponse, error)
	PartitionSizes(context.Context, string, *internalv1.PartitionSizesRequest) (*internalv1.PartitionSizesResponse, error)
}

func (f *Faults) scanner() (scanner, error) {
	x, ok := f.next.(scanner)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "transport has no partition scans")
	}
	return x, nil
}

// ScanPartition applies faults, then asks for a page of a partition.
func (f *Faults) ScanPartition(ctx context.Context, node string, req *internalv1.ScanPartitionRequest) (*internalv1.ScanPartitionResponse, error) {
	x, err := f.scanner()
	if err != nil {
		return nil, err
	}
	return call(f, ctx, node, func() (*internalv1.ScanPartitionResponse, error) { return x.ScanPartition(ctx, node, req) })
}

// PartitionSizes applies faults, then asks for partition sizes.
func (f *Faults) PartitionSizes(ctx context.Context, node string, req *internalv1.PartitionSizesRequest) (*internalv1.PartitionSizesResponse, error) {
	x, err := f.scanner()
	if err != nil {
		return nil, err
	}
	return call(f, ctx, node, func() (*internalv1.PartitionSizesResponse, error) { return x.PartitionSizes(ctx, node, req) })
}
