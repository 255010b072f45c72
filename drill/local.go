package drill

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/pki"
)

// LocalSpec describes a cluster of real `meridian serve` processes the
// drill starts on this machine, and owns: it may kill and restart them.
type LocalSpec struct {
	// Binary is the meridian binary to run (the drill passes its own,
	// os.Executable()).
	Binary string
	// Dir holds the certificates, the cluster secret, one data directory
	// and one log per node, and cluster.json. It must not hold a previous
	// drill's cluster (StartLocal refuses it).
	Dir        string
	DCs        int // default 3
	NodesPerDC int // default 3
	// Partitions of the ring (0: serve's default).
	Partitions int
	// GossipProfile of every node (default "local").
	GossipProfile string
	// Args are added to every node's serve flags.
	Args []string
	// Log receives progress lines (default: discarded).
	Log io.Writer
}

// Local is a running local cluster of processes.
type Local struct {
	spec             LocalSpec
	nodes            []*localNode
	ca, cert, key    string
	dialOpt          grpc.DialOption
	healthyTimeout   time.Duration
	stopGraceTimeout time.Duration
}

type localNode struct {
	id, dc, rack string
	addr         string // client and admin listener
	gossip, peer string
	args         []string
	logPath      string
	mu           struct {
		sync.Mutex
		cmd  *exec.Cmd
		done chan struct{} // closed when the process exited and was reaped
	}
}

// StartLocal creates the cluster's files under spec.Dir, starts every
// node and waits until each is healthy. On error, whatever started is
// stopped.
func StartLocal(ctx context.Context, spec LocalSpec) (*Local, error) {
	if spec.DCs == 0 {
		spec.DCs = 3
	}
	if spec.NodesPerDC == 0 {
		spec.NodesPerDC = 3
	}
	if spec.GossipProfile == "" {
		spec.GossipProfile = "local"
	}
	if spec.Log == nil {
		spec.Log = io.Discard
	}
	if spec.Binary == "" || spec.Dir == "" {
		return nil, errors.New("local cluster: Binary and Dir are required")
	}
	if spec.DCs < 1 || spec.NodesPerDC < 1 {
		return nil, fmt.Errorf("local cluster: --dcs and --nodes-per-dc must be at least 1 (got %d, %d)", spec.DCs, spec.NodesPerDC)
	}
	// A previous drill's files would be overwritten in part (the secret)
	// and refused in part (pki never overwrites a CA): refuse before
	// writing anything.
	if err := refuseUsed(spec.Dir, "cluster.secret", "certs", "cluster.json"); err != nil {
		return nil, err
	}
	l := &Local{spec: spec, healthyTimeout: 60 * time.Second, stopGraceTimeout: 20 * time.Second}
	if err := os.MkdirAll(spec.Dir, 0o755); err != nil {
		return nil, err
	}
	secret := filepath.Join(spec.Dir, "cluster.secret")
	if err := os.WriteFile(secret, []byte(node.GenerateSecret()+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("local cluster secret: %w", err)
	}
	n := spec.DCs * spec.NodesPerDC
	ports, err := FreePorts(4 * n)
	if err != nil {
		return nil, err
	}
	var initial []string
	for d := range spec.DCs {
		for i := range spec.NodesPerDC {
			k := d*spec.NodesPerDC + i
			ln := &localNode{id: fmt.Sprintf("n%d", k+1), dc: fmt.Sprintf("dc%d", d+1), rack: fmt.Sprintf("r%d", i+1),
				addr: fmt.Sprintf("127.0.0.1:%d", ports[4*k])}
			ln.logPath = filepath.Join(spec.Dir, ln.id+".log")
			l.nodes = append(l.nodes, ln)
			initial = append(initial, fmt.Sprintf("%s=%s/%s/%s", ln.id, ln.addr, ln.dc, ln.rack))
		}
	}
	certs := filepath.Join(spec.Dir, "certs")
	if err := l.makeCerts(certs); err != nil {
		return nil, err
	}
	for k, ln := range l.nodes {
		crt, key := pki.NodeFiles(certs, ln.id)
		ln.gossip, ln.peer = fmt.Sprintf("127.0.0.1:%d", ports[4*k+1]), fmt.Sprintf("127.0.0.1:%d", ports[4*k+2])
		ln.args = []string{"serve", "--id", ln.id, "--grpc-addr", ln.addr, "--admin-addr", "client",
			"--gossip-addr", ln.gossip, "--peer-addr", ln.peer,
			"--raft-addr", fmt.Sprintf("127.0.0.1:%d", ports[4*k+3]),
			"--data-dir", filepath.Join(spec.Dir, ln.id), "--initial-cluster", strings.Join(initial, ","),
			"--cluster-secret-file", secret, "--gossip-profile", spec.GossipProfile,
			"--ca", l.ca, "--cert", crt, "--key", key, "--log-level", "warn"}
		if spec.Partitions > 0 {
			ln.args = append(ln.args, "--partitions", fmt.Sprint(spec.Partitions))
		}
		ln.args = append(ln.args, spec.Args...)
	}
	src, err := pki.NewSource(l.ca, l.cert, l.key, pki.SourceOptions{})
	if err != nil {
		return nil, err
	}
	l.dialOpt = grpc.WithTransportCredentials(pki.ClientCredentials(src, pki.ClientOptions{}))
	fmt.Fprintf(spec.Log, "starting %d meridian serve process(es) in %d datacenter(s) under %s ...\n", n, spec.DCs, spec.Dir)
	for _, ln := range l.nodes {
		if err := l.spawn(ln); err != nil {
			l.Close()
			return nil, err
		}
	}
	for _, ln := range l.nodes {
		if err := l.waitHealthy(ctx, ln); err != nil {
			l.Close()
			return nil, err
		}
	}
	if err := l.WriteClusterFile(filepath.Join(spec.Dir, "cluster.json")); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// refuseUsed refuses dir if it holds any of names, the files a previous
// drill's cluster left there.
func refuseUsed(dir string, names ...string) error {
	for _, name := range names {
		_, err := os.Lstat(filepath.Join(dir, name))
		if err == nil {
			return fmt.Errorf("%s holds a previous drill's cluster (%s): give a new --dir or remove it", dir, name)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

func (l *Local) makeCerts(dir string) error {
	if err := pki.CreateCA(dir, pki.CAOptions{}); err != nil {
		return fmt.Errorf("local cluster CA: %w", err)
	}
	for _, ln := range l.nodes {
		if err := pki.CreateNode(dir, ln.id, pki.DefaultHosts(), pki.CertOptions{}); err != nil {
			return fmt.Errorf("certificate for %s: %w", ln.id, err)
		}
	}
	if err := pki.CreateClient(dir, "drill", pki.CertOptions{}); err != nil {
		return fmt.Errorf("client certificate: %w", err)
	}
	l.ca, _ = pki.CAFiles(dir)
	l.cert, l.key = pki.ClientFiles(dir, "drill")
	return nil
}

// FreePorts returns n ports of 127.0.0.1 for local nodes, free for TCP and
// UDP (gossip binds both) when picked, and picked from below the kernel's
// ephemeral port range: a port from inside it can become an outgoing
// connection's local port before the node binds it, or while a restarted
// node is down ("address already in use").
func FreePorts(n int) ([]int, error) {
	lo, hi := 20000, ephemeralLow()
	var closers []func() error
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries == 1000 {
			return nil, fmt.Errorf("no %d free ports of 127.0.0.1 below %d", n, hi)
		}
		port := 0 // a range too narrow to pick from: the kernel picks
		if hi-lo >= 1000 {
			port = lo + rand.IntN(hi-lo)
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		port = l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			l.Close()
			continue
		}
		closers = append(closers, l.Close, u.Close)
		ports = append(ports, port)
	}
	return ports, nil
}

// ephemeralLow is the first port of the kernel's ephemeral range (32768,
// Linux's default, where the range cannot be read).
func ephemeralLow() int {
	const dflt = 32768
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return dflt
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return dflt
	}
	lo, err := strconv.Atoi(f[0])
	if err != nil {
		return dflt
	}
	return lo
}

func (l *Local) node(id string) (*localNode, error) {
	for _, ln := range l.nodes {
		if ln.id == id {
			return ln, nil
		}
	}
	return nil, fmt.Errorf("no node %s in the local cluster", id)
}

// childEnv is env without the MERIDIAN_* variables: a drill's nodes and
// commands are configured by the drill's flags alone. Inherited, an
// operator's MERIDIAN_CONFIG (a production node's file), MERIDIAN_INSECURE
// or MERIDIAN_TOMBSTONE_GRACE would change the drill's nodes, or stop
// them starting with an error that points nowhere near the drill.
func childEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if !strings.HasPrefix(kv, "MERIDIAN_") {
			out = append(out, kv)
		}
	}
	return out
}

// spawn starts a node's process (its output appended to its log) and a
// goroutine that reaps it.
func (l *Local) spawn(ln *localNode) error {
	ln.mu.Lock()
	defer ln.mu.Unlock()
	if ln.mu.cmd != nil {
		return fmt.Errorf("%s is already running", ln.id)
	}
	logf, err := os.OpenFile(ln.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(l.spec.Binary, ln.args...)
	cmd.Env = childEnv(os.Environ())
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", ln.id, err)
	}
	_ = os.WriteFile(filepath.Join(l.spec.Dir, ln.id+".pid"), fmt.Appendf(nil, "%d\n", cmd.Process.Pid), 0o644)
	done := make(chan struct{})
	ln.mu.cmd, ln.mu.done = cmd, done
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	return nil
}

// signal sends sig to a running node and waits up to timeout for it to
// exit; it then forgets the process.
func (l *Local) signal(ln *localNode, sig syscall.Signal, timeout time.Duration) error {
	ln.mu.Lock()
	cmd, done := ln.mu.cmd, ln.mu.done
	ln.mu.Unlock()
	if cmd == nil {
		return fmt.Errorf("%s is not running", ln.id)
	}
	_ = cmd.Process.Signal(sig)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		_ = cmd.Process.Kill()
		<-done
		ln.forget()
		return fmt.Errorf("%s did not exit within %s of %s: killed", ln.id, timeout, sig)
	}
	ln.forget()
	return nil
}

func (ln *localNode) forget() {
	ln.mu.Lock()
	ln.mu.cmd, ln.mu.done = nil, nil
	ln.mu.Unlock()
}

// Kill implements Processes: SIGKILL.
func (l *Local) Kill(id string) error {
	ln, err := l.node(id)
	if err != nil {
		return err
	}
	return l.signal(ln, syscall.SIGKILL, 10*time.Second)
}

// Stop implements Processes: SIGTERM, and SIGKILL if the node has not
// exited after the grace period.
func (l *Local) Stop(_ context.Context, id string) error {
	ln, err := l.node(id)
	if err != nil {
		return err
	}
	return l.signal(ln, syscall.SIGTERM, l.stopGraceTimeout)
}

// Start implements Processes: start the node again with the same flags
// and data, and wait until it is healthy.
func (l *Local) Start(ctx context.Context, id string) error {
	ln, err := l.node(id)
	if err != nil {
		return err
	}
	if err := l.spawn(ln); err != nil {
		return err
	}
	return l.waitHealthy(ctx, ln)
}

// waitHealthy polls the node's health service until it is SERVING.
func (l *Local) waitHealthy(ctx context.Context, ln *localNode) error {
	cc, err := grpc.NewClient(ln.addr, l.dialOpt)
	if err != nil {
		return err
	}
	defer cc.Close()
	deadline := time.Now().Add(l.healthyTimeout)
	var last error
	for {
		ln.mu.Lock()
		done := ln.mu.done
		ln.mu.Unlock()
		if done == nil {
			return fmt.Errorf("%s is not running (see %s)", ln.id, ln.logPath)
		}
		select {
		case <-done:
			return fmt.Errorf("%s exited while starting: see %s", ln.id, ln.logPath)
		default:
		}
		hctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := healthpb.NewHealthClient(cc).Check(hctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
		last = err
		if err == nil {
			last = fmt.Errorf("health %s", resp.GetStatus())
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not healthy after %s: %v (see %s)", ln.id, l.healthyTimeout, last, ln.logPath)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Close stops every running node (SIGTERM, then SIGKILL after the grace
// period), all at once.
func (l *Local) Close() error {
	var wg sync.WaitGroup
	errs := make([]error, len(l.nodes))
	for i, ln := range l.nodes {
		ln.mu.Lock()
		running := ln.mu.cmd != nil
		ln.mu.Unlock()
		if !running {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = l.signal(ln, syscall.SIGTERM, l.stopGraceTimeout)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Target is how Connect reaches the local cluster.
func (l *Local) Target() Target {
	t := Target{Name: fmt.Sprintf("local: %d meridian serve processes in %s", len(l.nodes), l.spec.Dir), DialOptions: []grpc.DialOption{l.dialOpt}}
	for _, ln := range l.nodes {
		t.Nodes = append(t.Nodes, TargetNode{ID: ln.id, DC: ln.dc, GRPCAddr: ln.addr, AdminAddr: ln.addr})
	}
	return t
}

// PIDs maps each running node to its process ID.
func (l *Local) PIDs() map[string]int {
	out := map[string]int{}
	for _, ln := range l.nodes {
		ln.mu.Lock()
		if ln.mu.cmd != nil {
			out[ln.id] = ln.mu.cmd.Process.Pid
		}
		ln.mu.Unlock()
	}
	return out
}

// WriteClusterFile writes the cluster.json other commands read (--cluster).
func (l *Local) WriteClusterFile(path string) error {
	cf := node.ClusterFile{CA: l.ca, ClientCert: l.cert, ClientKey: l.key}
	for _, ln := range l.nodes {
		cf.Nodes = append(cf.Nodes, node.ClusterFileNode{ID: ln.id, GRPCAddr: ln.addr, GossipAddr: ln.gossip, PeerAddr: ln.peer, AdminAddr: ln.addr,
			DC: ln.dc, Rack: ln.rack, Weight: 1, DataDir: filepath.Join(l.spec.Dir, ln.id)})
	}
	b, err := json.MarshalIndent(cf, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
