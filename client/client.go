package client

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/meridiankv/meridian/api/codec"
	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/placement"
)

// errorDomain marks statuses produced by a Meridian node (as opposed to the
// transport) in a google.rpc.ErrorInfo detail.
const errorDomain = "meridian.kv"

// ErrClosed is returned by calls on a closed Client.
var ErrClosed = errors.New("client: closed")

// ErrNoReplica is wrapped by the error of a call that could reach no node
// at all (every candidate was unreachable).
var ErrNoReplica = errors.New("client: no node reachable")

// ErrConflict is wrapped by Update's error when concurrent writers kept
// creating siblings for all its attempts (its gRPC status is ABORTED).
var ErrConflict = errors.New("client: update conflict")

// Client is a partition-aware Meridian client. It is safe for concurrent
// use; Close it when done.
type Client struct {
	opts  options
	seeds []string

	mu    sync.Mutex
	topo  *topology
	conns map[string]*grpc.ClientConn // by address
	kvs   map[string]kvv1.KVClient    // on conns, by address (made once)
	// streams are the call streams, by address (see stream.go); wg
	// tracks their goroutines.
	streams map[string]*callStream
	wg      sync.WaitGroup
	// departing are the connections to nodes that left the topology,
	// closed departWait later (or by Close): calls already sent on them
	// get their answers.
	departing map[*grpc.ClientConn]*time.Timer
	down      map[string]time.Time // node ID -> when it was found unreachable
	// lowOnDisk: node ID -> when it last refused a write for lack of disk
	// space; writes try it last for downFor after that.
	lowOnDisk map[string]time.Time
	// unanswered: address -> when a topology request to it last failed;
	// refreshes ask it after the others for downFor after that (only
	// addresses a refresh asked: the topology's, seeds).
	unanswered map[string]time.Time
	// unknownKeyspaces: keyspace -> when a call naming it, which the
	// topology did not list, made the client refresh (see
	// refreshForUnknownLocked).
	unknownKeyspaces map[string]time.Time

	// epoch mirrors topo.epoch for the request path; ahead is the address
	// of a node that answered with a newer epoch (asked first on the next
	// refresh).
	epoch atomic.Uint64
	ahead atomic.Pointer[string]
	// seen is the newest epoch a node has answered with: a refresh keeps
	// asking until it finds a node that far along (or runs out).
	seen atomic.Uint64

	// passes budgets the calls passed on because a node shed them.
	passes passBudget

	refreshNow chan struct{}
	// refreshed (c.mu) is closed when the next refresh the background
	// loop starts has ended: writers waiting for a new topology share it.
	refreshed chan struct{}
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// topology is an immutable snapshot of the cluster's layout.
type topology struct {
	epoch      uint64
	partitions int
	nodes      []*internalv1.TopologyNode
	keyspaces  map[string][]*internalv1.PartitionReplicas
}

func newTopology(r *internalv1.TopologyResponse) *topology {
	t := &topology{epoch: r.GetEpoch(), partitions: int(r.GetPartitions()), nodes: r.GetNodes(),
		keyspaces: make(map[string][]*internalv1.PartitionReplicas, len(r.GetKeyspaces()))}
	for _, ks := range r.GetKeyspaces() {
		t.keyspaces[ks.GetName()] = ks.GetPartitions()
	}
	return t
}

// Dial connects to the cluster through any of seeds (client addresses,
// host:port), learns its topology and keeps it current in the background.
// It fails when no seed answers before ctx ends, or when neither
// WithDialOptions nor Insecure was given.
func Dial(ctx context.Context, seeds []string, opts ...Option) (*Client, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if len(seeds) == 0 {
		return nil, errors.New("client: no seed address")
	}
	if o.insecure {
		o.dialOpts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, o.dialOpts...)
	} else if len(o.dialOpts) == 0 {
		return nil, errors.New("client: no transport credentials: pass client.WithDialOptions(grpc.WithTransportCredentials(...)) for TLS, or client.Insecure() for a plaintext cluster")
	}
	// Calls are marshalled into pooled buffers, small ones too; flow
	// control uses fixed windows of the size nodes use (no ping round
	// trip to measure the link whenever data arrives). A node that stops
	// answering without closing its connections (its host crashed, a
	// partition drops its traffic) is found out by keepalive pings: the
	// calls waiting on it then fail as UNAVAILABLE and go to the next
	// candidate, instead of each waiting out its deadline. Replies up to
	// maxReply are taken (gRPC's default of 4 MiB would refuse the answer
	// to a Put of a larger value, written all the same, and a large
	// topology). A connection attempt gives up after connectTimeout rather
	// than gRPC's 20 s: one to a host gone silent then fails (calls to it
	// fail at once, see connected) instead of staying in CONNECTING. The
	// caller's own options come after and win.
	o.dialOpts = append([]grpc.DialOption{grpc.WithDefaultCallOptions(grpc.ForceCodecV2(codec.Proto{}), grpc.MaxCallRecvMsgSize(maxReply)),
		grpc.WithStaticStreamWindowSize(flowWindow), grpc.WithStaticConnWindowSize(flowWindow),
		grpc.WithKeepaliveParams(o.keepalive),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.DefaultConfig, MinConnectTimeout: connectTimeout})}, o.dialOpts...)
	c := &Client{opts: o, seeds: append([]string(nil), seeds...), conns: map[string]*grpc.ClientConn{}, kvs: map[string]kvv1.KVClient{},
		streams: map[string]*callStream{}, down: map[string]time.Time{}, lowOnDisk: map[string]time.Time{}, unanswered: map[string]time.Time{},
		unknownKeyspaces: map[string]time.Time{}, refreshNow: make(chan struct{}, 1),
		refreshed: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	if err := c.refresh(ctx, c.seeds); err != nil {
		c.closeConns()
		return nil, fmt.Errorf("client: no seed reachable (tried %s): %w", strings.Join(seeds, ", "), err)
	}
	// Before any call reads it: the background loop starts below.
	c.mu.Lock()
	c.opts.routeDC = cmp.Or(c.opts.localDC, seedDC(c.topo.nodes, c.seeds))
	c.mu.Unlock()
	go c.loop()
	return c, nil
}

// seedDC is the datacenter of the first seed that is a node's client
// address ("" when none is): without LocalDC, a client is taken to run
// where the nodes it was given are, rather than sending every request to
// the datacenter whose name sorts first (preference lists list DCs in
// that order).
func seedDC(nodes []*internalv1.TopologyNode, seeds []string) string {
	for _, s := range seeds {
		for _, n := range nodes {
			if n.GetGrpcAddr() == s {
				return n.GetDc()
			}
		}
	}
	return ""
}

// Close stops the background refresh and closes every connection.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		close(c.stop)
		<-c.done
		c.closeConns()
	})
	return nil
}

func (c *Client) closeConns() {
	c.mu.Lock()
	conns, streams, departing := c.conns, c.streams, c.departing
	c.conns, c.streams, c.departing = map[string]*grpc.ClientConn{}, map[string]*callStream{}, nil
	clear(c.kvs)
	c.mu.Unlock()
	for _, s := range streams {
		s.close()
	}
	for _, cc := range conns {
		cc.Close()
	}
	for cc, t := range departing {
		if t != nil {
			t.Stop()
		}
		cc.Close()
	}
	c.wg.Wait()
}

// departWait is how long a connection to a node that left the topology
// stays open for the calls already sent on it (a node bounds every call
// by its maximum call time, 30 s by default).
const departWait = 30 * time.Second

// depart closes cc, a connection to a node that left the topology, after
// departWait (unless Close does first).
func (c *Client) depart(cc *grpc.ClientConn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.departing[cc]; !ok {
		return // Close came first
	}
	c.departing[cc] = time.AfterFunc(c.opts.departWait, func() {
		c.mu.Lock()
		_, ok := c.departing[cc]
		delete(c.departing, cc)
		c.mu.Unlock()
		if ok {
			cc.Close()
		}
	})
}

// Epoch is the topology epoch the client currently routes with.
func (c *Client) Epoch() uint64 { return c.epoch.Load() }

// learn notes the epoch a node answered with: newer than the client's
// means the topology changed (a node joined or left, a partition moved, a
// keyspace was created), so the client fetches it now, from that node
// first, rather than at its next periodic refresh.
func (c *Client) learn(e *kvv1.Effective, node string) {
	if e.GetEpoch() <= c.epoch.Load() {
		return
	}
	for {
		s := c.seen.Load()
		if e.GetEpoch() <= s || c.seen.CompareAndSwap(s, e.GetEpoch()) {
			break
		}
	}
	c.mu.Lock()
	for _, n := range c.topo.nodes {
		if n.GetId() == node {
			addr := n.GetGrpcAddr()
			c.ahead.Store(&addr)
		}
	}
	c.mu.Unlock()
	c.triggerRefresh()
}

// Refresh re-reads the topology now (from a live node, else a seed).
func (c *Client) Refresh(ctx context.Context) error {
	return c.refresh(ctx, c.refreshAddrs())
}

func (c *Client) loop() {
	defer close(c.done)
	// ctx ends at Close, and with it a refresh under way.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-c.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	t := time.NewTicker(c.opts.refresh)
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		case <-c.refreshNow:
			// Triggered refreshes (a newer epoch seen, a routing failure)
			// come at most every minRefreshGap, however many requests
			// ask for one.
			if wait := minRefreshGap - time.Since(last); wait > 0 {
				w := time.NewTimer(wait)
				select {
				case <-c.stop:
					w.Stop()
					return
				case <-w.C:
				}
			}
		}
		last = time.Now()
		c.mu.Lock()
		refreshed := c.refreshed
		c.refreshed = make(chan struct{})
		c.mu.Unlock()
		addrs := c.refreshAddrs()
		if a := c.ahead.Swap(nil); a != nil {
			addrs = append([]string{*a}, addrs...)
		}
		_ = c.refreshBounded(ctx, addrs)
		close(refreshed)
	}
}

// refreshBounded is refresh within refreshBudget topology timeouts: a few
// addresses may each use up their time (hosts gone silent), and the
// writers waiting for a background refresh are not held much longer than
// one address takes.
func (c *Client) refreshBounded(ctx context.Context, addrs []string) error {
	ctx, cancel := context.WithTimeout(ctx, refreshBudget*c.opts.topologyTimeout)
	defer cancel()
	return c.refresh(ctx, addrs)
}

// refreshBudget bounds a background refresh, in topology timeouts: two
// silent addresses, then the next one's answer.
const refreshBudget = 3

// nextRefresh returns a channel closed when the next refresh the
// background loop starts has ended (whether it found a topology or not).
func (c *Client) nextRefresh() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.refreshed
}

// maxReply bounds a node's answer the client takes: the largest message
// nodes exchange (256 MiB), as a Put's answer carries every sibling, the
// value written too, and values may be up to 64 MiB.
const maxReply = 256 << 20

// flowWindow is the HTTP/2 flow-control window of the client's
// connections and streams: 16 MiB, as the nodes' own.
const flowWindow = 16 << 20

// minRefreshGap spaces triggered topology refreshes.
const minRefreshGap = 100 * time.Millisecond

// triggerRefresh asks the background loop for a refresh (coalesced).
func (c *Client) triggerRefresh() {
	select {
	case c.refreshNow <- struct{}{}:
	default:
	}
}

// refreshAddrs lists where to ask for the topology: live nodes of the local
// DC, other live nodes, then the seeds.
func (c *Client) refreshAddrs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var local, other []string
	for _, n := range c.topo.nodes {
		if !n.GetAlive() || c.isDown(n.GetId()) {
			continue
		}
		if c.opts.routeDC == "" || n.GetDc() == c.opts.routeDC {
			local = append(local, n.GetGrpcAddr())
		} else {
			other = append(other, n.GetGrpcAddr())
		}
	}
	return append(append(local, other...), c.seeds...)
}

// refresh fetches the topology from the first of addrs that answers with
// at least the newest epoch a node has reported (else from the one with
// the newest) and installs it unless it is older than the current one.
// Each address gets topologyTimeout of ctx's time: one that does not
// answer (a host gone silent, listed first) must not use up the refresh.
func (c *Client) refresh(ctx context.Context, addrs []string) error {
	var errs []error
	var best *internalv1.TopologyResponse
	want := c.seen.Load()
	seen := map[string]bool{}
	for _, a := range c.unansweredLast(addrs) {
		if seen[a] {
			continue
		}
		seen[a] = true
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		cc, err := c.conn(a)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a, err))
			continue
		}
		actx, cancel := context.WithTimeout(ctx, c.opts.topologyTimeout)
		resp, err := internalv1.NewDiscoveryClient(cc).Topology(actx, &internalv1.TopologyRequest{})
		cancel()
		c.mu.Lock()
		if err != nil {
			c.unanswered[a] = time.Now()
		} else {
			delete(c.unanswered, a)
		}
		c.mu.Unlock()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a, err))
			continue
		}
		if best == nil || resp.GetEpoch() > best.GetEpoch() {
			best = resp
		}
		if resp.GetEpoch() >= want {
			break
		}
	}
	if best != nil {
		c.install(newTopology(best))
		return nil
	}
	if len(errs) == 0 {
		errs = append(errs, ctx.Err())
	}
	return errors.Join(errs...)
}

// unansweredLast orders addrs with those whose topology request failed
// within downFor last (in their order), so that a few silent hosts listed
// first do not use up every refresh's budget; expired marks are dropped.
func (c *Client) unansweredLast(addrs []string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var first, last []string
	for _, a := range addrs {
		if c.markedRecently(c.unanswered, a) {
			last = append(last, a)
		} else {
			first = append(first, a)
		}
	}
	return append(first, last...)
}

// install routes by t from now on unless it is older than the current
// topology, and closes the connections to addresses that left it once the
// calls already sent on them had time to be answered.
func (c *Client) install(t *topology) {
	for _, cc := range c.swapTopology(t) {
		c.depart(cc)
	}
}

// swapTopology installs t unless it is older than the current topology
// and returns the connections to addresses that left it (seeds stay),
// forgotten and their streams retired (they take no new calls and end
// once the node answered those sent), for the caller to close later. What
// the client noted about nodes that left (down, low on disk) is dropped.
func (c *Client) swapTopology(t *topology) []*grpc.ClientConn {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.topo != nil && t.epoch < c.topo.epoch {
		return nil
	}
	c.topo = t
	c.epoch.Store(t.epoch)
	keep := map[string]bool{}
	for _, a := range c.seeds {
		keep[a] = true
	}
	for _, n := range t.nodes {
		keep[n.GetGrpcAddr()] = true
	}
	for a := range c.unanswered {
		if !keep[a] {
			delete(c.unanswered, a)
		}
	}
	// Marks of nodes that left go too: nothing would ever look them up
	// (and so expire them) again, and node IDs come and go.
	ids := make(map[string]bool, len(t.nodes))
	for _, n := range t.nodes {
		ids[n.GetId()] = true
	}
	for _, marks := range []map[string]time.Time{c.down, c.lowOnDisk} {
		for id := range marks {
			if !ids[id] {
				delete(marks, id)
			}
		}
	}
	for ks := range c.unknownKeyspaces {
		if _, ok := t.keyspaces[ks]; ok {
			delete(c.unknownKeyspaces, ks)
		}
	}
	var gone []*grpc.ClientConn
	for a, cc := range c.conns {
		if !keep[a] {
			if s := c.streams[a]; s != nil {
				s.retire()
				delete(c.streams, a)
			}
			if c.departing == nil {
				c.departing = map[*grpc.ClientConn]*time.Timer{}
			}
			c.departing[cc] = nil // its timer is set by depart
			gone = append(gone, cc)
			delete(c.conns, a)
			delete(c.kvs, a)
		}
	}
	return gone
}

// kv returns the kv.v1 client for the node at addr, and the connection it
// uses: on its call stream (opened, or replaced when it failed or
// retired, on the way) unless the client sends every call unary or the
// node does not serve call streams.
func (c *Client) kv(addr string) (kvv1.KVClient, *grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cc, err := c.connLocked(addr)
	if err != nil {
		return nil, nil, err
	}
	kc := c.kvs[addr]
	if kc == nil {
		kc = kvv1.NewKVClient(cc)
		c.kvs[addr] = kc
	}
	k := nodeKV{KVClient: kc}
	if c.opts.unary {
		return k, cc, nil
	}
	s := c.streams[addr]
	switch {
	case s == nil:
	case s.unsupported() && time.Since(s.opened) < c.opts.reprobe:
		return k, cc, nil // unary; after a while, ask again (an upgrade)
	case s.usable():
		k.s = s
		return k, cc, nil
	}
	k.s = openCallStream(cc, c.opts.streamAge, c.opts.streamAfterTake, &c.wg)
	c.streams[addr] = k.s
	return k, cc, nil
}

// reconnects reports whether the client's connection to addr is ready,
// or gets ready within reconnectWait: the node still takes connections. A
// node refusing them fails at once, one not answering (traffic dropped)
// after reconnectWait; a connection the client closed (the node left the
// topology, or the client was closed) is not opened again.
func (c *Client) reconnects(ctx context.Context, addr string) bool {
	c.mu.Lock()
	cc := c.conns[addr]
	c.mu.Unlock()
	return cc != nil && awaitReady(ctx, cc, reconnectWait) == connectivity.Ready
}

// awaitReady waits until cc is ready, at most d and until ctx ends,
// connecting it if idle, and returns the state it ended in. A connection
// in transient failure (its last attempt failed: the node refused it, or
// did not answer within connectTimeout) or shut down is not waited for:
// gRPC fails a call on it at once.
func awaitReady(ctx context.Context, cc *grpc.ClientConn, d time.Duration) connectivity.State {
	st := cc.GetState()
	if st == connectivity.Ready {
		return st
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		switch st {
		case connectivity.Ready, connectivity.TransientFailure, connectivity.Shutdown:
			return st
		case connectivity.Idle:
			cc.Connect()
		}
		if !cc.WaitForStateChange(ctx, st) {
			return st
		}
		st = cc.GetState()
	}
}

// reconnectWait bounds how long a write waits for a new connection to the
// node its call failed on before going to the next candidate.
const reconnectWait = time.Second

// connectWait bounds how long a call waits for the connection to its node
// to get ready (a third of the call's time left, when that is less): a new
// connection takes a round trip or two, but one to a host gone silent
// (its traffic dropped, while the cluster may still see it alive) stays
// CONNECTING until connectTimeout, and a call waiting on it would hold
// until its deadline with no other replica asked. Past connectWait the
// node counts as unreachable (nothing was sent) and the call goes on.
const connectWait = time.Second

// connectTimeout bounds one connection attempt (gRPC's MinConnectTimeout,
// whose default is 20 s; gRPC allows an attempt its backoff delay when
// that is longer): a TCP and TLS handshake takes far less even between
// continents, with a lost packet or two.
const connectTimeout = 5 * time.Second

// connected returns nil once cc, the connection to the node at addr, is
// ready (at once, almost always), waiting at most connectWait (see
// there). Otherwise nothing was sent: the error is a notConnectedError
// (UNAVAILABLE: the node is unreachable, the call may go on), the
// caller's own status when ctx ended, or ErrClosed once c is closed.
func (c *Client) connected(ctx context.Context, cc *grpc.ClientConn, addr string) error {
	if cc.GetState() == connectivity.Ready {
		return nil
	}
	wait := connectWait
	if deadline, ok := ctx.Deadline(); ok {
		left := time.Until(deadline)
		if left <= 0 {
			return status.FromContextError(context.DeadlineExceeded).Err()
		}
		wait = min(wait, left/3)
	}
	st := awaitReady(ctx, cc, wait)
	switch {
	case st == connectivity.Ready:
		return nil
	case c.closed():
		return ErrClosed
	case ctx.Err() != nil:
		return status.FromContextError(ctx.Err()).Err()
	}
	return &notConnectedError{addr: addr, state: st, wait: wait}
}

// closed reports whether Close was called.
func (c *Client) closed() bool {
	select {
	case <-c.stop:
		return true
	default:
		return false
	}
}

// notConnectedError is a call's error when the connection to its node was
// not ready in time (connected): nothing was sent. Its status is
// UNAVAILABLE without Meridian's ErrorInfo, so the node counts as
// unreachable; the call is not sent to it again first (sameNodeFirst).
type notConnectedError struct {
	addr  string
	state connectivity.State
	wait  time.Duration
}

func (e *notConnectedError) Error() string {
	return fmt.Sprintf("client: no ready connection to %s within %v (%v)", e.addr, e.wait, e.state)
}

// GRPCStatus is the error's status for status.Code and status.FromError.
func (e *notConnectedError) GRPCStatus() *status.Status {
	return status.New(codes.Unavailable, e.Error())
}

// conn returns the (lazily connecting) connection to addr.
func (c *Client) conn(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connLocked(addr)
}

func (c *Client) connLocked(addr string) (*grpc.ClientConn, error) {
	if cc := c.conns[addr]; cc != nil {
		return cc, nil
	}
	select {
	case <-c.stop:
		return nil, ErrClosed
	default:
	}
	cc, err := grpc.NewClient(addr, c.opts.dialOpts...)
	if err != nil {
		return nil, err
	}
	c.conns[addr] = cc
	return cc, nil
}

// isDown reports whether id was found unreachable recently. c.mu held.
func (c *Client) isDown(id string) bool { return c.markedRecently(c.down, id) }

// markedRecently reports whether marks holds id from within downFor,
// forgetting an older mark. c.mu held.
func (c *Client) markedRecently(marks map[string]time.Time, id string) bool {
	at, ok := marks[id]
	if ok && time.Since(at) > c.opts.downFor {
		delete(marks, id)
		return false
	}
	return ok
}

func (c *Client) markDown(id string) {
	c.mu.Lock()
	c.down[id] = time.Now()
	c.mu.Unlock()
	c.triggerRefresh()
}

// isLowOnDisk reports whether id refused a write for lack of disk space
// within downFor. c.mu held.
func (c *Client) isLowOnDisk(id string) bool { return c.markedRecently(c.lowOnDisk, id) }

func (c *Client) markLowOnDisk(id string) {
	c.mu.Lock()
	c.lowOnDisk[id] = time.Now()
	c.mu.Unlock()
}

func (c *Client) markUp(id string) {
	c.mu.Lock()
	delete(c.down, id)
	c.mu.Unlock()
}

// target is a node a request may be sent to.
type target struct{ id, addr string }

// callKind says whether a call writes: a node that refused a write for
// lack of disk space recently is tried last for writes, not for reads.
type callKind uint8

const (
	callRead callKind = iota
	callWrite
)

// candidates orders where a request for key may go: live replicas in the
// local DC (preference order), live replicas elsewhere, replicas believed
// down (the client found them unreachable recently, or, for a write, they
// refused one for lack of disk; the local DC's first), then any other
// node (which forwards: correct, one hop slower; for a write, those low on
// disk last). A write tries the replicas the topology reports dead after
// all of those: the cluster cannot reach them, a write coordinated there
// could reach no other replica (it would wait out its deadline, and be
// final), and the host may well be silent. first, when not "", is the
// node a write was first sent to (retryUnreachable): it comes first, as
// the node that knows the write's request ID if it applied it.
func (c *Client) candidates(keyspace string, key []byte, kind callKind, first string) []target {
	if keyspace == "" {
		keyspace = "default"
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.topo
	out := make([]target, 0, len(t.nodes))
	var replicas []uint32 // indexes into t.nodes, preference order
	parts, ok := t.keyspaces[keyspace]
	if ok && t.partitions > 0 {
		if p := placement.PartitionOf(key, t.partitions); p < len(parts) {
			replicas = parts[p].GetNodes()
		}
	} else if ok || c.refreshForUnknownLocked(keyspace) {
		c.triggerRefresh() // a keyspace created since the last refresh?
	}
	low := func(n *internalv1.TopologyNode) bool { return kind == callWrite && c.isLowOnDisk(n.GetId()) }
	local := func(n *internalv1.TopologyNode) bool { return c.opts.routeDC == "" || n.GetDc() == c.opts.routeDC }
	// rank orders a replica: 0 live in the local DC, 1 live elsewhere, 2
	// and 3 believed down (or, for a write, low on disk) in the local DC
	// and elsewhere; for a write, 4 and 5 reported dead by the topology,
	// after the other nodes.
	rank := func(n *internalv1.TopologyNode) uint8 {
		var r uint8
		switch {
		case kind == callWrite && !n.GetAlive():
			r = 4
		case !n.GetAlive() || c.isDown(n.GetId()) || low(n):
			r = 2
		}
		if !local(n) {
			r++
		}
		return r
	}
	const skip = math.MaxUint8 // out of range, or listed twice
	var buf [8]uint8
	ranks := buf[:0]
	for j, i := range replicas {
		r := uint8(skip)
		if int(i) < len(t.nodes) && !slices.Contains(replicas[:j], i) {
			r = rank(t.nodes[i])
		}
		ranks = append(ranks, r)
	}
	addReplicas := func(from, to uint8) {
		for r := from; r <= to; r++ {
			for j, i := range replicas {
				if ranks[j] == r {
					n := t.nodes[i]
					out = append(out, target{n.GetId(), n.GetGrpcAddr()})
				}
			}
		}
	}
	addReplicas(0, 3)
	// Then any other live node, local DC first: it forwards (one low on
	// disk would refuse a write itself: those last).
	listed := func(i int) bool { return slices.Contains(replicas, uint32(i)) }
	for _, lowPass := range []bool{false, true} {
		for _, inDC := range []bool{true, false} {
			for i, n := range t.nodes {
				if listed(i) || !n.GetAlive() || c.isDown(n.GetId()) || low(n) != lowPass {
					continue
				}
				if local(n) == inDC {
					out = append(out, target{n.GetId(), n.GetGrpcAddr()})
				}
			}
		}
	}
	addReplicas(4, 5)
	if first != "" {
		if i := slices.IndexFunc(out, func(t target) bool { return t.id == first }); i > 0 {
			f := out[i]
			copy(out[1:i+1], out[:i])
			out[0] = f
		}
	}
	return out
}

// maxKeyspaceName is the longest name a keyspace may have (membership's
// rule): a call naming a longer one never makes the client refresh.
const maxKeyspaceName = 64

// maxUnknownKeyspaces bounds how many names refreshForUnknownLocked
// remembers.
const maxUnknownKeyspaces = 64

// refreshForUnknownLocked reports whether a call naming keyspace, which
// the topology does not list, should make the client re-read it (the
// keyspace may have been created since): the first time, then at most
// once per RefreshInterval, for at most maxUnknownKeyspaces names at a
// time. Calls to a keyspace that does not exist each get the node's
// NOT_FOUND, without costing a topology fetch each; one just created is
// also learned from the newer epoch its first answer carries. c.mu held.
func (c *Client) refreshForUnknownLocked(keyspace string) bool {
	if len(keyspace) > maxKeyspaceName {
		return false
	}
	if at, ok := c.unknownKeyspaces[keyspace]; ok && time.Since(at) < c.opts.refresh {
		return false
	}
	if len(c.unknownKeyspaces) >= maxUnknownKeyspaces {
		for ks, at := range c.unknownKeyspaces {
			if time.Since(at) >= c.opts.refresh {
				delete(c.unknownKeyspaces, ks)
			}
		}
		if len(c.unknownKeyspaces) >= maxUnknownKeyspaces {
			return false
		}
	}
	c.unknownKeyspaces[keyspace] = time.Now()
	return true
}

// unreachable reports whether err means the node could not be reached at
// all (so another node may be tried), as opposed to an answer from
// Meridian, which is final.
func unreachable(err error) bool {
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.Unavailable && meridianInfo(st) == nil
}

// timedOutAtNode reports whether err is a DEADLINE_EXCEEDED that did not
// come from ctx ending (nodeTimedOut).
func timedOutAtNode(ctx context.Context, err error) bool {
	deadline, ok := ctx.Deadline()
	return nodeTimedOut(err, ctx.Err(), deadline, ok, time.Now())
}

// nodeTimedOut reports whether err, a call's error at now, is a
// DEADLINE_EXCEEDED from the node rather than the caller's own deadline
// (ctxErr, deadline and hasDeadline are the caller's context's): the node
// gave up while the caller still had time (a coordinator's QUORUM_TIMEOUT,
// which it answers a moment before the caller's deadline, or a call that
// waited too long at the node). gRPC answers a call begun with its
// deadline already past with DEADLINE_EXCEEDED before the context's timer
// has fired (ctxErr still nil): that one is the caller's.
func nodeTimedOut(err, ctxErr error, deadline time.Time, hasDeadline bool, now time.Time) bool {
	if ctxErr != nil || status.Code(err) != codes.DeadlineExceeded {
		return false
	}
	return !hasDeadline || now.Before(deadline)
}

// overloaded reports whether err is a node shedding the call: its
// RESOURCE_EXHAUSTED with Meridian's OVERLOADED reason, which a node
// answers only before doing anything with a request (its admission
// control). Another replica may have room.
func overloaded(err error) bool { return refusedFor(err, "OVERLOADED") }

// diskLow reports whether err is a node refusing a write for lack of disk
// space: RESOURCE_EXHAUSTED with Meridian's DISK_LOW reason, answered before
// anything was written. Another replica may take the write.
func diskLow(err error) bool { return refusedFor(err, "DISK_LOW") }

// clockAhead reports whether err is a node refusing to coordinate a
// last-writer-wins write because its clock runs ahead of its peers':
// UNAVAILABLE with Meridian's CLOCK_AHEAD reason, nothing written (it
// found no other replica to take it). Another replica may.
func clockAhead(err error) bool { return statusFor(err, codes.Unavailable, "CLOCK_AHEAD") }

// refusedFor reports whether err is a Meridian node's RESOURCE_EXHAUSTED
// with the given ErrorInfo reason.
func refusedFor(err error, reason string) bool {
	return statusFor(err, codes.ResourceExhausted, reason)
}

// statusFor reports whether err is a Meridian node's status of code with
// the given ErrorInfo reason.
func statusFor(err error, code codes.Code, reason string) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != code {
		return false
	}
	info := meridianInfo(st)
	return info != nil && info.GetReason() == reason
}

// meridianInfo is the ErrorInfo a Meridian node puts in the statuses it
// answers with; nil when st has none (it came from the network).
func meridianInfo(st *status.Status) *errdetails.ErrorInfo {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == errorDomain {
			return info
		}
	}
	return nil
}

// maxShedPasses bounds how many times one call moves on to the next
// candidate because a node shed it: under a cluster-wide overload each
// pass is one more request for a node to refuse.
const maxShedPasses = 2

// passBudget limits passing shed calls on to about one for every ten
// calls (gRPC's retry throttling and Finagle's retry budget work the same
// way): a node that sheds now and then gets every such call taken
// elsewhere, while a cluster shedding most calls gets at most a tenth
// more requests instead of three times as many. Counted in tenths of a
// pass: each call earns one tenth, each pass spends ten; at most
// maxPassTenths are saved. The count is of tenths spent below that, so a
// new client (the zero value) starts with the budget full.
type passBudget struct{ spent atomic.Int64 }

const maxPassTenths = 100

func (b *passBudget) earn() {
	for {
		v := b.spent.Load()
		if v <= 0 || b.spent.CompareAndSwap(v, v-1) {
			return
		}
	}
}

func (b *passBudget) spend() bool {
	for {
		v := b.spent.Load()
		if v > maxPassTenths-10 {
			return false
		}
		if b.spent.CompareAndSwap(v, v+10) {
			return true
		}
	}
}

// passedOver is what one call moved on from: the nodes it could not
// reach, and the last of those that shed it.
type passedOver struct {
	unreachable []error
	shed        error // the last node's refusal for overload
	shedNode    string
	sheds       int
}

// next reports whether the call may go on to the next candidate after
// node answered err, and records why: an unreachable node (marked down),
// or a node that shed it (at most maxShedPasses times, within the
// client's budget).
func (p *passedOver) next(ctx context.Context, c *Client, node string, err error) bool {
	if timedOutAtNode(ctx, err) {
		// Replicas did not answer the node in time: the cluster may know
		// of a node gone (its topology's liveness), which the client
		// should route around. The call itself is over: a write may have
		// been applied, and a read has no time left worth another node.
		c.triggerRefresh()
	}
	if ctx.Err() != nil {
		return false
	}
	switch {
	case unreachable(err):
		c.markDown(node)
		p.unreachable = append(p.unreachable, fmt.Errorf("%s: %w", node, err))
		return true
	case diskLow(err):
		// Not load: a node low on disk refuses every write until space is
		// freed, and at no cost; each candidate is asked at most once, and
		// writes try this one last for a while.
		c.markLowOnDisk(node)
		p.shed, p.shedNode = err, node
		return true
	case clockAhead(err):
		// Nothing written, and no load to add to: each candidate is asked
		// at most once.
		p.shed, p.shedNode = err, node
		return true
	case overloaded(err) && p.sheds < maxShedPasses && c.passes.spend():
		p.sheds++
		p.shed, p.shedNode = err, node
		return true
	}
	return false
}

// failure is the call's error once no candidate is left: the caller's
// own (its gRPC status, CANCELED or DEADLINE_EXCEEDED), the last shed, or
// ErrNoReplica with why each node was unreachable (UNAVAILABLE).
func (p *passedOver) failure(ctx context.Context) (string, error) {
	switch {
	case ctx.Err() != nil:
		return "", status.FromContextError(ctx.Err()).Err()
	case p.shed != nil:
		return p.shedNode, p.shed
	}
	return "", &noReplicaError{why: errors.Join(p.unreachable...)}
}

// noReplicaError is the error of a call that reached no node: it wraps
// ErrNoReplica and why, and its gRPC status is UNAVAILABLE (as for a
// server gRPC could not reach), so that status.Code tells it too.
type noReplicaError struct{ why error }

func (e *noReplicaError) Error() string   { return fmt.Sprintf("%v: %v", ErrNoReplica, e.why) }
func (e *noReplicaError) Unwrap() []error { return []error{ErrNoReplica, e.why} }

// GRPCStatus is the error's status for status.Code and status.FromError.
func (e *noReplicaError) GRPCStatus() *status.Status { return status.New(codes.Unavailable, e.Error()) }

type answer[T any] struct {
	v    T
	node string
	err  error
}

// route sends call to the first reachable candidate for key, moving on to
// the next only when a node is unreachable or shed the call for overload
// (at most maxShedPasses times). With hedge > 0 a second
// candidate is started when the first has not answered after hedge; the
// first success wins. It returns the ID of the node that answered. first
// is nil but for a write that retryUnreachable may route again: the ID of
// the node it was first sent to, asked first (set once it was sent).
func route[T any](ctx context.Context, c *Client, keyspace string, key []byte, kind callKind, hedge time.Duration, first *string,
	call func(context.Context, kvv1.KVClient) (T, error)) (T, string, error) {
	var zero T
	if c.closed() {
		return zero, "", ErrClosed
	}
	c.passes.earn()
	var firstID string
	if first != nil {
		firstID = *first
	}
	cands := c.candidates(keyspace, key, kind, firstID)
	if len(cands) == 0 {
		c.triggerRefresh()
		return zero, "", &noReplicaError{why: errors.New("the topology lists no live node")}
	}
	if hedge <= 0 || len(cands) == 1 {
		return routeInline(ctx, c, cands, kind, first, call)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	cctx, cancel := context.WithCancel(ctx)
	defer cancel() // runs before wg.Wait: in-flight calls end promptly
	results := make(chan answer[T], len(cands))
	next, inflight := 0, 0
	launch := func() {
		t := cands[next]
		next++
		inflight++
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, _, err := attempt(cctx, c, t, call)
			results <- answer[T]{v: v, node: t.id, err: err}
		}()
	}
	launch()
	var hedgeC <-chan time.Time
	if hedge > 0 && len(cands) > 1 {
		timer := time.NewTimer(hedge)
		defer timer.Stop()
		hedgeC = timer.C
	}
	var passed passedOver
	var final error // a non-retryable answer, returned once nothing else is in flight
	for {
		select {
		case <-hedgeC:
			hedgeC = nil
			if next < len(cands) {
				launch()
			}
		case a := <-results:
			inflight--
			switch {
			case a.err == nil:
				c.markUp(a.node)
				return a.v, a.node, nil
			case passed.next(ctx, c, a.node, a.err):
				if next < len(cands) && final == nil {
					launch()
				}
			default:
				if final == nil {
					final = a.err
				}
			}
			if inflight == 0 {
				if final != nil {
					return zero, a.node, finalError(ctx, final)
				}
				node, err := passed.failure(ctx)
				return zero, node, err
			}
		}
	}
}

// routeInline is route without hedging: the candidates one after the
// other, on the caller's goroutine. A write whose node could not be
// reached is sent to that node once more, when a new connection to it
// gets ready soon (sameNodeFirst), before it goes to the next candidate.
func routeInline[T any](ctx context.Context, c *Client, cands []target, kind callKind, first *string,
	call func(context.Context, kvv1.KVClient) (T, error)) (T, string, error) {
	var zero T
	var passed passedOver
	for _, t := range cands {
		v, sent, err := attempt(ctx, c, t, call)
		if sameNodeFirst(kind, err) && ctx.Err() == nil && c.reconnects(ctx, t.addr) {
			var again bool
			v, again, err = attempt(ctx, c, t, call)
			sent = sent || again
		}
		if sent && first != nil && *first == "" {
			*first = t.id
		}
		switch {
		case err == nil:
			c.markUp(t.id)
			return v, t.id, nil
		case passed.next(ctx, c, t.id, err):
		default:
			return zero, t.id, finalError(ctx, err)
		}
	}
	node, err := passed.failure(ctx)
	return zero, node, err
}

// finalError is the error of a call that ends with err: err itself, but
// when the caller's context has ended and err only says the node could
// not be reached (the call would have gone on to the next candidate),
// the context's own status, CANCELED or DEADLINE_EXCEEDED, as the package
// promises (the end of the wait for a reconnection, say, is the caller's
// doing, not the node's).
func finalError(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil && unreachable(err) {
		return status.FromContextError(ctxErr).Err()
	}
	return err
}

// attempt sends call to the node t, once the connection to it is ready
// (connected); sent reports whether call was made (the node may have
// received it).
func attempt[T any](ctx context.Context, c *Client, t target, call func(context.Context, kvv1.KVClient) (T, error)) (v T, sent bool, err error) {
	kv, cc, err := c.kv(t.addr)
	if err == nil {
		err = c.connected(ctx, cc, t.addr)
	}
	if err != nil {
		return v, false, err
	}
	v, err = call(ctx, kv)
	return v, true, err
}

// sameNodeFirst reports whether a call of kind that failed with err goes
// to the same node again before the next candidate: a write the node may
// have received before its stream or connection failed (err is bare
// UNAVAILABLE, which does not say). That node recognises the write's
// request ID and answers a retry without applying it again; another
// replica knows the ID only once the write has reached it, so going there
// at once could apply the write twice. A read goes on at once, and so
// does a write that was not sent (no connection ready: notConnectedError).
func sameNodeFirst(kind callKind, err error) bool {
	var notSent *notConnectedError
	return kind == callWrite && unreachable(err) && !errors.As(err, &notSent)
}

// retryUnreachable runs a write's routing again, same request and so same
// request ID, after re-reading the topology, when no candidate could be
// reached (at most writePasses times, backing off, within ctx). Writers
// failing at once share the background loop's next refresh. do's
// argument is the ID of the node the write was first sent to ("" until
// it was sent), which route sets and asks first on every later pass: it
// knows the request ID if it applied the write, while a replica asked
// before it would apply the write again (a pass orders nodes found
// unreachable by preference, not by which one got the write).
func retryUnreachable[T any](ctx context.Context, c *Client, do func(first *string) (T, string, error)) (T, string, error) {
	var first string
	wait := 50 * time.Millisecond
	for pass := 1; ; pass++ {
		v, node, err := do(&first)
		if err == nil || !errors.Is(err, ErrNoReplica) || pass >= writePasses {
			return v, node, err
		}
		refreshed := c.nextRefresh()
		c.triggerRefresh()
		t := time.NewTimer(wait)
		ok := await(ctx, c.stop, t.C) && await(ctx, c.stop, refreshed)
		t.Stop()
		if !ok {
			// Not "no node reachable": the caller's context ended, or
			// the client was closed, before the next pass.
			var zero T
			if c.closed() {
				return zero, "", ErrClosed
			}
			return zero, "", status.FromContextError(ctx.Err()).Err()
		}
		wait *= 2
	}
}

// await waits for ch and reports whether it came before ctx's end and
// before stop closed.
func await[T any](ctx context.Context, stop <-chan struct{}, ch <-chan T) bool {
	select {
	case <-ctx.Done():
		return false
	case <-stop:
		return false
	case <-ch:
		return true
	}
}

// writePasses bounds how many times a write is routed again when no node
// could be reached.
const writePasses = 3

// withTimeout applies co's Timeout: 0 is none; a negative one (a deadline
// already past) has the call fail at once with DEADLINE_EXCEEDED.
func (c *Client) withTimeout(ctx context.Context, co *callOptions) (context.Context, context.CancelFunc) {
	if co.timeout != 0 {
		return context.WithTimeout(ctx, co.timeout)
	}
	return ctx, func() {}
}

func newRequestID() []byte {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return b
}

func liveValues(sibs []*kvv1.Sibling) [][]byte {
	var out [][]byte
	for _, s := range sibs {
		if !s.GetTombstone() {
			out = append(out, s.GetValue())
		}
	}
	return out
}

// GetResult is what Get returns.
type GetResult struct {
	// Values are the live (non-deleted) concurrent values; empty when the
	// key is absent or deleted.
	Values [][]byte
	// Siblings are every concurrent version, tombstones included.
	Siblings []*kvv1.Sibling
	// Context is the opaque causal context to pass to the next Put or
	// Delete of this key (client.Context), unchanged.
	Context []byte
	// Effective reports the consistency used and who answered.
	Effective *kvv1.Effective
	// Node is the ID of the node the client sent the request to.
	Node string
}

// PutResult is what Put returns.
type PutResult struct {
	// Context covers the new write and every sibling returned with it.
	Context []byte
	// Values are the key's live values after the write: more than one
	// means a concurrent writer (siblings).
	Values [][]byte
	// Siblings are the key's versions after the write.
	Siblings []*kvv1.Sibling
	// Effective reports the consistency used and who coordinated.
	Effective *kvv1.Effective
	// Node is the ID of the node the client sent the request to.
	Node string
	// RequestID is the idempotency key the write carried.
	RequestID []byte
}

// DeleteResult is what Delete returns.
type DeleteResult struct {
	Context   []byte
	Effective *kvv1.Effective
	// Node is the ID of the node the client sent the request to.
	Node string
	// RequestID is the idempotency key the delete carried.
	RequestID []byte
}

// Get reads key in keyspace ("" is "default") from a replica of the key.
// Options: Level, R, PrimaryOnly, ConsistencyDC, Timeout, Hedge.
func (c *Client) Get(ctx context.Context, keyspace string, key []byte, opts ...CallOption) (*GetResult, error) {
	co := c.callOpts(opts)
	ctx, cancel := c.withTimeout(ctx, co)
	defer cancel()
	req := &kvv1.GetRequest{Keyspace: keyspace, Key: key, Consistency: co.cons}
	resp, node, err := route(ctx, c, keyspace, key, callRead, co.hedge, nil, func(ctx context.Context, kc kvv1.KVClient) (*kvv1.GetResponse, error) {
		return kc.Get(ctx, req)
	})
	if err != nil {
		return nil, err
	}
	c.learn(resp.GetEffective(), node)
	return &GetResult{Values: liveValues(resp.GetSiblings()), Siblings: resp.GetSiblings(), Context: resp.GetContext(),
		Effective: resp.GetEffective(), Node: node}, nil
}

// Put writes value to key. Pass client.Context(ctx) from a Get to supersede
// what that Get saw; without it the write is blind and becomes a sibling.
// The write carries a request ID (RequestID, or a random one), the same on
// every retry: after a transport error it goes to the same node again
// first, then to the next replica (see the package documentation for the
// one case where it can still be applied twice). Options: Context,
// RequestID, Level, W, PrimaryOnly, Durable, ConsistencyDC, Timeout.
func (c *Client) Put(ctx context.Context, keyspace string, key, value []byte, opts ...CallOption) (*PutResult, error) {
	co := c.callOpts(opts)
	ctx, cancel := c.withTimeout(ctx, co)
	defer cancel()
	return c.put(ctx, keyspace, key, value, co.context, co)
}

func (c *Client) put(ctx context.Context, keyspace string, key, value, causal []byte, co *callOptions) (*PutResult, error) {
	id := co.requestID
	if len(id) == 0 {
		id = newRequestID()
	}
	req := &kvv1.PutRequest{Keyspace: keyspace, Key: key, Value: value, Context: causal, Consistency: co.cons, RequestId: id}
	resp, node, err := retryUnreachable(ctx, c, func(first *string) (*kvv1.PutResponse, string, error) {
		return route(ctx, c, keyspace, key, callWrite, 0, first, func(ctx context.Context, kc kvv1.KVClient) (*kvv1.PutResponse, error) {
			return kc.Put(ctx, req)
		})
	})
	if err != nil {
		return nil, err
	}
	c.learn(resp.GetEffective(), node)
	return &PutResult{Context: resp.GetContext(), Values: liveValues(resp.GetSiblings()), Siblings: resp.GetSiblings(),
		Effective: resp.GetEffective(), Node: node, RequestID: id}, nil
}

// Delete writes a tombstone superseding what client.Context(ctx) saw.
// Options as for Put (Durable, W, RequestID, ...).
func (c *Client) Delete(ctx context.Context, keyspace string, key []byte, opts ...CallOption) (*DeleteResult, error) {
	co := c.callOpts(opts)
	ctx, cancel := c.withTimeout(ctx, co)
	defer cancel()
	id := co.requestID
	if len(id) == 0 {
		id = newRequestID()
	}
	req := &kvv1.DeleteRequest{Keyspace: keyspace, Key: key, Context: co.context, Consistency: co.cons, RequestId: id}
	resp, node, err := retryUnreachable(ctx, c, func(first *string) (*kvv1.DeleteResponse, string, error) {
		return route(ctx, c, keyspace, key, callWrite, 0, first, func(ctx context.Context, kc kvv1.KVClient) (*kvv1.DeleteResponse, error) {
			return kc.Delete(ctx, req)
		})
	})
	if err != nil {
		return nil, err
	}
	c.learn(resp.GetEffective(), node)
	return &DeleteResult{Context: resp.GetContext(), Effective: resp.GetEffective(), Node: node, RequestID: id}, nil
}

// Update reads key, calls fn with its live values (zero, one, or several
// concurrent siblings to resolve), and writes fn's result with the read's
// context, so the write supersedes everything fn saw. If the write comes
// back with siblings (a concurrent writer got in between), the cycle runs
// again, at most Attempts times (default 10), after which the error wraps
// ErrConflict. Each cycle's write has a fresh request ID, kept for its
// retries (as Put's). An error from fn stops Update and is returned
// as is. Options: those of Get and Put (Context and RequestID are ignored)
// plus Attempts; Timeout bounds the whole Update.
func (c *Client) Update(ctx context.Context, keyspace string, key []byte, fn func(siblings [][]byte) ([]byte, error), opts ...CallOption) (*PutResult, error) {
	co := c.callOpts(opts)
	ctx, cancel := c.withTimeout(ctx, co)
	defer cancel()
	co.requestID = nil
	var last *PutResult
	for attempt := 0; attempt < co.attempts; attempt++ {
		req := &kvv1.GetRequest{Keyspace: keyspace, Key: key, Consistency: co.cons}
		resp, node, err := route(ctx, c, keyspace, key, callRead, co.hedge, nil, func(ctx context.Context, kc kvv1.KVClient) (*kvv1.GetResponse, error) {
			return kc.Get(ctx, req)
		})
		if err != nil {
			return nil, err
		}
		c.learn(resp.GetEffective(), node)
		value, err := fn(liveValues(resp.GetSiblings()))
		if err != nil {
			return nil, err
		}
		last, err = c.put(ctx, keyspace, key, value, resp.GetContext(), co)
		if err != nil {
			return nil, err
		}
		if len(last.Values) <= 1 {
			return last, nil
		}
	}
	return last, &conflictError{attempts: co.attempts}
}

// conflictError is Update's error when every attempt met a concurrent
// write: errors.Is ErrConflict, and a gRPC status ABORTED (as every other
// call error carries a status).
type conflictError struct{ attempts int }

func (e *conflictError) Error() string {
	return fmt.Sprintf("%v: %d attempts each met a concurrent write", ErrConflict, e.attempts)
}

func (e *conflictError) Unwrap() error { return ErrConflict }

func (e *conflictError) GRPCStatus() *status.Status { return status.New(codes.Aborted, e.Error()) }

// Call sends one raw kv.v1 call for key the way Get does: to the first
// reachable candidate replica (the caller's DC first), moving on only
// when a node is unreachable. A write sent this way is routed as a read
// (a failed call is not sent to the same node again first): for a Put or
// Delete with its whole response, use KV(), which routes them as Put and
// Delete do. It is for tools that need the whole
// response (explain timelines, effective levels); it returns the ID of the
// node that answered. The call is sent as given: a write without a
// request ID gets one from the node it reaches, so only that node can
// tell a retry from a new write (KV's Put and Delete add one).
func (c *Client) Call(ctx context.Context, keyspace string, key []byte, call func(context.Context, kvv1.KVClient) error) (string, error) {
	return c.call(ctx, keyspace, key, callRead, call)
}

// call is Call for a call of the given kind (a write tries nodes that
// refused one for lack of disk space last, is sent to the same node again
// first, and, when no node could be reached, is routed again after the
// topology is read again, as Put's: its request carries an ID). Like Get,
// Put and Delete it learns from the answer's epoch.
func (c *Client) call(ctx context.Context, keyspace string, key []byte, kind callKind, call func(context.Context, kvv1.KVClient) error) (string, error) {
	var eff *kvv1.Effective
	do := func(first *string) (struct{}, string, error) {
		return route(ctx, c, keyspace, key, kind, 0, first, func(ctx context.Context, kv kvv1.KVClient) (struct{}, error) {
			return struct{}{}, call(ctx, effectiveKV{KVClient: kv, eff: &eff})
		})
	}
	var node string
	var err error
	if kind == callWrite {
		_, node, err = retryUnreachable(ctx, c, do)
	} else {
		_, node, err = do(nil)
	}
	if err == nil {
		c.learn(eff, node)
	}
	return node, err
}

// effectiveKV is a node's kv.v1 client that keeps the Effective of the
// last answer in *eff (calls are routed one after the other: no race).
type effectiveKV struct {
	kvv1.KVClient
	eff **kvv1.Effective
}

func (k effectiveKV) Get(ctx context.Context, in *kvv1.GetRequest, opts ...grpc.CallOption) (*kvv1.GetResponse, error) {
	resp, err := k.KVClient.Get(ctx, in, opts...)
	if err == nil {
		*k.eff = resp.GetEffective()
	}
	return resp, err
}

func (k effectiveKV) Put(ctx context.Context, in *kvv1.PutRequest, opts ...grpc.CallOption) (*kvv1.PutResponse, error) {
	resp, err := k.KVClient.Put(ctx, in, opts...)
	if err == nil {
		*k.eff = resp.GetEffective()
	}
	return resp, err
}

func (k effectiveKV) Delete(ctx context.Context, in *kvv1.DeleteRequest, opts ...grpc.CallOption) (*kvv1.DeleteResponse, error) {
	resp, err := k.KVClient.Delete(ctx, in, opts...)
	if err == nil {
		*k.eff = resp.GetEffective()
	}
	return resp, err
}

// KV is a kv.v1.KVClient that routes every call by its request's keyspace
// and key (through Call): a drop-in for code written against the raw
// gRPC client. A Put or Delete without a request ID gets a new one, which
// every node it may be sent to sees; a LOCAL_* level without a DC counts
// in LocalDC when the client has one (as with Get, Put and Delete). The
// caller's request is never changed: these go on a copy.
func (c *Client) KV() kvv1.KVClient { return routedKV{c} }

type routedKV struct{ c *Client }

func (r routedKV) Get(ctx context.Context, in *kvv1.GetRequest, opts ...grpc.CallOption) (*kvv1.GetResponse, error) {
	if cons := withLocalDC(in.GetConsistency(), r.c.opts.localDC); cons != in.GetConsistency() {
		in = proto.CloneOf(in)
		in.Consistency = cons
	}
	var out *kvv1.GetResponse
	_, err := r.c.call(ctx, in.GetKeyspace(), in.GetKey(), callRead, func(ctx context.Context, kv kvv1.KVClient) (err error) {
		out, err = kv.Get(ctx, in, opts...)
		return err
	})
	return out, err
}

func (r routedKV) Put(ctx context.Context, in *kvv1.PutRequest, opts ...grpc.CallOption) (*kvv1.PutResponse, error) {
	// Without an ID of the client's, each node the write is sent to would
	// mint its own, and a retry after a failed call would apply it again.
	if cons := withLocalDC(in.GetConsistency(), r.c.opts.localDC); len(in.GetRequestId()) == 0 || cons != in.GetConsistency() {
		in = proto.CloneOf(in)
		in.Consistency = cons
		if len(in.RequestId) == 0 {
			in.RequestId = newRequestID()
		}
	}
	var out *kvv1.PutResponse
	_, err := r.c.call(ctx, in.GetKeyspace(), in.GetKey(), callWrite, func(ctx context.Context, kv kvv1.KVClient) (err error) {
		out, err = kv.Put(ctx, in, opts...)
		return err
	})
	return out, err
}

// Calls is not routed: a call stream goes to one node, and the Client's
// Get, Put and Delete already use one per node.
func (r routedKV) Calls(context.Context, ...grpc.CallOption) (grpc.BidiStreamingClient[kvv1.CallBatch, kvv1.ReplyBatch], error) {
	return nil, status.Error(codes.Unimplemented, "client: Calls streams go to one node; use Client.Get, Put and Delete, which use them")
}

func (r routedKV) Delete(ctx context.Context, in *kvv1.DeleteRequest, opts ...grpc.CallOption) (*kvv1.DeleteResponse, error) {
	if cons := withLocalDC(in.GetConsistency(), r.c.opts.localDC); len(in.GetRequestId()) == 0 || cons != in.GetConsistency() {
		in = proto.CloneOf(in)
		in.Consistency = cons
		if len(in.RequestId) == 0 {
			in.RequestId = newRequestID()
		}
	}
	var out *kvv1.DeleteResponse
	_, err := r.c.call(ctx, in.GetKeyspace(), in.GetKey(), callWrite, func(ctx context.Context, kv kvv1.KVClient) (err error) {
		out, err = kv.Delete(ctx, in, opts...)
		return err
	})
	return out, err
}
