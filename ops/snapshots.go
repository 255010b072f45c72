package ops

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
	"github.com/meridiankv/meridian/node"
)

// SnapshotCallTimeout bounds each node's part of a snapshot call (create,
// list, delete), the nodes asked at once: a checkpoint flushes the WAL and
// links every table.
const SnapshotCallTimeout = time.Minute

func snapshotProto(s node.SnapshotInfo) *adminv1.Snapshot {
	return &adminv1.Snapshot{Node: s.Node, Name: s.Name, Dir: s.Dir, CreatedUnixMs: s.Created.UnixMilli(), Epoch: s.Epoch, Bytes: s.Bytes}
}

// CreateSnapshot snapshots every node's data under one name (local_only:
// this node's).
func (s *Server) CreateSnapshot(ctx context.Context, req *adminv1.CreateSnapshotRequest) (*adminv1.CreateSnapshotResponse, error) {
	if req.GetLocalOnly() {
		info, err := s.n.Snapshot(req.GetName())
		if err != nil {
			return nil, err
		}
		return &adminv1.CreateSnapshotResponse{Snapshots: []*adminv1.Snapshot{snapshotProto(info)}}, nil
	}
	name := req.GetName()
	if name == "" {
		name = node.SnapshotName(s.n.Now()) // one name on every node
	}
	if err := node.CheckSnapshotName(name); err != nil {
		return nil, err
	}
	local := &adminv1.CreateSnapshotRequest{Name: name, LocalOnly: true}
	if id := req.GetNode(); id != "" {
		return s.snapshotOne(ctx, id, local)
	}
	out := fanOut(ctx, s.n, SnapshotCallTimeout, func(ctx context.Context) (*adminv1.CreateSnapshotResponse, error) {
		return s.CreateSnapshot(ctx, local)
	},
		func(ctx context.Context, c adminv1.AdminClient) (*adminv1.CreateSnapshotResponse, error) {
			return c.CreateSnapshot(ctx, local)
		})
	answers, unreach, refused := split(out)
	unreach, slow := timedOut(out, unreach)
	resp := &adminv1.CreateSnapshotResponse{Unreachable: unreach, Failed: append(failures(refused), slow...)}
	for _, a := range answers {
		resp.Snapshots = append(resp.Snapshots, a.GetSnapshots()...)
	}
	sortSnapshots(resp.Snapshots)
	return resp, nil
}

// snapshotOne takes member id's snapshot, relayed when id is another
// node: a node that missed a cluster-wide snapshot (down, or refusing)
// takes it under the same name afterwards, the others untouched.
func (s *Server) snapshotOne(ctx context.Context, id string, local *adminv1.CreateSnapshotRequest) (*adminv1.CreateSnapshotResponse, error) {
	if id == s.n.ID() {
		return s.CreateSnapshot(ctx, local)
	}
	if _, ok := s.n.Topology().Nodes[id]; !ok {
		return nil, status.Errorf(codes.NotFound, "%s is not a member of this cluster (see `meridian cluster status`)", id)
	}
	conn, err := s.n.PeerConn(id)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "no connection to %s: %v", id, err)
	}
	cctx, cancel := context.WithTimeout(ctx, SnapshotCallTimeout)
	defer cancel()
	return adminv1.NewAdminClient(conn).CreateSnapshot(cctx, local)
}

// ListSnapshots lists every node's snapshots (local_only: this node's).
func (s *Server) ListSnapshots(ctx context.Context, req *adminv1.ListSnapshotsRequest) (*adminv1.ListSnapshotsResponse, error) {
	if req.GetLocalOnly() {
		list, err := s.n.Snapshots()
		if err != nil {
			return nil, status.Errorf(codes.Internal, "list snapshots: %v", err)
		}
		resp := &adminv1.ListSnapshotsResponse{}
		for _, info := range list {
			resp.Snapshots = append(resp.Snapshots, snapshotProto(info))
		}
		return resp, nil
	}
	local := &adminv1.ListSnapshotsRequest{LocalOnly: true}
	out := fanOut(ctx, s.n, SnapshotCallTimeout, func(ctx context.Context) (*adminv1.ListSnapshotsResponse, error) { return s.ListSnapshots(ctx, local) },
		func(ctx context.Context, c adminv1.AdminClient) (*adminv1.ListSnapshotsResponse, error) {
			return c.ListSnapshots(ctx, local)
		})
	answers, unreach, refused := split(out)
	return listAnswer(answers, unreach, refused)
}

// listAnswer joins the nodes' lists. A node that refused is named in
// failed, with its reason, and the others' snapshots are listed (one
// node's unreadable directory must not hide every node's); only when
// every node that answered refused is the first refusal the answer.
func listAnswer(answers []*adminv1.ListSnapshotsResponse, unreach []string, refused map[string]error) (*adminv1.ListSnapshotsResponse, error) {
	if ids := slices.Sorted(maps.Keys(refused)); len(ids) > 0 && len(answers) == 0 {
		err := refused[ids[0]]
		return nil, status.Errorf(status.Code(err), "%s: %s", ids[0], status.Convert(err).Message())
	}
	resp := &adminv1.ListSnapshotsResponse{Unreachable: unreach, Failed: failures(refused)}
	for _, a := range answers {
		resp.Snapshots = append(resp.Snapshots, a.GetSnapshots()...)
	}
	sortSnapshots(resp.Snapshots)
	return resp, nil
}

// DeleteSnapshot deletes a snapshot on every node that has it (local_only:
// on this node); NOT_FOUND if none had it.
func (s *Server) DeleteSnapshot(ctx context.Context, req *adminv1.DeleteSnapshotRequest) (*adminv1.DeleteSnapshotResponse, error) {
	if req.GetLocalOnly() {
		if err := s.n.DeleteSnapshot(req.GetName()); err != nil {
			return nil, err
		}
		return &adminv1.DeleteSnapshotResponse{Deleted: []string{s.n.ID()}}, nil
	}
	if err := node.CheckSnapshotName(req.GetName()); err != nil {
		return nil, err // INVALID_ARGUMENT here, not a failure on every node
	}
	local := &adminv1.DeleteSnapshotRequest{Name: req.GetName(), LocalOnly: true}
	out := fanOut(ctx, s.n, SnapshotCallTimeout, func(ctx context.Context) (*adminv1.DeleteSnapshotResponse, error) {
		return s.DeleteSnapshot(ctx, local)
	},
		func(ctx context.Context, c adminv1.AdminClient) (*adminv1.DeleteSnapshotResponse, error) {
			return c.DeleteSnapshot(ctx, local)
		})
	answers, unreach, refused := split(out)
	for id, err := range refused {
		if status.Code(err) == codes.NotFound { // a node without it is fine
			delete(refused, id)
		}
	}
	// Every node's outcome, as create reports it: which deleted it, which
	// could not be reached, which failed and why.
	resp := &adminv1.DeleteSnapshotResponse{Unreachable: unreach, Failed: failures(refused)}
	for _, a := range answers {
		resp.Deleted = append(resp.Deleted, a.GetDeleted()...)
	}
	if len(resp.Deleted) == 0 && len(resp.Unreachable) == 0 && len(resp.Failed) == 0 {
		return nil, status.Errorf(codes.NotFound, "no node has a snapshot %q (meridian snapshot list shows them)", req.GetName())
	}
	sort.Strings(resp.Deleted)
	return resp, nil
}

// split sorts a fan-out's results: the answers, the nodes it could not
// reach (sorted), and the errors of the nodes that refused, by node.
func split[T any](out map[string]result[T]) (answers []T, unreach []string, refused map[string]error) {
	refused = map[string]error{}
	for id, r := range out {
		switch {
		case r.err == nil:
			answers = append(answers, r.resp)
		case unreachable(r.err):
			unreach = append(unreach, id)
		default:
			refused[id] = r.err
		}
	}
	sort.Strings(unreach)
	return answers, unreach, refused
}

// timedOut takes the nodes of unreach that were reached but did not answer
// within SnapshotCallTimeout out of it: a checkpoint still running there
// may yet complete, which "unreachable" would hide.
func timedOut[T any](out map[string]result[T], unreach []string) (still, slow []string) {
	for _, id := range unreach {
		if status.Code(out[id].err) == codes.DeadlineExceeded {
			slow = append(slow, fmt.Sprintf("%s: no answer within %s; its snapshot may still be under way: see 'meridian snapshot list' before retrying or deleting", id, SnapshotCallTimeout))
			continue
		}
		still = append(still, id)
	}
	return still, slow
}

// failures lists the refusals of split as "node: reason", by node.
func failures(refused map[string]error) []string {
	var out []string
	for _, id := range slices.Sorted(maps.Keys(refused)) {
		out = append(out, fmt.Sprintf("%s: %s", id, status.Convert(refused[id]).Message()))
	}
	return out
}

// sortSnapshots orders snapshots by name (default names are times, so
// oldest first), then node.
func sortSnapshots(ss []*adminv1.Snapshot) {
	sort.Slice(ss, func(i, j int) bool {
		if ss[i].GetName() != ss[j].GetName() {
			return ss[i].GetName() < ss[j].GetName()
		}
		return ss[i].GetNode() < ss[j].GetNode()
	})
}
