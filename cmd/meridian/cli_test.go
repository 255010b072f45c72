package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridiankv/meridian/node"
)

// TestConfigPrecedence: a flag wins over MERIDIAN_* which wins over the
// YAML file, which wins over defaults.
func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "node.yaml")
	os.WriteFile(file, []byte(`id: from-file
grpc-addr: 127.0.0.1:7001
data-dir: /var/lib/meridian
cluster-secret-file: /etc/meridian/cluster.secret
initial-cluster: from-file=127.0.0.1:7001,n2=127.0.0.1:7002/dc2/r1/3
request-timeout: 2s
peer-calls-waiting: 100
min-free-disk: 1073741824
snapshot-interval: 6h
gossip-seeds: [127.0.0.1:7101, 127.0.0.1:7102]
keyspaces:
  - name: orders
    replication: {dc1: 1}
`), 0o644)
	t.Setenv("MERIDIAN_DATA_DIR", "/from/env")
	t.Setenv("MERIDIAN_REQUEST_TIMEOUT", "3s")
	t.Setenv("MERIDIAN_PEER_CALLS_RUNNING", "50")
	t.Setenv("MERIDIAN_ROW_CACHE_SIZE", "128MiB")
	t.Setenv("MERIDIAN_SNAPSHOT_KEEP", "3")
	t.Setenv("MERIDIAN_MAX_VALUE_SIZE", "2MiB")
	var cfg node.Config
	var sf serveFlags
	cmd := newServeCmdFor(&cfg, &sf)
	if err := cmd.Flags().Parse([]string{"--config", file, "--request-timeout", "4s", "--insecure"}); err != nil {
		t.Fatal(err)
	}
	if err := resolveConfig(cmd.Flags(), &cfg, &sf); err != nil {
		t.Fatal(err)
	}
	if cfg.ID != "from-file" || cfg.DataDir != "/from/env" || cfg.RequestTimeout != 4*time.Second {
		t.Fatalf("resolved id=%q data-dir=%q timeout=%v; want file, env, flag", cfg.ID, cfg.DataDir, cfg.RequestTimeout)
	}
	if cfg.PeerCallsWaiting != 100 || cfg.PeerCallsRunning != 50 {
		t.Fatalf("peer-calls-waiting %d (file), peer-calls-running %d (env); want 100, 50", cfg.PeerCallsWaiting, cfg.PeerCallsRunning)
	}
	if cfg.RowCacheSize == nil || *cfg.RowCacheSize != 128<<20 {
		t.Fatalf("row-cache-size from MERIDIAN_ROW_CACHE_SIZE=128MiB: %v", cfg.RowCacheSize)
	}
	if cfg.MaxValueSize != 2<<20 {
		t.Fatalf("max-value-size from MERIDIAN_MAX_VALUE_SIZE=2MiB: %d", cfg.MaxValueSize)
	}
	if cfg.SnapshotInterval != 6*time.Hour || cfg.SnapshotKeep != 3 {
		t.Fatalf("snapshot-interval %s (YAML), snapshot-keep %d (env); want 6h, 3", cfg.SnapshotInterval, cfg.SnapshotKeep)
	}
	if cfg.MinFreeDisk == nil || *cfg.MinFreeDisk != 1<<30 {
		t.Fatalf("min-free-disk from YAML: %v", cfg.MinFreeDisk)
	}
	if cfg.ClusterSecretFile != "/etc/meridian/cluster.secret" {
		t.Fatalf("cluster-secret-file from YAML = %q", cfg.ClusterSecretFile)
	}
	if len(cfg.GossipSeeds) != 2 || len(cfg.Keyspaces) != 1 || cfg.Keyspaces[0].Name != "orders" {
		t.Fatalf("gossip-seeds %v keyspaces %v", cfg.GossipSeeds, cfg.Keyspaces)
	}
	// MERIDIAN_CONFIG names the file when --config is not given.
	t.Setenv("MERIDIAN_CONFIG", file)
	cfg, sf = node.Config{}, serveFlags{}
	cmd = newServeCmdFor(&cfg, &sf)
	cmd.Flags().Parse([]string{"--insecure"})
	if err := resolveConfig(cmd.Flags(), &cfg, &sf); err != nil || cfg.ID != "from-file" {
		t.Fatalf("config from MERIDIAN_CONFIG: id %q, %v", cfg.ID, err)
	}
	os.WriteFile(file, []byte("id: x\nbogus-key: 1\n"), 0o644)
	cfg, sf = node.Config{}, serveFlags{}
	cmd = newServeCmdFor(&cfg, &sf)
	cmd.Flags().Parse([]string{"--config", file})
	if err := resolveConfig(cmd.Flags(), &cfg, &sf); err == nil || !strings.Contains(err.Error(), "bogus-key") {
		t.Fatalf("unknown YAML key: %v", err)
	}
}

// TestConfigByteSizes: the config file takes byte sizes as the flags do,
// a plain integer or a size with a unit, and refuses a bad one naming its
// key.
func TestConfigByteSizes(t *testing.T) {
	resolve := func(yaml string) (node.Config, error) {
		t.Helper()
		return resolveServe(t, yaml)
	}
	cfg, err := resolve("min-free-disk: 1GiB\nrow-cache-size: 64MiB\nmax-hint-bytes: 1048576\nmax-value-size: 4MiB\n")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxValueSize != 4<<20 {
		t.Errorf("max-value-size = %d, want 4MiB", cfg.MaxValueSize)
	}
	for _, c := range []struct {
		key  string
		got  *node.Bytes
		want int64
	}{{"min-free-disk", cfg.MinFreeDisk, 1 << 30}, {"row-cache-size", cfg.RowCacheSize, 64 << 20}, {"max-hint-bytes", cfg.MaxHintBytes, 1 << 20}} {
		if c.got == nil || int64(*c.got) != c.want {
			t.Errorf("%s = %v, want %d", c.key, c.got, c.want)
		}
	}
	// 0 (off) and unset (the default) stay apart; a quoted integer is a size.
	if cfg, err = resolve("max-hint-bytes: 0\nrow-cache-size: \"2KB\"\n"); err != nil || cfg.MaxHintBytes == nil || *cfg.MaxHintBytes != 0 || cfg.MinFreeDisk != nil || *cfg.RowCacheSize != 2000 {
		t.Fatalf("max-hint-bytes 0, row-cache-size 2KB, min-free-disk unset: %v %v %v %v", cfg.MaxHintBytes, cfg.RowCacheSize, cfg.MinFreeDisk, err)
	}
	for _, c := range []struct{ yaml, want string }{
		{"min-free-disk: 1Gib\n", `min-free-disk: line 7: "1Gib" is not a size`},
		{"row-cache-size: -5MiB\n", `row-cache-size: line 7: "-5MiB" is not a size`},
		{"max-hint-bytes: [1]\n", "max-hint-bytes: line 7: want a size"},
		{"row-cache-size: -1\n", "row-cache-size -1 is negative"},
		{"max-value-size: 16MB/s\n", `max-value-size: line 7: "16MB/s" is not a size`},
		{"max-value-size: 65MiB\n", "max-value-size 68157440: use 1 byte to 64 MiB"},
		{"min-free-disk: 0.5\n", `min-free-disk: line 7: "0.5" is not a size`}, // not truncated to 0 (the check off)
		{"max-hint-bytes: -0.5\n", `max-hint-bytes: line 7: "-0.5" is not a size`},
	} {
		if _, err := resolve(c.yaml); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error with %q", c.yaml, err, c.want)
		}
	}
}

// yamlOnlyKeys are the config file's keys with no flag: structured values
// a flag could not spell (README says they come from the file).
var yamlOnlyKeys = map[string]bool{"keyspaces": true, "auth": true}

// yamlKeys lists the keys named by the yaml tags of struct type t, inline
// structs' included. (Fields without a tag, such as telemetry.Config's
// ServiceName, Stdout and Getenv, are set by code, not documented keys.)
func yamlKeys(t reflect.Type) []string {
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch {
		case !f.IsExported() || name == "-":
		case strings.Contains(opts, "inline"):
			keys = append(keys, yamlKeys(f.Type)...)
		case name != "":
			keys = append(keys, name)
		default: // untagged: the YAML decoder takes it by its lowercased name
			keys = append(keys, strings.ToLower(f.Name))
		}
	}
	return keys
}

// TestEveryConfigKeyHasAFlag: every key of the config file can also be
// given as a flag of 'meridian serve' and so as MERIDIAN_<FLAG> (the
// environment is read only for flags), and each flag sets the key of its
// name.
func TestEveryConfigKeyHasAFlag(t *testing.T) {
	var cfg node.Config
	var sf serveFlags
	cmd := newServeCmdFor(&cfg, &sf)
	keys := yamlKeys(reflect.TypeFor[fileConfig]())
	if len(keys) < 40 {
		t.Fatalf("found only %d YAML keys: %v", len(keys), keys)
	}
	for _, key := range keys {
		if yamlOnlyKeys[key] {
			continue
		}
		if cmd.Flags().Lookup(key) == nil {
			t.Errorf("config key %q has no flag --%s (nor so %s)", key, key, envName(key))
		}
	}

	// The keys that were YAML-only: flag, environment and file alike.
	dir := t.TempDir()
	file := filepath.Join(dir, "node.yaml")
	if err := os.WriteFile(file, []byte("max-connection-age: 3h\nmax-concurrent-streams: 64\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MERIDIAN_MAX_CONNECTION_IDLE", "90s")
	cfg, sf = node.Config{}, serveFlags{}
	cmd = newServeCmdFor(&cfg, &sf)
	if err := cmd.Flags().Parse([]string{"--config", file, "--id", "n1", "--grpc-addr", "127.0.0.1:7001", "--initial-cluster", "n1=127.0.0.1:7001",
		"--engine", "memory", "--insecure", "--cluster-secret-file", "s", "--connection-timeout", "4s"}); err != nil {
		t.Fatal(err)
	}
	if err := resolveConfig(cmd.Flags(), &cfg, &sf); err != nil {
		t.Fatal(err)
	}
	if cfg.ConnectionTimeout != 4*time.Second || cfg.MaxConnectionIdle != 90*time.Second || cfg.MaxConnectionAge != 3*time.Hour || cfg.MaxConcurrentStreams != 64 {
		t.Fatalf("connection-timeout %v (flag), max-connection-idle %v (env), max-connection-age %v and max-concurrent-streams %d (file); want 4s, 1m30s, 3h, 64",
			cfg.ConnectionTimeout, cfg.MaxConnectionIdle, cfg.MaxConnectionAge, cfg.MaxConcurrentStreams)
	}
}

// TestJoinConfig: a node added later is configured with --join (a
// member's client address, no --initial-cluster) and its placement, from
// flags, MERIDIAN_* or the YAML file alike; --gossip-seeds keeps the old
// list of gossip addresses.
func TestJoinConfig(t *testing.T) {
	base := []string{"--id", "n4", "--grpc-addr", "127.0.0.1:7004", "--engine", "memory", "--cluster-secret-file", "/a/secret", "--insecure"}
	resolve := func(args ...string) (node.Config, error) {
		var cfg node.Config
		var sf serveFlags
		cmd := newServeCmdFor(&cfg, &sf)
		if err := cmd.Flags().Parse(append(append([]string(nil), base...), args...)); err != nil {
			t.Fatal(err)
		}
		err := resolveConfig(cmd.Flags(), &cfg, &sf)
		return cfg, err
	}
	cfg, err := resolve("--join", "127.0.0.1:7001", "--dc", "east", "--rack", "r2", "--weight", "3",
		"--raft-addr", "127.0.0.1:7404", "--transfer-bytes-per-second", "1000000", "--gossip-seeds", "127.0.0.1:7101, 127.0.0.1:7102")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := joinOf(cfg), (joinFields{"127.0.0.1:7001", "east", "r2", 3, "127.0.0.1:7404", 1e6}); got != want {
		t.Fatalf("flags resolved to %+v, want %+v", got, want)
	}
	if len(cfg.GossipSeeds) != 2 || cfg.GossipSeeds[1] != "127.0.0.1:7102" {
		t.Fatalf("--gossip-seeds resolved to %q", cfg.GossipSeeds)
	}

	t.Setenv("MERIDIAN_JOIN", "127.0.0.1:7002")
	t.Setenv("MERIDIAN_DC", "west")
	t.Setenv("MERIDIAN_WEIGHT", "2")
	t.Setenv("MERIDIAN_TRANSFER_BYTES_PER_SECOND", "5e6")
	if cfg, err = resolve(); err != nil {
		t.Fatal(err)
	}
	if got, want := joinOf(cfg), (joinFields{"127.0.0.1:7002", "west", "", 2, "", 5e6}); got != want {
		t.Fatalf("environment resolved to %+v, want %+v", got, want)
	}
	for _, k := range []string{"MERIDIAN_JOIN", "MERIDIAN_DC", "MERIDIAN_WEIGHT", "MERIDIAN_TRANSFER_BYTES_PER_SECOND"} {
		os.Unsetenv(k)
	}

	file := filepath.Join(t.TempDir(), "node.yaml")
	os.WriteFile(file, []byte(`join: 127.0.0.1:7003
dc: north
rack: r9
weight: 4
raft-addr: 127.0.0.1:7405
transfer-bytes-per-second: 2000000
gossip-seeds: [127.0.0.1:7103]
`), 0o644)
	if cfg, err = resolve("--config", file); err != nil {
		t.Fatal(err)
	}
	if got, want := joinOf(cfg), (joinFields{"127.0.0.1:7003", "north", "r9", 4, "127.0.0.1:7405", 2e6}); got != want || len(cfg.GossipSeeds) != 1 {
		t.Fatalf("YAML resolved to %+v (gossip-seeds %q), want %+v", got, cfg.GossipSeeds, want)
	}

	if _, err := resolve("--join", "127.0.0.1"); err == nil || !strings.Contains(err.Error(), "join") {
		t.Fatalf("--join without a port: %v", err)
	}
	if _, err := resolve("--join", "127.0.0.1:7001", "--weight", "5000"); err == nil || !strings.Contains(err.Error(), "weight") {
		t.Fatalf("--weight 5000: %v", err)
	}
	if _, err := resolve(); err == nil || !strings.Contains(err.Error(), "--join") {
		t.Fatalf("neither --initial-cluster nor --join: %v", err)
	}
}

// joinFields are the config a joining node adds.
type joinFields struct {
	join, dc, rack string
	weight         int
	raftAddr       string
	transfer       float64
}

func joinOf(c node.Config) joinFields {
	return joinFields{c.JoinAddr, c.DC, c.Rack, c.Weight, c.RaftAddr, c.TransferBytesPerSecond}
}

// TestClusterSecretConfig: the secret file comes from the flag or
// MERIDIAN_CLUSTER_SECRET_FILE, and a node without one is refused with a
// message that says how to make one.
func TestClusterSecretConfig(t *testing.T) {
	args := []string{"--id", "n1", "--grpc-addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--initial-cluster", "n1=127.0.0.1:7001", "--insecure"}
	resolve := func(extra ...string) (node.Config, error) {
		var cfg node.Config
		var sf serveFlags
		cmd := newServeCmdFor(&cfg, &sf)
		if err := cmd.Flags().Parse(append(append([]string(nil), args...), extra...)); err != nil {
			t.Fatal(err)
		}
		err := resolveConfig(cmd.Flags(), &cfg, &sf)
		return cfg, err
	}
	if _, err := resolve(); err == nil || !strings.Contains(err.Error(), "meridian secret create") {
		t.Fatalf("no secret: %v", err)
	}
	if cfg, err := resolve("--cluster-secret-file", "/a/secret"); err != nil || cfg.ClusterSecretFile != "/a/secret" {
		t.Fatalf("flag: %q, %v", cfg.ClusterSecretFile, err)
	}
	t.Setenv("MERIDIAN_CLUSTER_SECRET_FILE", "/env/secret")
	if cfg, err := resolve(); err != nil || cfg.ClusterSecretFile != "/env/secret" {
		t.Fatalf("environment: %q, %v", cfg.ClusterSecretFile, err)
	}
}

// TestSecretCreate: `secret create` writes a usable secret readable only by
// its owner, and refuses to replace one unless --force.
func TestSecretCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cluster.secret")
	run := func(args ...string) (string, error) {
		root := newRoot()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetArgs(args)
		err := root.Execute()
		return out.String(), err
	}
	out, err := run("secret", "create", path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "every node") || !strings.Contains(out, "--cluster-secret-file "+path) {
		t.Fatalf("secret create does not say what to do next:\n%s", out)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	first, err := node.LoadSecrets(path)
	if err != nil || len(first) != 1 {
		t.Fatalf("LoadSecrets: %v, %v", first, err)
	}
	if _, err := run("secret", "create", path); err == nil || !strings.Contains(err.Error(), "already exists") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("second create: %v", err)
	}
	if again, _ := node.LoadSecrets(path); again[0] != first[0] {
		t.Fatal("a refused create changed the file")
	}
	os.Chmod(path, 0o644)
	// A reader that opened the file while its mode was too open keeps the
	// old file: the new secret goes to a new one, renamed over it.
	early, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()
	if _, err := run("secret", "create", "--force", path); err != nil {
		t.Fatal(err)
	}
	second, err := node.LoadSecrets(path)
	if err != nil || second[0] == first[0] {
		t.Fatalf("--force did not write a new secret: %v, %v", second, err)
	}
	if seen, _ := io.ReadAll(early); strings.Contains(string(seen), second[0]) || !strings.Contains(string(seen), first[0]) {
		t.Fatalf("a handle opened before --force reads %q: the new secret reached a file others could open", seen)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode after --force %v, want 0600", fi.Mode().Perm())
	}
}

// TestDevWritesClusterFile runs `meridian dev` until cluster.json appears,
// then stops it as Ctrl-C would.
func TestDevWritesClusterFile(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root := newRoot()
	out := &lockedBuffer{}
	root.SetOut(out)
	root.SetArgs([]string{"dev", "--nodes", "3", "--dir", dir, "--engine", "memory", "--pprof-addr", "127.0.0.1:0"})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	path := filepath.Join(dir, "cluster.json")
	deadline := time.Now().Add(60 * time.Second)
	var cf node.ClusterFile
	for {
		if b, err := os.ReadFile(path); err == nil && json.Unmarshal(b, &cf) == nil && len(cf.Nodes) == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("cluster.json never appeared")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, n := range cf.Nodes {
		if n.ID == "" || !strings.HasPrefix(n.GRPCAddr, "127.0.0.") || n.GossipAddr == "" || n.DC != "dc1" {
			t.Errorf("cluster.json entry %+v", n)
		}
	}
	// --pprof-addr serves the process's profiles.
	var pprofURL string
	for pprofURL == "" {
		for _, line := range strings.Split(out.String(), "\n") {
			if rest, ok := strings.CutPrefix(line, "pprof: "); ok {
				pprofURL, _, _ = strings.Cut(rest, " ")
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pprof line in:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	resp, err := http.Get(pprofURL + "heap?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "heap profile") {
		t.Fatalf("heap profile: %s\n%.200s", resp.Status, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// lockedBuffer is a bytes.Buffer safe for a writer and a reader in two
// goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestKVCommands drives `meridian kv` against a local cluster: text and
// the stable JSON form, contexts passed back, and errors that say what to do.
func TestKVCommands(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := node.StartLocal(ctx, node.LocalSpec{NodesPerDC: 3, Engine: "memory", GossipProfile: "test", Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addr := l.Nodes()[0].Addr()
	run := cliRunner(ctx)
	if _, err := run("kv", "put", "--addr", addr, "k", "v1"); err != nil {
		t.Fatal(err)
	}
	out, err := run("kv", "get", "--addr", addr, "--json", "k")
	if err != nil {
		t.Fatal(err)
	}
	var res jsonResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("--json output is not JSON: %v\n%s", err, out)
	}
	if !res.Found || len(res.Siblings) != 1 || *res.Siblings[0].Value != "v1" || res.Context == "" || res.N != 3 || res.R != 2 {
		t.Fatalf("get --json = %+v", res)
	}
	// The same keys whatever the operation and outcome: scripts need not
	// test for them.
	var keys map[string]any
	if err := json.Unmarshal([]byte(out), &keys); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"key", "found", "siblings", "context", "n", "r", "w", "coordinator", "replicas", "hinted"} {
		if _, ok := keys[k]; !ok {
			t.Errorf("get --json lacks %q:\n%s", k, out)
		}
	}
	// Two writes with the same context become siblings; the text view says so.
	run("kv", "put", "--addr", addr, "--context", res.Context, "k", "a")
	run("kv", "put", "--addr", addr, "--context", res.Context, "k", "b")
	out, _ = run("kv", "get", "--addr", addr, "--consistency", "all", "k")
	if !strings.Contains(out, "2 siblings") || !strings.Contains(out, `"a"`) || !strings.Contains(out, `"b"`) {
		t.Fatalf("get after concurrent puts:\n%s", out)
	}
	if _, err := run("kv", "put", "--addr", addr, "--context", "%%%", "k", "x"); err == nil || !strings.Contains(err.Error(), "not a context printed by get or put") {
		t.Fatalf("bad context: %v", err)
	}
	if _, err := run("kv", "get", "--addr", addr, "--consistency", "most", "k"); err == nil || !strings.Contains(err.Error(), "use one, two, three") {
		t.Fatalf("bad level: %v", err)
	}
	if _, err := run("bench", "--addr", addr, "--workload", "E"); err == nil || !strings.Contains(err.Error(), "scans") {
		t.Fatalf("workload E: %v", err)
	}
	// A short run with a CPU profile of the run phase.
	prof := filepath.Join(t.TempDir(), "cpu.prof")
	if _, err := run("bench", "--addr", addr, "--workload", "C", "--records", "50", "--workers", "2", "--ops", "200", "--warmup", "0s", "--cpuprofile", prof); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(prof); err != nil || len(data) == 0 || data[0] != 0x1f { // gzip, as pprof writes
		t.Fatalf("--cpuprofile wrote %d bytes (%v), want a gzipped profile", len(data), err)
	}
	// And an execution trace of it.
	tr := filepath.Join(t.TempDir(), "run.trace")
	if _, err := run("bench", "--addr", addr, "--workload", "C", "--records", "50", "--workers", "2", "--ops", "200", "--warmup", "0s", "--trace", tr); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(tr); err != nil || !bytes.HasPrefix(data, []byte("go 1.")) {
		t.Fatalf("--trace wrote %d bytes (%v), want a Go execution trace", len(data), err)
	}
}

// TestKVPutReadsFirst: put and delete without --context read the key and
// supersede what they read (saying so); --blind keeps the old blind write;
// values come from exactly one of VALUE, standard input and --file, and
// values over gRPC's default 4 MiB travel both ways.
func TestKVPutReadsFirst(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := node.StartLocal(ctx, node.LocalSpec{NodesPerDC: 3, Engine: "memory", GossipProfile: "test", Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addr := l.Nodes()[0].Addr()
	runIn := func(stdin string, args ...string) (string, error) {
		root := newRoot()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetIn(strings.NewReader(stdin))
		root.SetArgs(append([]string{args[0], args[1], "--addr", addr, "--consistency", "all"}, args[2:]...))
		err := root.ExecuteContext(ctx)
		return out.String(), err
	}
	run := func(args ...string) (string, error) { return runIn("", args...) }
	get := func(key string) jsonResult {
		t.Helper()
		out, err := run("kv", "get", "--json", key)
		if err != nil {
			t.Fatal(err)
		}
		var res jsonResult
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("get --json: %v\n%s", err, out)
		}
		return res
	}
	values := func(res jsonResult) []string {
		var vs []string
		for _, s := range res.Siblings {
			if !s.Tombstone && s.Value != nil {
				vs = append(vs, *s.Value)
			}
		}
		return vs
	}

	out, err := run("kv", "put", "k", "v1")
	if err != nil || !strings.Contains(out, "read context first: the key held nothing") {
		t.Fatalf("first put: %v\n%s", err, out)
	}
	// Two blind writes make siblings; a put without --context replaces both.
	for _, v := range []string{"a", "b"} {
		if out, err := run("kv", "put", "--blind", "k", v); err != nil || strings.Contains(out, "read context first") {
			t.Fatalf("blind put: %v\n%s", err, out)
		}
	}
	if vs := values(get("k")); len(vs) != 3 {
		t.Fatalf("after two blind puts: %v, want 3 siblings", vs)
	}
	out, err = run("kv", "put", "k", "merged")
	if err != nil || !strings.Contains(out, "read context first: superseding 3 sibling(s)") {
		t.Fatalf("put without context: %v\n%s", err, out)
	}
	if vs := values(get("k")); len(vs) != 1 || vs[0] != "merged" {
		t.Fatalf("after put without context: %v, want [merged]", vs)
	}
	out, err = run("kv", "put", "--json", "k", "again")
	if err != nil {
		t.Fatal(err)
	}
	var res jsonResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Superseded == nil || *res.Superseded != 1 {
		t.Fatalf("put --json: %v superseded=%v\n%s", err, res.Superseded, out)
	}
	if _, err := run("kv", "put", "--blind", "--context", res.Context, "k", "x"); err == nil || !strings.Contains(err.Error(), "--blind") {
		t.Fatalf("--blind with --context: %v", err)
	}

	// Delete without --context deletes what is there.
	out, err = run("kv", "delete", "k")
	if err != nil || !strings.Contains(out, "superseding 1 sibling(s)") {
		t.Fatalf("delete: %v\n%s", err, out)
	}
	if res := get("k"); res.Found {
		t.Fatalf("after delete without context: %+v", res)
	}

	// Value sources.
	if _, err := runIn("from stdin\n", "kv", "put", "s", "-"); err != nil {
		t.Fatal(err)
	}
	if vs := values(get("s")); len(vs) != 1 || vs[0] != "from stdin\n" {
		t.Fatalf("value from stdin: %q", vs)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 5<<20/16) // 5 MiB
	file := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(file, big, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := run("kv", "put", "--file", file, "big"); err != nil {
		t.Fatalf("put --file of 5 MiB: %v", err)
	}
	if vs := values(get("big")); len(vs) != 1 || vs[0] != string(big) {
		t.Fatalf("get of a 5 MiB value: %d siblings", len(vs))
	}
	if _, err := run("kv", "put", "--file", file, "big", "v"); err == nil || !strings.Contains(err.Error(), "exactly one") {
		t.Fatalf("VALUE and --file: %v", err)
	}
	if _, err := run("kv", "put", "big"); err == nil || !strings.Contains(err.Error(), "no value") {
		t.Fatalf("no value: %v", err)
	}
	if _, err := run("kv", "put", "--file", filepath.Join(t.TempDir(), "missing"), "big"); err == nil || !strings.Contains(err.Error(), "--file") {
		t.Fatalf("missing file: %v", err)
	}
}

// TestDemoReplicaLines: the demo names replicas with their DCs and tells
// those a request waited for from those that got the write later.
func TestDemoReplicaLines(t *testing.T) {
	dcOf := map[string]string{"n1": "dc1", "n2": "dc1", "n3": "dc1", "n4": "dc2", "n5": "dc2", "n7": "dc3"}
	acked := []string{"n1", "n4", "n2"}
	local, remote := splitByDC(acked, "dc1", dcOf)
	if got := withDCs(local, dcOf); got != "n1, n2 (dc1)" {
		t.Errorf("local = %q", got)
	}
	if got := withDCs(remote, dcOf); got != "n4 (dc2)" {
		t.Errorf("remote = %q", got)
	}
	all := []string{"n1", "n2", "n3", "n4", "n5", "n7"}
	if got := withDCs(without(all, acked), dcOf); got != "n3 (dc1), n5 (dc2), n7 (dc3)" {
		t.Errorf("background = %q", got)
	}
	if got := withDCs([]string{"n7", "n4", "n3", "n5"}, dcOf); got != "n7 (dc3), n4, n5 (dc2), n3 (dc1)" {
		t.Errorf("mixed = %q", got)
	}
	if got := withDCs(nil, dcOf); got != "none" {
		t.Errorf("empty = %q", got)
	}
}

// TestAuthTokens: create-token prints a token and the config lines with
// its hash; hash-token hashes an existing token but refuses one too short
// to resist guessing from its unsalted hash.
func TestAuthTokens(t *testing.T) {
	run := func(stdin string, args ...string) (string, error) {
		root := newRoot()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetIn(strings.NewReader(stdin))
		root.SetArgs(args)
		err := root.Execute()
		return out.String(), err
	}
	out, err := run("", "auth", "create-token", "dashboards")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(out, "it is not stored anywhere): ")
	tok, _, _ := strings.Cut(rest, "\n")
	if len(tok) < 40 || !strings.Contains(out, "token-sha256: "+node.HashToken(tok)) {
		t.Fatalf("create-token printed:\n%s", out)
	}
	if got, err := run(tok+"\n", "auth", "hash-token"); err != nil || strings.TrimSpace(got) != node.HashToken(tok) {
		t.Fatalf("hash-token of the created token: %q, %v", got, err)
	}
	if _, err := run("", "auth", "hash-token", "password"); err == nil || !strings.Contains(err.Error(), "create-token") {
		t.Fatalf("hash-token of a short token: %v, want refused, naming create-token", err)
	}
}

// TestTraceRateConfig: trace-caller-rate and trace-sample-ratio keep
// unset (the default) and 0 apart, from a flag, MERIDIAN_* or the file,
// and refuse values out of range with what to give instead.
func TestTraceRateConfig(t *testing.T) {
	resolve := func(yaml string, args ...string) (node.Config, error) {
		t.Helper()
		return resolveServe(t, yaml, args...)
	}
	cfg, err := resolve("")
	if err != nil || cfg.Telemetry.CallerTraceRate != nil || cfg.Telemetry.SampleRatio != nil {
		t.Fatalf("unset: caller rate %v, ratio %v, %v; want both unset", cfg.Telemetry.CallerTraceRate, cfg.Telemetry.SampleRatio, err)
	}
	cfg, err = resolve("trace-caller-rate: 5\ntrace-sample-ratio: 0\n")
	if err != nil || cfg.Telemetry.CallerTraceRate == nil || *cfg.Telemetry.CallerTraceRate != 5 || cfg.Telemetry.SampleRatio == nil || *cfg.Telemetry.SampleRatio != 0 {
		t.Fatalf("from the file: caller rate %v, ratio %v, %v; want 5 and 0", cfg.Telemetry.CallerTraceRate, cfg.Telemetry.SampleRatio, err)
	}
	t.Setenv("MERIDIAN_TRACE_CALLER_RATE", "0")
	if cfg, err = resolve("trace-caller-rate: 5\n"); err != nil || cfg.Telemetry.CallerTraceRate == nil || *cfg.Telemetry.CallerTraceRate != 0 {
		t.Fatalf("0 from the environment over the file: %v, %v", cfg.Telemetry.CallerTraceRate, err)
	}
	if _, err = resolve("", "--trace-caller-rate", "-1"); err == nil || !strings.Contains(err.Error(), "requests a second, 0 or more") {
		t.Fatalf("--trace-caller-rate -1: %v; want an error saying what to give", err)
	}
	if _, err = resolve("", "--trace-sample-ratio", "1.5"); err == nil || !strings.Contains(err.Error(), "a fraction from 0 to 1") {
		t.Fatalf("--trace-sample-ratio 1.5: %v; want an error saying what to give", err)
	}
}

// TestZeroSizeFlags: a size flag given as 0 ("the default", as
// validation says) is taken, as its environment variable is, over the
// file's value.
func TestZeroSizeFlags(t *testing.T) {
	cfg, err := resolveServe(t, "max-value-size: 4MiB\n", "--max-value-size", "0", "--max-background-bytes", "0", "--client-call-reply-bytes", "0")
	if err != nil {
		t.Fatalf("size flags given as 0: %v", err)
	}
	if cfg.MaxValueSize != 0 || cfg.MaxBackgroundBytes != 0 || cfg.ClientCallReplyBytes != 0 {
		t.Fatalf("max-value-size %d, max-background-bytes %d, client-call-reply-bytes %d; want 0 (the default) over the file's 4MiB", cfg.MaxValueSize, cfg.MaxBackgroundBytes, cfg.ClientCallReplyBytes)
	}
}

// resolveServe resolves the serve command's config from a config file (a
// minimal valid node plus yaml) and args, as 'meridian serve' does.
func resolveServe(t *testing.T, yaml string, args ...string) (node.Config, error) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "node.yaml")
	if err := os.WriteFile(file, []byte("id: n1\ngrpc-addr: 127.0.0.1:7001\ninitial-cluster: n1=127.0.0.1:7001\nengine: memory\ninsecure: true\ncluster-secret-file: s\n"+yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	var cfg node.Config
	var sf serveFlags
	cmd := newServeCmdFor(&cfg, &sf)
	if err := cmd.Flags().Parse(append([]string{"--config", file}, args...)); err != nil {
		return cfg, err
	}
	return cfg, resolveConfig(cmd.Flags(), &cfg, &sf)
}

// TestCommentOnlyConfigFile: a config file with no keys (empty, or only
// comments) is a valid file whose every key takes its default; the flags
// supply the rest.
func TestCommentOnlyConfigFile(t *testing.T) {
	for _, body := range []string{"", "# every key from the flags\n"} {
		file := filepath.Join(t.TempDir(), "node.yaml")
		if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		var cfg node.Config
		var sf serveFlags
		cmd := newServeCmdFor(&cfg, &sf)
		if err := cmd.Flags().Parse([]string{"--config", file, "--id", "n1", "--grpc-addr", "127.0.0.1:7001", "--initial-cluster", "n1=127.0.0.1:7001",
			"--engine", "memory", "--insecure", "--cluster-secret-file", "s"}); err != nil {
			t.Fatal(err)
		}
		if err := resolveConfig(cmd.Flags(), &cfg, &sf); err != nil {
			t.Errorf("config file %q: %v", body, err)
		} else if cfg.ID != "n1" {
			t.Errorf("config file %q: id %q, want the flag's n1", body, cfg.ID)
		}
	}
}

// TestLocalRunsRefuseBadSizes: bench --local with no nodes and demo over
// a directory holding a previous run's data are refused before anything
// starts, saying what to give instead.
func TestLocalRunsRefuseBadSizes(t *testing.T) {
	run := cliRunner(t.Context())
	for _, n := range []string{"0", "-1"} {
		if _, err := run("bench", "--local", "--local-nodes", n, "--duration", "1s"); err == nil || !strings.Contains(err.Error(), "--local-nodes "+n+": use at least 1") {
			t.Errorf("bench --local-nodes %s: %v", n, err)
		}
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "left-over"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := run("demo", "--dir", dir); err == nil || !strings.Contains(err.Error(), "is not empty") {
		t.Errorf("demo --dir over a non-empty directory: %v", err)
	}
}

// TestTombstoneGraceFloor: serve refuses a positive tombstone-grace under
// a minute (a replica write still in flight could bring a deleted value
// back), and takes the minute itself and a negative grace (never collect).
func TestTombstoneGraceFloor(t *testing.T) {
	if _, err := resolveServe(t, "max-hint-bytes: 0\n", "--tombstone-grace", "5s"); err == nil || !strings.Contains(err.Error(), "tombstone-grace 5s: use at least 1m0s") {
		t.Errorf("tombstone-grace 5s: %v", err)
	}
	for _, g := range []string{"1m", "-1s"} {
		if _, err := resolveServe(t, "max-hint-bytes: 0\n", "--tombstone-grace", g); err != nil {
			t.Errorf("tombstone-grace %s: %v", g, err)
		}
	}
}
