// Package node wires a running Meridian node: engine, replica store,
// gossip membership, coordinator, hinted handoff and the gRPC servers.
package node

import (
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/meridiankv/meridian/coordinator"
	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/placement"
	"github.com/meridiankv/meridian/repair"
	"github.com/meridiankv/meridian/telemetry"
	"github.com/meridiankv/meridian/transport"
)

// Config is one node's configuration. The zero value of every optional
// field means its default; Validate says which field is wrong.
type Config struct {
	// ID names the node; it must appear in InitialCluster.
	ID string `yaml:"id"`
	// GRPCAddr is where clients and peers reach the node (host:port).
	GRPCAddr string `yaml:"grpc-addr"`
	// PeerAddr is the node-to-node listener (host:port; default: the
	// GRPCAddr host, a free port — peers learn it through gossip).
	PeerAddr string `yaml:"peer-addr"`
	// AdminAddr is the admin listener (host:port; default: the GRPCAddr
	// host, a free port, found through the client listener's Discovery
	// service). "client" serves the admin API on the client listener.
	AdminAddr string `yaml:"admin-addr"`
	// Reflection registers gRPC server reflection on the client and admin
	// listeners (for grpcurl; on in dev).
	Reflection bool `yaml:"reflection"`
	// GossipAddr is the memberlist bind address (host:port; port 0 picks one).
	GossipAddr string `yaml:"gossip-addr"`
	// AdvertiseHost is the host other nodes and clients reach this node
	// at, for listeners bound to every interface (a wildcard host such as
	// 0.0.0.0 or ::, or none): every address the node publishes (gossip,
	// discovery, the metadata log) names it instead. Default: the host of
	// this node's initial-cluster entry. A node binding a wildcard host
	// needs one or the other.
	AdvertiseHost string `yaml:"advertise-host"`
	// DataDir holds the Pebble data (ignored by the memory engine).
	DataDir string `yaml:"data-dir"`
	// InitialCluster lists every member: "ID=HOST:PORT[/DC[/RACK[/WEIGHT]]],...".
	InitialCluster string `yaml:"initial-cluster"`
	// GossipSeeds lists gossip addresses to join; empty means ask the
	// members' client listeners for theirs.
	GossipSeeds []string `yaml:"gossip-seeds"`
	// JoinAddr is a member's client address (host:port): a new node
	// starts with it instead of InitialCluster and enters the cluster as
	// joining, owning nothing until a committed plan adds it.
	JoinAddr string `yaml:"join"`
	// DC, Rack and Weight place a joining node (defaults dc1, rack1, 1);
	// for a node in InitialCluster they come from its entry there.
	DC     string `yaml:"dc"`
	Rack   string `yaml:"rack"`
	Weight int    `yaml:"weight"`
	// RaftAddr is the cluster metadata log's listener (host:port;
	// default: the GRPCAddr host, a free port — peers learn it through
	// gossip and discovery).
	RaftAddr string `yaml:"raft-addr"`
	// Engine is "pebble" (default) or "memory".
	Engine string `yaml:"engine"`
	// Partitions is Q, fixed at cluster creation (default 1024).
	Partitions int `yaml:"partitions"`
	// Keyspaces beyond "default".
	Keyspaces []membership.KeyspaceSpec `yaml:"keyspaces"`
	// MaxValueSize is the largest value accepted, bytes (default 16 MiB).
	MaxValueSize Bytes `yaml:"max-value-size"`
	// RequestTimeout bounds requests whose caller set no deadline (default 5s).
	RequestTimeout time.Duration `yaml:"request-timeout"`
	// GossipProfile is memberlist's profile: lan (default), wan, local, test.
	GossipProfile string `yaml:"gossip-profile"`
	// HintInterval is how often hints are offered to returning nodes (default 1s).
	HintInterval time.Duration `yaml:"hint-interval"`
	// HintWindow: a node owed hints for longer than this gets no new ones,
	// and hints older than this go to the partition's other replicas
	// instead (nil: 3h; 0 turns hints off). It must be under nine tenths
	// of TombstoneGrace, the age past which a hint is dropped.
	HintWindow *time.Duration `yaml:"hint-window"`
	// MaxHintBytes bounds the hints held per target node (nil: 64 MiB; 0
	// turns hints off). In YAML, like every Bytes key, an integer or a
	// size with a unit such as 64MiB.
	MaxHintBytes *Bytes `yaml:"max-hint-bytes"`
	// AntiEntropyPeriod: every partition is verified against every other
	// replica at least this often (default 10m).
	AntiEntropyPeriod time.Duration `yaml:"anti-entropy-period"`
	// RepairKeysPerSecond, RepairBytesPerSecond and
	// RepairCrossDCBytesPerSecond throttle anti-entropy repairs (defaults
	// 5,000 keys/s, 20 MiB/s, 5 MiB/s across DCs).
	RepairKeysPerSecond         float64 `yaml:"repair-keys-per-second"`
	RepairBytesPerSecond        float64 `yaml:"repair-bytes-per-second"`
	RepairCrossDCBytesPerSecond float64 `yaml:"repair-cross-dc-bytes-per-second"`
	// TransferBytesPerSecond throttles the partitions this node receives
	// during a membership change (default 20 MiB/s).
	TransferBytesPerSecond float64 `yaml:"transfer-bytes-per-second"`
	// TombstoneGrace is how old a tombstone must be before it is
	// collected, once every replica is proven to hold it (default 24h;
	// negative: never).
	TombstoneGrace time.Duration `yaml:"tombstone-grace"`
	// MaxInFlight bounds the client requests a node coordinates at once;
	// more wait briefly, then get RESOURCE_EXHAUSTED (default 16 per P,
	// coordinator.DefaultMaxInFlight: the meridian binary runs two Ps per
	// CPU unless GOMAXPROCS is set, so 32 per CPU).
	MaxInFlight int `yaml:"max-in-flight"`
	// MaxBackgroundBytes bounds the bytes of sibling sets held by work a
	// request leaves behind: replica writes still running after the
	// write met its level, read repairs (default 256 MiB). Past it,
	// writes are shed (RESOURCE_EXHAUSTED) and read repairs skipped.
	MaxBackgroundBytes Bytes `yaml:"max-background-bytes"`
	// MaxReadBytes bounds the bytes of replica replies held by the reads
	// this node coordinates (default 256 MiB): past it, new reads are
	// shed (RESOURCE_EXHAUSTED) until those in progress end.
	MaxReadBytes Bytes `yaml:"max-read-bytes"`
	// RequestIDWindow is how long write request IDs are remembered so a
	// retried write is applied once (default 10m); MaxRequestIDs bounds
	// how many (default 100,000): at a higher write rate IDs are forgotten
	// sooner (meridian_request_ids_evicted_early_total says so).
	RequestIDWindow time.Duration `yaml:"request-id-window"`
	MaxRequestIDs   int           `yaml:"max-request-ids"`
	// WALSyncInterval is the least time between two fsyncs of the write-
	// ahead log (default 2ms; negative: none). A durable write arriving
	// sooner after the last fsync waits out the rest of the interval, so
	// that under load more writes share each fsync; a write after a quiet
	// spell, or from a lone writer (two fsyncs in a row served at most one
	// durable write each), is synced at once. Writes are acknowledged
	// after their fsync either way.
	WALSyncInterval time.Duration `yaml:"wal-sync-interval"`
	// MinFreeDisk is the free space, in bytes, under which the node
	// refuses writes of data (RESOURCE_EXHAUSTED, reason DISK_LOW) while
	// still serving reads, until free space is a tenth above it again
	// (nil: 256 MiB; 0 turns the check off).
	MinFreeDisk *Bytes `yaml:"min-free-disk"`
	// SnapshotInterval, when positive, has the node take a snapshot of its
	// data (as 'meridian snapshot create' does) at every multiple of it,
	// named auto-<time>, keeping the newest SnapshotKeep of them (default
	// 7); snapshots taken by hand are never deleted by it. 0 (the
	// default) takes none; at least 1s.
	SnapshotInterval time.Duration `yaml:"snapshot-interval"`
	SnapshotKeep     int           `yaml:"snapshot-keep"`
	// SnapshotReads bounds the snapshot downloads ('meridian snapshot
	// download') this node serves at once, each reading its disk (0:
	// the default, 2).
	SnapshotReads int `yaml:"snapshot-reads"`
	// RepairRuns bounds the full repairs ('meridian repair run') this
	// node runs at once, each exchanging every partition it holds (0:
	// the default, 2).
	RepairRuns int `yaml:"repair-runs"`
	// RowCacheSize bounds the cache of recently read and written sibling
	// sets that lets reads and writes of hot keys skip the storage engine
	// (nil: 32 MiB; 0 turns it off).
	RowCacheSize *Bytes `yaml:"row-cache-size"`
	// MaxConnections caps open connections per listener; more are closed
	// at once (default 4096).
	MaxConnections int `yaml:"max-connections"`
	// PeerCallsWaiting bounds the replica calls this node has sent on one
	// peer's call stream and waits on (default 4096); past it, calls go
	// as separate RPCs. PeerCallsRunning bounds the calls one peer's
	// stream holds here at once, running or with a reply not sent yet
	// (default 1024); past it, the stream stops reading and gRPC flow
	// control pushes back on the peer.
	PeerCallsWaiting int `yaml:"peer-calls-waiting"`
	PeerCallsRunning int `yaml:"peer-calls-running"`
	// ClientCallsRunning bounds the calls one client's call stream
	// (kv.v1.KV/Calls) holds here at once, running or with a reply not
	// sent yet (default 1024); past it, the stream stops reading and gRPC
	// flow control pushes back on the client, so a client that stops
	// reading replies cannot grow their queue. Admission control still
	// sheds what the node cannot take.
	ClientCallsRunning int `yaml:"client-calls-running"`
	// ClientCallReplyBytes bounds the bytes of the replies one client's
	// call stream holds here not sent yet (default 64 MiB): past it the
	// stream stops reading calls until the client reads its replies, so
	// a client that does not read cannot make the node hold
	// client-calls-running large values.
	ClientCallReplyBytes Bytes `yaml:"client-call-reply-bytes"`
	// PeerCallReplyBytes is the same bound for a peer's call stream
	// (default 64 MiB): a peer that stops reading (a stalled process, a
	// congested link) cannot make this node hold peer-calls-running
	// large reads.
	PeerCallReplyBytes Bytes `yaml:"peer-call-reply-bytes"`
	// ConnectionTimeout bounds a new connection's handshake (default 10s).
	ConnectionTimeout time.Duration `yaml:"connection-timeout"`
	// MaxConnectionIdle closes connections idle that long (default 5m);
	// MaxConnectionAge recycles client and admin connections that old
	// (default 2h); members' connections on the peer listener are not.
	MaxConnectionIdle time.Duration `yaml:"max-connection-idle"`
	MaxConnectionAge  time.Duration `yaml:"max-connection-age"`
	// MaxConcurrentStreams per connection, on every listener (default 1024).
	MaxConcurrentStreams uint32 `yaml:"max-concurrent-streams"`
	// ClusterName labels the cluster's gossip (default "meridian"): nodes
	// of differently named clusters never gossip with each other.
	ClusterName string `yaml:"cluster-name"`
	// ClusterSecretFile names a file of cluster secrets (see ParseSecrets):
	// every node of a cluster must share them. Causal contexts handed to
	// clients are authenticated with them.
	ClusterSecretFile string `yaml:"cluster-secret-file"`
	// GossipKeyFile, when set, holds the gossip encryption keys (see
	// LoadGossipKeys) instead of keys derived from the cluster secrets;
	// `meridian secret reload` re-reads it, so keys rotate without a flap.
	GossipKeyFile string `yaml:"gossip-key-file"`
	// ClusterSecrets are secrets given directly (embedded and local
	// clusters); they come before those of ClusterSecretFile.
	ClusterSecrets []string `yaml:"-"`
	// Insecure runs every listener in plaintext, with no certificates:
	// only for a trusted network. Otherwise CAFile, CertFile and KeyFile
	// are required.
	Insecure bool `yaml:"insecure"`
	// CAFile is the cluster CA; CertFile and KeyFile this node's
	// certificate (its node ID as a URI SAN, from `meridian certs
	// create-node`). They are reloaded when the files change.
	CAFile   string `yaml:"ca"`
	CertFile string `yaml:"cert"`
	KeyFile  string `yaml:"key"`
	// Auth says who may call the client and admin APIs.
	Auth AuthConfig `yaml:"auth"`
	// Telemetry: tracing exporters, sampling, /metrics and pprof.
	Telemetry telemetry.Config `yaml:",inline"`
}

// Defaults.
const (
	DefaultEngine               = "pebble"
	DefaultMaxConcurrentStreams = 1024
	// DefaultWALSyncInterval: 1ms let about 4 times as many durable writes
	// share each fsync in the 3-node benchmark, for 1.7 times the durable
	// QUORUM put throughput; 2ms, with fewer fsyncs (each costs about
	// 100 µs of system CPU on the reference machine), gave closed-loop
	// workload A 14% more and the durable put benchmark 29% less time per
	// put, for about 0.3 ms more median latency at half of saturation
	// (docs/PERFORMANCE.md).
	DefaultWALSyncInterval = 2 * time.Millisecond
)

func (c *Config) setDefaults() {
	if c.ClusterName == "" {
		c.ClusterName = "meridian"
	}
	if c.Engine == "" {
		c.Engine = DefaultEngine
	}
	if c.Partitions == 0 {
		c.Partitions = placement.DefaultPartitions
	}
	if c.MaxValueSize == 0 {
		c.MaxValueSize = 16 << 20
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 5 * time.Second
	}
	if c.GossipProfile == "" {
		c.GossipProfile = "lan"
	}
	if c.DC == "" {
		c.DC = "dc1"
	}
	if c.Rack == "" {
		c.Rack = "rack1"
	}
	if c.Weight == 0 {
		c.Weight = 1
	}
	if c.HintInterval == 0 {
		c.HintInterval = time.Second
	}
	if c.SnapshotKeep == 0 {
		c.SnapshotKeep = DefaultSnapshotKeep
	}
	if c.SnapshotReads == 0 {
		c.SnapshotReads = DefaultSnapshotReads
	}
	if c.RepairRuns == 0 {
		c.RepairRuns = DefaultRepairRuns
	}
	if c.MaxConcurrentStreams == 0 {
		c.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = 4096
	}
	if c.PeerCallsWaiting == 0 {
		c.PeerCallsWaiting = transport.DefaultPipeWaiting
	}
	if c.PeerCallsRunning == 0 {
		c.PeerCallsRunning = transport.DefaultCallsRunning
	}
	if c.ClientCallsRunning == 0 {
		c.ClientCallsRunning = transport.DefaultCallsRunning
	}
	if c.ClientCallReplyBytes == 0 {
		c.ClientCallReplyBytes = DefaultClientCallReplyBytes
	}
	if c.PeerCallReplyBytes == 0 {
		c.PeerCallReplyBytes = DefaultClientCallReplyBytes
	}
	if c.WALSyncInterval == 0 {
		c.WALSyncInterval = DefaultWALSyncInterval
	}
	if c.ConnectionTimeout == 0 {
		c.ConnectionTimeout = 10 * time.Second
	}
	if c.MaxConnectionIdle == 0 {
		c.MaxConnectionIdle = 5 * time.Minute
	}
	if c.MaxConnectionAge == 0 {
		c.MaxConnectionAge = 2 * time.Hour
	}
}

// Validate checks the configuration (after defaults) and names the first
// field that is wrong and what to do about it.
func (c Config) Validate() error {
	c.setDefaults()
	if err := c.validID(); err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(c.GRPCAddr); err != nil {
		return fmt.Errorf("grpc-addr %q: want host:port, e.g. 127.0.0.1:7001", c.GRPCAddr)
	}
	if c.PeerAddr != "" {
		if _, _, err := net.SplitHostPort(c.PeerAddr); err != nil {
			return fmt.Errorf("peer-addr %q: want host:port, e.g. 127.0.0.1:7201", c.PeerAddr)
		}
	}
	if c.AdminAddr != "" && c.AdminAddr != SharedAdmin {
		if _, _, err := net.SplitHostPort(c.AdminAddr); err != nil {
			return fmt.Errorf("admin-addr %q: want host:port, e.g. 127.0.0.1:7301, or %q to share the client listener", c.AdminAddr, SharedAdmin)
		}
	}
	if c.GossipAddr != "" {
		if _, _, err := net.SplitHostPort(c.GossipAddr); err != nil {
			return fmt.Errorf("gossip-addr %q: want host:port, e.g. 127.0.0.1:7101", c.GossipAddr)
		}
	}
	if err := c.checkAdvertise(); err != nil {
		return err
	}
	switch c.Engine {
	case "pebble":
		if c.DataDir == "" {
			return errors.New("data-dir is empty: the pebble engine needs a directory (or use --engine memory)")
		}
	case "memory":
	default:
		return fmt.Errorf("engine %q: use pebble or memory", c.Engine)
	}
	if c.Partitions < 1 || c.Partitions > 65536 || c.Partitions&(c.Partitions-1) != 0 {
		return fmt.Errorf("partitions %d: use a power of two from 1 to 65536", c.Partitions)
	}
	if c.MaxValueSize < 1 || c.MaxValueSize > 64<<20 {
		return fmt.Errorf("max-value-size %d: use 1 byte to 64 MiB", c.MaxValueSize)
	}
	for _, b := range []struct {
		name string
		v    int
	}{{"peer-calls-waiting", c.PeerCallsWaiting}, {"peer-calls-running", c.PeerCallsRunning}, {"client-calls-running", c.ClientCallsRunning}} {
		if b.v < 0 || b.v > 1<<20 {
			return fmt.Errorf("%s %d: want 1 to %d (0: the default)", b.name, b.v, 1<<20)
		}
	}
	if c.MaxInFlight < 0 || c.MaxInFlight > 1<<20 {
		return fmt.Errorf("max-in-flight %d: want 1 to %d (0: the default)", c.MaxInFlight, 1<<20)
	}
	if c.ClientCallReplyBytes < 0 {
		return fmt.Errorf("client-call-reply-bytes %d is negative (0: the default, 64 MiB)", c.ClientCallReplyBytes)
	}
	if c.PeerCallReplyBytes < 0 {
		return fmt.Errorf("peer-call-reply-bytes %d is negative (0: the default, 64 MiB)", c.PeerCallReplyBytes)
	}
	if c.MaxBackgroundBytes < 0 {
		return fmt.Errorf("max-background-bytes %d is negative (0: the default, 256 MiB)", c.MaxBackgroundBytes)
	}
	if c.MaxReadBytes < 0 {
		return fmt.Errorf("max-read-bytes %d is negative (0: the default, 256 MiB)", c.MaxReadBytes)
	}
	if c.RequestIDWindow < 0 {
		return fmt.Errorf("request-id-window %s is negative (0: the default, 10m)", c.RequestIDWindow)
	}
	if c.MaxRequestIDs < 0 || c.MaxRequestIDs > 1<<24 {
		return fmt.Errorf("max-request-ids %d: want 1 to %d (0: the default, 100000)", c.MaxRequestIDs, 1<<24)
	}
	if c.MaxConnections < 0 {
		return fmt.Errorf("max-connections %d is negative (0: the default, 4096)", c.MaxConnections)
	}
	if c.RequestTimeout < 0 || c.RequestTimeout > coordinator.DefaultMaxRequestTimeout {
		return fmt.Errorf("request-timeout %s: use up to %s (0: the default, 5s), the cap on every request's deadline, a caller's own included", c.RequestTimeout, coordinator.DefaultMaxRequestTimeout)
	}
	if c.HintInterval < 0 {
		return fmt.Errorf("hint-interval %s is negative (0: the default, 1s)", c.HintInterval)
	}
	if c.HintWindow != nil && *c.HintWindow < 0 {
		return fmt.Errorf("hint-window %s is negative (0 turns hints off)", *c.HintWindow)
	}
	window := repair.DefaultHintWindow
	if c.HintWindow != nil {
		window = *c.HintWindow // 0: hints off
	}
	hintsOn := window > 0 && (c.MaxHintBytes == nil || *c.MaxHintBytes > 0)
	if maxAge := hintMaxAge(c.TombstoneGrace); hintsOn && maxAge > 0 && window >= maxAge {
		return fmt.Errorf("hint-window %s must be under nine tenths of tombstone-grace (%s): hints older than that are dropped, since delivered later they could bring back deleted values; shorten hint-window or lengthen tombstone-grace", window, maxAge)
	}
	if c.MaxHintBytes != nil && *c.MaxHintBytes < 0 {
		return fmt.Errorf("max-hint-bytes %d is negative (0 turns hints off)", *c.MaxHintBytes)
	}
	if c.AntiEntropyPeriod < 0 {
		return fmt.Errorf("anti-entropy-period %s is negative (0: the default, 10m)", c.AntiEntropyPeriod)
	}
	for _, r := range []struct {
		name string
		v    float64
	}{{"repair-keys-per-second", c.RepairKeysPerSecond}, {"repair-bytes-per-second", c.RepairBytesPerSecond},
		{"repair-cross-dc-bytes-per-second", c.RepairCrossDCBytesPerSecond}, {"transfer-bytes-per-second", c.TransferBytesPerSecond}} {
		if r.v < 0 || math.IsNaN(r.v) || math.IsInf(r.v, 0) {
			return fmt.Errorf("%s %v: want a positive rate (0: the default)", r.name, r.v)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"connection-timeout", c.ConnectionTimeout}, {"max-connection-idle", c.MaxConnectionIdle}, {"max-connection-age", c.MaxConnectionAge}} {
		if d.v < 0 {
			return fmt.Errorf("%s %s is negative (0: the default)", d.name, d.v)
		}
	}
	if c.MinFreeDisk != nil && *c.MinFreeDisk < 0 {
		return fmt.Errorf("min-free-disk %d is negative (0 turns the check off)", *c.MinFreeDisk)
	}
	if c.SnapshotInterval < 0 || c.SnapshotInterval > 0 && c.SnapshotInterval < MinSnapshotInterval {
		return fmt.Errorf("snapshot-interval %s: use 0 (no scheduled snapshots) or at least %s, e.g. 6h", c.SnapshotInterval, MinSnapshotInterval)
	}
	if c.SnapshotReads < 0 || c.SnapshotReads > 64 {
		return fmt.Errorf("snapshot-reads %d: serve 1 to 64 snapshot downloads at once (0: the default, %d)", c.SnapshotReads, DefaultSnapshotReads)
	}
	if c.RepairRuns < 0 || c.RepairRuns > 16 {
		return fmt.Errorf("repair-runs %d: run 1 to 16 full repairs at once (0: the default, %d)", c.RepairRuns, DefaultRepairRuns)
	}
	if c.SnapshotKeep < 0 || c.SnapshotKeep > 10000 {
		return fmt.Errorf("snapshot-keep %d: keep 1 to 10000 scheduled snapshots (0: the default, %d)", c.SnapshotKeep, DefaultSnapshotKeep)
	}
	if c.SnapshotInterval > 0 && c.Engine == "memory" {
		return fmt.Errorf("snapshot-interval %s: snapshots need the pebble engine, this node keeps its data in memory", c.SnapshotInterval)
	}
	if c.RowCacheSize != nil && *c.RowCacheSize < 0 {
		return fmt.Errorf("row-cache-size %d is negative (0 turns the row cache off)", *c.RowCacheSize)
	}
	if c.WALSyncInterval > 100*time.Millisecond {
		return fmt.Errorf("wal-sync-interval %s: use at most 100ms (every durable write may wait that long)", c.WALSyncInterval)
	}
	if c.ClusterSecretFile == "" && len(c.ClusterSecrets) == 0 {
		return errors.New("no cluster secret: every node of a cluster needs the same --cluster-secret-file (create one with `meridian secret create FILE` and copy it to each node)")
	}
	for _, s := range c.ClusterSecrets {
		if len(s) < MinSecretLen {
			return fmt.Errorf("cluster secret too short: use at least %d characters", MinSecretLen)
		}
	}
	if c.GossipKeyFile != "" {
		if _, err := LoadGossipKeys(c.GossipKeyFile); err != nil {
			return err
		}
	}
	if c.Insecure && (c.CAFile != "" || c.CertFile != "" || c.KeyFile != "") {
		// Contradictory, and resolved silently it would turn TLS off on
		// a node configured for it (an insecure: true copied from a dev
		// config, a MERIDIAN_INSECURE left in an environment).
		return fmt.Errorf("--insecure with TLS files (ca %q, cert %q, key %q: from the flags, the config file, or MERIDIAN_CA, MERIDIAN_CERT and MERIDIAN_KEY, which `meridian dev` and `demo` suggest exporting): insecure turns TLS off on every listener; remove insecure (the flag, MERIDIAN_INSECURE or the config file's insecure:) to use the files, or the files (unset those variables) to run in plaintext", c.CAFile, c.CertFile, c.KeyFile)
	}
	if !c.Insecure && (c.CAFile == "" || c.CertFile == "" || c.KeyFile == "") {
		return errors.New("no TLS material: pass --ca, --cert and --key (create them with `meridian certs create-ca` and `meridian certs create-node ID`), or --insecure for plaintext on a trusted network")
	}
	if err := c.Auth.Validate(); err != nil {
		return err
	}
	if c.RaftAddr != "" {
		if _, _, err := net.SplitHostPort(c.RaftAddr); err != nil {
			return fmt.Errorf("raft-addr %q: want host:port, e.g. 127.0.0.1:7401", c.RaftAddr)
		}
	}
	if err := c.checkDistinctAddrs(); err != nil {
		return err
	}
	if c.JoinAddr != "" {
		if _, _, err := net.SplitHostPort(c.JoinAddr); err != nil {
			return fmt.Errorf("join %q: want a member's client address host:port, e.g. 127.0.0.1:7001", c.JoinAddr)
		}
		if err := validPlace(c.DC, c.Rack, c.Weight); err != nil {
			return err
		}
		if c.InitialCluster == "" {
			return nil
		}
	}
	members, err := ParseInitialCluster(c.InitialCluster)
	if err != nil {
		return fmt.Errorf("%w (or start a new node with --join MEMBER_ADDR)", err)
	}
	for _, m := range members {
		if m.ID == c.ID {
			return checkOwnAddr(c.ID, c.GRPCAddr, m.GRPCAddr)
		}
	}
	return fmt.Errorf("initial-cluster does not list this node's id %q: add %s=%s", c.ID, c.ID, c.GRPCAddr)
}

// validPlace checks where a joining node says it is: what a member
// record holds for good (in the metadata log, its snapshots and every
// topology answer), so it is checked before it is proposed.
func validPlace(dc, rack string, weight int) error {
	if weight < 1 || weight > placement.MaxWeight {
		return fmt.Errorf("weight %d: use 1 to %d", weight, placement.MaxWeight)
	}
	for _, f := range []struct{ name, v string }{{"dc", dc}, {"rack", rack}} {
		if f.v == "" || len(f.v) > 64 || strings.ContainsAny(f.v, ",=/ ") {
			return fmt.Errorf("%s %q: use 1 to 64 characters without ',', '=', '/' or spaces", f.name, f.v)
		}
	}
	return nil
}

// validID checks the node ID.
func (c Config) validID() error {
	if c.ID == "" {
		return errors.New("id is empty: give the node a name with --id")
	}
	if strings.ContainsAny(c.ID, "#~,=/ ") || len(c.ID) > 64 {
		return fmt.Errorf("id %q: use up to 64 characters without '#', '~', ',', '=', '/' or spaces", c.ID)
	}
	return nil
}

// advertiseHost is the host published for listeners bound to every
// interface: AdvertiseHost, else the host of this node's initial-cluster
// entry when it names one ("" when neither does).
func (c Config) advertiseHost() string {
	if c.AdvertiseHost != "" {
		return c.AdvertiseHost
	}
	members, err := ParseInitialCluster(c.InitialCluster)
	if err != nil {
		return ""
	}
	for _, m := range members {
		if m.ID == c.ID && !membership.WildcardHost(m.GRPCAddr) {
			host, _, _ := net.SplitHostPort(m.GRPCAddr)
			return host
		}
	}
	return ""
}

// checkAdvertise refuses an advertise-host that names no single host, and
// a listener bound to every interface with no host to publish for it:
// peers would be told 0.0.0.0, which reaches only their own machine.
func (c Config) checkAdvertise() error {
	if h := c.AdvertiseHost; h != "" {
		ip := net.ParseIP(h)
		if ip != nil && ip.IsUnspecified() || strings.ContainsAny(h, "/ ,[]") || ip == nil && strings.Contains(h, ":") {
			return fmt.Errorf("advertise-host %q: give the host (a name or IP address, no port) other nodes reach this node at", h)
		}
	}
	if c.advertiseHost() != "" {
		return nil
	}
	for _, a := range []struct{ flag, addr string }{{"grpc-addr", c.GRPCAddr}, {"peer-addr", c.PeerAddr}, {"admin-addr", c.AdminAddr}, {"gossip-addr", c.GossipAddr}, {"raft-addr", c.RaftAddr}} {
		if a.addr != "" && a.addr != SharedAdmin && membership.WildcardHost(a.addr) {
			return fmt.Errorf("%s %s binds every interface, but other nodes need an address to reach this node at: give --advertise-host (this node's IP address or name), or name its host in --initial-cluster", a.flag, a.addr)
		}
	}
	return nil
}

// checkDistinctAddrs refuses two listeners of this node on one fixed
// port: the second would fail to bind only once the node is half up.
func (c Config) checkDistinctAddrs() error {
	seen := map[string]string{}
	for _, a := range []struct{ flag, addr string }{{"grpc-addr", c.GRPCAddr}, {"peer-addr", c.PeerAddr}, {"admin-addr", c.AdminAddr}, {"gossip-addr", c.GossipAddr}, {"raft-addr", c.RaftAddr}} {
		host, port, err := net.SplitHostPort(a.addr)
		if err != nil || port == "0" {
			continue // unset, shared, or a port picked at start
		}
		if ip := net.ParseIP(host); ip != nil {
			host = ip.String()
		}
		key := net.JoinHostPort(host, port)
		if other, dup := seen[key]; dup {
			return fmt.Errorf("%s and %s are both %s: give each listener its own port (or port 0 to pick a free one)", other, a.flag, a.addr)
		}
		seen[key] = a.flag
	}
	return nil
}

// checkOwnAddr refuses a grpc-addr that is not the address the initial
// cluster gives the node: peers would dial an address nobody serves. Port
// 0 (a port picked at start) and a wildcard host (every interface) cannot
// be compared and pass.
func checkOwnAddr(id, grpcAddr, listed string) error {
	host, port, _ := net.SplitHostPort(grpcAddr)
	lhost, lport, _ := net.SplitHostPort(listed)
	if port == "0" {
		return nil
	}
	sameHost := host == lhost
	if ip, lip := net.ParseIP(host), net.ParseIP(lhost); ip != nil && lip != nil {
		sameHost = ip.Equal(lip)
	}
	if membership.WildcardHost(grpcAddr) {
		sameHost = true
	}
	if sameHost && port == lport {
		return nil
	}
	return fmt.Errorf("grpc-addr %s differs from %s's address %s in initial-cluster: peers dial the initial-cluster address, so make the two the same", grpcAddr, id, listed)
}

// MinTombstoneGrace is the shortest positive tombstone-grace
// CheckOperator accepts: well past the longest a request (and its replica
// writes) may run.
const MinTombstoneGrace = time.Minute

// CheckOperator refuses, beyond Validate, settings that are valid for a
// node a program runs (tests shorten waits with them) but a mistake in an
// operator's configuration: a tombstone-grace under MinTombstoneGrace.
func (c Config) CheckOperator() error {
	if c.TombstoneGrace > 0 && c.TombstoneGrace < MinTombstoneGrace {
		return fmt.Errorf("tombstone-grace %s: use at least %s (a replica write still in flight when a tombstone is collected brings the deleted value back), or a negative value to keep tombstones", c.TombstoneGrace, MinTombstoneGrace)
	}
	return nil
}

// ParseInitialCluster parses "ID=HOST:PORT[/DC[/RACK[/WEIGHT]]]" entries
// separated by commas. DC defaults to "dc1", rack to "rack1", weight to 1.
func ParseInitialCluster(s string) ([]membership.NodeInfo, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("initial-cluster is empty: list every node as ID=HOST:PORT[/DC[/RACK[/WEIGHT]]], comma-separated")
	}
	var out []membership.NodeInfo
	seen, addrs := map[string]bool{}, map[string]string{}
	for _, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		id, rest, ok := strings.Cut(entry, "=")
		if !ok || id == "" || rest == "" {
			return nil, fmt.Errorf("initial-cluster entry %q: want ID=HOST:PORT[/DC[/RACK[/WEIGHT]]]", entry)
		}
		if seen[id] {
			return nil, fmt.Errorf("initial-cluster lists node %q twice", id)
		}
		seen[id] = true
		if err := (Config{ID: id}).validID(); err != nil {
			return nil, fmt.Errorf("initial-cluster entry %q: %w", entry, err)
		}
		parts := strings.Split(rest, "/")
		if len(parts) > 4 {
			return nil, fmt.Errorf("initial-cluster entry %q: too many '/' parts", entry)
		}
		if _, _, err := net.SplitHostPort(parts[0]); err != nil {
			return nil, fmt.Errorf("initial-cluster entry %q: address %q is not host:port", entry, parts[0])
		}
		if addrs[parts[0]] != "" {
			return nil, fmt.Errorf("initial-cluster gives %s and %s the same address %s: each node needs its own", addrs[parts[0]], id, parts[0])
		}
		addrs[parts[0]] = id
		n := membership.NodeInfo{Node: placement.Node{ID: id, DC: "dc1", Rack: "rack1", Weight: 1}, GRPCAddr: parts[0]}
		if len(parts) > 1 && parts[1] != "" {
			n.DC = parts[1]
		}
		if len(parts) > 2 && parts[2] != "" {
			n.Rack = parts[2]
		}
		if len(parts) > 3 {
			w, err := strconv.Atoi(parts[3])
			if err != nil || w < 1 || w > 1000 {
				return nil, fmt.Errorf("initial-cluster entry %q: weight %q must be a whole number from 1 to 1000", entry, parts[3])
			}
			n.Weight = w
		}
		if err := validPlace(n.DC, n.Rack, n.Weight); err != nil {
			return nil, fmt.Errorf("initial-cluster entry %q: %w", entry, err)
		}
		out = append(out, n)
	}
	return out, nil
}

// FormatInitialCluster renders members back into the flag syntax.
func FormatInitialCluster(ms []membership.NodeInfo) string {
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = fmt.Sprintf("%s=%s/%s/%s/%d", m.ID, m.GRPCAddr, m.DC, m.Rack, m.Weight)
	}
	return strings.Join(parts, ",")
}

// DefaultClientCallReplyBytes is Config.ClientCallReplyBytes's default,
// and PeerCallReplyBytes's.
const DefaultClientCallReplyBytes = 64 << 20
