package node_test

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
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
