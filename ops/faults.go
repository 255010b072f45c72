package ops

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
	"github.com/meridiankv/meridian/node"
)

// faultCallTimeout bounds each node's part of a fault fan-out.
const faultCallTimeout = 5 * time.Second

// InjectFault gives a fault an ID and sends it to every node (local_only:
// applies it here only). Each node applies it if it is selected and
// expires it by itself. A node that refuses it (it cannot apply it) makes
// the whole injection fail: the nodes that did apply it remove it again.
func (s *Server) InjectFault(ctx context.Context, req *adminv1.InjectFaultRequest) (*adminv1.InjectFaultResponse, error) {
	f, err := faultOf(req.GetFault())
	if err != nil {
		return nil, err
	}
	if req.GetLocalOnly() {
		if f.ID == "" {
			if f, err = s.n.PrepareFault(f); err != nil {
				return nil, err
			}
		}
		applied, err := s.n.InjectFault(f)
		if err != nil {
			return nil, err
		}
		resp := &adminv1.InjectFaultResponse{Fault: faultProto(f, f.TTL)}
		if applied {
			resp.Applied = []string{s.n.ID()}
		}
		return resp, nil
	}
	if f, err = s.n.PrepareFault(f); err != nil {
		return nil, err
	}
	resp := &adminv1.InjectFaultResponse{Fault: faultProto(f, f.TTL)}
	var refused []string
	local := &adminv1.InjectFaultRequest{Fault: faultProto(f, 0), LocalOnly: true}
	out := fanOut(ctx, s.n, faultCallTimeout, func(ctx context.Context) (*adminv1.InjectFaultResponse, error) { return s.InjectFault(ctx, local) },
		func(ctx context.Context, c adminv1.AdminClient) (*adminv1.InjectFaultResponse, error) {
			return c.InjectFault(ctx, local)
		})
	for id, r := range out {
		switch {
		case r.err == nil:
			resp.Applied = append(resp.Applied, r.resp.GetApplied()...)
		case unreachable(r.err):
			resp.Unreachable = append(resp.Unreachable, id)
		default:
			refused = append(refused, fmt.Sprintf("%s: %s", id, status.Convert(r.err).Message()))
		}
	}
	sort.Strings(resp.Applied)
	sort.Strings(resp.Unreachable)
	if len(refused) > 0 {
		sort.Strings(refused)
		undo := "removed again where it was applied"
		// Where the removal could not be confirmed, the fault may stay
		// until its TTL: say where (a node that timed out may have
		// applied it too).
		cleared, err := s.ClearFaults(ctx, &adminv1.ClearFaultsRequest{Id: f.ID})
		var stuck []string
		if err != nil {
			stuck = append(stuck, "every node ("+status.Convert(err).Message()+")")
		} else {
			stuck = append(append(stuck, cleared.GetUnreachable()...), cleared.GetFailed()...)
		}
		stuck = append(stuck, resp.Unreachable...)
		if len(stuck) > 0 {
			slices.Sort(stuck)
			undo = fmt.Sprintf("removed again where that could be confirmed; it may still apply until its TTL (%s) on %s: run 'meridian fault clear %s' once they answer",
				f.TTL, strings.Join(slices.Compact(stuck), ", "), f.ID)
		}
		return nil, status.Errorf(codes.FailedPrecondition, "fault %s not injected: refused by %s (%s)", f.ID, strings.Join(refused, "; "), undo)
	}
	return resp, nil
}

// ListFaults lists every node's live faults (local_only: this node's).
func (s *Server) ListFaults(ctx context.Context, req *adminv1.ListFaultsRequest) (*adminv1.ListFaultsResponse, error) {
	if req.GetLocalOnly() {
		nf := &adminv1.NodeFaults{Node: s.n.ID()}
		for _, f := range s.n.ListFaults() {
			nf.Faults = append(nf.Faults, faultProto(f, f.ExpiresIn))
		}
		return &adminv1.ListFaultsResponse{Nodes: []*adminv1.NodeFaults{nf}}, nil
	}
	local := &adminv1.ListFaultsRequest{LocalOnly: true}
	out := fanOut(ctx, s.n, faultCallTimeout, func(ctx context.Context) (*adminv1.ListFaultsResponse, error) { return s.ListFaults(ctx, local) },
		func(ctx context.Context, c adminv1.AdminClient) (*adminv1.ListFaultsResponse, error) {
			return c.ListFaults(ctx, local)
		})
	resp := &adminv1.ListFaultsResponse{}
	for id, r := range out {
		nf := &adminv1.NodeFaults{Node: id}
		if r.err != nil {
			nf.Error = status.Convert(r.err).Message()
		} else {
			for _, got := range r.resp.GetNodes() {
				nf.Faults = append(nf.Faults, got.GetFaults()...)
			}
		}
		resp.Nodes = append(resp.Nodes, nf)
	}
	sort.Slice(resp.Nodes, func(i, j int) bool { return resp.Nodes[i].Node < resp.Nodes[j].Node })
	return resp, nil
}

// ClearFaults removes one fault (by ID) or every fault from every node
// (local_only: from this node).
func (s *Server) ClearFaults(ctx context.Context, req *adminv1.ClearFaultsRequest) (*adminv1.ClearFaultsResponse, error) {
	if len(req.GetId()) > 64 {
		return nil, status.Error(codes.InvalidArgument, "fault ID is over 64 characters: see 'meridian fault list'")
	}
	if req.GetLocalOnly() {
		return &adminv1.ClearFaultsResponse{Cleared: uint32(s.n.ClearFaults(req.GetId()))}, nil
	}
	local := &adminv1.ClearFaultsRequest{Id: req.GetId(), LocalOnly: true}
	out := fanOut(ctx, s.n, faultCallTimeout, func(ctx context.Context) (*adminv1.ClearFaultsResponse, error) { return s.ClearFaults(ctx, local) },
		func(ctx context.Context, c adminv1.AdminClient) (*adminv1.ClearFaultsResponse, error) {
			return c.ClearFaults(ctx, local)
		})
	answers, unreach, refused := split(out)
	resp := &adminv1.ClearFaultsResponse{Unreachable: unreach, Failed: failures(refused)}
	for _, a := range answers {
		resp.Cleared += a.GetCleared()
	}
	return resp, nil
}

type result[T any] struct {
	resp T
	err  error
}

// fanOut calls every node of the topology: this one through local, the
// others through remote on the peer listener's admin service (never
// through the fault injector: a partition must not keep out its own
// clearing), each remote call bounded by timeout. It returns each node's result.
func fanOut[T any](ctx context.Context, n *node.Node, timeout time.Duration, local func(context.Context) (T, error), remote func(context.Context, adminv1.AdminClient) (T, error)) map[string]result[T] {
	var (
		mu  sync.Mutex
		wg  sync.WaitGroup
		out = map[string]result[T]{}
	)
	for id := range n.Topology().Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var r result[T]
			if id == n.ID() {
				// Bounded like the others: this node's part (a snapshot's
				// checkpoint on a slow disk, say) must not use up the
				// caller's time and lose every node's answer.
				cctx, cancel := context.WithTimeout(ctx, timeout)
				r = runBounded(cctx, local)
				cancel()
			} else if conn, err := n.PeerConn(id); err != nil {
				r.err = status.Errorf(codes.Unavailable, "no connection to %s: %v", id, err)
			} else {
				cctx, cancel := context.WithTimeout(ctx, timeout)
				r.resp, r.err = remote(cctx, adminv1.NewAdminClient(conn))
				cancel()
			}
			mu.Lock()
			defer mu.Unlock()
			out[id] = r
		}()
	}
	wg.Wait()
	return out
}

// runBounded runs f, returning its result or, once ctx ends first, ctx's
// error as a status (DEADLINE_EXCEEDED: "no answer within"). f goes on
// to its end, as a remote node's part does when its caller stops waiting.
func runBounded[T any](ctx context.Context, f func(context.Context) (T, error)) result[T] {
	done := make(chan result[T], 1)
	go func() {
		var r result[T]
		r.resp, r.err = f(ctx)
		done <- r
	}()
	select {
	case r := <-done:
		return r
	case <-ctx.Done():
		return result[T]{err: status.FromContextError(ctx.Err()).Err()}
	}
}

// unreachable reports whether a fan-out call failed to reach its node
// (as opposed to the node refusing the request).
func unreachable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return true
	}
	return false
}

// faultOf reads an API fault.
func faultOf(p *adminv1.Fault) (node.Fault, error) {
	if p == nil {
		return node.Fault{}, status.Error(codes.InvalidArgument, "fault is missing")
	}
	f := node.Fault{
		ID: p.GetId(), Kind: p.GetKind(),
		FromNodes: p.GetFromNodes(), FromDCs: p.GetFromDcs(), ToNodes: p.GetToNodes(), ToDCs: p.GetToDcs(),
		BothWays: p.GetBothWays(), DropPercent: p.GetDropPercent(),
	}
	var err error
	if f.Delay, err = duration("delay_ms", p.GetDelayMs(), time.Millisecond); err != nil {
		return f, err
	}
	if f.Jitter, err = duration("jitter_ms", p.GetJitterMs(), time.Millisecond); err != nil {
		return f, err
	}
	if f.TTL, err = duration("ttl_seconds", p.GetTtlSeconds(), time.Second); err != nil {
		return f, err
	}
	return f, nil
}

// duration converts a count of units, refusing what is no number or too
// large to be a duration (range checks are the node's).
func duration(field string, x float64, unit time.Duration) (time.Duration, error) {
	d := x * float64(unit)
	if math.IsNaN(x) || math.IsInf(x, 0) || math.Abs(d) > float64(100*24*time.Hour) {
		return 0, status.Errorf(codes.InvalidArgument, "%s %v is out of range", field, x)
	}
	return time.Duration(d), nil
}

// faultProto writes an API fault; expiresIn is its remaining time.
func faultProto(f node.Fault, expiresIn time.Duration) *adminv1.Fault {
	return &adminv1.Fault{
		Id: f.ID, Kind: f.Kind,
		FromNodes: f.FromNodes, FromDcs: f.FromDCs, ToNodes: f.ToNodes, ToDcs: f.ToDCs,
		BothWays: f.BothWays,
		DelayMs:  float64(f.Delay) / float64(time.Millisecond), JitterMs: float64(f.Jitter) / float64(time.Millisecond),
		DropPercent: f.DropPercent, TtlSeconds: f.TTL.Seconds(), ExpiresInSeconds: expiresIn.Seconds(),
	}
}
