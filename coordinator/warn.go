package coordinator

import (
	"crypto/rand"
	"sync/atomic"
	"time"

	"github.com/meridiankv/meridian/version"
)

// warnLimiter lets a warning through at most once per interval, so a hot
// key or a skewed peer cannot flood the log; metrics count every case.
type warnLimiter struct{ last atomic.Int64 }

const warnInterval = 10 * time.Second

func (w *warnLimiter) allow(now time.Time) bool {
	last := w.last.Load()
	if now.UnixNano()-last < int64(warnInterval) {
		return false
	}
	return w.last.CompareAndSwap(last, now.UnixNano())
}

func (c *Coordinator) clockSkew(t version.Timestamp) {
	c.obs.ClockSkewRejected()
	if c.skewWarn.allow(c.cfg.Now()) {
		c.cfg.Logger.Warn("ignored a timestamp too far ahead of this node's clock: is a node's clock fast? (check NTP)",
			"timestamp", t.Time().UTC(), "ahead", t.Time().Sub(c.cfg.Now()), "max_offset", c.cfg.MaxClockOffset)
	}
}

// fastClock counts a last-writer-wins write this node did not coordinate
// for its clock running ahead of its peers', and says so in the log at
// most every warnInterval.
func (c *Coordinator) fastClock(ahead time.Duration) {
	c.obs.FastClockForward()
	if c.fastWarn.allow(c.cfg.Now()) {
		c.cfg.Logger.Warn("this node's clock runs ahead of its peers': last-writer-wins writes go to other replicas until it is fixed (check NTP)",
			"ahead", ahead, "max_offset", c.cfg.MaxClockOffset)
	}
}

func (c *Coordinator) manySiblings(r *request, n int) {
	c.obs.ManySiblings()
	if c.siblingWarn.allow(c.cfg.Now()) {
		c.cfg.Logger.Warn("key has many siblings: clients are writing without contexts or concurrently; read, merge and write with the context",
			"keyspace", r.ks.Name, "key", string(r.key), "siblings", n, "limit", r.ks.Limits.MaxSiblings)
	}
}

// newRequestID mints a 16-byte random request ID.
func newRequestID() []byte {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return b
}
