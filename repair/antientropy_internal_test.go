package repair

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/placement"
	"github.com/meridiankv/meridian/replica"
)

func TestPickDue(t *testing.T) {
	ks := &membership.Keyspace{Name: "default"}
	base := time.Unix(1000, 0)
	// cands: partitions 0..n-1; prio lists the priority ones; partition
	// p was verified p seconds after base unless never lists it.
	cands := func(n int, prio []int, never []int) []candidate {
		var cs []candidate
		for p := range n {
			c := candidate{t: target{ks: ks, p: p}, prio: slices.Contains(prio, p), last: base.Add(time.Duration(p) * time.Second)}
			if slices.Contains(never, p) {
				c.last = time.Time{}
			}
			cs = append(cs, c)
		}
		return cs
	}
	seq := func(from, to int) []int {
		var out []int
		for p := from; p < to; p++ {
			out = append(out, p)
		}
		return out
	}
	cases := []struct {
		name             string
		cs               []candidate
		quota, prioLimit int
		want             []int
	}{
		{"nothing due", nil, 2, 16, nil},
		{"the period's pace, oldest first", cands(10, nil, nil), 3, 16, []int{0, 1, 2}},
		{"never verified before the rest", cands(10, nil, []int{7, 8}), 3, 16, []int{7, 8, 0}},
		{"a few priority ones all go, then the pace", cands(10, []int{5, 9}, nil), 3, 16, []int{5, 9, 0}},
		{"priority ones beyond the pace, up to the limit", cands(10, []int{4, 5, 6, 7, 8}, nil), 2, 4, []int{4, 5, 6, 7}},
		// After a flap: every partition priority; a tick takes the limit,
		// not all 1,024.
		{"a node came back: paced", cands(1024, seq(0, 1024), nil), 2, 16, seq(0, 16)},
		{"a pace above the limit wins", cands(100, seq(0, 100), nil), 20, 16, seq(0, 20)},
		{"priority ones and then regular ones up to the pace", cands(10, []int{9}, nil), 3, 16, []int{9, 0, 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got []int
			for _, tg := range pickDue(c.cs, c.quota, c.prioLimit) {
				got = append(got, tg.p)
			}
			if !slices.Equal(got, c.want) {
				t.Fatalf("pickDue = %v, want %v", got, c.want)
			}
		})
	}
}

// TestAntiEntropyGoesRoundWhileAReplicaIsDown: partitions that cannot be
// verified (a replica down) wait their turn behind the others instead of
// being picked first at every tick: the rest are still verified within
// the period, and a priority mark on a partition that cannot be verified
// is taken off once tried. A mark for a partition this node does not
// hold is not kept at all.
func TestAntiEntropyGoesRoundWhileAReplicaIsDown(t *testing.T) {
	n := exchangeCluster(t, 2, "n1", "n2", "n3")
	c := newClock()
	cfg := AntiEntropyConfig{Self: "n1", DC: "dc1", Store: n.stores["n1"], Peers: n, Merge: netMerger{n, "n1"},
		Routing: aliveSet{"n1": true, "n2": true}, Topology: func() *membership.Topology { return n.topo }, Now: c.Now, Tick: time.Second}
	probe, err := NewAntiEntropy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	held := probe.held("", -1)
	cfg.Period = time.Duration(len(held)) * time.Second // one partition a tick
	ae, err := NewAntiEntropy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	withN3 := func(tg target) bool {
		return slices.ContainsFunc(tg.ks.Table.Replicas(tg.p), func(r placement.Replica) bool { return r.Node == "n3" })
	}
	var stuck *target
	for _, tg := range held {
		if withN3(tg) {
			stuck = &tg
			break
		}
	}
	if stuck == nil {
		t.Fatal("n1 shares no partition with n3")
	}
	ae.MarkPriority(replica.Loc{Keyspace: stuck.ks.ID, Partition: stuck.p})
	ctx := context.Background()
	for range len(held) {
		for _, tg := range ae.due() {
			ae.exchange(ctx, tg)
		}
		c.Advance(time.Second)
	}
	for _, st := range ae.Status("") {
		tg := target{ks: n.topo.Keyspaces[st.Keyspace], p: st.Partition}
		if !withN3(tg) && st.Verified.IsZero() {
			t.Errorf("partition %d (no replica down) not verified within the period while n3 is down", st.Partition)
		}
		if st.Priority {
			t.Errorf("partition %d still marked priority after being tried", st.Partition)
		}
	}
	for p := 0; p < n.topo.Ring.Partitions(); p++ {
		if !slices.ContainsFunc(held, func(tg target) bool { return tg.p == p }) {
			ae.MarkPriority(replica.Loc{Keyspace: held[0].ks.ID, Partition: p})
			ae.mu.Lock()
			kept := ae.mu.priority[partKey{held[0].ks.ID, p}]
			ae.mu.Unlock()
			if kept {
				t.Fatalf("a priority mark for partition %d, which n1 does not hold, was kept", p)
			}
			break
		}
	}
}

// TestRunNowFollowsTheTopology: a repair run that outlives a topology
// change exchanges each partition by the replicas it has when its turn
// comes, and skips those no longer held here (here the keyspace was
// dropped after the first partition).
func TestRunNowFollowsTheTopology(t *testing.T) {
	n := exchangeCluster(t, 2, "n1", "n2", "n3")
	var topo atomic.Pointer[membership.Topology]
	topo.Store(n.topo)
	ae, err := NewAntiEntropy(AntiEntropyConfig{Self: "n1", DC: "dc1", Store: n.stores["n1"], Peers: n, Merge: netMerger{n, "n1"},
		Routing: aliveSet{"n1": true, "n2": true, "n3": true}, Topology: topo.Load})
	if err != nil {
		t.Fatal(err)
	}
	held := len(ae.held("ks", -1))
	dropped, err := membership.NewTopology(2, 16, []membership.NodeInfo{
		{Node: placement.Node{ID: "n1", DC: "dc1", Rack: "r0", Weight: 1}},
		{Node: placement.Node{ID: "n2", DC: "dc1", Rack: "r1", Weight: 1}},
		{Node: placement.Node{ID: "n3", DC: "dc1", Rack: "r2", Weight: 1}},
	}, []membership.KeyspaceSpec{{Name: "other", Replication: map[string]int{"dc1": 2}}})
	if err != nil {
		t.Fatal(err)
	}
	var reports []Progress
	pr, err := ae.RunNow(context.Background(), "ks", -1, func(p Progress) {
		reports = append(reports, p)
		if p.PartitionsDone == 1 {
			topo.Store(dropped)
		}
	})
	// The first report comes before any exchange: a caller not waiting
	// hears the run started at once.
	if len(reports) == 0 || reports[0].PartitionsDone != 0 || reports[0].PartitionsTotal != held {
		t.Fatalf("first progress %+v, want 0 of %d done", reports, held)
	}
	if err != nil || pr.PartitionsDone != held {
		t.Fatalf("RunNow = %+v, %v; want all %d partitions gone through", pr, err, held)
	}
	ae.mu.Lock()
	exchanged := len(ae.mu.parts)
	ae.mu.Unlock()
	if exchanged != 1 {
		t.Fatalf("%d partitions exchanged, want only the first (the keyspace was dropped after it)", exchanged)
	}
}
