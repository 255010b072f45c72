package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
	"github.com/meridiankv/meridian/ops"
)

// slowAdmin is an admin server that records the deadline each call came
// with; hang makes CreateSnapshot wait until the caller gives up.
type slowAdmin struct {
	adminv1.UnimplementedAdminServer
	mu   sync.Mutex
	left map[string]time.Duration // by method: the time the caller gave
	hang bool
}

func (s *slowAdmin) record(ctx context.Context, method string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d, ok := ctx.Deadline(); ok {
		s.left[method] = time.Until(d)
	}
	return s.hang
}

func (s *slowAdmin) deadline(method string) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.left[method]
}

func (s *slowAdmin) CreateSnapshot(ctx context.Context, _ *adminv1.CreateSnapshotRequest) (*adminv1.CreateSnapshotResponse, error) {
	if s.record(ctx, "create") {
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return &adminv1.CreateSnapshotResponse{Snapshots: []*adminv1.Snapshot{{Node: "n1", Name: "s1"}}}, nil
}

func (s *slowAdmin) ClusterPlanShow(ctx context.Context, req *adminv1.ClusterPlanShowRequest) (*adminv1.ClusterPlanResponse, error) {
	s.record(ctx, "plan")
	plan := &adminv1.Plan{Epoch: 3, Ops: []*adminv1.PlanOp{{Op: "decommission", Node: "n4"}}, PartitionsChanged: 3, BytesToMove: 1 << 20}
	if req.GetSizes() {
		plan.UnsizedMoves = 2
	}
	for p := range 3 {
		plan.Moves = append(plan.Moves, &adminv1.PlanMove{Keyspace: "default", Partition: uint32(p), Old: []string{"n4"}, New: []string{"n1"}})
	}
	return &adminv1.ClusterPlanResponse{Plan: plan}, nil
}

// TestAdminTimeouts: without --timeout, snapshot create and a plan shown
// with its sizes wait as long as the nodes may work on them; with it,
// the given time. A call that runs out of time says so, and what to do.
func TestAdminTimeouts(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fake := &slowAdmin{left: map[string]time.Duration{}}
	srv := grpc.NewServer()
	adminv1.RegisterAdminServer(srv, fake)
	go srv.Serve(lis)
	defer srv.Stop()
	addr := lis.Addr().String()
	// Longer than any default: the calls are quick, their deadlines are
	// what is checked.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	run := cliRunner(ctx)

	for _, c := range []struct {
		args     []string
		method   string
		min, max time.Duration
		says     string
	}{
		{[]string{"snapshot", "create", "s1"}, "create", ops.SnapshotCallTimeout, ops.SnapshotCallTimeout + budgetMargin, "s1"},
		{[]string{"snapshot", "create", "s1", "--timeout", "5s"}, "create", 4 * time.Second, 5 * time.Second, "s1"},
		{[]string{"cluster", "plan", "show", "--sizes"}, "plan", ops.PlanSizesTimeout, ops.PlanSizesTimeout + budgetMargin,
			"at least 1.0MiB to stream in total (estimated from one current replica of each partition): 2 moves of 3 could not be sized"},
		{[]string{"cluster", "plan", "show"}, "plan", defaultAdminTimeout - 2*time.Second, defaultAdminTimeout, "bytes to move: `meridian cluster plan show --sizes`"},
	} {
		out, err := run(append(c.args, "--addr", addr)...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", c.args, err, out)
		}
		if left := fake.deadline(c.method); left < c.min || left > c.max {
			t.Errorf("%v: the server had %s, want %s to %s", c.args, left, c.min, c.max)
		}
		if !strings.Contains(out, c.says) {
			t.Errorf("%v printed:\n%s\nwant %q in it", c.args, out, c.says)
		}
	}

	fake.mu.Lock()
	fake.hang = true
	fake.mu.Unlock()
	_, err = run("snapshot", "create", "s1", "--timeout", "300ms", "--addr", addr)
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("snapshot create out of time: %v, want DEADLINE_EXCEEDED", err)
	}
	msg := describeErr(err)
	for _, want := range []string{"ran out of time (--timeout 300ms)", "retry with a larger --timeout", "check 'meridian snapshot list' first"} {
		if !strings.Contains(msg, want) {
			t.Errorf("snapshot create out of time reads %q, want %q in it", msg, want)
		}
	}
	// Any call's DEADLINE_EXCEEDED says what it means.
	if msg := describeErr(status.Error(codes.DeadlineExceeded, "context deadline exceeded")); !strings.Contains(msg, "ran out of time: retry with a larger --timeout") {
		t.Errorf("a DEADLINE_EXCEEDED reads %q", msg)
	}
}

// TestRanOutOfTimeAtTheDeadline: a DEADLINE_EXCEEDED that arrives just
// before the command's own deadline fires (the node holds the same one)
// is the command running out of time; one long before it is the node's
// own, passed on as it is.
func TestRanOutOfTimeAtTheDeadline(t *testing.T) {
	late := status.Error(codes.DeadlineExceeded, "context deadline exceeded")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	var ot *outOfTime
	if err := ranOutOfTime(ctx, late, 300*time.Millisecond, ""); !errors.As(err, &ot) {
		t.Fatalf("5ms before a 300ms timeout ends: %v, want the command's time running out", err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), time.Minute)
	defer cancel2()
	if err := ranOutOfTime(ctx2, late, time.Minute, ""); errors.As(err, &ot) {
		t.Fatalf("a minute before the timeout ends: %v, want the node's error as it is", err)
	}
}

// TestDescribeErrKeepsAdvice: what a command wrapped around a gRPC status
// (which node failed, what to do next) reaches the user, with the status
// rendered as "CODE: message".
func TestDescribeErrKeepsAdvice(t *testing.T) {
	err := fmt.Errorf("ask 127.0.0.1:7001 for its admin address: %w (is the node running?)", status.Error(codes.Unavailable, "connection refused"))
	want := "ask 127.0.0.1:7001 for its admin address: Unavailable: connection refused (is the node running?)"
	if got := describeErr(err); got != want {
		t.Fatalf("describeErr = %q, want %q", got, want)
	}
	if got := describeErr(status.Error(codes.NotFound, "no such snapshot")); got != "NotFound: no such snapshot" {
		t.Fatalf("a bare status reads %q", got)
	}
}

// partialDelete deletes a snapshot on one node and reports another
// unreachable (snapshot "old") or failing (any other name).
type partialDelete struct {
	adminv1.UnimplementedAdminServer
}

func (partialDelete) DeleteSnapshot(_ context.Context, req *adminv1.DeleteSnapshotRequest) (*adminv1.DeleteSnapshotResponse, error) {
	if req.GetName() == "old" {
		return &adminv1.DeleteSnapshotResponse{Deleted: []string{"n1"}, Unreachable: []string{"n3"}}, nil
	}
	return &adminv1.DeleteSnapshotResponse{Deleted: []string{"n1"}, Failed: []string{"n2: delete snapshot s: permission denied"}}, nil
}

// TestSnapshotDeleteWithANodeDown: a delete that could not reach a node
// fails (as create does), naming it, in text and with --json, so a
// retention script does not take the snapshot for gone.
func TestSnapshotDeleteWithANodeDown(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	adminv1.RegisterAdminServer(srv, partialDelete{})
	go srv.Serve(lis)
	defer srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	run := cliRunner(ctx)
	for _, extra := range [][]string{nil, {"--json"}} {
		args := append([]string{"snapshot", "delete", "old", "--addr", lis.Addr().String()}, extra...)
		out, err := run(args...)
		if err == nil || !strings.Contains(err.Error(), "1 node(s) unreachable (n3)") || !strings.Contains(err.Error(), "run delete again") {
			t.Fatalf("%v: %v (output %q), want a failure naming n3", extra, err, out)
		}
	}
	out, err := run("snapshot", "delete", "s", "--addr", lis.Addr().String())
	if err == nil || !strings.Contains(err.Error(), "n2: delete snapshot s: permission denied") || !strings.Contains(out, "deleted s on 1 node(s): [n1]") {
		t.Fatalf("a node failing the delete: %v (output %q), want it named and n1's delete shown", err, out)
	}
}

// jsonAdmin answers a repair run and a secret reload.
type jsonAdmin struct {
	adminv1.UnimplementedAdminServer
}

func (jsonAdmin) RepairRun(_ *adminv1.RepairRunRequest, s grpc.ServerStreamingServer[adminv1.RepairProgress]) error {
	for _, p := range []*adminv1.RepairProgress{{PartitionsTotal: 8}, {PartitionsDone: 4, PartitionsTotal: 8}, {PartitionsDone: 8, PartitionsTotal: 8, Mismatches: 3, KeysRepaired: 3, Done: true}} {
		if err := s.Send(p); err != nil {
			return err
		}
	}
	return nil
}

func (jsonAdmin) ReloadSecrets(context.Context, *adminv1.ReloadSecretsRequest) (*adminv1.ReloadSecretsResponse, error) {
	return &adminv1.ReloadSecretsResponse{Node: "n1", Secrets: 2}, nil
}

// TestRepairRunAndSecretReloadJSON: repair run and secret reload honour
// --json (they took the flag and printed text).
func TestRepairRunAndSecretReloadJSON(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	adminv1.RegisterAdminServer(srv, jsonAdmin{})
	go srv.Serve(lis)
	defer srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	run := cliRunner(ctx)
	addr := lis.Addr().String()
	for _, c := range []struct {
		args []string
		into proto.Message
		ok   func(proto.Message) bool
	}{
		{[]string{"repair", "run", "--json", "--addr", addr}, &adminv1.RepairProgress{},
			func(m proto.Message) bool { return m.(*adminv1.RepairProgress).GetPartitionsTotal() == 8 }},
		{[]string{"repair", "run", "--wait", "--json", "--addr", addr}, &adminv1.RepairProgress{},
			func(m proto.Message) bool {
				p := m.(*adminv1.RepairProgress)
				return p.GetDone() && p.GetKeysRepaired() == 3
			}},
		{[]string{"secret", "reload", "--json", "--addr", addr}, &adminv1.ReloadSecretsResponse{},
			func(m proto.Message) bool { return m.(*adminv1.ReloadSecretsResponse).GetSecrets() == 2 }},
	} {
		out, err := run(c.args...)
		if err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if err := protojson.Unmarshal([]byte(out), c.into); err != nil || !c.ok(c.into) {
			t.Fatalf("%v printed %q: %v, want its JSON", c.args, out, err)
		}
	}
}

// partialFaults answers fault calls that some nodes did not take.
type partialFaults struct {
	adminv1.UnimplementedAdminServer
	clear *adminv1.ClearFaultsResponse
}

func (partialFaults) InjectFault(_ context.Context, req *adminv1.InjectFaultRequest) (*adminv1.InjectFaultResponse, error) {
	f := proto.Clone(req.GetFault()).(*adminv1.Fault)
	f.Id = "f-1"
	return &adminv1.InjectFaultResponse{Fault: f, Applied: []string{"n1", "n2"}, Unreachable: []string{"n3"}}, nil
}

func (p partialFaults) ClearFaults(context.Context, *adminv1.ClearFaultsRequest) (*adminv1.ClearFaultsResponse, error) {
	return p.clear, nil
}

// TestFaultCommandsFailWhenNotEveryNodeTookThem: a fault injected or
// cleared on only part of the cluster is a failure (exit status 1), with
// --json too, naming the nodes and what to do; the JSON is still printed.
func TestFaultCommandsFailWhenNotEveryNodeTookThem(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, c := range []struct {
		name  string
		clear *adminv1.ClearFaultsResponse
		args  []string
		want  string
	}{
		{"inject, a node unreachable", nil, []string{"fault", "inject", "delay", "--delay", "1ms", "--ttl", "1m"}, "fault f-1 is not confirmed on n3"},
		{"inject --json, a node unreachable", nil, []string{"fault", "inject", "delay", "--delay", "1ms", "--ttl", "1m", "--json"}, "fault f-1 is not confirmed on n3"},
		{"clear --json, a node failed", &adminv1.ClearFaultsResponse{Cleared: 1, Failed: []string{"n2: boom"}}, []string{"fault", "clear", "--json"}, "faults not cleared on 1 node(s)"},
		{"clear, a node unreachable", &adminv1.ClearFaultsResponse{Cleared: 1, Unreachable: []string{"n3"}}, []string{"fault", "clear"}, "faults not cleared on 1 node(s)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := grpc.NewServer()
			adminv1.RegisterAdminServer(srv, partialFaults{clear: c.clear})
			go srv.Serve(lis)
			defer srv.Stop()
			out, err := cliRunner(ctx)(append(c.args, "--addr", lis.Addr().String())...)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("%v: %v (output %q), want an error with %q", c.args, err, out, c.want)
			}
			if strings.Contains(strings.Join(c.args, " "), "--json") && !strings.HasPrefix(strings.TrimSpace(out), "{") {
				t.Fatalf("%v printed %q, want the JSON answer before the error", c.args, out)
			}
		})
	}
}
