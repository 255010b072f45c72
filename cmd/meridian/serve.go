package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/ops"
	"github.com/meridiankv/meridian/telemetry"
)

// serveFlags are the serve command's flags beyond node.Config.
type serveFlags struct {
	config      string
	gossipSeeds string
	logLevel    string
	logFormat   string
}

func newServeCmd() *cobra.Command {
	var cfg node.Config
	var sf serveFlags
	return newServeCmdFor(&cfg, &sf)
}

// newServeCmdFor binds the serve flags to cfg and sf.
func newServeCmdFor(cfgp *node.Config, sfp *serveFlags) *cobra.Command {
	cfg, sf := cfgp, sfp
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a Meridian node",
		Long: `Run a Meridian node until SIGINT/SIGTERM.

Every flag can also come from a YAML file (--config, same key names) or an
environment variable MERIDIAN_<FLAG> (e.g. MERIDIAN_GRPC_ADDR). Precedence:
flag, then environment, then file, then default.

Example, a 3-node cluster on one machine:
  meridian secret create cluster.secret   # once; copy the file to every node
  meridian certs create-ca --dir certs     # once; then a certificate per node
  for n in n1 n2 n3; do meridian certs create-node $n --dir certs; done
  meridian serve --id n1 --grpc-addr 127.0.0.1:7001 --gossip-addr 127.0.0.1:7101 --data-dir d1 \
    --cluster-secret-file cluster.secret \
    --ca certs/ca.crt --cert certs/node.n1.crt --key certs/node.n1.key \
    --initial-cluster n1=127.0.0.1:7001,n2=127.0.0.1:7002,n3=127.0.0.1:7003
  (and the same for n2, n3 with their own addresses, certificates and directories)

A node added later starts with --join (any member's client address) instead
of --initial-cluster, and its placement. It enters as joining and owns
nothing until a committed plan adds it:
  meridian serve --id n4 --grpc-addr 127.0.0.1:7004 --data-dir d4 \
    --cluster-secret-file cluster.secret --ca certs/ca.crt --cert certs/node.n4.crt --key certs/node.n4.key \
    --join 127.0.0.1:7001 --dc dc1 --rack r2 --weight 1
  meridian cluster plan add n4 && meridian cluster commit`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := resolveConfig(cmd.Flags(), cfg, sf); err != nil {
				return err
			}
			logger, err := newLogger(sf.logLevel, sf.logFormat)
			if err != nil {
				return err
			}
			n, err := node.Start(cmd.Context(), *cfg, node.Options{Logger: logger, Register: ops.Register})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "meridian node %s serving gRPC on %s, gossip on %s, metadata log on %s\n", n.ID(), n.Addr(), n.GossipAddr(), n.RaftAddr())
			select {
			case <-cmd.Context().Done():
				logger.Info("shutting down")
				return n.Close()
			case <-n.Failed():
				// The node has logged why; stop, and exit non-zero.
				if err := n.Close(); err != nil {
					logger.Warn("close after the storage failure", "err", err)
				}
				return n.Failure()
			}
		},
	}
	f := cmd.Flags()
	f.StringVar(&sf.config, "config", "", "YAML file with the same keys as the flags")
	f.StringVar(&cfg.ID, "id", "", "this node's ID (listed in --initial-cluster, or a new one with --join)")
	f.StringVar(&cfg.GRPCAddr, "grpc-addr", "", "host:port for the client gRPC API (KV, health, discovery)")
	f.StringVar(&cfg.PeerAddr, "peer-addr", "", "host:port for the node-to-node API (default: grpc-addr's host, a free port)")
	f.StringVar(&cfg.AdminAddr, "admin-addr", "", `host:port for the admin API (default: grpc-addr's host, a free port; "client" shares the client listener)`)
	f.StringVar(&cfg.ClusterName, "cluster-name", "", "cluster name; gossip of differently named clusters never mixes (default meridian)")
	f.DurationVar(&cfg.AntiEntropyPeriod, "anti-entropy-period", 0, "verify every partition against every other replica at least this often (default 10m)")
	f.DurationVar(&cfg.TombstoneGrace, "tombstone-grace", 0, "collect a tombstone once every replica holds it and it is this old (default 24h; negative: never)")
	f.Float64Var(&cfg.RepairKeysPerSecond, "repair-keys-per-second", 0, "anti-entropy repair throttle, keys/s (default 5000)")
	f.Float64Var(&cfg.RepairBytesPerSecond, "repair-bytes-per-second", 0, "anti-entropy repair throttle, bytes/s (default 20 MiB/s)")
	f.Float64Var(&cfg.RepairCrossDCBytesPerSecond, "repair-cross-dc-bytes-per-second", 0, "anti-entropy repair throttle with replicas in other DCs, bytes/s (default 5 MiB/s)")
	f.Float64Var(&cfg.TransferBytesPerSecond, "transfer-bytes-per-second", 0, "throttle on the partitions this node receives during a membership change, bytes/s (default 20 MiB/s)")
	f.Var(bytesFlag{&cfg.MaxReadBytes}, "max-read-bytes", "bytes of replica replies held by the reads this node coordinates, e.g. 256MiB (default 256 MiB; past it new reads are shed)")
	f.Var(bytesFlag{&cfg.MaxBackgroundBytes}, "max-background-bytes", "bytes of sibling sets held by replica writes still running after their request answered and by read repairs, e.g. 256MiB (default 256 MiB; past it writes are shed and read repairs skipped)")
	f.DurationVar(&cfg.RequestIDWindow, "request-id-window", 0, "how long write request IDs are remembered so a retried write is applied once (default 10m)")
	f.IntVar(&cfg.MaxRequestIDs, "max-request-ids", 0, "write request IDs remembered at most (default 100000; meridian_request_ids_evicted_early_total counts IDs forgotten within the window: raise it)")
	f.IntVar(&cfg.MaxInFlight, "max-in-flight", 0, "client requests coordinated at once before shedding with RESOURCE_EXHAUSTED (default 16 per P: 32 per CPU unless GOMAXPROCS is set, as meridian runs two Ps per CPU)")
	f.DurationVar(&cfg.WALSyncInterval, "wal-sync-interval", 0, "least time between two fsyncs of the write-ahead log: under load more durable writes share each fsync (default 2ms; negative: none)")
	f.IntVar(&cfg.MaxConnections, "max-connections", 0, "open connections per listener; more are closed at once (default 4096)")
	f.IntVar(&cfg.PeerCallsWaiting, "peer-calls-waiting", 0, "replica calls waiting for a reply on one peer's call stream; past it they go as separate RPCs (default 4096)")
	f.Var(bytesFlag{&cfg.ClientCallReplyBytes}, "client-call-reply-bytes", "bytes of replies one client's call stream holds on this node not sent yet, e.g. 64MiB; past it the stream stops reading calls until the client reads (default 64 MiB)")
	f.IntVar(&cfg.ClientCallsRunning, "client-calls-running", 0, "calls one client's call stream holds on this node at once (running or with a reply not yet sent); past it the stream stops reading and flow control pushes back (default 1024)")
	f.Var(bytesFlag{&cfg.PeerCallReplyBytes}, "peer-call-reply-bytes", "bytes of replies one peer's call stream holds on this node not sent yet, e.g. 64MiB; past it the stream stops reading calls until the peer reads (default 64 MiB)")
	f.IntVar(&cfg.PeerCallsRunning, "peer-calls-running", 0, "calls one peer's stream holds on this node at once (running or with a reply not yet sent); past it the stream stops reading and flow control pushes back (default 1024)")
	f.DurationVar(&cfg.ConnectionTimeout, "connection-timeout", 0, "time a new connection has to finish its handshake before it is closed (default 10s)")
	f.DurationVar(&cfg.MaxConnectionIdle, "max-connection-idle", 0, "close connections with no call in flight for this long (default 5m)")
	f.DurationVar(&cfg.MaxConnectionAge, "max-connection-age", 0, "recycle client and admin connections this old: the client reconnects, possibly to another node (default 2h; members' connections are not recycled)")
	f.Uint32Var(&cfg.MaxConcurrentStreams, "max-concurrent-streams", 0, "concurrent gRPC streams (calls) per connection (default 1024)")
	f.BoolVar(&cfg.Insecure, "insecure", false, "plaintext listeners and no certificates (only on a trusted network)")
	f.StringVar(&cfg.CAFile, "ca", "", "cluster CA certificate (meridian certs create-ca)")
	f.StringVar(&cfg.CertFile, "cert", "", "this node's certificate (meridian certs create-node ID); reloaded when it changes")
	f.StringVar(&cfg.KeyFile, "key", "", "this node's certificate key")
	f.BoolVar(&cfg.Reflection, "reflection", false, "register gRPC server reflection on the client and admin listeners (for grpcurl)")
	f.StringVar(&cfg.GossipAddr, "gossip-addr", "", "host:port for gossip (default: grpc host, a free port)")
	f.StringVar(&cfg.AdvertiseHost, "advertise-host", "", "host other nodes and clients reach this node at, published for listeners bound to every interface (0.0.0.0) (default: this node's host in --initial-cluster)")
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory for this node's data")
	f.StringVar(&cfg.ClusterSecretFile, "cluster-secret-file", "", "file with the cluster secret(s), the same on every node (create one with: meridian secret create FILE)")
	f.StringVar(&cfg.GossipKeyFile, "gossip-key-file", "", "gossip encryption keys, base64, one per line, the first encrypting (default: derived from the cluster secret; create one with: meridian secret create-gossip-key FILE)")
	f.StringVar(&cfg.InitialCluster, "initial-cluster", "", "the founding members: ID=HOST:PORT[/DC[/RACK[/WEIGHT]]],...")
	f.StringVar(&cfg.JoinAddr, "join", "", "a member's client address HOST:PORT: a new node starts with it instead of --initial-cluster and enters as joining (then: meridian cluster plan add ID)")
	f.StringVar(&cfg.DC, "dc", "", "datacenter of a node started with --join (default dc1; --initial-cluster members take theirs from their entry)")
	f.StringVar(&cfg.Rack, "rack", "", "rack of a node started with --join (default rack1)")
	f.IntVar(&cfg.Weight, "weight", 0, "capacity weight of a node started with --join, 1 to 1000 (default 1)")
	f.StringVar(&cfg.RaftAddr, "raft-addr", "", "host:port for the cluster metadata log (default: grpc-addr's host, a free port)")
	f.StringVar(&sf.gossipSeeds, "gossip-seeds", "", "gossip addresses to join, comma-separated (default: ask the members' client listeners)")
	f.StringVar(&cfg.Engine, "engine", "", "storage engine: pebble or memory (default pebble)")
	f.IntVar(&cfg.Partitions, "partitions", 0, "partitions in the ring, a power of two (default 1024)")
	f.Var(bytesFlag{&cfg.MaxValueSize}, "max-value-size", "largest value accepted, bytes, e.g. 4MiB (default 16 MiB, at most 64 MiB)")
	f.DurationVar(&cfg.RequestTimeout, "request-timeout", 0, "deadline for requests that carry none (default 5s)")
	f.StringVar(&cfg.GossipProfile, "gossip-profile", "", "memberlist timing profile: lan, wan, local or test (default lan)")
	f.DurationVar(&cfg.HintInterval, "hint-interval", 0, "how often hints are offered to returning nodes (default 1s)")
	f.Var(optDuration{&cfg.HintWindow}, "hint-window", "a node owed hints longer than this gets no new ones; those held are still delivered to it (default 3h; 0 turns hints off)")
	f.Var(optBytes{&cfg.MinFreeDisk}, "min-free-disk", "free space on the data directory's volume, bytes, e.g. 1GiB, under which the node refuses writes (RESOURCE_EXHAUSTED, reason DISK_LOW) and serves reads, until a tenth more is free (default 256 MiB; 0 turns the check off)")
	f.DurationVar(&cfg.SnapshotInterval, "snapshot-interval", 0, "take a snapshot of this node's data at every multiple of this, e.g. 6h, named auto-<time> (off when 0; see meridian snapshot)")
	f.IntVar(&cfg.SnapshotReads, "snapshot-reads", 0, "snapshot downloads served at once (default 2; more are refused with RESOURCE_EXHAUSTED)")
	f.IntVar(&cfg.RepairRuns, "repair-runs", 0, "full repairs ('meridian repair run') run at once (default 2; more are refused with RESOURCE_EXHAUSTED)")
	f.IntVar(&cfg.SnapshotKeep, "snapshot-keep", 0, "scheduled snapshots kept, the newest; older ones are deleted (default 7; snapshots taken by hand are kept)")
	f.Var(optBytes{&cfg.RowCacheSize}, "row-cache-size", "cache of recently read and written values, bytes, e.g. 256MiB: reads and writes of hot keys skip the storage engine (default 32 MiB; 0 turns it off)")
	f.Var(optBytes{&cfg.MaxHintBytes}, "max-hint-bytes", "hints held per target node, bytes, e.g. 64MiB (default 64 MiB; 0 turns hints off)")
	f.StringVar(&cfg.Telemetry.MetricsAddr, "metrics-addr", "", "serve Prometheus /metrics on this host:port (off when empty; a bare :9100 binds localhost only, 0.0.0.0:9100 every interface)")
	f.BoolVar(&cfg.Telemetry.Pprof, "pprof", false, "also serve net/http/pprof under /debug/pprof on --metrics-addr")
	f.StringVar(&cfg.Telemetry.Exporter, "trace-exporter", "", "otlp, stdout or none (default: otlp when an OTLP endpoint is set, else none; or OTEL_TRACES_EXPORTER)")
	f.StringVar(&cfg.Telemetry.OTLPEndpoint, "otlp-endpoint", "", "OTLP collector endpoint, e.g. localhost:4317 (default OTEL_EXPORTER_OTLP_ENDPOINT)")
	f.StringVar(&cfg.Telemetry.OTLPProtocol, "otlp-protocol", "", "grpc or http/protobuf (default OTEL_EXPORTER_OTLP_PROTOCOL, else grpc)")
	f.Var(optFloatFlag{p: &cfg.Telemetry.SampleRatio, max: 1, want: "a fraction from 0 to 1, e.g. 0.01", typ: "ratio"}, "trace-sample-ratio", "fraction of new traces sampled, 0-1; 0 samples none (default from OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG, else 1)")
	f.Var(optFloatFlag{p: &cfg.Telemetry.CallerTraceRate, max: math.MaxFloat64, want: "requests a second, 0 or more, e.g. 100", typ: "per-second"}, "trace-caller-rate", fmt.Sprintf("client and admin requests a second traced because their caller's trace context is sampled; 0 follows none (default %d)", telemetry.DefaultCallerTraceRate))
	f.StringVar(&sf.logLevel, "log-level", "", "debug, info, warn or error (default info)")
	f.StringVar(&sf.logFormat, "log-format", "", "text or json (default text)")
	return cmd
}

// fileConfig is the YAML file: node.Config plus the serve-only keys.
type fileConfig struct {
	node.Config `yaml:",inline"`
	LogLevel    string `yaml:"log-level"`
	LogFormat   string `yaml:"log-format"`
}

// resolveConfig merges file, environment and flags into cfg: a flag set on
// the command line wins, then MERIDIAN_<FLAG>, then the file, then defaults.
func resolveConfig(fs *pflag.FlagSet, cfg *node.Config, sf *serveFlags) error {
	changed := map[string]string{}
	fs.Visit(func(f *pflag.Flag) { changed[f.Name] = f.Value.String() })
	if _, set := changed["config"]; !set {
		// MERIDIAN_CONFIG names the file like every other flag's
		// variable (read here: the file comes before the others).
		if env, ok := os.LookupEnv(envName("config")); ok {
			sf.config = env
		}
	}
	if sf.config != "" {
		raw, err := os.ReadFile(sf.config)
		if err != nil {
			return fmt.Errorf("read --config: %w", err)
		}
		var fc fileConfig
		dec := yaml.NewDecoder(strings.NewReader(string(raw)))
		dec.KnownFields(true)
		if err := dec.Decode(&fc); err != nil && !errors.Is(err, io.EOF) { // EOF: no keys (empty, or comments only)
			var be *node.BytesError
			if errors.As(err, &be) {
				if key := yamlKeyAt(raw, be.Line, be.Column); key != "" {
					return fmt.Errorf("config file %s: %s: %w", sf.config, key, err)
				}
			}
			return fmt.Errorf("config file %s: %w", sf.config, err)
		}
		*cfg = fc.Config
		sf.gossipSeeds = strings.Join(fc.GossipSeeds, ",")
		if fc.LogLevel != "" {
			sf.logLevel = fc.LogLevel
		}
		if fc.LogFormat != "" {
			sf.logFormat = fc.LogFormat
		}
	}
	var errs []string
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Name == "config" || f.Name == "help" {
			return
		}
		val, set := changed[f.Name]
		if !set {
			val, set = os.LookupEnv(envName(f.Name))
			if !set {
				return
			}
		}
		if err := f.Value.Set(val); err != nil {
			errs = append(errs, fmt.Sprintf("--%s / %s: %v", f.Name, envName(f.Name), err))
		}
	})
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	cfg.GossipSeeds = nil
	for _, s := range strings.Split(sf.gossipSeeds, ",") {
		if s = strings.TrimSpace(s); s != "" {
			cfg.GossipSeeds = append(cfg.GossipSeeds, s)
		}
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	return cfg.CheckOperator()
}

// yamlKeyAt names the key (dotted, from the top) whose value is at line
// and column of the YAML document raw: "" if none is.
func yamlKeyAt(raw []byte, line, column int) string {
	var doc yaml.Node
	if yaml.Unmarshal(raw, &doc) != nil {
		return ""
	}
	var find func(n *yaml.Node, path string) string
	find = func(n *yaml.Node, path string) string {
		switch n.Kind {
		case yaml.DocumentNode, yaml.SequenceNode:
			for _, c := range n.Content {
				if k := find(c, path); k != "" {
					return k
				}
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				key, val := n.Content[i].Value, n.Content[i+1]
				if path != "" {
					key = path + "." + key
				}
				if val.Line == line && val.Column == column {
					return key
				}
				if k := find(val, key); k != "" {
					return k
				}
			}
		}
		return ""
	}
	return find(&doc, "")
}

func envName(flag string) string {
	return "MERIDIAN_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// newLogger logs to stderr; lines logged with a request context carry its
// trace ID. The node adds its ID and DC.
func newLogger(level, format string) (*slog.Logger, error) {
	return telemetry.NewLogger(os.Stderr, level, format, "", "")
}
