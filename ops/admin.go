// Package ops is the operations side of Meridian: the admin gRPC service
// (status, ring, endpoints, keyspaces) and the human views of it.
package ops

import (
	"context"
	"sort"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/node"
)

// Register adds the admin service to a node's gRPC server; pass it as
// node.Options.Register.
func Register(s *grpc.Server, n *node.Node) {
	adminv1.RegisterAdminServer(s, &Server{n: n})
}

// Server implements adminv1.AdminServer on one node.
type Server struct {
	adminv1.UnimplementedAdminServer
	n *node.Node
}

func (s *Server) nodeProto(info membership.NodeInfo) *adminv1.Node {
	out := &adminv1.Node{
		Id: info.ID, GrpcAddr: info.GRPCAddr, Dc: info.DC, Rack: info.Rack,
		Weight: uint32(info.Weight), MemberState: string(info.State),
	}
	// This node's own state, others' as gossip sees them.
	switch m, ok := s.member(info.ID); {
	case info.ID == s.n.ID():
		out.State, out.Epoch, out.DiskLow = "alive", s.n.Topology().Epoch, s.n.DiskLow()
	case ok:
		out.State, out.Epoch, out.DiskLow = strings.ToLower(m.State.String()), m.Meta.Epoch, m.Meta.DiskLow
	default:
		out.State = "unknown"
	}
	if ml := s.n.MetaLog(); ml != nil {
		roles, _ := ml.Roles()
		out.RaftRole = roles[info.ID]
		if out.RaftRole == "" {
			out.RaftRole = "none"
		}
		out.Leader = ml.Leader() == info.ID
	}
	return out
}

// member is gossip's view of node id.
func (s *Server) member(id string) (membership.Member, bool) {
	if g := s.n.Gossip(); g != nil {
		for _, m := range g.Members() {
			if m.Meta.ID == id {
				return m, true
			}
		}
	}
	return membership.Member{}, false
}

func sortedNodes(t *membership.Topology) []membership.NodeInfo {
	out := make([]membership.NodeInfo, 0, len(t.Nodes))
	for _, n := range t.Nodes {
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].DC != out[j].DC {
			return out[i].DC < out[j].DC
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Status lists the members.
func (s *Server) Status(context.Context, *adminv1.StatusRequest) (*adminv1.StatusResponse, error) {
	t := s.n.Topology()
	resp := &adminv1.StatusResponse{Node: s.n.ID(), Epoch: t.Epoch, Partitions: uint32(t.Ring.Partitions()), ClusterId: t.ClusterID}
	if ml := s.n.MetaLog(); ml != nil {
		resp.Leader = ml.Leader()
	}
	if t.Meta != nil {
		resp.RestoredFrom = t.Meta.RestoredFrom
	}
	if err := s.n.NotServing(); err != nil {
		resp.NotServing = err.Error()
	}
	for _, info := range sortedNodes(t) {
		resp.Nodes = append(resp.Nodes, s.nodeProto(info))
	}
	return resp, nil
}

// Ring shows ownership and per-keyspace replica shares.
func (s *Server) Ring(context.Context, *adminv1.RingRequest) (*adminv1.RingResponse, error) {
	t := s.n.Topology()
	q := t.Ring.Partitions()
	// Count, per keyspace, the partitions each node replicates.
	names := t.KeyspaceNames()
	replicas := make(map[string]map[string]int, len(names))
	for _, name := range names {
		counts := map[string]int{}
		table := t.Keyspaces[name].Table
		for p := 0; p < q; p++ {
			for _, r := range table.Replicas(p) {
				counts[r.Node]++
			}
		}
		replicas[name] = counts
	}
	dcWeight := map[string]int{}
	for _, info := range t.Nodes {
		dcWeight[info.DC] += info.Weight
	}
	resp := &adminv1.RingResponse{Partitions: uint32(q), Epoch: t.Epoch}
	for _, info := range sortedNodes(t) {
		owned := len(t.Ring.Owned(info.ID))
		rn := &adminv1.RingNode{
			Node:            s.nodeProto(info),
			OwnedPartitions: uint32(owned),
			OwnedShare:      float64(owned) / float64(q),
			WeightShare:     float64(info.Weight) / float64(dcWeight[info.DC]),
		}
		for _, name := range names {
			c := replicas[name][info.ID]
			rn.Keyspaces = append(rn.Keyspaces, &adminv1.KeyspaceShare{
				Keyspace: name, ReplicaPartitions: uint32(c), Share: float64(c) / float64(q),
			})
		}
		resp.Nodes = append(resp.Nodes, rn)
	}
	return resp, nil
}

// Endpoints shows a key's partition, preference list and first fallbacks.
func (s *Server) Endpoints(_ context.Context, req *adminv1.EndpointsRequest) (*adminv1.EndpointsResponse, error) {
	if len(req.GetKey()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "key is empty: give the key to locate")
	}
	t := s.n.Topology()
	ks, ok := t.Keyspace(req.GetKeyspace())
	if !ok {
		return nil, status.Errorf(codes.NotFound, "keyspace %q does not exist: see 'meridian keyspace list'", req.GetKeyspace())
	}
	p := t.Ring.Partition(req.GetKey())
	resp := &adminv1.EndpointsResponse{Keyspace: ks.Name, Partition: uint32(p), N: uint32(ks.Table.N())}
	ep := func(node, dc, rack string) *adminv1.Endpoint {
		return &adminv1.Endpoint{Node: node, Dc: dc, Rack: rack, GrpcAddr: t.Nodes[node].GRPCAddr, Alive: s.n.Alive(node)}
	}
	for _, r := range ks.Table.Replicas(p) {
		resp.Replicas = append(resp.Replicas, ep(r.Node, r.DC, r.Rack))
	}
	fbs := ks.Table.Fallbacks(p, s.n.DC())
	for i, r := range fbs {
		if i == 3 {
			break
		}
		resp.Fallbacks = append(resp.Fallbacks, ep(r.Node, r.DC, r.Rack))
	}
	return resp, nil
}

// keyspaceProto describes k. Replication and N both come from k's table,
// so they add up: while a replication change moves data they are its
// target (k.Replication, the current spec, is still the replication being
// left: beside the target's N it read east=2,west=1, N=4), and while an
// abort undoes one, the replication being restored; otherwise the
// keyspace's own.
func keyspaceProto(k *membership.Keyspace) *adminv1.Keyspace {
	out := &adminv1.Keyspace{Name: k.Name, Id: k.ID, Conflict: k.Conflict.String(), N: uint32(k.Table.N()), Replication: map[string]uint32{},
		MaxSiblings: uint32(k.Limits.MaxSiblings), MaxSetBytes: uint64(k.Limits.MaxBytes)}
	for dc, rf := range k.Table.Replication() {
		out.Replication[dc] = uint32(rf)
	}
	return out
}

// ListKeyspaces lists the keyspaces.
func (s *Server) ListKeyspaces(context.Context, *adminv1.ListKeyspacesRequest) (*adminv1.ListKeyspacesResponse, error) {
	t := s.n.Topology()
	resp := &adminv1.ListKeyspacesResponse{}
	for _, name := range t.KeyspaceNames() {
		resp.Keyspaces = append(resp.Keyspaces, keyspaceProto(t.Keyspaces[name]))
	}
	return resp, nil
}

// CreateKeyspace creates a keyspace through the metadata log: one
// definition wins everywhere, whichever node is asked.
func (s *Server) CreateKeyspace(ctx context.Context, req *adminv1.CreateKeyspaceRequest) (*adminv1.CreateKeyspaceResponse, error) {
	spec, err := specOf(req.GetKeyspace())
	if err != nil {
		return nil, err
	}
	ks, err := s.n.CreateKeyspace(ctx, spec)
	if err != nil {
		return nil, err
	}
	return &adminv1.CreateKeyspaceResponse{Keyspace: keyspaceProto(ks), Applied: []string{"metadata log"}}, nil
}

func specOf(k *adminv1.Keyspace) (membership.KeyspaceSpec, error) {
	if k == nil {
		return membership.KeyspaceSpec{}, status.Error(codes.InvalidArgument, "keyspace is missing")
	}
	if k.GetMaxSetBytes() > 1<<40 {
		return membership.KeyspaceSpec{}, status.Errorf(codes.InvalidArgument, "max_set_bytes %d is out of range", k.GetMaxSetBytes())
	}
	if len(k.GetReplication()) > 64 {
		return membership.KeyspaceSpec{}, status.Errorf(codes.InvalidArgument, "replication names %d datacenters: at most 64", len(k.GetReplication()))
	}
	spec := membership.KeyspaceSpec{Name: k.GetName(), Conflict: k.GetConflict(), Replication: map[string]int{},
		MaxSiblings: int(k.GetMaxSiblings()), MaxSetBytes: int(k.GetMaxSetBytes())}
	for dc, rf := range k.GetReplication() {
		if rf > 64 {
			return spec, status.Errorf(codes.InvalidArgument, "replication %s=%d: at most 64 per datacenter", dc, rf)
		}
		spec.Replication[dc] = int(rf)
	}
	if len(spec.Replication) == 0 {
		return spec, status.Error(codes.InvalidArgument, "replication is empty: give at least one DC=RF, e.g. --replication dc1=3")
	}
	return spec, nil
}

// AlterKeyspace changes a keyspace through the metadata log.
func (s *Server) AlterKeyspace(ctx context.Context, req *adminv1.AlterKeyspaceRequest) (*adminv1.AlterKeyspaceResponse, error) {
	spec, err := specOf(req.GetKeyspace())
	if err != nil {
		return nil, err
	}
	if spec.Name == "" {
		return nil, status.Error(codes.InvalidArgument, "name is empty: give the keyspace to alter")
	}
	ks, moves, epoch, err := s.n.AlterKeyspace(ctx, spec)
	if status.Code(err) == codes.FailedPrecondition {
		// The metadata refuses a keyspace it does not have as it refuses
		// any change it cannot make; say NOT_FOUND, as Endpoints does,
		// when this node has no such keyspace either.
		if _, ok := s.n.Topology().Keyspaces[spec.Name]; !ok {
			return nil, status.Errorf(codes.NotFound, "keyspace %q does not exist: see 'meridian keyspace list' (or create it with 'meridian keyspace create')", spec.Name)
		}
	}
	if err != nil {
		return nil, err
	}
	return &adminv1.AlterKeyspaceResponse{Keyspace: keyspaceProto(ks), Epoch: epoch, MovesData: moves}, nil
}

// DropKeyspace removes a keyspace through the metadata log.
func (s *Server) DropKeyspace(ctx context.Context, req *adminv1.DropKeyspaceRequest) (*adminv1.DropKeyspaceResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "name is empty: give the keyspace to drop")
	}
	epoch, err := s.n.DropKeyspace(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	return &adminv1.DropKeyspaceResponse{Epoch: epoch}, nil
}

// ReloadSecrets applies this node's cluster secret file again.
func (s *Server) ReloadSecrets(context.Context, *adminv1.ReloadSecretsRequest) (*adminv1.ReloadSecretsResponse, error) {
	n, err := s.n.ReloadSecrets()
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "reload secrets on %s: %v (the previous secrets stay in use)", s.n.ID(), err)
	}
	return &adminv1.ReloadSecretsResponse{Node: s.n.ID(), Secrets: uint32(n)}, nil
}

// Hints lists the hints this node holds, per target.
func (s *Server) Hints(context.Context, *adminv1.HintsRequest) (*adminv1.HintsResponse, error) {
	log := s.n.HintLog()
	resp := &adminv1.HintsResponse{Node: s.n.ID()}
	for _, n := range log.Dropped() {
		resp.Dropped += n
	}
	for _, t := range log.Stats() {
		resp.Targets = append(resp.Targets, &adminv1.HintTarget{
			Target: t.Target, Count: uint64(t.Count), Bytes: uint64(t.Bytes),
			OldestAgeSeconds: t.OldestAge.Seconds(), DeliveryRate: t.Rate,
			Quarantined: uint64(t.Quarantined), Alive: s.n.Alive(t.Target),
			Refused: uint64(t.Refused), Owed: t.Owed,
		})
	}
	return resp, nil
}

// PurgeHints drops every hint this node holds for one target.
func (s *Server) PurgeHints(_ context.Context, req *adminv1.PurgeHintsRequest) (*adminv1.PurgeHintsResponse, error) {
	target := req.GetTarget()
	if target == "" || len(target) > 255 {
		return nil, status.Error(codes.InvalidArgument, "target is empty or too long: give the node ID whose hints to drop (see 'meridian hints')")
	}
	n, err := s.n.HintLog().Purge(target)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "purge hints for %s on %s: %v (%d purged)", target, s.n.ID(), err, n)
	}
	return &adminv1.PurgeHintsResponse{Purged: n}, nil
}
