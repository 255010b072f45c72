package membership

import (
	"context"
	"testing"
	"time"
)

// TestPlanVoterChange: the group's configuration changes one step at a
// time, never leaving the voters without a live majority.
func TestPlanVoterChange(t *testing.T) {
	// n1..n3 active; n4 joined to replace n3, committed.
	replacing := func(t *testing.T) *MetaState {
		st := initState(t, 1, 3, 16)
		mustApply(t, st, Command{Kind: CmdJoin, Member: &MemberRecord{ID: "n4", DC: "dc1", Rack: "r1", Weight: 1, GRPCAddr: "h:4"}})
		mustApply(t, st, Command{Kind: CmdPlan, Op: &PlanOp{Op: OpReplace, Node: "n3", With: "n4"}})
		mustApply(t, st, Command{Kind: CmdCommit, Expect: st.Plan})
		return st
	}
	all := func(string) bool { return true }
	down := func(ids ...string) func(string) bool {
		return func(id string) bool {
			for _, d := range ids {
				if d == id {
					return false
				}
			}
			return true
		}
	}
	three := map[string]string{"n1": "voter", "n2": "voter", "n3": "voter"}
	for _, c := range []struct {
		name   string
		st     func(*testing.T) *MetaState
		roles  map[string]string
		alive  func(string) bool
		op, id string
	}{
		{"settled", func(t *testing.T) *MetaState { return initState(t, 1, 3, 16) }, three, all, VoterNone, ""},
		{"a joiner becomes a nonvoter", func(t *testing.T) *MetaState {
			st := initState(t, 1, 3, 16)
			mustApply(t, st, Command{Kind: CmdJoin, Member: &MemberRecord{ID: "n4", DC: "dc1", Rack: "r1", Weight: 1, GRPCAddr: "h:4"}})
			return st
		}, three, all, NonvoterAdd, "n4"},
		// The replacement votes during the move: added before anyone goes.
		{"replacement promoted first", replacing, map[string]string{"n1": "voter", "n2": "voter", "n3": "voter", "n4": "nonvoter"}, down("n3"), VoterAdd, "n4"},
		{"then the dead replaced node goes", replacing, map[string]string{"n1": "voter", "n2": "voter", "n3": "voter", "n4": "voter"}, down("n3"), VoterDemote, "n3"},
		// A replacement that is down is not promoted; the dead node is
		// demoted, never the live n2 first (voters {n1, n3} with n3 down
		// would have no quorum).
		{"replacement down: dead voter demoted, not a live one", replacing, map[string]string{"n1": "voter", "n2": "voter", "n3": "voter", "n4": "nonvoter"}, down("n3", "n4"), VoterDemote, "n3"},
		{"no add that leaves no live majority", replacing, map[string]string{"n1": "voter", "n2": "voter", "n3": "voter", "n4": "nonvoter"}, down("n2", "n3"), VoterNone, ""},
		{"no step that leaves no live majority", replacing, map[string]string{"n1": "voter", "n2": "voter", "n3": "voter", "n4": "nonvoter"}, down("n2", "n3", "n4"), VoterNone, ""},
		{"leader not wanted hands off", func(t *testing.T) *MetaState {
			st := initState(t, 1, 3, 16)
			st.Members["n1"].State = StateLeaving
			return st
		}, three, all, LeaderHandOff, ""},
		{"removed member leaves the group", func(t *testing.T) *MetaState {
			st := initState(t, 1, 3, 16)
			st.Members["n3"].State = StateRemoved
			return st
		}, three, all, ServerRemove, "n3"},
	} {
		t.Run(c.name, func(t *testing.T) {
			op, id := PlanVoterChange(c.st(t), c.roles, "n1", c.alive)
			if op != c.op || id != c.id {
				t.Fatalf("PlanVoterChange = %s %s, want %s %s", op, id, c.op, c.id)
			}
		})
	}
}

// TestReplacingADeadVoterKeepsALeader: in a three-node group, replacing a
// dead voter (the documented way: join a new node, plan replace, commit)
// must leave a group that still elects a leader and commits. Demoting a
// live voter while the dead one still counted used to leave the group
// without a quorum for good.
func TestReplacingADeadVoterKeepsALeader(t *testing.T) {
	c := newMetaCluster(t, "n1", "n2", "n3")
	ctx := context.Background()
	lead := c.leader()
	var ms []MemberRecord
	for _, id := range []string{"n1", "n2", "n3"} {
		ms = append(ms, member(id, "dc1", "r1"))
	}
	if _, err := lead.Apply(ctx, Command{Kind: CmdInit, ClusterID: "t", Partitions: 16, Members: ms}); err != nil {
		t.Fatal(err)
	}
	c.dirs["n4"] = t.TempDir()
	c.start("n4", nil)
	if _, err := lead.Apply(ctx, Command{Kind: CmdJoin, Member: &MemberRecord{ID: "n4", DC: "dc1", Rack: "r1", Weight: 1, GRPCAddr: "h:4"}}); err != nil {
		t.Fatal(err)
	}
	reconcile := func(until time.Time) {
		for time.Now().Before(until) {
			l := c.leaderWithin(2 * time.Second)
			if l == nil {
				continue
			}
			changed, err := l.Reconcile()
			if err == nil && !changed {
				return
			}
		}
	}
	reconcile(time.Now().Add(10 * time.Second))
	if _, err := c.leader().Apply(ctx, Command{Kind: CmdPlan, Op: &PlanOp{Op: OpReplace, Node: "n3", With: "n4"}}); err != nil {
		t.Fatal(err)
	}
	l := c.leader()
	if _, err := l.Apply(ctx, Command{Kind: CmdCommit, Expect: l.State().Plan}); err != nil {
		t.Fatal(err)
	}
	c.stop("n3")
	reconcile(time.Now().Add(5 * time.Second))
	// A leader still commits.
	deadline := time.Now().Add(20 * time.Second)
	for {
		l := c.leaderWithin(2 * time.Second)
		if l != nil {
			if _, err := l.Apply(ctx, Command{Kind: CmdPlanClear}); err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			roles, _ := c.logs["n1"].Roles()
			t.Fatalf("no leader commits after the dead voter's replacement; configuration %v", roles)
		}
	}
}

// leaderWithin returns the leader among the running logs, waiting up to d
// (nil if none).
func (c *metaCluster) leaderWithin(d time.Duration) *MetaLog {
	deadline := time.Now().Add(d)
	for {
		c.mu.Lock()
		for _, ml := range c.logs {
			if ml.IsLeader() {
				c.mu.Unlock()
				return ml
			}
		}
		c.mu.Unlock()
		if time.Now().After(deadline) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestNoLiveVoterGoesBeforeTheWantedOnesAreIn: a committed add makes a
// down node a wanted voter (a0 sorts first); while it cannot be added,
// the live, settled voter it displaces stays: demoting it would leave two
// voters, no fault tolerance, before the new one votes.
func TestNoLiveVoterGoesBeforeTheWantedOnesAreIn(t *testing.T) {
	st, roles := a0Committed(t)
	a0Down := func(id string) bool { return id != "a0" }
	if op, id := PlanVoterChange(st, roles, "n1", a0Down); op != VoterNone {
		t.Fatalf("a0 down: PlanVoterChange = %s %s, want none (n3 stays until a0 votes)", op, id)
	}
	// Once a0 is up it is added, and only then n3 goes.
	all := func(string) bool { return true }
	if op, id := PlanVoterChange(st, roles, "n1", all); op != VoterAdd || id != "a0" {
		t.Fatalf("a0 up: PlanVoterChange = %s %s, want %s a0", op, id, VoterAdd)
	}
	roles["a0"] = "voter"
	if op, id := PlanVoterChange(st, roles, "n1", all); op != VoterDemote || id != "n3" {
		t.Fatalf("a0 voting: PlanVoterChange = %s %s, want %s n3", op, id, VoterDemote)
	}
}

// TestLeaderStaysWhileAWantedVoterIsDown: a live leader that is no
// longer picked, only because a wanted voter not in yet sorts before it,
// keeps the lead (no leader would demote it meanwhile); once that voter
// is in, it hands over.
func TestLeaderStaysWhileAWantedVoterIsDown(t *testing.T) {
	st, roles := a0Committed(t)
	if op, id := PlanVoterChange(st, roles, "n3", func(id string) bool { return id != "a0" }); op != VoterNone {
		t.Fatalf("leader n3, a0 down: PlanVoterChange = %s %s, want none", op, id)
	}
	roles["a0"] = "voter"
	if op, _ := PlanVoterChange(st, roles, "n3", func(string) bool { return true }); op != LeaderHandOff {
		t.Fatalf("leader n3, a0 voting: PlanVoterChange = %s, want %s", op, LeaderHandOff)
	}
}

// a0Committed is a three-voter cluster (n1 to n3) whose committed plan
// adds a0, which sorts first and so is a wanted voter, not yet one.
func a0Committed(t *testing.T) (*MetaState, map[string]string) {
	t.Helper()
	st := initState(t, 1, 3, 16)
	mustApply(t, st, Command{Kind: CmdJoin, Member: &MemberRecord{ID: "a0", DC: "dc1", Rack: "r1", Weight: 1, GRPCAddr: "h:0"}})
	mustApply(t, st, Command{Kind: CmdPlan, Op: &PlanOp{Op: OpAdd, Node: "a0"}})
	mustApply(t, st, Command{Kind: CmdCommit, Expect: st.Plan})
	return st, map[string]string{"n1": "voter", "n2": "voter", "n3": "voter", "a0": "nonvoter"}
}
