package client

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
)

// Option configures a Client at Dial.
type Option func(*options)

type options struct {
	dialOpts []grpc.DialOption
	insecure bool
	localDC  string
	// routeDC is the DC requests go to first: localDC, else the first
	// seed's (set by Dial). Only localDC is named in LOCAL_* levels: a
	// keyspace may have no replicas in the seed's DC.
	routeDC         string
	refresh         time.Duration
	topologyTimeout time.Duration
	downFor         time.Duration
	defaults        []CallOption
	unary           bool
	streamAge       time.Duration // how long a call stream takes new calls
	reprobe         time.Duration // how long a node without call streams gets unary calls only
	departWait      time.Duration // how long a departed node's connection stays for calls sent
	keepalive       keepalive.ClientParameters
	// streamAfterTake, when set (tests only), runs in each call stream's
	// sender between taking a batch and marshalling it.
	streamAfterTake func()
}

func defaultOptions() options {
	return options{refresh: 30 * time.Second, topologyTimeout: 5 * time.Second, downFor: 10 * time.Second, streamAge: streamMaxAge, reprobe: time.Minute, departWait: departWait,
		keepalive: defaultKeepalive}
}

// defaultKeepalive pings a node after 15 s without hearing from it, while
// calls are open, and gives up on the connection 5 s later. Nodes refuse
// pings more often than every 10 s (their keepalive.EnforcementPolicy, in
// node/listeners.go: a connection pinging more often is closed with
// too_many_pings); 15 s keeps clear of that with timer jitter.
var defaultKeepalive = keepalive.ClientParameters{Time: 15 * time.Second, Timeout: 5 * time.Second}

// WithDialOptions adds gRPC dial options used for every connection the
// client opens, typically the transport credentials:
//
//	client.WithDialOptions(grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig)))
//
// Without WithDialOptions or Insecure, Dial fails: the client never falls
// back to plaintext on its own.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOpts = append(o.dialOpts, opts...) }
}

// Insecure makes the client talk plaintext (no TLS), for clusters started
// with --insecure on a trusted network.
func Insecure() Option { return func(o *options) { o.insecure = true } }

// LocalDC names the caller's datacenter: requests go to a live replica in
// it first, and to other datacenters only when none is reachable (like
// gocql's DC-aware policy); LOCAL_ONE and LOCAL_QUORUM count in it
// wherever the request goes (unless ConsistencyDC names another). Without
// it (or empty), requests go first to the datacenter of the first seed
// given to Dial that is a node's client address as the topology lists it
// (when no seed is, each partition's preference order decides, which
// lists datacenters in name order), and a LOCAL_* level counts in the
// datacenter of the node that coordinates it.
func LocalDC(dc string) Option { return func(o *options) { o.localDC = dc } }

// RefreshInterval sets how often the client re-reads the topology (default
// 30s). The client also refreshes after routing failures and when it meets
// a keyspace it does not know (at most once per keyspace per interval).
// Zero or negative keeps the default.
func RefreshInterval(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.refresh = d
		}
	}
}

// UnaryCalls makes the client send every call as a gRPC call of its own.
// By default it carries small, untraced calls to each node on one
// long-lived kv.v1.KV/Calls stream, which costs the client and the node
// far less per call (the node must serve Calls: older nodes do not, and
// the client then falls back to unary calls on its own).
func UnaryCalls() Option { return func(o *options) { o.unary = true } }

// DefaultCallOptions are applied to every call before the call's own
// options, e.g. client.DefaultCallOptions(client.Level(kvv1.Level_LEVEL_LOCAL_QUORUM)).
func DefaultCallOptions(opts ...CallOption) Option {
	return func(o *options) { o.defaults = append(o.defaults, opts...) }
}

// CallOption configures one Get, Put, Delete or Update.
type CallOption func(*callOptions)

type callOptions struct {
	cons        *kvv1.Consistency // points at consistency
	consistency kvv1.Consistency  // in the same allocation
	timeout     time.Duration
	context     []byte
	requestID   []byte
	hedge       time.Duration
	attempts    int
}

func (c *Client) callOpts(opts []CallOption) *callOptions {
	co := &callOptions{attempts: 10}
	co.cons = &co.consistency
	for _, o := range c.opts.defaults {
		o(co)
	}
	for _, o := range opts {
		o(co)
	}
	// co.cons is the client's own (Consistency copies): no caller's
	// message changes.
	co.cons.Dc = consistencyDC(co.cons, c.opts.localDC)
	return co
}

// Level sets the consistency level (default: the server's, QUORUM).
func Level(l kvv1.Level) CallOption { return func(o *callOptions) { o.cons.Level = l } }

// R sets an explicit read quorum; it overrides the level for reads.
func R(r uint32) CallOption { return func(o *callOptions) { o.cons.R = r } }

// W sets an explicit write quorum; it overrides the level for writes.
func W(w uint32) CallOption { return func(o *callOptions) { o.cons.W = w } }

// PrimaryOnly makes only primary replicas count toward R and W (strict
// quorums; hinted copies never count).
func PrimaryOnly() CallOption { return func(o *callOptions) { o.cons.PrimaryOnly = true } }

// Durable chooses whether replicas acknowledge a write only after their
// WAL is fsynced (true, the server default) or before (false: faster, a
// crash may lose the write).
func Durable(d bool) CallOption { return func(o *callOptions) { o.cons.Durable = &d } }

// ConsistencyDC overrides the datacenter that LOCAL_* levels count in
// (default: the client's LocalDC when it has one, else the datacenter of
// the node coordinating the request).
func ConsistencyDC(dc string) CallOption { return func(o *callOptions) { o.cons.Dc = dc } }

// Consistency sets the whole consistency message at once (replacing Level,
// R, W, PrimaryOnly, Durable and ConsistencyDC given before it); nil is
// the server's defaults, as if none of those had been given. The client
// copies c and never changes it.
func Consistency(c *kvv1.Consistency) CallOption {
	return func(o *callOptions) {
		cons := &kvv1.Consistency{Level: c.GetLevel(), R: c.GetR(), W: c.GetW(), PrimaryOnly: c.GetPrimaryOnly(), Dc: c.GetDc()}
		if c != nil {
			cons.Durable = c.Durable
		}
		o.cons = cons
	}
}

// consistencyDC is the datacenter a request's consistency should name: a
// LOCAL_* level naming none counts in localDC (the client's LocalDC, when
// set). Left empty, the coordinator would count in its own datacenter,
// which is another one when the request failed over or was hedged to a
// replica elsewhere: LOCAL_QUORUM would then wait on a remote quorum.
func consistencyDC(cons *kvv1.Consistency, localDC string) string {
	switch cons.GetLevel() {
	case kvv1.Level_LEVEL_LOCAL_ONE, kvv1.Level_LEVEL_LOCAL_QUORUM:
		if cons.GetDc() == "" {
			return localDC
		}
	}
	return cons.GetDc()
}

// withLocalDC is cons naming consistencyDC: cons itself when it does
// already, else a copy.
func withLocalDC(cons *kvv1.Consistency, localDC string) *kvv1.Consistency {
	dc := consistencyDC(cons, localDC)
	if dc == cons.GetDc() {
		return cons
	}
	out := proto.CloneOf(cons)
	out.Dc = dc
	return out
}

// Timeout bounds the call (all its attempts) by d, in addition to the
// caller's context deadline. 0 sets none (to lift a DefaultCallOptions
// timeout); a negative d (a deadline already past) fails the call at once
// with DEADLINE_EXCEEDED.
func Timeout(d time.Duration) CallOption { return func(o *callOptions) { o.timeout = d } }

// Context passes the causal context from a previous Get (or Put) to a Put
// or Delete: the write supersedes exactly the versions that context saw.
// Without it a Put is a blind write and becomes a sibling of what exists.
// Ignored by Get and Update.
func Context(ctx []byte) CallOption { return func(o *callOptions) { o.context = ctx } }

// RequestID sets the idempotency key of a Put or Delete (at most 64
// bytes): the cluster applies writes with the same ID once. Without it the
// client makes a random one per call, reused for every retry of that call.
func RequestID(id []byte) CallOption { return func(o *callOptions) { o.requestID = id } }

// Hedge makes a Get ask a second replica when the first has not answered
// after d; the first answer wins and the other call is cancelled. Zero
// (the default) disables hedging. Writes never hedge.
func Hedge(d time.Duration) CallOption { return func(o *callOptions) { o.hedge = d } }

// Attempts bounds the read-resolve-write cycles of Update (default 10).
func Attempts(n int) CallOption {
	return func(o *callOptions) {
		if n > 0 {
			o.attempts = n
		}
	}
}
