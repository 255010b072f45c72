package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
)

// samplePlan adds n4 and reweights n3: two partitions change, one of them
// in two keyspaces.
func samplePlan() *adminv1.Plan {
	return &adminv1.Plan{
		Epoch: 7,
		Ops:   []*adminv1.PlanOp{{Op: "add", Node: "n4"}, {Op: "reweight", Node: "n3", Weight: 2}},
		Moves: []*adminv1.PlanMove{
			{Keyspace: "default", Partition: 3, Old: []string{"n1", "n2", "n3"}, New: []string{"n1", "n2", "n4"}, Bytes: 1536},
			{Keyspace: "orders", Partition: 3, Old: []string{"n1", "n2"}, New: []string{"n4", "n2"}, Bytes: 12_900_000},
			{Keyspace: "orders", Partition: 9, Old: []string{"n3", "n1"}, New: []string{"n3", "n4"}},
		},
		PartitionsChanged: 2,
		BytesToMove:       1536 + 12_900_000,
	}
}

// manyMoves is a plan moving n partitions of one keyspace.
func manyMoves(n int) *adminv1.Plan {
	p := &adminv1.Plan{Epoch: 3, Ops: []*adminv1.PlanOp{{Op: "decommission", Node: "n2"}}, PartitionsChanged: uint32(n)}
	for i := range n {
		p.Moves = append(p.Moves, &adminv1.PlanMove{Keyspace: "default", Partition: uint32(i), Old: []string{"n1", "n2"}, New: []string{"n1", "n3"}})
	}
	return p
}

func TestWritePlan(t *testing.T) {
	for _, tc := range []struct {
		name string
		plan *adminv1.Plan
		view planView
		// want is the whole output when set; otherwise the output
		// contains every line of has and none of hasNot.
		want   string
		has    []string
		hasNot []string
		// rows is the number of move rows in the table.
		rows int
	}{
		{
			name: "empty",
			plan: &adminv1.Plan{Epoch: 5},
			want: "no pending plan (epoch 5): add steps with `meridian cluster plan add|decommission|remove|replace|reweight`, then `meridian cluster commit`\n",
		},
		{
			name: "without sizes",
			plan: samplePlan(),
			want: `pending plan b2c3a24c against epoch 7:
  1. add n4
  2. reweight n3=2
2 partitions change (3 moves across keyspaces)
KEYSPACE  PARTITION  OLD       NEW       BYTES
default   3          n1,n2,n3  n1,n2,n4  -
orders    3          n1,n2     n4,n2     -
orders    9          n3,n1     n3,n4     -
bytes to move: ` + "`meridian cluster plan show --sizes`" + `
start it with ` + "`meridian cluster commit --plan b2c3a24c` (this plan only), or drop it with `meridian cluster plan clear`" + `
`,
		},
		{
			name: "with sizes",
			plan: samplePlan(),
			view: planView{sizes: true},
			has: []string{
				"default   3          n1,n2,n3  n1,n2,n4  1.5KiB",
				"orders    3          n1,n2     n4,n2     12.3MiB",
				"orders    9          n3,n1     n3,n4     0B",
				"12.3MiB to stream in total",
			},
			hasNot: []string{"--sizes"},
			rows:   3,
		},
		{
			name: "a move that could not be sized",
			plan: func() *adminv1.Plan {
				p := samplePlan()
				p.Moves[2].Unsized = true
				p.UnsizedMoves = 1
				return p
			}(),
			view: planView{sizes: true},
			has: []string{
				"orders    3          n1,n2     n4,n2     12.3MiB",
				"orders    9          n3,n1     n3,n4     ?",
				"at least 12.3MiB to stream in total",
				"1 move of 3 could not be sized, their source replica did not answer (BYTES ?)",
			},
			hasNot: []string{"0B"},
			rows:   3,
		},
		{
			name: "one partition, replace",
			plan: &adminv1.Plan{Epoch: 2, Ops: []*adminv1.PlanOp{{Op: "replace", Node: "n2", With: "n5"}},
				Moves: []*adminv1.PlanMove{{Keyspace: "default", Partition: 0, Old: []string{"n2"}, New: []string{"n5"}}}, PartitionsChanged: 1},
			has:    []string{"  1. replace n2 --with n5\n", "\n1 partition changes\n"},
			hasNot: []string{"across keyspaces"},
			rows:   1,
		},
		{
			name: "steps that move nothing",
			plan: &adminv1.Plan{Epoch: 2, Ops: []*adminv1.PlanOp{{Op: "add", Node: "n9"}}},
			has:  []string{"  1. add n9\n", "\n0 partitions change\n", "meridian cluster commit"},
			// No table and no hint to size an empty set of moves.
			hasNot: []string{"KEYSPACE", "--sizes"},
		},
		{
			name:   "capped at 50",
			plan:   manyMoves(120),
			has:    []string{"120 partitions change\n", "... and 70 more (--all lists every move)\n"},
			hasNot: []string{"default   50 "},
			rows:   50,
		},
		{
			name:   "--all",
			plan:   manyMoves(120),
			view:   planView{all: true},
			has:    []string{"default   119 "},
			hasNot: []string{"more"},
			rows:   120,
		},
		{
			// The server listed 120 of 30,000 moves (MaxPlanMovesListed).
			name: "more moves than an answer lists",
			plan: func() *adminv1.Plan {
				p := manyMoves(120)
				p.MovesTotal, p.PartitionsChanged = 30000, 15000
				return p
			}(),
			has:  []string{"15000 partitions change (30000 moves across keyspaces)\n", "... and 29950 more (--all lists the first 120)\n"},
			rows: 50,
		},
		{
			name: "more moves than an answer lists, --all",
			plan: func() *adminv1.Plan {
				p := manyMoves(120)
				p.MovesTotal = 30000
				return p
			}(),
			view: planView{all: true},
			has:  []string{"... and 29880 more (an answer lists the first 120)\n"},
			rows: 120,
		},
		{
			name:   "exactly 50",
			plan:   manyMoves(50),
			hasNot: []string{"more"},
			rows:   50,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := writePlan(&out, tc.plan, tc.view); err != nil {
				t.Fatal(err)
			}
			got := out.String()
			if tc.want != "" {
				if got != tc.want {
					t.Fatalf("got:\n%s\nwant:\n%s", got, tc.want)
				}
				return
			}
			for _, s := range tc.has {
				if !strings.Contains(got, s) {
					t.Errorf("output lacks %q:\n%s", s, got)
				}
			}
			for _, s := range tc.hasNot {
				if strings.Contains(got, s) {
					t.Errorf("output has %q:\n%s", s, got)
				}
			}
			if n := countRows(got, "default ", "orders "); n != tc.rows {
				t.Errorf("%d move rows, want %d:\n%s", n, tc.rows, got)
			}
		})
	}
}

// countRows counts the lines that start with one of prefixes.
func countRows(out string, prefixes ...string) int {
	n := 0
	for _, line := range strings.Split(out, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(line, p) {
				n++
				break
			}
		}
	}
	return n
}

func members() []*adminv1.Node {
	return []*adminv1.Node{
		{Id: "n1", Dc: "dc1", Rack: "r1", Weight: 1, State: "alive", MemberState: "active", Epoch: 12, RaftRole: "voter", Leader: true, GrpcAddr: "127.0.0.1:7001"},
		{Id: "n2", Dc: "dc1", Rack: "r2", Weight: 1, State: "alive", MemberState: "leaving", Epoch: 12, RaftRole: "voter", GrpcAddr: "127.0.0.1:7002"},
		{Id: "n4", Dc: "dc1", Rack: "r3", Weight: 2, State: "suspect", MemberState: "joining", Epoch: 11, RaftRole: "nonvoter", GrpcAddr: "127.0.0.1:7004"},
	}
}

func TestWriteStatus(t *testing.T) {
	var out bytes.Buffer
	resp := &adminv1.StatusResponse{Node: "n2", Epoch: 12, Partitions: 1024, ClusterId: "c-7f3a", Leader: "n1", Nodes: members()}
	if err := writeStatus(&out, resp); err != nil {
		t.Fatal(err)
	}
	want := `as seen by n2 (cluster c-7f3a, leader n1, epoch 12, 1024 partitions)
NODE  STATE    MEMBER   EPOCH  RAFT      DC   RACK  WEIGHT  ADDRESS
n1    alive    active   12     leader    dc1  r1    1       127.0.0.1:7001
n2    alive    leaving  12     voter     dc1  r2    1       127.0.0.1:7002
n4    suspect  joining  11     nonvoter  dc1  r3    2       127.0.0.1:7004
`
	if out.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", out.String(), want)
	}

	// A node low on disk is named under the table, with what to do.
	out.Reset()
	resp.Nodes[2].DiskLow = true
	if err := writeStatus(&out, resp); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(out.String(), want[strings.Index(want, "n4"):]+"n4 refuses writes: low on disk (free space under its min-free-disk; reads are served). Free space on its data volume, grow it, or add nodes; meridian_disk_free_bytes shows how much is free.\n") {
		t.Fatalf("status with n4 low on disk:\n%s", out.String())
	}

	// A restored cluster says so; a node that refuses the agreed
	// metadata says why, before the table.
	out.Reset()
	writeStatus(&out, &adminv1.StatusResponse{Node: "n3", Partitions: 8, RestoredFrom: "c-old", NotServing: "this node's data was restored from a snapshot of cluster c-old, but the cluster was initialized afresh"})
	if lines := strings.Split(out.String(), "\n"); len(lines) < 3 || lines[1] != "restored from the snapshots of cluster c-old" || !strings.HasPrefix(lines[2], "n3 DOES NOT SERVE: this node's data was restored") {
		t.Fatalf("status of a restored node that does not serve:\n%s", out.String())
	}

	// A node mid-election knows no leader.
	out.Reset()
	writeStatus(&out, &adminv1.StatusResponse{Node: "n1", Epoch: 1, Partitions: 8, ClusterId: "c-1"})
	if first, _, _ := strings.Cut(out.String(), "\n"); first != "as seen by n1 (cluster c-1, leader none, epoch 1, 8 partitions)" {
		t.Fatalf("header without a leader: %q", first)
	}
}

func TestWriteClusterStatus(t *testing.T) {
	transition := func() *adminv1.ClusterStatusResponse {
		return &adminv1.ClusterStatusResponse{
			ClusterId: "c-7f3a", Epoch: 12, Leader: "n1", Nodes: members(),
			InTransition:     true,
			TransitionOps:    []*adminv1.PlanOp{{Op: "add", Node: "n4"}, {Op: "decommission", Node: "n2"}},
			PartitionsMoving: 40, PartitionsDone: 13,
			Transfers: []*adminv1.Transfer{
				{Node: "n1", Keyspace: "default", Partition: 2, State: "waiting"},
				{Node: "n4", Keyspace: "default", Partition: 1, Source: "n2", State: "done", Keys: 900, Bytes: 1 << 20},
				{Node: "n4", Keyspace: "default", Partition: 5, Source: "n1", State: "streaming", Keys: 1200, Bytes: 3 << 20, BytesPerSecond: 1.5 * (1 << 20)},
				{Node: "n4", Keyspace: "orders", Partition: 5, Source: "n2", State: "failed", Error: "n2: connection refused"},
				{Node: "n4", Keyspace: "orders", Partition: 7, Source: "n1", State: "catching-up", Keys: 10, Bytes: 2048, BytesPerSecond: 100},
			},
			Unreachable: []string{"n3"},
		}
	}
	for _, tc := range []struct {
		name   string
		resp   *adminv1.ClusterStatusResponse
		all    bool
		want   string
		has    []string
		hasNot []string
	}{
		{
			name: "steady",
			resp: &adminv1.ClusterStatusResponse{ClusterId: "c-7f3a", Epoch: 12, Leader: "n1", Nodes: members()},
			want: `cluster c-7f3a, epoch 12, leader n1
NODE  DC   RACK  WEIGHT  MEMBER   GOSSIP   EPOCH  RAFT
n1    dc1  r1    1       active   alive    12     leader
n2    dc1  r2    1       leaving  alive    12     voter
n4    dc1  r3    2       joining  suspect  11     nonvoter
no transition in progress
`,
		},
		{
			name: "undoing an aborted change",
			resp: func() *adminv1.ClusterStatusResponse {
				r := transition()
				r.TransitionAborted, r.TransitionGeneration = true, 12
				return r
			}(),
			has: []string{"transition in progress: undoing (aborted) add n4; decommission n2\n", "unreachable (their transfers are not shown): n3\n",
				"if one of them is gone for good, `meridian cluster abort --yes --generation 12` takes the change up again"},
			hasNot: []string{"transition in progress: add n4", "holds the change back: undo it"},
		},
		{
			name: "pending plan",
			resp: &adminv1.ClusterStatusResponse{ClusterId: "c-7f3a", Epoch: 12, Nodes: members(), Pending: samplePlan()},
			has: []string{
				"cluster c-7f3a, epoch 12, leader none\n",
				"pending plan (not committed): add n4; reweight n3=2; 2 partitions change; see `meridian cluster plan show`\n",
				"no transition in progress\n",
			},
			hasNot: []string{"KEYSPACE", "switched"},
		},
		{
			name: "pending plan that no longer fits (steps alone)",
			resp: &adminv1.ClusterStatusResponse{ClusterId: "c-7f3a", Epoch: 12, Nodes: members(),
				Pending: &adminv1.Plan{Epoch: 12, Ops: []*adminv1.PlanOp{{Op: "decommission", Node: "n4"}}}},
			has:    []string{"pending plan (not committed): decommission n4; see `meridian cluster plan show`, which says whether it still fits\n"},
			hasNot: []string{"0 partitions change"},
		},
		{
			name: "in transition",
			resp: transition(),
			want: `cluster c-7f3a, epoch 12, leader n1
NODE  DC   RACK  WEIGHT  MEMBER   GOSSIP   EPOCH  RAFT
n1    dc1  r1    1       active   alive    12     leader
n2    dc1  r2    1       leaving  alive    12     voter
n4    dc1  r3    2       joining  suspect  11     nonvoter
transition in progress: add n4; decommission n2
partitions switched 13/40 (32%)
transfers: 1 failed, 1 streaming, 1 catching-up, 1 waiting, 1 done
NODE  KEYSPACE  PARTITION  SOURCE  STATE        KEYS  BYTES   RATE
n4    orders    5          n2      failed       0     0B      -
n4    default   5          n1      streaming    1200  3.0MiB  1.5MiB/s
n4    orders    7          n1      catching-up  10    2.0KiB  100B/s
n1    default   2          -       waiting      0     0B      -
n4 orders/5 from n2: n2: connection refused
unreachable (their transfers are not shown): n3
a node receiving partitions that is gone for good holds the change back: undo it with ` + "`meridian cluster abort`" + `
`,
		},
		{
			name: "transfers capped at 50",
			resp: func() *adminv1.ClusterStatusResponse {
				r := transition()
				r.Unreachable = nil
				for i := range 60 {
					r.Transfers = append(r.Transfers, &adminv1.Transfer{Node: "n4", Keyspace: "bulk", Partition: uint32(100 + i), Source: "n1", State: "waiting"})
				}
				return r
			}(),
			has: []string{
				"transfers: 1 failed, 1 streaming, 1 catching-up, 61 waiting, 1 done\n",
				"n4    orders    5          n2      failed",
				"... and 14 more (--all lists every transfer)\n",
			},
			hasNot: []string{"unreachable"},
		},
		{
			name: "every transfer done, none reported",
			resp: &adminv1.ClusterStatusResponse{Epoch: 3, InTransition: true, PartitionsMoving: 0,
				TransitionOps: []*adminv1.PlanOp{{Op: "remove", Node: "n9"}}},
			has:    []string{"cluster unknown, epoch 3, leader none\n", "transition in progress: remove n9\n", "partitions switched 0/0 (100%)\n", "transfers: none reported yet\n"},
			hasNot: []string{"KEYSPACE"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := writeClusterStatus(&out, tc.resp, tc.all); err != nil {
				t.Fatal(err)
			}
			got := out.String()
			if tc.want != "" && got != tc.want {
				t.Fatalf("got:\n%s\nwant:\n%s", got, tc.want)
			}
			for _, s := range tc.has {
				if !strings.Contains(got, s) {
					t.Errorf("output lacks %q:\n%s", s, got)
				}
			}
			for _, s := range tc.hasNot {
				if strings.Contains(got, s) {
					t.Errorf("output has %q:\n%s", s, got)
				}
			}
		})
	}
}

func TestFormatBytes(t *testing.T) {
	for _, tc := range []struct {
		n    uint64
		want string
	}{
		{0, "0B"},
		{1023, "1023B"},
		{1024, "1.0KiB"},
		{1536, "1.5KiB"},
		{12_900_000, "12.3MiB"},
		{1<<30 - 1, "1024.0MiB"},
		{5 << 30, "5.0GiB"},
		{3 << 40, "3.0TiB"},
	} {
		if got := formatBytes(tc.n); got != tc.want {
			t.Errorf("formatBytes(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

func TestParseReweight(t *testing.T) {
	for _, tc := range []struct {
		in     string
		id     string
		weight uint32
		err    string
	}{
		{in: "n3=2", id: "n3", weight: 2},
		{in: " n3 = 1000 ", id: "n3", weight: 1000},
		{in: "n3", err: "want ID=WEIGHT, e.g. n3=2"},
		{in: "=2", err: "want ID=WEIGHT"},
		{in: "n3=", err: "want ID=WEIGHT"},
		{in: "n3=two", err: `weight "two" is not a whole number from 1 to 1000`},
		{in: "n3=-1", err: "not a whole number"},
		{in: "n3=1.5", err: "not a whole number"},
		{in: "n3=0", err: "use 'meridian cluster plan decommission n3'"},
		{in: "n3=1001", err: "weight 1001 is above the largest, 1000"},
		{in: "n3=99999999999", err: "not a whole number"},
	} {
		id, w, err := parseReweight(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseReweight(%q) = %q, %d, %v; want an error with %q", tc.in, id, w, err, tc.err)
			}
			continue
		}
		if err != nil || id != tc.id || w != tc.weight {
			t.Errorf("parseReweight(%q) = %q, %d, %v; want %q, %d", tc.in, id, w, err, tc.id, tc.weight)
		}
	}
}

func TestWriteAltered(t *testing.T) {
	ks := &adminv1.Keyspace{Name: "orders", Replication: map[string]uint32{"east": 3, "west": 1}, N: 4, MaxSiblings: 20}
	var out bytes.Buffer
	writeAltered(&out, &adminv1.AlterKeyspaceResponse{Keyspace: ks, Epoch: 9, MovesData: true})
	want := "altered keyspace orders (replication east=3,west=1, N=4, max siblings 20, max set bytes 64.0MiB (default))\n" +
		"replication change committed at epoch 9: data moves to the new replicas; follow it with `meridian cluster status`\n"
	if out.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", out.String(), want)
	}
	out.Reset()
	ks.MaxSiblings, ks.MaxSetBytes = 0, 1<<20
	writeAltered(&out, &adminv1.AlterKeyspaceResponse{Keyspace: ks, Epoch: 10})
	if got := out.String(); !strings.Contains(got, "max siblings 100 (default), max set bytes 1.0MiB") || !strings.HasSuffix(got, "committed at epoch 10: no data moves\n") {
		t.Fatalf("limits-only change:\n%s", got)
	}
}

// TestCommandsCheckArguments: mistakes in arguments are caught before
// any node is asked (the address is one nobody listens on).
func TestCommandsCheckArguments(t *testing.T) {
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"keyspace", "drop", "orders"}, `dropping keyspace "orders" makes every node delete its data, and it cannot be undone: run again with --yes`},
		{[]string{"keyspace", "alter", "orders"}, "nothing to change: give --replication, --max-siblings or --max-set-bytes"},
		{[]string{"keyspace", "alter", "orders", "--replication", "east"}, "want DC=RF pairs"},
		{[]string{"keyspace", "alter", "orders", "--max-set-bytes", "lots"}, `--max-set-bytes "lots": want bytes such as 1048576 or 64MiB`},
		{[]string{"cluster", "plan", "replace", "n2"}, "--with is required"},
		{[]string{"cluster", "plan", "reweight", "n3"}, "want ID=WEIGHT"},
		{[]string{"cluster", "plan", "reweight", "n3=0"}, "decommission"},
		{[]string{"cluster", "plan", "add"}, "accepts 1 arg(s)"},
		{[]string{"cluster", "status", "--watch", "--interval", "0s"}, "--interval 0s: want a positive duration"},
	} {
		root := newRoot()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append(tc.args, "--addr", "127.0.0.1:1", "--timeout", "100ms"))
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("meridian %s: %v; want an error with %q", strings.Join(tc.args, " "), err, tc.err)
		}
	}
}

// fakeStatus answers a watcher with responses in turn (the last one
// repeats), and errors where errs says so.
type fakeStatus struct {
	resps []*adminv1.ClusterStatusResponse
	errs  map[int]error
	calls int
}

func (f *fakeStatus) fetch(context.Context) (*adminv1.ClusterStatusResponse, error) {
	i := f.calls
	f.calls++
	if err := f.errs[i]; err != nil {
		return nil, err
	}
	return f.resps[min(i, len(f.resps)-1)], nil
}

func moving(done uint32) *adminv1.ClusterStatusResponse {
	return &adminv1.ClusterStatusResponse{Epoch: 12, InTransition: true, PartitionsMoving: 4, PartitionsDone: done}
}

// decommissioning is a transition of generation 12 taking id out.
func decommissioning(id string) *adminv1.ClusterStatusResponse {
	r := moving(0)
	r.TransitionGeneration, r.TransitionOps = 12, []*adminv1.PlanOp{{Op: "decommission", Node: id}}
	return r
}

func TestTransitionOutcome(t *testing.T) {
	nodes := func(states ...string) *adminv1.ClusterStatusResponse {
		r := &adminv1.ClusterStatusResponse{Epoch: 20}
		for i := 0; i < len(states); i += 2 {
			r.Nodes = append(r.Nodes, &adminv1.Node{Id: states[i], MemberState: states[i+1]})
		}
		return r
	}
	change := func(aborted bool, ops ...*adminv1.PlanOp) *adminv1.ClusterStatusResponse {
		return &adminv1.ClusterStatusResponse{InTransition: true, TransitionAborted: aborted, TransitionOps: ops}
	}
	add := &adminv1.PlanOp{Op: "add", Node: "n4"}
	rep := &adminv1.PlanOp{Op: "replace", Node: "n2", With: "n5"}
	dec := &adminv1.PlanOp{Op: "remove", Node: "n3"}
	for _, c := range []struct {
		name    string
		watched *adminv1.ClusterStatusResponse
		final   *adminv1.ClusterStatusResponse
		undone  bool
		ok      bool
	}{
		{"add happened", change(false, add), nodes("n4", "active"), false, true},
		{"add aborted", change(false, add), nodes("n4", "joining"), false, false},
		{"undo of an add", change(true, add), nodes("n4", "joining"), false, true},
		{"replace happened", change(false, rep), nodes("n2", "removed", "n5", "active"), false, true},
		{"replace aborted", change(false, rep), nodes("n2", "active", "n5", "joining"), false, false},
		{"remove happened, member gone", change(false, dec), nodes("n1", "active"), false, true},
		{"remove taken up again while its undo was watched", change(true, dec), nodes("n1", "active"), false, false},
		{"reweight", change(false, &adminv1.PlanOp{Op: "reweight", Node: "n1", Weight: 2}), nodes("n1", "active"), false, true},
		{"seen undone", change(false), nodes(), true, false},
	} {
		if err := transitionOutcome(c.watched, c.final, c.undone); (err == nil) != c.ok {
			t.Errorf("%s: %v, want ok %v", c.name, err, c.ok)
		}
	}
}

// runWatch runs a watcher over fake responses on a fake clock; cancel, if
// set, is called after that much (fake) time.
func runWatch(t *testing.T, f *fakeStatus, cancelAfter time.Duration) (string, error) {
	var (
		out bytes.Buffer
		err error
	)
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		if cancelAfter > 0 {
			time.AfterFunc(cancelAfter, cancel)
		}
		w := watcher{out: &out, fetch: f.fetch, interval: 2 * time.Second, now: time.Now,
			render: func(r *adminv1.ClusterStatusResponse) error {
				fmt.Fprintf(&out, "[epoch %d, %d/%d]\n", r.Epoch, r.PartitionsDone, r.PartitionsMoving)
				return nil
			}}
		err = w.run(ctx)
	})
	return out.String(), err
}

func TestWatch(t *testing.T) {
	t.Run("no transition prints once", func(t *testing.T) {
		f := &fakeStatus{resps: []*adminv1.ClusterStatusResponse{{Epoch: 5}}}
		out, err := runWatch(t, f, 0)
		if err != nil || out != "[epoch 5, 0/0]\n" || f.calls != 1 {
			t.Fatalf("err %v, %d polls, output:\n%s", err, f.calls, out)
		}
	})
	t.Run("until the transition ends", func(t *testing.T) {
		f := &fakeStatus{resps: []*adminv1.ClusterStatusResponse{moving(0), moving(2), {Epoch: 13}}}
		out, err := runWatch(t, f, 0)
		if err != nil {
			t.Fatal(err)
		}
		frames := strings.Count(out, "every 2s (Ctrl-C stops)\n")
		if frames != 3 || f.calls != 3 || !strings.Contains(out, "[epoch 12, 2/4]\n") ||
			!strings.HasSuffix(out, "[epoch 13, 0/0]\ntransition finished: the cluster is at epoch 13\n") {
			t.Fatalf("%d frames, %d polls, output:\n%s", frames, f.calls, out)
		}
	})
	t.Run("a failed poll is shown and retried", func(t *testing.T) {
		f := &fakeStatus{resps: []*adminv1.ClusterStatusResponse{moving(1), moving(1), moving(3), {Epoch: 13}},
			errs: map[int]error{1: errors.New("connection refused")}}
		out, err := runWatch(t, f, 0)
		if err != nil || !strings.Contains(out, "poll failed, retrying: connection refused\n") || !strings.Contains(out, "transition finished") {
			t.Fatalf("err %v, output:\n%s", err, out)
		}
	})
	t.Run("the first poll failing fails the command", func(t *testing.T) {
		f := &fakeStatus{errs: map[int]error{0: errors.New("connection refused")}}
		if _, err := runWatch(t, f, 0); err == nil || err.Error() != "connection refused" {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("a change aborted while watched fails", func(t *testing.T) {
		undo := moving(0)
		undo.TransitionAborted, undo.TransitionGeneration = true, 13
		f := &fakeStatus{resps: []*adminv1.ClusterStatusResponse{decommissioning("n2"), undo, {Epoch: 14, Nodes: []*adminv1.Node{{Id: "n2", MemberState: "active"}}}}}
		out, err := runWatch(t, f, 0)
		if err == nil || !strings.Contains(err.Error(), "was aborted ('meridian cluster abort') before it finished") || strings.Contains(out, "transition finished") {
			t.Fatalf("err %v, output:\n%s", err, out)
		}
	})
	t.Run("a change aborted and undone between two polls fails", func(t *testing.T) {
		f := &fakeStatus{resps: []*adminv1.ClusterStatusResponse{decommissioning("n2"), {Epoch: 14, Nodes: []*adminv1.Node{{Id: "n1", MemberState: "active"}, {Id: "n2", MemberState: "active"}}}}}
		if out, err := runWatch(t, f, 0); err == nil || !strings.Contains(err.Error(), "did not take effect: decommission n2 (now active)") {
			t.Fatalf("err %v, output:\n%s", err, out)
		}
	})
	t.Run("a change that happened succeeds", func(t *testing.T) {
		f := &fakeStatus{resps: []*adminv1.ClusterStatusResponse{decommissioning("n2"), {Epoch: 14, Nodes: []*adminv1.Node{{Id: "n1", MemberState: "active"}, {Id: "n2", MemberState: "removed"}}}}}
		if out, err := runWatch(t, f, 0); err != nil || !strings.Contains(out, "transition finished") {
			t.Fatalf("err %v, output:\n%s", err, out)
		}
	})
	t.Run("watching an undo from its start succeeds", func(t *testing.T) {
		undo := decommissioning("n2")
		undo.TransitionAborted = true
		f := &fakeStatus{resps: []*adminv1.ClusterStatusResponse{undo, undo, {Epoch: 14, Nodes: []*adminv1.Node{{Id: "n2", MemberState: "active"}}}}}
		if out, err := runWatch(t, f, 0); err != nil || !strings.Contains(out, "transition finished") {
			t.Fatalf("err %v, output:\n%s", err, out)
		}
	})
	t.Run("Ctrl-C", func(t *testing.T) {
		f := &fakeStatus{resps: []*adminv1.ClusterStatusResponse{moving(0), moving(1)}}
		out, err := runWatch(t, f, 5*time.Second)
		if err == nil || !strings.Contains(err.Error(), "stopped watching; the transition goes on (1/4 partitions switched at epoch 12)") {
			t.Fatalf("err %v, output:\n%s", err, out)
		}
		if frames := strings.Count(out, "(Ctrl-C stops)"); frames != 3 {
			t.Fatalf("%d frames in 5s at 2s, want 3:\n%s", frames, out)
		}
	})
}

// TestWatchJSON: with --json, standard output carries only JSON objects,
// one per line (one per poll); the time of each poll, a failed poll and
// the end go to standard error.
func TestWatchJSON(t *testing.T) {
	f := &fakeStatus{resps: []*adminv1.ClusterStatusResponse{moving(0), moving(0), moving(2), {Epoch: 13}},
		errs: map[int]error{1: errors.New("connection refused")}}
	var out, errOut bytes.Buffer
	var err error
	synctest.Test(t, func(t *testing.T) {
		w := watcher{out: &out, errOut: &errOut, fetch: f.fetch, json: true, interval: 2 * time.Second, now: time.Now,
			render: func(*adminv1.ClusterStatusResponse) error {
				t.Error("render called with json")
				return nil
			}}
		err = w.run(t.Context())
	})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines on stdout, want 3 (one per successful poll):\n%s", len(lines), out.String())
	}
	for i, line := range lines {
		var st map[string]any
		if err := json.Unmarshal([]byte(line), &st); err != nil {
			t.Fatalf("stdout line %d is not a JSON object (%v): %q", i+1, err, line)
		}
		if last := i == len(lines)-1; st["in_transition"] == last || (last && fmt.Sprint(st["epoch"]) != "13") {
			t.Fatalf("stdout line %d: %v", i+1, st)
		}
	}
	for _, want := range []string{"every 2s (Ctrl-C stops)", "poll failed, retrying: connection refused", "transition finished: the cluster is at epoch 13"} {
		if !strings.Contains(errOut.String(), want) {
			t.Fatalf("stderr lacks %q:\n%s", want, errOut.String())
		}
	}
}

// TestAbortGeneration: `cluster abort --yes` undoes the change in
// progress, but not an undo unless its generation is named (an abort run
// twice would otherwise take the aborted change up again).
func TestAbortGeneration(t *testing.T) {
	change := &adminv1.ClusterStatusResponse{InTransition: true, TransitionGeneration: 10, TransitionOps: []*adminv1.PlanOp{{Op: "add", Node: "n4"}}}
	undo := &adminv1.ClusterStatusResponse{InTransition: true, TransitionGeneration: 11, TransitionAborted: true, TransitionOps: change.TransitionOps}
	if g, err := abortGeneration(change, 0); err != nil || g != 10 {
		t.Fatalf("abort --yes of a change: %d, %v; want 10", g, err)
	}
	if g, err := abortGeneration(undo, 0); err == nil || !strings.Contains(err.Error(), "--generation 11") {
		t.Fatalf("abort --yes during an undo: %d, %v; want a refusal naming --generation 11", g, err)
	}
	// Named: sent as given (the server finds an abort of 10 already
	// applied, and takes up the change only for 11).
	for _, g := range []uint64{10, 11} {
		if got, err := abortGeneration(undo, g); err != nil || got != g {
			t.Fatalf("abort --yes --generation %d during an undo: %d, %v", g, got, err)
		}
	}
}

// TestReviewedPlan: `cluster commit --plan ID` sends the pending plan when
// it is the one reviewed, refuses another before sending anything, and
// takes the plan already moving as committed (a retry).
func TestReviewedPlan(t *testing.T) {
	reviewed := []*adminv1.PlanOp{{Op: "add", Node: "n4"}}
	id := planID(reviewed)
	if id != planID([]*adminv1.PlanOp{{Op: "add", Node: "n4"}}) || id == planID([]*adminv1.PlanOp{{Op: "add", Node: "n5"}}) {
		t.Fatalf("plan IDs: the same steps must give the same ID, others another")
	}
	pending := func(ops ...*adminv1.PlanOp) *adminv1.ClusterStatusResponse {
		return &adminv1.ClusterStatusResponse{Pending: &adminv1.Plan{Ops: ops}}
	}
	if got, err := reviewedPlan(pending(reviewed...), id); err != nil || planID(got) != id {
		t.Fatalf("the reviewed plan pending: %v, %v", got, err)
	}
	grown := pending(reviewed[0], &adminv1.PlanOp{Op: "decommission", Node: "n2"})
	if _, err := reviewedPlan(grown, id); err == nil || !strings.Contains(err.Error(), "is now add n4; decommission n2") || !strings.Contains(err.Error(), "nothing committed") {
		t.Fatalf("a step added since the review: %v", err)
	}
	moving := &adminv1.ClusterStatusResponse{InTransition: true, TransitionOps: reviewed}
	if got, err := reviewedPlan(moving, id); err != nil || planID(got) != id {
		t.Fatalf("the reviewed plan already moving: %v, %v", got, err)
	}
	moving.TransitionAborted = true // its undo is not the plan
	if _, err := reviewedPlan(moving, id); err == nil || !strings.Contains(err.Error(), "no plan is pending") {
		t.Fatalf("the reviewed plan being undone: %v", err)
	}
}
