package node_test

import (
	"bytes"
	"fmt"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/replica"
	"github.com/meridiankv/meridian/version"
)

// keyWith finds a key of keyspace ks whose replicas and first fallback
// satisfy ok.
func keyWith(t *testing.T, n *node.Node, ks string, ok func(reps, fallbacks []string) bool) []byte {
	t.Helper()
	topo := n.Topology()
	k, _ := topo.Keyspace(ks)
	for i := 0; i < 10000; i++ {
		key := []byte(fmt.Sprintf("key-%d", i))
		p := topo.Ring.Partition(key)
		var reps, fbs []string
		for _, r := range k.Table.Replicas(p) {
			reps = append(reps, r.Node)
		}
		for _, f := range k.Table.Fallbacks(p, "dc1") {
			fbs = append(fbs, f.Node)
		}
		if ok(reps, fbs) {
			return key
		}
	}
	t.Fatal("no key found")
	return nil
}

// TestReadYourWritesThroughReturnWithUndeliveredHints: a QUORUM write is
// acknowledged by one primary (a) and a fallback (d) holding the hint for
// the down primary c, while the third primary b missed it. c comes back
// before d delivers. A QUORUM read that could only use b and c must not
// answer with the old value (R + W > N), and answers with the new one once
// the hint is delivered.
func TestReadYourWritesThroughReturnWithUndeliveredHints(t *testing.T) {
	l := startCluster(t, node.LocalSpec{NodesPerDC: 4, Engine: "memory",
		Keyspaces: []membership.KeyspaceSpec{{Name: "rf3", Replication: map[string]int{"dc1": 3}}}})
	ctx := ctxT(t)
	var a, b, c, d string
	key := keyWith(t, l.Nodes()[0], "rf3", func(reps, fbs []string) bool {
		if len(reps) != 3 || len(fbs) == 0 {
			return false
		}
		a, b, c, d = reps[0], reps[1], reps[2], fbs[0]
		return true
	})
	na, nb, nd := l.Node(a), l.Node(b), l.Node(d)
	if err := l.Stop(c); err != nil {
		t.Fatal(err)
	}
	eventually(t, c+" seen down by "+a, func() bool { return !na.Alive(c) })
	na.Faults().Cut(b) // b misses the write
	nd.Faults().Cut(c) // d cannot deliver its hint yet
	put, err := dial(t, na.Addr()).Put(ctx, &kvv1.PutRequest{Keyspace: "rf3", Key: key, Value: []byte("new"), Consistency: lvl(kvv1.Level_LEVEL_QUORUM)})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(put.Effective.Hinted, []string{d}) {
		t.Fatalf("write acknowledged by %v, hinted %v; want a hint on %s", put.Effective.Replicas, put.Effective.Hinted, d)
	}
	na.Faults().Heal()
	if _, err := l.Restart(ctx, c); err != nil {
		t.Fatal(err)
	}
	eventually(t, b+" to see "+c+" alive and owed hints", func() bool { return nb.Alive(c) && nb.HintsPending(c) })

	// Only b and c can answer a read coordinated by b.
	nb.Faults().Cut(a)
	cb := dial(t, nb.Addr())
	get, err := cb.Get(ctx, &kvv1.GetRequest{Keyspace: "rf3", Key: key, Consistency: lvl(kvv1.Level_LEVEL_QUORUM)})
	if err == nil && !slices.Contains(vals(get.Siblings), "new") {
		t.Fatalf("QUORUM read after a QUORUM write returned %v without the acknowledged write", vals(get.Siblings))
	}
	if err != nil && status.Code(err) != codes.Unavailable {
		t.Fatalf("read refused with %v, want UNAVAILABLE", err)
	}

	// Once the hint is delivered, c counts again and has the write.
	nd.Faults().Heal()
	eventually(t, "hint delivered to "+c, func() bool { return !nb.HintsPending(c) })
	eventually(t, "QUORUM read through b and c", func() bool {
		get, err := cb.Get(ctx, &kvv1.GetRequest{Keyspace: "rf3", Key: key, Consistency: lvl(kvv1.Level_LEVEL_QUORUM)})
		return err == nil && slices.Equal(vals(get.Siblings), []string{"new"})
	})
}

// TestHintsWithoutFallback: with N equal to the cluster size there is no
// fallback; the coordinator keeps the hint for a down replica itself and
// delivers it when the replica returns.
func TestHintsWithoutFallback(t *testing.T) {
	l := startCluster(t, node.LocalSpec{NodesPerDC: 3, Engine: "memory"})
	n1 := l.Node("n1")
	ctx := ctxT(t)
	if err := l.Stop("n3"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "n3 seen down", func() bool { return !n1.Alive("n3") })
	c1 := dial(t, n1.Addr())
	const keys = 20
	for i := 0; i < keys; i++ {
		put, err := c1.Put(ctx, &kvv1.PutRequest{Key: []byte(fmt.Sprint("k", i)), Value: []byte("v"), Consistency: lvl(kvv1.Level_LEVEL_QUORUM)})
		if err != nil {
			t.Fatal(err)
		}
		if len(put.Effective.Replicas) != 2 || len(put.Effective.Hinted) != 0 {
			t.Fatalf("acknowledged by %v hinted %v: a kept hint must not count", put.Effective.Replicas, put.Effective.Hinted)
		}
	}
	if !slices.Contains(n1.HintTargets(), "n3") {
		t.Fatalf("n1 keeps hints for %v, want n3", n1.HintTargets())
	}
	n3, err := l.Restart(ctx, "n3")
	if err != nil {
		t.Fatal(err)
	}
	topo := n3.Topology()
	ks, _ := topo.Keyspace("")
	eventually(t, "every key on n3", func() bool {
		for i := 0; i < keys; i++ {
			key := []byte(fmt.Sprint("k", i))
			set, err := n3.Store().Get(replica.Loc{Keyspace: ks.ID, Partition: topo.Ring.Partition(key)}, key)
			if err != nil || len(set.Siblings) != 1 {
				return false
			}
		}
		return true
	})
}

// TestRefusedHintDoesNotKeepReplicaOutOfReads: a hint its target refuses
// (here a set claiming the target's own actor past the counters it handed
// out) stays held, but once delivery has offered every hint and only
// refused ones are left, the target is no longer owed hints: it counts
// toward read quorums again instead of for the whole hint window.
func TestRefusedHintDoesNotKeepReplicaOutOfReads(t *testing.T) {
	l := startCluster(t, node.LocalSpec{NodesPerDC: 3, Engine: "memory"})
	n1, n2 := l.Node("n1"), l.Node("n2")
	ctx := ctxT(t)
	if err := l.Stop("n3"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "n3 seen down", func() bool { return !n1.Alive("n3") })
	key := []byte("while-n3-was-down")
	if _, err := dial(t, n1.Addr()).Put(ctx, &kvv1.PutRequest{Key: key, Value: []byte("v"), Consistency: lvl(kvv1.Level_LEVEL_QUORUM)}); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(n1.HintTargets(), "n3") {
		t.Fatalf("n1 keeps hints for %v, want n3", n1.HintTargets())
	}
	n1.Faults().Cut("n3") // no delivery until the refused hint is in place
	n3, err := l.Restart(ctx, "n3")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "n2 to see n3 back and owed hints", func() bool { return n2.Alive("n3") && n2.HintsPending("n3") })

	topo := n1.Topology()
	ks, _ := topo.Keyspace("")
	bad := []byte("claims-n3s-future")
	set, _ := version.Set{}.Put(version.Clock{}, n3.Store().Actor(), version.Value{Bytes: []byte("x")}, int64(n3.Store().MintedUpTo())+1_000_000)
	if err := n1.HintLog().StoreHint("n3", replica.Loc{Keyspace: ks.ID, Partition: topo.Ring.Partition(bad)}, "", bad, set, false); err != nil {
		t.Fatal(err)
	}
	n1.Faults().Heal()
	eventually(t, "the good hint delivered and the bad one refused", func() bool {
		for _, s := range n1.HintLog().Stats() {
			if s.Target == "n3" {
				return s.Count == 1 && s.Refused == 1 && !s.Owed
			}
		}
		return false
	})
	eventually(t, "n1 and n2 to count n3 for reads again", func() bool { return !n1.HintsPending("n3") && !n2.HintsPending("n3") })
	if got := n1.HintLog().Targets(); !slices.Equal(got, []string{"n3"}) {
		t.Fatalf("n1 holds hints for %v, want the refused one kept for n3", got)
	}

	// A QUORUM read that only n2 and n3 can answer succeeds, with the
	// delivered write.
	n2.Faults().Cut("n1")
	get, err := dial(t, n2.Addr()).Get(ctx, &kvv1.GetRequest{Key: key, Consistency: lvl(kvv1.Level_LEVEL_QUORUM)})
	if err != nil || !slices.Equal(vals(get.Siblings), []string{"v"}) {
		t.Fatalf("QUORUM read through n2 and n3: %v, %v; want v", vals(get.GetSiblings()), err)
	}
}

func TestSiblingLimit(t *testing.T) {
	l := startCluster(t, node.LocalSpec{NodesPerDC: 3, Engine: "memory",
		Keyspaces: []membership.KeyspaceSpec{{Name: "small", Replication: map[string]int{"dc1": 3}, MaxSiblings: 5}}})
	c := dial(t, l.Nodes()[0].Addr())
	ctx := ctxT(t)
	key := []byte("blind")
	for i := 0; i < 5; i++ {
		if _, err := c.Put(ctx, &kvv1.PutRequest{Keyspace: "small", Key: key, Value: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := c.Put(ctx, &kvv1.PutRequest{Keyspace: "small", Key: key, Value: []byte("one too many")})
	st := status.Convert(err)
	if st.Code() != codes.FailedPrecondition || !bytes.Contains([]byte(st.Message()), []byte("6 siblings, over the limit of 5")) {
		t.Fatalf("6th blind write: %v, want FAILED_PRECONDITION naming the count", err)
	}
	get, err := c.Get(ctx, &kvv1.GetRequest{Keyspace: "small", Key: key, Consistency: lvl(kvv1.Level_LEVEL_ALL)})
	if err != nil || len(get.Siblings) != 5 {
		t.Fatalf("after the refused write: %v siblings (%v), want 5: nothing stored", len(get.GetSiblings()), err)
	}
	// Resolving with the context collapses them.
	put, err := c.Put(ctx, &kvv1.PutRequest{Keyspace: "small", Key: key, Value: []byte("merged"), Context: get.Context})
	if err != nil || len(put.Siblings) != 1 {
		t.Fatalf("merge write: %v, %v", put, err)
	}
}

func TestRetriedWriteAppliedOnce(t *testing.T) {
	l := startCluster(t, node.LocalSpec{NodesPerDC: 3, Engine: "memory"})
	ctx := ctxT(t)
	key := []byte("once")
	req := &kvv1.PutRequest{Key: key, Value: []byte("v"), RequestId: []byte("retry-me"), Consistency: lvl(kvv1.Level_LEVEL_ALL)}
	for _, n := range l.Nodes() { // the same write, retried through every node
		if _, err := dial(t, n.Addr()).Put(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	get, err := dial(t, l.Nodes()[1].Addr()).Get(ctx, &kvv1.GetRequest{Key: key, Consistency: lvl(kvv1.Level_LEVEL_ALL)})
	if err != nil || len(get.Siblings) != 1 {
		t.Fatalf("after 3 retries of one write: %v (%v), want 1 sibling", vals(get.GetSiblings()), err)
	}
	// A different request ID is a different write.
	req.RequestId = []byte("another")
	if _, err := dial(t, l.Nodes()[0].Addr()).Put(ctx, req); err != nil {
		t.Fatal(err)
	}
	get, err = dial(t, l.Nodes()[0].Addr()).Get(ctx, &kvv1.GetRequest{Key: key, Consistency: lvl(kvv1.Level_LEVEL_ALL)})
	if err != nil || len(get.Siblings) != 2 {
		t.Fatalf("second blind write: %d siblings (%v), want 2", len(get.GetSiblings()), err)
	}
}

// TestFallbackWritesNeverCollide: writes coordinated by a fallback (no
// replica reachable) each get an actor no other write uses.
func TestFallbackWritesNeverCollide(t *testing.T) {
	l := startCluster(t, node.LocalSpec{NodesPerDC: 3, Engine: "memory",
		Keyspaces: []membership.KeyspaceSpec{{Name: "rf1", Replication: map[string]int{"dc1": 1}}}})
	ctx := ctxT(t)
	var owner string
	key := keyWith(t, l.Nodes()[0], "rf1", func(reps, _ []string) bool { owner = reps[0]; return owner != "n1" })
	n1 := l.Node("n1")
	if err := l.Stop(owner); err != nil {
		t.Fatal(err)
	}
	eventually(t, owner+" seen down", func() bool { return !n1.Alive(owner) })
	c1 := dial(t, n1.Addr())
	for i := 0; i < 5; i++ {
		if _, err := c1.Put(ctx, &kvv1.PutRequest{Keyspace: "rf1", Key: key, Value: []byte(fmt.Sprint("blind", i)), Consistency: lvl(kvv1.Level_LEVEL_ANY)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Restart(ctx, owner); err != nil {
		t.Fatal(err)
	}
	eventually(t, "all five fallback writes on "+owner, func() bool {
		get, err := c1.Get(ctx, &kvv1.GetRequest{Keyspace: "rf1", Key: key, Consistency: lvl(kvv1.Level_LEVEL_ONE)})
		return err == nil && len(get.Siblings) == 5
	})
}

// TestForwardRetryAppliedOnce: a node that is not a replica forwards a
// write; the replica applies it but the reply is lost; the forward is
// retried on the next replica, which must recognise the write by its
// request ID instead of applying it a second time.
func TestForwardRetryAppliedOnce(t *testing.T) {
	l := startCluster(t, node.LocalSpec{NodesPerDC: 4, Engine: "memory",
		Keyspaces: []membership.KeyspaceSpec{{Name: "rf3", Replication: map[string]int{"dc1": 3}}}})
	ctx := ctxT(t)
	var first, outsider string
	key := keyWith(t, l.Nodes()[0], "rf3", func(reps, fbs []string) bool {
		if len(reps) != 3 || len(fbs) == 0 {
			return false
		}
		first, outsider = reps[0], fbs[0]
		return true
	})
	nx := l.Node(outsider)
	nx.Faults().LoseReplies(first)
	put, err := dial(t, nx.Addr()).Put(ctx, &kvv1.PutRequest{Keyspace: "rf3", Key: key, Value: []byte("once"), Consistency: lvl(kvv1.Level_LEVEL_ALL)})
	if err != nil {
		t.Fatal(err)
	}
	if put.Effective.Coordinator == first {
		t.Fatalf("the reply from %s was not lost", first)
	}
	nx.Faults().Heal()
	var get *kvv1.GetResponse
	eventually(t, outsider+" to route to "+first+" again", func() bool {
		get, err = dial(t, nx.Addr()).Get(ctx, &kvv1.GetRequest{Keyspace: "rf3", Key: key, Consistency: lvl(kvv1.Level_LEVEL_ALL)})
		return err == nil
	})
	if !slices.Equal(vals(get.Siblings), []string{"once"}) {
		t.Fatalf("after a retried forward: %v, want exactly one [once]", vals(get.Siblings))
	}
}
