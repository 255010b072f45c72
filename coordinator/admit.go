package coordinator

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
)

// Admission control: a node takes at most MaxInFlight client requests at
// once. A request that finds every slot taken waits at most ShedAfter for
// one, then is refused with RESOURCE_EXHAUSTED — shed quickly, so callers
// back off or go elsewhere instead of queueing into their deadlines.
// Background work (the rest of a write's fan-out, read repair) has its own
// bound, MaxBackground: past it, read repair is skipped (anti-entropy and
// later reads repair instead) and writes are shed, since each write leaves
// background work behind. Nothing runs longer than MaxRequestTimeout,
// whatever deadline a client sends.

// admitter is a counting semaphore with a bounded wait.
type admitter struct {
	slots chan struct{}
	wait  time.Duration
}

func newAdmitter(n int, wait time.Duration) *admitter {
	return &admitter{slots: make(chan struct{}, n), wait: wait}
}

// tryAcquire takes a slot without waiting.
func (a *admitter) tryAcquire() bool {
	select {
	case a.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

// acquire takes a slot, waiting at most a.wait (or until ctx ends).
func (a *admitter) acquire(ctx context.Context) bool {
	if a.tryAcquire() {
		return true
	}
	t := time.NewTimer(a.wait)
	defer t.Stop()
	select {
	case a.slots <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

func (a *admitter) release() { <-a.slots }

// inUse is how many slots are taken.
func (a *admitter) inUse() int { return len(a.slots) }

// OverloadError is a request shed by admission control: RESOURCE_EXHAUSTED.
type OverloadError struct {
	What     string
	InFlight int
	Max      int
	// Reason, when set, replaces the in-flight counts in the message.
	Reason string
	// Waited is how long the request waited for a slot (0: it did not).
	// Waiters race for a freed slot, so InFlight, read after the wait,
	// may be below Max.
	Waited time.Duration
}

func (e *OverloadError) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("node overloaded: %s: retry %s with backoff, or send to another node", e.Reason, e.What)
	}
	if e.Waited > 0 {
		return fmt.Sprintf("node overloaded: none of its %d slots for %s came free for this one within %v (%d in flight now): retry with backoff, or send to another node", e.Max, e.What, e.Waited, e.InFlight)
	}
	return fmt.Sprintf("node overloaded: %d %s in flight (limit %d): retry with backoff, or send to another node", e.InFlight, e.What, e.Max)
}

// GRPCStatus maps the error to RESOURCE_EXHAUSTED with the counts.
func (e *OverloadError) GRPCStatus() *status.Status {
	return withInfo(status.New(codes.ResourceExhausted, e.Error()), "OVERLOADED",
		map[string]string{"in_flight": itoa(e.InFlight), "max": itoa(e.Max), "what": e.What})
}

// admit takes a request slot or returns the error to shed with. Writes
// also need room for the background work they leave.
func (c *Coordinator) admit(ctx context.Context, op Op, cons *kvv1.Consistency) (admission, error) {
	if op == OpWrite {
		if err := c.cfg.Store.WritesRefused(); err != nil {
			// Low on disk: refused before anything is done, so the
			// client may send the write to another replica.
			c.obs.Shed("write_disk_low")
			return admission{}, err
		}
	}
	if op == OpWrite && c.cfg.Store.Engine().Stalled() {
		c.obs.Shed(op.String())
		return admission{}, &OverloadError{What: "writes", Reason: "storage is stalling writes until compactions catch up"}
	}
	if op == OpRead && c.cfg.MaxReadBytes > 0 {
		if n := c.rdBytes.Load(); n >= c.cfg.MaxReadBytes {
			c.obs.Shed("read_bytes")
			return admission{}, &OverloadError{What: "reads", Reason: fmt.Sprintf("reads in progress hold %s of replica replies, the limit is %s (max-read-bytes)", sizeText(n), sizeText(c.cfg.MaxReadBytes))}
		}
	}
	if n := c.bgBytes.Load(); op == OpWrite && n >= c.cfg.MaxBackgroundBytes {
		c.obs.Shed(op.String())
		return admission{}, &OverloadError{What: "writes", Reason: fmt.Sprintf("replica writes and read repairs still running hold %d MiB, the limit is %d MiB (max-background-bytes)", n>>20, c.cfg.MaxBackgroundBytes>>20)}
	}
	if op == OpWrite && c.bgSlots.inUse() >= cap(c.bgSlots.slots) {
		c.obs.Shed(op.String())
		return admission{}, &OverloadError{What: "background replica writes", InFlight: c.bgSlots.inUse(), Max: cap(c.bgSlots.slots)}
	}
	seq, ok := c.inflight.acquire(ctx)
	if !ok && ctx.Err() != nil {
		// The caller's deadline passed (or it gave up) while the request
		// waited for a slot: DEADLINE_EXCEEDED or CANCELED, as for any
		// request that ran out of time, not OVERLOADED, which tells a
		// client to try another replica with a request already dead.
		c.obs.Shed(op.String())
		return admission{}, status.FromContextError(ctx.Err()).Err()
	}
	if !ok {
		c.obs.Shed(op.String())
		return admission{}, &OverloadError{What: "requests", InFlight: c.inflight.inUse(), Max: c.inflight.limit(), Waited: c.inflight.wait}
	}
	return admission{l: c.inflight, class: classOf(op, cons), seq: seq, start: time.Now()}, nil
}

// admission is a request's slot, taken at start.
type admission struct {
	l     *limiter
	class latencyClass
	seq   uint64
	start time.Time
}

// release frees the slot; ok says whether the request succeeded (the
// limit adapts to the latency of successes).
func (a admission) release(ok bool) { a.l.release(a.class, a.seq, time.Since(a.start), ok) }

// goBackground runs fn as background work if a slot is free; it reports
// whether fn was started (false: the caller skips or does without).
// Background reports the background work running (replica writes a
// request left behind, read repairs) and the bytes of sibling sets it
// holds: what MaxBackground and MaxBackgroundBytes bound.
func (c *Coordinator) Background() (work int, bytes int64) {
	return c.bgSlots.inUse(), c.bgBytes.Load()
}

// ReadBytes reports the bytes of replica replies reads in progress hold:
// what MaxReadBytes bounds.
func (c *Coordinator) ReadBytes() int64 { return c.rdBytes.Load() }

func (c *Coordinator) goBackground(fn func()) bool {
	if !c.bgSlots.tryAcquire() {
		return false
	}
	c.bg.Add(1)
	go func() {
		defer c.bg.Done()
		defer c.bgSlots.release()
		fn()
	}()
	return true
}

// sizeText renders a byte count for a message: B, KiB or MiB.
func sizeText(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
