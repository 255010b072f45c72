package node

import (
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meridiankv/meridian/pki"
)

// security is a node's TLS material and what it builds: server credentials
// for its three listeners and client credentials for dialling peers. With
// Insecure every listener is plaintext.
type security struct {
	insecure bool
	src      *pki.Source
}

// newSecurity loads the node's certificate (reloaded on change) unless the
// cluster runs insecure.
func newSecurity(cfg Config, log *slog.Logger) (*security, error) {
	if cfg.Insecure {
		return &security{insecure: true}, nil
	}
	// The certificate must be this node's, at start and at every reload (a
	// rotation that put another node's or a client's pair in place would
	// otherwise be taken, and peers would refuse the node).
	var ownCert *ownCertError
	src, err := pki.NewSource(cfg.CAFile, cfg.CertFile, cfg.KeyFile, pki.SourceOptions{
		OnReload: func(leaf *x509.Certificate) {
			log.Info("reloaded TLS certificate", "subject", leaf.Subject.String(), "not_after", leaf.NotAfter)
		},
		OnError: func(err error) {
			log.Error("TLS files changed but cannot be loaded; keeping the previous ones", "err", err)
		},
		Check: func(leaf *x509.Certificate) error { return checkOwnCert(cfg, leaf) },
	})
	if errors.As(err, &ownCert) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("TLS material: %w (create it with `meridian certs create-ca` and `meridian certs create-node ID`, or run with --insecure)", err)
	}
	return &security{src: src}, nil
}

// peerServer is the peer listener's credentials: mutual TLS with node
// certificates (checkPeer then admits members only, and a new node only
// to join).
func (s *security) peerServer() grpc.ServerOption {
	if s.insecure {
		return grpc.Creds(insecure.NewCredentials())
	}
	return grpc.Creds(pki.ServerCredentials(s.src.ServerConfig(pki.ServerOptions{
		RequireClientCert: true,
		Authorize: func(cert *x509.Certificate) error {
			if _, ok := pki.NodeID(cert); !ok {
				return errors.New("not a node certificate: the peer API is for cluster members only")
			}
			return nil
		},
	})))
}

// clientServer is the client and admin listeners' credentials: TLS; a
// client certificate, when presented, is verified and names a principal.
func (s *security) clientServer() grpc.ServerOption {
	if s.insecure {
		return grpc.Creds(insecure.NewCredentials())
	}
	return grpc.Creds(pki.ServerCredentials(s.src.ServerConfig(pki.ServerOptions{})))
}

// peerDialTo is how this node dials node's peer listener: its own node
// certificate, and the peer must present node's certificate (an address
// learned from gossip, or reused by another node, must not get node's
// traffic). Nil when insecure.
func (s *security) peerDialTo(node string) []grpc.DialOption {
	if s.insecure {
		return nil
	}
	return []grpc.DialOption{grpc.WithTransportCredentials(pki.ClientCredentials(s.src, pki.ClientOptions{
		Authorize: func(cert *x509.Certificate) error {
			if got, ok := pki.NodeID(cert); !ok || got != node {
				return fmt.Errorf("the peer listener dialled as node %q presented the certificate of %q: its address is another node's", node, got)
			}
			return nil
		},
	}))}
}

// peerDial is how this node dials a peer listener when it does not know
// which node serves it (a join: any member will do): its own node
// certificate, and the peer must present a node certificate.
func (s *security) peerDial() grpc.DialOption {
	if s.insecure {
		return grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	return grpc.WithTransportCredentials(pki.ClientCredentials(s.src, pki.ClientOptions{
		Authorize: func(cert *x509.Certificate) error {
			if _, ok := pki.NodeID(cert); !ok {
				return errors.New("the peer did not present a node certificate")
			}
			return nil
		},
	}))
}

// clientDial is how this node dials another node's client listener
// (discovery).
func (s *security) clientDial() grpc.DialOption {
	if s.insecure {
		return grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	return grpc.WithTransportCredentials(pki.ClientCredentials(s.src, pki.ClientOptions{}))
}

// ownCertError: the node's certificate is not its own.
type ownCertError struct{ msg string }

func (e *ownCertError) Error() string { return e.msg }

// checkOwnCert refuses a certificate that is not node cfg.ID's.
func checkOwnCert(cfg Config, leaf *x509.Certificate) error {
	if id, ok := pki.NodeID(leaf); !ok || id != cfg.ID {
		if name, client := pki.ClientName(leaf); client {
			// MERIDIAN_CERT and MERIDIAN_KEY name the CLI's client
			// certificate too, and the environment beats the config file.
			return &ownCertError{fmt.Sprintf("certificate %s is client %q's, not node %q's: pass the node's certificate and key with --cert and --key (a MERIDIAN_CERT or MERIDIAN_KEY exported for the CLI overrides the config file's cert and key: unset them for serve)", cfg.CertFile, name, cfg.ID)}
		}
		return &ownCertError{fmt.Sprintf("certificate %s is for node %q, not %q: create one with `meridian certs create-node %s`", cfg.CertFile, id, cfg.ID, cfg.ID)}
	}
	return nil
}
