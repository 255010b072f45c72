package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode"
)

// Default validity periods and the back-dating of NotBefore that absorbs
// clock skew between the machine creating a certificate and its peers.
const (
	DefaultCAValidity   = 10 * 365 * 24 * time.Hour
	DefaultCertValidity = 365 * 24 * time.Hour
	clockSkew           = 5 * time.Minute
)

// URI SAN scheme: a node certificate carries meridian://node/<id>, a client
// certificate meridian://client/<name>.
const (
	uriScheme  = "meridian"
	nodeHost   = "node"
	clientHost = "client"
)

// DefaultHosts returns the DNS and IP SANs a node certificate gets when
// CreateNode is called without hosts: enough for a cluster on one machine.
func DefaultHosts() []string { return []string{"localhost", "127.0.0.1", "::1"} }

// CAOptions tune CreateCA. The zero value is a usable default.
type CAOptions struct {
	// Force replaces existing ca.crt/ca.key. Every certificate signed by
	// the old CA stops being trusted by anything that loads the new ca.crt.
	Force bool
	// Validity of the CA certificate; 0 means DefaultCAValidity (10 years).
	Validity time.Duration
	// CommonName of the CA; empty means "Meridian CA".
	CommonName string
	// Now is the clock the validity starts from; nil means time.Now.
	Now func() time.Time
	// Rand is the source of serial numbers; nil means crypto/rand.Reader.
	// (Key generation always uses the system's secure randomness.)
	Rand io.Reader
}

// CertOptions tune CreateNode and CreateClient. The zero value is a usable
// default.
type CertOptions struct {
	// Force replaces an existing certificate and key of the same name.
	Force bool
	// Validity of the certificate; 0 means DefaultCertValidity (1 year).
	// It never extends past the CA's own expiry.
	Validity time.Duration
	// Now is the clock the validity starts from; nil means time.Now.
	Now func() time.Time
	// Rand is the source of serial numbers; nil means crypto/rand.Reader.
	Rand io.Reader
}

// CAFiles returns the paths of the CA certificate and key in dir.
func CAFiles(dir string) (certFile, keyFile string) {
	return filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
}

// NodeFiles returns the paths of node id's certificate and key in dir.
func NodeFiles(dir, id string) (certFile, keyFile string) {
	return filepath.Join(dir, "node."+id+".crt"), filepath.Join(dir, "node."+id+".key")
}

// ClientFiles returns the paths of client name's certificate and key in dir.
func ClientFiles(dir, name string) (certFile, keyFile string) {
	return filepath.Join(dir, "client."+name+".crt"), filepath.Join(dir, "client."+name+".key")
}

// CreateCA writes a new self-signed ECDSA P-256 CA to dir/ca.crt and
// dir/ca.key (mode 0600), creating dir (mode 0700) if needed. It refuses to
// replace an existing CA unless opts.Force.
func CreateCA(dir string, opts CAOptions) error {
	certFile, keyFile := CAFiles(dir)
	if !opts.Force {
		if err := refuseExisting("every certificate the old CA signed would stop being trusted", certFile, keyFile); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	now := clock(opts.Now)()
	validity := opts.Validity
	if validity <= 0 {
		validity = DefaultCAValidity
	}
	name := opts.CommonName
	if name == "" {
		name = "Meridian CA"
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := serialNumber(opts.Rand)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Meridian"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return fmt.Errorf("sign CA certificate: %w", err)
	}
	return writePair(certFile, keyFile, der, key)
}

// CreateNode writes dir/node.<id>.crt and dir/node.<id>.key for node id,
// signed by the CA in dir. The certificate is good for both TLS server and
// client authentication (a node serves and dials its peers); its SANs are
// hosts (DNS names or IP addresses; DefaultHosts if empty) and the URI
// meridian://node/<id>; its CommonName is id.
func CreateNode(dir, id string, hosts []string, opts CertOptions) error {
	if err := ValidateName(id); err != nil {
		return fmt.Errorf("node id: %w", err)
	}
	if len(hosts) == 0 {
		hosts = DefaultHosts()
	}
	var dnsNames []string
	var ips []net.IP
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		if ip := net.ParseIP(strings.Trim(h, "[]")); ip != nil {
			ips = append(ips, ip)
			continue
		}
		if strings.ContainsAny(h, " /:@") {
			return fmt.Errorf("host %q: want a DNS name or an IP address", h)
		}
		dnsNames = append(dnsNames, h)
	}
	certFile, keyFile := NodeFiles(dir, id)
	return createLeaf(dir, certFile, keyFile, opts, leafSpec{
		commonName: id,
		uri:        nodeURI(id),
		dnsNames:   dnsNames,
		ips:        ips,
		extUsage:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	})
}

// CreateClient writes dir/client.<name>.crt and dir/client.<name>.key for
// a client, signed by the CA in dir. The certificate is good for TLS client
// authentication only; its one SAN is the URI meridian://client/<name> and
// its CommonName is name.
func CreateClient(dir, name string, opts CertOptions) error {
	if err := ValidateName(name); err != nil {
		return fmt.Errorf("client name: %w", err)
	}
	certFile, keyFile := ClientFiles(dir, name)
	return createLeaf(dir, certFile, keyFile, opts, leafSpec{
		commonName: name,
		uri:        clientURI(name),
		extUsage:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
}

// ValidateName checks a node ID or client name: 1 to 64 printable
// characters, no spaces and none of # ~ , = / \ (the node ID rules, plus
// what a file name cannot hold).
func ValidateName(name string) error {
	if name == "" {
		return errors.New("empty")
	}
	if len(name) > 64 {
		return fmt.Errorf("%q is longer than 64 characters", name)
	}
	for _, r := range name {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) || strings.ContainsRune(`#~,=/\`, r) {
			return fmt.Errorf("%q: use printable characters without spaces, '#', '~', ',', '=', '/' or '\\'", name)
		}
	}
	if name == "." || name == ".." {
		return fmt.Errorf("%q is not a name", name)
	}
	return nil
}

// NodeID returns the node ID of a node certificate: the <id> of its one
// meridian://node/<id> URI SAN. It reports false for client certificates,
// for certificates without a Meridian URI, and for certificates carrying
// more than one Meridian URI (which CreateNode never makes).
func NodeID(cert *x509.Certificate) (string, bool) {
	return identity(cert, nodeHost)
}

// ClientName returns the name of a client certificate: the <name> of its one
// meridian://client/<name> URI SAN. It reports false for node certificates
// and anything ambiguous, as NodeID does.
func ClientName(cert *x509.Certificate) (string, bool) {
	return identity(cert, clientHost)
}

func identity(cert *x509.Certificate, kind string) (string, bool) {
	if cert == nil {
		return "", false
	}
	var found *url.URL
	for _, u := range cert.URIs {
		if u == nil || !strings.EqualFold(u.Scheme, uriScheme) {
			continue
		}
		if found != nil {
			return "", false // two Meridian identities: trust neither
		}
		found = u
	}
	if found == nil || found.Host != kind || found.User != nil || found.RawQuery != "" || found.Fragment != "" || found.Opaque != "" {
		return "", false
	}
	name, ok := strings.CutPrefix(found.Path, "/")
	if !ok || ValidateName(name) != nil {
		return "", false
	}
	return name, true
}

func nodeURI(id string) *url.URL { return &url.URL{Scheme: uriScheme, Host: nodeHost, Path: "/" + id} }
func clientURI(name string) *url.URL {
	return &url.URL{Scheme: uriScheme, Host: clientHost, Path: "/" + name}
}

type leafSpec struct {
	commonName string
	uri        *url.URL
	dnsNames   []string
	ips        []net.IP
	extUsage   []x509.ExtKeyUsage
}

func createLeaf(dir, certFile, keyFile string, opts CertOptions, spec leafSpec) error {
	if !opts.Force {
		if err := refuseExisting("the old certificate stays valid until it expires", certFile, keyFile); err != nil {
			return err
		}
	}
	ca, caKey, err := loadCA(dir)
	if err != nil {
		return err
	}
	now := clock(opts.Now)()
	validity := opts.Validity
	if validity <= 0 {
		validity = DefaultCertValidity
	}
	notAfter := now.Add(validity)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	notBefore := now.Add(-clockSkew)
	if !notAfter.After(now) {
		return fmt.Errorf("the CA in %s expired at %s: create a new one with --force", dir, ca.NotAfter.UTC().Format(time.RFC3339))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	serial, err := serialNumber(opts.Rand)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: spec.commonName, Organization: []string{"Meridian"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           spec.extUsage,
		BasicConstraintsValid: true,
		DNSNames:              spec.dnsNames,
		IPAddresses:           spec.ips,
		URIs:                  []*url.URL{spec.uri},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return fmt.Errorf("sign certificate: %w", err)
	}
	return writePair(certFile, keyFile, der, key)
}

// loadCA reads the CA certificate and key from dir. ca.crt may hold several
// certificates (a bundle during a CA rotation); the one matching ca.key signs.
func loadCA(dir string) (*x509.Certificate, crypto.Signer, error) {
	certFile, keyFile := CAFiles(dir)
	certPEM, err := os.ReadFile(certFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("no CA in %s: create one first (meridian certs create-ca --dir %s)", dir, dir)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read CA certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("read CA key (only the machine that signs certificates needs it): %w", err)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	certs, err := parseCerts(certPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", certFile, err)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok {
		return nil, nil, fmt.Errorf("%s: unsupported key type %T", keyFile, key)
	}
	for _, c := range certs {
		if c.IsCA && pub.Equal(c.PublicKey) {
			return c, key, nil
		}
	}
	return nil, nil, fmt.Errorf("%s holds no CA certificate for the key in %s", certFile, keyFile)
}

// ReadCertificateFile returns the first certificate of a PEM file.
func ReadCertificateFile(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	certs, err := parseCerts(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return certs[0], nil
}

func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return certs, nil
}

func parseKey(data []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PEM private key found")
		}
		var k any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parse private key: %w", err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported private key type %T", k)
		}
		return s, nil
	}
}

func refuseExisting(consequence string, files ...string) error {
	for _, f := range files {
		if _, err := os.Lstat(f); err == nil {
			return fmt.Errorf("%s already exists: keep it, or pass --force to replace it (%s)", f, consequence)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// writePair writes the key (mode 0600) and then the certificate (0644),
// each atomically, so a Source watching them never reads half a file.
func writePair(certFile, keyFile string, der []byte, key *ecdsa.PrivateKey) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode key: %w", err)
	}
	if err := writeAtomic(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return writeAtomic(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// WriteFileAtomic replaces path with data, mode set before any byte is
// written: a reader sees the old file or the new one, never a part, and a
// handle opened on the old file never reads the new content. The new file
// keeps the old one's owner when this process may set it (root replacing
// a service user's file). The directory is synced so the rename survives
// a crash.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	if err := writeAtomicOwned(path, data, mode); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return fmt.Errorf("sync the directory of %s: %w", path, err)
		}
	}
	return nil
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	return writeAtomicAs(path, data, mode, false)
}

func writeAtomicOwned(path string, data []byte, mode os.FileMode) error {
	return writeAtomicAs(path, data, mode, true)
}

// writeAtomicAs writes data to a new file renamed over path; keepOwner
// gives it the replaced file's owner when this process may.
func writeAtomicAs(path string, data []byte, mode os.FileMode, keepOwner bool) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(mode); err != nil {
		return fail(err)
	}
	if old, err := os.Stat(path); err == nil && keepOwner {
		if uid, gid, ok := fileOwner(old); ok && (uid != os.Getuid() || gid != os.Getgid()) {
			// Best effort: only a privileged process may give a file away.
			_ = f.Chown(uid, gid)
		}
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func serialNumber(r io.Reader) (*big.Int, error) {
	if r == nil {
		r = rand.Reader
	}
	var b [16]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	n := new(big.Int).SetBytes(b[:]) // non-negative; DER adds a sign byte if needed

	if n.Sign() == 0 {
		n.SetInt64(1)
	}
	return n, nil
}

func clock(now func() time.Time) func() time.Time {
	if now == nil {
		return time.Now
	}
	return now
}
