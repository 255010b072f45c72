package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/pki"
)

// LocalSpec describes a cluster of nodes run inside one process, each with
// its own storage directory and gRPC port on loopback: what `meridian dev`,
// `meridian demo` and the integration tests use.
type LocalSpec struct {
	// Dir holds one data directory per node and cluster.json.
	Dir        string
	DCs        int // default 1
	NodesPerDC int // default 3
	RacksPerDC int // default 1
	// Engine is "pebble" (default) or "memory".
	Engine string
	// Keyspaces beyond default.
	Keyspaces []membership.KeyspaceSpec
	// Partitions (default 1024).
	Partitions int
	// GossipProfile (default "local"; tests use "test").
	GossipProfile string
	// RequestTimeout for every node (default 5s).
	RequestTimeout time.Duration
	// Secrets are the cluster secrets every node shares (default: one
	// generated at start).
	Secrets []string
	// Insecure runs the cluster in plaintext; otherwise StartLocal creates
	// a CA, a certificate per node and a client certificate "admin" under
	// Dir/certs (kept across runs) and every listener uses TLS.
	Insecure bool
	// Configure, when set, adjusts every node's configuration.
	Configure func(*Config)
	// Auth is every node's auth configuration (default: open).
	Auth AuthConfig
	// Reflection turns gRPC server reflection on for every node (dev).
	Reflection bool
	// SeparateHosts binds DC i to 127.0.0.(i+1) instead of 127.0.0.1 for all.
	SeparateHosts bool
	Logger        *slog.Logger
	// Options are applied to every node (the Listener field is ignored).
	Options Options
	// NodeOptions, when set, adjusts one node's Options (tests: a node
	// whose clock runs fast).
	NodeOptions func(id string, o *Options)
}

// nodeOptions is the Options of node id: Options, the spec's logger
// unless they name one, then NodeOptions.
func (s LocalSpec) nodeOptions(id string) Options {
	opts := s.Options
	if opts.Logger == nil {
		opts.Logger = s.Logger
	}
	if s.NodeOptions != nil {
		s.NodeOptions(id, &opts)
	}
	return opts
}

// Local is a running local cluster.
type Local struct {
	spec    LocalSpec
	members []membership.NodeInfo
	mu      sync.Mutex
	nodes   map[string]*Node
	configs map[string]Config
}

// DCName is the name of the i-th DC of a local cluster ("dc1", "dc2", ...).
func DCName(i int) string { return fmt.Sprintf("dc%d", i+1) }

// ErrNoSeparateHosts is StartLocal's error when SeparateHosts asks for a
// loopback address this machine does not have (macOS has 127.0.0.1 only).
var ErrNoSeparateHosts = errors.New("a local cluster's DC addresses are not on this machine")

// MaxLocalDCs is the most DCs of a local cluster: with SeparateHosts,
// DC i listens on 127.0.0.(i+1).
const MaxLocalDCs = 254

// StartLocal starts every node of spec and waits until each sees the others
// through gossip (or ctx ends).
func StartLocal(ctx context.Context, spec LocalSpec) (*Local, error) {
	if spec.DCs < 0 || spec.DCs > MaxLocalDCs || spec.NodesPerDC < 0 || spec.RacksPerDC < 0 {
		return nil, fmt.Errorf("local cluster: %d DCs of %d nodes in %d racks: use 1 to %d DCs of at least 1 node in at least 1 rack (0: the defaults, 1 DC of 3 nodes in 1 rack)", spec.DCs, spec.NodesPerDC, spec.RacksPerDC, MaxLocalDCs)
	}
	if spec.DCs == 0 {
		spec.DCs = 1
	}
	if spec.NodesPerDC == 0 {
		spec.NodesPerDC = 3
	}
	if spec.RacksPerDC == 0 {
		spec.RacksPerDC = 1
	}
	if spec.GossipProfile == "" {
		spec.GossipProfile = "local"
	}
	if spec.Logger == nil {
		spec.Logger = slog.New(slog.DiscardHandler)
	}
	if spec.Dir == "" && spec.Engine != "memory" {
		return nil, errors.New("local cluster: Dir is empty")
	}
	l := &Local{spec: spec, nodes: map[string]*Node{}, configs: map[string]Config{}}
	// Reserve every gRPC port first: the initial cluster lists them all.
	var listeners []net.Listener
	closeAll := func() {
		for _, lis := range listeners {
			lis.Close()
		}
	}
	for d := 0; d < spec.DCs; d++ {
		host := "127.0.0.1"
		if spec.SeparateHosts {
			host = fmt.Sprintf("127.0.0.%d", d+1)
		}
		for i := 0; i < spec.NodesPerDC; i++ {
			lis, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
			if err != nil {
				closeAll()
				if spec.SeparateHosts && host != "127.0.0.1" {
					return nil, fmt.Errorf("%w: reserve a port on %s: %v (on macOS loopback has only 127.0.0.1: add the others with `sudo ifconfig lo0 alias %s up`, or put every DC on 127.0.0.1)", ErrNoSeparateHosts, host, err, host)
				}
				return nil, fmt.Errorf("reserve a port on %s: %w", host, err)
			}
			listeners = append(listeners, lis)
			m := membership.NodeInfo{GRPCAddr: lis.Addr().String()}
			m.ID = fmt.Sprintf("n%d", d*spec.NodesPerDC+i+1)
			m.DC = DCName(d)
			m.Rack = fmt.Sprintf("r%d", i%spec.RacksPerDC+1)
			m.Weight = 1
			l.members = append(l.members, m)
		}
	}
	initial := FormatInitialCluster(l.members)
	if !spec.Insecure {
		if spec.Dir == "" {
			closeAll()
			return nil, errors.New("local cluster: TLS needs Dir for its certificates (or set Insecure)")
		}
		if err := l.makeCerts(); err != nil {
			closeAll()
			return nil, err
		}
	}
	if len(spec.Secrets) == 0 {
		spec.Secrets = []string{GenerateSecret()}
		l.spec.Secrets = spec.Secrets
	}
	var seed string
	for i, m := range l.members {
		cfg := Config{
			ID:             m.ID,
			GRPCAddr:       m.GRPCAddr,
			GossipAddr:     net.JoinHostPort(host(m.GRPCAddr), "0"),
			DataDir:        filepath.Join(spec.Dir, m.ID),
			InitialCluster: initial,
			Engine:         spec.Engine,
			Partitions:     spec.Partitions,
			Keyspaces:      spec.Keyspaces,
			GossipProfile:  spec.GossipProfile,
			RequestTimeout: spec.RequestTimeout,
			ClusterSecrets: spec.Secrets,
			Reflection:     spec.Reflection,
			Auth:           spec.Auth,
			Insecure:       spec.Insecure,
		}
		if !spec.Insecure {
			cfg.CAFile, _ = pki.CAFiles(l.CertDir())
			cfg.CertFile, cfg.KeyFile = pki.NodeFiles(l.CertDir(), m.ID)
		}
		if spec.Configure != nil {
			spec.Configure(&cfg)
		}
		if seed != "" {
			cfg.GossipSeeds = []string{seed}
		}
		opts := spec.nodeOptions(m.ID)
		opts.Listener = listeners[i]
		n, err := Start(ctx, cfg, opts)
		if err != nil {
			for _, lis := range listeners[i+1:] {
				lis.Close()
			}
			l.Close()
			return nil, fmt.Errorf("start %s: %w", m.ID, err)
		}
		if seed == "" {
			seed = n.GossipAddr()
		}
		// A restart must reuse the gossip address: memberlist does not let
		// a node name come back from another address.
		cfg.GossipAddr = n.GossipAddr()
		cfg.GossipSeeds = []string{seed}
		l.nodes[m.ID] = n
		l.configs[m.ID] = cfg
	}
	if err := l.WaitConverged(ctx); err != nil {
		l.Close()
		return nil, err
	}
	if err := l.WaitAgreed(ctx); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// WaitAgreed waits until every running node routes by agreed metadata of
// the same epoch.
func (l *Local) WaitAgreed(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		nodes := l.Nodes()
		same := len(nodes) > 0
		for _, n := range nodes {
			topo := n.Topology()
			same = same && topo.Agreed() && topo.Epoch == nodes[0].Topology().Epoch
		}
		if same {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("local cluster: the nodes did not agree on cluster metadata: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// Join starts a new node that joins the running cluster through a member
// (it owns nothing until a committed plan adds it).
func (l *Local) Join(ctx context.Context, id, dc, rack string) (*Node, error) {
	running := l.Nodes()
	if len(running) == 0 {
		return nil, errors.New("local cluster: no running node to join through")
	}
	hostAddr := host(running[0].Addr())
	for _, n := range running {
		if n.DC() == dc {
			hostAddr = host(n.Addr())
			break
		}
	}
	m := membership.NodeInfo{GRPCAddr: net.JoinHostPort(hostAddr, "0")}
	m.ID, m.DC, m.Rack, m.Weight = id, dc, rack, 1
	cfg := Config{
		ID: id, GRPCAddr: m.GRPCAddr, GossipAddr: net.JoinHostPort(hostAddr, "0"),
		JoinAddr: running[0].Addr(), DC: dc, Rack: rack, Weight: 1,
		Engine: l.spec.Engine, Partitions: l.spec.Partitions, GossipProfile: l.spec.GossipProfile,
		RequestTimeout: l.spec.RequestTimeout, ClusterSecrets: l.spec.Secrets, Reflection: l.spec.Reflection,
		Auth: l.spec.Auth, Insecure: l.spec.Insecure,
	}
	if l.spec.Dir != "" {
		cfg.DataDir = filepath.Join(l.spec.Dir, id)
	}
	for _, n := range running {
		cfg.GossipSeeds = append(cfg.GossipSeeds, n.GossipAddr())
	}
	l.mu.Lock()
	l.members = append(l.members, m)
	l.mu.Unlock()
	if !l.spec.Insecure {
		if err := l.makeCerts(); err != nil {
			return nil, err
		}
		cfg.CAFile, _ = pki.CAFiles(l.CertDir())
		cfg.CertFile, cfg.KeyFile = pki.NodeFiles(l.CertDir(), id)
	}
	if l.spec.Configure != nil {
		l.spec.Configure(&cfg)
	}
	opts := l.spec.nodeOptions(id)
	opts.Listener = nil
	n, err := Start(ctx, cfg, opts)
	if err != nil {
		return nil, err
	}
	cfg.GRPCAddr, cfg.GossipAddr = n.Addr(), n.GossipAddr()
	l.mu.Lock()
	l.nodes[id] = n
	l.configs[id] = cfg
	for i := range l.members { // its port, picked at start (cluster.json, restarts)
		if l.members[i].ID == id {
			l.members[i].GRPCAddr = n.Addr()
		}
	}
	l.mu.Unlock()
	return n, nil
}

func host(addr string) string {
	h, _, _ := net.SplitHostPort(addr)
	return h
}

// WaitConverged waits until every running node's gossip sees every other
// running node alive.
func (l *Local) WaitConverged(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if l.converged() {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("local cluster: gossip did not converge: %w", ctx.Err())
		case <-t.C:
		}
	}
}

func (l *Local) converged() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, n := range l.nodes {
		alive := 0
		for _, m := range n.Gossip().Members() {
			if _, running := l.nodes[m.Meta.ID]; running && m.State == membership.StateAlive {
				alive++
			}
		}
		if alive != len(l.nodes) {
			return false
		}
	}
	return true
}

// Members lists every configured node (running or not), in ID order.
func (l *Local) Members() []membership.NodeInfo {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.members)
}

// Node returns a running node by ID (nil if stopped).
func (l *Local) Node(id string) *Node {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.nodes[id]
}

// Nodes returns the running nodes in ID order.
func (l *Local) Nodes() []*Node {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]*Node, 0, len(l.nodes))
	for _, n := range l.nodes {
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return idLess(out[i].ID(), out[j].ID()) })
	return out
}

func idLess(a, b string) bool {
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return a < b
}

// Stop stops one node (gracefully: it leaves gossip, data stays on disk).
func (l *Local) Stop(id string) error {
	l.mu.Lock()
	n := l.nodes[id]
	delete(l.nodes, id)
	l.mu.Unlock()
	if n == nil {
		return fmt.Errorf("node %s is not running", id)
	}
	return n.Close()
}

// Restart starts a stopped node again on the same address and data.
func (l *Local) Restart(ctx context.Context, id string) (*Node, error) {
	l.mu.Lock()
	cfg, ok := l.configs[id]
	_, running := l.nodes[id]
	l.mu.Unlock()
	if !ok || running {
		return nil, fmt.Errorf("node %s is unknown or already running", id)
	}
	opts := l.spec.nodeOptions(id)
	cfg.GossipSeeds = nil
	for _, other := range l.Nodes() {
		cfg.GossipSeeds = append(cfg.GossipSeeds, other.GossipAddr())
	}
	// The node comes back at its client address, which the topology
	// lists: while it was down, another process's outgoing connection may
	// have taken the port as its local port for a moment.
	lis, err := listenAgain(ctx, cfg.GRPCAddr)
	if err != nil {
		return nil, err
	}
	opts.Listener = lis
	n, err := Start(ctx, cfg, opts)
	if err != nil {
		lis.Close()
		return nil, err
	}
	l.mu.Lock()
	l.nodes[id] = n
	l.mu.Unlock()
	return n, nil
}

// listenAgain listens on addr, waiting up to 10 s while it is in use.
func listenAgain(ctx context.Context, addr string) (net.Listener, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		lis, err := net.Listen("tcp", addr)
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			if err != nil {
				return nil, fmt.Errorf("listen on %s again: %w", addr, err)
			}
			return lis, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Close stops every node.
func (l *Local) Close() error {
	l.mu.Lock()
	nodes := l.nodes
	l.nodes = map[string]*Node{}
	l.mu.Unlock()
	var wg sync.WaitGroup
	errs := make(chan error, len(nodes))
	for _, n := range nodes {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- n.Close() }()
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

// CertDir is where a TLS local cluster keeps its certificates.
func (l *Local) CertDir() string { return filepath.Join(l.spec.Dir, "certs") }

// makeCerts creates the CA (once), node certificates for every member and
// the "admin" client certificate, reusing those already there.
func (l *Local) makeCerts() error {
	dir := l.CertDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	exists := func(f string) bool { _, err := os.Stat(f); return err == nil }
	if ca, _ := pki.CAFiles(dir); !exists(ca) {
		if err := pki.CreateCA(dir, pki.CAOptions{}); err != nil {
			return fmt.Errorf("local cluster CA: %w", err)
		}
	}
	for _, m := range l.Members() {
		if crt, _ := pki.NodeFiles(dir, m.ID); !exists(crt) {
			hosts := append(pki.DefaultHosts(), host(m.GRPCAddr))
			if err := pki.CreateNode(dir, m.ID, hosts, pki.CertOptions{}); err != nil {
				return fmt.Errorf("local cluster certificate for %s: %w", m.ID, err)
			}
		}
	}
	if crt, _ := pki.ClientFiles(dir, LocalClient); !exists(crt) {
		if err := pki.CreateClient(dir, LocalClient, pki.CertOptions{}); err != nil {
			return fmt.Errorf("local cluster client certificate: %w", err)
		}
	}
	return nil
}

// LocalClient is the client certificate a TLS local cluster creates.
const LocalClient = "admin"

// ClientTLS returns the CA, client certificate and key files a client of
// this cluster uses ("" for an insecure cluster).
func (l *Local) ClientTLS() (ca, cert, key string) {
	if l.spec.Insecure {
		return "", "", ""
	}
	ca, _ = pki.CAFiles(l.CertDir())
	cert, key = pki.ClientFiles(l.CertDir(), LocalClient)
	return ca, cert, key
}

// DialOption is the transport credentials for a client of this cluster.
func (l *Local) DialOption() (grpc.DialOption, error) {
	if l.spec.Insecure {
		return grpc.WithTransportCredentials(insecure.NewCredentials()), nil
	}
	ca, cert, key := l.ClientTLS()
	src, err := pki.NewSource(ca, cert, key, pki.SourceOptions{})
	if err != nil {
		return nil, err
	}
	return grpc.WithTransportCredentials(pki.ClientCredentials(src, pki.ClientOptions{})), nil
}

// ClusterFile is the content of cluster.json, for scripts and tools.
type ClusterFile struct {
	Nodes []ClusterFileNode `json:"nodes"`
	// CA, ClientCert and ClientKey are the files a client needs (empty
	// for an insecure cluster).
	CA         string `json:"ca,omitempty"`
	ClientCert string `json:"client_cert,omitempty"`
	ClientKey  string `json:"client_key,omitempty"`
}

// ClusterFileNode is one node in cluster.json.
type ClusterFileNode struct {
	ID         string `json:"id"`
	GRPCAddr   string `json:"grpc_addr"`
	GossipAddr string `json:"gossip_addr"`
	PeerAddr   string `json:"peer_addr"`
	AdminAddr  string `json:"admin_addr"`
	DC         string `json:"dc"`
	Rack       string `json:"rack"`
	Weight     int    `json:"weight"`
	DataDir    string `json:"data_dir"`
}

// WriteClusterFile writes DIR/cluster.json listing every node.
func (l *Local) WriteClusterFile(path string) error {
	var cf ClusterFile
	cf.CA, cf.ClientCert, cf.ClientKey = l.ClientTLS()
	l.mu.Lock()
	members, configs := slices.Clone(l.members), maps.Clone(l.configs)
	l.mu.Unlock()
	for _, m := range members {
		e := ClusterFileNode{ID: m.ID, GRPCAddr: m.GRPCAddr, DC: m.DC, Rack: m.Rack, Weight: m.Weight, DataDir: configs[m.ID].DataDir}
		if n := l.Node(m.ID); n != nil {
			e.GossipAddr, e.PeerAddr, e.AdminAddr = n.GossipAddr(), n.PeerAddr(), n.AdminAddr()
		}
		cf.Nodes = append(cf.Nodes, e)
	}
	b, err := json.MarshalIndent(cf, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// ReadClusterFile reads a cluster.json written by WriteClusterFile.
func ReadClusterFile(path string) (*ClusterFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var cf ClusterFile
	if err := json.Unmarshal(b, &cf); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(cf.Nodes) == 0 {
		return nil, fmt.Errorf("%s lists no nodes", path)
	}
	return &cf, nil
}
