package coordinator

import (
	"github.com/meridiankv/meridian/placement"
)

// The pure half of a write: who receives it, whose answers count, where the
// copies for down replicas go, and whether the write can succeed at all. The
// shell (Coordinator.coordinate) does the local write, the fan-out and the
// waiting, and asks the plan again when a replica fails mid-request.

// writeInput is what planWrite decides from. Liveness and fallbacks are
// lookups, not I/O (interfaces rather than closures: a write allocates no
// func values for them).
type writeInput struct {
	// self is this node (Node and DC).
	self placement.Replica
	// replicas is the key's preference list; pending the partition's
	// pending replicas (Table.Pending: a moving partition's new replicas,
	// which receive every write but count toward nothing).
	replicas, pending []placement.Replica
	need              Need
	// live says whether another node is up (this node always is), and
	// whether it gossips that it refuses writes for lack of disk space
	// (its copy goes to a fallback, as a down replica's does).
	live interface {
		Alive(node string) bool
		DiskLow(node string) bool
	}
	// hints: this node can store hints. Without, no fallback is used and
	// no hint is kept.
	hints bool
	// table lists the partition's fallbacks for a down replica of a DC,
	// that DC's first (placement.Table.Fallbacks).
	table interface {
		Fallbacks(p int, dc string) []placement.Replica
	}
	partition int
}

// planInline is how many targets and used nodes a plan holds without
// allocating: a replication factor of 5 and fallbacks for two of them.
const planInline = 8

// writePlan says who receives a write and how their answers count.
type writePlan struct {
	// local: this node is a replica; it applies the write first and its
	// answer counts. Otherwise it mints the write as a fallback and keeps
	// nothing itself unless it is picked as a target.
	local bool
	// targets are the other live replicas (in preference order), then the
	// fallbacks holding hints for down replicas.
	targets []target
	// extras are pending replicas: they receive the write and count toward
	// nothing.
	extras []target
	// keep lists down replicas with no fallback free whose hint this node
	// keeps itself (only when local): such a copy never counts toward W, as
	// it is on this node, which already counts once.
	keep []string
	// down lists the replicas skipped as down; lowOnDisk those skipped
	// as up but refusing writes for lack of disk space.
	down, lowOnDisk []string
	// alive counts the replicas (this node included) that were up and
	// accepting writes.
	alive int
	// tally expects an answer from this node (when local) and from every
	// target; extras are never expected.
	tally tally

	in writeInput
	// used lists the nodes holding the write: re-hinting picks a fallback
	// outside it.
	used []string

	// Room for targets and used, so that a plan is one allocation. A plan
	// is never copied (the slices point into it).
	targetBuf [planInline]target
	usedBuf   [planInline]string
}

// planWrite decides, before anything is written, who gets the write and
// whether it can succeed: an unavailable write leaves no trace. It returns
// the plan and, when the need cannot be met by what is up, the
// UnavailableError to refuse it with.
func planWrite(in writeInput) (*writePlan, error) {
	p := &writePlan{in: in, tally: makeTally(in.need), local: isReplica(in.replicas, in.self.Node)}
	p.targets, p.used = p.targetBuf[:0], p.usedBuf[:0]
	if p.local {
		p.alive++
		p.tally.expect(in.self.DC, false)
		p.used = append(p.used, in.self.Node)
	}
	// When this node is not a replica it may be picked to hold a hint
	// itself: it is not in used.
	var down []placement.Replica
	for _, rep := range in.replicas {
		switch {
		case rep.Node == in.self.Node:
		case !in.live.Alive(rep.Node):
			down = append(down, rep)
			p.down = append(p.down, rep.Node)
		case in.live.DiskLow(rep.Node):
			// It would refuse the write before writing anything: the
			// copy goes where a down replica's goes, without the round
			// trip (a refusal from a node whose gossip is behind is
			// handed on the same way, by afterFailure).
			down = append(down, rep)
			p.lowOnDisk = append(p.lowOnDisk, rep.Node)
		default:
			p.targets = append(p.targets, target{Replica: rep})
			p.tally.expect(rep.DC, false)
			p.used = append(p.used, rep.Node)
			p.alive++
		}
	}
	if in.hints {
		for _, rep := range down {
			fb, ok := p.fallbackFor(rep)
			if !ok {
				if p.local {
					p.keep = append(p.keep, rep.Node)
				}
				continue
			}
			p.targets = append(p.targets, target{Replica: fb, hintFor: rep.Node})
			p.tally.expect(fb.DC, true)
			p.used = append(p.used, fb.Node)
		}
	}
	if p.tally.hopeless() || !p.local && len(p.targets) == 0 {
		return p, &UnavailableError{Op: OpWrite, Need: in.need, Alive: p.alive, LowOnDisk: p.lowOnDisk, Detail: p.tally.shortfall()}
	}
	for _, rep := range in.pending {
		if rep.Node != in.self.Node && !p.isUsed(rep.Node) {
			p.extras = append(p.extras, target{Replica: rep, extra: true})
		}
	}
	return p, nil
}

// asked is how many answers the write waits on: this node's and the
// targets'.
func (p *writePlan) asked() int { return len(p.targets) + b2i(p.local) }

func (p *writePlan) isUsed(node string) bool {
	for _, u := range p.used {
		if u == node {
			return true
		}
	}
	return false
}

// fallbackFor picks the first live fallback with disk space not already
// holding the write for a down replica, from the replica's own DC first.
func (p *writePlan) fallbackFor(down placement.Replica) (placement.Replica, bool) {
	for _, fb := range p.in.table.Fallbacks(p.in.partition, down.DC) {
		if !p.isUsed(fb.Node) && (fb.Node == p.in.self.Node || p.in.live.Alive(fb.Node) && !p.in.live.DiskLow(fb.Node)) {
			return fb, true
		}
	}
	return placement.Replica{}, false
}

// failAction is what becomes of a target's write that failed.
type failAction int

const (
	// failStands: the failure is final.
	failStands failAction = iota
	// failToFallback: send the copy to the returned fallback as a hint.
	failToFallback
	// failKeepHint: this node keeps the hint; it does not count.
	failKeepHint
)

// afterFailure decides what becomes of a write to t that failed during the
// request; reached says whether the target may have taken it (the failure
// is its answer, not the network's, and not a refusal made before storing
// anything). A primary that took nothing gets its copy on a free live
// fallback, as if it had been down from the start, and that fallback is
// marked used; so does a fallback that took nothing of the hint it was
// sent (unreachable, or its hint log full), for the same replica; with
// none free, a replica coordinator keeps the hint (for the replica: the
// returned target's hintFor when it is a fallback's). A pending replica
// that missed the write gets a hint kept by a replica coordinator
// whatever the failure (a non-replica coordinator keeps none: the
// transfer's catch-up pass, or anti-entropy once the partition switched,
// brings the write; a pending replica counts toward nothing). Not safe
// for concurrent use: the shell serializes calls.
func (p *writePlan) afterFailure(t target, reached bool) (target, failAction) {
	switch {
	case !p.in.hints:
		return target{}, failStands
	case t.extra:
		if p.local {
			return target{}, failKeepHint
		}
		return target{}, failStands
	case reached:
		return target{}, failStands
	}
	down, owner := t.Replica, t.Node
	if t.hintFor != "" {
		var ok bool
		if down, ok = p.replica(t.hintFor); !ok {
			return target{}, failStands
		}
		owner = t.hintFor
	}
	fb, ok := p.fallbackFor(down)
	if ok {
		p.used = append(p.used, fb.Node)
		return target{Replica: fb, hintFor: owner}, failToFallback
	}
	if p.local {
		return target{Replica: placement.Replica{Node: owner}}, failKeepHint
	}
	return target{}, failStands
}

// replica finds node in the key's preference list.
func (p *writePlan) replica(node string) (placement.Replica, bool) {
	for _, r := range p.in.replicas {
		if r.Node == node {
			return r, true
		}
	}
	return placement.Replica{}, false
}
