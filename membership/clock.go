package membership

import (
	"encoding/binary"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Clock offsets. Every gossip ping's ack carries the acking node's wall
// clock (8 bytes, Unix nanoseconds), so each node estimates, from the
// pings it sends anyway, how far its clock is from each member's: the
// member read its clock about half the round trip before the ack arrived,
// so its offset is theirs − (ours at arrival − rtt/2), give or take rtt/2.
// A node whose clock runs ahead of most of its peers' learns it within a
// few probe intervals (see ClockAhead), without any clock service.

// clockSampleTTL is how long an offset sample counts: a member that
// stopped answering pings no longer speaks for the cluster's time.
const clockSampleTTL = 30 * time.Second

// maxClockSkew bounds an offset sample either way.
const maxClockSkew = 24 * time.Hour

type clockSample struct {
	offset, uncertainty time.Duration // the member's clock minus this node's
	at                  time.Time     // this node's clock when taken
}

// clockOffsets holds the latest sample per member (members only: the map
// is bounded by the membership).
type clockOffsets struct {
	mu      sync.Mutex
	samples map[string]clockSample
	// cached is the last estimate (ahead), reused for a second: writes
	// ask for it, and need no lock or sort each.
	cached atomic.Pointer[clockEstimate]
}

type clockEstimate struct {
	ahead   time.Duration
	members int
	at      time.Time
}

// estimate is ahead, computed at most once a second.
func (c *clockOffsets) estimate(now time.Time) (time.Duration, int) {
	if e := c.cached.Load(); e != nil && !now.Before(e.at) && now.Sub(e.at) < time.Second {
		return e.ahead, e.members
	}
	ahead, members := c.ahead(now)
	c.cached.Store(&clockEstimate{ahead: ahead, members: members, at: now})
	return ahead, members
}

// ackPayload is what this node's acks carry: its wall clock.
func ackPayload(now time.Time) []byte {
	return binary.BigEndian.AppendUint64(nil, uint64(now.UnixNano()))
}

// sample records member's offset from an ack payload that arrived at now
// after rtt; a payload that is not 8 bytes is ignored (an older version
// sends none).
func (c *clockOffsets) sample(member string, payload []byte, rtt time.Duration, now time.Time) {
	if len(payload) != 8 || rtt < 0 {
		return
	}
	theirs := time.Unix(0, int64(binary.BigEndian.Uint64(payload)))
	// Clamped: a member a day off is as wrong as one a century off, and
	// the clamp keeps the arithmetic below from overflowing.
	offset := min(max(theirs.Sub(now.Add(-rtt/2)), -maxClockSkew), maxClockSkew)
	s := clockSample{offset: offset, uncertainty: min(rtt/2, maxClockSkew), at: now}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.samples == nil {
		c.samples = map[string]clockSample{}
	}
	c.samples[member] = s
}

func (c *clockOffsets) forget(member string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.samples, member)
}

// ahead returns how far this node's clock is at least ahead of the median
// member's (negative: behind), counting each member's uncertainty in this
// node's favour, over the samples taken within clockSampleTTL of now, and
// how many members that is (0: nothing known, ahead is 0). The median
// keeps one member with a wrong clock from making every other node look
// wrong (with a single member there is no telling which clock is).
func (c *clockOffsets) ahead(now time.Time) (time.Duration, int) {
	c.mu.Lock()
	leads := make([]time.Duration, 0, len(c.samples))
	for _, s := range c.samples {
		if now.Sub(s.at) > clockSampleTTL {
			continue
		}
		// This node leads the member by −offset; at least by that less
		// the uncertainty when it leads, at most by that plus it when
		// it trails: the estimate nearest to agreement.
		lead := -s.offset
		switch {
		case lead > s.uncertainty:
			lead -= s.uncertainty
		case lead < -s.uncertainty:
			lead += s.uncertainty
		default:
			lead = 0
		}
		leads = append(leads, lead)
	}
	c.mu.Unlock()
	if len(leads) == 0 {
		return 0, 0
	}
	slices.Sort(leads)
	// The lower median: with two members, one whose clock is behind does
	// not make this node look ahead.
	return leads[(len(leads)-1)/2], len(leads)
}

type pingDelegate Gossip

func (d *pingDelegate) AckPayload() []byte { return ackPayload((*Gossip)(d).now()) }

func (d *pingDelegate) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, payload []byte) {
	g := (*Gossip)(d)
	g.mu.RLock()
	m, ok := g.mu.members[other.Name]
	g.mu.RUnlock()
	if !ok || m.State != StateAlive {
		return // not a member this node accepted
	}
	g.clocks.sample(other.Name, payload, rtt, g.now())
}

// ClockAhead returns how far this node's clock runs ahead of its alive
// members' (the median of its estimates of each, see clockOffsets.ahead;
// negative when behind) and how many members it is estimated from (0:
// none yet, and ahead 0). The estimate is at most a second old; it is
// cheap enough for every write to ask.
func (g *Gossip) ClockAhead() (ahead time.Duration, members int) {
	return g.clocks.estimate(g.now())
}
