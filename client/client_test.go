package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/client"
	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/placement"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func startCluster(t *testing.T) *node.Local {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := node.StartLocal(ctx, node.LocalSpec{NodesPerDC: 3, Engine: "memory", Insecure: true, GossipProfile: "test", Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func dial(t *testing.T, seed string, opts ...client.Option) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, []string{seed}, append([]client.Option{client.Insecure(), client.LocalDC("dc1")}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// replicasOf fetches the topology from addr and returns the IDs of key's
// replicas in the default keyspace, in preference order.
func replicasOf(t *testing.T, addr string, key []byte) []string {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	topo, err := internalv1.NewDiscoveryClient(cc).Topology(ctx, &internalv1.TopologyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	p := placement.PartitionOf(key, int(topo.GetPartitions()))
	for _, ks := range topo.GetKeyspaces() {
		if ks.GetName() != "default" {
			continue
		}
		var ids []string
		for _, i := range ks.GetPartitions()[p].GetNodes() {
			ids = append(ids, topo.GetNodes()[i].GetId())
		}
		return ids
	}
	t.Fatal("no default keyspace in the topology")
	return nil
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestRoundTripAndRouting(t *testing.T) {
	l := startCluster(t)
	seed := l.Nodes()[0].Addr()
	c := dial(t, seed)
	ctx := ctxT(t)

	for i := range 20 {
		key := fmt.Appendf(nil, "key-%d", i)
		reps := replicasOf(t, seed, key)
		put, err := c.Put(ctx, "", key, []byte("v1"), client.Level(kvv1.Level_LEVEL_QUORUM))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(reps, put.Node) {
			t.Fatalf("key %s: sent to %s, not a replica (%v)", key, put.Node, reps)
		}
		if put.Effective.GetCoordinator() != put.Node {
			t.Fatalf("key %s: sent to %s but coordinated by %s: a forward happened", key, put.Node, put.Effective.GetCoordinator())
		}
		if put.Node != reps[0] {
			t.Fatalf("key %s: sent to %s, want the first live local replica %s", key, put.Node, reps[0])
		}
		get, err := c.Get(ctx, "", key)
		if err != nil {
			t.Fatal(err)
		}
		if len(get.Values) != 1 || string(get.Values[0]) != "v1" {
			t.Fatalf("key %s: got %q", key, get.Values)
		}
		if get.Effective.GetCoordinator() != get.Node || !slices.Contains(reps, get.Node) {
			t.Fatalf("get of %s went to %s, coordinated by %s, replicas %v", key, get.Node, get.Effective.GetCoordinator(), reps)
		}
		// A write with the read's context supersedes it: one value.
		put2, err := c.Put(ctx, "", key, []byte("v2"), client.Context(get.Context), client.Durable(false))
		if err != nil {
			t.Fatal(err)
		}
		if len(put2.Values) != 1 || string(put2.Values[0]) != "v2" {
			t.Fatalf("key %s: after a contextual put, values %q", key, put2.Values)
		}
	}
	if _, err := c.Delete(ctx, "", []byte("key-0"), client.Context(nil)); err != nil {
		t.Fatal(err)
	}
	if c.Epoch() == 0 {
		t.Fatal("epoch 0 after dial")
	}
}

func TestFallbackWhenReplicaDown(t *testing.T) {
	l := startCluster(t)
	nodes := l.Nodes()
	seed := nodes[0].Addr()
	c := dial(t, seed)
	ctx := ctxT(t)
	// A key whose first replica is not the seed, so the seed stays up.
	var key []byte
	var reps []string
	for i := 0; ; i++ {
		key = fmt.Appendf(nil, "fb-%d", i)
		reps = replicasOf(t, seed, key)
		if reps[0] != nodes[0].ID() {
			break
		}
	}
	if _, err := c.Put(ctx, "", key, []byte("before")); err != nil {
		t.Fatal(err)
	}
	if err := l.Stop(reps[0]); err != nil {
		t.Fatal(err)
	}
	put, err := c.Put(ctx, "", key, []byte("after"), client.Level(kvv1.Level_LEVEL_QUORUM))
	if err != nil {
		t.Fatalf("put with %s down: %v", reps[0], err)
	}
	if put.Node == reps[0] || !slices.Contains(reps, put.Node) {
		t.Fatalf("put went to %s (stopped %s, replicas %v)", put.Node, reps[0], reps)
	}
	get, err := c.Get(ctx, "", key, client.Level(kvv1.Level_LEVEL_QUORUM))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(get.Values, func(v []byte) bool { return string(v) == "after" }) {
		t.Fatalf("values %q", get.Values)
	}
	// A hedged read with the first replica down still answers.
	if _, err := c.Get(ctx, "", key, client.Hedge(time.Millisecond)); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentUpdateLosesNothing(t *testing.T) {
	l := startCluster(t)
	c := dial(t, l.Nodes()[1].Addr())
	ctx := ctxT(t)
	key := []byte("set")
	parse := func(vals [][]byte) map[string]bool {
		set := map[string]bool{}
		for _, v := range vals {
			for _, e := range strings.Split(string(v), ",") {
				if e != "" {
					set[e] = true
				}
			}
		}
		return set
	}
	format := func(set map[string]bool) []byte {
		var es []string
		for e := range set {
			es = append(es, e)
		}
		slices.Sort(es)
		return []byte(strings.Join(es, ","))
	}
	const writers = 8
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Update(ctx, "", key, func(sibs [][]byte) ([]byte, error) {
				set := parse(sibs)
				set[fmt.Sprintf("e%d", i)] = true
				return format(set), nil
			}, client.Attempts(50))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	get, err := c.Get(ctx, "", key)
	if err != nil {
		t.Fatal(err)
	}
	set := parse(get.Values)
	for i := range writers {
		if !set[fmt.Sprintf("e%d", i)] {
			t.Fatalf("element e%d lost: %q", i, get.Values)
		}
	}
	// An error from fn is returned as is, and nothing is written.
	boom := errors.New("boom")
	if _, err := c.Update(ctx, "", key, func([][]byte) ([]byte, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("err %v, want boom", err)
	}
}

func TestHedgedGet(t *testing.T) {
	l := startCluster(t)
	c := dial(t, l.Nodes()[0].Addr())
	ctx := ctxT(t)
	// At ALL: a read at ONE may be answered by any replica, the hedge's
	// included, so every replica must have the value.
	if _, err := c.Put(ctx, "", []byte("h"), []byte("x"), client.Level(kvv1.Level_LEVEL_ALL)); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		get, err := c.Get(ctx, "", []byte("h"), client.Hedge(time.Microsecond), client.Level(kvv1.Level_LEVEL_ONE))
		if err != nil {
			t.Fatal(err)
		}
		if len(get.Values) != 1 || string(get.Values[0]) != "x" {
			t.Fatalf("values %q", get.Values)
		}
	}
}

func TestRetriedPutAppliedOnce(t *testing.T) {
	l := startCluster(t)
	c := dial(t, l.Nodes()[0].Addr())
	ctx := ctxT(t)
	key := []byte("idem")
	id := []byte("request-1")
	first, err := c.Put(ctx, "", key, []byte("v"), client.RequestID(id))
	if err != nil {
		t.Fatal(err)
	}
	if string(first.RequestID) != string(id) {
		t.Fatalf("request ID %q", first.RequestID)
	}
	// A blind retry with the same ID: applied once, so no second sibling.
	if _, err := c.Put(ctx, "", key, []byte("v"), client.RequestID(id)); err != nil {
		t.Fatal(err)
	}
	get, err := c.Get(ctx, "", key, client.Level(kvv1.Level_LEVEL_ALL))
	if err != nil {
		t.Fatal(err)
	}
	if len(get.Siblings) != 1 {
		t.Fatalf("%d siblings after a retried put, want 1", len(get.Siblings))
	}
	// A blind put with another ID does make a sibling (the check above means
	// something).
	if _, err := c.Put(ctx, "", key, []byte("w")); err != nil {
		t.Fatal(err)
	}
	get, err = c.Get(ctx, "", key, client.Level(kvv1.Level_LEVEL_ALL))
	if err != nil {
		t.Fatal(err)
	}
	if len(get.Siblings) != 2 {
		t.Fatalf("%d siblings after a second blind put, want 2", len(get.Siblings))
	}
}

func TestDialFailures(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	lis.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	_, err = client.Dial(ctx, []string{dead}, client.Insecure())
	if err == nil || !strings.Contains(err.Error(), "no seed reachable") || !strings.Contains(err.Error(), dead) {
		t.Fatalf("dial of a dead seed: %v", err)
	}
	if time.Since(start) > 4*time.Second {
		t.Fatalf("dial took %v, past the context deadline", time.Since(start))
	}

	if _, err := client.Dial(context.Background(), []string{dead}); err == nil || !strings.Contains(err.Error(), "Insecure()") {
		t.Fatalf("dial without credentials: %v", err)
	}
	if _, err := client.Dial(context.Background(), nil, client.Insecure()); err == nil {
		t.Fatal("dial without seeds succeeded")
	}
}

func TestTopologyAndErrors(t *testing.T) {
	l := startCluster(t)
	nodes := l.Nodes()
	c := dial(t, nodes[2].Addr(), client.RefreshInterval(50*time.Millisecond))
	ctx := ctxT(t)
	// The metadata may still move just after the start (nodes publish
	// their own details): the client catches up within a few refreshes.
	for deadline := time.Now().Add(10 * time.Second); c.Epoch() != nodes[2].Topology().Epoch; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("client epoch %d, node epoch %d", c.Epoch(), nodes[2].Topology().Epoch)
		}
	}
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	// A keyspace that does not exist: the node's answer is final.
	if _, err := c.Get(ctx, "no-such-keyspace", []byte("k")); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown keyspace: %v", err)
	}
	// Default call options apply, and per-call ones override them.
	c2 := dial(t, nodes[0].Addr(), client.DefaultCallOptions(client.W(3), client.Timeout(5*time.Second)))
	put, err := c2.Put(ctx, "", []byte("d"), []byte("v"))
	if err != nil {
		t.Fatal(err)
	}
	if put.Effective.GetW() != 3 {
		t.Fatalf("effective W %d, want 3 from the default options", put.Effective.GetW())
	}
	put, err = c2.Put(ctx, "", []byte("d"), []byte("v"), client.W(1))
	if err != nil {
		t.Fatal(err)
	}
	if put.Effective.GetW() != 1 {
		t.Fatalf("effective W %d, want 1", put.Effective.GetW())
	}
	// With every node gone, writes fail with ErrNoReplica before the deadline.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = c.Put(ctx, "", []byte("k"), []byte("v"), client.Timeout(10*time.Second))
	if !errors.Is(err, client.ErrNoReplica) {
		t.Fatalf("put with the cluster down: %v", err)
	}
	if time.Since(start) > 8*time.Second {
		t.Fatalf("put with the cluster down took %v", time.Since(start))
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, "", []byte("k")); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("get after close: %v", err)
	}
}

// TestRawKVIsRouted: the raw kv.v1 client from KV() sends each call to the
// key's first live local replica, like Get and Put, with the whole
// response (explain timeline, effective levels).
func TestRawKVIsRouted(t *testing.T) {
	l := startCluster(t)
	seed := l.Nodes()[2].Addr()
	c := dial(t, seed)
	ctx := ctxT(t)
	kv := c.KV()
	for i := range 10 {
		key := fmt.Appendf(nil, "raw-%d", i)
		reps := replicasOf(t, seed, key)
		put, err := kv.Put(ctx, &kvv1.PutRequest{Key: key, Value: []byte("v"), Explain: true})
		if err != nil {
			t.Fatal(err)
		}
		if put.GetEffective().GetCoordinator() != reps[0] || len(put.GetExplain()) == 0 {
			t.Fatalf("key %s: coordinated by %s, want %s (explain %d events)", key, put.GetEffective().GetCoordinator(), reps[0], len(put.GetExplain()))
		}
		get, err := kv.Get(ctx, &kvv1.GetRequest{Key: key})
		if err != nil || len(get.GetSiblings()) != 1 || get.GetEffective().GetCoordinator() != reps[0] {
			t.Fatalf("key %s: get %v via %s: %v", key, get.GetSiblings(), get.GetEffective().GetCoordinator(), err)
		}
		if _, err := kv.Delete(ctx, &kvv1.DeleteRequest{Key: key, Context: get.GetContext()}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestClientLearnsNewerEpochFromAnswers: with the periodic refresh an
// hour away, a topology change still reaches the client within a few
// requests: answers carry the coordinator's epoch, and a newer one makes
// the client fetch the topology at once.
func TestClientLearnsNewerEpochFromAnswers(t *testing.T) {
	l := startCluster(t)
	nodes := l.Nodes()
	ctx := ctxT(t)
	// Let the start-up metadata settle, then dial with no periodic refresh
	// to speak of.
	waitStable := func() uint64 {
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			e := nodes[0].Topology().Epoch
			if nodes[1].Topology().Epoch == e && nodes[2].Topology().Epoch == e {
				return e
			}
			if time.Now().After(deadline) {
				t.Fatal("the nodes' epochs did not settle")
			}
		}
	}
	// The start-up metadata may still move on while the client dials:
	// dial again until the client and every node agree on one epoch.
	var c *client.Client
	var before uint64
	for deadline := time.Now().Add(20 * time.Second); ; {
		before = waitStable()
		c = dial(t, nodes[0].Addr(), client.RefreshInterval(time.Hour))
		if c.Epoch() == before && waitStable() == before {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("client dialled at epoch %d, cluster at %d", c.Epoch(), before)
		}
	}
	if _, err := nodes[0].CreateKeyspace(ctx, membership.KeyspaceSpec{Name: "later", Replication: map[string]int{"dc1": 2}}); err != nil {
		t.Fatal(err)
	}
	after := waitStable()
	if after <= before {
		t.Fatalf("creating a keyspace left the epoch at %d", after)
	}
	for i := 0; c.Epoch() < after; i++ {
		if i == 200 {
			t.Fatalf("after %d requests the client routes by epoch %d, the cluster is at %d", i, c.Epoch(), after)
		}
		res, err := c.Put(ctx, "", fmt.Appendf(nil, "k%d", i), []byte("v"))
		if err != nil {
			t.Fatal(err)
		}
		// The metadata may have moved on again since (start-up changes
		// still landing): an answer is at least as new as the keyspace.
		if res.Effective.GetEpoch() < after {
			t.Fatalf("answer carries epoch %d, the cluster is at %d", res.Effective.GetEpoch(), after)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLargeValues: a value over gRPC's default 4 MiB message goes out and
// its answer (which carries the value) comes back, on unary calls and on
// the call stream alike: the write is not reported failed after it was
// applied.
func TestLargeValues(t *testing.T) {
	l := startCluster(t)
	seed := l.Nodes()[0].Addr()
	ctx := ctxT(t)
	big := bytes.Repeat([]byte("0123456789abcdef"), 5<<20/16) // 5 MiB
	for _, c := range []struct {
		name string
		opts []client.Option
	}{{"unary", []client.Option{client.UnaryCalls()}}, {"stream", nil}} {
		t.Run(c.name, func(t *testing.T) {
			cl := dial(t, seed, c.opts...)
			key := []byte("big-" + c.name)
			put, err := cl.Put(ctx, "", key, big)
			if err != nil {
				t.Fatalf("Put of 5 MiB: %v", err)
			}
			if len(put.Values) != 1 || !bytes.Equal(put.Values[0], big) {
				t.Fatalf("Put answered %d values", len(put.Values))
			}
			get, err := cl.Get(ctx, "", key)
			if err != nil || len(get.Values) != 1 || !bytes.Equal(get.Values[0], big) {
				t.Fatalf("Get of 5 MiB: %d values, %v", len(get.Values), err)
			}
		})
	}
}

// TestLocalDCDefaultsToTheSeeds: without LocalDC, a client dialled with a
// dc2 node as its seed sends its requests to dc2's replicas, rather than
// everything to dc1 (the DC whose name sorts first, first in every
// preference list).
func TestLocalDCDefaultsToTheSeeds(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := node.StartLocal(ctx, node.LocalSpec{DCs: 2, NodesPerDC: 2, Partitions: 64, Engine: "memory", Insecure: true, GossipProfile: "test", Dir: t.TempDir(),
		Keyspaces: []membership.KeyspaceSpec{{Name: "dc1only", Replication: map[string]int{"dc1": 2}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var seed string
	for _, n := range l.Nodes() {
		if n.DC() == "dc2" {
			seed = n.Addr()
			break
		}
	}
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	c, err := client.Dial(dctx, []string{seed}, client.Insecure())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dcOf := map[string]string{}
	for _, n := range l.Nodes() {
		dcOf[n.ID()] = n.DC()
	}
	for i := range 10 {
		key := fmt.Appendf(nil, "k-%d", i)
		put, err := c.Put(ctx, "", key, []byte("v"), client.Level(kvv1.Level_LEVEL_LOCAL_QUORUM))
		if err != nil {
			t.Fatal(err)
		}
		if dcOf[put.Node] != "dc2" || dcOf[put.Effective.GetCoordinator()] != "dc2" {
			t.Fatalf("put of %s went to %s (%s), coordinated by %s; want a dc2 replica, the seed's DC", key, put.Node, dcOf[put.Node], put.Effective.GetCoordinator())
		}
	}
	// The seed's DC is where requests go first, not a DC the client
	// names in LOCAL_* levels: a keyspace with no replicas there still
	// takes them (counted where its replicas are).
	if _, err := c.Put(ctx, "dc1only", []byte("k"), []byte("v"), client.Level(kvv1.Level_LEVEL_LOCAL_QUORUM)); err != nil {
		t.Fatalf("LOCAL_QUORUM put in a keyspace with no dc2 replicas, client seeded in dc2: %v", err)
	}
}
