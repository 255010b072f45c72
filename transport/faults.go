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

// Faults wraps Peers and injects failures for tests and drills: a set of
// rules (see Rule) by which requests to a cut node fail as unreachable,
// requests to a delayed node wait first, a share of requests is dropped
// and replies are lost. Nodes are matched by ID, or through DCOf by
// datacenter. Cut, CutDC, Delay, DelayDC and LoseReplies are shorthands
// for rules that never expire; Heal removes every rule.
type Faults struct {
	next Peers
	// DCOf maps a node ID to its DC, for DC-wide rules (may be nil).
	DCOf func(node string) string
	mu   struct {
		sync.RWMutex
		rules []Rule // replaced, never changed in place
		// changed is closed when the rules change (nil: nobody waits).
		changed chan struct{}
		now     func() time.Time
		rand    func() float64
	}
}

// NewFaults wraps next with no faults active.
func NewFaults(next Peers, dcOf func(string) string) *Faults {
	f := &Faults{next: next, DCOf: dcOf}
	f.mu.now = time.Now
	f.mu.rand = defaultRand
	return f
}

// Cut makes requests to a node fail as if it were unreachable.
func (f *Faults) Cut(node string) { f.Add(Rule{ID: "cut/" + node, Nodes: []string{node}, Cut: true}) }

// CutDC makes requests to every node of a DC fail.
func (f *Faults) CutDC(dc string) { f.Add(Rule{ID: "cut/dc:" + dc, DCs: []string{dc}, Cut: true}) }

// Delay makes requests to a node wait d before being sent.
func (f *Faults) Delay(node string, d time.Duration) {
	f.Add(Rule{ID: "delay/" + node, Nodes: []string{node}, Delay: d})
}

// DelayDC makes requests to every node of a DC wait d.
func (f *Faults) DelayDC(dc string, d time.Duration) {
	f.Add(Rule{ID: "delay/dc:" + dc, DCs: []string{dc}, Delay: d})
}

// LoseReplies makes requests to a node reach it, but its replies fail as
// if the connection dropped after the request was applied (the case a
// retry must not apply twice).
func (f *Faults) LoseReplies(node string) {
	f.Add(Rule{ID: "lose/" + node, Nodes: []string{node}, LoseReplies: true})
}

// Heal removes every fault.
func (f *Faults) Heal() { f.Clear() }

// before applies the faults for node: an error if cut or dropped, a wait
// if delayed. It returns whether the reply is to be lost.
func (f *Faults) before(ctx context.Context, node string) (lose bool, err error) {
	// Taken before deciding: a change (a heal) between the two must
	// still end the wait.
	changed := f.changes()
	v := f.decide(node)
	switch {
	case v.cut:
		return false, status.Errorf(codes.Unavailable, "fault injection: node %s is cut off (%s)", node, v.rule)
	case v.drop:
		return false, status.Errorf(codes.Unavailable, "fault injection: request to %s dropped (%s)", node, v.rule)
	}
	// A delay ends early when its rule expires, is removed or the rules
	// are cleared: a call never waits out a fault that is gone.
	wait := v.wait
	for wait > 0 {
		if !v.waitEnds.IsZero() {
			wait = min(wait, v.waitEnds.Sub(f.now()))
		}
		if wait <= 0 {
			break
		}
		start := time.Now()
		t := time.NewTimer(wait)
		select {
		case <-t.C:
			return v.lose, nil
		case <-ctx.Done():
			t.Stop()
			return false, status.FromContextError(ctx.Err()).Err()
		case <-changed:
			t.Stop()
			changed = f.changes()
			wait -= time.Since(start)
			nv := f.redecide(node)
			if nv.cut {
				return false, status.Errorf(codes.Unavailable, "fault injection: node %s is cut off (%s)", node, nv.rule)
			}
			v.lose = nv.lose
			if r, ok := f.liveRule(node, v.waitRule); ok {
				// The rule that set the wait still holds: it alone ends
				// it (expiring, or changed to a shorter delay).
				v.waitEnds = r.Expires
				wait = min(wait, r.Delay+r.Jitter)
			} else {
				// Gone: the longest delay left, if any, bounds the rest.
				v.waitEnds, v.waitRule = nv.waitEnds, nv.waitRule
				wait = min(wait, nv.wait)
			}
		}
	}
	return v.lose, nil
}

// call applies node's faults around one call: an error before it if the
// node is cut (or a wait if delayed), a lost reply after it.
func call[Resp any](f *Faults, ctx context.Context, node string, do func() (Resp, error)) (Resp, error) {
	var zero Resp
	lose, err := f.before(ctx, node)
	if err != nil {
		return zero, err
	}
	resp, err := do()
	if err != nil {
		return zero, err
	}
	if lose {
		return zero, status.Errorf(codes.Unavailable, "fault injection: reply from %s lost", node)
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
