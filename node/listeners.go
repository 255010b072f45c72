package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"github.com/meridiankv/meridian/api/codec"
	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/pki"
	"github.com/meridiankv/meridian/telemetry"
	"github.com/meridiankv/meridian/transport"
)

// A node serves three gRPC listeners:
//
//   - client (GRPCAddr): kv.v1.KV, health, and internal.v1.Discovery, which
//     tells where the node's other listeners are;
//   - peer (PeerAddr): internal.v1.Replica (and admin.v1.Admin, for the
//     node-to-node half of admin operations), for cluster members only;
//   - admin (AdminAddr): admin.v1.Admin and health; it may share the client
//     listener (AdminAddr "client").
//
// Peer addresses travel in gossip metadata; before gossip has joined, a
// node asks the initial cluster's client addresses through Discovery.

// maxHeaderBytes bounds a request's headers (gRPC metadata).
const maxHeaderBytes = 16 << 10

// SharedAdmin is the AdminAddr that serves the admin API on the client
// listener.
const SharedAdmin = "client"

// server is one listener and its gRPC server.
type server struct {
	name string
	lis  *capListener
	srv  *grpc.Server
}

// listen binds addr unless a listener was given.
func listen(name, addr string, given net.Listener) (net.Listener, error) {
	if given != nil {
		return given, nil
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s %s: %w (is another process using it?)", name, addr, err)
	}
	return lis, nil
}

// newGRPCServer applies the options every listener shares, plus extra.
// traceRoots: RPCs without a caller's trace may start one (the client and
// admin listeners; replica calls only join their request's trace).
// maxRecv bounds what callers send; maxSend what the node answers; ka is
// the connections' keepalive and ages (serverKeepalive).
func (n *Node) newGRPCServer(opts Options, maxRecv, maxSend int, traceRoots bool, ka keepalive.ServerParameters, extra ...grpc.ServerOption) *grpc.Server {
	// Only RPCs of the methods it serves are traced (set once it serves).
	var srv *grpc.Server
	known := telemetry.KnownMethods(func() *grpc.Server { return srv })
	srv = grpc.NewServer(append(append(extra,
		grpc.MaxConcurrentStreams(n.cfg.MaxConcurrentStreams),
		grpc.MaxRecvMsgSize(maxRecv),
		grpc.MaxSendMsgSize(maxSend),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		// Hygiene: a connection must finish its handshake quickly, idle
		// ones are closed, headers are bounded.
		grpc.ConnectionTimeout(n.cfg.ConnectionTimeout),
		grpc.KeepaliveParams(ka),
		grpc.MaxHeaderListSize(maxHeaderBytes),
		// Replies are marshalled into pooled buffers, small ones too.
		grpc.ForceServerCodecV2(codec.Proto{}),
		// Fixed flow-control windows (see transport.FlowWindow).
		grpc.StaticStreamWindowSize(transport.FlowWindow), grpc.StaticConnWindowSize(transport.FlowWindow),
		// Handlers run on kept goroutines rather than one new goroutine per
		// call, whose stack would grow again on every request.
		grpc.NumStreamWorkers(uint32(streamWorkers())),
	), append(n.tel.ServerOptions(traceRoots, known), opts.ServerOptions...)...)...)
	return srv
}

// serverKeepalive is a listener's keepalive and connection ages. With
// recycle (the client and admin listeners) connections older than
// max-connection-age are recycled, so load rebalances and a leaked client
// cannot pin resources forever. The peer listener's are not: members'
// call streams live as long as their connections, and a recycled
// connection would fail every call in flight when its grace ran out.
func (n *Node) serverKeepalive(recycle bool) keepalive.ServerParameters {
	ka := keepalive.ServerParameters{MaxConnectionIdle: n.cfg.MaxConnectionIdle, Time: time.Minute, Timeout: 20 * time.Second}
	if recycle {
		ka.MaxConnectionAge, ka.MaxConnectionAgeGrace = n.cfg.MaxConnectionAge, 30*time.Second
	}
	return ka
}

// streamWorkers is the number of goroutines each gRPC server keeps for
// running handlers (a call finding them all busy gets its own goroutine).
func streamWorkers() int { return 16 * runtime.GOMAXPROCS(0) }

// buildServers binds the three listeners and registers the services.
func (n *Node) buildServers(opts Options) error {
	lis, err := listen("grpc-addr", n.cfg.GRPCAddr, opts.Listener)
	if err != nil {
		return err
	}
	n.lis = lis
	n.health = health.NewServer()
	// Client messages: the largest value plus room for the rest.
	clientMax := int(n.cfg.MaxValueSize) + 1<<20
	// Admin answers (a plan, a transition's status, repair status: an
	// entry per partition per keyspace, megabytes with 65,536 partitions)
	// are made by the node, not sized by what a caller sent, and the CLI
	// takes up to transport.MaxMessageSize: a small max-value-size must
	// not make them RESOURCE_EXHAUSTED. When the admin service shares the
	// client listener, that listener answers up to the same.
	adminSend := max(clientMax, transport.MaxMessageSize)
	clientSend := clientMax
	if n.cfg.AdminAddr == SharedAdmin {
		clientSend = adminSend
	}
	z := newAuthorizer(n.cfg.Auth, n.cfg.Insecure, clientCertName)
	authOpts := []grpc.ServerOption{n.sec.clientServer(), grpc.ChainUnaryInterceptor(z.unary), grpc.ChainStreamInterceptor(z.stream)}
	if !z.open {
		// gRPC allocates the tap's arguments on every RPC: only where
		// someone is to be authenticated.
		authOpts = append(authOpts, grpc.InTapHandle(z.tap))
	}
	client := &server{name: "client", lis: newCapListener(lis, n.cfg.MaxConnections), srv: n.newGRPCServer(opts, clientMax, clientSend, true, n.serverKeepalive(true), authOpts...)}
	kvv1.RegisterKVServer(client.srv, &kvServer{n: n, z: z, maxMsg: clientMax})
	internalv1.RegisterDiscoveryServer(client.srv, &discoveryServer{n: n})
	healthpb.RegisterHealthServer(client.srv, n.health)
	n.servers = append(n.servers, client)

	plis, err := listen("peer-addr", n.peerListenAddr(), opts.PeerListener)
	if err != nil {
		return err
	}
	peer := &server{name: "peer", lis: newCapListener(plis, n.cfg.MaxConnections), srv: n.newGRPCServer(opts, transport.MaxMessageSize, transport.MaxMessageSize, false, n.serverKeepalive(false), n.sec.peerServer(),
		grpc.InTapHandle(n.peerTap), grpc.ChainUnaryInterceptor(n.checkPeer), grpc.ChainStreamInterceptor(n.checkPeerStream))}
	internalv1.RegisterReplicaServer(peer.srv, &replicaServer{n: n})
	internalv1.RegisterMetaServer(peer.srv, &metaServer{n: n})
	healthpb.RegisterHealthServer(peer.srv, n.health)
	if opts.Register != nil {
		opts.Register(peer.srv, n)
	}
	n.servers = append(n.servers, peer)
	n.peerLis = plis

	admin := client
	if n.cfg.AdminAddr != SharedAdmin {
		alis, err := listen("admin-addr", n.adminListenAddr(), opts.AdminListener)
		if err != nil {
			return err
		}
		admin = &server{name: "admin", lis: newCapListener(alis, n.cfg.MaxConnections), srv: n.newGRPCServer(opts, clientMax, adminSend, true, n.serverKeepalive(true), authOpts...)}
		healthpb.RegisterHealthServer(admin.srv, n.health)
		n.servers = append(n.servers, admin)
	}
	n.adminLis = admin.lis
	if opts.Register != nil {
		opts.Register(admin.srv, n)
	}
	if n.cfg.Reflection {
		reflection.Register(client.srv)
		if admin != client {
			reflection.Register(admin.srv)
		}
	}
	// Serving once the node routes by agreed metadata (a node restarted
	// with cached metadata does at once).
	n.health.SetServingStatus("", servingStatus(n.Topology().Agreed()))
	n.health.SetServingStatus(kvv1.KV_ServiceDesc.ServiceName, servingStatus(n.Topology().Agreed()))
	return nil
}

func servingStatus(ok bool) healthpb.HealthCheckResponse_ServingStatus {
	if ok {
		return healthpb.HealthCheckResponse_SERVING
	}
	return healthpb.HealthCheckResponse_NOT_SERVING
}

// serveAll starts serving every listener.
func (n *Node) serveAll() {
	for _, s := range n.servers {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			if err := s.srv.Serve(s.lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				n.log.Error("grpc server stopped", "listener", s.name, "err", err)
			}
		}()
	}
}

// stopServers stops every server gracefully, forcefully after timeout, and
// closes listeners never served.
func (n *Node) stopServers(timeout time.Duration) {
	var wg sync.WaitGroup
	for _, s := range n.servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stopped := make(chan struct{})
			go func() { s.srv.GracefulStop(); close(stopped) }()
			select {
			case <-stopped:
			case <-time.After(timeout):
				s.srv.Stop()
			}
			s.lis.Close()
		}()
	}
	wg.Wait()
	for _, l := range []net.Listener{n.lis, n.peerLis, n.adminLis} {
		if l != nil {
			l.Close()
		}
	}
}

func (n *Node) peerListenAddr() string {
	if n.cfg.PeerAddr != "" {
		return n.cfg.PeerAddr
	}
	host, _, _ := net.SplitHostPort(n.cfg.GRPCAddr)
	return net.JoinHostPort(host, "0")
}

func (n *Node) adminListenAddr() string {
	if n.cfg.AdminAddr != "" {
		return n.cfg.AdminAddr
	}
	host, _, _ := net.SplitHostPort(n.cfg.GRPCAddr)
	return net.JoinHostPort(host, "0")
}

// PeerAddr is the address of the node-to-node listener.
func (n *Node) PeerAddr() string {
	if n.peerLis == nil {
		return n.cfg.PeerAddr
	}
	return publicAddr(n.peerLis.Addr().String(), n.advHost)
}

// AdminAddr is the address of the admin listener (the client address when
// they share one).
func (n *Node) AdminAddr() string {
	if n.adminLis == nil {
		return n.cfg.AdminAddr
	}
	return publicAddr(n.adminLis.Addr().String(), n.advHost)
}

// addrBook holds the peer addresses of other nodes, from gossip metadata
// and discovery.
type addrBook struct {
	mu   sync.RWMutex
	peer map[string]string
	raft map[string]string
}

func (b *addrBook) setRaft(id, addr string) {
	if addr == "" {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.raft == nil {
		b.raft = map[string]string{}
	}
	b.raft[id] = addr
}

func (b *addrBook) getRaft(id string) (string, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	a, ok := b.raft[id]
	return a, ok
}

func (b *addrBook) set(id, addr string) {
	if addr == "" {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.peer == nil {
		b.peer = map[string]string{}
	}
	b.peer[id] = addr
}

func (b *addrBook) get(id string) (string, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	a, ok := b.peer[id]
	return a, ok
}

// resolve is the transport's resolver: a node's peer address.
func (n *Node) resolve(id string) (string, bool) {
	if id == n.cfg.ID {
		return n.PeerAddr(), true
	}
	if _, member := n.Topology().Nodes[id]; !member {
		return "", false
	}
	return n.book.get(id)
}

// memberEvents records peer addresses from gossip, then tells liveness.
type memberEvents struct{ n *Node }

func (e memberEvents) MemberChanged(m membership.Member) {
	e.n.book.setRaft(m.Meta.ID, m.Meta.RaftAddr)
	if _, member := e.n.Topology().Nodes[m.Meta.ID]; !member {
		return // gossip filters these too; never route to a stranger
	}
	e.n.book.set(m.Meta.ID, m.Meta.PeerAddr)
	wasDown := e.n.live.isDown(m.Meta.ID)
	e.n.live.MemberChanged(m)
	if ae := e.n.ae.Load(); wasDown && m.State == membership.StateAlive && ae != nil {
		// It may have missed writes whose hints were dropped or never
		// held: verify what it shares with this node first.
		id := m.Meta.ID
		e.n.spawn(func() { ae.MarkNode(id) })
	}
}

// discoveryServer answers who this node is and where its listeners are.
type discoveryServer struct {
	internalv1.UnimplementedDiscoveryServer
	n *Node
	// placed caches the part of Topology's answer that changes only with
	// the metadata (a message per partition and keyspace): it is open to
	// anyone, so a call must not rebuild it.
	placed atomic.Pointer[placedTopology]
}

// placedTopology is the cached part of a Topology answer, for one
// topology: the node IDs in order and every keyspace's placement. Its
// messages are shared by every answer and never changed (marshalling only
// reads them).
type placedTopology struct {
	topo      *membership.Topology
	ids       []string
	keyspaces []*internalv1.KeyspaceTopology
}

func (s *discoveryServer) Info(context.Context, *internalv1.InfoRequest) (*internalv1.InfoResponse, error) {
	n := s.n
	return &internalv1.InfoResponse{
		Id: n.cfg.ID, GrpcAddr: n.Addr(), Dc: n.self.DC, Rack: n.self.Rack, Weight: uint32(n.self.Weight),
		GossipAddr: n.GossipAddr(), PeerAddr: n.PeerAddr(), AdminAddr: n.AdminAddr(), Tls: !n.cfg.Insecure,
		RaftAddr: n.RaftAddr(), ClusterId: n.Topology().ClusterID, Epoch: n.Topology().Epoch,
	}, nil
}

// discover asks a member's client listener for its addresses.
func (n *Node) discover(ctx context.Context, id string) (*internalv1.InfoResponse, error) {
	m, ok := n.Topology().Nodes[id]
	if !ok {
		return nil, fmt.Errorf("%s is not a member", id)
	}
	conn, err := grpc.NewClient(m.GRPCAddr, append([]grpc.DialOption{n.sec.clientDial()}, n.tel.DialOptions()...)...)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	info, err := internalv1.NewDiscoveryClient(conn).Info(ctx, &internalv1.InfoRequest{})
	if err != nil {
		return nil, err
	}
	if info.GetId() != id {
		return nil, fmt.Errorf("%s at %s says it is %q", id, m.GRPCAddr, info.GetId())
	}
	n.book.set(id, info.GetPeerAddr())
	n.book.setRaft(id, info.GetRaftAddr())
	return info, nil
}

// clientCertName is the principal name of a caller's verified client
// certificate: its URI SAN meridian://client/NAME.
func clientCertName(ctx context.Context) (string, bool) {
	cert, ok := pki.PeerCertificate(ctx)
	if !ok {
		return "", false
	}
	return pki.ClientName(cert)
}

// Connections reports, per listener, how many connections are open and how
// many were refused over the cap.
func (n *Node) Connections() map[string][2]int64 {
	out := map[string][2]int64{}
	for _, s := range n.servers {
		out[s.name] = [2]int64{s.lis.Open(), s.lis.Refused()}
	}
	if n.raftCap != nil {
		out["raft"] = [2]int64{n.raftCap.Open(), n.raftCap.Refused()}
	}
	return out
}

// Every node-to-node request carries the cluster's name and the sender's
// topology epoch; a request from another cluster is refused.
const (
	mdCluster = "meridian-cluster"
	mdEpoch   = "meridian-epoch"
	// mdClusterID is the cluster ID from the metadata log ("" before).
	mdClusterID = "meridian-cluster-id"
)

// tagPeer adds the cluster name and epoch to an outgoing peer request.
func (n *Node) tagPeer(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return invoker(n.peerContext(ctx), method, req, reply, cc, opts...)
}

// peerContext adds the cluster name and ID and this node's epoch to an
// outgoing peer request's metadata.
func (n *Node) peerContext(ctx context.Context) context.Context {
	t := n.Topology()
	return metadata.AppendToOutgoingContext(ctx, mdCluster, n.cfg.ClusterName, mdEpoch, strconv.FormatUint(t.Epoch, 10), mdClusterID, t.ClusterID)
}

// tagPeerStream adds the cluster name and epoch to an outgoing peer
// stream (a pipe: each call on it carries its own epoch too).
func (n *Node) tagPeerStream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return streamer(n.peerContext(ctx), desc, cc, method, opts...)
}

// checkPeerStream is checkPeer for streams, checked when they open.
func (n *Node) checkPeerStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if strings.HasPrefix(info.FullMethod, "/grpc.health.v1.Health/") {
		return handler(srv, ss)
	}
	if err := n.admitPeer(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	if err := peerAdmin(info.FullMethod, nil); err != nil {
		return err
	}
	return handler(srv, ss)
}

// peerAdmin refuses the admin methods nodes do not call on each other.
// The peer listener serves the admin API for the node-to-node part of an
// operator's call (a fan-out's own node's share, LocalOnly; a transfer's
// progress; a snapshot's bytes), authorized by the calling node's
// certificate alone: the rest (keyspace DDL, plans, hints purges, repair
// runs) needs the admin role, on the admin listener. req is nil for a
// stream.
func peerAdmin(method string, req any) error {
	name, ok := strings.CutPrefix(method, "/admin.v1.Admin/")
	if !ok {
		return nil
	}
	switch name {
	case "Transfers", "ReadSnapshot":
		return nil
	case "InjectFault", "ListFaults", "ClearFaults", "CreateSnapshot", "ListSnapshots", "DeleteSnapshot":
		if r, ok := req.(interface{ GetLocalOnly() bool }); ok && r.GetLocalOnly() {
			return nil
		}
	}
	return status.Errorf(codes.PermissionDenied, "%s is not a node-to-node call: the peer listener does not serve it; call the admin listener with the admin role", method)
}

// admitPeer refuses a peer request from another cluster, or from a node
// that is not a member.
func (n *Node) admitPeer(ctx context.Context, method string) error {
	md, _ := metadata.FromIncomingContext(ctx)
	cluster := md.Get(mdCluster)
	if len(cluster) != 1 || cluster[0] != n.cfg.ClusterName {
		return status.Errorf(codes.FailedPrecondition, "request from cluster %q, but this node belongs to cluster %q: check --cluster-name and --initial-cluster", strings.Join(cluster, ","), n.cfg.ClusterName)
	}
	if e := md.Get(mdEpoch); len(e) != 1 {
		return status.Error(codes.FailedPrecondition, "peer request without a topology epoch")
	} else if _, err := strconv.ParseUint(e[0], 10, 64); err != nil {
		return status.Errorf(codes.FailedPrecondition, "peer request with a bad topology epoch %q", e[0])
	}
	if id := md.Get(mdClusterID); len(id) == 1 && id[0] != "" {
		if mine := n.Topology().ClusterID; mine != "" && mine != id[0] {
			return status.Errorf(codes.FailedPrecondition, "request from cluster ID %s, but this node belongs to cluster ID %s: the node was initialized in another cluster (wipe its data directory to move it)", id[0], mine)
		}
	}
	// The peer API is for members; a new node may only ask to join.
	if method != internalv1.Meta_Join_FullMethodName && !n.cfg.Insecure {
		cert, _ := pki.PeerCertificate(ctx)
		if id, ok := pki.NodeID(cert); !ok || !n.mayTalk(id) && !(method == internalv1.Replica_Write_FullMethodName && n.wasRemoved(id)) {
			return status.Errorf(codes.PermissionDenied, "node %q is not a member of this cluster: join it first (meridian serve --join)", id)
		}
	}
	return nil
}

// removedSender refuses from a node removed from the cluster all but
// hint hand-overs (admitPeer lets it call Write only): a removed node may
// hold hints, the only copy of acknowledged writes perhaps, for a member
// that was down when it left, and hands them over as hints (merged by
// their target, held for it by another replica). Its plain writes are
// routed by a topology that stopped at its removal, and its certificate
// stays valid: so a hand-over must carry a hint written before the
// removal, and is taken only within removedHandOverWindow of it.
func (n *Node) removedSender(ctx context.Context, method string, req any) error {
	if n.cfg.Insecure || method != internalv1.Replica_Write_FullMethodName {
		return nil
	}
	cert, _ := pki.PeerCertificate(ctx)
	id, _ := pki.NodeID(cert)
	if n.mayTalk(id) {
		return nil
	}
	m, ok := n.removedMember(id)
	if !ok {
		return status.Errorf(codes.PermissionDenied, "node %q is not a member of this cluster", id)
	}
	w, ok := req.(*internalv1.WriteRequest)
	if !ok || w.GetHintFor() == "" {
		return status.Errorf(codes.PermissionDenied, "node %q was removed from this cluster: it may only hand over its hints", id)
	}
	if m.RemovedAt == 0 {
		return status.Errorf(codes.PermissionDenied, "node %q was removed before removals were timed: its hints are not taken (anti-entropy repairs their partitions from the other replicas)", id)
	}
	removed, window := time.Unix(0, m.RemovedAt), n.removedHandOverWindow()
	if since := n.now().Sub(removed); since > window {
		return status.Errorf(codes.PermissionDenied, "node %q was removed %s ago, more than the %s a removed node may hand over its hints for: wipe it, and destroy its key", id, since.Round(time.Second), window)
	}
	// (Clocks differ: a hint born a little after the removal, by the
	// sender's clock, may still be older than it.)
	born := w.GetHintBornUnixNanos()
	if born <= 0 || time.Unix(0, born).After(removed.Add(time.Minute)) {
		return status.Errorf(codes.PermissionDenied, "node %q was removed at %s: it may only hand over hints written before", id, removed.UTC().Format(time.RFC3339))
	}
	// Its metadata stopped at its removal: a keyspace dropped and created
	// again under the same name since is not the one its hint is for
	// (allowing, again, a minute for clocks that differ).
	if ks, ok := n.Topology().Meta.Keyspaces[w.GetKeyspace()]; ok && time.Unix(0, ks.CreatedAt).After(time.Unix(0, born).Add(time.Minute)) {
		return status.Errorf(codes.PermissionDenied, "keyspace %q was created after the hint from removed node %q was written: its hint is for a keyspace dropped since", w.GetKeyspace(), id)
	}
	return nil
}

// removedHandOverWindow is how long after its removal a removed node's
// hint hand-overs are taken: as long as a hint may live (nine tenths of
// tombstone-grace), or a day where tombstones are never collected.
func (n *Node) removedHandOverWindow() time.Duration {
	if age := hintMaxAge(n.cfg.TombstoneGrace); age > 0 {
		return age
	}
	return 24 * time.Hour
}

// peerTap refuses a peer request from another cluster or from a node
// that is not a member as soon as its headers arrive: the handshake takes
// any node certificate of the CA (a joiner's, a removed node's, another
// cluster's), and a unary call's interceptors run only once its message,
// up to transport.MaxMessageSize, has been read into memory. (The
// interceptors check again: a server built without the tap stays safe.)
func (n *Node) peerTap(ctx context.Context, info *tap.Info) (context.Context, error) {
	m := info.FullMethodName
	if !strings.HasPrefix(m, "/internal.v1.") && !strings.HasPrefix(m, "/admin.v1.") {
		return ctx, nil // health, or a method not served here (UNIMPLEMENTED)
	}
	return ctx, n.admitPeer(ctx, m)
}

// checkPeer refuses peer requests from another cluster.
func (n *Node) checkPeer(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if strings.HasPrefix(info.FullMethod, "/grpc.health.v1.Health/") {
		return handler(ctx, req)
	}
	if err := n.admitPeer(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	if err := peerAdmin(info.FullMethod, req); err != nil {
		return nil, err
	}
	if err := n.removedSender(ctx, info.FullMethod, req); err != nil {
		return nil, err
	}
	// A forwarded write is coordinated here by this node's ring: when the
	// sender is ahead, catch up briefly first rather than route by a stale
	// ring. (Replica reads and writes need not wait: a replica behind the
	// sender accepts what the newer ring sends it, and checkRoute refuses
	// senders that are behind.)
	if info.FullMethod == internalv1.Replica_Coordinate_FullMethodName {
		if sender := peerEpoch(ctx); sender > n.Topology().Epoch && n.Topology().Agreed() {
			wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err := n.waitEpoch(wctx, sender)
			cancel()
			if err != nil {
				return nil, status.Errorf(codes.Unavailable, "this node's metadata is behind the sender's: %v", err)
			}
		}
	}
	return handler(ctx, req)
}

// Topology tells a partition-aware client where every partition lives.
func (s *discoveryServer) Topology(context.Context, *internalv1.TopologyRequest) (*internalv1.TopologyResponse, error) {
	n := s.n
	topo := n.Topology()
	p := s.placed.Load()
	if p == nil || p.topo != topo {
		p = placeTopology(topo)
		s.placed.Store(p)
	}
	resp := &internalv1.TopologyResponse{Epoch: topo.Epoch, Partitions: uint32(topo.Ring.Partitions()), Keyspaces: p.keyspaces,
		Nodes: make([]*internalv1.TopologyNode, len(p.ids))}
	for i, id := range p.ids {
		m := topo.Nodes[id]
		resp.Nodes[i] = &internalv1.TopologyNode{Id: id, Dc: m.DC, Rack: m.Rack, GrpcAddr: m.GRPCAddr, Alive: n.Alive(id)}
	}
	return resp, nil
}

// placeTopology builds the cached part of Topology's answer.
func placeTopology(topo *membership.Topology) *placedTopology {
	p := &placedTopology{topo: topo, ids: make([]string, 0, len(topo.Nodes))}
	for id := range topo.Nodes {
		p.ids = append(p.ids, id)
	}
	slices.Sort(p.ids)
	index := make(map[string]uint32, len(p.ids))
	for i, id := range p.ids {
		index[id] = uint32(i)
	}
	for _, name := range topo.KeyspaceNames() {
		ks := topo.Keyspaces[name]
		kt := &internalv1.KeyspaceTopology{Name: name, Partitions: make([]*internalv1.PartitionReplicas, topo.Ring.Partitions())}
		for part := range kt.Partitions {
			reps := ks.Table.Replicas(part)
			pr := &internalv1.PartitionReplicas{Nodes: make([]uint32, len(reps))}
			for i, r := range reps {
				pr.Nodes[i] = index[r.Node]
			}
			kt.Partitions[part] = pr
		}
		p.keyspaces = append(p.keyspaces, kt)
	}
	return p
}
