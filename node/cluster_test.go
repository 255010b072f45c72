package node_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/coordinator"
	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/repair"
	"github.com/meridiankv/meridian/replica"
	"github.com/meridiankv/meridian/transport"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startCluster starts an in-process cluster in plaintext (tests of the
// request path); startSecureCluster keeps TLS on.
func startCluster(t *testing.T, spec node.LocalSpec) *node.Local {
	t.Helper()
	spec.Insecure = true
	return startLocal(t, spec)
}

// metaLeader waits for one of nodes to lead the metadata log and returns it.
func metaLeader(t *testing.T, nodes []*node.Node) *node.Node {
	t.Helper()
	var leader *node.Node
	eventually(t, "a metadata leader", func() bool {
		for _, n := range nodes {
			if n.MetaLog().IsLeader() {
				leader = n
				return true
			}
		}
		return false
	})
	return leader
}

func startSecureCluster(t *testing.T, spec node.LocalSpec) *node.Local {
	t.Helper()
	spec.Insecure = false
	return startLocal(t, spec)
}

func startLocal(t *testing.T, spec node.LocalSpec) *node.Local {
	if os.Getenv("MERIDIAN_TEST_LOG") != "" {
		spec.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	t.Helper()
	if spec.Dir == "" {
		spec.Dir = t.TempDir()
	}
	spec.GossipProfile = "test"
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, err := node.StartLocal(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close cluster: %v", err)
		}
	})
	return l
}

func dial(t *testing.T, addr string) kvv1.KVClient {
	t.Helper()
	return kvv1.NewKVClient(dialConn(t, addr))
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func lvl(l kvv1.Level) *kvv1.Consistency { return &kvv1.Consistency{Level: l} }

func vals(sibs []*kvv1.Sibling) []string {
	var out []string
	for _, s := range sibs {
		if s.Tombstone {
			out = append(out, "<tombstone>")
			continue
		}
		out = append(out, string(s.Value))
	}
	sort.Strings(out)
	return out
}

// eventually polls cond until it holds or a generous deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestClusterQuorumSiblingsAndFailure(t *testing.T) {
	l := startCluster(t, node.LocalSpec{NodesPerDC: 3})
	nodes := l.Nodes()
	c1, c2, c3 := dial(t, nodes[0].Addr()), dial(t, nodes[1].Addr()), dial(t, nodes[2].Addr())
	ctx := ctxT(t)
	key := []byte("k1")

	// Quorum write through one node, quorum read through another.
	put, err := c1.Put(ctx, &kvv1.PutRequest{Key: key, Value: []byte("v1"), Consistency: lvl(kvv1.Level_LEVEL_QUORUM)})
	if err != nil {
		t.Fatal(err)
	}
	if put.Effective.N != 3 || put.Effective.W != 2 || len(put.Effective.Replicas) < 2 {
		t.Fatalf("effective = %v, want n=3 w=2 and at least 2 replicas", put.Effective)
	}
	get, err := c2.Get(ctx, &kvv1.GetRequest{Key: key, Consistency: lvl(kvv1.Level_LEVEL_QUORUM)})
	if err != nil {
		t.Fatal(err)
	}
	if got := vals(get.Siblings); len(got) != 1 || got[0] != "v1" {
		t.Fatalf("get = %v, want [v1]", got)
	}
	if get.Effective.R != 2 || len(get.Effective.Replicas) < 2 {
		t.Fatalf("effective = %v, want r=2 with 2 replicas", get.Effective)
	}

	// Two writes with the same context are concurrent: both survive.
	if _, err := c1.Put(ctx, &kvv1.PutRequest{Key: key, Value: []byte("a"), Context: get.Context}); err != nil {
		t.Fatal(err)
	}
	if _, err := c3.Put(ctx, &kvv1.PutRequest{Key: key, Value: []byte("b"), Context: get.Context}); err != nil {
		t.Fatal(err)
	}
	get, err = c2.Get(ctx, &kvv1.GetRequest{Key: key, Consistency: lvl(kvv1.Level_LEVEL_ALL)})
	if err != nil {
		t.Fatal(err)
	}
	if got := vals(get.Siblings); strings.Join(got, ",") != "a,b" {
		t.Fatalf("siblings = %v, want [a b]", got)
	}

	// A write whose context saw both supersedes both.
	if _, err := c2.Put(ctx, &kvv1.PutRequest{Key: key, Value: []byte("ab"), Context: get.Context}); err != nil {
		t.Fatal(err)
	}
	get, err = c1.Get(ctx, &kvv1.GetRequest{Key: key, Consistency: lvl(kvv1.Level_LEVEL_ALL)})
	if err != nil {
		t.Fatal(err)
	}
	if got := vals(get.Siblings); strings.Join(got, ",") != "ab" {
		t.Fatalf("after merge = %v, want [ab]", got)
	}

	// Delete with the context leaves only a tombstone.
	if _, err := c3.Delete(ctx, &kvv1.DeleteRequest{Key: key, Context: get.Context, Consistency: lvl(kvv1.Level_LEVEL_QUORUM)}); err != nil {
		t.Fatal(err)
	}
	get, err = c1.Get(ctx, &kvv1.GetRequest{Key: key, Consistency: lvl(kvv1.Level_LEVEL_QUORUM)})
	if err != nil {
		t.Fatal(err)
	}
	if got := vals(get.Siblings); strings.Join(got, ",") != "<tombstone>" {
		t.Fatalf("after delete = %v, want one tombstone", got)
	}

	// Stop a node: QUORUM still works, ALL fails with UNAVAILABLE and counts.
	if err := l.Stop(nodes[2].ID()); err != nil {
		t.Fatal(err)
	}
	for _, c := range []kvv1.KVClient{c1, c2} {
		eventually(t, "the survivors to see n3 leave", func() bool {
			_, err := c.Put(ctx, &kvv1.PutRequest{Key: []byte("probe"), Value: []byte("x"), Consistency: lvl(kvv1.Level_LEVEL_ALL)})
			return status.Code(err) == codes.Unavailable && strings.Contains(status.Convert(err).Message(), "are alive")
		})
	}
	if _, err := c1.Put(ctx, &kvv1.PutRequest{Key: key, Value: []byte("q"), Context: get.Context, Consistency: lvl(kvv1.Level_LEVEL_QUORUM)}); err != nil {
		t.Fatalf("QUORUM put with a node down: %v", err)
	}
	get, err = c2.Get(ctx, &kvv1.GetRequest{Key: key, Consistency: lvl(kvv1.Level_LEVEL_QUORUM)})
	if err != nil {
		t.Fatalf("QUORUM get with a node down: %v", err)
	}
	if got := vals(get.Siblings); strings.Join(got, ",") != "q" {
		t.Fatalf("get with a node down = %v, want [q]", got)
	}
	_, err = c1.Put(ctx, &kvv1.PutRequest{Key: key, Value: []byte("x"), Consistency: lvl(kvv1.Level_LEVEL_ALL)})
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "needs 3 replicas but only 2") {
		t.Fatalf("ALL put = %v, want UNAVAILABLE naming 3 needed and 2 alive", err)
	}
	// The refused write left no trace.
	get, err = c2.Get(ctx, &kvv1.GetRequest{Key: key, Consistency: lvl(kvv1.Level_LEVEL_QUORUM)})
	if err != nil {
		t.Fatal(err)
	}
	if got := vals(get.Siblings); strings.Join(got, ",") != "q" {
		t.Fatalf("after the refused ALL write = %v, want [q]", got)
	}
	_, err = c2.Get(ctx, &kvv1.GetRequest{Key: key, Consistency: lvl(kvv1.Level_LEVEL_ALL)})
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "needs 3 replicas but only 2") {
		t.Fatalf("ALL get = %v, want UNAVAILABLE", err)
	}
}

func TestReadRepair(t *testing.T) {
	l := startCluster(t, node.LocalSpec{NodesPerDC: 3, Engine: "memory"})
	nodes := l.Nodes()
	n1, n3 := nodes[0], nodes[2]
	c1 := dial(t, n1.Addr())
	ctx := ctxT(t)
	key := []byte("repair-me")

	// n3 misses the write: n1 cannot reach it.
	n1.Faults().Cut(n3.ID())
	if _, err := c1.Put(ctx, &kvv1.PutRequest{Key: key, Value: []byte("fresh"), Consistency: lvl(kvv1.Level_LEVEL_QUORUM)}); err != nil {
		t.Fatal(err)
	}
	topo := n3.Topology()
	ks, _ := topo.Keyspace("")
	loc := replica.Loc{Keyspace: ks.ID, Partition: topo.Ring.Partition(key)}
	set, err := n3.Store().Get(loc, key)
	if err != nil || !set.IsEmpty() {
		t.Fatalf("n3 has %v (err %v) before repair; want nothing", set, err)
	}

	// A read through n1 that reaches n3 repairs it in the background.
	n1.Faults().Heal()
	eventually(t, "n1 to route to n3 again", func() bool {
		get, err := c1.Get(ctx, &kvv1.GetRequest{Key: key, Consistency: lvl(kvv1.Level_LEVEL_ALL)})
		return err == nil && len(get.Effective.Replicas) == 3
	})
	eventually(t, "read repair of n3", func() bool {
		set, err := n3.Store().Get(loc, key)
		return err == nil && len(set.Siblings) == 1 && bytes.Equal(set.Siblings[0].Value.Bytes, []byte("fresh"))
	})
}

// TestReadRepairWithEveryReplyIn: a key only one replica holds (no hint to
// deliver, anti-entropy idle) reaches the others through a read that
// waits for them all: the coordinator compares the replies it already has
// and repairs the stale replicas.
func TestReadRepairWithEveryReplyIn(t *testing.T) {
	l := startCluster(t, node.LocalSpec{NodesPerDC: 3, Engine: "memory",
		Configure: func(c *node.Config) { c.AntiEntropyPeriod = time.Hour }})
	n1 := l.Node("n1")
	inject(t, n1, "only-n1", "v")
	for _, n := range l.Nodes()[1:] {
		if set := localGet(t, n, "only-n1"); !set.IsEmpty() {
			t.Fatalf("%s holds the key before the read", n.ID())
		}
	}
	c1 := dial(t, n1.Addr())
	get, err := c1.Get(ctxT(t), &kvv1.GetRequest{Key: []byte("only-n1"), Consistency: lvl(kvv1.Level_LEVEL_ALL)})
	if err != nil {
		t.Fatal(err)
	}
	if len(get.Siblings) != 1 || string(get.Siblings[0].Value) != "v" {
		t.Fatalf("read at ALL: %v", get.Siblings)
	}
	for _, n := range l.Nodes()[1:] {
		eventually(t, "read repair of "+n.ID(), func() bool {
			set := localGet(t, n, "only-n1")
			return len(set.Siblings) == 1 && string(set.Siblings[0].Value.Bytes) == "v"
		})
	}
}

func TestBadInput(t *testing.T) {
	l := startCluster(t, node.LocalSpec{NodesPerDC: 3, Engine: "memory"})
	c := dial(t, l.Nodes()[0].Addr())
	ctx := ctxT(t)
	tests := []struct {
		name string
		call func() error
		code codes.Code
		has  string
	}{
		{"empty key", func() error {
			_, err := c.Put(ctx, &kvv1.PutRequest{Value: []byte("v")})
			return err
		}, codes.InvalidArgument, "key is empty"},
		{"long key", func() error {
			_, err := c.Get(ctx, &kvv1.GetRequest{Key: make([]byte, 64<<10+1)})
			return err
		}, codes.InvalidArgument, "over the 64 KiB limit"},
		{"big value", func() error {
			_, err := c.Put(ctx, &kvv1.PutRequest{Key: []byte("k"), Value: make([]byte, 16<<20+1)})
			return err
		}, codes.InvalidArgument, "over the 16777216-byte limit"},
		{"malformed context", func() error {
			_, err := c.Put(ctx, &kvv1.PutRequest{Key: []byte("k"), Value: []byte("v"), Context: []byte{0xff, 0xff, 0xff}})
			return err
		}, codes.InvalidArgument, "not one this cluster issued"},
		{"context of another key", func() error {
			put, err := c.Put(ctx, &kvv1.PutRequest{Key: []byte("other"), Value: []byte("v")})
			if err != nil {
				return err
			}
			_, err = c.Put(ctx, &kvv1.PutRequest{Key: []byte("k"), Value: []byte("v"), Context: put.Context})
			return err
		}, codes.InvalidArgument, "not issued for this keyspace and key"},
		{"altered context", func() error {
			put, err := c.Put(ctx, &kvv1.PutRequest{Key: []byte("other"), Value: []byte("v2")})
			if err != nil {
				return err
			}
			forged := append([]byte(nil), put.Context...)
			forged[len(forged)-2] ^= 0x40 // bump a counter or time
			_, err = c.Put(ctx, &kvv1.PutRequest{Key: []byte("other"), Value: []byte("v"), Context: forged})
			return err
		}, codes.InvalidArgument, "not issued for this keyspace and key, or was altered"},
		{"oversized context", func() error {
			_, err := c.Put(ctx, &kvv1.PutRequest{Key: []byte("k"), Value: []byte("v"), Context: make([]byte, coordinator.MaxContextBytes+1)})
			return err
		}, codes.InvalidArgument, fmt.Sprintf("over the %d-byte limit", coordinator.MaxContextBytes)},
		{"oversized request id", func() error {
			_, err := c.Put(ctx, &kvv1.PutRequest{Key: []byte("k"), Value: []byte("v"), RequestId: make([]byte, 65)})
			return err
		}, codes.InvalidArgument, "request_id is 65 bytes"},
		{"unknown keyspace", func() error {
			_, err := c.Get(ctx, &kvv1.GetRequest{Keyspace: "nope", Key: []byte("k")})
			return err
		}, codes.NotFound, `keyspace "nope" does not exist`},
		{"r above N", func() error {
			_, err := c.Get(ctx, &kvv1.GetRequest{Key: []byte("k"), Consistency: &kvv1.Consistency{R: 4}})
			return err
		}, codes.InvalidArgument, "r=4 is more than the keyspace's N=3"},
		{"any read", func() error {
			_, err := c.Get(ctx, &kvv1.GetRequest{Key: []byte("k"), Consistency: lvl(kvv1.Level_LEVEL_ANY)})
			return err
		}, codes.InvalidArgument, "ANY is for writes only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			st := status.Convert(err)
			if st.Code() != tt.code || !strings.Contains(st.Message(), tt.has) {
				t.Fatalf("got %v, want %s containing %q", err, tt.code, tt.has)
			}
		})
	}
	// Nothing was written by any of them.
	get, err := c.Get(ctx, &kvv1.GetRequest{Key: []byte("k"), Consistency: lvl(kvv1.Level_LEVEL_ALL)})
	if err != nil || len(get.Siblings) != 0 {
		t.Fatalf("after bad requests: %v, %v; want nothing stored", get, err)
	}
}

func TestHealthAndReflection(t *testing.T) {
	l := startCluster(t, node.LocalSpec{NodesPerDC: 1, Engine: "memory"})
	conn, err := grpc.NewClient(l.Nodes()[0].Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctxT(t), &healthpb.HealthCheckRequest{Service: "kv.v1.KV"})
	if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v, %v", resp, err)
	}
	// Reflection is off unless asked for.
	if _, err := listServices(t, conn); status.Code(err) != codes.Unimplemented {
		t.Fatalf("reflection without --reflection: %v, want UNIMPLEMENTED", err)
	}
	dev := startCluster(t, node.LocalSpec{NodesPerDC: 1, Engine: "memory", Reflection: true})
	dconn, err := grpc.NewClient(dev.Nodes()[0].Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer dconn.Close()
	services, err := listServices(t, dconn)
	if err != nil || !slices.Contains(services, "kv.v1.KV") || slices.Contains(services, "internal.v1.Replica") {
		t.Fatalf("reflection lists %v (%v): want kv.v1.KV and never the peer API", services, err)
	}
}

// TestListenersServeTheirAPIs: the peer API is not on the client listener,
// nor the client API on the peer listener.
func TestListenersServeTheirAPIs(t *testing.T) {
	l := startCluster(t, node.LocalSpec{NodesPerDC: 1, Engine: "memory"})
	n := l.Nodes()[0]
	ctx := ctxT(t)
	client := dialConn(t, n.Addr())
	peer := dialConn(t, n.PeerAddr())
	if _, err := internalv1.NewReplicaClient(client).Read(ctx, &internalv1.ReadRequest{Key: []byte("k")}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("replica read on the client listener: %v, want UNIMPLEMENTED", err)
	}
	if _, err := kvv1.NewKVClient(peer).Get(ctx, &kvv1.GetRequest{Key: []byte("k")}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("kv get on the peer listener: %v, want UNIMPLEMENTED", err)
	}
	// The peer API refuses requests from another cluster, and writes
	// whose set does not decode.
	replica := internalv1.NewReplicaClient(peer)
	other := metadata.AppendToOutgoingContext(ctx, "meridian-cluster", "staging", "meridian-epoch", "1")
	if _, err := replica.Read(other, &internalv1.ReadRequest{Key: []byte("k")}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("peer read from another cluster: %v, want FAILED_PRECONDITION", err)
	}
	ours := metadata.AppendToOutgoingContext(ctx, "meridian-cluster", "meridian", "meridian-epoch", "1")
	if _, err := replica.Write(ours, &internalv1.WriteRequest{Key: []byte("k"), Set: []byte{0xff}, HintFor: "n99"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("hint whose set does not decode: %v, want INVALID_ARGUMENT", err)
	}
	if _, err := replica.Read(ours, &internalv1.ReadRequest{Key: []byte("k")}); err != nil {
		t.Fatalf("peer read with the cluster's name: %v", err)
	}
	// The same checks hold for calls on a Calls stream (a peer's pipe).
	foreign, err := replica.Calls(other)
	if err == nil {
		_ = foreign.Send(&internalv1.CallBatch{Calls: []*internalv1.Call{{Id: 1, Op: &internalv1.Call_Read{Read: &internalv1.ReadRequest{Key: []byte("k")}}}}})
		_, err = foreign.Recv()
	}
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("calls stream from another cluster: %v, want FAILED_PRECONDITION", err)
	}
	calls, err := replica.Calls(ours)
	if err != nil {
		t.Fatal(err)
	}
	if err := calls.Send(&internalv1.CallBatch{Calls: []*internalv1.Call{
		{Id: 7, Epoch: 1, Op: &internalv1.Call_Read{Read: &internalv1.ReadRequest{Key: []byte("k")}}},
		{Id: 8, Epoch: 1, Op: &internalv1.Call_Write{Write: &internalv1.WriteRequest{Key: []byte("k"), Set: []byte{0xff}, HintFor: "n99"}}},
		{Id: 9, Epoch: 1},
	}}); err != nil {
		t.Fatal(err)
	}
	replies := map[uint64]*internalv1.Reply{}
	for len(replies) < 3 {
		b, err := calls.Recv()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range b.GetReplies() {
			replies[r.GetId()] = r
		}
	}
	if replies[7].GetRead() == nil {
		t.Fatalf("piped read = %v", replies[7])
	}
	if e := replies[8].GetError(); e == nil || !strings.Contains(transport.ReplyStatus(replies[8]).Message(), "sibling set") || transport.ReplyStatus(replies[8]).Code() != codes.InvalidArgument {
		t.Fatalf("piped hint whose set does not decode = %v, want INVALID_ARGUMENT", replies[8])
	}
	if transport.ReplyStatus(replies[9]).Code() != codes.InvalidArgument {
		t.Fatalf("call without an operation = %v, want INVALID_ARGUMENT", replies[9])
	}
	if err := calls.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := calls.Recv(); err != io.EOF {
		t.Fatalf("stream after the sender closed = %v, want its end", err)
	}
	info, err := internalv1.NewDiscoveryClient(client).Info(ctx, &internalv1.InfoRequest{})
	if err != nil || info.PeerAddr != n.PeerAddr() || info.AdminAddr != n.AdminAddr() || info.Id != n.ID() {
		t.Fatalf("discovery = %v, %v", info, err)
	}
}

// dialConn connects to a plaintext (Insecure) node's listener.
func dialConn(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	return dialWith(t, addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

func listServices(t *testing.T, conn *grpc.ClientConn) ([]string, error) {
	t.Helper()
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctxT(t))
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		if err == io.EOF { // the stream ended: its status says why
			_, err = stream.Recv()
		}
		return nil, err
	}
	resp, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		out = append(out, s.GetName())
	}
	return out, nil
}

// TestHintedHandoff: with a replica down, a QUORUM write lands a hinted
// copy on a fallback; ANY succeeds with every replica down; when the
// replica returns the hints are delivered to it.
func TestHintedHandoff(t *testing.T) {
	l := startCluster(t, node.LocalSpec{NodesPerDC: 4, Engine: "memory",
		Keyspaces: []membership.KeyspaceSpec{{Name: "ks", Replication: map[string]int{"dc1": 3}}}})
	ctx := ctxT(t)
	key := []byte("hinted")
	n1 := l.Nodes()[0]
	topo := n1.Topology()
	ks, _ := topo.Keyspace("ks")
	p := topo.Ring.Partition(key)
	reps := ks.Table.Replicas(p)
	down := reps[2].Node
	var fallback string
	for _, n := range l.Nodes() {
		in := false
		for _, r := range reps {
			in = in || r.Node == n.ID()
		}
		if !in {
			fallback = n.ID()
		}
	}
	c := dial(t, l.Node(reps[0].Node).Addr())
	if err := l.Stop(down); err != nil {
		t.Fatal(err)
	}
	// Whether or not the coordinator has heard of the stop yet, the copy
	// meant for the stopped replica lands on a fallback.
	put, err := c.Put(ctx, &kvv1.PutRequest{Keyspace: "ks", Key: key, Value: []byte("v1"), Consistency: lvl(kvv1.Level_LEVEL_QUORUM)})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the hinted copy", func() bool {
		held := 0
		l.Node(fallback).HintLog().Hints(down, func(repair.Hint) bool { held++; return true })
		return held == 1
	})
	// Sloppy quorum: a hinted copy may be one of the two acknowledgements.
	if len(put.Effective.Replicas)+len(put.Effective.Hinted) < 2 {
		t.Fatalf("QUORUM put acknowledged by %v (hinted %v)", put.Effective.Replicas, put.Effective.Hinted)
	}

	// Back up: the hint is delivered and deleted.
	if _, err := l.Restart(ctx, down); err != nil {
		t.Fatal(err)
	}
	loc := replica.Loc{Keyspace: ks.ID, Partition: p}
	eventually(t, "hint delivery to "+down, func() bool {
		n := l.Node(down)
		if n == nil {
			return false
		}
		set, err := n.Store().Get(loc, key)
		if err != nil || len(set.Siblings) != 1 || string(set.Siblings[0].Value.Bytes) != "v1" {
			return false
		}
		left := 0
		l.Node(fallback).HintLog().Hints(down, func(repair.Hint) bool { left++; return true })
		return left == 0
	})
}

// TestExplain: a request with explain returns its timeline — which
// replicas did what, in order — with no exporter configured.
func TestExplain(t *testing.T) {
	l := startCluster(t, node.LocalSpec{NodesPerDC: 3, Engine: "memory"})
	c := dial(t, l.Nodes()[0].Addr())
	ctx := ctxT(t)
	put, err := c.Put(ctx, &kvv1.PutRequest{Key: []byte("e"), Value: []byte("v"), Explain: true,
		Consistency: lvl(kvv1.Level_LEVEL_ALL)})
	if err != nil {
		t.Fatal(err)
	}
	actions := map[string]int{}
	for i, ev := range put.Explain {
		actions[ev.Action]++
		if i > 0 && ev.OffsetMicros < put.Explain[i-1].OffsetMicros {
			t.Fatalf("explain events out of order: %v", put.Explain)
		}
	}
	if actions["coordinator write"] != 1 || actions["replica write"] != 2 {
		t.Fatalf("put explain = %v", put.Explain)
	}
	get, err := c.Get(ctx, &kvv1.GetRequest{Key: []byte("e"), Explain: true, Consistency: lvl(kvv1.Level_LEVEL_ALL)})
	if err != nil {
		t.Fatal(err)
	}
	reads := 0
	for _, ev := range get.Explain {
		if ev.Action == "replica read" && strings.Contains(ev.Detail, "1 siblings") {
			reads++
		}
	}
	if reads != 3 {
		t.Fatalf("get explain = %v, want 3 replica reads that found the value", get.Explain)
	}
	plain, _ := c.Get(ctx, &kvv1.GetRequest{Key: []byte("e")})
	if len(plain.Explain) != 0 {
		t.Fatal("explain returned without being asked for")
	}
}

// TestAnyWithEveryReplicaDown: ANY accepts a write when no replica of the
// key is reachable (a fallback keeps it as a hint); primary_only refuses.
func TestAnyWithEveryReplicaDown(t *testing.T) {
	l := startCluster(t, node.LocalSpec{NodesPerDC: 3, Engine: "memory",
		Keyspaces: []membership.KeyspaceSpec{{Name: "one", Replication: map[string]int{"dc1": 1}}}})
	ctx := ctxT(t)
	key := []byte("lonely")
	topo := l.Nodes()[0].Topology()
	ks, _ := topo.Keyspace("one")
	owner := ks.Table.Replicas(topo.Ring.Partition(key))[0].Node
	var other *node.Node
	for _, n := range l.Nodes() {
		if n.ID() != owner {
			other = n
		}
	}
	c := dial(t, other.Addr())
	if err := l.Stop(owner); err != nil {
		t.Fatal(err)
	}
	eventually(t, other.ID()+" to see "+owner+" leave", func() bool { return !other.Alive(owner) })
	_, err := c.Put(ctx, &kvv1.PutRequest{Keyspace: "one", Key: key, Value: []byte("v"),
		Consistency: &kvv1.Consistency{Level: kvv1.Level_LEVEL_ONE, PrimaryOnly: true}})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("ONE primary_only with the only replica down = %v, want UNAVAILABLE", err)
	}
	put, err := c.Put(ctx, &kvv1.PutRequest{Keyspace: "one", Key: key, Value: []byte("v"), Consistency: lvl(kvv1.Level_LEVEL_ANY)})
	if err != nil {
		t.Fatalf("ANY with the only replica down: %v", err)
	}
	if len(put.Effective.Hinted) == 0 {
		t.Fatalf("ANY put effective %v: want a hinted copy", put.Effective)
	}
	held := 0
	for _, n := range l.Nodes() {
		n.HintLog().Hints(owner, func(repair.Hint) bool { held++; return true })
	}
	if held == 0 {
		t.Fatal("no node holds a hint for the down replica")
	}
}

// TestDeadline: when replicas are slower than the caller's deadline, the
// request fails with DEADLINE_EXCEEDED saying how many answered.
func TestDeadline(t *testing.T) {
	l := startCluster(t, node.LocalSpec{NodesPerDC: 3, Engine: "memory"})
	n1 := l.Nodes()[0]
	for _, other := range l.Nodes()[1:] {
		n1.Faults().Delay(other.ID(), 2*time.Second)
	}
	c := dial(t, n1.Addr())
	// The node answers 20 ms before the caller's deadline; on a loaded
	// machine its answer can arrive after the caller gave up, leaving only
	// the caller's own DEADLINE_EXCEEDED. A few attempts: one must carry
	// the node's account.
	var err error
	for i := range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		_, err = c.Put(ctx, &kvv1.PutRequest{Key: fmt.Appendf(nil, "slow-%d", i), Value: []byte("v"), Consistency: lvl(kvv1.Level_LEVEL_ALL)})
		cancel()
		if st := status.Convert(err); st.Code() != codes.DeadlineExceeded {
			t.Fatalf("slow ALL put = %v, want DEADLINE_EXCEEDED", err)
		} else if strings.Contains(st.Message(), "1 of 3 replicas answered") {
			break
		}
	}
	if !strings.Contains(status.Convert(err).Message(), "1 of 3 replicas answered") {
		t.Fatalf("slow ALL put = %v, want DEADLINE_EXCEEDED with 1 of 3 answered", err)
	}
	n1.Faults().Heal()
}

// TestDiscoveryTopologyFollowsChanges: the topology answer (whose
// placement part is cached) names a keyspace created since the last
// answer, at the new epoch, and a node that stopped as not alive.
func TestDiscoveryTopologyFollowsChanges(t *testing.T) {
	l := startCluster(t, node.LocalSpec{NodesPerDC: 3, Partitions: 16, Engine: "memory"})
	n1, n3 := l.Nodes()[0], l.Nodes()[2]
	disco := internalv1.NewDiscoveryClient(dialConn(t, n1.Addr()))
	ctx := ctxT(t)
	before, err := disco.Topology(ctx, &internalv1.TopologyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n1.CreateKeyspace(ctx, membership.KeyspaceSpec{Name: "later", Replication: map[string]int{"dc1": 2}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the answer to name the new keyspace at a newer epoch", func() bool {
		after, err := disco.Topology(ctx, &internalv1.TopologyRequest{})
		if err != nil || after.GetEpoch() <= before.GetEpoch() {
			return false
		}
		for _, ks := range after.GetKeyspaces() {
			if ks.GetName() == "later" {
				return len(ks.GetPartitions()) == 16 && len(ks.GetPartitions()[0].GetNodes()) == 2
			}
		}
		return false
	})
	if err := l.Stop(n3.ID()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the answer to show the stopped node down", func() bool {
		resp, err := disco.Topology(ctx, &internalv1.TopologyRequest{})
		if err != nil {
			return false
		}
		for _, m := range resp.GetNodes() {
			if m.GetId() == n3.ID() {
				return !m.GetAlive()
			}
		}
		return false
	})
}
