package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// ServerCredentials wraps a configuration from Source.ServerConfig for
// grpc.Creds (gRPC adds the h2 ALPN protocol to every handshake).
func ServerCredentials(cfg *tls.Config) credentials.TransportCredentials {
	return credentials.NewTLS(cfg)
}

// ClientCredentials returns gRPC transport credentials for dialling with
// src: each handshake uses src.ClientConfigWith(opts), with the host of the
// target's authority as ServerName when opts.ServerName is empty (so a
// target 127.0.0.1:7001 verifies the IP SAN 127.0.0.1).
func ClientCredentials(src *Source, opts ClientOptions) credentials.TransportCredentials {
	return &clientCreds{src: src, opts: opts}
}

type clientCreds struct {
	src  *Source
	opts ClientOptions
}

func (c *clientCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	opts := c.opts
	if opts.ServerName == "" {
		host, _, err := net.SplitHostPort(authority)
		if err != nil {
			host = authority // no port
		}
		opts.ServerName = host
	}
	return credentials.NewTLS(c.src.ClientConfigWith(opts)).ClientHandshake(ctx, authority, raw)
}

func (c *clientCreds) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("pki: client credentials cannot accept connections; use ServerCredentials")
}

func (c *clientCreds) Info() credentials.ProtocolInfo {
	return credentials.NewTLS(c.src.ClientConfigWith(c.opts)).Info()
}

func (c *clientCreds) Clone() credentials.TransportCredentials {
	cp := *c
	return &cp
}

// OverrideServerName is deprecated in gRPC; it sets the name to verify.
func (c *clientCreds) OverrideServerName(name string) error {
	c.opts.ServerName = name
	return nil
}

// PeerCertificate returns, inside a gRPC server handler or interceptor, the
// client's certificate as verified during the TLS handshake (the leaf of
// its first verified chain). It reports false for connections without TLS
// and for clients that presented no certificate (they may have
// authenticated otherwise, e.g. with a bearer token).
func PeerCertificate(ctx context.Context) (*x509.Certificate, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok || p == nil {
		return nil, false
	}
	var state tls.ConnectionState
	switch info := p.AuthInfo.(type) {
	case credentials.TLSInfo:
		state = info.State
	case *credentials.TLSInfo:
		if info == nil {
			return nil, false
		}
		state = info.State
	default:
		return nil, false
	}
	if len(state.VerifiedChains) == 0 || len(state.VerifiedChains[0]) == 0 {
		return nil, false
	}
	return state.VerifiedChains[0][0], true
}
