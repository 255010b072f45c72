package node_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/pki"
)

// TestSecureByDefault: a local cluster runs TLS on every listener with
// certificates it made. Its client certificate works; plaintext, another
// CA's certificate and a client certificate on the peer listener do not.
func TestSecureByDefault(t *testing.T) {
	l := startSecureCluster(t, node.LocalSpec{NodesPerDC: 3, Engine: "memory"})
	n := l.Nodes()[0]
	ctx := ctxT(t)
	creds, err := l.DialOption()
	if err != nil {
		t.Fatal(err)
	}
	good := dialWith(t, n.Addr(), creds)
	put, err := kvv1.NewKVClient(good).Put(ctx, &kvv1.PutRequest{Key: []byte("k"), Value: []byte("v"), Consistency: lvl(kvv1.Level_LEVEL_ALL)})
	if err != nil || len(put.Effective.Replicas) != 3 {
		t.Fatalf("put over TLS, replicated over mTLS: %v, %v", put, err)
	}

	// Plaintext to a TLS port.
	plain := dialWith(t, n.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if _, err := kvv1.NewKVClient(plain).Get(ctx, &kvv1.GetRequest{Key: []byte("k")}); status.Code(err) != codes.Unavailable {
		t.Fatalf("plaintext to the TLS client port: %v, want a refused connection", err)
	}

	// A client certificate from another CA.
	other := t.TempDir()
	if err := pki.CreateCA(other, pki.CAOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := pki.CreateClient(other, "mallory", pki.CertOptions{}); err != nil {
		t.Fatal(err)
	}
	ca, _, _ := l.ClientTLS()
	cert, key := pki.ClientFiles(other, "mallory")
	// It trusts the cluster's CA, so the server is verified; its own
	// certificate is what the cluster must refuse.
	src, err := pki.NewSource(ca, "", "", pki.SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	foreign := loadForeign(t, ca, cert, key, filepath.Join(other, "ca.crt"))
	if _, err := kvv1.NewKVClient(dialWith(t, n.Addr(), foreign)).Get(ctx, &kvv1.GetRequest{Key: []byte("k")}); status.Code(err) != codes.Unavailable {
		t.Fatalf("a certificate from another CA: %v, want the handshake refused", err)
	}

	// The cluster's own client certificate, on the peer listener.
	if _, err := internalv1.NewReplicaClient(dialWith(t, n.PeerAddr(), creds)).Read(ctx, &internalv1.ReadRequest{Key: []byte("k")}); status.Code(err) != codes.Unavailable {
		t.Fatalf("a client certificate calling the peer service: %v, want the handshake refused", err)
	}
	calls, err := internalv1.NewReplicaClient(dialWith(t, n.PeerAddr(), creds)).Calls(ctx)
	if err == nil {
		_, err = calls.Recv()
	}
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("a client certificate opening a calls stream: %v, want the handshake refused", err)
	}
	// No certificate at all on the client listener: TLS works, but with
	// no principals configured only certificate holders are let in.
	caOnly := grpc.WithTransportCredentials(pki.ClientCredentials(src, pki.ClientOptions{}))
	if _, err := kvv1.NewKVClient(dialWith(t, n.Addr(), caOnly)).Get(ctx, &kvv1.GetRequest{Key: []byte("k")}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no client certificate and no token: %v, want UNAUTHENTICATED", err)
	}
}

// loadForeign builds credentials presenting a certificate of another CA
// while trusting the cluster's CA for the server.
func loadForeign(t *testing.T, clusterCA, cert, key, otherCA string) grpc.DialOption {
	t.Helper()
	dir := t.TempDir()
	bundle := filepath.Join(dir, "bundle.crt")
	// The Source checks that the certificate chains to a CA in its file:
	// give it both CAs, so it loads; the server trusts only its own.
	if err := concatFiles(bundle, clusterCA, otherCA); err != nil {
		t.Fatal(err)
	}
	src, err := pki.NewSource(bundle, cert, key, pki.SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return grpc.WithTransportCredentials(pki.ClientCredentials(src, pki.ClientOptions{}))
}

func dialWith(t *testing.T, addr string, creds grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, creds)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func concatFiles(dst string, srcs ...string) error {
	var all []byte
	for _, s := range srcs {
		b, err := os.ReadFile(s)
		if err != nil {
			return err
		}
		all = append(all, b...)
	}
	return os.WriteFile(dst, all, 0o600)
}

// TestServeWithAClientCertificate: a node given a client certificate (as
// a MERIDIAN_CERT exported for the CLI would give it) refuses to start,
// saying whose certificate it is and what overrode the config file.
func TestServeWithAClientCertificate(t *testing.T) {
	dir := t.TempDir()
	if err := pki.CreateCA(dir, pki.CAOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := pki.CreateClient(dir, "admin", pki.CertOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg := soloConfig(t, "n1", "127.0.0.1:0", filepath.Join(dir, "data"))
	cfg.Insecure = false
	cfg.CAFile, _ = pki.CAFiles(dir)
	cfg.CertFile, cfg.KeyFile = pki.ClientFiles(dir, "admin")
	n, err := node.Start(ctxT(t), cfg, node.Options{})
	if err == nil {
		n.Close()
		t.Fatal("a node started with a client certificate")
	}
	for _, want := range []string{`is client "admin"'s, not node "n1"'s`, "MERIDIAN_CERT"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q, want %q in it", err, want)
		}
	}
}
