package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
)

// forgetDown forgets which nodes c found unreachable.
func forgetDown(c *Client) {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.down)
}

// callModes runs a test with calls on streams and with unary calls.
func callModes(t *testing.T, test func(t *testing.T, mode []Option)) {
	for _, unary := range []bool{false, true} {
		t.Run(fmt.Sprintf("unary=%v", unary), func(t *testing.T) {
			var mode []Option
			if unary {
				mode = append(mode, UnaryCalls())
			}
			test(t, mode)
		})
	}
}

// TestWriteRetriesTheSameNodeFirst: a write whose connection broke after
// the node received it goes to that node again (which knows its request
// ID), on a new stream or connection, not to another replica, which
// would not know it yet.
func TestWriteRetriesTheSameNodeFirst(t *testing.T) {
	callModes(t, func(t *testing.T, mode []Option) {
		cl := startKVCluster(t, "dc1", "dc1")
		c := cl.dial(t, mode...)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n1, n2 := cl.nodes[0], cl.nodes[1]
		n1.breakWrites.Store(1)
		put, err := c.Put(ctx, "", []byte("k"), []byte("v"))
		if err != nil {
			t.Fatal(err)
		}
		if put.Node != "n1" {
			t.Fatalf("put answered by %s, want n1 (asked again after its connection broke)", put.Node)
		}
		got := n1.got()
		if len(got) != 2 || !bytes.Equal(got[0].id, put.RequestID) || !bytes.Equal(got[1].id, put.RequestID) {
			t.Fatalf("n1 received %v, want the write twice with request ID %x", got, put.RequestID)
		}
		if len(n2.got()) != 0 {
			t.Fatalf("n2 received %v, want nothing", n2.got())
		}
		// A node that breaks again too: the next replica, same ID.
		n1.breakWrites.Store(2)
		del, err := c.Delete(ctx, "", []byte("k"))
		if err != nil || del.Node != "n2" {
			t.Fatalf("delete with n1 breaking twice: %v, %v; want n2", del, err)
		}
		if g := n2.got(); len(g) != 1 || !bytes.Equal(g[0].id, del.RequestID) {
			t.Fatalf("n2 received %v, want the delete with request ID %x", g, del.RequestID)
		}
		// Reads go on at once: nothing to apply twice.
		forgetDown(c)
		n1.readErr.Store(&errBroken)
		before := len(n1.got())
		if res, err := c.Get(ctx, "", []byte("k")); err != nil || res.Node != "n2" {
			t.Fatalf("get with n1 unreachable: %v, %v; want n2", res, err)
		}
		if n := len(n1.got()) - before; n != 1 {
			t.Fatalf("the read was sent to n1 %d times, want once", n)
		}
	})
}

// TestClockAheadGoesToTheNextReplica: a node refusing a write because its
// clock runs ahead (UNAVAILABLE with CLOCK_AHEAD: nothing written) is not
// asked again; the write goes to the next replica with the same request ID
// and the node is not marked down.
func TestClockAheadGoesToTheNextReplica(t *testing.T) {
	callModes(t, func(t *testing.T, mode []Option) {
		cl := startKVCluster(t, "dc1", "dc1")
		c := cl.dial(t, mode...)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n1, n2 := cl.nodes[0], cl.nodes[1]
		st, _ := status.New(codes.Unavailable, "this node's clock runs 3s ahead of its peers'").
			WithDetails(&errdetails.ErrorInfo{Reason: "CLOCK_AHEAD", Domain: errorDomain})
		ahead := st.Err()
		n1.writeErr.Store(&ahead)
		put, err := c.Put(ctx, "", []byte("k"), []byte("v"))
		if err != nil || put.Node != "n2" {
			t.Fatalf("put with n1's clock ahead: %v, %v; want n2", put, err)
		}
		if g1, g2 := n1.got(), n2.got(); len(g1) != 1 || len(g2) != 1 || !bytes.Equal(g1[0].id, g2[0].id) {
			t.Fatalf("n1 received %v, n2 %v: want the write once each, one request ID", g1, g2)
		}
		c.mu.Lock()
		down := c.isDown("n1")
		c.mu.Unlock()
		if down {
			t.Fatal("n1 marked down for its clock")
		}
	})
}

func TestSameNodeFirst(t *testing.T) {
	refused, _ := status.New(codes.Unavailable, "node not ready").WithDetails(&errdetails.ErrorInfo{Reason: "NOT_READY", Domain: errorDomain})
	for _, tc := range []struct {
		name string
		kind callKind
		err  error
		want bool
	}{
		{"a write, connection failed", callWrite, errBroken, true},
		{"a read, connection failed", callRead, errBroken, false},
		{"a write the node refused (its ErrorInfo)", callWrite, refused.Err(), false},
		{"a write that timed out", callWrite, status.Error(codes.DeadlineExceeded, "x"), false},
		{"a write answered", callWrite, nil, false},
		{"a write the client could not send (closed)", callWrite, ErrClosed, false},
	} {
		if got := sameNodeFirst(tc.kind, tc.err); got != tc.want {
			t.Errorf("%s: sameNodeFirst = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestRawWritesKeepOneRequestID: KV()'s Put and Delete give a request
// without an ID one, on a copy, so that every node the write may be sent to
// sees the same ID (each would mint its own otherwise).
func TestRawWritesKeepOneRequestID(t *testing.T) {
	callModes(t, func(t *testing.T, mode []Option) {
		cl := startKVCluster(t, "dc1", "dc1")
		c := cl.dial(t, mode...)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n1, n2 := cl.nodes[0], cl.nodes[1]
		n1.breakWrites.Store(4) // the write and its retry on n1, each time
		put := &kvv1.PutRequest{Key: []byte("k"), Value: []byte("v")}
		if _, err := c.KV().Put(ctx, put); err != nil {
			t.Fatal(err)
		}
		forgetDown(c) // n1 first again
		del := &kvv1.DeleteRequest{Key: []byte("k")}
		if _, err := c.KV().Delete(ctx, del); err != nil {
			t.Fatal(err)
		}
		if put.RequestId != nil || del.RequestId != nil {
			t.Fatal("the caller's request was changed")
		}
		for _, op := range []string{"put", "delete"} {
			var ids [][]byte
			for _, n := range cl.nodes {
				for _, r := range n.got() {
					if r.op == op {
						ids = append(ids, r.id)
					}
				}
			}
			if len(ids) != 3 {
				t.Fatalf("%s: %d sent, want 3 (twice to n1, then n2): n1 %v, n2 %v", op, len(ids), n1.got(), n2.got())
			}
			for _, id := range ids {
				if len(id) == 0 || !bytes.Equal(id, ids[0]) {
					t.Fatalf("%s: request IDs %x, want one, the same for every node", op, ids)
				}
			}
		}
	})
}

// TestLocalLevelsCountInTheLocalDC: with LocalDC set, a LOCAL_* level
// names that DC, so a request answered by a node in another DC (failed
// over, hedged) still counts there; the caller's messages are not
// changed. Consistency(nil) is the defaults.
func TestLocalLevelsCountInTheLocalDC(t *testing.T) {
	cl := startKVCluster(t, "dc2", "dc1")
	c := cl.dial(t, LocalDC("dc1"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n1, n2 := cl.nodes[0], cl.nodes[1]
	// n2 is the local replica; it is unreachable, so every request goes
	// to n1 in dc2.
	n2.breakWrites.Store(1 << 30)
	n2.readErr.Store(&errBroken)
	local := &kvv1.Consistency{Level: kvv1.Level_LEVEL_LOCAL_ONE}
	steps := []struct {
		name   string
		do     func() error
		wantDC string
		level  kvv1.Level
	}{
		{"Put LOCAL_QUORUM", func() error {
			_, err := c.Put(ctx, "", []byte("k"), []byte("v"), Level(kvv1.Level_LEVEL_LOCAL_QUORUM))
			return err
		}, "dc1", kvv1.Level_LEVEL_LOCAL_QUORUM},
		{"Get Consistency(LOCAL_ONE)", func() error {
			_, err := c.Get(ctx, "", []byte("k"), Consistency(local))
			return err
		}, "dc1", kvv1.Level_LEVEL_LOCAL_ONE},
		{"KV Get LOCAL_ONE", func() error {
			_, err := c.KV().Get(ctx, &kvv1.GetRequest{Key: []byte("k"), Consistency: local})
			return err
		}, "dc1", kvv1.Level_LEVEL_LOCAL_ONE},
		{"KV Put LOCAL_ONE", func() error {
			_, err := c.KV().Put(ctx, &kvv1.PutRequest{Key: []byte("k"), Consistency: local})
			return err
		}, "dc1", kvv1.Level_LEVEL_LOCAL_ONE},
		{"Get LOCAL_QUORUM in dc2", func() error {
			_, err := c.Get(ctx, "", []byte("k"), Level(kvv1.Level_LEVEL_LOCAL_QUORUM), ConsistencyDC("dc2"))
			return err
		}, "dc2", kvv1.Level_LEVEL_LOCAL_QUORUM},
		{"Get QUORUM", func() error {
			_, err := c.Get(ctx, "", []byte("k"), Level(kvv1.Level_LEVEL_QUORUM))
			return err
		}, "", kvv1.Level_LEVEL_QUORUM},
		{"Put Consistency(nil)", func() error {
			_, err := c.Put(ctx, "", []byte("k"), []byte("v"), Level(kvv1.Level_LEVEL_ALL), Consistency(nil))
			return err
		}, "", kvv1.Level_LEVEL_UNSPECIFIED},
	}
	for _, s := range steps {
		before := len(n1.got())
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		got := n1.got()
		if len(got) != before+1 {
			t.Fatalf("%s: n1 received %d requests, want 1", s.name, len(got)-before)
		}
		if cons := got[before].cons; cons.GetDc() != s.wantDC || cons.GetLevel() != s.level {
			t.Fatalf("%s: n1 received consistency %v, want level %v in DC %q", s.name, cons, s.level, s.wantDC)
		}
	}
	if local.Dc != "" {
		t.Fatalf("the caller's consistency was changed: %v", local)
	}
}

func TestConsistencyDC(t *testing.T) {
	lq, lo, q := kvv1.Level_LEVEL_LOCAL_QUORUM, kvv1.Level_LEVEL_LOCAL_ONE, kvv1.Level_LEVEL_QUORUM
	for _, tc := range []struct {
		cons    *kvv1.Consistency
		localDC string
		want    string
	}{
		{nil, "dc1", ""},
		{&kvv1.Consistency{Level: lq}, "dc1", "dc1"},
		{&kvv1.Consistency{Level: lo}, "dc1", "dc1"},
		{&kvv1.Consistency{Level: lq}, "", ""},
		{&kvv1.Consistency{Level: lq, Dc: "dc2"}, "dc1", "dc2"},
		{&kvv1.Consistency{Level: q}, "dc1", ""},
		{&kvv1.Consistency{Level: q, Dc: "dc2"}, "dc1", "dc2"},
		{&kvv1.Consistency{Level: kvv1.Level_LEVEL_EACH_QUORUM}, "dc1", ""},
		{&kvv1.Consistency{}, "dc1", ""}, // the server's default level, whatever it is
	} {
		if got := consistencyDC(tc.cons, tc.localDC); got != tc.want {
			t.Errorf("consistencyDC(%v, %q) = %q, want %q", tc.cons, tc.localDC, got, tc.want)
		}
	}
	// withLocalDC copies rather than change the caller's message.
	in := &kvv1.Consistency{Level: lq}
	if out := withLocalDC(in, "dc1"); out == in || out.GetDc() != "dc1" || in.GetDc() != "" {
		t.Fatalf("withLocalDC: %v from %v", out, in)
	}
	if out := withLocalDC(in, ""); out != in {
		t.Fatal("withLocalDC copied a message it did not change")
	}
}

// TestRawCallsAndUpdateLearnNewerEpochs: the answers to Update's read,
// to KV() and to Call carry the node's epoch too, and a newer one makes
// the client fetch the topology at once.
func TestRawCallsAndUpdateLearnNewerEpochs(t *testing.T) {
	errStop := errors.New("stop before the write")
	for name, do := range map[string]func(context.Context, *Client) error{
		"Update": func(ctx context.Context, c *Client) error {
			_, err := c.Update(ctx, "", []byte("k"), func([][]byte) ([]byte, error) { return nil, errStop })
			if !errors.Is(err, errStop) {
				return err
			}
			return nil
		},
		"KV": func(ctx context.Context, c *Client) error {
			_, err := c.KV().Get(ctx, &kvv1.GetRequest{Key: []byte("k")})
			return err
		},
		"Call": func(ctx context.Context, c *Client) error {
			_, err := c.Call(ctx, "", []byte("k"), func(ctx context.Context, kv kvv1.KVClient) error {
				_, err := kv.Get(ctx, &kvv1.GetRequest{Key: []byte("k")})
				return err
			})
			return err
		},
	} {
		t.Run(name, func(t *testing.T) {
			cl := startKVCluster(t, "dc1")
			c := cl.dial(t, RefreshInterval(time.Hour))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if c.Epoch() != 1 {
				t.Fatalf("epoch %d after dial", c.Epoch())
			}
			cl.epoch.Store(2)
			cl.nodes[0].effEpoch.Store(2)
			if err := do(ctx, c); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the client routes by epoch 2", func() bool { return c.Epoch() == 2 })
		})
	}
}

// TestWritersShareARefresh: writers that reach no node re-read the
// topology before routing again, sharing one refresh rather than each
// sweeping the cluster; the error is UNAVAILABLE and wraps ErrNoReplica.
func TestWritersShareARefresh(t *testing.T) {
	cl := startKVCluster(t, "dc1", "dc1", "dc1")
	c := cl.dial(t, UnaryCalls())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, n := range cl.nodes {
		n.breakWrites.Store(1 << 30)
	}
	before := cl.topologies()
	const writers = 20
	errs := make(chan error, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Put(ctx, "", fmt.Appendf(nil, "k%d", i), []byte("v"))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, ErrNoReplica) || status.Code(err) != codes.Unavailable {
			t.Fatalf("put with every node unreachable: %v (code %v), want UNAVAILABLE wrapping ErrNoReplica", err, status.Code(err))
		}
	}
	// Each writer routed writePasses times: refreshing per writer would
	// be (writePasses-1)*writers topology requests at least.
	if n := cl.topologies() - before; n >= writers {
		t.Fatalf("%d topology requests for %d writers, want them to share refreshes", n, writers)
	}
}

// TestNoLiveNodeIsUnavailable: a call with no candidate at all (a
// keyspace the topology does not list, and no live node to forward it)
// fails with UNAVAILABLE wrapping ErrNoReplica.
func TestNoLiveNodeIsUnavailable(t *testing.T) {
	cl := startKVCluster(t, "dc1")
	cl.nodes[0].dead.Store(true)
	c := cl.dial(t)
	_, err := c.Get(context.Background(), "unknown", []byte("k"))
	if !errors.Is(err, ErrNoReplica) || status.Code(err) != codes.Unavailable {
		t.Fatalf("get with no live node: %v (code %v), want UNAVAILABLE wrapping ErrNoReplica", err, status.Code(err))
	}
}

func TestFailureIsAStatus(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	shed := status.Error(codes.ResourceExhausted, "shed")
	for _, tc := range []struct {
		name      string
		ctx       context.Context
		passed    passedOver
		want      codes.Code
		noReplica bool
	}{
		{"cancelled", cancelled, passedOver{}, codes.Canceled, false},
		{"expired", expired, passedOver{}, codes.DeadlineExceeded, false},
		{"shed", context.Background(), passedOver{shed: shed, shedNode: "n1"}, codes.ResourceExhausted, false},
		{"unreachable", context.Background(), passedOver{unreachable: []error{errBroken}}, codes.Unavailable, true},
	} {
		_, err := tc.passed.failure(tc.ctx)
		if status.Code(err) != tc.want || errors.Is(err, ErrNoReplica) != tc.noReplica {
			t.Errorf("%s: %v (code %v), want code %v, ErrNoReplica %v", tc.name, err, status.Code(err), tc.want, tc.noReplica)
		}
	}
}

func TestNodeTimedOut(t *testing.T) {
	now := time.Now()
	deadlineErr := status.Error(codes.DeadlineExceeded, "quorum timeout")
	for _, tc := range []struct {
		name        string
		err, ctxErr error
		deadline    time.Time
		hasDeadline bool
		want        bool
	}{
		{"the node's, time left", deadlineErr, nil, now.Add(time.Second), true, true},
		{"the node's, no deadline", deadlineErr, nil, time.Time{}, false, true},
		{"the caller's deadline", deadlineErr, context.DeadlineExceeded, now.Add(-time.Millisecond), true, false},
		{"the caller's deadline, timer not fired yet", deadlineErr, nil, now, true, false},
		{"the caller cancelled", status.Error(codes.Canceled, "x"), context.Canceled, time.Time{}, false, false},
		{"unreachable", errBroken, nil, time.Time{}, false, false},
		{"success", nil, nil, time.Time{}, false, false},
	} {
		if got := nodeTimedOut(tc.err, tc.ctxErr, tc.deadline, tc.hasDeadline, now); got != tc.want {
			t.Errorf("%s: nodeTimedOut = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestNodeTimeoutTriggersARefresh: a node answering DEADLINE_EXCEEDED
// while the caller still had time makes the client re-read the topology
// (the cluster may know of a node gone); the call is not sent elsewhere.
func TestNodeTimeoutTriggersARefresh(t *testing.T) {
	cl := startKVCluster(t, "dc1", "dc1")
	c := cl.dial(t, RefreshInterval(time.Hour))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	timeout := status.Error(codes.DeadlineExceeded, "fake: quorum timeout")
	cl.nodes[0].readErr.Store(&timeout)
	before := cl.topologies()
	if _, err := c.Get(ctx, "", []byte("k")); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("get: %v, want the node's DEADLINE_EXCEEDED", err)
	}
	eventually(t, "the client re-reads the topology", func() bool { return cl.topologies() > before })
	if got := cl.nodes[1].got(); len(got) != 0 {
		t.Fatalf("n2 received %v: a call the node timed out went on", got)
	}
}

// TestRefreshSkipsASilentAddress: an address that takes connections and
// never answers gets its own timeout in a refresh, which goes on to the
// next address.
func TestRefreshSkipsASilentAddress(t *testing.T) {
	cl := startKVCluster(t, "dc1")
	c := cl.dial(t, RefreshInterval(time.Hour))
	c.opts.topologyTimeout = 200 * time.Millisecond
	silent := silentListener(t)
	cl.epoch.Store(2)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := c.refresh(ctx, []string{silent.Addr().String(), cl.nodes[0].addr}); err != nil {
		t.Fatalf("refresh with a silent first address: %v", err)
	}
	if c.Epoch() != 2 {
		t.Fatalf("epoch %d after the refresh, want 2", c.Epoch())
	}
}

// TestBackgroundRefreshIsBounded: a background refresh ends after
// refreshBudget topology timeouts, however many silent addresses come
// first: the answering address after that many is not asked. Those
// that did not answer are asked last by the next refresh, which reaches
// the answering one.
func TestBackgroundRefreshIsBounded(t *testing.T) {
	cl := startKVCluster(t, "dc1")
	c := cl.dial(t, RefreshInterval(time.Hour))
	c.opts.topologyTimeout = 100 * time.Millisecond
	var addrs []string
	for range refreshBudget {
		silent := silentListener(t)
		addrs = append(addrs, silent.Addr().String())
	}
	addrs = append(addrs, cl.nodes[0].addr)
	asked := cl.topologies()
	cl.epoch.Store(2)
	if err := c.refreshBounded(context.Background(), addrs); err == nil {
		t.Fatal("a refresh past its budget reported no error")
	}
	if got := cl.topologies(); got != asked || c.Epoch() != 1 {
		t.Fatalf("the answering address was asked (%d topology requests, was %d; epoch %d) after %d silent ones", got, asked, c.Epoch(), refreshBudget)
	}
	// The addresses that did not answer go last next time: the refresh
	// reaches the answering one.
	if err := c.refreshBounded(context.Background(), addrs); err != nil || c.Epoch() != 2 {
		t.Fatalf("the next refresh: %v, epoch %d; want the answering address asked first and epoch 2", err, c.Epoch())
	}
}

// silentListener takes connections on a loopback port and never answers
// on them, until the test ends.
func silentListener(t *testing.T) net.Listener {
	t.Helper()
	lis := listenLoopback(t)
	var held sync.WaitGroup
	held.Add(1)
	go func() {
		defer held.Done()
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			conns = append(conns, conn) // held open, never answered
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		held.Wait()
	})
	return lis
}

// TestSilentNodeIsFailedOver: a node that stops answering without closing
// anything is found out by keepalive pings, and a read waiting on it goes
// to the next replica instead of waiting out its deadline.
func TestSilentNodeIsFailedOver(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a keepalive ping to go unanswered (about 11 s)")
	}
	cl := startKVCluster(t, "dc1", "dc1")
	var proxies []*proxy
	for _, n := range cl.nodes {
		p := startProxy(t, n.addr)
		n.listAt(p.lis.Addr().String())
		proxies = append(proxies, p)
	}
	// gRPC pings no more often than every 10 s; a 1 s timeout keeps the
	// test short.
	c := cl.dial(t, func(o *options) { o.keepalive.Time, o.keepalive.Timeout = 10*time.Second, time.Second })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if res, err := c.Get(ctx, "", []byte("k")); err != nil || res.Node != "n1" {
		t.Fatalf("get: %v, %v; want n1", res, err)
	}
	proxies[0].silent.Store(true)
	start := time.Now()
	res, err := c.Get(ctx, "", []byte("k"))
	if err != nil || res.Node != "n2" {
		t.Fatalf("get with n1 silent: %v, %v after %v; want n2", res, err, time.Since(start))
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("failing over took %v", d)
	}
}

// blockingCloser makes the closing of connections to one address block
// until released, as gRPC's Close of a connection to a host gone silent
// can (it waits to write its GOAWAY).
type blockingCloser struct {
	addr    string
	started chan struct{} // closed when such a connection starts closing
	release chan struct{}
	once    sync.Once
}

func (b *blockingCloser) dial(ctx context.Context, addr string) (net.Conn, error) {
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil || addr != b.addr {
		return conn, err
	}
	return &blockingConn{Conn: conn, b: b}, nil
}

type blockingConn struct {
	net.Conn
	b *blockingCloser
}

func (c *blockingConn) Close() error {
	c.b.once.Do(func() { close(c.b.started) })
	<-c.b.release
	return c.Conn.Close()
}

// TestInstallClosesConnectionsOutsideTheLock: closing the connection to
// a node that left the topology may take seconds; requests (which take
// the client's lock) must not wait for it.
func TestInstallClosesConnectionsOutsideTheLock(t *testing.T) {
	cl := startKVCluster(t, "dc1", "dc1")
	n2 := cl.nodes[1]
	b := &blockingCloser{addr: n2.addr, started: make(chan struct{}), release: make(chan struct{})}
	c := cl.dial(t, WithDialOptions(grpc.WithContextDialer(b.dial)), RefreshInterval(time.Hour), func(o *options) { o.departWait = time.Millisecond })
	released := false
	release := func() {
		if !released {
			released = true
			close(b.release)
		}
	}
	defer release()
	cc, err := c.conn(n2.addr)
	if err != nil {
		t.Fatal(err)
	}
	cc.Connect()
	eventually(t, "the connection to n2 is ready", func() bool { return cc.GetState() == connectivity.Ready })

	// A topology without n2.
	resp, err := cl.nodes[0].Topology(context.Background(), &internalv1.TopologyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	resp.Epoch = 2
	resp.Nodes = resp.Nodes[:1]
	resp.Keyspaces[0].Partitions[0].Nodes = []uint32{0}
	installed := make(chan struct{})
	go func() {
		defer close(installed)
		c.install(newTopology(resp))
	}()
	select {
	case <-b.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the connection to n2 was not closed")
	}
	eventually(t, "the client's lock is free while the connection closes", func() bool {
		if !c.mu.TryLock() {
			return false
		}
		c.mu.Unlock()
		return true
	})
	if c.Epoch() != 2 {
		t.Fatalf("epoch %d while the connection closes, want 2", c.Epoch())
	}
	release()
	<-installed
}

// TestStreamClosedByTheClientIsUnavailable: calls waiting on a stream the
// client closed (a node leaving the topology, say) fail as UNAVAILABLE,
// which sends them to the next candidate, never as CANCELED: their
// callers cancelled nothing.
func TestStreamClosedByTheClientIsUnavailable(t *testing.T) {
	cl := startKVCluster(t, "dc1", "dc1")
	c := cl.dial(t)
	n1 := cl.nodes[0]
	n1.holdReads.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type result struct {
		res *GetResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := c.Get(ctx, "", []byte("k"))
		done <- result{res, err}
	}()
	eventually(t, "n1 holds the read", func() bool { return len(n1.got()) == 1 })
	c.mu.Lock()
	s := c.streams[n1.addr]
	c.mu.Unlock()
	// Closed, the stream fails its calls with what the sender or the
	// receiver saw first: context.Canceled, or gRPC's CANCELED status,
	// which fail gets here before the stream's goroutines most times.
	s.close()
	s.fail(status.Error(codes.Canceled, "context canceled"))
	r := <-done
	if r.err != nil || r.res.Node != "n2" {
		t.Fatalf("get on a stream the client closed: %v, %v; want n2's answer", r.res, r.err)
	}
}

func TestStreamError(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		closed bool
		want   codes.Code
	}{
		{"closed by the client, as gRPC reports it", status.Error(codes.Canceled, "context canceled"), true, codes.Unavailable},
		{"closed by the client, the sender's view", context.Canceled, true, codes.Unavailable},
		{"the node ended it", fmt.Errorf("send: %w", errors.New("EOF wrapped")), false, codes.Unavailable},
		{"the node's status", status.Error(codes.Unauthenticated, "no token"), false, codes.Unauthenticated},
		{"no call streams", status.Error(codes.Unimplemented, "unknown method"), false, codes.Unimplemented},
		{"the node cancelled it", status.Error(codes.Canceled, "by the node"), false, codes.Canceled},
	} {
		if got := status.Code(streamError(tc.err, tc.closed)); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestGivenUpCallWaitsForItsMarshalling: a call whose caller gives up
// while the sender has taken it but not yet marshalled it returns only
// once marshalled: the caller may then reuse the key and value buffers.
func TestGivenUpCallWaitsForItsMarshalling(t *testing.T) {
	f := startFake(t, false)
	var armed sync.Once
	taken, release := make(chan struct{}), make(chan struct{})
	hook := func() {
		armed.Do(func() {
			close(taken)
			<-release
		})
	}
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	c := dialFake(t, f, func(o *options) { o.streamAfterTake = hook })
	ctx, cancel := context.WithCancel(context.Background())
	value := bytes.Repeat([]byte("v"), 100)
	returned := make(chan error, 1)
	go func() {
		_, err := c.Put(ctx, "", []byte("k"), value)
		returned <- err
	}()
	select {
	case <-taken:
	case <-time.After(10 * time.Second):
		t.Fatal("the sender took no batch")
	}
	cancel()
	c.mu.Lock()
	s := c.streams[f.addr]
	c.mu.Unlock()
	eventually(t, "the call waits for the sender", func() bool {
		select {
		case err := <-returned:
			t.Fatalf("the call returned (%v) while the sender was still to read its request", err)
		default:
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.mu.marshalWaiters == 1
	})
	released = true
	close(release)
	if err := <-returned; status.Code(err) != codes.Canceled {
		t.Fatalf("put: %v, want CANCELED", err)
	}
	for i := range value {
		value[i] = 'x' // the caller's to reuse: no race with the sender
	}
	if _, err := c.Put(context.Background(), "", []byte("k"), value); err != nil {
		t.Fatal(err)
	}
}

// The call stream's codec passes a pre-marshalled batch on as is.
func TestStreamCodecPassesPreEncodedBytes(t *testing.T) {
	batch := &kvv1.CallBatch{Calls: []*kvv1.Call{{Id: 3, Op: &kvv1.Call_Get{Get: &kvv1.GetRequest{Key: []byte("k")}}}}}
	data, err := streamCodec{}.Marshal(batch)
	if err != nil {
		t.Fatal(err)
	}
	want := data.Materialize()
	msg := &preEncoded{data: data}
	got, err := streamCodec{}.Marshal(msg)
	if err != nil || msg.data != nil {
		t.Fatalf("marshal: %v; the message kept its bytes: %v", err, msg.data != nil)
	}
	if !bytes.Equal(got.Materialize(), want) {
		t.Fatal("the bytes changed")
	}
	got.Free()
	var back kvv1.CallBatch
	if err := proto.Unmarshal(want, &back); err != nil || !proto.Equal(&back, batch) {
		t.Fatalf("round trip: %v, %v", &back, err)
	}
}

// TestDepartedNodeAnswersCallsInFlight: a topology change that drops a
// node retires its stream instead of cutting it: a write already sent to
// it gets its answer, and is not sent to another node (as a new write,
// for all that node knows).
func TestDepartedNodeAnswersCallsInFlight(t *testing.T) {
	cl := startKVCluster(t, "dc1", "dc1", "dc1")
	n1, n2, n3 := cl.nodes[0], cl.nodes[1], cl.nodes[2]
	n1.dead.Store(true) // n2 is the first candidate; n1 stays the seed
	c := cl.dial(t, RefreshInterval(time.Hour))
	hold := make(chan struct{})
	n2.holdPuts.Store(&hold)
	type result struct {
		res *PutResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := c.Put(context.Background(), "", []byte("k"), []byte("v"))
		done <- result{res, err}
	}()
	eventually(t, "n2 holds the put", func() bool { return len(n2.got()) == 1 })

	resp, err := n3.Topology(context.Background(), &internalv1.TopologyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	resp.Epoch = 2 // n2 left
	resp.Nodes = []*internalv1.TopologyNode{resp.Nodes[0], resp.Nodes[2]}
	resp.Keyspaces[0].Partitions[0].Nodes = []uint32{0, 1}
	c.install(newTopology(resp))
	close(hold)
	r := <-done
	if r.err != nil || r.res.Node != "n2" {
		t.Fatalf("a put n2 held while it left the topology: %+v, %v; want n2's answer", r.res, r.err)
	}
	for _, n := range []*kvNode{n1, n3} {
		if got := n.got(); len(got) != 0 {
			t.Fatalf("%s received %v, want nothing (the write was answered by n2)", n.id, got)
		}
	}
}

func TestSeedDC(t *testing.T) {
	nodes := []*internalv1.TopologyNode{{Id: "n1", Dc: "dc1", GrpcAddr: "10.0.0.1:7001"}, {Id: "n2", Dc: "dc2", GrpcAddr: "10.0.0.2:7001"}}
	for _, c := range []struct {
		seeds []string
		want  string
	}{
		{[]string{"10.0.0.2:7001", "10.0.0.1:7001"}, "dc2"},
		{[]string{"lb.example:7001", "10.0.0.1:7001"}, "dc1"}, // the first seed that is a node's address
		{[]string{"lb.example:7001"}, ""},                     // none is: no preference
	} {
		if got := seedDC(nodes, c.seeds); got != c.want {
			t.Errorf("seedDC(%v) = %q, want %q", c.seeds, got, c.want)
		}
	}
}

// TestRawWritesReRouteLikePut: KV()'s Put and Delete, like Put and Delete,
// are routed again (same request ID) after re-reading the topology when
// no node could be reached on the first pass.
func TestRawWritesReRouteLikePut(t *testing.T) {
	cl := startKVCluster(t, "dc1", "dc1")
	c := cl.dial(t, UnaryCalls())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, n := range cl.nodes {
		n.breakWrites.Store(2) // the write and its retry on the same node
	}
	if _, err := c.Put(ctx, "", []byte("k"), []byte("v")); err != nil {
		t.Fatalf("Put with every node breaking a first pass: %v", err)
	}
	for _, n := range cl.nodes {
		n.breakWrites.Store(2)
	}
	if _, err := c.KV().Put(ctx, &kvv1.PutRequest{Key: []byte("k"), Value: []byte("w")}); err != nil {
		t.Fatalf("KV().Put with every node breaking a first pass: %v", err)
	}
	for _, n := range cl.nodes {
		n.breakWrites.Store(2)
	}
	if _, err := c.KV().Delete(ctx, &kvv1.DeleteRequest{Key: []byte("k")}); err != nil {
		t.Fatalf("KV().Delete with every node breaking a first pass: %v", err)
	}
}

// TestUnconnectedNodeIsFailedOver: a node the cluster sees alive whose
// address takes connections and never answers (its traffic dropped) has
// no ready connection. A call does not wait for one until its deadline:
// after connectWait it goes to the next replica, and the node is marked
// down. A write is not sent to it again first (it never got it).
func TestUnconnectedNodeIsFailedOver(t *testing.T) {
	callModes(t, func(t *testing.T, mode []Option) {
		cl := startKVCluster(t, "dc1", "dc1", "dc1")
		silent := silentListener(t)
		cl.nodes[0].listAt(silent.Addr().String())
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := Dial(ctx, []string{cl.nodes[1].addr}, append([]Option{Insecure()}, mode...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		start := time.Now()
		res, err := c.Get(context.Background(), "", []byte("k"), Timeout(3*time.Second))
		if err != nil || res.Node != "n2" {
			t.Fatalf("get with n1 silent: %v, %v after %v; want n2's answer", res, err, time.Since(start))
		}
		if d := time.Since(start); d > connectWait+time.Second {
			t.Fatalf("get with n1 silent took %v, want about connectWait (%v)", d, connectWait)
		}
		c.mu.Lock()
		down := c.isDown("n1")
		c.mu.Unlock()
		if !down {
			t.Fatal("n1 not marked down")
		}
		forgetDown(c) // n1 first again
		start = time.Now()
		put, err := c.Put(context.Background(), "", []byte("k"), []byte("v"), Timeout(3*time.Second))
		if err != nil || put.Node != "n2" {
			t.Fatalf("put with n1 silent: %v, %v after %v; want n2's answer", put, err, time.Since(start))
		}
		if d := time.Since(start); d > connectWait+time.Second {
			t.Fatalf("put with n1 silent took %v, want about connectWait (%v)", d, connectWait)
		}
	})
}

// TestCandidateOrder: replicas live in the local DC, live elsewhere,
// believed down (local DC first); then other live nodes; a write tries
// replicas the topology reports dead after those, and the node it was
// first sent to first.
func TestCandidateOrder(t *testing.T) {
	cl := startKVCluster(t, "dc1")
	c := cl.dial(t, LocalDC("dc1"), RefreshInterval(time.Hour))
	node := func(id, dc string, alive bool) *internalv1.TopologyNode {
		return &internalv1.TopologyNode{Id: id, Dc: dc, GrpcAddr: id + ".invalid:1", Alive: alive}
	}
	c.install(newTopology(&internalv1.TopologyResponse{Epoch: 2, Partitions: 1,
		Nodes: []*internalv1.TopologyNode{node("n1", "dc1", true), node("n2", "dc2", true), node("n3", "dc1", false),
			node("n4", "dc2", true), node("n5", "dc1", true)},
		// n2 is preferred, then n1 and n3; n4 and n5 are not replicas.
		Keyspaces: []*internalv1.KeyspaceTopology{{Name: "default", Partitions: []*internalv1.PartitionReplicas{{Nodes: []uint32{1, 0, 2}}}}}}))
	for _, tc := range []struct {
		name  string
		down  []string
		kind  callKind
		first string
		want  string
	}{
		{"read", nil, callRead, "", "n1 n2 n3 n5 n4"},
		{"write", nil, callWrite, "", "n1 n2 n5 n4 n3"},
		{"read, n1 down", []string{"n1"}, callRead, "", "n2 n1 n3 n5 n4"},
		{"write, n1 down", []string{"n1"}, callWrite, "", "n2 n1 n5 n4 n3"},
		{"read, n1 and n2 down", []string{"n1", "n2"}, callRead, "", "n1 n3 n2 n5 n4"},
		{"write, n1 and n2 down", []string{"n1", "n2"}, callWrite, "", "n1 n2 n5 n4 n3"},
		{"write first sent to n2", []string{"n1", "n2"}, callWrite, "n2", "n2 n1 n5 n4 n3"},
		{"write first sent to n3", nil, callWrite, "n3", "n3 n1 n2 n5 n4"},
		{"write first sent to a node gone", nil, callWrite, "n9", "n1 n2 n5 n4 n3"},
	} {
		forgetDown(c)
		for _, id := range tc.down {
			c.markDown(id)
		}
		var got []string
		for _, cand := range c.candidates("", []byte("k"), tc.kind, tc.first) {
			got = append(got, cand.id)
		}
		if g := strings.Join(got, " "); g != tc.want {
			t.Errorf("%s: candidates %s, want %s", tc.name, g, tc.want)
		}
	}
}

// TestLaterPassesAskTheFirstNodeFirst: a write that reached no node is
// routed again, first to the node it was first sent to (which knows its
// request ID if it applied it), not to the first by preference among the
// nodes now all found unreachable, which would apply it a second time.
func TestLaterPassesAskTheFirstNodeFirst(t *testing.T) {
	callModes(t, func(t *testing.T, mode []Option) {
		for _, tc := range []struct {
			name      string
			downFirst string // marked down before the write
			want      string
		}{
			{"the local replica first", "", "n2"},
			{"the remote replica first, the local one down", "n2", "n1"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				// n1 is preferred, n2 is in the client's DC.
				cl := startKVCluster(t, "dc1", "dc2")
				c := cl.dial(t, append(mode, LocalDC("dc2"))...)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if tc.downFirst != "" {
					c.markDown(tc.downFirst)
				}
				for _, n := range cl.nodes {
					n.breakWrites.Store(2) // the write and its retry on the same node
				}
				put, err := c.Put(ctx, "", []byte("k"), []byte("v"))
				if err != nil || put.Node != tc.want {
					t.Fatalf("put with every node breaking a first pass: %v, %v; want %s's answer", put, err, tc.want)
				}
				for _, n := range cl.nodes {
					got := n.got()
					want := 2
					if n.id == tc.want {
						want = 3
					}
					if len(got) != want {
						t.Fatalf("%s received %d writes, want %d", n.id, len(got), want)
					}
					for _, r := range got {
						if !bytes.Equal(r.id, put.RequestID) {
							t.Fatalf("%s received request ID %x, want %x", n.id, r.id, put.RequestID)
						}
					}
				}
			})
		}
	})
}

// TestCancelledMidRetryIsCanceled: a write whose caller gives up while it
// waits for a new connection to its node, or between routing passes,
// fails with CANCELED, not with the node's UNAVAILABLE or "no node
// reachable"; closing the client between passes fails it with ErrClosed.
func TestCancelledMidRetryIsCanceled(t *testing.T) {
	t.Run("reconnecting", func(t *testing.T) {
		cl := startKVCluster(t, "dc1")
		n1 := cl.nodes[0]
		p := startProxy(t, n1.addr)
		n1.listAt(p.lis.Addr().String())
		c := cl.dial(t, UnaryCalls(), RefreshInterval(time.Hour))
		conn := func() *grpc.ClientConn {
			c.mu.Lock()
			defer c.mu.Unlock()
			return c.conns[p.lis.Addr().String()]
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		go func() {
			_, err := c.call(ctx, "", []byte("k"), callWrite, func(context.Context, kvv1.KVClient) error {
				// The write may have reached the node; its connection
				// drops, and a new one never gets ready.
				p.cut()
				for deadline := time.Now().Add(10 * time.Second); conn().GetState() == connectivity.Ready; time.Sleep(time.Millisecond) {
					if time.Now().After(deadline) {
						return errors.New("the connection stayed ready")
					}
				}
				return errBroken
			})
			done <- err
		}()
		eventually(t, "the write waits for a new connection to n1", func() bool {
			return conn().GetState() == connectivity.Connecting
		})
		cancel()
		select {
		case err := <-done:
			if status.Code(err) != codes.Canceled {
				t.Fatalf("write cancelled while reconnecting: %v, want CANCELED", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the write did not return")
		}
	})
	for _, how := range []string{"cancelled", "closed"} {
		t.Run("between passes, "+how, func(t *testing.T) {
			cl := startKVCluster(t, "dc1", "dc1")
			c := cl.dial(t, UnaryCalls(), RefreshInterval(time.Hour))
			hold := make(chan struct{})
			defer close(hold)
			for _, n := range cl.nodes {
				n.breakWrites.Store(1 << 30)
				n.holdTopology.Store(&hold)
			}
			before := cl.topologies()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() {
				_, err := c.Put(ctx, "", []byte("k"), []byte("v"))
				done <- err
			}()
			// The first pass is over (both nodes found unreachable, each
			// having got the write twice) and the refresh the next pass
			// waits for is held.
			eventually(t, "the write waits for the next pass", func() bool {
				c.mu.Lock()
				down := c.isDown("n1") && c.isDown("n2")
				c.mu.Unlock()
				return down && cl.topologies() > before
			})
			want := func(err error) bool { return status.Code(err) == codes.Canceled }
			if how == "closed" {
				c.Close()
				want = func(err error) bool { return errors.Is(err, ErrClosed) }
			} else {
				cancel()
			}
			select {
			case err := <-done:
				if !want(err) {
					t.Fatalf("write %s between passes: %v", how, err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the write did not return")
			}
		})
	}
}

// TestUnknownKeyspaceRefreshesOncePerInterval: calls naming a keyspace
// the topology does not list make the client re-read it once, not each
// (a keyspace that does not exist would cost a topology fetch per call);
// once RefreshInterval has passed, the next one does again.
func TestUnknownKeyspaceRefreshesOncePerInterval(t *testing.T) {
	cl := startKVCluster(t, "dc1", "dc1")
	c := cl.dial(t, RefreshInterval(time.Hour))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	idle := func() bool { return len(c.refreshNow) == 0 } // no refresh asked for and not started
	before := cl.topologies()
	for range 100 {
		if _, err := c.Get(ctx, "nosuch", []byte("k")); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the refresh loop took any request", idle)
	}
	if n := cl.topologies() - before; n > 2 {
		t.Fatalf("100 calls to an unknown keyspace made %d topology requests, want at most 2", n)
	}
	c.mu.Lock()
	c.unknownKeyspaces["nosuch"] = time.Now().Add(-2 * time.Hour)
	c.mu.Unlock()
	before = cl.topologies()
	if _, err := c.Get(ctx, "nosuch", []byte("k")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a call after RefreshInterval makes the client refresh", func() bool { return cl.topologies() > before })
}

// TestDepartedNodesAreForgotten: what the client noted about a node (down,
// low on disk) goes when the node leaves the topology.
func TestDepartedNodesAreForgotten(t *testing.T) {
	cl := startKVCluster(t, "dc1", "dc1")
	c := cl.dial(t, RefreshInterval(time.Hour))
	for _, id := range []string{"n1", "n2"} {
		c.markDown(id)
		c.markLowOnDisk(id)
	}
	resp, err := cl.nodes[0].Topology(context.Background(), &internalv1.TopologyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	resp.Epoch = 2 // n2 left
	resp.Nodes = resp.Nodes[:1]
	resp.Keyspaces[0].Partitions[0].Nodes = []uint32{0}
	c.install(newTopology(resp))
	c.mu.Lock()
	defer c.mu.Unlock()
	_, down2 := c.down["n2"]
	_, low2 := c.lowOnDisk["n2"]
	_, down1 := c.down["n1"]
	_, low1 := c.lowOnDisk["n1"]
	if down2 || low2 || !down1 || !low1 {
		t.Fatalf("after n2 left: n2 down %v, low on disk %v (want neither); n1 down %v, low on disk %v (want both)", down2, low2, down1, low1)
	}
}
