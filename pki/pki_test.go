package pki

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// ---- helpers ---------------------------------------------------------------

// newCA makes a CA in a fresh directory with node certificates for ids and
// client certificates for clients.
func newCA(t *testing.T, nodes []string, clients []string) string {
	t.Helper()
	dir := t.TempDir()
	if err := CreateCA(dir, CAOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, id := range nodes {
		if err := CreateNode(dir, id, nil, CertOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range clients {
		if err := CreateClient(dir, name, CertOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func nodeSource(t *testing.T, dir, id string, opts SourceOptions) *Source {
	t.Helper()
	crt, key := NodeFiles(dir, id)
	ca, _ := CAFiles(dir)
	s, err := NewSource(ca, crt, key, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func clientSource(t *testing.T, dir, name string, opts SourceOptions) *Source {
	t.Helper()
	crt, key := ClientFiles(dir, name)
	ca, _ := CAFiles(dir)
	s, err := NewSource(ca, crt, key, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func caOnlySource(t *testing.T, dir string, opts SourceOptions) *Source {
	t.Helper()
	ca, _ := CAFiles(dir)
	s, err := NewSource(ca, "", "", opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// tlsServer accepts TLS connections on 127.0.0.1:0 and answers each
// completed handshake with "ok <identity>\n", where identity names the
// verified client certificate (node:ID, client:NAME or none).
type tlsServer struct {
	addr string
	errs chan error // handshake errors, newest last
}

func serve(t *testing.T, cfg *tls.Config) *tlsServer {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := &tlsServer{addr: ln.Addr().String(), errs: make(chan error, 1000)}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				tc := c.(*tls.Conn)
				tc.SetDeadline(time.Now().Add(10 * time.Second))
				if err := tc.Handshake(); err != nil {
					select {
					case s.errs <- err:
					default:
					}
					return
				}
				fmt.Fprintf(tc, "ok %s\n", identityOf(tc.ConnectionState()))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return s
}

func identityOf(cs tls.ConnectionState) string {
	if len(cs.VerifiedChains) == 0 {
		return "none"
	}
	leaf := cs.VerifiedChains[0][0]
	if id, ok := NodeID(leaf); ok {
		return "node:" + id
	}
	if name, ok := ClientName(leaf); ok {
		return "client:" + name
	}
	return "unknown"
}

// dial connects, completes the handshake and reads the server's answer. In
// TLS 1.3 a client's handshake can finish before the server has judged the
// client's certificate, so only the answer proves the server accepted it.
func dial(addr string, cfg *tls.Config) (string, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(line), nil
}

func mustAccept(t *testing.T, addr string, cfg *tls.Config, want string) {
	t.Helper()
	got, err := dial(addr, cfg)
	if err != nil {
		t.Fatalf("want accepted as %q, got error: %v", want, err)
	}
	if got != "ok "+want {
		t.Fatalf("server answered %q, want %q", got, "ok "+want)
	}
}

func mustRefuse(t *testing.T, addr string, cfg *tls.Config) error {
	t.Helper()
	got, err := dial(addr, cfg)
	if err == nil {
		t.Fatalf("want refused, server answered %q", got)
	}
	return err
}

// lastServerErr waits for the server to report a handshake error.
func (s *tlsServer) lastServerErr(t *testing.T) error {
	t.Helper()
	select {
	case err := <-s.errs:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("the server reported no handshake error")
		return nil
	}
}

// eventually polls f until it returns nil or the deadline passes.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after 15s: %v", what, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// members is an Authorize hook for a peer listener: only node certificates
// of the given node IDs.
func members(ids ...string) func(*x509.Certificate) error {
	return func(c *x509.Certificate) error {
		id, ok := NodeID(c)
		if !ok {
			return errors.New("not a node certificate")
		}
		for _, m := range ids {
			if m == id {
				return nil
			}
		}
		return fmt.Errorf("node %q is not a member of the topology", id)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// ---- creation ---------------------------------------------------------------

func TestCreateCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	serial := bytes.Repeat([]byte{0xab}, 16)
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := CreateCA(dir, CAOptions{Now: func() time.Time { return now }, Rand: bytes.NewReader(serial)}); err != nil {
		t.Fatal(err)
	}
	crt, key := CAFiles(dir)
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("dir: %v, %v", fi, err)
	}
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("ca.key mode: %v, %v", fi, err)
	}
	ca, err := ReadCertificateFile(crt)
	if err != nil {
		t.Fatal(err)
	}
	if !ca.IsCA || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Fatalf("not a CA: IsCA=%v usage=%v", ca.IsCA, ca.KeyUsage)
	}
	if pub, ok := ca.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Fatalf("CA key %T, want ECDSA P-256", ca.PublicKey)
	}
	if ca.SerialNumber.Cmp(new(big.Int).SetBytes(serial)) != 0 {
		t.Fatalf("serial %x, want the 128 bits read from Rand", ca.SerialNumber)
	}
	if !ca.NotAfter.Equal(now.Add(DefaultCAValidity)) || ca.NotBefore.After(now) {
		t.Fatalf("validity %v .. %v, want from before %v for 10 years", ca.NotBefore, ca.NotAfter, now)
	}
	if err := ca.CheckSignatureFrom(ca); err != nil {
		t.Fatalf("not self-signed: %v", err)
	}

	before, _ := os.ReadFile(crt)
	err = CreateCA(dir, CAOptions{})
	if err == nil || !strings.Contains(err.Error(), "already exists") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("second CreateCA: %v", err)
	}
	if after, _ := os.ReadFile(crt); !bytes.Equal(before, after) {
		t.Fatal("a refused CreateCA changed ca.crt")
	}
	if err := CreateCA(dir, CAOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(crt); bytes.Equal(before, after) {
		t.Fatal("Force did not replace the CA")
	}
	if fi, _ := os.Stat(key); fi.Mode().Perm() != 0o600 {
		t.Fatalf("ca.key mode after Force: %v", fi.Mode().Perm())
	}
}

func TestCreateNodeAndClient(t *testing.T) {
	dir := newCA(t, nil, nil)
	caCert, _ := ReadCertificateFile(filepath.Join(dir, "ca.crt"))
	roots := x509.NewCertPool()
	roots.AddCert(caCert)

	if err := CreateNode(dir, "n1", nil, CertOptions{}); err != nil {
		t.Fatal(err)
	}
	crt, key := NodeFiles(dir, "n1")
	if filepath.Base(crt) != "node.n1.crt" || filepath.Base(key) != "node.n1.key" {
		t.Fatalf("node files %s %s", crt, key)
	}
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("node key mode: %v, %v", fi, err)
	}
	n1, err := ReadCertificateFile(crt)
	if err != nil {
		t.Fatal(err)
	}
	if id, ok := NodeID(n1); !ok || id != "n1" || n1.Subject.CommonName != "n1" {
		t.Fatalf("NodeID = %q, %v; CN %q", id, ok, n1.Subject.CommonName)
	}
	if _, ok := ClientName(n1); ok {
		t.Fatal("a node certificate has a client name")
	}
	if len(n1.URIs) != 1 || n1.URIs[0].String() != "meridian://node/n1" {
		t.Fatalf("URIs %v", n1.URIs)
	}
	if fmt.Sprint(n1.DNSNames) != "[localhost]" || len(n1.IPAddresses) != 2 ||
		!n1.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) || !n1.IPAddresses[1].Equal(net.ParseIP("::1")) {
		t.Fatalf("default SANs %v %v", n1.DNSNames, n1.IPAddresses)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := n1.Verify(x509.VerifyOptions{Roots: roots, DNSName: "127.0.0.1", KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Fatalf("node certificate for usage %v: %v", usage, err)
		}
	}
	if d := time.Until(n1.NotAfter); d < DefaultCertValidity-time.Hour || d > DefaultCertValidity {
		t.Fatalf("node certificate valid for %v more, want about a year", d)
	}
	if n1.IsCA {
		t.Fatal("a node certificate is a CA")
	}

	if err := CreateNode(dir, "n2", []string{"db2.example.com", "10.0.0.2", "[fd00::2]"}, CertOptions{}); err != nil {
		t.Fatal(err)
	}
	c, _ := NodeFiles(dir, "n2")
	n2, _ := ReadCertificateFile(c)
	if fmt.Sprint(n2.DNSNames) != "[db2.example.com]" || len(n2.IPAddresses) != 2 || !n2.IPAddresses[1].Equal(net.ParseIP("fd00::2")) {
		t.Fatalf("SANs %v %v", n2.DNSNames, n2.IPAddresses)
	}
	if n1.SerialNumber.Cmp(n2.SerialNumber) == 0 {
		t.Fatal("two certificates with the same serial")
	}
	if err := CreateNode(dir, "n3", []string{"http://x"}, CertOptions{}); err == nil {
		t.Fatal("a URL accepted as a host")
	}

	if err := CreateClient(dir, "alice", CertOptions{}); err != nil {
		t.Fatal(err)
	}
	crt, key = ClientFiles(dir, "alice")
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("client key mode: %v, %v", fi, err)
	}
	alice, err := ReadCertificateFile(crt)
	if err != nil {
		t.Fatal(err)
	}
	if name, ok := ClientName(alice); !ok || name != "alice" || alice.Subject.CommonName != "alice" {
		t.Fatalf("ClientName = %q, %v", name, ok)
	}
	if _, ok := NodeID(alice); ok {
		t.Fatal("a client certificate has a node ID")
	}
	if len(alice.DNSNames)+len(alice.IPAddresses) != 0 || len(alice.URIs) != 1 {
		t.Fatalf("client SANs %v %v %v", alice.DNSNames, alice.IPAddresses, alice.URIs)
	}
	if _, err := alice.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Fatal("a client certificate is good for server auth")
	}

	if err := CreateClient(dir, "alice", CertOptions{}); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("second CreateClient: %v", err)
	}
	if err := CreateClient(dir, "alice", CertOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if err := CreateNode(t.TempDir(), "n1", nil, CertOptions{}); err == nil || !strings.Contains(err.Error(), "create-ca") {
		t.Fatalf("CreateNode without a CA: %v", err)
	}
}

func TestNamesAndIdentities(t *testing.T) {
	dir := newCA(t, nil, nil)
	odd := "n:1?x%20é"
	if err := CreateNode(dir, odd, nil, CertOptions{}); err != nil {
		t.Fatal(err)
	}
	c, _ := NodeFiles(dir, odd)
	cert, err := ReadCertificateFile(c)
	if err != nil {
		t.Fatal(err)
	}
	if id, ok := NodeID(cert); !ok || id != odd {
		t.Fatalf("NodeID round trip: %q, %v; want %q", id, ok, odd)
	}
	for _, bad := range []string{"", "a/b", `a\b`, "a b", "..", ".", "a,b", "a=b", "x\n", strings.Repeat("x", 65)} {
		if err := CreateNode(dir, bad, nil, CertOptions{}); err == nil {
			t.Errorf("node id %q accepted", bad)
		}
		if err := CreateClient(dir, bad, CertOptions{}); err == nil {
			t.Errorf("client name %q accepted", bad)
		}
	}
	u := func(s string) *url.URL {
		p, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		uris       []string
		node, user string
	}{
		{[]string{"meridian://node/n1"}, "n1", ""},
		{[]string{"meridian://client/bob"}, "", "bob"},
		{[]string{"spiffe://example.org/x", "meridian://node/n1"}, "n1", ""},
		{[]string{"meridian://node/n1", "meridian://client/n1"}, "", ""}, // ambiguous
		{[]string{"meridian://node/n1", "meridian://node/n2"}, "", ""},   // ambiguous
		{[]string{"meridian://node/a/b"}, "", ""},
		{[]string{"meridian://node/"}, "", ""},
		{[]string{"meridian://node/n1?x=1"}, "", ""},
		{[]string{"meridian://admin/n1"}, "", ""},
		{[]string{"https://node/n1"}, "", ""},
		{nil, "", ""},
	} {
		cert := &x509.Certificate{}
		cert.Subject.CommonName = "n1" // the CN never grants an identity
		for _, s := range tc.uris {
			cert.URIs = append(cert.URIs, u(s))
		}
		id, isNode := NodeID(cert)
		name, isClient := ClientName(cert)
		if isNode != (tc.node != "") || id != tc.node || isClient != (tc.user != "") || name != tc.user {
			t.Errorf("%v: NodeID %q,%v ClientName %q,%v; want node %q client %q", tc.uris, id, isNode, name, isClient, tc.node, tc.user)
		}
	}
	if _, ok := NodeID(nil); ok {
		t.Error("NodeID(nil)")
	}
}

func TestCertificateNeverOutlivesCA(t *testing.T) {
	dir := t.TempDir()
	if err := CreateCA(dir, CAOptions{Validity: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if err := CreateNode(dir, "n1", nil, CertOptions{}); err != nil {
		t.Fatal(err)
	}
	ca, _ := ReadCertificateFile(filepath.Join(dir, "ca.crt"))
	c, _ := NodeFiles(dir, "n1")
	n1, _ := ReadCertificateFile(c)
	if !n1.NotAfter.Equal(ca.NotAfter) {
		t.Fatalf("node certificate expires %v, its CA %v", n1.NotAfter, ca.NotAfter)
	}
	later := time.Now().Add(2 * time.Hour)
	if err := CreateClient(dir, "late", CertOptions{Now: func() time.Time { return later }}); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("signing with an expired CA: %v", err)
	}
}

// ---- TLS ----------------------------------------------------------------------

func TestPeerListenerMutualTLS(t *testing.T) {
	dir := newCA(t, []string{"n1", "n2", "n9"}, []string{"alice"})
	srv := serve(t, nodeSource(t, dir, "n1", SourceOptions{}).ServerConfig(ServerOptions{
		RequireClientCert: true,
		Authorize:         members("n1", "n2"),
	}))

	mustAccept(t, srv.addr, nodeSource(t, dir, "n2", SourceOptions{}).ClientConfig("127.0.0.1"), "node:n2")

	// A client certificate from the same CA is not a node certificate.
	mustRefuse(t, srv.addr, clientSource(t, dir, "alice", SourceOptions{}).ClientConfig("127.0.0.1"))
	if err := srv.lastServerErr(t); !strings.Contains(err.Error(), "not a node certificate") {
		t.Fatalf("server error: %v", err)
	}
	// A node certificate whose ID is not in the topology.
	mustRefuse(t, srv.addr, nodeSource(t, dir, "n9", SourceOptions{}).ClientConfig("127.0.0.1"))
	if err := srv.lastServerErr(t); !strings.Contains(err.Error(), `"n9" is not a member`) {
		t.Fatalf("server error: %v", err)
	}
	// No certificate at all.
	mustRefuse(t, srv.addr, caOnlySource(t, dir, SourceOptions{}).ClientConfig("127.0.0.1"))
	if err := srv.lastServerErr(t); !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("server error: %v", err)
	}
}

func TestPlaintextRefused(t *testing.T) {
	dir := newCA(t, []string{"n1"}, nil)
	srv := serve(t, nodeSource(t, dir, "n1", SourceOptions{}).ServerConfig(ServerOptions{}))
	conn, err := net.DialTimeout("tcp", srv.addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	reply, _ := bufio.NewReader(conn).ReadString('\n')
	if strings.Contains(reply, "ok") {
		t.Fatalf("plaintext got an answer: %q", reply)
	}
	if err := srv.lastServerErr(t); err == nil {
		t.Fatal("no handshake error for plaintext")
	}
}

func TestOtherCARefused(t *testing.T) {
	dirA := newCA(t, []string{"n1", "n2"}, nil)
	dirB := newCA(t, []string{"n1", "n2"}, nil)
	srvA := serve(t, nodeSource(t, dirA, "n1", SourceOptions{}).ServerConfig(ServerOptions{RequireClientCert: true, Authorize: members("n1", "n2")}))

	// The client's certificate is from B; it would trust A's server.
	crt, key := NodeFiles(dirB, "n2")
	mixed := mustLoadPair(t, crt, key)
	cfg := caOnlySource(t, dirA, SourceOptions{}).ClientConfig("127.0.0.1")
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &mixed, nil }
	mustRefuse(t, srvA.addr, cfg)
	if err := srvA.lastServerErr(t); !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("server error: %v", err)
	}

	// A client of B refuses A's server.
	err := mustRefuse(t, srvA.addr, nodeSource(t, dirB, "n2", SourceOptions{}).ClientConfig("127.0.0.1"))
	if !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("client error: %v", err)
	}

	// NewSource refuses a certificate that its CA file did not sign.
	caB, _ := CAFiles(dirB)
	crtA, keyA := NodeFiles(dirA, "n1")
	if _, err := NewSource(caB, crtA, keyA, SourceOptions{}); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("NewSource with another CA's certificate: %v", err)
	}
}

func mustLoadPair(t *testing.T, crt, key string) tls.Certificate {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(crt, key)
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

func TestExpiredRefused(t *testing.T) {
	dir := t.TempDir()
	if err := CreateCA(dir, CAOptions{Now: func() time.Time { return time.Now().Add(-72 * time.Hour) }}); err != nil {
		t.Fatal(err)
	}
	if err := CreateNode(dir, "n1", nil, CertOptions{Now: func() time.Time { return time.Now().Add(-72 * time.Hour) }}); err != nil {
		t.Fatal(err)
	}
	twoDaysAgo := func() time.Time { return time.Now().Add(-48 * time.Hour) }
	if err := CreateNode(dir, "old", nil, CertOptions{Now: twoDaysAgo, Validity: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if err := CreateClient(dir, "old", CertOptions{Now: twoDaysAgo, Validity: time.Hour}); err != nil {
		t.Fatal(err)
	}
	c, _ := NodeFiles(dir, "old")
	if cert, _ := ReadCertificateFile(c); !cert.NotAfter.Before(time.Now()) {
		t.Fatalf("certificate not expired: %v", cert.NotAfter)
	}
	ca, _ := CAFiles(dir)
	crt, key := NodeFiles(dir, "old")
	if _, err := NewSource(ca, crt, key, SourceOptions{}); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("NewSource with an expired certificate: %v", err)
	}

	srv := serve(t, nodeSource(t, dir, "n1", SourceOptions{}).ServerConfig(ServerOptions{RequireClientCert: true}))
	// A client whose own clock is two days behind still offers its
	// expired certificate; the server refuses it.
	inThePast := func() time.Time { return time.Now().Add(-47*time.Hour - 30*time.Minute) }
	for _, src := range []*Source{
		nodeSource(t, dir, "old", SourceOptions{Now: inThePast}),
		clientSource(t, dir, "old", SourceOptions{Now: inThePast}),
	} {
		mustRefuse(t, srv.addr, src.ClientConfig("127.0.0.1"))
		if err := srv.lastServerErr(t); !strings.Contains(err.Error(), "expired") {
			t.Fatalf("server error: %v", err)
		}
	}

	// A client two years ahead sees the server's certificate expired.
	inTwoYears := func() time.Time { return time.Now().Add(2 * 365 * 24 * time.Hour) }
	err := mustRefuse(t, srv.addr, caOnlySource(t, dir, SourceOptions{Now: inTwoYears}).ClientConfig("127.0.0.1"))
	if !strings.Contains(err.Error(), "expired") {
		t.Fatalf("client error: %v", err)
	}
}

func TestClientListenerOptionalCertificate(t *testing.T) {
	dir := newCA(t, []string{"n1"}, []string{"alice"})
	other := newCA(t, nil, []string{"mallory"})
	srv := serve(t, nodeSource(t, dir, "n1", SourceOptions{}).ServerConfig(ServerOptions{}))

	mustAccept(t, srv.addr, caOnlySource(t, dir, SourceOptions{}).ClientConfig("127.0.0.1"), "none")
	mustAccept(t, srv.addr, clientSource(t, dir, "alice", SourceOptions{}).ClientConfig("127.0.0.1"), "client:alice")

	// A certificate presented is verified even where none is required.
	crt, key := ClientFiles(other, "mallory")
	mallory := mustLoadPair(t, crt, key)
	cfg := caOnlySource(t, dir, SourceOptions{}).ClientConfig("127.0.0.1")
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &mallory, nil }
	mustRefuse(t, srv.addr, cfg)
	if err := srv.lastServerErr(t); !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("server error: %v", err)
	}
}

func TestClientVerifiesServer(t *testing.T) {
	dir := newCA(t, []string{"n1"}, []string{"alice"})
	srv := serve(t, nodeSource(t, dir, "n1", SourceOptions{}).ServerConfig(ServerOptions{}))
	src := caOnlySource(t, dir, SourceOptions{})

	mustAccept(t, srv.addr, src.ClientConfig("localhost"), "none")
	mustAccept(t, srv.addr, src.ClientConfigWith(ClientOptions{ServerName: "127.0.0.1", Authorize: members("n1")}), "none")

	err := mustRefuse(t, srv.addr, src.ClientConfig("db.example.com"))
	if !strings.Contains(err.Error(), "db.example.com") {
		t.Fatalf("wrong name: %v", err)
	}
	err = mustRefuse(t, srv.addr, src.ClientConfigWith(ClientOptions{ServerName: "127.0.0.1", Authorize: members("n3")}))
	if !strings.Contains(err.Error(), "not authorized") {
		t.Fatalf("wrong node: %v", err)
	}

	// A client certificate cannot serve: it is not good for server auth.
	ca, _ := CAFiles(dir)
	crt, key := ClientFiles(dir, "alice")
	aliceSrc, err := NewSource(ca, crt, key, SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bad := serve(t, aliceSrc.ServerConfig(ServerOptions{}))
	mustRefuse(t, bad.addr, src.ClientConfig("localhost"))

	// Nor can a certificate with the right name and the client usage only.
	crt, key = filepath.Join(dir, "clientonly.crt"), filepath.Join(dir, "clientonly.key")
	if err := createLeaf(dir, crt, key, CertOptions{}, leafSpec{
		commonName: "n1", uri: nodeURI("n1"), dnsNames: []string{"localhost"},
		extUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		t.Fatal(err)
	}
	clientOnly, err := NewSource(ca, crt, key, SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bad = serve(t, clientOnly.ServerConfig(ServerOptions{}))
	err = mustRefuse(t, bad.addr, src.ClientConfig("localhost"))
	if !strings.Contains(err.Error(), "usage") {
		t.Fatalf("client-auth-only certificate as server: %v", err)
	}
}

// ---- reloading -----------------------------------------------------------------

// serving copies node n1's files and the CA from dir into a fresh
// directory, the one a node would read.
func serving(t *testing.T, dir string) (ca, crt, key string) {
	t.Helper()
	live := t.TempDir()
	ca, _ = CAFiles(live)
	crt, key = NodeFiles(live, "n1")
	srcCA, _ := CAFiles(dir)
	srcCrt, srcKey := NodeFiles(dir, "n1")
	copyFile(t, srcCA, ca)
	copyFile(t, srcCrt, crt)
	copyFile(t, srcKey, key)
	return ca, crt, key
}

func TestRotationWithoutRestart(t *testing.T) {
	oldDir := newCA(t, []string{"n1", "n2"}, nil)
	newDir := newCA(t, []string{"n1", "n2"}, nil)
	ca, crt, key := serving(t, oldDir)
	reloads := make(chan *x509.Certificate, 10)
	src, err := NewSource(ca, crt, key, SourceOptions{
		CheckInterval: time.Millisecond,
		OnReload:      func(c *x509.Certificate) { reloads <- c },
		OnError:       func(error) {}, // files are replaced one by one below
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, src.ServerConfig(ServerOptions{RequireClientCert: true, Authorize: members("n1", "n2")}))
	oldClient := nodeSource(t, oldDir, "n2", SourceOptions{}).ClientConfig("127.0.0.1")
	newClient := nodeSource(t, newDir, "n2", SourceOptions{}).ClientConfig("127.0.0.1")
	mustAccept(t, srv.addr, oldClient, "node:n2")
	mustRefuse(t, srv.addr, newClient)

	newCrt, newKey := NodeFiles(newDir, "n1")
	newCA, _ := CAFiles(newDir)
	copyFile(t, newKey, key) // in place, one file after the other
	copyFile(t, newCrt, crt)
	copyFile(t, newCA, ca)

	eventually(t, "a client trusting only the new CA connects", func() error {
		got, err := dial(srv.addr, newClient)
		if err == nil && got != "ok node:n2" {
			err = fmt.Errorf("answer %q", got)
		}
		return err
	})
	want, _ := ReadCertificateFile(newCrt)
	if !src.Leaf().Equal(want) {
		t.Fatal("Leaf is not the new certificate")
	}
	select {
	case c := <-reloads:
		if c == nil {
			t.Fatal("OnReload without a certificate")
		}
	default:
		t.Fatal("OnReload was not called")
	}
	// The server now trusts only the new CA.
	mustRefuse(t, srv.addr, oldClient)
}

func TestReloadWaitsForCheckInterval(t *testing.T) {
	oldDir := newCA(t, []string{"n1"}, nil)
	newDir := newCA(t, []string{"n1"}, nil)
	ca, crt, key := serving(t, oldDir)
	clk := &fakeClock{t: time.Now()}
	src, err := NewSource(ca, crt, key, SourceOptions{CheckInterval: time.Minute, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, src.ServerConfig(ServerOptions{}))
	newClient := caOnlySource(t, newDir, SourceOptions{}).ClientConfig("127.0.0.1")

	newCrt, newKey := NodeFiles(newDir, "n1")
	newCA, _ := CAFiles(newDir)
	copyFile(t, newKey, key)
	copyFile(t, newCrt, crt)
	copyFile(t, newCA, ca)
	mustRefuse(t, srv.addr, newClient) // the files are not looked at yet
	clk.Add(59 * time.Second)
	mustRefuse(t, srv.addr, newClient)
	clk.Add(2 * time.Second)
	mustAccept(t, srv.addr, newClient, "none")
}

func TestBrokenFilesKeepLastGoodMaterial(t *testing.T) {
	dir := newCA(t, []string{"n1", "n2"}, nil)
	ca, crt, key := serving(t, dir)
	errs := make(chan error, 100)
	src, err := NewSource(ca, crt, key, SourceOptions{
		CheckInterval: time.Millisecond,
		OnError:       func(err error) { errs <- err },
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, src.ServerConfig(ServerOptions{RequireClientCert: true, Authorize: members("n1", "n2")}))
	client := nodeSource(t, dir, "n2", SourceOptions{}).ClientConfig("127.0.0.1")
	mustAccept(t, srv.addr, client, "node:n2")

	if err := os.WriteFile(crt, []byte("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var reported error
	eventually(t, "the broken file is reported", func() error {
		mustAccept(t, srv.addr, client, "node:n2") // the old material keeps working
		select {
		case reported = <-errs:
			return nil
		default:
			return errors.New("no OnError yet")
		}
	})
	if !strings.Contains(reported.Error(), crt) {
		t.Fatalf("error does not name the file: %v", reported)
	}
	for range 3 {
		mustAccept(t, srv.addr, client, "node:n2")
	}
	if len(errs) != 0 {
		t.Fatalf("the same broken file was reported %d more times", len(errs))
	}
	if err := src.Reload(); err == nil {
		t.Fatal("Reload of a broken file succeeded")
	}
	<-errs

	// A missing CA file and a key that does not match are no better.
	otherKey := filepath.Join(t.TempDir(), "k")
	if err := CreateClient(dir, "x", CertOptions{}); err != nil {
		t.Fatal(err)
	}
	_, xKey := ClientFiles(dir, "x")
	copyFile(t, xKey, otherKey)
	srcCrt, _ := NodeFiles(dir, "n1")
	copyFile(t, srcCrt, crt)
	copyFile(t, otherKey, key)
	if err := src.Reload(); err == nil {
		t.Fatal("Reload with a key not matching the certificate succeeded")
	}
	os.Remove(ca)
	if err := src.Reload(); err == nil {
		t.Fatal("Reload without a CA file succeeded")
	}
	mustAccept(t, srv.addr, client, "node:n2")
}

// ---- gRPC -------------------------------------------------------------------

func TestGRPC(t *testing.T) {
	dir := newCA(t, []string{"n1", "n2"}, []string{"alice"})
	seen := make(chan string, 10)
	srv := grpc.NewServer(
		grpc.Creds(ServerCredentials(nodeSource(t, dir, "n1", SourceOptions{}).ServerConfig(ServerOptions{}))),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			who := "none"
			if c, ok := PeerCertificate(ctx); ok {
				if id, ok := NodeID(c); ok {
					who = "node:" + id
				} else if name, ok := ClientName(c); ok {
					who = "client:" + name
				}
			}
			seen <- who
			return h(ctx, req)
		}),
	)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Stop(); <-done })

	check := func(creds grpc.DialOption) error {
		conn, err := grpc.NewClient(ln.Addr().String(), creds)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		if err == nil && resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health %v", resp.Status)
		}
		return err
	}
	for _, tc := range []struct {
		src  *Source
		want string
	}{
		{nodeSource(t, dir, "n2", SourceOptions{}), "node:n2"},
		{clientSource(t, dir, "alice", SourceOptions{}), "client:alice"},
		{caOnlySource(t, dir, SourceOptions{}), "none"},
	} {
		if err := check(grpc.WithTransportCredentials(ClientCredentials(tc.src, ClientOptions{}))); err != nil {
			t.Fatalf("%s: %v", tc.want, err)
		}
		if got := <-seen; got != tc.want {
			t.Fatalf("PeerCertificate saw %q, want %q", got, tc.want)
		}
	}
	err = check(grpc.WithTransportCredentials(insecure.NewCredentials()))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("plaintext client: %v", err)
	}
	if len(seen) != 0 {
		t.Fatal("a plaintext call reached the handler")
	}
	if _, ok := PeerCertificate(context.Background()); ok {
		t.Fatal("PeerCertificate outside gRPC")
	}
}

// TestReloadCheckedLikeTheFirstLoad: a Source's Check vets every
// certificate it loads: another node's pair copied over this node's files
// is refused at reload, reported, and the last good one stays in use.
func TestReloadCheckedLikeTheFirstLoad(t *testing.T) {
	dir := t.TempDir()
	if err := CreateCA(dir, CAOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"n1", "n2"} {
		if err := CreateNode(dir, id, nil, CertOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ca, _ := CAFiles(dir)
	crt, key := NodeFiles(dir, "n1")
	var reported []error
	own := func(leaf *x509.Certificate) error {
		if id, ok := NodeID(leaf); !ok || id != "n1" {
			return fmt.Errorf("certificate for %q, not n1", id)
		}
		return nil
	}
	src, err := NewSource(ca, crt, key, SourceOptions{Check: own, OnError: func(err error) { reported = append(reported, err) }})
	if err != nil {
		t.Fatal(err)
	}
	crt2, key2 := NodeFiles(dir, "n2")
	for from, to := range map[string]string{crt2: crt, key2: key} {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := src.Reload(); err == nil || !strings.Contains(err.Error(), `"n2", not n1`) {
		t.Fatalf("reload of n2's pair: %v, want refused", err)
	}
	if id, _ := NodeID(src.Leaf()); id != "n1" {
		t.Fatalf("in use after the refused reload: %q, want n1's", id)
	}
	if len(reported) != 1 {
		t.Fatalf("reported %v, want the refusal", reported)
	}
	if _, err := NewSource(ca, crt, key, SourceOptions{Check: own}); err == nil {
		t.Fatal("a first load of n2's pair passed n1's check")
	}
}

// TestNotYetValidCertificateLoadedOnceValid: a certificate issued a
// little ahead of this node's clock is refused at first (reported once)
// and taken at a later check once it is valid, without the files
// changing again.
func TestNotYetValidCertificateLoadedOnceValid(t *testing.T) {
	dir := t.TempDir()
	if err := CreateCA(dir, CAOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := CreateNode(dir, "n1", nil, CertOptions{}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	var reported int
	ca, _ := CAFiles(dir)
	crt, key := NodeFiles(dir, "n1")
	src, err := NewSource(ca, crt, key, SourceOptions{Now: clock, CheckInterval: time.Second, OnError: func(error) { reported++ }})
	if err != nil {
		t.Fatal(err)
	}
	first := src.Leaf().SerialNumber
	ahead := time.Now().Add(time.Hour) // valid from 55 minutes on (back-dated 5)
	if err := CreateNode(dir, "n1", nil, CertOptions{Force: true, Now: func() time.Time { return ahead }}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		mu.Lock()
		now = now.Add(2 * time.Second)
		mu.Unlock()
		src.current()
	}
	if src.Leaf().SerialNumber.Cmp(first) != 0 || reported != 1 {
		t.Fatalf("before it is valid: serial changed %v, reported %d times; want the old one kept, reported once", src.Leaf().SerialNumber.Cmp(first) != 0, reported)
	}
	mu.Lock()
	now = ahead
	mu.Unlock()
	src.current()
	if src.Leaf().SerialNumber.Cmp(first) == 0 {
		t.Fatal("the certificate was not taken once valid")
	}
}

// TestWriteFileAtomicKeepsTheOwner: a file replaced by a privileged
// process (root rotating a service user's secret) keeps its owner, so
// the service can still read it; otherwise the new file is the writer's.
func TestWriteFileAtomicKeepsTheOwner(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte("old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	want := os.Getuid()
	if os.Getuid() == 0 {
		want = 65534 // nobody
		if err := os.Chown(path, want, want); err != nil {
			t.Fatal(err)
		}
	}
	if err := WriteFileAtomic(path, []byte("new\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if uid, _, ok := fileOwner(fi); ok && uid != want {
		t.Fatalf("replaced file owned by %d, want %d", uid, want)
	}
	if b, _ := os.ReadFile(path); string(b) != "new\n" || fi.Mode().Perm() != 0o600 {
		t.Fatalf("content %q, mode %v", b, fi.Mode().Perm())
	}
}
