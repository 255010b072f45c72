package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meridiankv/meridian/pki"
)

// TestCertsCreate: `certs create-ca`, `create-node` and `create-client`
// write certificates that parse, chain to the CA and carry the right
// identity, say what to do next, and refuse to overwrite without --force.
func TestCertsCreate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	run := func(args ...string) (string, error) {
		root := newRoot()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(args)
		err := root.Execute()
		return out.String(), err
	}
	if _, err := run("certs", "create-node", "n1", "--dir", dir); err == nil || !strings.Contains(err.Error(), "create-ca") {
		t.Fatalf("create-node before create-ca: %v", err)
	}
	out, err := run("certs", "create-ca", "--dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	caFile, caKey := pki.CAFiles(dir)
	if !strings.Contains(out, "wrote "+caFile) || !strings.Contains(out, "wrote "+caKey) || !strings.Contains(out, "next: meridian certs create-node") {
		t.Fatalf("create-ca output:\n%s", out)
	}
	if _, err := run("certs", "create-ca", "--dir", dir); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("second create-ca: %v", err)
	}

	out, err = run("certs", "create-node", "n1", "--dir", dir, "--host", "db1.example.com", "--host", "10.0.0.1,localhost")
	if err != nil {
		t.Fatal(err)
	}
	crt, key := pki.NodeFiles(dir, "n1")
	if want := "--ca " + caFile + " --cert " + crt + " --key " + key; !strings.Contains(out, want) {
		t.Fatalf("create-node output does not say %q:\n%s", want, out)
	}
	if _, err := tls.LoadX509KeyPair(crt, key); err != nil {
		t.Fatal(err)
	}
	node, err := pki.ReadCertificateFile(crt)
	if err != nil {
		t.Fatal(err)
	}
	if id, ok := pki.NodeID(node); !ok || id != "n1" {
		t.Fatalf("NodeID %q, %v", id, ok)
	}
	if strings.Join(node.DNSNames, ",") != "db1.example.com,localhost" || len(node.IPAddresses) != 1 || !node.IPAddresses[0].Equal(net.ParseIP("10.0.0.1")) {
		t.Fatalf("hosts %v %v", node.DNSNames, node.IPAddresses)
	}
	ca, err := pki.ReadCertificateFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := node.Verify(x509.VerifyOptions{Roots: roots, DNSName: "db1.example.com"}); err != nil {
		t.Fatal(err)
	}

	out, err = run("certs", "create-client", "alice", "--dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	crt, key = pki.ClientFiles(dir, "alice")
	if !strings.Contains(out, "wrote "+crt) || !strings.Contains(out, "--cert "+crt) {
		t.Fatalf("create-client output:\n%s", out)
	}
	if _, err := tls.LoadX509KeyPair(crt, key); err != nil {
		t.Fatal(err)
	}
	client, err := pki.ReadCertificateFile(crt)
	if err != nil {
		t.Fatal(err)
	}
	if name, ok := pki.ClientName(client); !ok || name != "alice" {
		t.Fatalf("ClientName %q, %v", name, ok)
	}
	if _, err := client.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{caKey, key} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, %v; want mode 0600", f, fi, err)
		}
	}
	if _, err := run("certs", "create-client", "alice", "--dir", dir); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("second create-client: %v", err)
	}
	if _, err := run("certs", "create-client", "alice", "--dir", dir, "--force"); err != nil {
		t.Fatalf("create-client --force: %v", err)
	}
}
