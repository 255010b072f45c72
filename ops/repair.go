package ops

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/repair"
	"github.com/meridiankv/meridian/replica"
	"github.com/meridiankv/meridian/version"
)

// RepairStatus reports anti-entropy per partition this node holds.
func (s *Server) RepairStatus(ctx context.Context, req *adminv1.RepairStatusRequest) (*adminv1.RepairStatusResponse, error) {
	if ks := req.GetKeyspace(); ks != "" {
		if _, ok := s.n.Topology().Keyspaces[ks]; !ok {
			return nil, status.Errorf(codes.NotFound, "keyspace %q does not exist: list them with 'meridian keyspace list'", ks)
		}
	}
	ae := s.n.AntiEntropy()
	if ae == nil {
		return nil, status.Error(codes.Unavailable, "anti-entropy is not running yet")
	}
	resp := &adminv1.RepairStatusResponse{Node: s.n.ID()}
	now := time.Now()
	for _, st := range ae.Status(req.GetKeyspace()) {
		since := -1.0
		if !st.Verified.IsZero() {
			since = now.Sub(st.Verified).Seconds()
		}
		resp.Partitions = append(resp.Partitions, &adminv1.PartitionRepair{
			Keyspace: st.Keyspace, Partition: uint32(st.Partition), SinceVerifiedSeconds: since,
			Mismatches: st.Mismatches, KeysRepaired: st.KeysRepaired, BytesRepaired: st.BytesRepaired, Priority: st.Priority,
		})
	}
	return resp, nil
}

// RepairRun starts a full exchange of the selected partitions and
// streams its progress. The run belongs to the node: a client that stops
// listening (meridian repair run without --wait) does not stop it.
func (s *Server) RepairRun(req *adminv1.RepairRunRequest, stream adminv1.Admin_RepairRunServer) error {
	topo := s.n.Topology()
	if ks := req.GetKeyspace(); ks != "" {
		if _, ok := topo.Keyspaces[ks]; !ok {
			return status.Errorf(codes.NotFound, "keyspace %q does not exist: list them with 'meridian keyspace list'", ks)
		}
	}
	if p := req.GetPartition(); int(p) >= topo.Ring.Partitions() {
		return status.Errorf(codes.InvalidArgument, "partition %d does not exist (the ring has %d, numbered from 0)", p, topo.Ring.Partitions())
	}
	if p := int(req.GetPartition()); p >= 0 {
		if err := holdsPartition(topo, s.n.ID(), req.GetKeyspace(), p); err != nil {
			return err
		}
	}
	progress, done := s.n.RunRepair(req.GetKeyspace(), int(req.GetPartition()))
	var last repair.Progress
	for p := range progress {
		last = p
		if err := stream.Send(progressProto(p, false)); err != nil {
			return nil // the client left; the run goes on
		}
	}
	if err := <-done; err != nil {
		return repairFailure(err, last)
	}
	return stream.Send(progressProto(last, true))
}

// holdsPartition refuses, FAILED_PRECONDITION, a repair of partition p
// (of keyspace, or of every keyspace when empty) on node self when self
// holds no replica of it: a node repairs only what it holds, so the run
// would do nothing and report success. The error names the nodes that
// hold it (its preference list, as Endpoints has it) to run it on.
func holdsPartition(topo *membership.Topology, self, keyspace string, p int) error {
	var holders []string
	for _, name := range topo.KeyspaceNames() {
		if keyspace != "" && name != keyspace {
			continue
		}
		var reps []string
		for _, r := range topo.Keyspaces[name].Table.Replicas(p) {
			if r.Node == self {
				return nil
			}
			addr := r.Node
			if info, ok := topo.Nodes[r.Node]; ok && info.GRPCAddr != "" {
				addr += " (" + info.GRPCAddr + ")"
			}
			reps = append(reps, addr)
		}
		holders = append(holders, fmt.Sprintf("keyspace %s: %s", name, strings.Join(reps, ", ")))
	}
	what := fmt.Sprintf("partition %d", p)
	if keyspace != "" {
		what += " of keyspace " + keyspace
	}
	return status.Errorf(codes.FailedPrecondition, "node %s holds no replica of %s, so it has nothing to repair: the replicas are on %s; run it again with --addr pointing at one of those nodes",
		self, what, strings.Join(holders, "; "))
}

// repairFailure is the status of a repair run that ended with err after
// last: the node's refusal to start one more (RESOURCE_EXHAUSTED), or
// FAILED_PRECONDITION when it only met keys a replica refused
// (replica.Refused), or UNAVAILABLE with how far the run got, whatever
// else failed it (a peer shedding load answers RESOURCE_EXHAUSTED too, but
// the run was started).
func repairFailure(err error, last repair.Progress) error {
	if busy := (*node.RepairRunsError)(nil); errors.As(err, &busy) {
		return busy.GRPCStatus().Err()
	}
	if replica.Refused(err) {
		// Every replica reached, only keys refused: running it again
		// will not help until what refused them changes.
		return status.Errorf(codes.FailedPrecondition, "repair reached every replica, but replicas refused some keys: %v (a version written too far ahead of a replica's clock is taken once real time passes it: check the writers' clocks with NTP)", err)
	}
	return status.Errorf(codes.Unavailable, "repair incomplete after %d of %d partitions: %v (run it again once every replica is reachable)", last.PartitionsDone, last.PartitionsTotal, err)
}

func progressProto(p repair.Progress, done bool) *adminv1.RepairProgress {
	return &adminv1.RepairProgress{
		PartitionsDone: uint32(p.PartitionsDone), PartitionsTotal: uint32(p.PartitionsTotal),
		Mismatches: p.Mismatches, KeysRepaired: p.KeysRepaired, BytesRepaired: p.BytesRepaired, Done: done,
	}
}

// ReplicaGet reads one replica's own copy of a key, with no quorum.
func (s *Server) ReplicaGet(ctx context.Context, req *adminv1.ReplicaGetRequest) (*adminv1.ReplicaGetResponse, error) {
	node := req.GetNode()
	if node == "" {
		node = s.n.ID()
	}
	topo := s.n.Topology()
	if _, ok := topo.Nodes[node]; !ok {
		return nil, status.Errorf(codes.InvalidArgument, "node %q is not a member: see 'meridian status'", node)
	}
	ks, ok := topo.Keyspace(req.GetKeyspace())
	if !ok {
		return nil, status.Errorf(codes.NotFound, "keyspace %q does not exist", req.GetKeyspace())
	}
	if len(req.GetKey()) == 0 || len(req.GetKey()) > replica.MaxKeyLen {
		return nil, status.Errorf(codes.InvalidArgument, "key of %d bytes: give 1 byte to 64 KiB", len(req.GetKey()))
	}
	var set version.Set
	if node == s.n.ID() {
		var err error
		if set, err = s.n.Store().Get(replica.Loc{Keyspace: ks.ID, Partition: topo.Ring.Partition(req.GetKey())}, req.GetKey()); err != nil {
			return nil, status.Errorf(codes.Internal, "read: %v", err)
		}
	} else {
		resp, err := s.n.Faults().Read(ctx, node, &internalv1.ReadRequest{Keyspace: ks.Name, Key: req.GetKey()})
		if err != nil {
			return nil, err
		}
		if set, err = version.DecodeSet(resp.GetSet()); err != nil {
			return nil, status.Errorf(codes.Internal, "%s's set: %v", node, err)
		}
	}
	out := &adminv1.ReplicaGetResponse{Node: node, Clock: set.Clock.String()}
	for _, sib := range set.Siblings {
		out.Siblings = append(out.Siblings, &kvv1.Sibling{Value: sib.Value.Bytes, Tombstone: sib.Value.Tombstone,
			WriteTimeUnixNanos: sib.Value.Time.Wall, Dot: sib.Dot.String()})
	}
	return out, nil
}
