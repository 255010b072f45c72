package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultCheckInterval is how often a Source looks at its files at most.
const DefaultCheckInterval = 5 * time.Second

// SourceOptions tune NewSource. The zero value is a usable default.
type SourceOptions struct {
	// CheckInterval is the least time between two looks at the files'
	// modification times and sizes; the look happens lazily, during a
	// handshake. 0 means DefaultCheckInterval; a negative value looks on
	// every handshake.
	CheckInterval time.Duration
	// Now is the clock for the check interval and for certificate validity
	// checks; nil means time.Now.
	Now func() time.Time
	// OnReload, if set, is called after new material was loaded, with the
	// new leaf certificate (nil for a CA-only Source).
	OnReload func(leaf *x509.Certificate)
	// OnError, if set, is called when changed files cannot be loaded; the
	// Source keeps using the last good material. It is called once per
	// change of the files, not on every handshake.
	OnError func(err error)
	// Check, if set, vets every certificate loaded (the first one and each
	// reload): one it refuses is not used (NewSource fails; a reload keeps
	// the last good material and goes to OnError). For example: the leaf
	// must be this node's.
	Check func(leaf *x509.Certificate) error
}

// Source holds a CA pool and a certificate with its key, loaded from files
// and reloaded when the files change. It is safe for concurrent use and
// needs no Close: it starts no goroutine.
type Source struct {
	caFile, certFile, keyFile string
	interval                  time.Duration
	now                       func() time.Time
	onReload                  func(*x509.Certificate)
	checkLeaf                 func(*x509.Certificate) error
	onError                   func(error)

	cur atomic.Pointer[material]

	mu        sync.Mutex // serialises checks; guards the fields below
	lastCheck time.Time
	seen      fileSet // the files as last loaded or last failed to load
	// notYet: the files hold a certificate not valid yet, reported once
	// and loaded again at each check until it is.
	notYet bool
}

// material is one consistent load of the three files.
type material struct {
	pool *x509.CertPool
	cert *tls.Certificate // nil for a CA-only Source
	leaf *x509.Certificate
}

type fileSet [3]os.FileInfo

func (a fileSet) same(b fileSet) bool {
	for i := range a {
		if (a[i] == nil) != (b[i] == nil) {
			return false
		}
		if a[i] == nil {
			continue
		}
		if !os.SameFile(a[i], b[i]) || a[i].Size() != b[i].Size() || !a[i].ModTime().Equal(b[i].ModTime()) {
			return false
		}
	}
	return true
}

// NewSource loads caFile (one or more PEM CA certificates: every one is
// trusted, so a bundle of old and new CA serves a rotation) and the PEM
// certificate and key. certFile and keyFile may both be empty for a Source
// that only verifies peers (a client authenticating with a bearer token).
// The certificate must chain to a CA in caFile and be valid now.
func NewSource(caFile, certFile, keyFile string, opts SourceOptions) (*Source, error) {
	if caFile == "" {
		return nil, errors.New("no CA file: pass the CA certificate (ca.crt) that signed the cluster's certificates")
	}
	if (certFile == "") != (keyFile == "") {
		return nil, fmt.Errorf("certificate %q and key %q: give both or neither", certFile, keyFile)
	}
	s := &Source{
		caFile: caFile, certFile: certFile, keyFile: keyFile,
		interval:  opts.CheckInterval,
		now:       clock(opts.Now),
		onReload:  opts.OnReload,
		onError:   opts.OnError,
		checkLeaf: opts.Check,
	}
	if s.interval == 0 {
		s.interval = DefaultCheckInterval
	}
	files, err := s.stat()
	if err != nil {
		return nil, err
	}
	m, err := s.load()
	if err != nil {
		return nil, err
	}
	s.cur.Store(m)
	s.seen = files
	s.lastCheck = s.now()
	return s, nil
}

// Leaf returns the current certificate (nil for a CA-only Source), for
// example to check that a node's certificate names the node's own ID.
func (s *Source) Leaf() *x509.Certificate {
	return s.cur.Load().leaf
}

// Pool returns the current trusted CA pool. Do not modify it.
func (s *Source) Pool() *x509.CertPool {
	return s.cur.Load().pool
}

// Reload loads the files now, whatever the check interval and whether or
// not they look changed (for example on SIGHUP). It returns the load error
// (the Source keeps its last good material) or nil, and calls OnReload or
// OnError as a lazy check would.
func (s *Source) Reload() error {
	return s.check(true)
}

// current returns the material to use for a handshake, looking at the files
// first if the check interval has passed.
func (s *Source) current() *material {
	s.check(false) // errors go to OnError; the last good material stays
	return s.cur.Load()
}

func (s *Source) check(force bool) error {
	var (
		reloaded *x509.Certificate
		loadErr  error
		changed  bool
		quiet    bool // an error reported already
	)
	func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		now := s.now()
		if !force && s.interval > 0 && now.Sub(s.lastCheck) < s.interval && !now.Before(s.lastCheck) {
			return
		}
		s.lastCheck = now
		files, err := s.stat()
		if err != nil {
			if !force && files.same(s.seen) {
				return
			}
			s.seen = files
			changed, loadErr = true, err
			return
		}
		if !force && files.same(s.seen) {
			return
		}
		// Record what was looked at before reading it: if a file changes
		// while being read, the next check sees a difference and reloads.
		s.seen = files
		changed = true
		m, err := s.load()
		if err != nil {
			loadErr = err
			if notYetValid(err, now) {
				// Issued a little ahead of this node's clock (an external
				// CA): looked at again at the next check, not only once the
				// files change again, and reported once.
				s.seen = fileSet{}
				quiet = s.notYet
				s.notYet = true
			}
			return
		}
		s.notYet = false
		s.cur.Store(m)
		reloaded = m.leaf
	}()
	if !changed {
		return nil
	}
	if loadErr != nil {
		if s.onError != nil && !quiet {
			s.onError(loadErr)
		}
		return loadErr
	}
	if s.onReload != nil {
		s.onReload(reloaded)
	}
	return nil
}

func (s *Source) stat() (fileSet, error) {
	var fs fileSet
	var firstErr error
	for i, name := range []string{s.caFile, s.certFile, s.keyFile} {
		if name == "" {
			continue
		}
		fi, err := os.Stat(name)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		fs[i] = fi
	}
	return fs, firstErr
}

func (s *Source) load() (*material, error) {
	caPEM, err := os.ReadFile(s.caFile)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	cas, err := parseCerts(caPEM)
	if err != nil {
		return nil, fmt.Errorf("CA file %s: %w", s.caFile, err)
	}
	pool := x509.NewCertPool()
	for _, c := range cas {
		pool.AddCert(c)
	}
	m := &material{pool: pool}
	if s.certFile == "" {
		return m, nil
	}
	pair, err := tls.LoadX509KeyPair(s.certFile, s.keyFile)
	if err != nil {
		return nil, fmt.Errorf("certificate %s and key %s: %w", s.certFile, s.keyFile, err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("certificate %s: %w", s.certFile, err)
		}
		pair.Leaf = leaf
	}
	inter := x509.NewCertPool()
	for _, der := range pair.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         pool,
		Intermediates: inter,
		CurrentTime:   s.now(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return nil, fmt.Errorf("certificate %s is not usable with the CA in %s: %w", s.certFile, s.caFile, err)
	}
	if s.checkLeaf != nil {
		if err := s.checkLeaf(leaf); err != nil {
			return nil, err
		}
	}
	m.cert = &pair
	m.leaf = leaf
	return m, nil
}

// ServerOptions tune ServerConfig.
type ServerOptions struct {
	// RequireClientCert refuses clients without a certificate (the peer
	// listener). Without it a client may come without a certificate (and
	// authenticate otherwise, e.g. with a bearer token); a certificate it
	// does present is verified all the same.
	RequireClientCert bool
	// Authorize, if set, is called with a client's leaf certificate after
	// its chain was verified against the current CA pool (valid now, good
	// for client auth); an error aborts the handshake. It is not called
	// for clients without a certificate.
	Authorize func(cert *x509.Certificate) error
}

// ServerConfig returns a TLS 1.3 server configuration that serves the
// Source's current certificate and verifies client certificates against its
// current CA pool, both re-read on change without restarting the listener.
// Session tickets are disabled, so every connection is verified against
// the material current at its handshake.
func (s *Source) ServerConfig(opts ServerOptions) *tls.Config {
	clientAuth := tls.VerifyClientCertIfGiven
	if opts.RequireClientCert {
		clientAuth = tls.RequireAndVerifyClientCert
	}
	authorize := opts.Authorize
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := s.current()
			if m.cert == nil {
				return nil, errors.New("pki: this Source has no certificate to serve")
			}
			return &tls.Config{
				MinVersion:             tls.VersionTLS13,
				Certificates:           []tls.Certificate{*m.cert},
				ClientCAs:              m.pool,
				ClientAuth:             clientAuth,
				Time:                   s.now,
				SessionTicketsDisabled: true,
				VerifyConnection: func(cs tls.ConnectionState) error {
					if len(cs.PeerCertificates) == 0 {
						if opts.RequireClientCert {
							return errors.New("pki: client certificate required")
						}
						return nil
					}
					if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
						return errors.New("pki: client certificate not verified")
					}
					if authorize != nil {
						if err := authorize(cs.VerifiedChains[0][0]); err != nil {
							return fmt.Errorf("pki: client certificate not authorized: %w", err)
						}
					}
					return nil
				},
			}, nil
		},
	}
}

// ClientOptions tune ClientConfigWith.
type ClientOptions struct {
	// ServerName is the DNS name or IP address the server's certificate
	// must hold. If empty, the name sent in SNI is used, which crypto/tls
	// sets from the dialled host only when it is a DNS name: give IP
	// addresses here (ClientCredentials does it for gRPC targets).
	ServerName string
	// Authorize, if set, is called with the server's leaf certificate
	// after its chain and name were verified; an error aborts the
	// handshake (a node dialling a peer checks the peer's node ID).
	Authorize func(cert *x509.Certificate) error
}

// ClientConfig is ClientConfigWith(ClientOptions{ServerName: serverName}).
func (s *Source) ClientConfig(serverName string) *tls.Config {
	return s.ClientConfigWith(ClientOptions{ServerName: serverName})
}

// ClientConfigWith returns a TLS 1.3 client configuration that presents the
// Source's current certificate (none for a CA-only Source) and verifies the
// server against the current CA pool: chain, validity, server-auth usage
// and name. Because tls.Config.RootCAs is fixed, the standard verification
// is replaced (InsecureSkipVerify) by an equivalent one in VerifyConnection
// that reads the current pool.
func (s *Source) ClientConfigWith(opts ClientOptions) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		ServerName:         opts.ServerName,
		InsecureSkipVerify: true, // verified in VerifyConnection against the current pool
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if m := s.current(); m.cert != nil {
				return m.cert, nil
			}
			return &tls.Certificate{}, nil // no certificate: the server decides
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			name := opts.ServerName
			if name == "" {
				name = cs.ServerName
			}
			if name == "" {
				return errors.New("pki: no server name to verify the server certificate against")
			}
			if len(cs.PeerCertificates) == 0 {
				return errors.New("pki: server sent no certificate")
			}
			m := s.current()
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			leaf := cs.PeerCertificates[0]
			if _, err := leaf.Verify(x509.VerifyOptions{
				Roots:         m.pool,
				Intermediates: inter,
				DNSName:       name,
				CurrentTime:   s.now(),
				KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			}); err != nil {
				return fmt.Errorf("pki: server certificate: %w", err)
			}
			if opts.Authorize != nil {
				if err := opts.Authorize(leaf); err != nil {
					return fmt.Errorf("pki: server certificate not authorized: %w", err)
				}
			}
			return nil
		},
	}
}

// notYetValid reports whether err is a certificate's validity starting
// after now.
func notYetValid(err error, now time.Time) bool {
	var inv x509.CertificateInvalidError
	return errors.As(err, &inv) && inv.Reason == x509.Expired && inv.Cert != nil && now.Before(inv.Cert.NotBefore)
}
