package drill

import (
	"fmt"
	"slices"
	"strings"
	"time"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
)

// Scenario names.
const (
	DCOutage       = "dc-outage"
	DCPartition    = "dc-partition"
	SlowDC         = "slow-dc"
	NodeCrash      = "node-crash"
	RollingRestart = "rolling-restart"
	DiskFull       = "disk-full"
	SlowDisk       = "slow-disk"
)

// Scenarios lists every scenario name, in the order the CLI shows them.
var Scenarios = []string{DCOutage, DCPartition, SlowDC, NodeCrash, RollingRestart, DiskFull, SlowDisk}

// Node is one member of the cluster under drill.
type Node struct {
	ID string `json:"id"`
	DC string `json:"dc"`
}

// Topology is what a scenario needs to know about the cluster: its nodes
// and the drill keyspace's replication factor per datacenter.
type Topology struct {
	Nodes []Node         `json:"nodes"`
	RF    map[string]int `json:"rf"`
}

// DCs lists the datacenters in order of first appearance.
func (t Topology) DCs() []string {
	var out []string
	for _, n := range t.Nodes {
		if !slices.Contains(out, n.DC) {
			out = append(out, n.DC)
		}
	}
	return out
}

// DCOf returns the datacenter of a node ("" if unknown).
func (t Topology) DCOf(id string) string {
	for _, n := range t.Nodes {
		if n.ID == id {
			return n.DC
		}
	}
	return ""
}

// Scenario is one drill: what fails, and its parameters.
type Scenario struct {
	// Name is one of Scenarios.
	Name string `json:"name"`
	// DC is the datacenter of dc-outage and slow-dc.
	DC string `json:"dc,omitempty"`
	// Between are the two datacenters of dc-partition.
	Between []string `json:"between,omitempty"`
	// Node is the node of node-crash, disk-full and slow-disk.
	Node string `json:"node,omitempty"`
	// Delay and Jitter are slow-dc's added latency (each call to the slow
	// DC waits Delay plus up to Jitter) and slow-disk's (each fsync of
	// the node does).
	Delay  time.Duration `json:"delay,omitempty"`
	Jitter time.Duration `json:"jitter,omitempty"`
}

// Validate checks the scenario's parameters against the cluster and says
// which flag to fix.
func (s Scenario) Validate(t Topology) error {
	dcs := t.DCs()
	knownDC := func(flag, dc string) error {
		if dc == "" {
			return fmt.Errorf("%s needs %s (one of %s)", s.Name, flag, strings.Join(dcs, ", "))
		}
		if !slices.Contains(dcs, dc) {
			return fmt.Errorf("%s %s: no such datacenter (the cluster has %s)", flag, dc, strings.Join(dcs, ", "))
		}
		return nil
	}
	switch s.Name {
	case DCOutage:
		if err := knownDC("--dc", s.DC); err != nil {
			return err
		}
		if len(dcs) < 2 {
			return fmt.Errorf("dc-outage needs at least two datacenters (the cluster has %d): use --dcs 2 or more", len(dcs))
		}
	case DCPartition:
		if len(s.Between) != 2 {
			return fmt.Errorf("dc-partition needs --between A,B (two of %s)", strings.Join(dcs, ", "))
		}
		for _, dc := range s.Between {
			if err := knownDC("--between", dc); err != nil {
				return err
			}
		}
		if s.Between[0] == s.Between[1] {
			return fmt.Errorf("--between %s,%s: name two different datacenters", s.Between[0], s.Between[1])
		}
	case SlowDC:
		if err := knownDC("--dc", s.DC); err != nil {
			return err
		}
		if len(dcs) < 2 {
			return fmt.Errorf("slow-dc needs at least two datacenters (the cluster has %d)", len(dcs))
		}
		if s.Delay <= 0 || s.Jitter < 0 {
			return fmt.Errorf("slow-dc needs --delay > 0 (e.g. 50ms) and --jitter >= 0 (got %s, %s)", s.Delay, s.Jitter)
		}
	case NodeCrash, DiskFull, SlowDisk:
		if s.Node == "" {
			return fmt.Errorf("%s needs --node ID", s.Name)
		}
		if s.Name == SlowDisk && (s.Delay <= 0 || s.Jitter < 0) {
			return fmt.Errorf("slow-disk needs --delay > 0 (e.g. 100ms) and --jitter >= 0 (got %s, %s)", s.Delay, s.Jitter)
		}
		if t.DCOf(s.Node) == "" {
			var ids []string
			for _, n := range t.Nodes {
				ids = append(ids, n.ID)
			}
			return fmt.Errorf("--node %s: no such node (the cluster has %s)", s.Node, strings.Join(ids, ", "))
		}
	case RollingRestart:
	default:
		return fmt.Errorf("unknown scenario %q: use one of %s", s.Name, strings.Join(Scenarios, ", "))
	}
	return nil
}

// NodeUnderTest is the one node the scenario acts on (node-crash, disk-full,
// slow-disk), or "" for a scenario of a datacenter or of every node.
func (s Scenario) NodeUnderTest() string {
	switch s.Name {
	case NodeCrash, DiskFull, SlowDisk:
		return s.Node
	}
	return ""
}

// NeedsProcesses reports whether the scenario kills and restarts nodes,
// which only a drill that started the nodes itself (--local) can do.
func (s Scenario) NeedsProcesses() bool { return s.Name == NodeCrash || s.Name == RollingRestart }

// Fault is the fault the scenario injects through the admin API (nil for
// scenarios that act on processes). ttl is how long the fault lives if
// nobody clears it.
func (s Scenario) Fault(t Topology, ttl time.Duration) *adminv1.Fault {
	others := func(dcs ...string) []string {
		var out []string
		for _, dc := range t.DCs() {
			if !slices.Contains(dcs, dc) {
				out = append(out, dc)
			}
		}
		return out
	}
	f := &adminv1.Fault{TtlSeconds: ttl.Seconds()}
	switch s.Name {
	case DCOutage:
		// Every other DC loses the outaged one, both ways: from the
		// others' point of view its nodes are gone, and its nodes can
		// reach nobody outside it.
		f.Kind, f.FromDcs, f.ToDcs, f.BothWays = "partition", others(s.DC), []string{s.DC}, true
	case DCPartition:
		f.Kind, f.FromDcs, f.ToDcs, f.BothWays = "partition", []string{s.Between[0]}, []string{s.Between[1]}, true
	case SlowDC:
		f.Kind, f.FromDcs, f.ToDcs = "delay", others(s.DC), []string{s.DC}
		f.DelayMs = float64(s.Delay) / float64(time.Millisecond)
		f.JitterMs = float64(s.Jitter) / float64(time.Millisecond)
	case DiskFull:
		// The node reads its volume as full: it refuses every write of
		// data (its own clients', its peers' replica writes, hints) and
		// serves reads, as under min-free-disk.
		f.Kind, f.FromNodes = "disk-full", []string{s.Node}
	case SlowDisk:
		// Every fsync of the node's engine waits: a
		// gray failure, the node up and answering, slowly where it syncs.
		f.Kind, f.FromNodes = "slow-disk", []string{s.Node}
		f.DelayMs = float64(s.Delay) / float64(time.Millisecond)
		f.JitterMs = float64(s.Jitter) / float64(time.Millisecond)
	default:
		return nil
	}
	return f
}

// localQuorumSurvivesOneDown reports whether LOCAL_QUORUM in a DC with
// replication factor rf still has a quorum with one replica down.
func localQuorumSurvivesOneDown(rf int) bool { return rf-1 >= rf/2+1 }

// HealthyDCs lists the datacenters whose clients must keep LOCAL_QUORUM
// available throughout the drill: every DC except one cut off from the
// rest (its clients would be cut off too in a real outage), and except a
// DC that loses a node when its replication factor cannot spare one.
func (s Scenario) HealthyDCs(t Topology) []string {
	var out []string
	for _, dc := range t.DCs() {
		switch s.Name {
		case DCOutage:
			if dc == s.DC {
				continue
			}
		case NodeCrash, DiskFull:
			if dc == t.DCOf(s.Node) && !localQuorumSurvivesOneDown(t.RF[dc]) {
				continue
			}
		case RollingRestart:
			if !localQuorumSurvivesOneDown(t.RF[dc]) {
				continue
			}
		}
		out = append(out, dc)
	}
	return out
}

// EachQuorumMustFail reports whether EACH_QUORUM requests must fail
// (UNAVAILABLE, within their deadline) while the fault holds: a whole
// datacenter unreachable leaves no quorum in it.
func (s Scenario) EachQuorumMustFail() bool { return s.Name == DCOutage }

// ExpectedAfterHeal lists the consistency levels that must be healthy
// again after the heal: all of them, in every scenario.
func (s Scenario) ExpectedAfterHeal() []string { return slices.Clone(Levels) }

// String describes the scenario in one line.
func (s Scenario) String() string {
	switch s.Name {
	case DCOutage:
		return fmt.Sprintf("dc-outage --dc %s: %s unreachable from every other datacenter, both ways", s.DC, s.DC)
	case DCPartition:
		return fmt.Sprintf("dc-partition --between %s: %s and %s cannot reach each other", strings.Join(s.Between, ","), s.Between[0], s.Between[1])
	case SlowDC:
		return fmt.Sprintf("slow-dc --dc %s --delay %s: calls from other datacenters to %s wait %s (+ up to %s jitter)", s.DC, s.Delay, s.DC, s.Delay, s.Jitter)
	case NodeCrash:
		return fmt.Sprintf("node-crash --node %s: kill -9, restart after the hold", s.Node)
	case RollingRestart:
		return "rolling-restart: SIGTERM and restart each node in turn, waiting for health"
	case DiskFull:
		return fmt.Sprintf("disk-full --node %s: %s reads its data volume as full, refusing writes and serving reads, until the heal", s.Node, s.Node)
	case SlowDisk:
		return fmt.Sprintf("slow-disk --node %s --delay %s: every fsync of %s waits %s (+ up to %s jitter), until the heal", s.Node, s.Delay, s.Node, s.Delay, s.Jitter)
	}
	return s.Name
}
