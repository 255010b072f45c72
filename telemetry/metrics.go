package telemetry

import (
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are Meridian's own Prometheus series. It implements the
// coordinator's Observer; more subsystems add their series here.
type Metrics struct {
	requests        *prometheus.CounterVec
	requestDuration *prometheus.HistogramVec
	replicaDuration *prometheus.HistogramVec
	readRepairs     prometheus.Counter
	siblings        prometheus.Histogram
	hintsStored     prometheus.Counter
	hintsDelivered  prometheus.Counter
	clockSkew       prometheus.Counter
	fastClock       prometheus.Counter
	manySiblings    prometheus.Counter
	duplicates      prometheus.Counter
	requestIDs      prometheus.Gauge
	requestIDsEarly prometheus.Counter
	shed            *prometheus.CounterVec
	walFsync        prometheus.Histogram
	// callerTracesLimited counts requests whose caller's sampled trace
	// was not followed, past trace-caller-rate.
	callerTracesLimited prometheus.Counter
	reg                 *prometheus.Registry
}

// Latency buckets from 100µs to ~10s.
var latencyBuckets = prometheus.ExponentialBuckets(0.0001, 2, 18)

func newMetrics(reg *prometheus.Registry) *Metrics {
	m := &Metrics{
		reg: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_requests_total",
			Help: "Client requests coordinated by this node, by operation, consistency level and outcome (a gRPC code).",
		}, []string{"op", "level", "outcome"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "meridian_request_duration_seconds",
			Help:    "Latency of client requests coordinated by this node.",
			Buckets: latencyBuckets,
		}, []string{"op", "level", "outcome"}),
		replicaDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "meridian_replica_rpc_duration_seconds",
			Help:    "Latency of node-to-node replica calls, by operation and the peer's datacenter.",
			Buckets: latencyBuckets,
		}, []string{"op", "peer_dc", "outcome"}),
		readRepairs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_read_repairs_total",
			Help: "Replicas brought up to date by read repair.",
		}),
		siblings: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "meridian_siblings",
			Help: "Siblings returned per read.",
			// Up to version.MaxSiblings (1,024); the default keyspace limit
			// is 100 and the warning starts at a quarter of it.
			Buckets: []float64{0, 1, 2, 3, 5, 8, 13, 25, 50, 100, 250, 500, 1024},
		}),
		hintsStored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_hints_stored_total",
			Help: "Hinted copies accepted for unreachable replicas.",
		}),
		hintsDelivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_hints_delivered_total",
			Help: "Hints delivered to their returning replica.",
		}),
		clockSkew: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_hlc_rejected_timestamps_total",
			Help: "Timestamps in data more than the maximum clock offset ahead of this node's clock, not observed by its hybrid logical clock, and versions refused by a last-writer-wins keyspace for being written more than twice that ahead (is a node's clock fast? check NTP).",
		}),
		fastClock: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_fast_clock_forwards_total",
			Help: "Last-writer-wins writes this node sent to another replica, or refused, instead of coordinating them, its clock running ahead of its peers' by more than the maximum clock offset (see meridian_clock_ahead_seconds; check NTP).",
		}),
		manySiblings: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_sibling_warnings_total",
			Help: "Writes that left a key with at least a quarter of its keyspace's sibling limit.",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_duplicate_writes_total",
			Help: "Retried writes recognised by their request ID and applied once.",
		}),
		requestIDs: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meridian_request_ids_remembered",
			Help: "Write request IDs remembered to apply retries once (at most max-request-ids).",
		}),
		requestIDsEarly: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_request_ids_evicted_early_total",
			Help: "Write request IDs forgotten before request-id-window ended, max-request-ids being reached: a retry of such a write would be applied again. Raise max-request-ids.",
		}),
		shed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_shed_total",
			Help: "Work refused by admission control: client reads and writes (RESOURCE_EXHAUSTED) and skipped read repairs.",
		}, []string{"what"}),
		walFsync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "meridian_wal_fsync_duration_seconds",
			Help:    "Duration of the storage engine's write-ahead log fsyncs: the disk's share of a durable write's latency.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 18), // 50µs to ~6.5s
		}),
		callerTracesLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_trace_caller_limited_total",
			Help: "Client and admin requests whose caller's sampled trace was not followed, trace-caller-rate being reached.",
		}),
	}
	reg.MustRegister(m.shed, m.walFsync, m.callerTracesLimited)
	reg.MustRegister(m.requests, m.requestDuration, m.replicaDuration, m.readRepairs, m.siblings, m.hintsStored, m.hintsDelivered,
		m.clockSkew, m.fastClock, m.manySiblings, m.duplicates, m.requestIDs, m.requestIDsEarly)
	return m
}

// WALSynced records one write-ahead log fsync.
func (m *Metrics) WALSynced(d time.Duration) { m.walFsync.Observe(d.Seconds()) }

// RequestDone records one client request.
func (m *Metrics) RequestDone(op, level, outcome string, d time.Duration) {
	m.requests.WithLabelValues(op, level, outcome).Inc()
	m.requestDuration.WithLabelValues(op, level, outcome).Observe(d.Seconds())
}

// ReplicaCall records one call to a peer replica.
func (m *Metrics) ReplicaCall(op, peerDC, outcome string, d time.Duration) {
	m.replicaDuration.WithLabelValues(op, peerDC, outcome).Observe(d.Seconds())
}

// ReadRepaired records n replicas repaired.
func (m *Metrics) ReadRepaired(n int) { m.readRepairs.Add(float64(n)) }

// SiblingsReturned records the siblings of one read.
func (m *Metrics) SiblingsReturned(n int) { m.siblings.Observe(float64(n)) }

// ClockSkewRejected counts a timestamp too far ahead to observe.
func (m *Metrics) ClockSkewRejected() { m.clockSkew.Inc() }

// FastClockForward counts a last-writer-wins write not coordinated here
// for this node's clock running ahead.
func (m *Metrics) FastClockForward() { m.fastClock.Inc() }

// ManySiblings counts a write that left a key with many siblings.
func (m *Metrics) ManySiblings() { m.manySiblings.Inc() }

// DuplicateWrite counts a retried write applied once.
func (m *Metrics) DuplicateWrite() { m.duplicates.Inc() }

// RequestIDs sets how many write request IDs are remembered, and counts
// one forgotten within its window.
func (m *Metrics) RequestIDs(n int, evictedEarly bool) {
	m.requestIDs.Set(float64(n))
	if evictedEarly {
		m.requestIDsEarly.Inc()
	}
}

// Shed counts work refused by admission control.
func (m *Metrics) Shed(what string) { m.shed.WithLabelValues(what).Inc() }

// HintStored records a hint accepted.
func (m *Metrics) HintStored() { m.hintsStored.Inc() }

// HintsDelivered records delivered hints.
func (m *Metrics) HintsDelivered(n int) { m.hintsDelivered.Add(float64(n)) }

// RegisterEngine exports an engine's own statistics (Pebble: compactions,
// L0 files, WAL bytes, cache hits...) as meridian_engine_<name>.
func (m *Metrics) RegisterEngine(stats func() map[string]float64) error {
	return m.reg.Register(&engineCollector{stats: stats})
}

type engineCollector struct{ stats func() map[string]float64 }

func (c *engineCollector) Describe(chan<- *prometheus.Desc) {} // unchecked: names come from the engine

func (c *engineCollector) Collect(ch chan<- prometheus.Metric) {
	stats := c.stats()
	names := make([]string, 0, len(stats))
	for k := range stats {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, name := range names {
		typ := prometheus.GaugeValue
		if len(name) > 6 && name[len(name)-6:] == "_total" {
			typ = prometheus.CounterValue
		}
		desc := prometheus.NewDesc("meridian_engine_"+name, "Storage engine statistic "+name+".", nil, nil)
		ch <- prometheus.MustNewConstMetric(desc, typ, stats[name])
	}
}

// RegisterDisk exports the data volume's free and total bytes and
// whether the node refuses writes for lack of space.
func (m *Metrics) RegisterDisk(free, total, low func() float64) error {
	for _, c := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meridian_disk_free_bytes", Help: "Free bytes on the volume of the node's data directory."}, free),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meridian_disk_total_bytes", Help: "Size of the volume of the node's data directory."}, total),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meridian_disk_writes_refused", Help: "1 while the node refuses writes of data because free disk space is under min-free-disk."}, low),
	} {
		if err := m.reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// RegisterMembers exports gossip members by state as
// meridian_gossip_members{state}.
func (m *Metrics) RegisterMembers(count func() map[string]int) error {
	return m.reg.Register(&membersCollector{count: count})
}

type membersCollector struct{ count func() map[string]int }

var membersDesc = prometheus.NewDesc("meridian_gossip_members", "Cluster members as this node's gossip sees them, by state.", []string{"state"}, nil)

func (c *membersCollector) Describe(ch chan<- *prometheus.Desc) { ch <- membersDesc }

func (c *membersCollector) Collect(ch chan<- prometheus.Metric) {
	counts := c.count()
	for _, state := range []string{"alive", "suspect", "dead", "left"} {
		ch <- prometheus.MustNewConstMetric(membersDesc, prometheus.GaugeValue, float64(counts[state]), state)
	}
}

// RegisterGossipRefused exports the gossip messages and streams refused
// for their label as meridian_gossip_refused_total.
func (m *Metrics) RegisterGossipRefused(refused func() float64) error {
	return m.reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meridian_gossip_refused_total",
		Help: "Gossip messages and streams refused for their label (another cluster's, or another cluster name)."}, refused))
}

// RegisterConnections exports, per listener, the open connections and the
// connections refused over the cap.
func (m *Metrics) RegisterConnections(conns func() map[string][2]int64) error {
	return m.reg.Register(&connsCollector{conns: conns})
}

var (
	connsOpenDesc = prometheus.NewDesc("meridian_connections_open",
		"Open connections per listener (client, peer, admin, raft), bounded by max-connections.", []string{"listener"}, nil)
	connsRefusedDesc = prometheus.NewDesc("meridian_connections_refused_total",
		"Connections refused because the listener was at max-connections.", []string{"listener"}, nil)
)

type connsCollector struct{ conns func() map[string][2]int64 }

func (c *connsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- connsOpenDesc
	ch <- connsRefusedDesc
}

func (c *connsCollector) Collect(ch chan<- prometheus.Metric) {
	for name, v := range c.conns() {
		ch <- prometheus.MustNewConstMetric(connsOpenDesc, prometheus.GaugeValue, float64(v[0]), name)
		ch <- prometheus.MustNewConstMetric(connsRefusedDesc, prometheus.CounterValue, float64(v[1]), name)
	}
}

// RegisterPipes exports the replica call streams' queues: calls this node
// sent that wait for a reply (bounded per peer), and calls of other nodes
// running here (bounded per stream).
func (m *Metrics) RegisterPipes(waiting, running, replyBytes func() float64) error {
	for _, g := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meridian_peer_calls_waiting",
			Help: "Replica calls this node sent on its call streams that wait for a reply (at most 4,096 per peer; more go as unary calls)."}, waiting),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meridian_peer_calls_running",
			Help: "Replica calls from other nodes' call streams running on this node (at most 1,024 per stream; past it the stream stops reading)."}, running),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meridian_peer_call_reply_bytes",
			Help: "Bytes of replies on other nodes' call streams not sent yet (at most peer-call-reply-bytes, 64 MiB by default, per stream, plus the calls running; past it the stream stops reading until its peer reads)."}, replyBytes),
	} {
		if err := m.reg.Register(g); err != nil {
			return err
		}
	}
	return nil
}

// RegisterClientCalls exports the calls of clients' call streams
// (kv.v1.KV/Calls) running on this node, and the bytes of their replies
// not sent yet (both bounded per stream).
func (m *Metrics) RegisterClientCalls(running, replyBytes func() float64) error {
	for _, g := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meridian_client_calls_running",
			Help: "Calls of clients' call streams (kv.v1.KV/Calls) running on this node (at most client-calls-running, 1,024 by default, per stream; past it the stream stops reading)."}, running),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meridian_client_call_reply_bytes",
			Help: "Bytes of replies on clients' call streams not sent yet (at most client-call-reply-bytes, 64 MiB by default, per stream, plus the calls running; past it the stream stops reading until its client reads)."}, replyBytes),
	} {
		if err := m.reg.Register(g); err != nil {
			return err
		}
	}
	return nil
}

// RegisterBackground exports the coordinator's background work (replica
// writes still running after a request answered, read repairs) and the
// bytes it holds.
func (m *Metrics) RegisterBackground(work, bytes func() float64) error {
	for _, g := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meridian_background_work",
			Help: "Background work running: replica writes still running after their request answered, and read repairs (at most 4,096; past it writes are shed, read repairs skipped)."}, work),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meridian_background_bytes",
			Help: "Bytes of sibling sets held by background work (at most max-background-bytes, 256 MiB by default; past it writes are shed, read repairs skipped)."}, bytes),
	} {
		if err := m.reg.Register(g); err != nil {
			return err
		}
	}
	return nil
}

// RegisterReadBytes exports the bytes of replica replies held by the
// reads a node coordinates.
func (m *Metrics) RegisterReadBytes(bytes func() float64) error {
	return m.reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meridian_read_bytes",
		Help: "Bytes of replica replies held by the reads this node coordinates (past max-read-bytes, 256 MiB by default, new reads are shed)."}, bytes))
}

// RegisterRepairRuns exports the full repairs running.
func (m *Metrics) RegisterRepairRuns(running func() float64) error {
	return m.reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meridian_repair_runs_running",
		Help: "Full repairs ('meridian repair run') running on this node (at most repair-runs, 2 by default; more are refused)."}, running))
}

// RegisterClockAhead exports how far this node's clock runs ahead of its
// peers' (gossip's estimate) and from how many peers.
func (m *Metrics) RegisterClockAhead(ahead func() (time.Duration, int)) error {
	return m.reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meridian_clock_ahead_seconds",
		Help: "How far this node's clock runs ahead of its peers' (negative: behind), estimated from gossip pings as the lower median over the peers, each within half a round trip; 0 before any peer answered. Over the maximum clock offset (0.5 s), the node coordinates no last-writer-wins write."},
		func() float64 { d, _ := ahead(); return d.Seconds() }))
}

// HintTargetStats is the hint log's state for one target node.
type HintTargetStats struct {
	Target      string
	Count       int64
	Bytes       int64
	OldestAge   time.Duration
	Quarantined int64
	// Refused: hints the last delivery pass left because the target
	// refused them.
	Refused int64
}

// HintStats is the hint log's state, read at each scrape.
type HintStats struct {
	Targets []HintTargetStats
	// Dropped counts hints not stored or dropped undelivered, by reason.
	Dropped map[string]uint64
}

// RegisterHints exports the hint log: per target the hints held, their
// bytes, the oldest one's age, the quarantined ones and those the target
// refused; and the hints dropped by reason.
func (m *Metrics) RegisterHints(stats func() HintStats) error {
	return m.reg.Register(&hintsCollector{stats: stats})
}

var (
	hintCountDesc = prometheus.NewDesc("meridian_hints_held",
		"Hints held for a target node.", []string{"target"}, nil)
	hintBytesDesc = prometheus.NewDesc("meridian_hints_held_bytes",
		"Bytes of the hints held for a target node (bounded by max-hint-bytes).", []string{"target"}, nil)
	hintAgeDesc = prometheus.NewDesc("meridian_hints_oldest_age_seconds",
		"Age of the oldest hint held for a target node (bounded by hint-window).", []string{"target"}, nil)
	hintQuarantinedDesc = prometheus.NewDesc("meridian_hints_quarantined",
		"Hints for a target node that did not decode and were set aside.", []string{"target"}, nil)
	hintRefusedDesc = prometheus.NewDesc("meridian_hints_refused",
		"Hints for a target node that it refused in the last delivery pass (kept until taken or expired; see the node's warning log for why).", []string{"target"}, nil)
	hintDroppedDesc = prometheus.NewDesc("meridian_hints_dropped_total",
		"Hints not stored or dropped undelivered, by reason (off, bytes, count, window, expired, non-member, purged, limit, keyspace, aged).", []string{"reason"}, nil)
)

type hintsCollector struct{ stats func() HintStats }

func (c *hintsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- hintCountDesc
	ch <- hintBytesDesc
	ch <- hintAgeDesc
	ch <- hintQuarantinedDesc
	ch <- hintRefusedDesc
	ch <- hintDroppedDesc
}

func (c *hintsCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	for _, t := range s.Targets {
		ch <- prometheus.MustNewConstMetric(hintCountDesc, prometheus.GaugeValue, float64(t.Count), t.Target)
		ch <- prometheus.MustNewConstMetric(hintBytesDesc, prometheus.GaugeValue, float64(t.Bytes), t.Target)
		ch <- prometheus.MustNewConstMetric(hintAgeDesc, prometheus.GaugeValue, t.OldestAge.Seconds(), t.Target)
		ch <- prometheus.MustNewConstMetric(hintQuarantinedDesc, prometheus.GaugeValue, float64(t.Quarantined), t.Target)
		ch <- prometheus.MustNewConstMetric(hintRefusedDesc, prometheus.GaugeValue, float64(t.Refused), t.Target)
	}
	for reason, n := range s.Dropped {
		ch <- prometheus.MustNewConstMetric(hintDroppedDesc, prometheus.CounterValue, float64(n), reason)
	}
}

// SnapshotStats is what a node's snapshot schedule has done since it
// started, read at each scrape.
type SnapshotStats struct {
	Taken, Failed, Skipped, Pruned uint64
	// LastTaken is when the last scheduled snapshot was taken (the Unix
	// epoch: none yet).
	LastTaken time.Time
	// Reads are the snapshot downloads being served; ReadsRefused those
	// refused over snapshot-reads; ReadBytes the bytes served.
	Reads                   int64
	ReadsRefused, ReadBytes uint64
}

// RegisterSnapshots exports the snapshot schedule: snapshots taken, failed,
// skipped and pruned, and when the last one was taken.
func (m *Metrics) RegisterSnapshots(stats func() SnapshotStats) error {
	return m.reg.Register(&snapshotsCollector{stats: stats})
}

var (
	snapshotsDesc = prometheus.NewDesc("meridian_snapshots_scheduled_total",
		"Scheduled snapshots by outcome (taken, failed, skipped: low on disk or already taken; pruned: deleted past snapshot-keep).", []string{"outcome"}, nil)
	snapshotLastDesc = prometheus.NewDesc("meridian_snapshot_last_scheduled_timestamp_seconds",
		"Unix time of the last scheduled snapshot taken (0: none since the node started).", nil, nil)
	snapshotReadsDesc = prometheus.NewDesc("meridian_snapshot_reads_running",
		"Snapshot downloads this node is serving (at most snapshot-reads).", nil, nil)
	snapshotReadsRefusedDesc = prometheus.NewDesc("meridian_snapshot_reads_refused_total",
		"Snapshot downloads refused because snapshot-reads were running already.", nil, nil)
	snapshotReadBytesDesc = prometheus.NewDesc("meridian_snapshot_read_bytes_total",
		"Bytes of snapshot files this node sent to downloads.", nil, nil)
)

type snapshotsCollector struct{ stats func() SnapshotStats }

func (c *snapshotsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- snapshotsDesc
	ch <- snapshotLastDesc
	ch <- snapshotReadsDesc
	ch <- snapshotReadsRefusedDesc
	ch <- snapshotReadBytesDesc
}

func (c *snapshotsCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	for outcome, n := range map[string]uint64{"taken": s.Taken, "failed": s.Failed, "skipped": s.Skipped, "pruned": s.Pruned} {
		ch <- prometheus.MustNewConstMetric(snapshotsDesc, prometheus.CounterValue, float64(n), outcome)
	}
	ch <- prometheus.MustNewConstMetric(snapshotLastDesc, prometheus.GaugeValue, float64(s.LastTaken.Unix()))
	ch <- prometheus.MustNewConstMetric(snapshotReadsDesc, prometheus.GaugeValue, float64(s.Reads))
	ch <- prometheus.MustNewConstMetric(snapshotReadsRefusedDesc, prometheus.CounterValue, float64(s.ReadsRefused))
	ch <- prometheus.MustNewConstMetric(snapshotReadBytesDesc, prometheus.CounterValue, float64(s.ReadBytes))
}

// MetaLogStats is the cluster metadata log's state on this node, read at
// each scrape.
type MetaLogStats struct {
	Leader                                     bool
	Term, LastIndex, CommitIndex, AppliedIndex uint64
	// Epoch is the applied metadata epoch (the topology routed by).
	Epoch uint64
	// SinceContact is how long ago this node last heard from the leader
	// (0 on the leader; negative: never).
	SinceContact time.Duration
}

// RegisterMetaLog exports the metadata log: leadership, term, log indexes,
// applied epoch and the time since the leader was last heard from.
func (m *Metrics) RegisterMetaLog(stats func() MetaLogStats) error {
	return m.reg.Register(&metaLogCollector{stats: stats})
}

var (
	metaLeaderDesc  = prometheus.NewDesc("meridian_meta_leader", "1 when this node leads the cluster metadata log (Raft), else 0.", nil, nil)
	metaTermDesc    = prometheus.NewDesc("meridian_meta_term", "Current Raft term of the metadata log: it rises with every election.", nil, nil)
	metaIndexDesc   = prometheus.NewDesc("meridian_meta_index", "Metadata log index on this node, by kind: last (stored), commit, applied.", []string{"kind"}, nil)
	metaEpochDesc   = prometheus.NewDesc("meridian_meta_epoch", "Cluster metadata epoch this node has applied (every node should agree within seconds).", nil, nil)
	metaContactDesc = prometheus.NewDesc("meridian_meta_leader_contact_age_seconds", "Seconds since this node last heard from the metadata log's leader (0 on the leader; -1 never).", nil, nil)
)

type metaLogCollector struct{ stats func() MetaLogStats }

func (c *metaLogCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{metaLeaderDesc, metaTermDesc, metaIndexDesc, metaEpochDesc, metaContactDesc} {
		ch <- d
	}
}

func (c *metaLogCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	leader := 0.0
	if s.Leader {
		leader = 1
	}
	ch <- prometheus.MustNewConstMetric(metaLeaderDesc, prometheus.GaugeValue, leader)
	ch <- prometheus.MustNewConstMetric(metaTermDesc, prometheus.GaugeValue, float64(s.Term))
	ch <- prometheus.MustNewConstMetric(metaIndexDesc, prometheus.GaugeValue, float64(s.LastIndex), "last")
	ch <- prometheus.MustNewConstMetric(metaIndexDesc, prometheus.GaugeValue, float64(s.CommitIndex), "commit")
	ch <- prometheus.MustNewConstMetric(metaIndexDesc, prometheus.GaugeValue, float64(s.AppliedIndex), "applied")
	ch <- prometheus.MustNewConstMetric(metaEpochDesc, prometheus.GaugeValue, float64(s.Epoch))
	contact := s.SinceContact.Seconds()
	if s.SinceContact < 0 {
		contact = -1
	}
	ch <- prometheus.MustNewConstMetric(metaContactDesc, prometheus.GaugeValue, contact)
}
