package telemetry

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// RepairMetrics are anti-entropy's series; it implements repair.Observer.
type RepairMetrics struct {
	keys       prometheus.Counter
	bytes      prometheus.Counter
	mismatches prometheus.Counter
	exchanges  prometheus.Histogram
	tombstones prometheus.Counter
}

// Repair registers anti-entropy's series; oldest reports how long ago the
// least recently verified partition was verified.
func (m *Metrics) Repair(oldest func() time.Duration) (*RepairMetrics, error) {
	r := &RepairMetrics{
		keys: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_repair_keys_total", Help: "Keys repaired by anti-entropy (pulled, pushed or both).",
		}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_repair_bytes_total", Help: "Bytes of sibling sets exchanged to repair keys.",
		}),
		mismatches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_repair_mismatches_total", Help: "Keys found different between replicas by anti-entropy.",
		}),
		exchanges: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "meridian_repair_exchange_duration_seconds", Help: "Duration of one partition's Merkle exchange with every other replica.",
			// Throttled repairs of a whole partition run for minutes: 10 ms
			// to about an hour.
			Buckets: prometheus.ExponentialBuckets(0.01, 2.5, 15),
		}),
		tombstones: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_tombstones_collected_total", Help: "Tombstones deleted after every replica was proven to hold them and their grace passed.",
		}),
	}
	oldestGauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "meridian_repair_oldest_verified_seconds",
		Help: "Seconds since the least recently verified partition this node holds was verified against every replica.",
	}, func() float64 { return oldest().Seconds() })
	for _, c := range []prometheus.Collector{r.keys, r.bytes, r.mismatches, r.exchanges, r.tombstones, oldestGauge} {
		if err := m.reg.Register(c); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Repaired counts repaired keys and bytes.
func (r *RepairMetrics) Repaired(keys, bytes int) {
	r.keys.Add(float64(keys))
	r.bytes.Add(float64(bytes))
}

// Exchanged records one partition exchange.
func (r *RepairMetrics) Exchanged(d time.Duration, mismatches int) {
	r.exchanges.Observe(d.Seconds())
	r.mismatches.Add(float64(mismatches))
}

// TombstonesCollected counts collected tombstones.
func (r *RepairMetrics) TombstonesCollected(n int) { r.tombstones.Add(float64(n)) }
