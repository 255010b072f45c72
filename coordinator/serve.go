package coordinator

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"go.opentelemetry.io/otel/trace"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/placement"
	"github.com/meridiankv/meridian/replica"
	"github.com/meridiankv/meridian/version"
)

// The replica side: what this node does when another coordinator reads,
// writes or forwards to it.

// locate resolves a keyspace name and key sent by a peer.
func (c *Coordinator) locate(keyspace string, key []byte) (replica.Loc, error) {
	loc, _, err := c.locateKS(keyspace, key)
	return loc, err
}

// locateKS is locate that returns the keyspace too.
func (c *Coordinator) locateKS(keyspace string, key []byte) (replica.Loc, *membership.Keyspace, error) {
	topo := c.cfg.Topology()
	ks, ok := topo.Keyspace(keyspace)
	if !ok {
		return replica.Loc{}, nil, &NotFoundError{Keyspace: keyspace}
	}
	if len(key) == 0 || len(key) > MaxKeySize {
		return replica.Loc{}, nil, invalidf("key length %d out of range", len(key))
	}
	return replica.Loc{Keyspace: ks.ID, Partition: topo.Ring.Partition(key)}, ks, nil
}

// checkIncoming checks a set a peer sent (a replica write, a hint, a
// repair, a transfer) before anything of it is stored: checkOwnActor,
// then checkFuture. Each refusal is replica.Refuse's, one key refused.
func (c *Coordinator) checkIncoming(ks *membership.Keyspace, set version.Set) error {
	if err := c.checkOwnActor(set); err != nil {
		return err
	}
	return c.checkFuture(ks, set)
}

// checkOwnActor refuses a set that claims versions of this node's own
// actor, or of the one-off actors it mints as a fallback (actor~N), with a
// counter it never handed out (replica.Store.MintedUpTo): every such
// version is minted here, so the set was crafted or corrupted. Stored,
// its clock would claim writes this node has not made yet: the next write
// of the key here would mint past it, or fail at the counters' limit, and
// every replica holding that clock would take later versions of this
// actor below it as already seen (a fallback write as actor~N, dropped on
// merge though acknowledged).
func (c *Coordinator) checkOwnActor(set version.Set) error {
	actor, minted := c.cfg.Store.Actor(), c.cfg.Store.MintedUpTo()
	for _, e := range set.Clock.Entries {
		if why := ownActorPast(actor, minted, e.Node, e.Counter); why != "" {
			return replica.Refuse(fmt.Sprintf("the set's clock claims versions of %s up to counter %d, but %s; it has minted only up to %d",
				e.Node, e.Counter, why, minted))
		}
	}
	for _, sib := range set.Siblings {
		if why := ownActorPast(actor, minted, sib.Dot.Node, sib.Dot.Counter); why != "" {
			return replica.Refuse(fmt.Sprintf("the set holds a version %v, but %s; it has minted only up to %d", sib.Dot, why, minted))
		}
	}
	return nil
}

// ownActorPast says why a version (node, counter) cannot have been minted
// here ("" when it can, or is not this node's): node is actor or a
// one-off actor~N, and N or the counter is past minted (both come from
// the store's counters), or N is not a number this node would mint.
func ownActorPast(actor string, minted uint64, node string, counter uint64) string {
	if node == actor {
		if counter > minted {
			return "that is this node's actor"
		}
		return ""
	}
	if len(node) <= len(actor)+1 || node[len(actor)] != '~' || node[:len(actor)] != actor {
		return ""
	}
	n, err := strconv.ParseUint(node[len(actor)+1:], 10, 64)
	switch {
	case err != nil:
		return "that names one of this node's fallback actors, with a suffix it never mints"
	case n > minted || counter > minted:
		return "that is one of this node's fallback actors"
	}
	return ""
}

// checkFuture refuses, in a last-writer-wins keyspace, a set holding a
// version written more than FutureWriteLimit ahead of this node's clock:
// stored, it would win over every write for as long as it is ahead, and
// each of them would be acknowledged and lost. (Where siblings are kept,
// a timestamp orders nothing and is not checked.) The writer's clock is
// fast, or the set was crafted; once the clock catches up it is accepted,
// so repair of such a version is only delayed.
func (c *Coordinator) checkFuture(ks *membership.Keyspace, set version.Set) error {
	if ks.Conflict != membership.ConflictLWW {
		return nil
	}
	now := c.cfg.Now()
	limit := now.UnixNano() + int64(c.cfg.FutureWriteLimit)
	for _, sib := range set.Siblings {
		if t := sib.Value.Time; t.Wall > limit {
			c.clockSkew(t)
			return replica.Refuse(fmt.Sprintf(
				"a version written at %s is %v ahead of this node's clock, more than %v: is the writer's clock fast? (check NTP)",
				t.Time().UTC().Format(time.RFC3339Nano), t.Time().Sub(now).Round(time.Millisecond), c.cfg.FutureWriteLimit))
		}
	}
	return nil
}

// ServeRead returns this node's copy of a key.
func (c *Coordinator) ServeRead(ctx context.Context, req *internalv1.ReadRequest) (*internalv1.ReadResponse, error) {
	loc, err := c.locate(req.GetKeyspace(), req.GetKey())
	if err != nil {
		return nil, err
	}
	if err := c.checkRoute(ctx, loc.Partition); err != nil {
		return nil, err
	}
	_, span := c.replicaSpan(ctx, "meridian.engine.read", c.cfg.NodeID)
	// The stored encoding goes out as it is (usually the row cache's
	// bytes, only read while the reply is marshalled): no decoding and
	// encoding again on a path that only passes the set on.
	enc, err := c.cfg.Store.GetEncoded(loc, req.GetKey())
	endSpan(span, err)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "read: %v", err)
	}
	return &internalv1.ReadResponse{Set: enc}, nil
}

// ServeWrite merges a peer's sibling set into this node's copy, or keeps it
// as a hint for an unreachable node.
func (c *Coordinator) ServeWrite(ctx context.Context, req *internalv1.WriteRequest) (*internalv1.WriteResponse, error) {
	loc, ks, err := c.locateKS(req.GetKeyspace(), req.GetKey())
	if err != nil {
		return nil, err
	}
	set, err := version.DecodeSetShared(req.GetSet()) // the request's own bytes
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "sibling set: %v", err)
	}
	if err := c.checkIncoming(ks, set); err != nil {
		return nil, err
	}
	// A hint handed over by a removed node (whose plain writes peers
	// refuse) is merged here, as its delivery would be, when it names
	// this node, or a node no longer a member (a hint handed on, born
	// earlier: a fallback write naming a node this node has not heard of
	// yet is refused, not merged, so that the sender knows no hint was
	// kept), and this node replicates the partition by its own agreed
	// ring (the sender's route, stopped at its removal, is not checked).
	target, toSelf, member := req.GetHintFor(), false, false
	var topo *membership.Topology
	if target != "" {
		topo = c.cfg.Topology()
		_, member = topo.Nodes[target]
		handedOn := !member && req.GetHintBornUnixNanos() > 0
		toSelf = (target == c.cfg.NodeID || handedOn) && topo.Agreed() && isReplica(ks.Table.Replicas(loc.Partition), c.cfg.NodeID)
	}
	if target != "" && !toSelf {
		// Otherwise a hint names the node it is for: another member of
		// the topology (held for itself, it would be held forever).
		if (target == c.cfg.NodeID || !member) && !topo.Agreed() {
			return nil, status.Errorf(codes.Unavailable, "hint_for %q: this node has not applied the cluster metadata yet", target)
		}
		if target == c.cfg.NodeID {
			return nil, status.Errorf(codes.InvalidArgument, "hint_for names this node, which does not replicate partition %d of keyspace %q (by its ring at epoch %d): hand it to a replica", loc.Partition, ks.Name, topo.Epoch)
		}
		if !member {
			return nil, status.Errorf(codes.InvalidArgument, "hint_for %q is not a member of this cluster (by its metadata at epoch %d)", target, topo.Epoch)
		}
		var born time.Time
		if ns := req.GetHintBornUnixNanos(); ns > 0 {
			born = time.Unix(0, ns) // checked against the clock where stored
		}
		if err := c.storeHint(req.GetHintFor(), loc, req.GetKeyspace(), req.GetKey(), set, req.GetSync(), born); err != nil {
			if _, ok := status.FromError(err); ok {
				return nil, err // a refusal (low on disk): the sender tries elsewhere
			}
			return nil, status.Errorf(codes.Internal, "store hint: %v", err)
		}
		return writeDone, nil
	}
	if !toSelf {
		if err := c.checkRoute(ctx, loc.Partition); err != nil {
			return nil, err
		}
	}
	_, span := c.replicaSpan(ctx, "meridian.engine.commit", c.cfg.NodeID, attrSync.Bool(req.GetSync()))
	err = c.merge(loc, req.GetKey(), set, req.GetSync())
	endSpan(span, err)
	if err != nil {
		if _, ok := status.FromError(err); ok {
			return nil, err
		}
		return nil, status.Errorf(codes.Internal, "merge: %v", err)
	}
	return writeDone, nil
}

// writeDone is every successful replica write's (empty) response, shared:
// a message is only read once returned (marshalling is safe concurrently),
// so one instance serves all.
var writeDone = &internalv1.WriteResponse{}

func (c *Coordinator) checkRoute(ctx context.Context, p int) error {
	if c.cfg.CheckRoute == nil {
		return nil
	}
	return c.cfg.CheckRoute(ctx, p)
}

// merge folds a replica's set into this node's copy, pruning the clock as
// every replica does, and remembers the request IDs it carries.
func (c *Coordinator) merge(loc replica.Loc, key []byte, in version.Set, sync bool) error {
	now := c.cfg.Now()
	tomb := false
	var idBuf [4][]byte // most writes bring one new sibling: no allocation
	ids := idBuf[:0]
	_, err := c.cfg.Store.Update(loc, key, sync, func(cur version.Set) (version.Set, error) {
		// Only siblings new to this copy are news: their request IDs are
		// remembered (once stored), their tombstones noted for collection
		// (a hot key's old siblings arrive with every write).
		ids, tomb = ids[:0], false
		for _, sib := range in.Siblings {
			if cur.Clock.Covers(sib.Dot) {
				continue
			}
			if len(sib.Value.RequestID) > 0 {
				ids = append(ids, sib.Value.RequestID)
			}
			tomb = tomb || sib.Value.Tombstone
		}
		next, _ := version.Merge(cur, in).Prune(c.cfg.Prune, now.UnixNano())
		if err := next.Check(version.Limits{}); err != nil {
			return version.Set{}, replica.Refuse(fmt.Sprintf("merged set over a hard limit: %v", err))
		}
		return next, nil
	})
	if err != nil {
		return err
	}
	for _, id := range ids {
		if n, early := c.reqIDs.Remember(loc.Keyspace, key, id, now); n > 0 {
			c.obs.RequestIDs(n, early)
		}
	}
	if tomb && c.cfg.OnTombstone != nil {
		c.cfg.OnTombstone(loc)
	}
	return nil
}

// ServeCoordinate runs a write forwarded by a node that is not a replica.
func (c *Coordinator) ServeCoordinate(ctx context.Context, req *internalv1.CoordinateRequest) (*internalv1.CoordinateResponse, error) {
	var resp *kvv1.PutResponse
	err := c.observe(ctx, "kv.Coordinate", OpWrite, req.GetPut().GetKeyspace(), req.GetPut().GetConsistency(), func(ctx context.Context, span trace.Span) (err error) {
		put := withRequestID(req.GetPut())
		return c.staleRetry(ctx, func() (err error) {
			resp, err = c.write(ctx, span, put, writeOpts{tombstone: req.GetTombstone(), originDC: req.GetOriginDc(), forwarded: true})
			return err
		})
	})
	if err != nil {
		return nil, err
	}
	return &internalv1.CoordinateResponse{Put: resp}, nil
}

// locatePartition resolves a keyspace and partition sent by a peer.
func (c *Coordinator) locatePartition(keyspace string, partition uint32) (replica.Loc, error) {
	topo := c.cfg.Topology()
	ks, ok := topo.Keyspace(keyspace)
	if !ok {
		return replica.Loc{}, &NotFoundError{Keyspace: keyspace}
	}
	if int(partition) >= topo.Ring.Partitions() {
		return replica.Loc{}, invalidf("partition %d out of range (the ring has %d)", partition, topo.Ring.Partitions())
	}
	return replica.Loc{Keyspace: ks.ID, Partition: int(partition)}, nil
}

// holds reports whether this node keeps loc's Merkle tree: it replicates
// the partition (or is to), or keeps its tree already. A peer may ask
// about any partition (a transfer's catch-up, an exchange racing a
// topology change); a tree kept for each would be memory held for good.
func (c *Coordinator) holds(keyspace string, loc replica.Loc) bool {
	if c.cfg.Store.HasTree(loc) {
		return true
	}
	ks, ok := c.cfg.Topology().Keyspace(keyspace)
	if !ok {
		return false
	}
	for _, reps := range [][]placement.Replica{ks.Table.Replicas(loc.Partition), ks.Table.Pending(loc.Partition)} {
		for _, r := range reps {
			if r.Node == c.cfg.NodeID {
				return true
			}
		}
	}
	return false
}

// ServeLeaves returns this replica's Merkle leaves of one partition.
func (c *Coordinator) ServeLeaves(ctx context.Context, req *internalv1.LeavesRequest) (*internalv1.LeavesResponse, error) {
	loc, err := c.locatePartition(req.GetKeyspace(), req.GetPartition())
	if err != nil {
		return nil, err
	}
	leaves := c.cfg.Store.Leaves
	if !c.holds(req.GetKeyspace(), loc) {
		leaves = c.cfg.Store.ScanLeaves
	}
	l, err := leaves(loc)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "leaves: %v", err)
	}
	return &internalv1.LeavesResponse{Leaves: l}, nil
}

// ServeBucketDigests lists the keys and digests of some buckets.
func (c *Coordinator) ServeBucketDigests(ctx context.Context, req *internalv1.BucketDigestsRequest) (*internalv1.BucketDigestsResponse, error) {
	loc, err := c.locatePartition(req.GetKeyspace(), req.GetPartition())
	if err != nil {
		return nil, err
	}
	if len(req.GetBuckets()) > replica.Buckets {
		return nil, invalidf("%d buckets asked, a partition has %d", len(req.GetBuckets()), replica.Buckets)
	}
	buckets := make([]int, len(req.GetBuckets()))
	for i, b := range req.GetBuckets() {
		if b >= replica.Buckets {
			return nil, invalidf("bucket %d out of range (0-%d)", b, replica.Buckets-1)
		}
		buckets[i] = int(b)
	}
	digests := c.cfg.Store.BucketDigests
	if !c.holds(req.GetKeyspace(), loc) {
		digests = c.cfg.Store.ScanBucketDigests
	}
	keys, err := digests(loc, buckets)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "bucket digests: %v", err)
	}
	resp := &internalv1.BucketDigestsResponse{Keys: make([]*internalv1.KeyDigest, len(keys))}
	for i, k := range keys {
		resp.Keys[i] = &internalv1.KeyDigest{Key: k.Key, Digest: k.Digest}
	}
	return resp, nil
}

// maxCollect bounds the keys of one CollectTombstones request.
const maxCollect = 100_000

// ServeCollectTombstones deletes keys whose stored set is still exactly
// the given digest and holds only tombstones older than this node's own
// tombstone grace: never live data, and never a tombstone this node's
// settings keep, whatever a peer asks (a peer with a shorter grace would
// otherwise delete tombstones a restore of this node's older snapshot
// still needs).
// It answers which of the keys it still holds (Kept), so that the sender
// keeps those too rather than lose a tombstone anti-entropy would bring
// back from here.
func (c *Coordinator) ServeCollectTombstones(ctx context.Context, req *internalv1.CollectTombstonesRequest) (*internalv1.CollectTombstonesResponse, error) {
	loc, err := c.locatePartition(req.GetKeyspace(), req.GetPartition())
	if err != nil {
		return nil, err
	}
	if len(req.GetKeys()) > maxCollect {
		return nil, invalidf("%d keys in one request, at most %d", len(req.GetKeys()), maxCollect)
	}
	if c.cfg.TombstoneGrace < 0 {
		return nil, status.Errorf(codes.FailedPrecondition,
			"%s keeps its tombstones (tombstone-grace is negative): give every node the same tombstone-grace", c.cfg.NodeID)
	}
	cutoff := c.cfg.Now().Add(-c.cfg.TombstoneGrace).UnixNano()
	n := uint32(0)
	for i, k := range req.GetKeys() {
		if len(k.GetKey()) == 0 || len(k.GetKey()) > MaxKeySize {
			return nil, invalidf("key %d: length %d out of range", i, len(k.GetKey()))
		}
	}
	var kept []uint32
	for i, k := range req.GetKeys() {
		if err := ctx.Err(); err != nil {
			// The sender gave up: what is collected stays collected,
			// and the rest waits for its next round.
			return nil, status.FromContextError(err).Err()
		}
		set, err := c.cfg.Store.Get(loc, k.GetKey())
		if err != nil {
			return nil, status.Errorf(codes.Internal, "read: %v", err)
		}
		if set.IsEmpty() {
			continue // gone here already: nothing to keep
		}
		if set.Digest() != k.GetDigest() || !set.TombstonesBefore(cutoff) {
			kept = append(kept, uint32(i))
			continue
		}
		ok, err := c.cfg.Store.DeleteIfUnchanged(loc, k.GetKey(), set)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "delete: %v", err)
		}
		if ok {
			n++
		} else {
			kept = append(kept, uint32(i)) // written meanwhile
		}
	}
	return &internalv1.CollectTombstonesResponse{Collected: n, Kept: kept}, nil
}

// MergeLocal merges a set into this node's copy as a replica write does,
// without waiting for fsync (see Sync): anti-entropy's local half.
func (c *Coordinator) MergeLocal(keyspace string, key []byte, set version.Set) error {
	loc, ks, err := c.locateKS(keyspace, key)
	if err != nil {
		return err
	}
	if err := c.checkIncoming(ks, set); err != nil {
		return err
	}
	return c.merge(loc, key, set, false)
}

// Sync makes every local write so far durable.
func (c *Coordinator) Sync() error { return c.cfg.Store.Engine().SyncWAL() }
