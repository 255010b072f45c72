package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meridiankv/meridian/engine"
	"github.com/meridiankv/meridian/transport"
)

// Fault kinds (see Fault.Kind).
const (
	FaultPartition = "partition"
	FaultDelay     = "delay"
	FaultDrop      = "drop"
	FaultSlowDisk  = "slow-disk"
	FaultDiskFull  = "disk-full"
)

// Bounds of a fault.
const (
	MaxFaultTTL   = 24 * time.Hour
	MaxFaultDelay = time.Minute
	// MaxFaults is how many faults a node holds at once.
	MaxFaults = 100
	// faultSweep is how often a node removes its expired faults.
	faultSweep = 100 * time.Millisecond
)

// Fault is one injected failure for a drill (the admin API's Fault): the
// nodes that apply it, its targets, what it does and how long it lasts.
// Each node that applies it expires it by its own clock, TTL after it
// received it, so a drill whose runner dies never leaves a cluster broken.
type Fault struct {
	// ID is the same on every node (assigned by PrepareFault).
	ID string
	// Kind is partition (calls and gossip to the targets are cut), delay
	// (calls to the targets wait Delay plus up to Jitter), drop
	// (DropPercent of calls and gossip messages to the targets are lost)
	// slow-disk (every fsync waits Delay plus up to Jitter) or disk-full
	// (the node reads its data volume as full: it refuses writes of data,
	// DISK_LOW, and serves reads).
	Kind string
	// FromNodes and FromDCs select the nodes that apply it; both empty:
	// every node.
	FromNodes, FromDCs []string
	// ToNodes and ToDCs are the targets; both empty: every other node.
	ToNodes, ToDCs []string
	// BothWays: the targets also apply it toward the applying nodes.
	BothWays      bool
	Delay, Jitter time.Duration
	DropPercent   float64
	// TTL is how long the fault lasts (required, at most MaxFaultTTL).
	TTL time.Duration
	// ExpiresIn is, on output, how long this node keeps it still.
	ExpiresIn time.Duration
}

// diskDelayer is an engine whose fsyncs can be slowed down (Pebble).
type diskDelayer interface {
	SetSyncDelay(d, jitter time.Duration)
}

// faultRegistry holds the faults this node applies, with their expiry.
type faultRegistry struct {
	now    func() time.Time
	disk   diskDelayer // nil: the engine has no slow-disk
	active *prometheus.GaugeVec
	mu     struct {
		sync.Mutex
		faults  map[string]Fault
		expires map[string]time.Time
	}
}

// newFaultRegistry remembers the engine's slow-disk knob (eng is the
// engine before Options.WrapEngine wraps it).
func newFaultRegistry(eng engine.Engine, now func() time.Time) *faultRegistry {
	r := &faultRegistry{now: now}
	r.disk, _ = eng.(diskDelayer)
	r.mu.faults = map[string]Fault{}
	r.mu.expires = map[string]time.Time{}
	r.active = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "meridian_faults_active",
		Help: "Injected faults (failover drills) this node applies, by kind.",
	}, []string{"kind"})
	for _, k := range []string{FaultPartition, FaultDelay, FaultDrop, FaultSlowDisk, FaultDiskFull} {
		r.active.WithLabelValues(k).Set(0)
	}
	return r
}

// startFaults wires the fault registry to the transport, gossip and
// metrics and starts the sweep that expires faults; it stops with ctx,
// clearing whatever is still applied.
func (n *Node) startFaults(ctx context.Context) error {
	r := n.drills
	n.faults.SetClock(r.now)
	n.gossip.SetFilter(n.faults.Drops)
	if err := n.tel.Registry.Register(r.active); err != nil {
		return fmt.Errorf("register fault metrics: %w", err)
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer n.ClearFaults("")
		t := time.NewTicker(faultSweep)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				n.expireFaults()
			}
		}
	}()
	return nil
}

func invalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}

// PrepareFault checks a fault against the cluster's nodes and DCs and
// gives it an ID if it has none: what the node that fans an injection out
// does first.
func (n *Node) PrepareFault(f Fault) (Fault, error) {
	if f.ID == "" {
		var b [6]byte
		if _, err := rand.Read(b[:]); err != nil {
			return f, status.Errorf(codes.Internal, "fault ID: %v", err)
		}
		f.ID = "f-" + hex.EncodeToString(b[:])
	}
	if err := n.checkFault(f); err != nil {
		return f, err
	}
	if from, _ := n.faultRoles(f); from && f.Kind == FaultSlowDisk && n.drills.disk == nil {
		return f, n.noSlowDisk()
	}
	if from, _ := n.faultRoles(f); from && f.Kind == FaultDiskFull && n.disk == nil {
		return f, n.noDiskFull()
	}
	return f, nil
}

func (n *Node) noDiskFull() error {
	return status.Errorf(codes.FailedPrecondition, "node %s does not watch its free disk space (the memory engine, or min-free-disk 0), so it has no disk-full fault", n.ID())
}

func (n *Node) noSlowDisk() error {
	return status.Errorf(codes.FailedPrecondition, "node %s runs the %s engine, which has no slow-disk fault (it needs pebble)", n.ID(), n.cfg.Engine)
}

// checkFault validates a fault; errors are INVALID_ARGUMENT naming the
// wrong field.
func (n *Node) checkFault(f Fault) error {
	if len(f.ID) > 64 || strings.IndexFunc(f.ID, func(r rune) bool {
		return !(r == '-' || r == '_' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
	}) >= 0 {
		return invalid("fault ID %q: use at most 64 letters, digits, '-', '_' or '.'", f.ID)
	}
	switch f.Kind {
	case FaultPartition, FaultDelay, FaultDrop, FaultSlowDisk, FaultDiskFull:
	case "":
		return invalid("fault kind is missing: use partition, delay, drop, slow-disk or disk-full")
	default:
		return invalid("fault kind %q: use partition, delay, drop, slow-disk or disk-full", f.Kind)
	}
	switch {
	case f.TTL <= 0:
		return invalid("the fault's TTL is missing: every fault expires by itself; give one of at most %v (e.g. --ttl 5m)", MaxFaultTTL)
	case f.TTL > MaxFaultTTL:
		return invalid("TTL %v is over the maximum of %v", f.TTL, MaxFaultTTL)
	case !(f.DropPercent >= 0 && f.DropPercent <= 100):
		return invalid("drop percent %v is outside 0–100", f.DropPercent)
	case f.Delay < 0 || f.Delay > MaxFaultDelay:
		return invalid("delay %v is outside 0–%v", f.Delay, MaxFaultDelay)
	case f.Jitter < 0 || f.Jitter > MaxFaultDelay:
		return invalid("jitter %v is outside 0–%v", f.Jitter, MaxFaultDelay)
	}
	switch f.Kind {
	case FaultPartition, FaultDiskFull:
		if f.Delay != 0 || f.Jitter != 0 || f.DropPercent != 0 {
			return invalid("a %s fault takes no delay, jitter or drop percent", f.Kind)
		}
	case FaultDelay, FaultSlowDisk:
		if f.Delay == 0 && f.Jitter == 0 {
			return invalid("a %s fault needs a delay (and optionally a jitter), e.g. --delay 50ms", f.Kind)
		}
		if f.DropPercent != 0 {
			return invalid("a %s fault takes no drop percent (that is the drop kind)", f.Kind)
		}
	case FaultDrop:
		if f.DropPercent == 0 {
			return invalid("a drop fault needs a drop percent above 0, e.g. --drop 10")
		}
		if f.Delay != 0 || f.Jitter != 0 {
			return invalid("a drop fault takes no delay or jitter (that is the delay kind)")
		}
	}
	if (f.Kind == FaultSlowDisk || f.Kind == FaultDiskFull) && (len(f.ToNodes) > 0 || len(f.ToDCs) > 0 || f.BothWays) {
		return invalid("a %s fault has no targets or both-ways: select its nodes with from_nodes / from_dcs", f.Kind)
	}
	t := n.Topology()
	dcs := map[string]bool{}
	for _, info := range t.Nodes {
		dcs[info.DC] = true
	}
	for _, sel := range []struct {
		field string
		names []string
		known func(string) bool
		all   []string
	}{
		{"from_nodes", f.FromNodes, func(s string) bool { _, ok := t.Nodes[s]; return ok }, slices.Sorted(maps.Keys(t.Nodes))},
		{"to_nodes", f.ToNodes, func(s string) bool { _, ok := t.Nodes[s]; return ok }, slices.Sorted(maps.Keys(t.Nodes))},
		{"from_dcs", f.FromDCs, func(s string) bool { return dcs[s] }, slices.Sorted(maps.Keys(dcs))},
		{"to_dcs", f.ToDCs, func(s string) bool { return dcs[s] }, slices.Sorted(maps.Keys(dcs))},
	} {
		seen := map[string]bool{}
		for _, name := range sel.names {
			if seen[name] {
				// (Each is kept with the fault and scanned on every call:
				// a list of one name repeated is only memory and time.)
				return invalid("%s names %q twice: name each once", sel.field, name)
			}
			seen[name] = true
			if !sel.known(name) {
				return invalid("%s names %q, which is not in the cluster (known: %s)", sel.field, name, strings.Join(sel.all, ", "))
			}
		}
	}
	return nil
}

// faultRoles says whether this node applies f (from) and whether it is one
// of its targets.
func (n *Node) faultRoles(f Fault) (from, target bool) {
	id, dc := n.ID(), n.DC()
	from = len(f.FromNodes) == 0 && len(f.FromDCs) == 0 || slices.Contains(f.FromNodes, id) || slices.Contains(f.FromDCs, dc)
	target = len(f.ToNodes) == 0 && len(f.ToDCs) == 0 || slices.Contains(f.ToNodes, id) || slices.Contains(f.ToDCs, dc)
	return from, target
}

// InjectFault applies a fault on this node if the node is selected: as an
// applying node, or with BothWays as a target (which then applies it
// toward the applying nodes). It reports whether the node applies it. A
// fault with the ID of one already applied replaces it (its TTL starts
// again).
func (n *Node) InjectFault(f Fault) (applied bool, err error) {
	if f.ID == "" {
		return false, invalid("the fault has no ID (PrepareFault assigns one)")
	}
	if err := n.checkFault(f); err != nil {
		return false, err
	}
	from, target := n.faultRoles(f)
	reverse := f.BothWays && target && f.Kind != FaultSlowDisk && f.Kind != FaultDiskFull
	if !from && !reverse {
		return false, nil
	}
	r := n.drills
	if f.Kind == FaultSlowDisk && r.disk == nil {
		return false, n.noSlowDisk()
	}
	if f.Kind == FaultDiskFull && n.disk == nil {
		return false, n.noDiskFull()
	}
	f.FromNodes, f.FromDCs = slices.Clone(f.FromNodes), slices.Clone(f.FromDCs)
	f.ToNodes, f.ToDCs = slices.Clone(f.ToNodes), slices.Clone(f.ToDCs)
	f.ExpiresIn = 0
	expires := r.now().Add(f.TTL)
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.mu.faults[f.ID]; !ok && len(r.mu.faults) >= MaxFaults {
		return false, status.Errorf(codes.ResourceExhausted, "node %s already applies %d faults: clear some first (meridian fault clear)", n.ID(), MaxFaults)
	}
	n.unapplyLocked(f.ID)
	r.mu.faults[f.ID] = f
	r.mu.expires[f.ID] = expires
	switch f.Kind {
	case FaultSlowDisk:
		n.syncDiskLocked()
	case FaultDiskFull:
		n.syncDiskFullLocked()
	default:
		rule := transport.Rule{Cut: f.Kind == FaultPartition, Delay: f.Delay, Jitter: f.Jitter, DropPercent: f.DropPercent, Expires: expires}
		if from {
			fwd := rule
			fwd.ID, fwd.Nodes, fwd.DCs = f.ID, f.ToNodes, f.ToDCs
			n.faults.Add(fwd)
		}
		if reverse {
			back := rule
			back.ID, back.Nodes, back.DCs = f.ID+"/reverse", f.FromNodes, f.FromDCs
			n.faults.Add(back)
		}
	}
	n.countFaultsLocked()
	n.log.Warn("fault injected", "fault", f.ID, "kind", f.Kind, "ttl", f.TTL, "applies", from, "reverse", reverse)
	return true, nil
}

// ListFaults lists the faults this node applies, by ID.
func (n *Node) ListFaults() []Fault {
	r := n.drills
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Fault, 0, len(r.mu.faults))
	for id, f := range r.mu.faults {
		if left := r.mu.expires[id].Sub(now); left > 0 {
			f.ExpiresIn = left
			out = append(out, f)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// ClearFaults removes the fault with this ID, or every fault for "", and
// says how many it removed.
func (n *Node) ClearFaults(id string) int {
	r := n.drills
	r.mu.Lock()
	defer r.mu.Unlock()
	var ids []string
	for fid := range r.mu.faults {
		if id == "" || fid == id {
			ids = append(ids, fid)
		}
	}
	n.removeLocked(ids, "cleared")
	return len(ids)
}

// expireFaults removes the faults whose TTL has passed.
func (n *Node) expireFaults() {
	r := n.drills
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	var ids []string
	for id, exp := range r.mu.expires {
		if !now.Before(exp) {
			ids = append(ids, id)
		}
	}
	n.removeLocked(ids, "expired")
}

func (n *Node) removeLocked(ids []string, why string) {
	if len(ids) == 0 {
		return
	}
	r := n.drills
	cutGossip := false
	for _, id := range ids {
		f := r.mu.faults[id]
		cutGossip = cutGossip || f.Kind == FaultPartition || f.Kind == FaultDrop
		n.unapplyLocked(id)
		delete(r.mu.faults, id)
		delete(r.mu.expires, id)
		n.log.Warn("fault removed", "fault", id, "kind", f.Kind, "why", why)
	}
	n.syncDiskLocked()
	n.syncDiskFullLocked()
	n.countFaultsLocked()
	if cutGossip && n.gossip != nil {
		n.gossip.Reconnect() // the nodes it cut off may be dead to gossip
	}
}

// unapplyLocked removes a fault's transport rules.
func (n *Node) unapplyLocked(id string) {
	n.faults.Remove(id)
	n.faults.Remove(id + "/reverse")
}

// syncDiskLocked sets the engine's fsync delay to the slowest slow-disk
// fault's (none: no delay).
func (n *Node) syncDiskLocked() {
	r := n.drills
	if r.disk == nil {
		return
	}
	var d, j time.Duration
	for _, f := range r.mu.faults {
		if f.Kind == FaultSlowDisk {
			d, j = max(d, f.Delay), max(j, f.Jitter)
		}
	}
	r.disk.SetSyncDelay(d, j)
}

// syncDiskFullLocked makes the disk guard read the volume as full while a
// disk-full fault is applied, and checks it again at once either way.
func (n *Node) syncDiskFullLocked() {
	if n.disk == nil {
		return
	}
	full := false
	for _, f := range n.drills.mu.faults {
		full = full || f.Kind == FaultDiskFull
	}
	if n.disk.forcedFull.Swap(full) != full {
		n.disk.check()
	}
}

func (n *Node) countFaultsLocked() {
	r := n.drills
	counts := map[string]int{FaultPartition: 0, FaultDelay: 0, FaultDrop: 0, FaultSlowDisk: 0, FaultDiskFull: 0}
	for _, f := range r.mu.faults {
		counts[f.Kind]++
	}
	for k, c := range counts {
		r.active.WithLabelValues(k).Set(float64(c))
	}
}
