package node_test

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/client"
	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/placement"
)

// fakeVolumes reports each node's free space by its data directory's
// base name (the node ID); nodes not set have plenty.
type fakeVolumes struct {
	mu   sync.Mutex
	free map[string]uint64
}

func (v *fakeVolumes) set(id string, free uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.free[id] = free
}

func (v *fakeVolumes) space(dir string) (uint64, uint64, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if f, ok := v.free[filepath.Base(dir)]; ok {
		return f, 100 << 30, nil
	}
	return 50 << 30, 100 << 30, nil
}

// TestLowDiskRefusesWritesServesReads: a node whose volume falls under
// min-free-disk refuses writes of data — a client's (RESOURCE_EXHAUSTED,
// reason DISK_LOW, saying what to do) and its peers' — and serves reads;
// the cluster stays writable at QUORUM through the other replicas (the Go
// client passes a refused write on), and once space is freed the node
// accepts writes again and every write acknowledged meanwhile reads back.
func TestLowDiskRefusesWritesServesReads(t *testing.T) {
	vols := &fakeVolumes{free: map[string]uint64{}}
	l := startCluster(t, node.LocalSpec{NodesPerDC: 3, Options: node.Options{DiskSpace: vols.space, DiskCheckInterval: 10 * time.Millisecond}})
	nodes := l.Nodes()
	low := nodes[0]
	cLow, cOther := dial(t, low.Addr()), dial(t, nodes[1].Addr())
	ctx := ctxT(t)
	if _, err := cLow.Put(ctx, &kvv1.PutRequest{Key: []byte("before"), Value: []byte("v0"), Consistency: lvl(kvv1.Level_LEVEL_ALL)}); err != nil {
		t.Fatal(err)
	}

	vols.set(low.ID(), 100<<20) // under the default 256 MiB
	eventually(t, "the node to refuse writes", func() bool { return low.Store().WritesRefused() != nil })
	// Its peers learn it through gossip (meridian status shows it).
	eventually(t, "a peer to see it low on disk", func() bool { return gossipsDiskLow(nodes[1], low.ID()) })

	_, err := cLow.Put(ctx, &kvv1.PutRequest{Key: []byte("refused"), Value: []byte("x")})
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "low on disk") || !strings.Contains(st.Message(), "free space on the volume") {
		t.Fatalf("put to the node low on disk: %v, want RESOURCE_EXHAUSTED saying it is low on disk and what to do", err)
	}
	got, err := cLow.Get(ctx, &kvv1.GetRequest{Key: []byte("before"), Consistency: lvl(kvv1.Level_LEVEL_QUORUM)})
	if err != nil || len(got.GetSiblings()) != 1 || string(got.GetSiblings()[0].GetValue()) != "v0" {
		t.Fatalf("read from the node low on disk: %v %v, want v0", got, err)
	}
	// Through another coordinator, QUORUM still has two replicas with room,
	// and the low one is not even asked (its gossip says it would refuse):
	// its copy is kept as a hint for it. ALL cannot be met while one
	// replica refuses, and the refusal says why.
	eventually(t, nodes[1].ID()+"'s coordinator to see it low on disk", func() bool { return nodes[1].PeerDiskLow(low.ID()) })
	put, err := cOther.Put(ctx, &kvv1.PutRequest{Key: []byte("quorum"), Value: []byte("q"), Consistency: lvl(kvv1.Level_LEVEL_QUORUM), Explain: true})
	if err != nil {
		t.Fatalf("QUORUM put through another node: %v", err)
	}
	skipped := false
	for _, ev := range put.GetExplain() {
		if ev.GetNode() == low.ID() {
			if ev.GetAction() != "skip replica" || !strings.Contains(ev.GetDetail(), "low on disk") {
				t.Errorf("the write reached the node low on disk: %v", ev)
			}
			skipped = true
		}
	}
	if !skipped {
		t.Errorf("explain does not say the node low on disk was skipped: %v", put.GetExplain())
	}
	_, err = cOther.Put(ctx, &kvv1.PutRequest{Key: []byte("all"), Value: []byte("a"), Consistency: lvl(kvv1.Level_LEVEL_ALL)})
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "1 more low on disk ("+low.ID()+")") || !strings.Contains(st.Message(), "free disk space on "+low.ID()) {
		t.Fatalf("put at ALL while a replica is low on disk: %v, want UNAVAILABLE naming it and what to do", err)
	}
	// The Go client passes writes the low node refuses on to another
	// replica: every one succeeds.
	cl, err := client.Dial(ctx, []string{low.Addr()}, client.Insecure())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := range 30 {
		if _, err := cl.Put(ctx, "", fmt.Appendf(nil, "client-%d", i), []byte("c"), client.Level(kvv1.Level_LEVEL_QUORUM)); err != nil {
			t.Fatalf("client put %d while a node is low on disk: %v", i, err)
		}
	}

	vols.set(low.ID(), 10<<30)
	eventually(t, "the node to accept writes again", func() bool { return low.Store().WritesRefused() == nil })
	eventually(t, "a peer to see it has room again", func() bool { return !gossipsDiskLow(nodes[1], low.ID()) })
	if _, err := cLow.Put(ctx, &kvv1.PutRequest{Key: []byte("after"), Value: []byte("v1"), Consistency: lvl(kvv1.Level_LEVEL_ALL)}); err != nil {
		t.Fatalf("put at ALL once space is back: %v", err)
	}
	// The write it refused reaches its own copy (the hint its coordinator
	// kept for it, read repair or anti-entropy): a read at ONE through it reads only
	// its copy.
	eventually(t, "the refused write to reach the node", func() bool {
		got, err := cLow.Get(ctx, &kvv1.GetRequest{Key: []byte("quorum"), Consistency: lvl(kvv1.Level_LEVEL_ONE)})
		return err == nil && len(got.GetSiblings()) == 1
	})
	// Once the hints kept for it are delivered (until then it is owed
	// writes, and counts toward no read: not even through itself), every
	// key reads at ALL through it.
	for _, k := range []string{"before", "quorum", "client-0", "client-29", "after"} {
		eventually(t, "read "+k+" at ALL through the node", func() bool {
			got, err := cLow.Get(ctx, &kvv1.GetRequest{Key: []byte(k), Consistency: lvl(kvv1.Level_LEVEL_ALL)})
			return err == nil && len(got.GetSiblings()) == 1
		})
	}
}

// gossipsDiskLow reports whether n's gossip has id low on disk.
func gossipsDiskLow(n *node.Node, id string) bool {
	for _, m := range n.Gossip().Members() {
		if m.Meta.ID == id {
			return m.Meta.DiskLow
		}
	}
	return false
}

// TestNodeStartedOnFullDiskRefusesAtOnce: the free space is read before
// the node serves, so its first write is already refused.
func TestNodeStartedOnFullDiskRefusesAtOnce(t *testing.T) {
	vols := &fakeVolumes{free: map[string]uint64{"n1": 1 << 20}}
	min := node.Bytes(64 << 20)
	l := startCluster(t, node.LocalSpec{NodesPerDC: 1, Options: node.Options{DiskSpace: vols.space, DiskCheckInterval: time.Hour},
		Configure: func(c *node.Config) { c.MinFreeDisk = &min }})
	n := l.Nodes()[0]
	ctx := ctxT(t)
	_, err := dial(t, n.Addr()).Put(ctx, &kvv1.PutRequest{Key: []byte("k"), Value: []byte("v")})
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "1.0 MiB free") || !strings.Contains(st.Message(), "min-free-disk 64.0 MiB") {
		t.Fatalf("first put on a full disk: %v, want RESOURCE_EXHAUSTED with the figures", err)
	}
}

// TestForwardedWriteSkipsReplicaLowOnDisk: a node that is not a replica of
// a key forwards a client's write to a replica; when the first replica it
// would pick is low on disk, the write goes to another one (and a refusal
// from a replica whose gossip is behind is passed on too), so a plain gRPC
// client's QUORUM write succeeds.
func TestForwardedWriteSkipsReplicaLowOnDisk(t *testing.T) {
	vols := &fakeVolumes{free: map[string]uint64{}}
	l := startCluster(t, node.LocalSpec{NodesPerDC: 4,
		Keyspaces: []membership.KeyspaceSpec{{Name: "ks", Replication: map[string]int{"dc1": 3}}},
		Options:   node.Options{DiskSpace: vols.space, DiskCheckInterval: 10 * time.Millisecond}})
	ctx := ctxT(t)
	topo := l.Nodes()[0].Topology()
	ks, _ := topo.Keyspace("ks")
	// Keys whose first replica is the same node, and the node that is a
	// replica of none of them.
	var keys [][]byte
	var first string
	var outside *node.Node
	for i := 0; len(keys) < 5 && i < 10000; i++ {
		key := fmt.Appendf(nil, "fwd-%d", i)
		reps := ks.Table.Replicas(topo.Ring.Partition(key))
		if first == "" {
			first = reps[0].Node
			for _, n := range l.Nodes() {
				if !slices.ContainsFunc(reps, func(r placement.Replica) bool { return r.Node == n.ID() }) {
					outside = n
				}
			}
		}
		if reps[0].Node == first && !slices.ContainsFunc(reps, func(r placement.Replica) bool { return r.Node == outside.ID() }) {
			keys = append(keys, key)
		}
	}
	if len(keys) < 5 {
		t.Fatalf("found %d keys led by %s and not on %s", len(keys), first, outside.ID())
	}
	vols.set(first, 1<<20)
	lowNode := l.Node(first)
	eventually(t, first+" to refuse writes", func() bool { return lowNode.Store().WritesRefused() != nil })
	c := dial(t, outside.Addr())
	// Whether or not outside has heard it yet, the write succeeds.
	put := func(key []byte) {
		t.Helper()
		if _, err := c.Put(ctx, &kvv1.PutRequest{Keyspace: "ks", Key: key, Value: []byte("v"), Consistency: lvl(kvv1.Level_LEVEL_QUORUM)}); err != nil {
			t.Fatalf("QUORUM put of %s through %s (not a replica) with %s low on disk: %v", key, outside.ID(), first, err)
		}
	}
	put(keys[0])
	eventually(t, outside.ID()+" to see "+first+" low on disk", func() bool { return outside.PeerDiskLow(first) })
	for _, key := range keys[1:] {
		put(key)
	}
	for _, key := range keys {
		got, err := c.Get(ctx, &kvv1.GetRequest{Keyspace: "ks", Key: key, Consistency: lvl(kvv1.Level_LEVEL_QUORUM)})
		if err != nil || len(got.GetSiblings()) != 1 {
			t.Fatalf("read %s back: %v %v", key, got, err)
		}
	}
}

// TestReadRepairSkipsReplicaLowOnDisk: read repair does not send a replica
// that gossips it is low on disk the write it would refuse; the other
// stale replicas are repaired.
func TestReadRepairSkipsReplicaLowOnDisk(t *testing.T) {
	vols := &fakeVolumes{free: map[string]uint64{}}
	l := startCluster(t, node.LocalSpec{NodesPerDC: 3, Options: node.Options{DiskSpace: vols.space, DiskCheckInterval: 10 * time.Millisecond},
		Configure: func(c *node.Config) {
			c.AntiEntropyPeriod = time.Hour
			c.Telemetry.MetricsAddr = "127.0.0.1:0"
		}})
	n1, n2, n3 := l.Node("n1"), l.Node("n2"), l.Node("n3")
	vols.set(n3.ID(), 1<<20)
	eventually(t, "n1 to see n3 low on disk", func() bool { return n1.PeerDiskLow(n3.ID()) })
	inject(t, n1, "only-n1", "v")
	get, err := dial(t, n1.Addr()).Get(ctxT(t), &kvv1.GetRequest{Key: []byte("only-n1"), Consistency: lvl(kvv1.Level_LEVEL_ALL)})
	if err != nil || len(get.GetSiblings()) != 1 {
		t.Fatalf("read at ALL with n3 low on disk (it serves reads): %v %v", get, err)
	}
	eventually(t, "read repair of n2", func() bool {
		return len(localGet(t, n2, "only-n1").Siblings) == 1 &&
			metricValue(t, scrape(t, n1.Telemetry().MetricsAddr()), "meridian_read_repairs_total") >= 1
	})
	for _, line := range strings.Split(scrape(t, n1.Telemetry().MetricsAddr()), "\n") {
		if strings.HasPrefix(line, "meridian_replica_rpc_duration_seconds_count{") && strings.Contains(line, `op="write"`) &&
			strings.Contains(line, `outcome="ResourceExhausted"`) {
			t.Errorf("read repair sent n3 a write it refused: %s", line)
		}
	}
	if !localGet(t, n3, "only-n1").IsEmpty() {
		t.Error("n3, low on disk, took a write")
	}
}
