package node

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meridiankv/meridian/coordinator"
)

// DefaultMinFreeDisk is Config.MinFreeDisk's default: the free space under
// which a node refuses new data, leaving room for what must still be
// written (compactions, which need room to free any, the metadata log,
// hints' and tombstones' deletions).
const DefaultMinFreeDisk = 256 << 20

// DefaultDiskCheckInterval is how often a node reads its volume's free
// space (Options.DiskCheckInterval).
const DefaultDiskCheckInterval = time.Second

// DiskSpace reports the free and total bytes of the volume holding dir
// (free: what an unprivileged process may still use).
type DiskSpace func(dir string) (free, total uint64, err error)

// DiskLowError refuses a write of data on a node whose volume has less
// free space than min-free-disk. It is RESOURCE_EXHAUSTED with the
// ErrorInfo reason "DISK_LOW": refused before anything was written, so a
// client may send the write to another replica.
type DiskLowError struct {
	Node      string
	Dir       string
	Free, Min uint64
}

func (e *DiskLowError) Error() string {
	return fmt.Sprintf("node %s is low on disk: %s free in %s, under min-free-disk %s; it refuses writes (reads are served) until space is freed: "+
		"free space on the volume, grow it, or add nodes; send writes to other replicas meanwhile",
		e.Node, mib(e.Free), e.Dir, mib(e.Min))
}

// GRPCStatus maps the error to RESOURCE_EXHAUSTED with reason DISK_LOW.
func (e *DiskLowError) GRPCStatus() *status.Status {
	st := status.New(codes.ResourceExhausted, e.Error())
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: coordinator.ReasonDiskLow, Domain: coordinator.ErrorDomain, Metadata: map[string]string{
		"node": e.Node, "free_bytes": strconv.FormatUint(e.Free, 10), "min_free_bytes": strconv.FormatUint(e.Min, 10),
	}}); err == nil {
		return d
	}
	return st
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// diskLow decides whether a node refuses writes, from whether it did and
// the free bytes it reads now: under min it does; once refusing, it goes on
// until free space is a tenth above min, so that a volume hovering at the
// threshold does not flap between the two.
func diskLow(wasLow bool, free, min uint64) bool {
	if wasLow {
		return free < min+min/10
	}
	return free < min
}

// diskGuard watches the free space of the data directory's volume and
// refuses writes of data while it is low (replica.Store's write gate).
type diskGuard struct {
	node, dir string
	min       uint64
	space     DiskSpace
	log       *slog.Logger
	// onChange, if set, is called when the node starts or stops refusing
	// (set before run starts).
	onChange func()

	low         atomic.Bool
	free, total atomic.Uint64
	// forcedFull: a disk-full fault (drills) makes every reading 0 free.
	forcedFull atomic.Bool

	checking sync.Mutex // one check at a time (the loop and fault changes)
	failing  bool       // the last read failed (logged once per spell); under checking
}

// check reads the free space once and updates the guard, logging each
// change between accepting and refusing writes.
func (g *diskGuard) check() {
	g.checking.Lock()
	defer g.checking.Unlock()
	free, total, err := g.space(g.dir)
	if g.forcedFull.Load() {
		free, err = 0, nil
	}
	if err != nil {
		// Cannot tell: keep the last decision (a volume that could not be
		// read once is not thereby full or free).
		if !g.failing {
			g.failing = true
			g.log.Warn("cannot read the free disk space; min-free-disk is not enforced while this lasts", "dir", g.dir, "err", err)
		}
		return
	}
	g.failing = false
	g.free.Store(free)
	g.total.Store(total)
	was := g.low.Load()
	now := diskLow(was, free, g.min)
	if now == was {
		return
	}
	g.low.Store(now)
	if g.onChange != nil {
		g.onChange()
	}
	if now {
		g.log.Error("disk nearly full: refusing writes of data until space is freed (reads are served); free space on the volume, grow it, or add nodes",
			"dir", g.dir, "free_bytes", free, "min_free_disk", g.min)
	} else {
		g.log.Info("disk space recovered: accepting writes again", "dir", g.dir, "free_bytes", free, "min_free_disk", g.min)
	}
}

// refused is the write gate: a *DiskLowError while the disk is low.
func (g *diskGuard) refused() error {
	if !g.low.Load() {
		return nil
	}
	return &DiskLowError{Node: g.node, Dir: g.dir, Free: g.free.Load(), Min: g.min}
}

// newDiskGuard returns the guard for cfg's data directory, or nil when
// none applies: the memory engine, or min-free-disk 0.
func newDiskGuard(cfg Config, opts Options, log *slog.Logger) *diskGuard {
	min := int64(DefaultMinFreeDisk)
	if cfg.MinFreeDisk != nil {
		min = int64(*cfg.MinFreeDisk)
	}
	if cfg.Engine == "memory" || min <= 0 {
		return nil
	}
	space := opts.DiskSpace
	if space == nil {
		space = volumeSpace
	}
	return &diskGuard{node: cfg.ID, dir: cfg.DataDir, min: uint64(min), space: space, log: log}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// run checks every interval until ctx ends.
func (g *diskGuard) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			g.check()
		}
	}
}
