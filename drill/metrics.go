package drill

import (
	"math"
	"slices"
	"sort"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Consistency levels the drill measures.
const (
	LocalQuorum = "LOCAL_QUORUM"
	Quorum      = "QUORUM"
	EachQuorum  = "EACH_QUORUM"
)

// Levels lists the measured levels in the order reports show them.
var Levels = []string{LocalQuorum, Quorum, EachQuorum}

// Operation kinds of a sample.
const (
	OpRead  = "read"
	OpWrite = "write"
	// OpSet is one read-modify-write of the set workload (a read and a
	// write with its context, counted as one operation).
	OpSet = "set"
)

// CodeOK is the code of a sample that succeeded; failures carry their gRPC
// code name (UNAVAILABLE, DEADLINE_EXCEEDED, ...).
const CodeOK = "OK"

// HealthyRatio is the availability a level needs over a one-second window
// for that window to count as healthy.
const HealthyRatio = 0.99

// StableWindows is how many healthy seconds in a row, to the end of the
// drill, make a recovery: one good second between failures is not one.
const StableWindows = 3

// AllDCs is the DC key of a series or summary over every client DC.
const AllDCs = "all"

// Sample is one client operation of the workload.
type Sample struct {
	// At is when the operation was due to start (open-loop pacing), as an
	// offset from the drill's start; it places the sample in its second.
	At time.Duration
	// DC is the datacenter of the client that sent it.
	DC    string
	Level string
	Op    string
	// Latency is from At until the answer (so a stalled client shows).
	Latency time.Duration
	// Code is CodeOK or the gRPC code name of the failure.
	Code string
}

// HintSample is the hints every node holds for one target, at one poll.
type HintSample struct {
	At     time.Duration
	Target string
	Count  uint64
}

// RepairPoint is the progress of a convergence round at one moment,
// summed over the nodes running it.
type RepairPoint struct {
	At         time.Duration
	Round      int
	Done       int
	Total      int
	Mismatches uint64
}

// NodeRepair is one node's full Merkle exchange in a round.
type NodeRepair struct {
	Node         string `json:"node"`
	Partitions   int    `json:"partitions"`
	Mismatches   uint64 `json:"mismatches"`
	KeysRepaired uint64 `json:"keys_repaired"`
	// Err is why the run did not finish ("" if it did).
	Err string `json:"error,omitempty"`
}

// RepairRound is one convergence check: a full exchange on every node.
type RepairRound struct {
	Round int           `json:"round"`
	Start time.Duration `json:"-"`
	End   time.Duration `json:"-"`
	Nodes []NodeRepair  `json:"nodes"`
}

// Clean reports whether every one of the nodes finished its run and found
// no mismatch: every replica of every partition was verified equal.
func (r RepairRound) Clean(nodes []string) bool {
	for _, id := range nodes {
		i := slices.IndexFunc(r.Nodes, func(n NodeRepair) bool { return n.Node == id })
		if i < 0 || r.Nodes[i].Err != "" || r.Nodes[i].Mismatches != 0 {
			return false
		}
	}
	return true
}

// SetCheck is the end-of-drill check of the set workload: every element
// whose read-modify-write was acknowledged must be in the set.
type SetCheck struct {
	// Checked is false when the final reads could not be made (Error
	// says why): nothing is known about losses.
	Checked bool   `json:"checked"`
	Error   string `json:"error,omitempty"`
	Keys    int    `json:"keys"`
	// Node is the node the scenario acts on ("" for the others), and
	// NodeKeys how many of the Keys checked it replicates: with none, the
	// check would say nothing about the writes the node missed (the
	// drill chooses its sets so that some live there).
	Node     string `json:"node,omitempty"`
	NodeKeys int    `json:"node_keys"`
	// Acked elements over every key; Lost of them are missing from the
	// read at ALL (LostExamples lists a few).
	Acked        int      `json:"acked"`
	Lost         int      `json:"lost"`
	LostExamples []string `json:"lost_examples,omitempty"`
	// Replicas maps each replica read to the acknowledged elements its
	// own copy lacks (over every key it replicates).
	Replicas map[string]int `json:"replicas_missing"`
	// ReplicaErrors maps a replica that could not be read to why.
	ReplicaErrors map[string]string `json:"replica_errors,omitempty"`
}

// ReplicaMissing sums the elements missing from replicas' own copies.
func (c SetCheck) ReplicaMissing() int {
	n := 0
	for _, m := range c.Replicas {
		n += m
	}
	return n
}

// Input is everything a drill recorded, for Analyze.
type Input struct {
	Scenario Scenario
	Topology Topology
	Timeline Timeline
	Samples  []Sample
	Hints    []HintSample
	Repair   []RepairPoint
	Rounds   []RepairRound
	Set      SetCheck
	// ProbeTimeout is the deadline of every probe (EACH_QUORUM must fail
	// before it).
	ProbeTimeout time.Duration
	// LoadEnd is when the workload stopped (zero: at the timeline's
	// end). The drill stops it once every level is healthy again, so that
	// the last repair rounds compare replicas no write is racing; health
	// is judged up to it.
	LoadEnd time.Duration
	// Quiet is when the workload's last operation had ended (zero:
	// LoadEnd): a repair round that began before it may have missed the
	// last writes, and proves no convergence.
	Quiet time.Duration
	// ErrorExamples are the first error messages per "LEVEL CODE".
	ErrorExamples map[string][]string
}

// Counts is how many operations started in a window, and how many of
// them succeeded.
type Counts struct {
	Total int `json:"total"`
	OK    int `json:"ok"`
}

// Ratio is OK/Total, or -1 when nothing started.
func (c Counts) Ratio() float64 {
	if c.Total == 0 {
		return -1
	}
	return float64(c.OK) / float64(c.Total)
}

// healthy needs operations: a second with none due is no evidence that
// a level works. Open-loop pacing records every operation due (a failure
// too), and Config.Validate keeps every level at one or more per second,
// so only a second the workload did not run in has none.
func (c Counts) healthy() bool { return c.Total > 0 && c.Ratio() >= HealthyRatio }

func (c *Counts) add(s Sample) {
	c.Total++
	if s.Code == CodeOK {
		c.OK++
	}
}

// seriesKey names a level in one client DC, or in all (AllDCs).
type seriesKey struct{ level, dc string }

// windows is the number of one-second windows up to end (the last one
// may be partial) and the number of complete ones.
func windows(end time.Duration) (all, complete int) {
	complete = int(end / time.Second)
	all = complete
	if end%time.Second != 0 {
		all++
	}
	return all, complete
}

func window(at time.Duration) int { return int(at / time.Second) }

// availability counts samples per second for every level and DC (and
// AllDCs).
func availability(samples []Sample, n int) map[seriesKey][]Counts {
	out := map[seriesKey][]Counts{}
	get := func(k seriesKey) []Counts {
		if out[k] == nil {
			out[k] = make([]Counts, n)
		}
		return out[k]
	}
	for _, s := range samples {
		w := window(s.At)
		if w < 0 || w >= n {
			continue
		}
		get(seriesKey{s.Level, s.DC})[w].add(s)
		get(seriesKey{s.Level, AllDCs})[w].add(s)
	}
	return out
}

// healthyWindows reports, for each complete window, whether every level
// in levels was healthy (over all client DCs).
func healthyWindows(av map[seriesKey][]Counts, levels []string, complete int) []bool {
	out := make([]bool, complete)
	for i := range out {
		out[i] = true
		for _, l := range levels {
			c := av[seriesKey{l, AllDCs}]
			if c == nil || i >= len(c) || !c[i].healthy() {
				out[i] = false
				break
			}
		}
	}
	return out
}

// Recovery is when every expected level was healthy again.
type Recovery struct {
	// Recovered is false when the drill ended before StableWindows
	// healthy seconds in a row followed the last unhealthy one.
	Recovered bool
	// RTO is from the fault to the start of the first second from which
	// every level stayed healthy (0: no second after the fault was
	// unhealthy).
	RTO time.Duration
	// At is that second's start, as an offset from the drill's start.
	At time.Duration
}

// recovery computes the RTO from per-second health: the first second
// after which no window is unhealthy, provided at least StableWindows
// healthy seconds follow it.
func recovery(healthy []bool, faultAt time.Duration) Recovery {
	first := window(faultAt)
	if first >= len(healthy) {
		return Recovery{}
	}
	last := -1
	for i := first; i < len(healthy); i++ {
		if !healthy[i] {
			last = i
		}
	}
	if last < 0 {
		return Recovery{Recovered: true, At: faultAt}
	}
	r := last + 1
	if len(healthy)-r < StableWindows {
		return Recovery{}
	}
	at := time.Duration(r) * time.Second
	return Recovery{Recovered: true, RTO: at - faultAt, At: at}
}

// Recovered reports whether the samples show every level healthy again
// after the fault, judged as the report judges it, over the complete
// seconds up to upTo.
func Recovered(samples []Sample, levels []string, faultAt, upTo time.Duration) bool {
	_, complete := windows(upTo)
	return recovery(healthyWindows(availability(samples, complete), levels, complete), faultAt).Recovered
}

// StableSince reports whether the last StableWindows complete seconds
// before upTo (an offset) were healthy at every level in levels — the
// shell's test for "recovered" while verify runs.
func StableSince(samples []Sample, levels []string, upTo time.Duration) bool {
	_, complete := windows(upTo)
	if complete < StableWindows {
		return false
	}
	av := availability(samples, complete)
	h := healthyWindows(av, levels, complete)
	for _, ok := range h[complete-StableWindows:] {
		if !ok {
			return false
		}
	}
	return true
}

// ProbeOutcome summarises probes of one level due in one phase (a
// success that ended after the phase is left out: it was served by the
// next one).
type ProbeOutcome struct {
	Count     int            `json:"count"`
	Succeeded int            `json:"succeeded"`
	ByCode    map[string]int `json:"by_code"`
	// MaxLatency over every probe (failed or not).
	MaxLatency time.Duration `json:"-"`
}

func probeOutcome(samples []Sample, level string, span Span) ProbeOutcome {
	out := ProbeOutcome{ByCode: map[string]int{}}
	for _, s := range samples {
		if s.Level != level || s.At < span.Start || s.At >= span.End {
			continue
		}
		if s.Code == CodeOK && s.At+s.Latency > span.End {
			// It succeeded after the span ended: served by the next
			// phase (a probe due just before the heal), not this one.
			continue
		}
		out.Count++
		out.ByCode[s.Code]++
		if s.Code == CodeOK {
			out.Succeeded++
		}
		out.MaxLatency = max(out.MaxLatency, s.Latency)
	}
	return out
}

// newHist makes a latency histogram in microseconds, up to a minute.
func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(1, 60_000_000, 3) }

func usToMs(us int64) float64 { return float64(us) / 1000 }

// latencyPerSecond returns, per DC, the p50 and p99 (ms) of successful
// LOCAL_QUORUM operations started in each second (-1: none).
func latencyPerSecond(samples []Sample, dcs []string, n int) map[string][2][]float64 {
	hists := map[string][]*hdrhistogram.Histogram{}
	for _, s := range samples {
		w := window(s.At)
		if s.Level != LocalQuorum || s.Code != CodeOK || w < 0 || w >= n {
			continue
		}
		hs := hists[s.DC]
		if hs == nil {
			hs = make([]*hdrhistogram.Histogram, n)
			hists[s.DC] = hs
		}
		if hs[w] == nil {
			hs[w] = newHist()
		}
		_ = hs[w].RecordValue(max(1, s.Latency.Microseconds()))
	}
	out := map[string][2][]float64{}
	for _, dc := range dcs {
		p50, p99 := make([]float64, n), make([]float64, n)
		for i := range n {
			p50[i], p99[i] = -1, -1
			if hs := hists[dc]; hs != nil && hs[i] != nil {
				p50[i], p99[i] = usToMs(hs[i].ValueAtQuantile(50)), usToMs(hs[i].ValueAtQuantile(99))
			}
		}
		out[dc] = [2][]float64{p50, p99}
	}
	return out
}

// phaseLatency is the latency of successful operations of one level from
// one client DC (or AllDCs) in a span.
func phaseLatency(samples []Sample, level, dc string, span Span) (p50, p99, maxMs float64, n int64) {
	h := newHist()
	for _, s := range samples {
		if s.Level != level || s.Code != CodeOK || (dc != AllDCs && s.DC != dc) || s.At < span.Start || s.At >= span.End {
			continue
		}
		_ = h.RecordValue(max(1, s.Latency.Microseconds()))
	}
	if h.TotalCount() == 0 {
		return -1, -1, -1, 0
	}
	return usToMs(h.ValueAtQuantile(50)), usToMs(h.ValueAtQuantile(99)), usToMs(h.Max()), h.TotalCount()
}

// hintSeries is, per target that ever had hints, the largest backlog
// seen in each second (-1: no poll answered in that second), and the
// peak.
func hintSeries(hints []HintSample, n int) (map[string][]float64, map[string]uint64) {
	series, peak := map[string][]float64{}, map[string]uint64{}
	for _, h := range hints {
		w := window(h.At)
		if w < 0 || w >= n {
			continue
		}
		s := series[h.Target]
		if s == nil {
			s = make([]float64, n)
			for i := range s {
				s[i] = -1
			}
			series[h.Target] = s
		}
		s[w] = math.Max(s[w], float64(h.Count))
		peak[h.Target] = max(peak[h.Target], h.Count)
	}
	for t, p := range peak {
		if p == 0 {
			delete(series, t)
			delete(peak, t)
		}
	}
	return series, peak
}

// Analyze turns what a drill recorded into its report (without verdicts:
// see Evaluate).
func Analyze(in Input) *Report {
	end := in.Timeline.End()
	n, _ := windows(end)
	loadEnd := in.LoadEnd
	if loadEnd <= 0 || loadEnd > end {
		loadEnd = end
	}
	_, complete := windows(loadEnd)
	dcs := in.Topology.DCs()
	r := &Report{
		Scenario:   in.Scenario,
		Topology:   in.Topology,
		HealthyDCs: in.Scenario.HealthyDCs(in.Topology),
		Seconds:    n,
		EndS:       secs(end),
		LoadEndS:   secs(loadEnd),
	}
	for _, sp := range in.Timeline.Spans {
		r.Phases = append(r.Phases, PhaseSpan{Phase: sp.Phase, StartS: secs(sp.Start), EndS: secs(sp.End)})
	}
	faultAt, faulted := in.Timeline.FaultAt()
	healedAt, healed := in.Timeline.HealedAt()
	if faulted {
		r.FaultAtS = ptr(secs(faultAt))
	}
	if healed {
		r.HealedAtS = ptr(secs(healedAt))
	}

	av := availability(in.Samples, n)
	keys := make([]seriesKey, 0, len(av))
	for k := range av {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if li, lj := slices.Index(Levels, keys[i].level), slices.Index(Levels, keys[j].level); li != lj {
			return li < lj
		}
		return dcLess(keys[i].dc, keys[j].dc, dcs)
	})
	for _, k := range keys {
		vals := make([]float64, n)
		for i, c := range av[k] {
			vals[i] = round4(c.Ratio())
		}
		r.Availability = append(r.Availability, AvailabilitySeries{Level: k.level, DC: k.dc, Values: vals})
	}

	lat := latencyPerSecond(in.Samples, dcs, n)
	for _, dc := range dcs {
		r.Latency = append(r.Latency, LatencySeries{DC: dc, P50Ms: roundAll(lat[dc][0]), P99Ms: roundAll(lat[dc][1])})
	}

	hs, peak := hintSeries(in.Hints, n)
	targets := make([]string, 0, len(hs))
	for t := range hs {
		targets = append(targets, t)
	}
	sort.Slice(targets, func(i, j int) bool { return idLess(targets[i], targets[j]) })
	for _, t := range targets {
		r.Hints = append(r.Hints, HintSeries{Target: t, Values: hs[t], Peak: peak[t]})
	}

	for _, p := range in.Repair {
		r.Repair = append(r.Repair, RepairSample{AtS: secs(p.At), Round: p.Round, Done: p.Done, Total: p.Total, Mismatches: p.Mismatches})
	}
	var ids []string
	for _, node := range in.Topology.Nodes {
		ids = append(ids, node.ID)
	}
	for _, rd := range in.Rounds {
		clean := rd.Clean(ids)
		r.Rounds = append(r.Rounds, RoundReport{Round: rd.Round, StartS: secs(rd.Start), EndS: secs(rd.End), Clean: clean, Nodes: rd.Nodes})
		// Convergence is proven by a clean round on a quiet cluster: one
		// that began before the workload stopped missed its last writes.
		if clean && healed && rd.Start >= max(in.LoadEnd, in.Quiet) && r.Summary.ConvergeS == nil {
			r.Summary.ConvergeS = ptr(secs(max(0, rd.End-healedAt)))
		}
	}

	// Summaries per phase.
	phases := append([]Span{{Phase: "all", Start: 0, End: end + 1}}, in.Timeline.Spans...)
	for _, l := range Levels {
		for _, dc := range append([]string{AllDCs}, dcs...) {
			c := av[seriesKey{l, dc}]
			if c == nil {
				continue
			}
			for _, sp := range phases {
				var sum Counts
				var failures map[string]int
				for _, s := range in.Samples {
					if s.Level == l && (dc == AllDCs || s.DC == dc) && s.At >= sp.Start && s.At < sp.End {
						sum.add(s)
						if s.Code != CodeOK {
							if failures == nil {
								failures = map[string]int{}
							}
							failures[s.Code]++
						}
					}
				}
				if sum.Total == 0 && sp.Phase != "all" {
					continue
				}
				r.Summary.Availability = append(r.Summary.Availability, PhaseAvailability{
					Level: l, DC: dc, Phase: sp.Phase, Total: sum.Total, OK: sum.OK, Percent: round4(100 * sum.Ratio()), Failures: failures})
			}
		}
	}
	// Latency: LOCAL_QUORUM per client DC, the probes over all of them.
	type ld struct{ level, dc string }
	var lds []ld
	for _, dc := range dcs {
		lds = append(lds, ld{LocalQuorum, dc})
	}
	lds = append(lds, ld{Quorum, AllDCs}, ld{EachQuorum, AllDCs})
	for _, x := range lds {
		for _, sp := range phases {
			p50, p99, mx, cnt := phaseLatency(in.Samples, x.level, x.dc, sp)
			if cnt == 0 {
				continue
			}
			r.Summary.Latency = append(r.Summary.Latency, PhaseLatency{Level: x.level, DC: x.dc, Phase: sp.Phase, Count: cnt, P50Ms: p50, P99Ms: p99, MaxMs: mx})
		}
	}

	if faulted {
		rec := recovery(healthyWindows(av, in.Scenario.ExpectedAfterHeal(), complete), faultAt)
		if rec.Recovered {
			r.Summary.RTOS = ptr(secs(rec.RTO))
			if healed && rec.RTO > 0 {
				r.Summary.RecoveredAfterHealS = ptr(secs(rec.At - healedAt))
			}
		}
	}
	if hold, ok := in.Timeline.Span(Hold); ok {
		po := probeOutcome(in.Samples, EachQuorum, hold)
		r.Summary.EachQuorumHold = &ProbeSummary{Count: po.Count, Succeeded: po.Succeeded, ByCode: po.ByCode,
			MaxLatencyMs: round4(float64(po.MaxLatency) / float64(time.Millisecond)), DeadlineMs: float64(in.ProbeTimeout / time.Millisecond)}
	}
	r.Summary.Writes = in.Set
	r.ErrorExamples = in.ErrorExamples
	return r
}

func ptr[T any](v T) *T { return &v }

func secs(d time.Duration) float64 { return round4(d.Seconds()) }

// round4 keeps four decimals (reports stay readable and stable).
func round4(v float64) float64 { return math.Round(v*1e4) / 1e4 }

func roundAll(vs []float64) []float64 {
	for i, v := range vs {
		vs[i] = round4(v)
	}
	return vs
}

// dcLess orders AllDCs first, then the cluster's DC order.
func dcLess(a, b string, dcs []string) bool {
	if a == AllDCs || b == AllDCs {
		return a == AllDCs && b != AllDCs
	}
	return slices.Index(dcs, a) < slices.Index(dcs, b)
}

// idLess orders node IDs like n2 < n10.
func idLess(a, b string) bool {
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return a < b
}
