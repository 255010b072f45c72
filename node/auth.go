package node

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
)

// AuthConfig says who may call the client and admin APIs. Principals are
// named by a bearer token (its SHA-256, never the token itself) or by a
// client certificate's name (pki.ClientName). An empty AuthConfig lets
// every caller do everything — only acceptable with --insecure on a
// trusted network.
type AuthConfig struct {
	// Principals lists who may call, and what they may do.
	Principals []Principal `yaml:"principals"`
}

// Principal is one caller and its permissions.
type Principal struct {
	// Name identifies the caller; a client certificate with this name
	// authenticates as it.
	Name string `yaml:"name"`
	// TokenSHA256 is the hex SHA-256 of the bearer token that
	// authenticates as this principal (`meridian auth hash-token`), if any.
	TokenSHA256 string `yaml:"token-sha256"`
	// Keyspaces maps a keyspace ("*" for all) to "read", "write" or
	// "read,write".
	Keyspaces map[string]string `yaml:"keyspaces"`
	// Admin allows the admin API.
	Admin bool `yaml:"admin"`
}

// Validate checks the auth configuration.
func (a AuthConfig) Validate() error {
	seen := map[string]bool{}
	for i, p := range a.Principals {
		if p.Name == "" {
			return fmt.Errorf("auth principal %d has no name", i+1)
		}
		if seen[p.Name] {
			return fmt.Errorf("auth principal %q listed twice", p.Name)
		}
		seen[p.Name] = true
		if p.TokenSHA256 != "" {
			if b, err := hex.DecodeString(p.TokenSHA256); err != nil || len(b) != sha256.Size {
				return fmt.Errorf("auth principal %q: token-sha256 must be 64 hex characters (`meridian auth hash-token`)", p.Name)
			}
		}
		for ks, perm := range p.Keyspaces {
			for _, x := range strings.Split(perm, ",") {
				if x = strings.TrimSpace(x); x != "read" && x != "write" {
					return fmt.Errorf("auth principal %q keyspace %q: permission %q, use read, write or read,write", p.Name, ks, x)
				}
			}
		}
	}
	return nil
}

// HashToken returns the hex SHA-256 of a bearer token, for AuthConfig.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// authorizer checks every call on the client and admin listeners.
type authorizer struct {
	open bool // insecure and no principals: everyone may do everything
	// anyCert: TLS and no principals: any client certificate of the
	// cluster CA may do everything, and nobody without one.
	anyCert bool
	byTok   map[[sha256.Size]byte]*Principal
	byCN    map[string]*Principal
	// certName reads a verified client certificate's principal name.
	certName func(ctx context.Context) (string, bool)
	// all grants every keyspace (shared, read only, by anyCert's
	// principals).
	all map[string]string
}

func newAuthorizer(a AuthConfig, insecure bool, certName func(context.Context) (string, bool)) *authorizer {
	none := len(a.Principals) == 0
	z := &authorizer{open: none && insecure, anyCert: none && !insecure, byTok: map[[sha256.Size]byte]*Principal{}, byCN: map[string]*Principal{}, certName: certName,
		all: map[string]string{"*": "read,write"}}
	for i := range a.Principals {
		p := &a.Principals[i]
		z.byCN[p.Name] = p
		if b, err := hex.DecodeString(p.TokenSHA256); err == nil && len(b) == sha256.Size {
			z.byTok[[sha256.Size]byte(b)] = p
		}
	}
	return z
}

var errNoCredentials = errors.New("no credentials: send a bearer token (--token or MERIDIAN_TOKEN) or a client certificate (--cert, --key)")

// principal authenticates the caller.
func (z *authorizer) principal(ctx context.Context) (*Principal, error) {
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if vals := md.Get("authorization"); len(vals) > 0 {
			if len(vals) > 1 {
				return nil, errors.New("more than one authorization header")
			}
			tok, ok := strings.CutPrefix(vals[0], "Bearer ")
			if !ok {
				return nil, errors.New(`authorization header must be "Bearer <token>"`)
			}
			sum := sha256.Sum256([]byte(tok))
			for h, p := range z.byTok {
				if subtle.ConstantTimeCompare(h[:], sum[:]) == 1 {
					return p, nil
				}
			}
			return nil, errors.New("unknown token: check --token, or ask an operator to add its hash to the auth config")
		}
	}
	if z.certName != nil {
		if name, ok := z.certName(ctx); ok {
			if z.anyCert {
				return &Principal{Name: name, Keyspaces: z.all, Admin: true}, nil
			}
			if p, ok := z.byCN[name]; ok {
				return p, nil
			}
			return nil, fmt.Errorf("client certificate %q is not a principal in the auth config", name)
		}
	}
	return nil, errNoCredentials
}

// can reports whether p may do perm ("read" or "write") on keyspace.
func (p *Principal) can(keyspace, perm string) bool {
	if keyspace == "" {
		keyspace = "default"
	}
	for _, ks := range []string{keyspace, "*"} {
		if perms, ok := p.Keyspaces[ks]; ok {
			for _, x := range strings.Split(perms, ",") {
				if strings.TrimSpace(x) == perm {
					return true
				}
			}
		}
	}
	return false
}

// check authorizes one call: its full method name and request.
func (z *authorizer) check(ctx context.Context, method string, req any) error {
	if z.open || unauthenticated(method) {
		return nil
	}
	p, err := z.tapped(ctx)
	if err != nil {
		return status.Error(codes.Unauthenticated, err.Error())
	}
	if method == callsMethod {
		return nil // each call is authorized on its own (streamPrincipal)
	}
	switch r := req.(type) {
	case *kvv1.GetRequest:
		return z.need(p, r.GetKeyspace(), "read")
	case *kvv1.PutRequest:
		return z.need(p, r.GetKeyspace(), "write")
	case *kvv1.DeleteRequest:
		return z.need(p, r.GetKeyspace(), "write")
	}
	switch {
	case strings.HasPrefix(method, "/admin.v1.") || strings.HasPrefix(method, "/grpc.reflection."):
		if p.Admin {
			return nil
		}
		return status.Errorf(codes.PermissionDenied, "%s needs the admin role; principal %q does not have it", method, p.Name)
	}
	return status.Errorf(codes.PermissionDenied, "principal %q may not call %s", p.Name, method)
}

// unauthenticated reports whether method is served to any caller.
func unauthenticated(method string) bool {
	return strings.HasPrefix(method, "/grpc.health.v1.Health/") || strings.HasPrefix(method, "/internal.v1.Discovery/")
}

// principalKey carries the principal tap authenticated.
type principalKey struct{}

// tap authenticates a caller as its request's headers arrive, before gRPC
// reads any of its body: an unauthenticated caller cannot make the node
// buffer the messages it uploads (up to the listener's message limit, on
// each of a connection's streams). The interceptors then authorize the
// request for its keyspace with the principal found here.
func (z *authorizer) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	if z.open || unauthenticated(info.FullMethodName) {
		return ctx, nil
	}
	p, err := z.principal(ctx)
	if err != nil {
		return ctx, status.Error(codes.Unauthenticated, err.Error())
	}
	return context.WithValue(ctx, principalKey{}, p), nil
}

// tapped is the principal tap found, or authenticates now (a server
// without the tap, in tests).
func (z *authorizer) tapped(ctx context.Context) (*Principal, error) {
	if p, ok := ctx.Value(principalKey{}).(*Principal); ok {
		return p, nil
	}
	return z.principal(ctx)
}

// callsMethod is the client call stream, whose calls are authorized one
// by one for their keyspaces.
const callsMethod = "/kv.v1.KV/Calls"

// streamPrincipal authenticates a call stream's caller once and returns
// what authorizes each of its calls: whether the principal may do perm
// ("read" or "write") on a keyspace, as the refusal (allow) or as a
// plain answer (can, which builds no error).
func (z *authorizer) streamPrincipal(ctx context.Context) (allow func(keyspace, perm string) error, can func(keyspace, perm string) bool, err error) {
	if z.open {
		return func(string, string) error { return nil }, func(string, string) bool { return true }, nil
	}
	p, err := z.tapped(ctx)
	if err != nil {
		return nil, nil, status.Error(codes.Unauthenticated, err.Error())
	}
	return func(keyspace, perm string) error { return z.need(p, keyspace, perm) }, p.can, nil
}

func (z *authorizer) need(p *Principal, keyspace, perm string) error {
	if p.can(keyspace, perm) {
		return nil
	}
	if keyspace == "" {
		keyspace = "default"
	}
	return status.Errorf(codes.PermissionDenied, "principal %q has no %s permission on keyspace %q: ask an operator to grant it in the auth config", p.Name, perm, keyspace)
}

// unary and stream are the server interceptors.
func (z *authorizer) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := z.check(ctx, info.FullMethod, req); err != nil {
		return nil, err
	}
	resp, err := handler(ctx, req)
	// A failed Put answers a nil *PutResponse (in a non-nil interface).
	if put, ok := resp.(*kvv1.PutResponse); ok && put != nil && err == nil && !z.open {
		if p, perr := z.tapped(ctx); perr != nil || !p.can(req.(*kvv1.PutRequest).GetKeyspace(), "read") {
			withholdValues(put)
		}
	}
	return resp, err
}

// withholdValues takes the siblings out of a Put's answer to a caller
// without read permission on its keyspace: they are the key's stored
// values (a blind write leaves the others as siblings), which write
// permission alone must not reveal. The context stays: it lets the
// writer supersede what it wrote, as write permission allows.
func withholdValues(resp *kvv1.PutResponse) { resp.Siblings = nil }

func (z *authorizer) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := z.check(ss.Context(), info.FullMethod, nil); err != nil {
		return err
	}
	return handler(srv, ss)
}
