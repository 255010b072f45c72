package node_test

import (
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridiankv/meridian/node"
)

func soloConfig(t *testing.T, id, addr, dir string) node.Config {
	t.Helper()
	return node.Config{ID: id, GRPCAddr: addr, GossipAddr: "127.0.0.1:0", DataDir: dir,
		InitialCluster: id + "=" + addr, GossipProfile: "test", ClusterSecrets: []string{node.GenerateSecret()}, Insecure: true}
}

// TestDataDirBelongsToItsNode: the first start records the node ID in the
// data directory; another ID is refused with what to do, the same ID starts.
func TestDataDirBelongsToItsNode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "d") // Start creates it
	n, err := node.Start(ctxT(t), soloConfig(t, "n1", "127.0.0.1:0", dir), node.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "NODE_ID")); err != nil || string(b) != "n1\n" {
		t.Fatalf("NODE_ID = %q, %v", b, err)
	}
	// Every stored value lies below it: only the node's user may enter.
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("the data directory created with mode %v (%v), want 0700", st.Mode().Perm(), err)
	}
	_, err = node.Start(ctxT(t), soloConfig(t, "n2", "127.0.0.1:0", dir), node.Options{})
	if err == nil || !strings.Contains(err.Error(), `belongs to node "n1", not "n2": use --id n1 or another --data-dir`) {
		t.Fatalf("n2 on n1's data dir: %v", err)
	}
	n, err = node.Start(ctxT(t), soloConfig(t, "n1", "127.0.0.1:0", dir), node.Options{})
	if err != nil {
		t.Fatalf("n1 again on its own data dir: %v", err)
	}
	n.Close()
}

// TestUnopenableStorageIsAnError: when the storage engine cannot open
// its directory (here data/ is a file), the start returns the engine's
// error, not a panic from closing an engine that never opened.
func TestUnopenableStorageIsAnError(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "data"), []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := soloConfig(t, "n1", "127.0.0.1:0", dir)
	cfg.Engine = "pebble"
	n, err := node.Start(ctxT(t), cfg, node.Options{})
	if err == nil {
		n.Close()
		t.Fatal("start on an unopenable data directory succeeded")
	}
	if !strings.Contains(err.Error(), "open storage in "+dir) {
		t.Fatalf("start on an unopenable data directory: %v", err)
	}
}

// TestStartErrorClosesWhatItOpened: a start that fails part way (here the
// gRPC port is taken) returns the error instead of panicking, and releases
// the data directory for the next start.
func TestStartErrorClosesWhatItOpened(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	_, err = node.Start(ctxT(t), soloConfig(t, "n1", busy.Addr().String(), dir), node.Options{})
	if err == nil || !strings.Contains(err.Error(), "listen on grpc-addr") {
		t.Fatalf("start on a busy port: %v", err)
	}
	n, err := node.Start(ctxT(t), soloConfig(t, "n1", "127.0.0.1:0", dir), node.Options{})
	if err != nil {
		t.Fatalf("start after a failed start on the same data dir: %v", err)
	}
	n.Close()
}

// TestValidateOwnAddress: the node's entry in initial-cluster must be its
// grpc-addr (port 0 and wildcard hosts cannot be compared and pass).
func TestValidateOwnAddress(t *testing.T) {
	for _, c := range []struct {
		grpc, listed string
		ok           bool
	}{
		{"127.0.0.1:7001", "127.0.0.1:7001", true},
		{"127.0.0.1:0", "127.0.0.1:7001", true},
		{"0.0.0.0:7001", "10.0.0.5:7001", true},
		{":7001", "db1.example:7001", true},
		{"[::]:7001", "10.0.0.5:7001", true},
		{"[::1]:7001", "[0:0:0:0:0:0:0:1]:7001", true},
		{"127.0.0.1:7002", "127.0.0.1:7001", false},
		{"127.0.0.2:7001", "127.0.0.1:7001", false},
		{"0.0.0.0:7002", "10.0.0.5:7001", false},
	} {
		cfg := soloConfig(t, "n1", c.grpc, t.TempDir())
		cfg.InitialCluster = "n1=" + c.listed + ",n2=127.0.0.1:9"
		err := cfg.Validate()
		if c.ok && err != nil {
			t.Errorf("grpc-addr %s, listed %s: %v", c.grpc, c.listed, err)
		}
		if !c.ok && (err == nil || !strings.Contains(err.Error(), "grpc-addr "+c.grpc+" differs from n1's address "+c.listed)) {
			t.Errorf("grpc-addr %s, listed %s: %v, want a mismatch error naming both", c.grpc, c.listed, err)
		}
	}
}

// TestPeerCallBounds: the call stream bounds take 0 for their default and
// refuse negative or absurd values, naming the key; so does the row cache
// size.
func TestPeerCallBounds(t *testing.T) {
	for _, c := range []struct {
		waiting, running, client int
		bad                      string
	}{{0, 0, 0, ""}, {10, 20, 30, ""}, {-1, 0, 0, "peer-calls-waiting -1"}, {0, 1 << 21, 0, "peer-calls-running 2097152"},
		{0, 0, -5, "client-calls-running -5"}} {
		cfg := soloConfig(t, "n1", "127.0.0.1:7001", t.TempDir())
		cfg.PeerCallsWaiting, cfg.PeerCallsRunning, cfg.ClientCallsRunning = c.waiting, c.running, c.client
		err := cfg.Validate()
		if c.bad == "" && err != nil || c.bad != "" && (err == nil || !strings.Contains(err.Error(), c.bad)) {
			t.Errorf("waiting %d running %d client %d: %v, want %q", c.waiting, c.running, c.client, err, c.bad)
		}
	}
	cfg := soloConfig(t, "n1", "127.0.0.1:7001", t.TempDir())
	cfg.RowCacheSize = new(node.Bytes(-1))
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "row-cache-size -1 is negative") {
		t.Errorf("row-cache-size -1: %v, want it refused", err)
	}
	for name, set := range map[string]func(*node.Config){
		"connection-timeout -1s":  func(c *node.Config) { c.ConnectionTimeout = -time.Second },
		"max-connection-idle -1s": func(c *node.Config) { c.MaxConnectionIdle = -time.Second },
		"max-connection-age -1s":  func(c *node.Config) { c.MaxConnectionAge = -time.Second },
	} {
		cfg := soloConfig(t, "n1", "127.0.0.1:7001", t.TempDir())
		set(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), name+" is negative") {
			t.Errorf("%s: %v, want it refused", name, err)
		}
	}
}

// TestSnapshotScheduleConfig: the schedule takes 0 for off (and for the
// default count), and refuses intervals under a second, negative counts,
// and the memory engine, naming the key.
func TestSnapshotScheduleConfig(t *testing.T) {
	for _, c := range []struct {
		every  time.Duration
		keep   int
		engine string
		bad    string
	}{
		{0, 0, "", ""}, {6 * time.Hour, 0, "", ""}, {time.Second, 30, "", ""},
		{500 * time.Millisecond, 0, "", "snapshot-interval 500ms: use 0"},
		{-time.Hour, 0, "", "snapshot-interval -1h0m0s"},
		{time.Hour, -1, "", "snapshot-keep -1"},
		{time.Hour, 0, "memory", "snapshots need the pebble engine"},
		{0, 0, "memory", ""},
	} {
		cfg := soloConfig(t, "n1", "127.0.0.1:7001", t.TempDir())
		cfg.SnapshotInterval, cfg.SnapshotKeep, cfg.Engine = c.every, c.keep, c.engine
		err := cfg.Validate()
		if c.bad == "" && err != nil || c.bad != "" && (err == nil || !strings.Contains(err.Error(), c.bad)) {
			t.Errorf("interval %s keep %d engine %q: %v, want %q", c.every, c.keep, c.engine, err, c.bad)
		}
	}
	for reads, bad := range map[int]string{0: "", 1: "", 64: "", -1: "snapshot-reads -1", 65: "snapshot-reads 65"} {
		cfg := soloConfig(t, "n1", "127.0.0.1:7001", t.TempDir())
		cfg.SnapshotReads = reads
		err := cfg.Validate()
		if bad == "" && err != nil || bad != "" && (err == nil || !strings.Contains(err.Error(), bad)) {
			t.Errorf("snapshot-reads %d: %v, want %q", reads, err, bad)
		}
	}
	for runs, bad := range map[int]string{0: "", 1: "", 16: "", -1: "repair-runs -1", 17: "repair-runs 17"} {
		cfg := soloConfig(t, "n1", "127.0.0.1:7001", t.TempDir())
		cfg.RepairRuns = runs
		err := cfg.Validate()
		if bad == "" && err != nil || bad != "" && (err == nil || !strings.Contains(err.Error(), bad)) {
			t.Errorf("repair-runs %d: %v, want %q", runs, err, bad)
		}
	}
}

// TestNumericKeysRefused: negative (or absurd) numbers in the keys that
// size the node's queues, hints, repairs and transfers are refused,
// naming the key, whichever source set them (a negative max-in-flight used
// to crash the node at start).
func TestNumericKeysRefused(t *testing.T) {
	neg, day := -time.Second, 22*time.Hour
	negBytes := node.Bytes(-1)
	for _, c := range []struct {
		set  func(*node.Config)
		want string
	}{
		{func(c *node.Config) { c.MaxInFlight = -1 }, "max-in-flight -1"},
		{func(c *node.Config) { c.MaxInFlight = 1 << 21 }, "max-in-flight 2097152"},
		{func(c *node.Config) { c.MaxConnections = -1 }, "max-connections -1"},
		{func(c *node.Config) { c.MaxRequestIDs = -1 }, "max-request-ids -1"},
		{func(c *node.Config) { c.MaxBackgroundBytes = -1 }, "max-background-bytes -1"},
		{func(c *node.Config) { c.MaxReadBytes = -1 }, "max-read-bytes -1"},
		{func(c *node.Config) { c.ClientCallReplyBytes = -1 }, "client-call-reply-bytes -1"},
		{func(c *node.Config) { c.PeerCallReplyBytes = -1 }, "peer-call-reply-bytes -1"},
		{func(c *node.Config) { c.RequestIDWindow = -time.Minute }, "request-id-window -1m0s"},
		{func(c *node.Config) { c.HintInterval = -time.Second }, "hint-interval -1s"},
		{func(c *node.Config) { c.HintWindow = &neg }, "hint-window -1s"},
		{func(c *node.Config) { c.MaxHintBytes = &negBytes }, "max-hint-bytes -1"},
		{func(c *node.Config) { c.HintWindow = &day }, "hint-window 22h0m0s must be under nine tenths of tombstone-grace (21h36m0s)"},
		{func(c *node.Config) { c.TombstoneGrace = 2 * time.Hour }, "hint-window 3h0m0s must be under nine tenths of tombstone-grace (1h48m0s)"},
		{func(c *node.Config) { c.AntiEntropyPeriod = -time.Minute }, "anti-entropy-period -1m0s"},
		{func(c *node.Config) { c.RepairKeysPerSecond = -5 }, "repair-keys-per-second -5"},
		{func(c *node.Config) { c.RepairBytesPerSecond = math.NaN() }, "repair-bytes-per-second NaN"},
		{func(c *node.Config) { c.RepairCrossDCBytesPerSecond = -1 }, "repair-cross-dc-bytes-per-second -1"},
		{func(c *node.Config) { c.TransferBytesPerSecond = math.Inf(1) }, "transfer-bytes-per-second +Inf"},
		{func(c *node.Config) { c.RequestTimeout = time.Minute }, "request-timeout 1m0s: use up to 30s"},
		{func(c *node.Config) { c.PeerAddr = "127.0.0.1:7001" }, "grpc-addr and peer-addr are both 127.0.0.1:7001"},
		{func(c *node.Config) { c.RaftAddr, c.GossipAddr = "localhost:7005", "localhost:7005" }, "gossip-addr and raft-addr are both localhost:7005"},
		{func(c *node.Config) {
			c.InitialCluster, c.JoinAddr, c.DC, c.Rack, c.Weight, c.PeerAddr = "", "127.0.0.1:7009", "dc1", "r1", 1, "127.0.0.1:7001"
		}, "grpc-addr and peer-addr are both 127.0.0.1:7001"},
		{func(c *node.Config) { c.InitialCluster += ",n#2=127.0.0.1:7002" }, `initial-cluster entry "n#2=127.0.0.1:7002": id "n#2"`},
		{func(c *node.Config) { c.InitialCluster += ",n2=127.0.0.1:7002/dc 2" }, `initial-cluster entry "n2=127.0.0.1:7002/dc 2": dc "dc 2"`},
		{func(c *node.Config) { c.InitialCluster += ",n2=127.0.0.1:7001" }, "initial-cluster gives n1 and n2 the same address 127.0.0.1:7001"},
	} {
		cfg := soloConfig(t, "n1", "127.0.0.1:7001", t.TempDir())
		c.set(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Validate = %v", c.want, err)
		}
	}
	// Zero is each key's default, and valid.
	cfg := soloConfig(t, "n1", "127.0.0.1:7001", t.TempDir())
	zero, zeroBytes := time.Duration(0), node.Bytes(0)
	cfg.HintWindow, cfg.MaxHintBytes = &zero, &zeroBytes
	if err := cfg.Validate(); err != nil {
		t.Fatalf("zeros: %v", err)
	}
	// A long window is fine while tombstones are never collected, or
	// hints are off.
	cfg = soloConfig(t, "n1", "127.0.0.1:7001", t.TempDir())
	cfg.HintWindow, cfg.TombstoneGrace = &day, -1
	if err := cfg.Validate(); err != nil {
		t.Fatalf("window 22h, tombstones never collected: %v", err)
	}
	cfg.TombstoneGrace = time.Hour
	cfg.MaxHintBytes = &zeroBytes
	if err := cfg.Validate(); err != nil {
		t.Fatalf("grace 1h, hints off: %v", err)
	}
	// The bound itself is accepted, as is a port-0 listener beside
	// another port-0 one.
	cfg.RequestTimeout = 30 * time.Second
	cfg.PeerAddr, cfg.RaftAddr = "127.0.0.1:0", "127.0.0.1:0"
	if err := cfg.Validate(); err != nil {
		t.Fatalf("request-timeout 30s, two port-0 listeners: %v", err)
	}
}

// TestInsecureWithTLSFilesRefused: insecure turns TLS off on every
// listener, so given with TLS files (a dev config's insecure: copied into
// production, a MERIDIAN_INSECURE left in an environment) it is refused,
// not silently preferred.
func TestInsecureWithTLSFilesRefused(t *testing.T) {
	for _, set := range []func(*node.Config){
		func(c *node.Config) { c.CAFile = "ca.crt" },
		func(c *node.Config) { c.CertFile, c.KeyFile = "n1.crt", "n1.key" },
	} {
		cfg := soloConfig(t, "n1", "127.0.0.1:7001", t.TempDir())
		set(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "--insecure with TLS files") {
			t.Errorf("insecure with %s%s%s: Validate = %v, want it refused", cfg.CAFile, cfg.CertFile, cfg.KeyFile, err)
		}
	}
}

// TestStartLocalRefusesBadSizes: a local cluster of no or negative nodes
// is refused (it used to wait forever for members that never started).
func TestStartLocalRefusesBadSizes(t *testing.T) {
	for _, spec := range []node.LocalSpec{{NodesPerDC: -1}, {DCs: -2}, {DCs: 255}, {RacksPerDC: -1}} {
		spec.Engine = "memory"
		if l, err := node.StartLocal(ctxT(t), spec); err == nil || !strings.Contains(err.Error(), "use 1 to 254 DCs of at least 1 node") {
			if l != nil {
				l.Close()
			}
			t.Errorf("StartLocal(%d DCs, %d nodes, %d racks) = %v", spec.DCs, spec.NodesPerDC, spec.RacksPerDC, err)
		}
	}
}
