package node_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/ops"
)

func TestTokensAndPermissions(t *testing.T) {
	auth := node.AuthConfig{Principals: []node.Principal{
		{Name: "reader", TokenSHA256: node.HashToken("read-token"), Keyspaces: map[string]string{"default": "read"}},
		{Name: "app", TokenSHA256: node.HashToken("app-token"), Keyspaces: map[string]string{"*": "read,write"}},
		{Name: "ops", TokenSHA256: node.HashToken("ops-token"), Admin: true},
	}}
	l := startCluster(t, node.LocalSpec{NodesPerDC: 1, Engine: "memory", Auth: auth, Options: node.Options{Register: ops.Register}})
	n := l.Nodes()[0]
	kv := kvv1.NewKVClient(dialConn(t, n.Addr()))
	admin := adminv1.NewAdminClient(dialConn(t, n.AdminAddr()))
	as := func(token string) context.Context {
		return metadata.AppendToOutgoingContext(ctxT(t), "authorization", "Bearer "+token)
	}
	put := &kvv1.PutRequest{Key: []byte("k"), Value: []byte("v")}
	get := &kvv1.GetRequest{Key: []byte("k")}

	if _, err := kv.Put(ctxT(t), put); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("put without credentials: %v, want UNAUTHENTICATED", err)
	}
	if _, err := kv.Put(as("wrong"), put); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("put with an unknown token: %v, want UNAUTHENTICATED", err)
	}
	_, err := kv.Put(as("read-token"), put)
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), `no write permission on keyspace "default"`) {
		t.Fatalf("put with a read-only token: %v, want PERMISSION_DENIED saying what is missing", err)
	}
	if _, err := kv.Put(as("app-token"), put); err != nil {
		t.Fatalf("put with a write token: %v", err)
	}
	if resp, err := kv.Get(as("read-token"), get); err != nil || len(resp.Siblings) != 1 {
		t.Fatalf("get with a read token: %v, %v", resp, err)
	}
	if _, err := admin.Status(as("app-token"), &adminv1.StatusRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("admin status without the admin role: %v, want PERMISSION_DENIED", err)
	}
	if _, err := admin.Status(as("ops-token"), &adminv1.StatusRequest{}); err != nil {
		t.Fatalf("admin status with the admin role: %v", err)
	}
	if _, err := kv.Get(as("ops-token"), get); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("get by an admin without keyspace permission: %v, want PERMISSION_DENIED", err)
	}
}

// payloadCounter counts the request bytes gRPC read for kv.v1.KV/Put.
type payloadCounter struct{ n atomic.Int64 }

func (c *payloadCounter) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	return context.WithValue(ctx, payloadCounter{}, info.FullMethodName)
}

func (c *payloadCounter) HandleRPC(ctx context.Context, s stats.RPCStats) {
	if in, ok := s.(*stats.InPayload); ok && ctx.Value(payloadCounter{}) == "/kv.v1.KV/Put" {
		c.n.Add(int64(in.WireLength))
	}
}
func (c *payloadCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (c *payloadCounter) HandleConn(context.Context, stats.ConnStats) {}

// TestUnauthenticatedBodiesAreNotRead: a caller without credentials is
// refused when its request's headers arrive, before gRPC reads its
// message: otherwise anyone could make a node buffer up to the message
// limit on every stream of every connection.
func TestUnauthenticatedBodiesAreNotRead(t *testing.T) {
	auth := node.AuthConfig{Principals: []node.Principal{{Name: "app", TokenSHA256: node.HashToken("app-token"), Keyspaces: map[string]string{"*": "read,write"}}}}
	counter := &payloadCounter{}
	l := startCluster(t, node.LocalSpec{NodesPerDC: 1, Engine: "memory", Auth: auth,
		Options: node.Options{ServerOptions: []grpc.ServerOption{grpc.StatsHandler(counter)}}})
	kv := kvv1.NewKVClient(dialConn(t, l.Nodes()[0].Addr()))
	big := &kvv1.PutRequest{Key: []byte("k"), Value: make([]byte, 3<<20)}
	if _, err := kv.Put(ctxT(t), big); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("put without credentials: %v, want UNAUTHENTICATED", err)
	}
	if n := counter.n.Load(); n != 0 {
		t.Fatalf("gRPC read %d bytes of an unauthenticated request", n)
	}
	as := metadata.AppendToOutgoingContext(ctxT(t), "authorization", "Bearer app-token")
	if _, err := kv.Put(as, big); err != nil {
		t.Fatal(err)
	}
	if n := counter.n.Load(); n < 3<<20 {
		t.Fatalf("an authenticated put was counted as %d bytes read: the counter sees nothing", n)
	}
}

// TestWriteOnlyPrincipalReadsNothing: a Put's answer holds the key's
// siblings after the write, which a blind write leaves as they were: a
// principal with write but not read permission gets the context only,
// unary and on a call stream (it read every stored value through its own
// writes).
func TestWriteOnlyPrincipalReadsNothing(t *testing.T) {
	auth := node.AuthConfig{Principals: []node.Principal{
		{Name: "app", TokenSHA256: node.HashToken("app-token"), Keyspaces: map[string]string{"*": "read,write"}},
		{Name: "ingest", TokenSHA256: node.HashToken("ingest-token"), Keyspaces: map[string]string{"default": "write"}},
	}}
	l := startCluster(t, node.LocalSpec{NodesPerDC: 1, Engine: "memory", Auth: auth})
	kv := kvv1.NewKVClient(dialConn(t, l.Nodes()[0].Addr()))
	as := func(token string) context.Context {
		return metadata.AppendToOutgoingContext(ctxT(t), "authorization", "Bearer "+token)
	}
	if _, err := kv.Put(as("app-token"), &kvv1.PutRequest{Key: []byte("k"), Value: []byte("secret")}); err != nil {
		t.Fatal(err)
	}
	resp, err := kv.Put(as("ingest-token"), &kvv1.PutRequest{Key: []byte("k"), Value: []byte("x")})
	if err != nil || len(resp.GetContext()) == 0 || len(resp.GetSiblings()) != 0 {
		t.Fatalf("a write-only principal's put: %v, siblings %v; want its context and no values", err, resp.GetSiblings())
	}
	stream, err := kv.Calls(as("ingest-token"))
	if err != nil {
		t.Fatal(err)
	}
	got := exchange(t, stream, &kvv1.Call{Id: 1, Op: &kvv1.Call_Put{Put: &kvv1.PutRequest{Key: []byte("k"), Value: []byte("y")}}})
	if put := got[1].GetPut(); put == nil || len(put.GetContext()) == 0 || len(put.GetSiblings()) != 0 {
		t.Fatalf("a write-only principal's put on a call stream: %v; want its context and no values", got[1])
	}
	// A failed put (a context that does not decode) is answered, not a
	// crash of the node: the handler's nil answer is left alone.
	if _, err := kv.Put(as("ingest-token"), &kvv1.PutRequest{Key: []byte("k"), Value: []byte("x"), Context: []byte("not a context")}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a write-only principal's failed put: %v, want INVALID_ARGUMENT", err)
	}
	// One with read permission still gets the siblings.
	resp, err = kv.Put(as("app-token"), &kvv1.PutRequest{Key: []byte("k"), Value: []byte("z")})
	if err != nil || len(resp.GetSiblings()) < 2 {
		t.Fatalf("a reader-writer's blind put: %v, %d siblings; want every sibling", err, len(resp.GetSiblings()))
	}
}
