package node

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/coordinator"
	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/pki"
)

// The cluster metadata: a Raft group (membership.MetaLog) whose applied
// state becomes the node's topology. The first start with an initial
// cluster bootstraps the group; the leader proposes the initial metadata
// from its flags; every later start reads the agreed state (cached in the
// store so a restarted node routes by its last known epoch at once) and
// never rebuilds the ring from flags.

const metaCacheKey = "cluster/meta"

// epochWaiters lets callers wait for the applied epoch to reach a value.
type epochWaiters struct {
	mu sync.Mutex
	ch chan struct{} // closed and replaced on every change
}

func (w *epochWaiters) changed() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch == nil {
		w.ch = make(chan struct{})
	}
	return w.ch
}

func (w *epochWaiters) signal() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch != nil {
		close(w.ch)
	}
	w.ch = make(chan struct{})
}

// waitEpoch waits until this node applied metadata epoch e.
func (n *Node) waitEpoch(ctx context.Context, e uint64) error {
	for {
		ch := n.epochs.changed()
		if t := n.Topology(); t.Agreed() && t.Epoch >= e {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("this node's metadata is at epoch %d, waiting for %d: %w", n.Topology().Epoch, e, ctx.Err())
		case <-ch:
		}
	}
}

// WaitAgreed waits until this node routes by agreed metadata.
func (n *Node) WaitAgreed(ctx context.Context) error { return n.waitEpoch(ctx, 1) }

// loadCachedMeta reads the metadata this node last applied.
func (n *Node) loadCachedMeta() (*membership.MetaState, error) {
	var st *membership.MetaState
	err := n.store.ScanMeta(metaCacheKey, func(name string, v []byte) error {
		if name != metaCacheKey {
			return nil
		}
		st = &membership.MetaState{}
		if err := json.Unmarshal(v, st); err != nil {
			return fmt.Errorf("cached cluster metadata: %w", err)
		}
		return nil
	})
	return st, err
}

// startMeta opens the node's member of the metadata group.
func (n *Node) startMeta(opts Options) error {
	lis, err := listen("raft-addr", n.raftListenAddr(), opts.RaftListener)
	if err != nil {
		return err
	}
	n.raftLis = lis
	// Like the gRPC listeners: at most max-connections, each handshaken
	// (and its first request begun) within connection-timeout. The Raft
	// transport starts a goroutine with a 256 KiB buffer per connection
	// and sets no deadline on reads.
	n.raftCap = newCapListener(lis, n.cfg.MaxConnections)
	lis = n.raftCap
	if !n.cfg.Insecure {
		lis = tls.NewListener(lis, n.sec.src.ServerConfig(pki.ServerOptions{
			RequireClientCert: true,
			Authorize: func(cert *x509.Certificate) error {
				id, ok := pki.NodeID(cert)
				if !ok {
					return errors.New("not a node certificate")
				}
				if !n.mayTalk(id) {
					return fmt.Errorf("node %q is not a member of this cluster", id)
				}
				return nil
			},
		}))
	}
	lis = firstBytesListener{Listener: lis, timeout: n.cfg.ConnectionTimeout}
	var sender func(net.Conn) (string, error)
	if !n.cfg.Insecure {
		sender = raftSender
	}
	var voters, nonvoters []string
	if n.cfg.InitialCluster != "" && n.cfg.JoinAddr == "" {
		members, _ := ParseInitialCluster(n.cfg.InitialCluster)
		recs := make([]membership.MemberRecord, len(members))
		for i, m := range members {
			recs[i] = membership.MemberRecord{ID: m.ID, DC: m.DC}
		}
		voters = membership.PickVoters(recs)
		for _, m := range members {
			if !slices.Contains(voters, m.ID) {
				nonvoters = append(nonvoters, m.ID)
			}
		}
	}
	dir := "" // the memory engine keeps the log in memory too
	if n.cfg.Engine != "memory" && n.cfg.DataDir != "" {
		dir = filepath.Join(n.cfg.DataDir, "raft")
	}
	n.meta, err = membership.StartMetaLog(membership.MetaLogConfig{
		ID: n.cfg.ID, Dir: dir, Listener: lis, Dial: n.dialRaft,
		Sender: sender, Member: n.mayTalk,
		Voters: voters, NonVoters: nonvoters,
		OnChange: n.metaChanged,
		Alive:    n.voterAlive,
		Fast:     n.cfg.GossipProfile == "local" || n.cfg.GossipProfile == "test",
		Logger:   n.log,
	})
	return err
}

// raftSender is the node ID an accepted metadata-log connection's
// certificate names (its handshake, within connection-timeout, checked
// that it is a member's node certificate).
func raftSender(c net.Conn) (string, error) {
	if fb, ok := c.(*firstBytesConn); ok {
		c = fb.Conn
	}
	tc, ok := c.(*tls.Conn)
	if !ok {
		return "", errors.New("metadata log connection without TLS")
	}
	if err := tc.Handshake(); err != nil {
		return "", err
	}
	certs := tc.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return "", errors.New("metadata log connection without a client certificate")
	}
	id, ok := pki.NodeID(certs[0])
	if !ok {
		return "", errors.New("metadata log connection without a node certificate")
	}
	return id, nil
}

func (n *Node) raftListenAddr() string {
	if n.cfg.RaftAddr != "" {
		return n.cfg.RaftAddr
	}
	host, _, _ := net.SplitHostPort(n.cfg.GRPCAddr)
	return net.JoinHostPort(host, "0")
}

// RaftAddr is the metadata group's listener address.
func (n *Node) RaftAddr() string {
	if n.raftLis == nil {
		return n.cfg.RaftAddr
	}
	return publicAddr(n.raftLis.Addr().String(), n.advHost)
}

// dialRaft connects to a member's metadata listener by node ID. A fault
// that cuts the link to id (a drill's partition) refuses the dial and
// breaks the connections already open at their next write, so a drill
// cuts the metadata log's traffic like the replicas' (only what this node
// sends, as for gossip: a link is cut both ways when both ends cut it).
func (n *Node) dialRaft(ctx context.Context, id string) (net.Conn, error) {
	if n.faults.Cuts(id) {
		return nil, fmt.Errorf("fault injection: metadata traffic to %s is cut", id)
	}
	conn, err := n.dialRaftAddr(ctx, id)
	if err != nil {
		return nil, err
	}
	return &cutConn{Conn: conn, cut: func() bool { return n.faults.Cuts(id) }, node: id}, nil
}

// cutConn fails (and closes) on a write while cut says the link is cut.
type cutConn struct {
	net.Conn
	cut  func() bool
	node string
}

func (c *cutConn) Write(b []byte) (int, error) {
	if c.cut() {
		_ = c.Conn.Close()
		return 0, fmt.Errorf("fault injection: metadata traffic to %s is cut", c.node)
	}
	return c.Conn.Write(b)
}

// dialRaftAddr dials id's metadata listener (TLS unless insecure).
func (n *Node) dialRaftAddr(ctx context.Context, id string) (net.Conn, error) {
	addr, ok := n.book.getRaft(id)
	if !ok {
		if m, known := n.Topology().Meta.Member(id); known && m.RaftAddr != "" {
			addr, ok = m.RaftAddr, true
		}
	}
	if !ok {
		info, err := n.discover(ctx, id)
		if err != nil || info.GetRaftAddr() == "" {
			return nil, fmt.Errorf("no metadata address known for %s yet: %v", id, err)
		}
		addr = info.GetRaftAddr()
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil || n.cfg.Insecure {
		return conn, err
	}
	host, _, _ := net.SplitHostPort(addr)
	tc := tls.Client(conn, n.sec.src.ClientConfigWith(pki.ClientOptions{
		ServerName: host,
		Authorize: func(cert *x509.Certificate) error {
			if got, ok := pki.NodeID(cert); !ok || got != id {
				return fmt.Errorf("the metadata listener at %s is node %q, not %q", addr, got, id)
			}
			return nil
		},
	}))
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	return tc, nil
}

// metaChanged applies a newly agreed state: it becomes the topology (and
// the cached copy), waiters and gossip learn the epoch, transfers and
// clean-up look at what changed.
func (n *Node) metaChanged(st *membership.MetaState) {
	if !st.Initialized() {
		return
	}
	cur := n.Topology()
	if err := adoptable(n.dataCluster, n.restored != nil, st); err != nil {
		if n.notAdopted.Swap(&err) == nil {
			n.log.Error("agreed cluster metadata not adopted: this node does not serve", "cluster_id", st.ClusterID, "data_cluster_id", n.dataCluster, "err", err)
		}
		if cur.Agreed() {
			// Routing by the store's cached metadata of another cluster:
			// stop, back to the provisional topology (requests refused).
			if p, err := provisionalTopology(n.cfg); err == nil {
				n.topo.Store(p)
				n.health.SetServingStatus("", servingStatus(false))
				n.health.SetServingStatus(kvv1.KV_ServiceDesc.ServiceName, servingStatus(false))
			}
		}
		return
	}
	if n.restored != nil && !cur.Agreed() && st.RestoredEpoch != n.restored.Epoch {
		n.log.Warn("this node's snapshot and the one the cluster was initialized from were taken at different epochs (not together): where the ring changed between them, this node pushes data of partitions it no longer replicates to their replicas before dropping it, and anti-entropy brings it what it lacks; data of keyspaces the cluster's metadata does not know is kept, not served",
			"snapshot_epoch", n.restored.Epoch, "cluster_restored_epoch", st.RestoredEpoch)
	}
	n.dataCluster = st.ClusterID
	// A restarted node replays the log from its last snapshot: states
	// older than the one it already routes by (cached at the last apply)
	// are history, not news — routing never goes back an epoch, and
	// transfers and clean-up never act on an old state.
	if cur.Agreed() && cur.ClusterID == st.ClusterID && st.Epoch <= cur.Epoch {
		return
	}
	n.tablesMu.Lock()
	st.UseCache(&n.tables)
	topo, err := st.Topology()
	st.UseCache(nil)
	n.tablesMu.Unlock()
	if err != nil {
		n.log.Error("agreed cluster metadata does not give a topology; keeping the previous one", "epoch", st.Epoch, "err", err)
		return
	}
	n.cacheMeta(st, cur.ClusterID != st.ClusterID)
	n.adopted(st.ClusterID)
	prev := n.topo.Swap(topo)
	n.live.forgetExcept(func(id string) bool { _, ok := topo.Nodes[id]; return ok })
	if prev == nil || !prev.Agreed() || !sameNodes(prev, topo) {
		// Members turned away while the topology did not list them are
		// heard of now (hint targets, low disk, death).
		if g := n.gossipRef.Load(); g != nil {
			g.Recheck()
		}
	}
	n.epochs.signal()
	if prev == nil || !prev.Agreed() {
		n.log.Info("cluster metadata agreed", "cluster_id", st.ClusterID, "epoch", st.Epoch, "members", len(st.Members))
		if n.Failure() == nil {
			n.health.SetServingStatus("", servingStatus(true))
			n.health.SetServingStatus(kvv1.KV_ServiceDesc.ServiceName, servingStatus(true))
		}
	}
	n.hints.kick()
	if fn := n.onMeta.Load(); fn != nil {
		(*fn)(st, topo)
	}
}

// cacheMeta keeps the newest agreed state in the store for the next
// start, without an fsync: the log is the durable copy, and a start from
// an older cached state catches up from it. The first state of a new
// cluster (sync) is synced: a restart must not route by a restored
// store's old cluster, whose addresses are other machines'.
func (n *Node) cacheMeta(st *membership.MetaState, sync bool) {
	raw, err := json.Marshal(st)
	if err != nil {
		return
	}
	put := n.store.PutMetaNoSync
	if sync {
		put = n.store.PutMeta
	}
	if err := put(metaCacheKey, raw); err != nil {
		n.log.Warn("cache cluster metadata", "err", err)
	}
}

// metaLoop runs for the node's life: the leader initializes the metadata
// and keeps the Raft configuration in line with the members; every node
// brings its addresses and config-file keyspaces into the agreed state
// once it has one.
func (n *Node) metaLoop(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	synced := false
	unplaceable := map[string]bool{} // config keyspaces the cluster refused to create
	lastInitErr, retryInit := "", time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.meta.LeaderCh():
		}
		st := n.meta.State()
		if n.meta.IsLeader() {
			if !st.Initialized() && n.cfg.InitialCluster != "" && n.cfg.JoinAddr == "" {
				if n.now().Before(retryInit) {
					continue
				}
				// Retried a second later, said once per distinct error.
				if err := n.proposeInit(ctx); err != nil && ctx.Err() == nil {
					retryInit = n.now().Add(time.Second)
					if err.Error() != lastInitErr {
						lastInitErr = err.Error()
						n.log.Warn("cluster metadata not initialized yet", "err", err)
					} else {
						n.log.Debug("cluster metadata not initialized yet", "err", err)
					}
				}
				continue
			}
			if _, err := n.meta.Reconcile(); err != nil && ctx.Err() == nil {
				n.log.Warn("metadata group configuration", "err", err)
			}
		}
		if !synced && st.Initialized() {
			synced = n.syncOwnMeta(ctx, st, unplaceable)
		}
	}
}

// proposeInit initializes the metadata from this node's flags, or, when
// its data was restored from a snapshot (n.restored), from the restored
// cluster's metadata with the flags' members and addresses.
func (n *Node) proposeInit(ctx context.Context) error {
	members, _ := ParseInitialCluster(n.cfg.InitialCluster)
	var recs []membership.MemberRecord
	for _, m := range members {
		recs = append(recs, membership.MemberRecord{ID: m.ID, DC: m.DC, Rack: m.Rack, Weight: m.Weight, GRPCAddr: m.GRPCAddr})
	}
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return fmt.Errorf("cluster ID: %w", err)
	}
	init := membership.Command{Kind: membership.CmdInit, ClusterID: hex.EncodeToString(id[:]), Partitions: n.cfg.Partitions, Members: recs}
	if n.restored != nil {
		init.Kind, init.Restored = membership.CmdRestoredInit, n.restored
	} else {
		ids := make([]string, len(recs))
		for i, r := range recs {
			ids[i] = r.ID
		}
		seen := map[string]string{}
		for _, m := range n.gossip.Members() {
			if m.State == membership.StateAlive {
				seen[m.Meta.ID] = m.Meta.Restored
			}
		}
		handTo, wait, stuck := freshInitPlan(n.cfg.ID, ids, membership.PickVoters(recs), seen, n.now().Sub(n.started))
		if len(stuck) > 0 {
			return fmt.Errorf("nodes %v hold data restored from a snapshot but do not vote in the metadata log, and this node has none: a cluster initialized here would strand their data. Restore the voters' snapshots too (meridian status lists the roles)", stuck)
		}
		if handTo != "" {
			if err := n.meta.TransferLeadership(handTo); err != nil {
				return fmt.Errorf("%s holds data restored from a snapshot of cluster %s and must initialize the cluster from it; handing it the metadata leadership failed: %w", handTo, seen[handTo], err)
			}
			n.log.Info("handed the metadata leadership to a node with restored data: it initializes the cluster from it", "to", handTo, "restored_cluster_id", seen[handTo])
			return nil
		}
		if wait {
			return nil // the next tick looks again
		}
		saved, err := n.savedKeyspaces()
		if err != nil {
			n.log.Warn("read saved keyspaces", "err", err)
		}
		init.Keyspaces = slices.Clone(n.cfg.Keyspaces)
		for _, s := range saved {
			if !slices.ContainsFunc(init.Keyspaces, func(k membership.KeyspaceSpec) bool { return k.Name == s.Name }) {
				init.Keyspaces = append(init.Keyspaces, s)
			}
		}
	}
	// A refused init is still a log entry (the whole ring), and the loop
	// tries again every second: try it on a scratch state first, and
	// propose only one that applies.
	if err := (&membership.MetaState{}).Apply(init); err != nil {
		if n.restored != nil {
			return fmt.Errorf("initialize the cluster from the restored metadata of cluster %s: %w", n.restored.ClusterID, err)
		}
		return fmt.Errorf("initialize the cluster from this node's configuration: %w: correct the keyspaces of the config file or --initial-cluster, and restart the node", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	epoch, err := n.meta.Apply(cctx, init)
	if err != nil {
		if n.restored != nil {
			return fmt.Errorf("initialize the cluster from the restored metadata of cluster %s: %w", n.restored.ClusterID, err)
		}
		return fmt.Errorf("initialize cluster metadata: %w", err)
	}
	if n.restored != nil {
		n.log.Info("initialized cluster metadata from the restored cluster's", "epoch", epoch, "restored_cluster_id", n.restored.ClusterID, "members", len(recs))
	} else {
		n.log.Info("initialized cluster metadata", "epoch", epoch, "members", len(recs))
	}
	return nil
}

// syncOwnMeta brings this node's addresses and config-file keyspaces into
// the agreed state, and says where its flags disagree with it. It
// reports whether it is done. unplaceable holds the config keyspaces the
// cluster refused to create (it cannot place them): not proposed again,
// though a later step's failure makes the loop call again.
func (n *Node) syncOwnMeta(ctx context.Context, st *membership.MetaState, unplaceable map[string]bool) bool {
	me, ok := st.Members[n.cfg.ID]
	if !ok {
		return false // a joiner not admitted yet
	}
	if me.GRPCAddr != n.Addr() || me.PeerAddr != n.PeerAddr() || me.AdminAddr != n.AdminAddr() || me.RaftAddr != n.RaftAddr() {
		rec := *me
		rec.GRPCAddr, rec.PeerAddr, rec.AdminAddr, rec.RaftAddr = n.Addr(), n.PeerAddr(), n.AdminAddr(), n.RaftAddr()
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := n.propose(pctx, membership.Command{Kind: membership.CmdAddrs, Member: &rec})
		cancel()
		if err != nil {
			n.log.Debug("record own addresses in the metadata", "err", err)
			return false
		}
	}
	for _, spec := range n.cfg.Keyspaces {
		cur, ok := st.Keyspaces[spec.Name]
		switch {
		case !ok && unplaceable[spec.Name]:
		case !ok:
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := n.propose(pctx, membership.Command{Kind: membership.CmdKeyspaceCreate, Keyspace: &spec})
			cancel()
			c := status.Code(err)
			if c == codes.InvalidArgument {
				// The cluster cannot place it (a DC it lacks, an RF over a
				// DC's nodes): proposed again it would be refused again, a
				// committed entry on every voter each time, for the node's
				// whole life. Said once; fixed by the config or by hand.
				n.log.Error("keyspace in the config file cannot be created in this cluster; not proposed again until this node restarts (fix the config, or create it with `meridian keyspace create` once the cluster can place it)",
					"keyspace", spec.Name, "config", membership.DescribeSpec(spec), "err", err)
				unplaceable[spec.Name] = true
				continue
			}
			if err != nil && c != codes.AlreadyExists && c != codes.FailedPrecondition {
				return false
			}
			if err != nil {
				n.log.Error("keyspace in the config file differs from the agreed definition; the agreed one is used (change it with `meridian keyspace alter`)", "keyspace", spec.Name, "err", err)
			}
		case !membership.SameSpec(cur, spec):
			n.log.Error("keyspace in the config file differs from the agreed definition; the agreed one is used (change it with `meridian keyspace alter`)",
				"keyspace", spec.Name, "config", membership.DescribeSpec(spec), "agreed", membership.DescribeSpec(cur))
		}
	}
	if n.cfg.InitialCluster != "" {
		if diff := flagsDiffer(n.cfg.InitialCluster, st); diff != "" {
			n.log.Warn("--initial-cluster differs from the agreed membership; flags only bootstrap a new cluster and are ignored now (change membership with `meridian cluster plan`)", "difference", diff)
		}
	}
	return true
}

// flagsDiffer describes how an initial-cluster flag differs from the
// agreed members ("" when it does not).
func flagsDiffer(initial string, st *membership.MetaState) string {
	members, err := ParseInitialCluster(initial)
	if err != nil {
		return err.Error()
	}
	var diffs []string
	seen := map[string]bool{}
	for _, m := range members {
		seen[m.ID] = true
		rec, ok := st.Members[m.ID]
		switch {
		case !ok:
			diffs = append(diffs, m.ID+" is not a member")
		case rec.State == membership.StateRemoved:
			diffs = append(diffs, m.ID+" was removed")
		case rec.DC != m.DC || rec.Rack != m.Rack || rec.Weight != m.Weight:
			diffs = append(diffs, fmt.Sprintf("%s is %s/%s/%d, not %s/%s/%d", m.ID, rec.DC, rec.Rack, rec.Weight, m.DC, m.Rack, m.Weight))
		}
	}
	for id, rec := range st.Members {
		if !seen[id] && rec.State != membership.StateRemoved {
			diffs = append(diffs, id+" is a member not in the flag")
		}
	}
	slices.Sort(diffs)
	if len(diffs) == 0 {
		return ""
	}
	return fmt.Sprint(diffs)
}

// propose applies a command through the metadata leader, forwarding it
// when this node is not the leader, and waits until this node applied
// it. A refusal by the state comes back as FAILED_PRECONDITION.
func (n *Node) propose(ctx context.Context, c membership.Command) (uint64, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
	}
	for {
		epoch, err := n.proposeOnce(ctx, c)
		if err == nil {
			if err := n.waitEpoch(ctx, epoch); err != nil {
				// Committed: sending it again is not a retry of a
				// failure (an abort sent twice undoes its own undo).
				return epoch, status.Errorf(codes.DeadlineExceeded, "committed at epoch %d, but this node had not applied it when the call's time ran out (%v): it takes effect; look at `meridian cluster status` before sending it again", epoch, err)
			}
			return epoch, nil
		}
		if !retryable(err) {
			return 0, err
		}
		select {
		case <-ctx.Done():
			return 0, status.Errorf(codes.Unavailable, "the metadata log has no reachable leader (leader %q): %v", n.meta.Leader(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func retryable(err error) bool {
	if errors.Is(err, membership.ErrNotLeader) {
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.Aborted:
		return true
	}
	return false
}

func (n *Node) proposeOnce(ctx context.Context, c membership.Command) (uint64, error) {
	if n.meta.IsLeader() {
		return n.applyAsLeader(ctx, c)
	}
	leader := n.meta.Leader()
	if leader == "" {
		return 0, status.Error(codes.Unavailable, "the metadata log has no leader right now")
	}
	conn, err := n.PeerConn(leader)
	if err != nil {
		return 0, status.Errorf(codes.Unavailable, "metadata leader %s: %v", leader, err)
	}
	resp, err := internalv1.NewMetaClient(conn).Propose(ctx, &internalv1.ProposeRequest{Command: c.Encode()})
	if err != nil {
		return 0, err
	}
	return resp.GetEpoch(), nil
}

// applyAsLeader commits c through this node's log as its leader: the
// epoch it applied at, membership.ErrNotLeader when this node does not
// lead (or lost the lead committing it), UNAVAILABLE for a failure of the
// log, the state's refusal as its status.
func (n *Node) applyAsLeader(ctx context.Context, c membership.Command) (uint64, error) {
	epoch, err := n.meta.Apply(ctx, c)
	if err != nil && !errors.Is(err, membership.ErrNotLeader) {
		if isRaftFailure(err) {
			return 0, status.Errorf(codes.Unavailable, "metadata log: %v", err)
		}
		return 0, refusalStatus(err)
	}
	return epoch, err
}

// isRaftFailure tells a failure of the log itself (retry) from a
// refusal by the state (report).
func isRaftFailure(err error) bool { return !membership.IsRefusal(err) }

// metaServer is the peer listener's half of the metadata log.
type metaServer struct {
	internalv1.UnimplementedMetaServer
	n *Node
}

// Propose applies a forwarded command on the leader.
func (s *metaServer) Propose(ctx context.Context, req *internalv1.ProposeRequest) (*internalv1.ProposeResponse, error) {
	c, err := membership.DecodeCommand(req.GetCommand())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if c.IsInit() {
		return nil, status.Error(codes.PermissionDenied, "the metadata is initialized by its first leader only")
	}
	if err := checkMemberCommand(c); err != nil {
		return nil, err
	}
	if err := s.checkOwnCommand(ctx, c); err != nil {
		return nil, err
	}
	if err := s.checkForwarder(ctx, c); err != nil {
		return nil, err
	}
	if !s.n.meta.IsLeader() {
		return nil, status.Errorf(codes.Unavailable, "not the metadata leader (the leader is %q)", s.n.meta.Leader())
	}
	// Applied here or not at all: passed on to a new leader, the proposal
	// would arrive as this node's, not the proposer's (its own commands
	// refused); UNAVAILABLE sends the proposer to the new leader itself.
	epoch, err := s.n.applyAsLeader(ctx, c)
	if errors.Is(err, membership.ErrNotLeader) {
		// Leadership lost while committing: UNAVAILABLE, so the node that
		// forwarded the proposal retries through the new leader, as a
		// proposal made on the leader itself does (it was UNKNOWN, and the
		// forwarder gave up).
		return nil, status.Errorf(codes.Unavailable, "%v (the leader is now %q)", err, s.n.meta.Leader())
	}
	if err != nil {
		return nil, err
	}
	return &internalv1.ProposeResponse{Epoch: epoch}, nil
}

// checkOwnCommand refuses, with PERMISSION_DENIED, a command that a node
// proposes about itself only (its addresses, the transfers it received)
// when it comes from another node: a member recording another's
// addresses would move that node's traffic, and one reporting another's
// transfers done would let the plan commit with partitions their new
// owner never received (their old owners then drop them). The proposer
// is the node its certificate names; an insecure cluster has none to
// check.
func (s *metaServer) checkOwnCommand(ctx context.Context, c membership.Command) error {
	subject, own := ownCommandSubject(c)
	if !own || s.n.cfg.Insecure {
		return nil
	}
	cert, ok := pki.PeerCertificate(ctx)
	if !ok {
		return status.Error(codes.Unauthenticated, "a proposal needs the proposing node's certificate")
	}
	from, ok := pki.NodeID(cert)
	if !ok || from != subject {
		return status.Errorf(codes.PermissionDenied, "a %s command for node %q is proposed by that node only, not by %q", c.Kind, subject, from)
	}
	return nil
}

// checkForwarder refuses, with PERMISSION_DENIED, a cluster-wide command
// (a join, a plan step, a commit or abort, a keyspace change) forwarded by
// a node still joining: such commands come from an operator's admin call
// (checked for the admin role on the node that took it) or a join a
// member took, and a joining node owns nothing yet that makes it one to
// pass them on. (Its own transfers and addresses it still reports.)
func (s *metaServer) checkForwarder(ctx context.Context, c membership.Command) error {
	if _, own := ownCommandSubject(c); own || s.n.cfg.Insecure {
		return nil
	}
	cert, _ := pki.PeerCertificate(ctx)
	from, _ := pki.NodeID(cert)
	meta := s.n.Topology().Meta
	if meta == nil {
		return status.Error(codes.Unavailable, "this node has not applied the cluster metadata yet")
	}
	if m, ok := meta.Members[from]; !ok || m.State != membership.StateActive && m.State != membership.StateLeaving {
		state := membership.MemberState("not a member")
		if ok {
			state = m.State
		}
		return status.Errorf(codes.PermissionDenied, "a %s command is not taken from node %q (%s): only active members pass on operators' and joins' commands", c.Kind, from, state)
	}
	return nil
}

// ownCommandSubject returns the node a command is about when only that
// node proposes it (own), as membership's CmdAddrs and CmdTransferDone.
func ownCommandSubject(c membership.Command) (subject string, own bool) {
	switch c.Kind {
	case membership.CmdAddrs:
		if c.Member != nil {
			subject = c.Member.ID
		}
		return subject, true
	case membership.CmdTransferDone:
		return c.Node, true
	}
	return "", false
}

// checkMemberCommand refuses, with INVALID_ARGUMENT, a join whose
// member's DC, rack, weight or addresses are out of bounds, and an
// address change whose addresses are: checked where a join arrives and
// again where a member's forwarded proposal does, before anything is
// proposed. (Not when the log is applied: entries already committed must
// apply as they did.)
func checkMemberCommand(c membership.Command) error {
	if c.Kind != membership.CmdJoin && c.Kind != membership.CmdAddrs {
		return nil
	}
	rec := c.Member
	if rec == nil {
		return status.Errorf(codes.InvalidArgument, "%s: no member", c.Kind)
	}
	if c.Kind == membership.CmdJoin {
		if err := validPlace(rec.DC, rec.Rack, rec.Weight); err != nil {
			return status.Errorf(codes.InvalidArgument, "%s: %v", c.Kind, err)
		}
	}
	for _, a := range []string{rec.GRPCAddr, rec.PeerAddr, rec.AdminAddr, rec.RaftAddr} {
		if _, _, err := net.SplitHostPort(a); err != nil || len(a) > maxAddrLen {
			return status.Errorf(codes.InvalidArgument, "%s: address %.300q is not host:port (of at most %d bytes)", c.Kind, a, maxAddrLen)
		}
	}
	return nil
}

// maxAddrLen bounds an address a joining node gives (a DNS name is at
// most 253 bytes, with a port 259).
const maxAddrLen = 260

// Join admits a new node as joining: its ID is the one its certificate
// names, so a node can only ever join as itself.
func (s *metaServer) Join(ctx context.Context, req *internalv1.JoinRequest) (*internalv1.JoinResponse, error) {
	n := s.n
	id := req.GetId()
	if !n.cfg.Insecure {
		cert, ok := pki.PeerCertificate(ctx)
		if !ok {
			return nil, status.Error(codes.Unauthenticated, "join needs the node's certificate")
		}
		certID, ok := pki.NodeID(cert)
		if !ok || certID != id {
			return nil, status.Errorf(codes.PermissionDenied, "the certificate is for node %q, not %q", certID, id)
		}
	}
	if err := (Config{ID: id}).validID(); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	rec := membership.MemberRecord{ID: id, DC: req.GetDc(), Rack: req.GetRack(), Weight: int(req.GetWeight()),
		GRPCAddr: req.GetGrpcAddr(), PeerAddr: req.GetPeerAddr(), AdminAddr: req.GetAdminAddr(), RaftAddr: req.GetRaftAddr()}
	join := membership.Command{Kind: membership.CmdJoin, Member: &rec}
	if err := checkMemberCommand(join); err != nil {
		return nil, err
	}
	epoch, err := n.propose(ctx, join)
	if err != nil {
		return nil, err
	}
	n.book.setRaft(id, rec.RaftAddr)
	n.book.set(id, rec.PeerAddr)
	n.log.Info("node joined the metadata log", "node", id, "dc", rec.DC, "epoch", epoch)
	return &internalv1.JoinResponse{ClusterId: n.Topology().ClusterID, Epoch: epoch, GossipAddr: n.GossipAddr()}, nil
}

// joinLoop admits this node through a member (--join) until it has
// applied agreed metadata that lists it.
func (n *Node) joinLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		// Admitted already: in the log, or (a restart) in the cached state.
		for _, st := range []*membership.MetaState{n.meta.State(), n.Topology().Meta} {
			if _, ok := st.Member(n.cfg.ID); ok {
				return
			}
		}
		if err := n.joinOnce(ctx); err != nil && ctx.Err() == nil {
			n.log.Warn("join the cluster (retrying)", "via", n.cfg.JoinAddr, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (n *Node) joinOnce(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := grpc.NewClient(n.cfg.JoinAddr, append([]grpc.DialOption{n.sec.clientDial()}, n.tel.DialOptions()...)...)
	if err != nil {
		return err
	}
	info, err := internalv1.NewDiscoveryClient(conn).Info(cctx, &internalv1.InfoRequest{})
	conn.Close()
	if err != nil {
		return fmt.Errorf("ask %s who it is: %w", n.cfg.JoinAddr, err)
	}
	if info.GetPeerAddr() == "" {
		return fmt.Errorf("%s has no peer address", n.cfg.JoinAddr)
	}
	n.book.set(info.GetId(), info.GetPeerAddr())
	n.book.setRaft(info.GetId(), info.GetRaftAddr())
	pconn, err := grpc.NewClient(info.GetPeerAddr(), n.sec.peerDial(), grpc.WithChainUnaryInterceptor(n.tagPeer))
	if err != nil {
		return err
	}
	defer pconn.Close()
	resp, err := internalv1.NewMetaClient(pconn).Join(cctx, &internalv1.JoinRequest{
		Id: n.cfg.ID, GrpcAddr: n.Addr(), PeerAddr: n.PeerAddr(), AdminAddr: n.AdminAddr(), RaftAddr: n.RaftAddr(),
		Dc: n.self.DC, Rack: n.self.Rack, Weight: uint32(n.self.Weight),
	})
	if err != nil {
		return err
	}
	if _, err := n.gossip.Join([]string{resp.GetGossipAddr()}); err != nil {
		n.log.Warn("join gossip", "addr", resp.GetGossipAddr(), "err", err)
	}
	n.log.Info("admitted as a joining node; it owns nothing until a plan adds it (`meridian cluster plan add "+n.cfg.ID+"`)", "cluster_id", resp.GetClusterId(), "epoch", resp.GetEpoch())
	return nil
}

// peerEpoch is the sender's epoch of a peer request (0 if absent).
func peerEpoch(ctx context.Context) uint64 {
	if e, ok := ctx.Value(callEpochKey{}).(uint64); ok {
		return e // a piped call
	}
	md, _ := metadata.FromIncomingContext(ctx)
	if e := md.Get(mdEpoch); len(e) == 1 {
		v, _ := strconv.ParseUint(e[0], 10, 64)
		return v
	}
	return 0
}

// checkRoute refuses a replica request for partition p routed by a ring
// older than p's last change: the sender must catch up and retry.
func (n *Node) checkRoute(ctx context.Context, p int) error {
	topo := n.Topology()
	if !topo.Agreed() {
		return status.Error(codes.Unavailable, "this node has not applied the cluster metadata yet")
	}
	sender := peerEpoch(ctx)
	if re := topo.RouteEpoch(p); sender != 0 && sender < re {
		return coordinator.StaleRouteError(fmt.Sprintf("stale topology: the request was routed at epoch %d, but partition %d's replicas changed at epoch %d; retry once the sender caught up", sender, p, re), re)
	}
	return nil
}

// sameNodes reports whether two topologies list the same node IDs.
func sameNodes(a, b *membership.Topology) bool {
	if len(a.Nodes) != len(b.Nodes) {
		return false
	}
	for id := range a.Nodes {
		if _, ok := b.Nodes[id]; !ok {
			return false
		}
	}
	return true
}

// voterAlive is liveness for the metadata group's configuration: a member
// gossip has not reported alive (not heard of yet, suspect or dead) counts
// as down, unlike for routing, which tries a node until it fails. Adding
// a voter that is in fact down, or taking one away on the belief that
// the rest hold a majority, could leave the group without a quorum.
func (n *Node) voterAlive(id string) bool {
	if id == n.cfg.ID {
		return true
	}
	g := n.gossipRef.Load()
	return g != nil && g.Alive(id) && n.Alive(id)
}
