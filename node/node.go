package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"

	"github.com/meridiankv/meridian/coordinator"
	"github.com/meridiankv/meridian/engine"
	"github.com/meridiankv/meridian/engine/memory"
	"github.com/meridiankv/meridian/engine/pebble"
	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/placement"
	"github.com/meridiankv/meridian/repair"
	"github.com/meridiankv/meridian/replica"
	"github.com/meridiankv/meridian/telemetry"
	"github.com/meridiankv/meridian/transport"
)

// Options are the run-time dependencies of a node that are not
// configuration: loggers, clocks, pre-bound listeners, test hooks.
type Options struct {
	Logger *slog.Logger
	// Listener, when set, is used for the client listener instead of
	// listening on GRPCAddr; PeerListener and AdminListener likewise.
	Listener      net.Listener
	PeerListener  net.Listener
	AdminListener net.Listener
	RaftListener  net.Listener
	// Now is the clock (default time.Now).
	Now func() time.Time
	// ServerOptions and DialOptions are appended to the gRPC defaults
	// (telemetry adds its stats handlers here).
	ServerOptions []grpc.ServerOption
	DialOptions   []grpc.DialOption
	// Telemetry, when set, is used instead of one built from
	// Config.Telemetry (tests pass one with a span recorder).
	Telemetry *telemetry.Telemetry
	// TelemetryFor, when set, gives each node of a local cluster its own
	// telemetry (metrics registries are per node); it wins over Telemetry.
	TelemetryFor func(nodeID string) *telemetry.Telemetry
	// Register adds the admin services (package ops) to the admin
	// listener's server and to the peer listener's (for the node-to-node
	// half of admin operations) before they start serving.
	Register func(*grpc.Server, *Node)
	// DrainTimeout bounds how long Close waits for the calls in flight
	// (default DefaultDrainTimeout). If they have not all returned by
	// then, Close does not record a clean shutdown.
	DrainTimeout time.Duration
	// EngineFS, when set, is the Pebble engine's filesystem (tests inject
	// faults through it).
	EngineFS vfs.FS
	// WrapEngine, when set, wraps the engine before the store opens it
	// (tests observe or slow down writes through it).
	WrapEngine func(engine.Engine) engine.Engine
	// DiskSpace reads the data directory's volume's free space (default:
	// statfs); DiskCheckInterval is how often (default
	// DefaultDiskCheckInterval). Tests fill the disk through them.
	DiskSpace         DiskSpace
	DiskCheckInterval time.Duration
	// OnWALSync, when set, is also called with the duration of each of
	// the Pebble engine's WAL fsyncs (meridian bench --local reports the
	// disk's share of latency from it). It must be quick and safe for
	// concurrent use.
	OnWALSync func(time.Duration)
}

// Node is one running Meridian node.
type Node struct {
	// advHost is the host published for listeners bound to every
	// interface (Config.AdvertiseHost, resolved at start).
	advHost string
	// pipedRunning counts peers' piped calls running here (a metric).
	pipedRunning atomic.Int64
	// clientCallsRunning counts calls of clients' call streams running
	// here (a metric).
	clientCallsRunning atomic.Int64
	// clientReplyBytes counts the bytes of replies on clients' call
	// streams not sent yet (each stream's bounded by
	// client-call-reply-bytes).
	clientReplyBytes atomic.Int64
	// peerReplyBytes is the same for peers' call streams
	// (peer-call-reply-bytes).
	peerReplyBytes atomic.Int64
	cfg            Config
	log            *slog.Logger
	self           membership.NodeInfo
	eng            engine.Engine
	store          *replica.Store
	disk           *diskGuard             // nil: min-free-disk not enforced
	checkpoint     func(dir string) error // nil: the memory engine (no snapshots)
	snapshots      sync.Mutex             // one snapshot created or deleted at a time
	sched          snapshotCounts         // what scheduled snapshots and snapshot reads did (metrics)
	repairRuns     atomic.Int64           // full repairs running (at most RepairRuns; a metric)
	now            func() time.Time
	hints          *hintTracker
	topo           atomic.Pointer[membership.Topology]
	live           *liveness
	gossip         *membership.Gossip
	peers          *transport.GRPC
	faults         *transport.Faults
	drills         *faultRegistry // injected faults (node/faults.go)
	coord          *coordinator.Coordinator
	health         *health.Server
	lis            net.Listener
	// servers are the client, peer and admin listeners' servers.
	servers  []*server
	peerLis  net.Listener
	adminLis net.Listener
	book     addrBook
	sec      *security
	ae       atomic.Pointer[repair.AntiEntropy]
	meta     *membership.MetaLog
	raftLis  net.Listener
	raftCap  *capListener // the metadata log's connections
	// restored is the metadata held by data restored from a snapshot
	// onto a node with no metadata log yet (a whole cluster restored onto
	// new machines): the node does not route by it, it initializes the
	// new cluster from it (if it leads) and adopts only a cluster
	// initialized from the same one (node/restore.go). nil otherwise.
	restored *membership.MetaState
	// dataCluster is the cluster whose metadata this node's data was
	// last placed by ("": none yet). Only agreed metadata of that cluster,
	// or of a cluster initialized from it, is adopted (adoptable). Set
	// before the metadata log starts, then used by metaChanged alone.
	dataCluster string
	// started is when Start began.
	started time.Time
	// clusterFile is the cluster ID last written to the data directory's
	// CLUSTER_ID (used by metaChanged alone after Start).
	clusterFile string
	// notAdopted is why the agreed metadata was not adopted; nil while
	// none was refused.
	notAdopted atomic.Pointer[error]
	epochs     epochWaiters
	// onMeta, when set, sees every newly agreed state (transfers and
	// clean-up hook in here).
	onMeta atomic.Pointer[func(*membership.MetaState, *membership.Topology)]
	// tables caches keyspace tables across applied states (metaChanged).
	tablesMu sync.Mutex
	tables   membership.TableCache
	// transfers is set after the node serves (admin handlers read it).
	transfers atomic.Pointer[transferGlue]
	runCtx    context.Context // ends when the node closes
	tel       *telemetry.Telemetry
	ownTel    bool

	cancel context.CancelFunc
	// gossipRef is gossip once started, for the metadata log's callbacks
	// (which may run before it is).
	gossipRef atomic.Pointer[membership.Gossip]
	wg        sync.WaitGroup
	// spawned guards wg for goroutines started from callbacks (gossip's)
	// that may still fire as the node closes: none starts once closed.
	spawned struct {
		sync.Mutex
		closed bool
	}
	closeOnce sync.Once
	closeErr  error

	// gate admits calls until Close; failed is closed when storage fails.
	gate     *gate
	drain    time.Duration
	failOnce sync.Once
	failed   chan struct{}
	failure  error
}

// Start opens the node's storage, joins the cluster and serves gRPC. It
// returns once the node is serving; gossip joins in the background.
func Start(ctx context.Context, cfg Config, opts Options) (_ *Node, err error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	topo, err := provisionalTopology(cfg)
	if err != nil {
		return nil, err
	}
	// n is not the named result: an error return sets that to nil while
	// goroutines started here (and closures handed out) still use n.
	n := &Node{cfg: cfg, now: opts.Now, started: opts.Now(), self: topo.Nodes[cfg.ID], gate: newGate(), drain: opts.DrainTimeout, failed: make(chan struct{}),
		advHost: cfg.advertiseHost()}
	if n.drain <= 0 {
		n.drain = DefaultDrainTimeout
	}
	// Every unary call passes the gate, so Close can wait for them (a
	// clipped append: StartLocal shares opts between nodes).
	opts.ServerOptions = append(opts.ServerOptions[:len(opts.ServerOptions):len(opts.ServerOptions)], grpc.ChainUnaryInterceptor(n.gate.unary))
	n.log = opts.Logger.With("node", cfg.ID, "dc", n.self.DC)
	for _, f := range cfg.exposedSecretFiles() {
		n.log.Warn(fmt.Sprintf("%s %s can be read or written by other users: run chmod 600 on it", f.key, f.path), "mode", fmt.Sprintf("%#o", f.mode))
	}
	if mode, open := cfg.exposedDataDir(); open {
		n.log.Warn(fmt.Sprintf("data-dir %s can be read by other users (every stored value and snapshot is below it): run chmod 700 on it", cfg.DataDir), "mode", fmt.Sprintf("%#o", mode))
	}
	n.topo.Store(topo)
	defer func() {
		if err != nil {
			n.Close() // what was started stops, its goroutines first
		}
	}()

	n.tel = opts.Telemetry
	if opts.TelemetryFor != nil {
		n.tel = opts.TelemetryFor(cfg.ID)
	}
	if n.tel == nil {
		tcfg := cfg.Telemetry
		tcfg.NodeID, tcfg.DC, tcfg.Logger = cfg.ID, n.self.DC, n.log
		if n.tel, err = telemetry.Setup(ctx, tcfg); err != nil {
			return nil, fmt.Errorf("telemetry: %w", err)
		}
		n.ownTel = true
	}

	if err := checkDataDir(cfg); err != nil {
		return nil, err
	}
	switch cfg.Engine {
	case "memory":
		n.eng = memory.New()
	default:
		// Into a variable of its own: a nil *pebble.Engine in n.eng would
		// be a non-nil interface that the failed start's Close calls.
		eng, err := pebble.Open(pebble.Options{
			Dir: filepath.Join(cfg.DataDir, "data"), FS: opts.EngineFS, Logger: n.log,
			WALSyncInterval: max(cfg.WALSyncInterval, 0), OnWALSync: n.onWALSync(opts.OnWALSync),
		})
		if err != nil {
			return nil, fmt.Errorf("open storage in %s: %w", cfg.DataDir, err)
		}
		n.eng = eng
		n.checkpoint = eng.Checkpoint
		n.sweepSnapshotLeftovers() // before any snapshot can be taken
	}
	n.drills = newFaultRegistry(n.eng, opts.Now)
	if opts.WrapEngine != nil {
		n.eng = opts.WrapEngine(n.eng)
	}
	if n.store, err = replica.OpenWith(n.eng, cfg.ID, replica.Options{RowCacheSize: rowCacheSize(cfg.RowCacheSize)}); err != nil {
		return nil, err
	}
	n.store.SetLogger(n.log) // Merkle tree builds report progress
	if n.disk = newDiskGuard(cfg, opts, n.log); n.disk != nil {
		n.disk.check() // a node started on a full disk refuses from the first write
		n.store.SetWriteGate(n.disk.refused)
	}
	// A node that applied agreed metadata before routes by it at once
	// (the log catches it up); flags only bootstrap a new cluster.
	cached, err := n.loadCachedMeta()
	if err != nil {
		return nil, err
	}
	if cached.Initialized() {
		n.dataCluster = cached.ClusterID
	}
	var mark *restoreMark
	if onDisk(cfg) {
		if mark, err = readRestoreMark(cfg.DataDir); err != nil {
			return nil, err
		}
		n.clusterFile = readClusterIDFile(cfg.DataDir)
	}
	if !cached.Initialized() && cfg.JoinAddr == "" && len(cfg.Keyspaces) > 0 {
		// A new cluster's keyspaces must fit its initial members (known
		// with their DCs from initial-cluster): one that does not would
		// leave the cluster uninitialized for good, retrying every
		// second. (Agreed metadata is never checked against the flags: a
		// keyspace may have outgrown them since.)
		members, _ := ParseInitialCluster(cfg.InitialCluster)
		if _, err := membership.NewTopology(0, cfg.Partitions, members, cfg.Keyspaces); err != nil {
			return nil, fmt.Errorf("config: %w: correct the keyspaces of the config file or --initial-cluster", err)
		}
	}
	if cached.Initialized() && (mark != nil || !metaLogExists(cfg)) {
		// Data restored from a snapshot onto a machine that never ran
		// this cluster's metadata log (or ran it only until a restart,
		// before the new cluster was initialized: the mark stays until
		// then): the cached metadata is the old cluster's, its addresses
		// the old machines'.
		n.restored = cached
		n.log.Info("this node's data was restored from a snapshot; waiting for the new cluster's metadata, initialized from the restored one",
			"restored_cluster_id", cached.ClusterID, "restored_epoch", cached.Epoch)
		if cached.Partitions != cfg.Partitions {
			n.log.Warn("--partitions is ignored: the restored cluster's ring has its own", "flag", cfg.Partitions, "restored", cached.Partitions)
		}
	} else if cached.Initialized() {
		n.adopted(cached.ClusterID) // CLUSTER_ID of a data directory older than the file
		if agreed, err := cached.Topology(); err != nil {
			n.log.Error("cached cluster metadata is unusable; waiting for the metadata log", "err", err)
		} else {
			topo = agreed
			if me, ok := agreed.Nodes[cfg.ID]; ok {
				n.self = me
			}
		}
	}
	n.topo.Store(topo)

	n.live = newLiveness(opts.Now)
	n.live.isMember = func(id string) bool {
		t := n.Topology()
		_, ok := t.Nodes[id]
		return ok || !t.Agreed()
	}
	if n.sec, err = newSecurity(cfg, n.log); err != nil {
		return nil, err
	}
	n.peers = transport.NewGRPC(n.resolve, append(append([]grpc.DialOption{n.sec.peerDial(), grpc.WithChainUnaryInterceptor(n.tagPeer), grpc.WithChainStreamInterceptor(n.tagPeerStream)}, n.tel.DialOptions()...), opts.DialOptions...)...)
	n.peers.PipeCalls(func() uint64 { return n.Topology().Epoch }, cfg.PeerCallsWaiting)
	n.live.onUp = func(id string, _ bool) { n.peers.Reconnect(id) }
	n.live.spawn = func(f func()) { n.spawn(f) }
	n.peers.DialPerNode(n.sec.peerDialTo)
	n.faults = transport.NewFaults(n.peers, n.dcOf)
	peers := n.live.track(n.faults)
	if n.hints, err = newHintTracker(n.store, cfg, opts.Now, n.tel.Metrics); err != nil {
		return nil, fmt.Errorf("read hints: %w", err)
	}
	if n.disk != nil {
		n.disk.onChange = n.hints.kick // gossip whether it is low on disk
	}
	secrets, err := cfg.secrets()
	if err != nil {
		return nil, err
	}
	n.coord, err = coordinator.New(coordinator.Config{
		Secrets:            secrets,
		NodeID:             cfg.ID,
		DC:                 n.self.DC,
		Store:              n.store,
		Peers:              peers,
		Live:               routing{liveness: n.live, hints: n.hints, dc: n.self.DC},
		Hints:              n.hints,
		Topology:           n.Topology,
		Ready:              n.ready,
		CheckRoute:         n.checkRoute,
		AwaitEpoch:         n.waitEpoch,
		RequestTimeout:     cfg.RequestTimeout,
		MaxValueSize:       int(cfg.MaxValueSize),
		MaxInFlight:        cfg.MaxInFlight,
		RequestIDWindow:    cfg.RequestIDWindow,
		MaxBackgroundBytes: int64(cfg.MaxBackgroundBytes),
		MaxReadBytes:       int64(cfg.MaxReadBytes),
		MaxRequestIDs:      cfg.MaxRequestIDs,
		TombstoneGrace:     cfg.TombstoneGrace,
		OnTombstone: func(loc replica.Loc) {
			if ae := n.ae.Load(); ae != nil {
				ae.MarkTombstone(loc)
			}
		},
		// Gossip starts after the coordinator, and before any request.
		ClockAhead: func() time.Duration {
			if n.gossip == nil {
				return 0
			}
			// Two peers at least: one alone cannot tell whose clock is
			// wrong (a correct node with one slow peer would look fast).
			d, peers := n.gossip.ClockAhead()
			if peers < 2 {
				return 0
			}
			return d
		},
		Now:      opts.Now,
		Logger:   n.log,
		Tracer:   n.tel.Tracer("coordinator"),
		Observer: n.tel.Metrics,
	})
	if err != nil {
		return nil, err
	}

	if err := n.buildServers(opts); err != nil {
		return nil, err
	}
	if err := n.startMeta(opts); err != nil {
		return nil, err
	}

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	n.cancel = cancel
	n.runCtx = runCtx
	if n.disk != nil {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.disk.run(runCtx, cmp.Or(opts.DiskCheckInterval, DefaultDiskCheckInterval))
		}()
	}
	if cfg.SnapshotInterval > 0 {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.runSnapshots(runCtx, cfg.SnapshotInterval, cfg.SnapshotKeep)
		}()
	}
	// A failed fsync stops the node's service (see storageFailed).
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.watchStorage(runCtx.Done())
	}()

	meta := membership.Meta{
		ID: cfg.ID, GRPCAddr: n.Addr(), PeerAddr: n.PeerAddr(), AdminAddr: n.AdminAddr(),
		RaftAddr: n.RaftAddr(),
		DC:       n.self.DC, Rack: n.self.Rack, Weight: n.self.Weight, Epoch: topo.Epoch,
		ClusterID: topo.ClusterID,
		HintsFor:  n.hints.Targets(),
		DiskLow:   n.DiskLow(),
	}
	if n.restored != nil {
		meta.Restored = n.restored.ClusterID
	}
	keys, err := cfg.gossipKeyring(secrets)
	if err != nil {
		return nil, err
	}
	// memberlist publishes an IP address: for a gossip listener bound to
	// every interface, the advertise host is resolved once, here.
	var gossipIP string
	if membership.WildcardHost(gossipAddr(cfg)) {
		if gossipIP, err = advertiseIP(runCtx, n.advHost); err != nil {
			return nil, fmt.Errorf("%w (%s)", err, advertiseSource(cfg))
		}
	}
	n.gossip, err = membership.Start(runCtx, membership.Config{
		Meta:        meta,
		Keys:        keys,
		Label:       "meridian/" + cfg.ClusterName,
		IsMember:    n.mayTalk,
		ClusterID:   func() string { return n.Topology().ClusterID },
		BindAddr:    gossipAddr(cfg),
		AdvertiseIP: gossipIP,
		Seeds:       cfg.GossipSeeds,
		Profile:     cfg.GossipProfile,
		Logger:      n.log,
		Now:         opts.Now,
	}, memberEvents{n})
	if err != nil {
		return nil, fmt.Errorf("gossip: %w", err)
	}
	n.gossipRef.Store(n.gossip)
	// What gossip heard before this node had agreed metadata, heard again
	// (the metadata log may have agreed while gossip started).
	n.gossip.Recheck()
	if err := n.startFaults(runCtx); err != nil {
		return nil, err
	}
	// Serve only once every field the handlers read is set.
	n.serveAll()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.discoverSeeds(runCtx)
	}()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.metaLoop(runCtx)
	}()
	if cfg.JoinAddr != "" {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.joinLoop(runCtx)
		}()
	}

	if err := n.tel.Metrics.RegisterEngine(n.storageStats); err != nil {
		return nil, err
	}
	if n.disk != nil {
		if err := n.tel.Metrics.RegisterDisk(
			func() float64 { return float64(n.disk.free.Load()) },
			func() float64 { return float64(n.disk.total.Load()) },
			func() float64 { return b2f(n.disk.low.Load()) }); err != nil {
			return nil, err
		}
	}
	if err := n.tel.Metrics.RegisterSnapshots(n.sched.stats); err != nil {
		return nil, err
	}
	if err := n.tel.Metrics.RegisterMembers(n.memberCounts); err != nil {
		return nil, err
	}
	if err := n.tel.Metrics.RegisterMetaLog(n.metaLogStats); err != nil {
		return nil, err
	}
	if err := n.tel.Metrics.RegisterGossipRefused(func() float64 { return float64(n.gossip.Refused()) }); err != nil {
		return nil, err
	}
	if err := n.tel.Metrics.RegisterConnections(n.Connections); err != nil {
		return nil, err
	}
	if err := n.tel.Metrics.RegisterPipes(
		func() float64 { return float64(n.peers.PipedWaiting()) },
		func() float64 { return float64(n.pipedRunning.Load()) },
		func() float64 { return float64(n.peerReplyBytes.Load()) }); err != nil {
		return nil, err
	}
	if err := n.tel.Metrics.RegisterClientCalls(func() float64 { return float64(n.clientCallsRunning.Load()) },
		func() float64 { return float64(n.clientReplyBytes.Load()) }); err != nil {
		return nil, err
	}
	if err := n.tel.Metrics.RegisterRepairRuns(func() float64 { return float64(n.repairRuns.Load()) }); err != nil {
		return nil, err
	}
	if err := n.tel.Metrics.RegisterBackground(
		func() float64 { w, _ := n.coord.Background(); return float64(w) },
		func() float64 { _, b := n.coord.Background(); return float64(b) }); err != nil {
		return nil, err
	}
	if err := n.tel.Metrics.RegisterReadBytes(func() float64 { return float64(n.coord.ReadBytes()) }); err != nil {
		return nil, err
	}
	if err := n.tel.Metrics.RegisterClockAhead(n.gossip.ClockAhead); err != nil {
		return nil, err
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.hints.gossipLoop(runCtx, meta, n.gossip, n.Topology, n.DiskLow, func(err error) { n.log.Warn("gossip metadata", "err", err) })
	}()
	handoff := &repair.Handoff{Log: n.hints.log, Peers: peers, Live: n.live, Interval: cfg.HintInterval, Logger: n.log, Now: opts.Now,
		IsMember: func(id string) bool { _, ok := n.Topology().Nodes[id]; return ok || !n.Topology().Agreed() },
		Place:    n.hintPlace, Self: cfg.ID, Local: n.coord, Leaving: n.leaving, Removed: func() bool { return n.wasRemoved(cfg.ID) },
		AfterRound: func() {
			if err := n.hints.refresh(); err != nil {
				n.log.Warn("read hint targets", "err", err)
			}
		},
		Delivered: n.tel.Metrics.HintsDelivered}
	// A node seen coming back gets its hints at the next round, whatever
	// backoff failed deliveries had built up (up to a minute).
	n.live.setOnUp(func(id string, back bool) {
		n.peers.Reconnect(id)
		if back {
			handoff.Wake(id)
		}
	})
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		handoff.Run(runCtx)
	}()
	if err := n.startAntiEntropy(runCtx, opts.Now); err != nil {
		return nil, fmt.Errorf("anti-entropy: %w", err)
	}
	n.startTransfers(runCtx)
	n.log.Info("node started", "grpc", n.Addr(), "gossip", n.gossip.Addr(), "engine", cfg.Engine, "actor", n.store.Actor(), "gomaxprocs", runtime.GOMAXPROCS(0))
	if cfg.Insecure {
		// Once started: a node that fails to start says only why.
		n.log.Warn("insecure: every listener is plaintext, node-to-node calls are not authenticated, and without principals in the auth config any caller may read, write and administer; use only on a trusted network")
	}
	return n, nil
}

func gossipAddr(cfg Config) string {
	if cfg.GossipAddr != "" {
		return cfg.GossipAddr
	}
	host, _, _ := net.SplitHostPort(cfg.GRPCAddr)
	return net.JoinHostPort(host, "0")
}

// hintPlace says where a hint's data belongs by the agreed topology: gone
// when its keyspace is not there under the hint's keyspace ID, else the
// partition's replicas and pending replicas (nil before the topology is
// agreed: the hint goes as stored).
func (n *Node) hintPlace(keyspace string, loc replica.Loc) (nodes []string, gone bool) {
	topo := n.Topology()
	if !topo.Agreed() {
		return nil, false
	}
	ks, ok := topo.Keyspace(keyspace) // "" is the default keyspace
	if !ok || ks.ID != loc.Keyspace || loc.Partition >= topo.Ring.Partitions() {
		return nil, true
	}
	for _, r := range ks.Table.Replicas(loc.Partition) {
		nodes = append(nodes, r.Node)
	}
	for _, r := range ks.Table.Pending(loc.Partition) {
		if !slices.Contains(nodes, r.Node) {
			nodes = append(nodes, r.Node)
		}
	}
	return nodes, false
}

// discoverSeeds asks the initial cluster's peers for their gossip address
// until one answers and the join succeeds, then looks every 5 s for
// members gossip lacks and drops former members from the gossip table.
func (n *Node) discoverSeeds(ctx context.Context) {
	// Until the first join every 500 ms; then every 5 s, for members the
	// gossip view lacks: nodes starting together can form islands (n1
	// joins n2 while n3 joins n4), and memberlist only ever talks to
	// members it knows, so an island would never see the others.
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	joined := len(n.cfg.GossipSeeds) > 0 || n.cfg.JoinAddr != ""
	if joined {
		t.Reset(5 * time.Second)
	}
	for {
		if topo := n.Topology(); topo.Agreed() {
			// Removed nodes leave the gossip table (their last state
			// would stay in it, and in the members metric, for good).
			n.gossip.ForgetExcept(func(id string) bool { _, ok := topo.Nodes[id]; return ok })
			// So do their connections and call streams.
			n.peers.Retain(slices.Collect(maps.Keys(topo.Nodes)))
		}
		for id := range n.Topology().Nodes {
			if id == n.cfg.ID || n.gossip.Alive(id) {
				continue
			}
			ictx, cancel := context.WithTimeout(ctx, time.Second)
			info, err := n.discover(ictx, id)
			cancel()
			if err != nil || info.GetGossipAddr() == "" {
				continue
			}
			if _, err := n.gossip.Join([]string{info.GetGossipAddr()}); err == nil {
				if !joined {
					n.log.Info("joined gossip", "via", id, "addr", info.GetGossipAddr())
					joined = true
					t.Reset(5 * time.Second)
				} else {
					n.log.Info("joined a member this node's gossip did not list", "member", id, "addr", info.GetGossipAddr())
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// memberCounts counts gossip members by state, for metrics.
// metaLogStats is the metadata log's state for the metrics.
func (n *Node) metaLogStats() telemetry.MetaLogStats {
	s := n.meta.Stats()
	out := telemetry.MetaLogStats{Leader: s.Leader, Term: s.Term, LastIndex: s.LastIndex, CommitIndex: s.CommitIndex,
		AppliedIndex: s.AppliedIndex, Epoch: n.Topology().Epoch, SinceContact: -1}
	switch {
	case s.Leader:
		out.SinceContact = 0
	case !s.LastContact.IsZero():
		out.SinceContact = max(time.Since(s.LastContact), 0)
	}
	return out
}

// onWALSync records a WAL fsync's duration in the node's metrics and
// passes it on to also, if set.
func (n *Node) onWALSync(also func(time.Duration)) func(time.Duration) {
	if also == nil {
		return n.tel.Metrics.WALSynced
	}
	return func(d time.Duration) {
		n.tel.Metrics.WALSynced(d)
		also(d)
	}
}

// storageStats is the engine's statistics and the row cache's.
func (n *Node) storageStats() map[string]float64 {
	stats := n.store.CacheStats()
	maps.Copy(stats, n.eng.Stats())
	return stats
}

// rowCacheSize maps the config's row-cache-size (nil: default, 0: off)
// onto replica.Options.RowCacheSize (0: default, negative: off).
func rowCacheSize(size *Bytes) int64 {
	switch {
	case size == nil:
		return 0
	case *size == 0:
		return -1
	default:
		return int64(*size)
	}
}

func (n *Node) memberCounts() map[string]int {
	out := map[string]int{}
	for _, m := range n.gossip.Members() {
		out[strings.ToLower(m.State.String())]++
	}
	return out
}

// Telemetry is the node's tracing and metrics.
func (n *Node) Telemetry() *telemetry.Telemetry { return n.tel }

// Topology is the node's current view of cluster metadata.
func (n *Node) Topology() *membership.Topology { return n.topo.Load() }

// provisionalTopology is what a node routes by before it has agreed
// metadata: the initial cluster from flags (epoch 0: requests wait for
// the metadata log), or just itself for a joining node.
func provisionalTopology(cfg Config) (*membership.Topology, error) {
	members, _ := ParseInitialCluster(cfg.InitialCluster)
	if cfg.JoinAddr != "" && !slices.ContainsFunc(members, func(m membership.NodeInfo) bool { return m.ID == cfg.ID }) {
		members = []membership.NodeInfo{{Node: placement.Node{ID: cfg.ID, DC: cfg.DC, Rack: cfg.Rack, Weight: cfg.Weight}, GRPCAddr: cfg.GRPCAddr, State: membership.StateJoining}}
	}
	topo, err := membership.NewTopology(0, cfg.Partitions, members, nil)
	if err != nil {
		return nil, fmt.Errorf("initial cluster: %w", err)
	}
	return topo, nil
}

// NotServing is why the node refuses client requests for good although
// it runs (agreed metadata it would not adopt), nil otherwise.
func (n *Node) NotServing() error {
	if n.Topology().Agreed() {
		return nil
	}
	if why := n.notAdopted.Load(); why != nil {
		return *why
	}
	return nil
}

// ready refuses client requests until the node routes by agreed metadata.
func (n *Node) ready() error {
	if !n.Topology().Agreed() {
		leader := ""
		if n.meta != nil {
			leader = n.meta.Leader()
		}
		if why := n.NotServing(); why != nil {
			return fmt.Errorf("this node does not serve: %w", why)
		}
		return fmt.Errorf("the cluster metadata is not agreed yet (metadata leader %q): wait until `meridian status` shows an epoch", leader)
	}
	return nil
}

// mayTalk is who may gossip and call the peer API: members of the agreed
// metadata; before this node has any, every node of the CA (a new
// cluster or a joiner learning the metadata).
func (n *Node) mayTalk(id string) bool {
	t := n.Topology()
	_, ok := t.Nodes[id]
	return ok || !t.Agreed()
}

// spawn runs f on a goroutine Close waits for, unless the node is
// closing (then f does not run and spawn reports false). For work started
// from callbacks, such as gossip's, that may fire as the node closes.
func (n *Node) spawn(f func()) bool {
	n.spawned.Lock()
	defer n.spawned.Unlock()
	if n.spawned.closed {
		return false
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
	return true
}

// stopSpawning makes spawn refuse work from here on: wg may then be
// waited for (no Add after Wait begins).
func (n *Node) stopSpawning() {
	n.spawned.Lock()
	n.spawned.closed = true
	n.spawned.Unlock()
}

// MetaLog is the node's member of the metadata Raft group.
func (n *Node) MetaLog() *membership.MetaLog { return n.meta }

func (n *Node) dcOf(id string) string { return n.Topology().Nodes[id].DC }

// ID is the node's ID.
func (n *Node) ID() string { return n.cfg.ID }

// Now is the node's clock.
func (n *Node) Now() time.Time { return n.now() }

// DiskLow reports whether the node refuses writes of data for lack of
// free disk space (min-free-disk).
func (n *Node) DiskLow() bool { return n.disk != nil && n.disk.low.Load() }

// PeerDiskLow reports whether this node's coordinator has id refusing
// writes for lack of disk space, as id last gossiped (writes skip it).
func (n *Node) PeerDiskLow(id string) bool { return n.live.DiskLow(id) }

// DC is the node's datacenter.
func (n *Node) DC() string { return n.self.DC }

// Addr is the gRPC address the node serves on (the configured one until
// it listens).
func (n *Node) Addr() string {
	if n.lis == nil {
		return n.cfg.GRPCAddr
	}
	return publicAddr(n.lis.Addr().String(), n.advHost)
}

// advertiseIP resolves the advertise host to an IP address (IPv4 first),
// for memberlist, which publishes only addresses ("" stays ""). A name
// resolving only to loopback addresses here (a machine's own name in a
// default /etc/hosts is 127.0.1.1) would send every peer to itself: it
// is refused, unless the name is a loopback one (localhost).
func advertiseIP(ctx context.Context, host string) (string, error) {
	if host == "" || net.ParseIP(host) != nil {
		return host, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil || len(addrs) == 0 {
		return "", fmt.Errorf("advertise host %s: resolve it to an IP address for gossip: %v (give the IP address instead)", host, err)
	}
	ips := make([]net.IP, len(addrs))
	for i, a := range addrs {
		ips[i] = a.IP
	}
	return pickAdvertiseIP(host, ips)
}

// pickAdvertiseIP picks, of the addresses host resolves to, the one to
// publish: IPv4 first, never a loopback one unless host is localhost.
func pickAdvertiseIP(host string, ips []net.IP) (string, error) {
	var v4, any, loop string
	for _, ip := range ips {
		switch {
		case ip.IsLoopback():
			loop = cmp.Or(loop, ip.String())
		case ip.To4() != nil:
			v4 = cmp.Or(v4, ip.String())
		default:
			any = cmp.Or(any, ip.String())
		}
	}
	if ip := cmp.Or(v4, any); ip != "" {
		return ip, nil
	}
	if host == "localhost" {
		return loop, nil
	}
	return "", fmt.Errorf("advertise host %s resolves to %s, a loopback address, on this machine: other nodes could not reach it; give this node's IP address as --advertise-host", host, loop)
}

// advertiseSource says where the advertise host came from, for errors.
func advertiseSource(cfg Config) string {
	if cfg.AdvertiseHost != "" {
		return "from --advertise-host"
	}
	return "the host of this node's --initial-cluster entry; --advertise-host gives another"
}

// publicAddr is a listener's address as others reach it: one bound to
// every interface is published with advHost instead of its wildcard host
// (0.0.0.0 would reach the dialer's own machine).
func publicAddr(addr, advHost string) string {
	if advHost == "" || !membership.WildcardHost(addr) {
		return addr
	}
	_, port, _ := net.SplitHostPort(addr)
	return net.JoinHostPort(advHost, port)
}

// GossipAddr is the memberlist address ("" until gossip has started).
func (n *Node) GossipAddr() string {
	if n.gossip == nil {
		return ""
	}
	return n.gossip.Addr()
}

// PeerConn is the shared gRPC connection to another node.
func (n *Node) PeerConn(id string) (*grpc.ClientConn, error) { return n.peers.Conn(id) }

// Alive reports whether this node currently routes to id.
func (n *Node) Alive(id string) bool { return id == n.cfg.ID || n.live.Alive(id) }

// leaving reports whether the agreed metadata has this node leaving the
// cluster or removed from it.
func (n *Node) leaving() bool {
	meta := n.Topology().Meta
	if meta == nil {
		return false
	}
	m, ok := meta.Members[n.cfg.ID]
	return ok && (m.State == membership.StateLeaving || m.State == membership.StateRemoved)
}

// wasRemoved reports whether the agreed metadata records node id as
// removed from the cluster (a member once, its certificate still valid).
func (n *Node) wasRemoved(id string) bool {
	_, ok := n.removedMember(id)
	return ok
}

// removedMember is node id's record when the agreed metadata records it
// as removed.
func (n *Node) removedMember(id string) (membership.MemberRecord, bool) {
	m, ok := n.Topology().Meta.Member(id) // (Member is safe on a nil state)
	if !ok || m.State != membership.StateRemoved {
		return membership.MemberRecord{}, false
	}
	return m, true
}

// Faults is the node's outgoing fault injector, for tests and drills.
func (n *Node) Faults() *transport.Faults { return n.faults }

// Store is the node's local data.
func (n *Node) Store() *replica.Store { return n.store }

// Gossip is the node's membership.
func (n *Node) Gossip() *membership.Gossip { return n.gossip }

// Close leaves the cluster, stops serving and closes storage. It records a
// clean shutdown, so the next start keeps the same version actor.
func (n *Node) Close() error {
	n.closeOnce.Do(func() { n.closeErr = n.close() })
	return n.closeErr
}

func (n *Node) close() error {
	var errs []error
	if n.health != nil {
		n.health.Shutdown()
	}
	// From here on new calls are refused (UNAVAILABLE); the clean-shutdown
	// marker is written only once every call in flight has returned and
	// the coordinator's background writes are done: a write after the
	// marker would be lost with its dot reused by the next incarnation.
	n.gate.close()
	if n.gossip != nil {
		errs = append(errs, n.gossip.Close())
	}
	drainBy := time.Now().Add(n.drain)
	drained := n.gate.wait(time.Until(drainBy))
	stopWithin := 5 * time.Second // for streams (health watches)
	if !drained {
		n.log.Warn("calls still running at shutdown; not recording a clean shutdown (the next start takes a new incarnation)", "waited", n.drain)
		stopWithin = 0 // waited enough: cut them off
	}
	n.stopServers(stopWithin)
	if n.cancel != nil {
		n.cancel()
	}
	n.stopSpawning()
	n.wg.Wait()
	if n.meta != nil {
		errs = append(errs, n.meta.Close())
	}
	if g := n.transfers.Load(); g != nil {
		g.stop() // after the log: no callback starts more
	}
	if n.raftLis != nil {
		n.raftLis.Close()
	}
	if n.coord != nil {
		switch {
		case !drained:
			// Calls still running may start background work, which must not
			// race with Close's wait: close it once they have returned.
			go func() {
				<-n.gate.idle
				n.coord.Close()
			}()
		case !within(drainBy.Add(time.Second), func() { n.coord.Drain(time.Until(drainBy)) }):
			// Its background writes (left to finish until drainBy, then
			// cancelled) outlast the bound (a stuck disk?): they may
			// still land after any marker.
			n.log.Warn("background writes still running at shutdown; not recording a clean shutdown (the next start takes a new incarnation)")
			drained = false
		}
	}
	if n.peers != nil {
		errs = append(errs, n.peers.Close())
	}
	switch {
	case n.store == nil:
	case n.Failure() != nil:
		// The storage failed: nothing more is written, least of all a
		// clean-shutdown marker.
	case drained:
		errs = append(errs, n.store.Close())
	}
	if n.eng != nil {
		errs = append(errs, n.eng.Close())
	}
	if n.tel != nil && n.ownTel {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, n.tel.Close(ctx))
		cancel()
	}
	return errors.Join(errs...)
}
