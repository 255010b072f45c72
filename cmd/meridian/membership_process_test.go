package main

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
)

// Membership changes on real `meridian serve` processes, driven through
// the CLI as an operator would, each under a QUORUM write load: after the
// change every acknowledged write is readable at ALL.

// memberFlags are the serve flags of these tests: few partitions so
// transfers are quick, metadata and gossip on the test profile (from
// startProcCluster), hints offered every 200ms.
var memberFlags = []string{"--partitions", "64"}

// TestProcJoinFourthNode: n4 starts with --join, is listed as joining,
// `cluster plan add n4` shows moves, `cluster commit` starts them and
// `cluster status --watch` exits 0 once they are done; n4 is then active
// and every node has applied the same epoch.
func TestProcJoinFourthNode(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs processes")
	}
	c := startMemberCluster(t, 3, memberFlags...)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	w := startWriteLoad(t, c, "join", 0, 1, 2)
	w.waitMore(t, 50)

	c.join(t, "n4", 0)
	c.waitJoining(t, ctx, "n4", 1)
	c.planAndCommit(t, ctx, 0, []string{"add", "n4"})
	c.watchTransition(t, 1, 2*time.Minute)
	w.waitMore(t, 20) // writes keep being acknowledged after the switch
	acked := w.stop(t)

	st, err := c.clusterStatus(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if s := memberState(st.Nodes, "n4"); s != "active" || st.InTransition {
		t.Fatalf("after the transition n4 is %q (in transition: %v)", s, st.InTransition)
	}
	readAllAtALL(t, c, 0, acked, time.Minute)
	readAllAtALL(t, c, 3, acked, time.Minute)
	s := c.checkSameEpoch(t, ctx, 3)
	t.Logf("status: epoch %d, leader %s", s.Epoch, s.Leader)
}

// TestProcDecommissionThenStop: n4 of four is decommissioned under load;
// once the transition finished it is removed, and stopping it loses
// nothing: every acknowledged write is readable at ALL from the others.
func TestProcDecommissionThenStop(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs processes")
	}
	c := startMemberCluster(t, 4, memberFlags...)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	w := startWriteLoad(t, c, "decom", 0, 1, 2)
	w.waitMore(t, 50)

	c.planAndCommit(t, ctx, 0, []string{"decommission", "n4"})
	c.watchTransition(t, 0, 2*time.Minute)
	st, err := c.clusterStatus(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if s := memberState(st.Nodes, "n4"); s != "removed" {
		t.Fatalf("after its decommission n4 is %q, want removed", s)
	}
	terminate(t, c.proc(t, "n4"))
	w.waitMore(t, 20)
	acked := w.stop(t)
	readAllAtALL(t, c, 0, acked, time.Minute)
	readAllAtALL(t, c, 2, acked, time.Minute)
}

// TestProcReplaceAndRemoveDeadNode: n4 of four dies (SIGKILL); n5 joins
// and `cluster plan replace n4 --with n5` rebuilds n4's partitions on it
// from the other replicas. Then n3 dies and `cluster plan remove n3`
// takes it out (RF 3 still fits the three nodes left). After each change
// every acknowledged write is readable at ALL.
func TestProcReplaceAndRemoveDeadNode(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs processes")
	}
	c := startMemberCluster(t, 4, memberFlags...)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	w := startWriteLoad(t, c, "replace", 0, 1)
	w.waitMore(t, 50)

	c.proc(t, "n4").kill()
	w.waitMore(t, 20)
	c.join(t, "n5", 0)
	c.waitJoining(t, ctx, "n5", 0)
	c.planAndCommit(t, ctx, 0, []string{"replace", "n4", "--with", "n5"})
	c.watchTransition(t, 1, time.Minute)
	st, err := c.clusterStatus(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if n4, n5 := memberState(st.Nodes, "n4"), memberState(st.Nodes, "n5"); n4 != "removed" || n5 != "active" {
		t.Fatalf("after the replace n4 is %q and n5 %q, want removed and active", n4, n5)
	}
	w.waitMore(t, 20)
	acked := w.stop(t)
	readAllAtALL(t, c, 0, acked, time.Minute)

	// n3 dies too: the three left still hold RF 3.
	w = startWriteLoad(t, c, "remove", 0, 1)
	w.waitMore(t, 50)
	c.proc(t, "n3").kill()
	w.waitMore(t, 20)
	c.planAndCommit(t, ctx, 0, []string{"remove", "n3"})
	c.watchTransition(t, 1, time.Minute)
	st, err = c.clusterStatus(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if s := memberState(st.Nodes, "n3"); s != "removed" {
		t.Fatalf("after its removal n3 is %q", s)
	}
	w.waitMore(t, 20)
	acked = mergeKeys(acked, w.stop(t))
	readAllAtALL(t, c, 1, acked, time.Minute)
	readAllAtALL(t, c, c.index(t, "n5"), acked, time.Minute)
}

// TestProcLeaderLossDuringCommit: the metadata log's leader is killed
// (SIGKILL) right after `cluster commit` of n4's addition: the others
// elect a new leader and the transition finishes without it. The killed
// node then restarts and catches up: every node at the same epoch, every
// acknowledged write readable at ALL.
func TestProcLeaderLossDuringCommit(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs processes")
	}
	c := startMemberCluster(t, 3, memberFlags...)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c.join(t, "n4", 0)
	c.waitJoining(t, ctx, "n4", 0)

	st, err := c.status(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	leader := st.Leader
	if leader == "" {
		t.Fatalf("status --json names no leader: %v", st)
	}
	li := c.index(t, leader)
	var others []int
	for i := range 3 {
		if i != li {
			others = append(others, i)
		}
	}
	w := startWriteLoad(t, c, "leader", others...)
	w.waitMore(t, 50)

	// Commit through the leader and kill it at once.
	c.planAndCommit(t, ctx, li, []string{"add", "n4"})
	c.procs[li].kill()
	t.Logf("killed %s, the metadata leader, right after the commit", leader)

	pollUntil(t, 30*time.Second, "a new leader elected", func() (bool, string) {
		st, err := c.status(ctx, others[0])
		if err != nil {
			return false, err.Error()
		}
		return st.Leader != "" && st.Leader != leader, "leader " + st.Leader
	})
	c.watchTransition(t, others[0], time.Minute)
	cs, err := c.clusterStatus(ctx, others[1])
	if err != nil {
		t.Fatal(err)
	}
	if s := memberState(cs.Nodes, "n4"); s != "active" {
		t.Fatalf("after the transition n4 is %q", s)
	}
	t.Logf("transition finished with %s down; new leader %s", leader, cs.Leader)

	c.restart(t, c.procs[li])
	w.waitMore(t, 20)
	acked := w.stop(t)
	c.checkSameEpoch(t, ctx, li)
	readAllAtALL(t, c, others[0], acked, time.Minute)
	readAllAtALL(t, c, c.index(t, "n4"), acked, time.Minute)
}

// TestProcConcurrentKeyspaceCreate: two `keyspace create race` with
// different replication run at once through n1 and n3: exactly one
// succeeds, the other says the keyspace already exists, and every node
// lists the winner's definition.
func TestProcConcurrentKeyspaceCreate(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs processes")
	}
	c := startMemberCluster(t, 3, memberFlags...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w := startWriteLoad(t, c, "race", 0, 1, 2)
	w.waitMore(t, 50)

	type result struct {
		stdout, stderr string
		err            error
	}
	rf := []uint32{2, 3}
	via := []int{0, 2}
	results := make([]result, 2)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			var r result
			r.stdout, r.stderr, r.err = c.run(ctx, "keyspace", "create", "race", "--replication", fmt.Sprintf("dc1=%d", rf[i]), "--addr", c.procs[via[i]].addr)
			results[i] = r
		}()
	}
	close(start)
	wg.Wait()
	if (results[0].err == nil) == (results[1].err == nil) {
		t.Fatalf("exactly one create must succeed:\nthrough n1 (dc1=2): %v %s%s\nthrough n3 (dc1=3): %v %s%s",
			results[0].err, results[0].stdout, results[0].stderr, results[1].err, results[1].stdout, results[1].stderr)
	}
	won, lost := 0, 1
	if results[0].err != nil {
		won, lost = 1, 0
	}
	if !strings.Contains(results[won].stdout, "created keyspace race") {
		t.Fatalf("the winning create printed: %s", results[won].stdout)
	}
	if msg := results[lost].stderr; !strings.Contains(msg, "already exists") || !strings.Contains(msg, "race") {
		t.Fatalf("the losing create must say the keyspace already exists; it printed:\n%s", msg)
	}
	t.Logf("winner dc1=%d; the other create: %s", rf[won], strings.TrimSpace(results[lost].stderr))

	for i := range c.procs {
		pollUntil(t, 10*time.Second, c.procs[i].id+" lists the winning definition", func() (bool, string) {
			list := &adminv1.ListKeyspacesResponse{}
			if err := c.runJSON(ctx, list, "keyspace", "list", "--addr", c.procs[i].addr); err != nil {
				return false, err.Error()
			}
			for _, k := range list.Keyspaces {
				if k.Name == "race" {
					return k.Replication["dc1"] == rf[won] && k.N == rf[won], protojson.Format(k)
				}
			}
			return false, "no keyspace race listed"
		})
	}
	acked := w.stop(t)
	readAllAtALL(t, c, 1, acked, time.Minute)
}

// transferFlags make a join's transfers last seconds and show their
// pages: four partitions of about 2,500 keys each stream in pages of
// 1,000 keys (the checkpoint granularity), throttled to 250 KB/s (about a
// page a second) on every receiver.
var transferFlags = []string{"--partitions", "4", "--transfer-bytes-per-second", "250000"}

// transferSample is what a receiver reported of one partition's
// transfer.
type transferSample struct {
	keys, bytes uint64
	source      string
	state       string
}

// transfersOf reports the transfers node id receives in the default
// keyspace, and whether a transition is in progress, from ClusterStatus
// (which asks every node).
func transfersOf(ctx context.Context, admin adminv1.AdminClient, id string) (map[uint32]transferSample, bool, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := admin.ClusterStatus(cctx, &adminv1.ClusterStatusRequest{})
	if err != nil {
		return nil, false, err
	}
	out := map[uint32]transferSample{}
	for _, tr := range st.Transfers {
		if tr.Node == id && tr.Keyspace == "default" {
			out[tr.Partition] = transferSample{keys: tr.Keys, bytes: tr.Bytes, source: tr.Source, state: tr.State}
		}
	}
	return out, st.InTransition, nil
}

// transferDoneSource is the source of the last "partition transfer done"
// line a node logged for a partition ("" if none).
func transferDoneSource(t *testing.T, p *proc, partition uint32) string {
	t.Helper()
	log, err := os.ReadFile(p.log.Name())
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(fmt.Sprintf(`msg="partition transfer done".* partition=%d .*source=(\S+)`, partition))
	src := ""
	for _, m := range re.FindAllStringSubmatch(string(log), -1) {
		src = m[1]
	}
	return src
}

// TestProcTransferResumesAfterKill kills the two ends of a partition
// transfer in turn, each mid-stream (SIGKILL), under a QUORUM write load:
//
//  1. n4 joins with about 2 MB to receive at 250 KB/s; once it reports a
//     partition with one page merged and two to come, it is killed and
//     restarted with the same flags. The transfer resumes after its
//     checkpoint (the restarted process merges only what was left of the
//     partition), and the transition finishes.
//  2. n5 replaces n3; once n5 streams a partition from some source, that
//     source is killed. The transfer finishes from another replica with
//     the source still down, and the transition finishes. The source
//     restarts and n3, replaced, is stopped.
//
// Then every acknowledged write is readable at ALL.
func TestProcTransferResumesAfterKill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs processes")
	}
	c := startMemberCluster(t, 3, transferFlags...)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	start := time.Now()
	preload := putMany(t, c, 0, "bulk", 10000, 200)
	t.Logf("preloaded %d keys of 200 bytes in %v", len(preload), time.Since(start).Round(100*time.Millisecond))
	w := startWriteLoad(t, c, "resume", 0, 1, 2)
	admin := c.admin(t, 0)

	// The second phase changes the cluster the first one leaves.
	if !t.Run("receiver killed", func(t *testing.T) {
		n4 := c.join(t, "n4", 0)
		c.waitJoining(t, ctx, "n4", 0)
		plan := c.plan(t, ctx, 0, true, []string{"add", "n4"})
		size := map[uint32]uint64{}
		for _, m := range plan.Moves {
			if m.Keyspace == "default" {
				size[m.Partition] = m.Bytes
			}
		}
		c.commit(t, ctx, 0)

		// Kill n4 once a partition is streaming with a page merged (and
		// checkpointed) and at least two to come: the same count in two
		// polls in a row, so n4 waits on its throttle between two pages.
		var before, prev map[uint32]transferSample
		pollUntil(t, 30*time.Second, "n4 streams a partition with a page merged", func() (bool, string) {
			tr, _, err := transfersOf(ctx, admin, "n4")
			if err != nil {
				return false, err.Error()
			}
			prev, before = before, tr
			for p, s := range tr {
				if s.state == "streaming" && s.bytes > 0 && s.bytes < size[p]/2 && prev[p] == s {
					return true, ""
				}
			}
			return false, fmt.Sprint(tr)
		})
		n4.kill()
		t.Logf("killed n4 mid-transfer; it had reported %v (plan sizes %v)", before, size)
		c.restart(t, n4)

		// Follow the restarted n4's transfers (asking it directly and often:
		// a short rest of a partition may stream within a throttle's
		// burst) until the transition ends: a partition it had streamed
		// part of goes on from its checkpoint, so the new process merges
		// only the rest of it.
		n4admin := c.admin(t, c.index(t, "n4"))
		after := map[uint32]uint64{}
		deadline := time.Now().Add(time.Minute)
		for i := 0; ; i++ {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			tr, err := n4admin.Transfers(cctx, &adminv1.TransfersRequest{})
			cancel()
			if err == nil {
				for _, x := range tr.Transfers {
					if x.Keyspace == "default" {
						after[x.Partition] = max(after[x.Partition], x.Bytes)
					}
				}
			}
			if i%20 == 0 {
				if _, inTransition, err := transfersOf(ctx, admin, "n4"); err == nil && !inTransition {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("the transition did not end within a minute of n4's restart; n4 merged %v", after)
			}
			time.Sleep(20 * time.Millisecond)
		}
		resumed := 0
		for p, s := range before {
			if s.bytes == 0 || s.bytes >= size[p] {
				continue
			}
			rest := size[p] - s.bytes
			switch {
			case after[p] > rest+64<<10: // slack: the load's small writes to p meanwhile
				t.Errorf("partition %d: n4 had merged %d of its %d bytes before the kill, yet the restarted n4 merged %d: it streamed the partition again instead of resuming after its checkpoint",
					p, s.bytes, size[p], after[p])
			case after[p] == 0:
				t.Logf("partition %d: %d of %d bytes before the kill; the restarted n4 finished it between two polls", p, s.bytes, size[p])
			default:
				resumed++
				t.Logf("partition %d resumed: %d of %d bytes before the kill, %d merged after the restart", p, s.bytes, size[p], after[p])
			}
		}
		if resumed == 0 && !t.Failed() {
			t.Fatalf("no partition seen resuming: before the kill %v (sizes %v), merged after the restart %v", before, size, after)
		}
		c.watchTransition(t, 0, 30*time.Second)
	}) {
		return
	}

	t.Run("source killed", func(t *testing.T) {
		n5 := c.join(t, "n5", 0)
		c.waitJoining(t, ctx, "n5", 0)
		plan := c.plan(t, ctx, 0, true, []string{"replace", "n3", "--with", "n5"})
		size := map[uint32]uint64{}
		for _, m := range plan.Moves {
			if m.Keyspace == "default" {
				size[m.Partition] = m.Bytes
			}
		}
		c.commit(t, ctx, 0)
		n5admin := c.admin(t, c.index(t, "n5"))
		var (
			part   uint32
			source string
		)
		// As above: a partition with a page merged and more to come,
		// streaming from a node that stays a replica (n3 keeps serving the
		// write load until it is removed, so it keeps hints for the
		// killed node).
		var prev map[uint32]transferSample
		pollUntil(t, 30*time.Second, "n5 streams a partition with a page merged from n1, n2 or n4", func() (bool, string) {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			tr, err := n5admin.Transfers(cctx, &adminv1.TransfersRequest{})
			if err != nil {
				return false, err.Error()
			}
			cur := map[uint32]transferSample{}
			for _, x := range tr.Transfers {
				if x.Keyspace == "default" {
					cur[x.Partition] = transferSample{keys: x.Keys, bytes: x.Bytes, source: x.Source, state: x.State}
				}
			}
			prev, cur = cur, prev
			for p, s := range prev {
				if s.state == "streaming" && s.source != "n3" && s.bytes > 0 && s.bytes < size[p]*9/10 && cur[p] == s {
					part, source = p, s.source
					return true, ""
				}
			}
			return false, fmt.Sprint(prev)
		})
		src := c.proc(t, source)
		src.kill()
		t.Logf("killed %s, the source n5 was streaming partition %d from", source, part)
		via := 0
		if source == "n1" {
			via = 1
		}
		c.watchTransition(t, via, time.Minute)
		cs, err := c.clusterStatus(ctx, via)
		if err != nil {
			t.Fatal(err)
		}
		if n3, n5 := memberState(cs.Nodes, "n3"), memberState(cs.Nodes, "n5"); n3 != "removed" || n5 != "active" {
			t.Fatalf("after the replace n3 is %q and n5 %q, want removed and active", n3, n5)
		}
		if from := transferDoneSource(t, n5, part); from == "" || from == source {
			t.Fatalf("n5's log has partition %d done from %q, want another source than the killed %s", part, from, source)
		} else {
			t.Logf("partition %d finished from %s after %s was killed", part, from, source)
		}
		c.restart(t, src) // a replica again: ALL needs it
		terminate(t, c.proc(t, "n3"))
	})
	if t.Failed() {
		return
	}
	w.waitMore(t, 20)
	acked := mergeKeys(preload, w.stop(t))
	readAllAtALL(t, c, c.index(t, "n4"), acked, time.Minute)
}

// TestProcAbortStuckAdd: n4's add is committed, some partitions switch to
// it, then n4 dies for good: the change can never finish, and no other
// plan can be committed. `cluster abort` first shows what it would do,
// then with --yes undoes the change: the switched partitions stream back
// to their old replicas, the transition ends, n4 is left joining, a new
// plan is accepted, and every acknowledged write is readable at ALL.
func TestProcAbortStuckAdd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs processes")
	}
	// Slow transfers, so that n4 dies with some partitions switched and
	// others not.
	c := startMemberCluster(t, 3, "--partitions", "16", "--transfer-bytes-per-second", "20000")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	preload := putMany(t, c, 0, "bulk", 2000, 200)
	w := startWriteLoad(t, c, "abort", 0, 1, 2)
	w.waitMore(t, 20)

	n4 := c.join(t, "n4", 0)
	c.waitJoining(t, ctx, "n4", 0)
	c.planAndCommit(t, ctx, 0, []string{"add", "n4"})
	pollUntil(t, time.Minute, "n4 switched some partitions but not all", func() (bool, string) {
		st, err := c.clusterStatus(ctx, 0)
		if err != nil {
			return false, err.Error()
		}
		return st.PartitionsDone >= 1 && st.PartitionsDone+2 <= st.PartitionsMoving,
			fmt.Sprintf("%d of %d switched", st.PartitionsDone, st.PartitionsMoving)
	})
	n4.kill()
	st, err := c.clusterStatus(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("killed n4 with %d of %d partitions switched", st.PartitionsDone, st.PartitionsMoving)
	if _, errOut, err := c.run(ctx, "cluster", "plan", "reweight", "n1=2", "--addr", c.procs[0].addr); err == nil || !strings.Contains(errOut, "cluster abort") {
		t.Fatalf("a plan during the stuck change: err %v, stderr %s", err, errOut)
	}

	out := c.runOK(t, ctx, "cluster", "abort", "--addr", c.procs[0].addr)
	if !strings.Contains(out, "would undo the change add n4") || !strings.Contains(out, "--yes") {
		t.Fatalf("cluster abort without --yes: %s", out)
	}
	if st, err := c.clusterStatus(ctx, 0); err != nil || !st.InTransition || st.TransitionAborted {
		t.Fatalf("cluster abort without --yes changed something: %v, %v", st, err)
	}
	out = c.runOK(t, ctx, "cluster", "abort", "--yes", "--addr", c.procs[0].addr)
	// Each switched partition has one old replica n4 displaced, which it
	// streams back to.
	if back := plural(int(st.PartitionsDone), "partition") + " streaming back"; !strings.Contains(out, "undoing the change add n4") || !strings.Contains(out, back) {
		t.Fatalf("cluster abort --yes: %s (want %q)", out, back)
	}
	c.watchTransition(t, 0, 2*time.Minute)

	st, err = c.clusterStatus(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if st.InTransition || memberState(st.Nodes, "n4") != "joining" {
		t.Fatalf("after the undo: in transition %v, n4 %q", st.InTransition, memberState(st.Nodes, "n4"))
	}
	if _, _, err := c.run(ctx, "cluster", "abort", "--yes", "--addr", c.procs[0].addr); err == nil {
		t.Fatal("cluster abort with nothing in progress succeeded")
	}
	// Plans are accepted again: the dead joiner is removed (it owns
	// nothing, so nothing moves).
	c.runOK(t, ctx, "cluster", "plan", "remove", "n4", "--addr", c.procs[0].addr)
	c.commit(t, ctx, 0)
	pollUntil(t, 30*time.Second, "n4 removed", func() (bool, string) {
		st, err := c.clusterStatus(ctx, 0)
		if err != nil {
			return false, err.Error()
		}
		s := memberState(st.Nodes, "n4")
		return s == "removed" && !st.InTransition, fmt.Sprintf("n4 %q, in transition %v", s, st.InTransition)
	})

	w.waitMore(t, 20)
	acked := mergeKeys(preload, w.stop(t))
	readAllAtALL(t, c, 1, acked, time.Minute)
}
