package ops

import (
	"context"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/placement"
)

// Membership changes: a plan built step by step in the metadata log (a
// dry run that shows what moves), then one commit that starts moving.

func opOf(p *adminv1.PlanOp) (membership.PlanOp, error) {
	if p == nil {
		return membership.PlanOp{}, status.Error(codes.InvalidArgument, "op is missing")
	}
	op := membership.PlanOp{Op: p.GetOp(), Node: p.GetNode(), With: p.GetWith(), Weight: int(p.GetWeight())}
	switch op.Op {
	case membership.OpAdd, membership.OpDecommission, membership.OpRemove, membership.OpReweight, membership.OpReplace:
	default:
		return op, status.Errorf(codes.InvalidArgument, "op %q: use add, decommission, remove, replace or reweight", op.Op)
	}
	if op.Node == "" || len(op.Node) > 64 || len(op.With) > 64 {
		return op, status.Error(codes.InvalidArgument, "node is empty or too long: name the node the step is about")
	}
	if op.Op == membership.OpReplace && op.With == "" {
		return op, status.Error(codes.InvalidArgument, "replace needs --with NEW_NODE (a node started with --join)")
	}
	if op.Op == membership.OpReweight && (op.Weight < 1 || op.Weight > placement.MaxWeight) {
		return op, status.Errorf(codes.InvalidArgument, "weight %d for reweight %s is out of range: use a weight from 1 to %d (to take a node out, decommission it)",
			p.GetWeight(), op.Node, placement.MaxWeight)
	}
	return op, nil
}

func planOpProto(o membership.PlanOp) *adminv1.PlanOp {
	return &adminv1.PlanOp{Op: o.Op, Node: o.Node, With: o.With, Weight: uint32(o.Weight)}
}

func (s *Server) agreed() (*membership.MetaState, error) {
	st := s.n.MetaState()
	if !st.Initialized() {
		return nil, status.Error(codes.Unavailable, "this node has no agreed cluster metadata yet: retry in a moment")
	}
	return st, nil
}

// ClusterPlan adds a step to the pending plan.
func (s *Server) ClusterPlan(ctx context.Context, req *adminv1.ClusterPlanRequest) (*adminv1.ClusterPlanResponse, error) {
	op, err := opOf(req.GetOp())
	if err != nil {
		return nil, err
	}
	if _, err := s.n.Propose(ctx, membership.Command{Kind: membership.CmdPlan, Op: &op}); err != nil {
		return nil, err
	}
	return s.ClusterPlanShow(ctx, &adminv1.ClusterPlanShowRequest{})
}

// ClusterPlanShow shows the pending plan and what it moves.
func (s *Server) ClusterPlanShow(ctx context.Context, req *adminv1.ClusterPlanShowRequest) (*adminv1.ClusterPlanResponse, error) {
	st, err := s.agreed()
	if err != nil {
		return nil, err
	}
	plan, err := s.planView(ctx, st, req.GetSizes())
	if err != nil {
		return nil, err
	}
	return &adminv1.ClusterPlanResponse{Plan: plan}, nil
}

// PlanSizesTimeout bounds the size queries of a plan shown with its sizes
// (ClusterPlanShow sizes): one per keyspace and source node, all at once.
const PlanSizesTimeout = 30 * time.Second

// planView lists, per keyspace and partition, the preference lists
// before and after the pending plan; with sizes, their bytes, and how
// many moves could not be sized.
func (s *Server) planView(ctx context.Context, st *membership.MetaState, sizes bool) (*adminv1.Plan, error) {
	out := &adminv1.Plan{Epoch: st.Epoch}
	for _, o := range st.Plan {
		out.Ops = append(out.Ops, planOpProto(o))
	}
	if len(st.Plan) == 0 {
		return out, nil
	}
	next, err := st.PlanRing(st.Plan)
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "the pending plan no longer fits: %v (clear it with `meridian cluster plan clear`)", err)
	}
	cur, err := placement.FromState(*st.Ring)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	changed := map[int]bool{}
	names := make([]string, 0, len(st.Keyspaces))
	for name := range st.Keyspaces {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		repl := placement.Replication(st.Keyspaces[name].Replication)
		ot, err1 := cur.Table(repl)
		nt, err2 := next.Table(repl)
		if err1 != nil || err2 != nil {
			return nil, status.Errorf(codes.FailedPrecondition, "keyspace %s: %v %v", name, err1, err2)
		}
		for _, p := range placement.Changed(ot, nt) {
			changed[p] = true
			out.Moves = append(out.Moves, &adminv1.PlanMove{Keyspace: name, Partition: uint32(p), Old: ids(ot.Replicas(p)), New: ids(nt.Replicas(p))})
		}
	}
	out.PartitionsChanged = uint32(len(changed))
	if sizes {
		out.UnsizedMoves = uint32(s.sizeMoves(ctx, out.Moves))
		for _, m := range out.Moves {
			out.BytesToMove += m.Bytes
		}
	}
	out.MovesTotal = uint32(len(out.Moves))
	if len(out.Moves) > MaxPlanMovesListed {
		// A large ring with many keyspaces has millions of moves: listed,
		// the answer would pass the message limit (and the step would be
		// in the plan with no answer to show it).
		out.Moves = out.Moves[:MaxPlanMovesListed]
	}
	return out, nil
}

// MaxPlanMovesListed is the most moves a plan answer lists.
const MaxPlanMovesListed = 20000

func ids(reps []placement.Replica) []string {
	out := make([]string, len(reps))
	for i, r := range reps {
		out[i] = r.Node
	}
	return out
}

// sizeMoves estimates each move's bytes: the partition's size on one
// current replica times the replicas that must receive it. It returns
// how many moves it could not size (left at 0 bytes).
func (s *Server) sizeMoves(ctx context.Context, moves []*adminv1.PlanMove) int {
	type ask struct {
		keyspace string
		node     string
	}
	byAsk := map[ask][]*adminv1.PlanMove{}
	for _, m := range moves {
		src := m.Old[0]
		for _, o := range m.Old {
			if s.n.Alive(o) {
				src = o
				break
			}
		}
		byAsk[ask{m.Keyspace, src}] = append(byAsk[ask{m.Keyspace, src}], m)
	}
	var (
		wg      sync.WaitGroup
		unsized atomic.Int64
	)
	for a, ms := range byAsk {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := s.n.PeerConn(a.node)
			if err != nil {
				markUnsized(ms, &unsized)
				return
			}
			req := &internalv1.PartitionSizesRequest{Keyspace: a.keyspace}
			for _, m := range ms {
				req.Partitions = append(req.Partitions, m.Partition)
			}
			cctx, cancel := context.WithTimeout(ctx, PlanSizesTimeout)
			defer cancel()
			resp, err := internalv1.NewReplicaClient(conn).PartitionSizes(cctx, req)
			if err != nil || len(resp.GetBytes()) != len(ms) {
				markUnsized(ms, &unsized)
				return
			}
			for i, m := range ms {
				added := 0
				for _, n := range m.New {
					if !slices.Contains(m.Old, n) {
						added++
					}
				}
				m.Bytes = resp.GetBytes()[i] * uint64(added)
			}
		}()
	}
	wg.Wait()
	return int(unsized.Load())
}

// markUnsized marks moves whose size could not be read, and counts them.
func markUnsized(ms []*adminv1.PlanMove, count *atomic.Int64) {
	for _, m := range ms {
		m.Unsized = true
	}
	count.Add(int64(len(ms)))
}

// ClusterPlanClear drops the pending plan.
func (s *Server) ClusterPlanClear(ctx context.Context, _ *adminv1.ClusterPlanClearRequest) (*adminv1.ClusterPlanClearResponse, error) {
	if _, err := s.n.Propose(ctx, membership.Command{Kind: membership.CmdPlanClear}); err != nil {
		return nil, err
	}
	return &adminv1.ClusterPlanClearResponse{}, nil
}

// maxExpectOps bounds the steps a commit may name (a plan holds a step
// or two per member).
const maxExpectOps = 4096

// ClusterCommit starts the pending plan: the one the caller names
// (expect), or whatever is pending.
func (s *Server) ClusterCommit(ctx context.Context, req *adminv1.ClusterCommitRequest) (*adminv1.ClusterCommitResponse, error) {
	st, err := s.agreed()
	if err != nil {
		return nil, err
	}
	expect := st.Plan
	if n := len(req.GetExpect()); n > maxExpectOps {
		return nil, status.Errorf(codes.InvalidArgument, "expect names %d steps, over the limit of %d", n, maxExpectOps)
	} else if n > 0 {
		// The state machine compares it with the plan pending when the
		// commit is applied, and takes a commit of the plan already
		// moving (or moved) as unchanged.
		expect = make([]membership.PlanOp, n)
		for i, p := range req.GetExpect() {
			if expect[i], err = opOf(p); err != nil {
				return nil, err
			}
		}
	} else if len(st.Plan) == 0 {
		return nil, status.Error(codes.FailedPrecondition, membership.ErrNoPlan.Error())
	}
	epoch, err := s.n.Propose(ctx, membership.Command{Kind: membership.CmdCommit, Expect: expect})
	if err != nil {
		return nil, err
	}
	resp := &adminv1.ClusterCommitResponse{Epoch: epoch}
	for _, o := range expect {
		resp.Ops = append(resp.Ops, planOpProto(o))
	}
	if t := s.n.MetaState().Transition; t != nil {
		resp.PartitionsMoving = uint32(len(t.Moving) - len(t.Done))
	}
	return resp, nil
}

// ClusterAbort undoes the committed change in progress (see
// membership's CmdAbort).
func (s *Server) ClusterAbort(ctx context.Context, req *adminv1.ClusterAbortRequest) (*adminv1.ClusterAbortResponse, error) {
	if req.GetGeneration() == 0 {
		return nil, status.Error(codes.InvalidArgument, "generation is required: the transition_generation of `meridian cluster status --json`")
	}
	epoch, err := s.n.Propose(ctx, membership.Command{Kind: membership.CmdAbort, Generation: req.GetGeneration()})
	if err != nil {
		return nil, err
	}
	resp := &adminv1.ClusterAbortResponse{Epoch: epoch}
	if t := s.n.MetaState().Transition; t != nil && t.Undoes == req.GetGeneration() {
		resp.PartitionsMoving = uint32(len(t.Moving) - len(t.Done))
	}
	return resp, nil
}

// Transfers lists the partition transfers this node receives.
func (s *Server) Transfers(context.Context, *adminv1.TransfersRequest) (*adminv1.TransfersResponse, error) {
	resp := &adminv1.TransfersResponse{Node: s.n.ID()}
	for _, t := range s.n.Transfers() {
		resp.Transfers = append(resp.Transfers, &adminv1.Transfer{Node: s.n.ID(), Keyspace: t.Keyspace, Partition: uint32(t.Partition),
			Source: t.Source, State: t.State, Keys: uint64(t.Keys), Bytes: uint64(t.Bytes), BytesPerSecond: t.BytesPerSecond, Error: t.Err})
	}
	return resp, nil
}

// ClusterStatus reports members, the Raft group and the transition in
// progress with every reachable node's transfers.
func (s *Server) ClusterStatus(ctx context.Context, _ *adminv1.ClusterStatusRequest) (*adminv1.ClusterStatusResponse, error) {
	st, err := s.agreed()
	if err != nil {
		return nil, err
	}
	t := s.n.Topology()
	resp := &adminv1.ClusterStatusResponse{ClusterId: st.ClusterID, Epoch: st.Epoch}
	if ml := s.n.MetaLog(); ml != nil {
		resp.Leader = ml.Leader()
	}
	ids := make([]string, 0, len(st.Members))
	for id := range st.Members {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		m := st.Members[id]
		info := membership.NodeInfo{Node: placement.Node{ID: m.ID, DC: m.DC, Rack: m.Rack, Weight: m.Weight}, GRPCAddr: m.GRPCAddr, State: m.State}
		resp.Nodes = append(resp.Nodes, s.nodeProto(info))
	}
	if len(st.Plan) > 0 {
		plan, err := s.planView(ctx, st, false)
		if err != nil {
			// A plan that no longer fits (a keyspace altered since, say)
			// is still pending: its steps are shown, and `cluster plan
			// show` says why it does not fit.
			plan = &adminv1.Plan{Epoch: st.Epoch}
			for _, o := range st.Plan {
				plan.Ops = append(plan.Ops, planOpProto(o))
			}
		}
		// The steps and the count, not every move (keyspaces times
		// partitions, on every poll of `cluster status --watch`).
		plan.Moves = nil
		resp.Pending = plan
	}
	if tr := st.Transition; tr != nil {
		resp.InTransition = true
		for _, o := range tr.Ops {
			resp.TransitionOps = append(resp.TransitionOps, planOpProto(o))
		}
		resp.PartitionsMoving = uint32(len(tr.Moving))
		resp.PartitionsDone = uint32(len(tr.Done))
		resp.TransitionGeneration = tr.Generation
		resp.TransitionAborted = tr.Aborted
	}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for id := range t.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var (
				tr  *adminv1.TransfersResponse
				err error
			)
			if id == s.n.ID() {
				tr, err = s.Transfers(ctx, nil)
			} else if conn, cerr := s.n.PeerConn(id); cerr != nil {
				err = cerr
			} else {
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				tr, err = adminv1.NewAdminClient(conn).Transfers(cctx, &adminv1.TransfersRequest{})
				cancel()
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				resp.Unreachable = append(resp.Unreachable, id)
				return
			}
			resp.Transfers = append(resp.Transfers, tr.GetTransfers()...)
		}()
	}
	wg.Wait()
	sort.Strings(resp.Unreachable)
	sort.Slice(resp.Transfers, func(i, j int) bool {
		a, b := resp.Transfers[i], resp.Transfers[j]
		if a.Node != b.Node {
			return a.Node < b.Node
		}
		if a.Keyspace != b.Keyspace {
			return a.Keyspace < b.Keyspace
		}
		return a.Partition < b.Partition
	})
	return resp, nil
}
