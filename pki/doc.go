// Package pki makes and loads the certificates that secure Meridian's
// gRPC listeners, with the standard library only.
//
// # Files
//
// One directory holds a cluster's development PKI (`meridian certs`):
//
//	ca.crt              CA certificate (ECDSA P-256, 10 years); every node and client trusts it
//	ca.key              CA key, mode 0600; needed only where certificates are signed
//	node.<id>.crt/.key  a node's certificate and key (1 year): TLS server AND client auth
//	client.<name>.crt/.key  a client's certificate and key (1 year): TLS client auth only
//
// Everything is PEM; keys are PKCS #8 and written with mode 0600. Files are
// replaced atomically (write to a temporary file, then rename), so a Source
// watching them never reads half a file. CreateCA, CreateNode and
// CreateClient refuse to overwrite existing files unless Force is set.
// Serial numbers are 128 random bits; NotBefore is back-dated five minutes
// to absorb clock skew, and no certificate outlives its CA.
//
// # Identities (SAN scheme)
//
// A node certificate carries the URI SAN meridian://node/<id> (and CN=<id>)
// plus the DNS names and IP addresses the node is reached at (default
// localhost, 127.0.0.1 and ::1). A client certificate carries only the URI
// SAN meridian://client/<name> (and CN=<name>). NodeID and ClientName read
// these URIs and never confuse the two kinds: a certificate with no Meridian
// URI, with the other kind, or with more than one Meridian URI has neither
// identity. The CommonName is informational; identities come from the URI.
//
// # Listeners
//
// Source.ServerConfig serves the node certificate and verifies client
// certificates against the CA pool (TLS 1.3 only). The peer listener sets
// RequireClientCert and an Authorize hook that accepts only a NodeID that is
// a member of the topology; the client listener lets clients without a
// certificate through to bearer-token authentication, but still verifies
// any certificate presented. Source.ClientConfig is the dialling side: it
// presents the current certificate and verifies the server's chain, expiry,
// server-auth usage and name against the current CA pool. PeerCertificate
// gives a gRPC handler the verified client certificate.
//
// # Reloading
//
// A Source re-reads its CA, certificate and key files when their size,
// modification time or identity (a rename) changes, without restarting any
// listener: lazily, during a handshake, at most once per CheckInterval
// (default 5 s), so it needs no goroutine and no Close. New connections use
// the new material; established ones keep theirs. A CA file may hold several
// CA certificates, all trusted, which lets a CA be rotated without a flag
// day: distribute a bundle of old and new CA, then new certificates, then
// drop the old CA. If the changed files cannot be loaded (unreadable,
// unparsable, key not matching the certificate, certificate not signed by a
// CA in the CA file or not valid now), the Source keeps its last good
// material, reports the error once through SourceOptions.OnError, and tries
// again when the files change next. So replacing files one by one is safe:
// while only the new certificate or only the new key is in place (CreateNode
// writes the key first), or a certificate from a new CA is there before the
// new CA file, the old material stays in use and the mismatch is reported;
// the consistent new set is loaded as soon as its last file lands.
package pki
