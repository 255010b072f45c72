package repair

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/meridiankv/meridian/engine"
	"github.com/meridiankv/meridian/replica"
	"github.com/meridiankv/meridian/version"
)

// Hint log defaults.
const (
	DefaultMaxHintBytes = 64 << 20 // per target
	DefaultMaxHintCount = 1 << 20  // per target
	DefaultHintWindow   = 3 * time.Hour
)

// ErrHintDropped is returned by StoreHint when a bound (bytes, count,
// window, a set's hard limits) is reached or hints are off: the hint is not stored, the write
// itself still succeeds, and the partition needs repair (OnDropped).
var ErrHintDropped = errors.New("hint not stored")

// ErrHintWindow is wrapped with ErrHintDropped when the target has been
// owed hints longer than the hint window: a coordinator hands such a hint
// to no other fallback (which would start the window again).
var ErrHintWindow = errors.New("over the hint window")

// Reasons a hint is dropped, as counted by Stats and the metrics.
const (
	DropOff       = "off"        // hints are turned off
	DropBytes     = "bytes"      // the target's byte bound
	DropCount     = "count"      // the target's count bound
	DropWindow    = "window"     // the target has been owed hints longer than the window
	DropExpired   = "expired"    // held longer than the window, for a target that will not take it, and no other node can
	DropNonMember = "non-member" // the target left the topology
	DropPurged    = "purged"     // an operator purged the target's hints
	DropLimit     = "limit"      // merged with the hint held, the set would pass a hard limit
	DropKeyspace  = "keyspace"   // its keyspace was dropped since
	DropAged      = "aged"       // first hinted longer ago than MaxAge (the tombstone grace)
)

// HintLogConfig bounds the hint log. Zero values take the defaults.
type HintLogConfig struct {
	// Off refuses every hint (each refusal is reported to OnDropped).
	Off bool
	// MaxBytes bounds the bytes (keys and values) held per target.
	MaxBytes int64
	// MaxCount bounds the hints held per target.
	MaxCount int64
	// Window: a target owed hints for longer than this (the age of its
	// oldest undelivered hint) gets no new ones. Those held are still
	// delivered to it, however old, while it replicates their partition
	// (MaxAge bounds them); one it refuses once held longer than this
	// goes to the partition's other replicas, and is dropped only if no
	// node can ever take it.
	Window time.Duration
	// MaxAge: a hint whose write was first hinted (on any node: a hint
	// handed on keeps its age) longer ago than this is dropped
	// undelivered and reported to OnDropped. Delivered later than the
	// tombstone grace, it could bring back a value deleted since, whose
	// tombstone is collected. 0: no bound.
	MaxAge time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// OnDropped, when set, is told of every hint not stored or dropped
	// undelivered (except purges and departed targets): the partition
	// needs priority repair. It must not block.
	OnDropped func(target string, loc replica.Loc)
}

// Hint is a copy of a key held for a replica that was unreachable.
type Hint struct {
	Target   string
	Loc      replica.Loc
	Keyspace string
	Key      []byte
	Set      version.Set
	// Stored is when the hint was first stored here (for hints written
	// before times were kept: when this log opened).
	Stored time.Time
	// Born is when the oldest write it carries was first hinted, on this
	// node or on the one that handed it here (Stored for hints written
	// before it was kept).
	Born time.Time
}

// TargetStats describes the hints held for one target.
type TargetStats struct {
	Target      string
	Count       int64
	Bytes       int64
	OldestAge   time.Duration // age of the oldest undelivered hint
	Rate        float64       // hints delivered per second over the last minute
	Quarantined int64         // hints that did not decode, set aside
	// Refused is how many hints the last full delivery pass left in
	// place because the target refused them (replica.Refused).
	Refused int64
	// Owed: the target is owed hints still on their way. It is false
	// when every hint held is one the target refused, since the last
	// pass began (see Owed).
	Owed bool
}

const hintStripes = 1024

// valueMarker starts a hint value that carries its first-stored time:
// 0xff | unix nanoseconds (8 bytes) | len(ks) | ks | version.Set;
// bornMarker one that carries its born time too: 0xfe | stored (8) |
// born (8) | len(ks) | ks | version.Set. A value without either is the
// original layout, len(ks) | ks | version.Set (keyspace names are at most
// 64 bytes, so the first byte tells them apart).
const (
	valueMarker = 0xff
	bornMarker  = 0xfe
)

// HintLog is the hints this node holds for other nodes, on the node's
// engine, bounded per target by bytes, count and age.
type HintLog struct {
	eng    engine.Engine
	cfg    HintLogConfig
	opened time.Time
	locks  [hintStripes]sync.Mutex
	mu     struct {
		sync.Mutex
		targets map[string]*targetAcct
		dropped map[string]uint64
	}
}

type targetAcct struct {
	count, bytes int64
	oldest       time.Time // zero when count is 0
	passMin      time.Time // oldest stored since the delivery pass began
	quarantined  int64
	// refused is how many hints the last full delivery pass left
	// because the target refused them; refusedOnly says those are all
	// the hints held: none was stored or changed since that pass began.
	refused     int64
	refusedOnly bool
	delivered   [60]struct{ sec, n int64 } // per-second delivery counts
}

// owed: the target holds hints still on their way (see HintLog.Owed).
func (a *targetAcct) owed() bool { return a.count > 0 && !a.refusedOnly }

// NewHintLog opens the hint log on eng and rebuilds its per-target
// accounting by scanning the hints held.
func NewHintLog(eng engine.Engine, cfg HintLogConfig) (*HintLog, error) {
	if cfg.MaxBytes < 0 || cfg.MaxCount < 0 || cfg.Window < 0 {
		return nil, fmt.Errorf("repair: negative hint bound (bytes %d, count %d, window %v)", cfg.MaxBytes, cfg.MaxCount, cfg.Window)
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultMaxHintBytes
	}
	if cfg.MaxCount == 0 {
		cfg.MaxCount = DefaultMaxHintCount
	}
	if cfg.Window == 0 {
		cfg.Window = DefaultHintWindow
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	l := &HintLog{eng: eng, cfg: cfg, opened: cfg.Now()}
	l.mu.targets = map[string]*targetAcct{}
	l.mu.dropped = map[string]uint64{}
	err := l.scan([]byte{replica.HintPrefix}, []byte{replica.HintPrefix + 1}, func(k, v []byte) bool {
		target, _, _, _ := parseHintKey(k)
		a := l.acct(target)
		a.count++
		a.bytes += int64(len(k) + len(v))
		if stored, _, _, ok := l.storedAt(v); ok && (a.oldest.IsZero() || stored.Before(a.oldest)) {
			a.oldest = stored
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("repair: read hints: %w", err)
	}
	err = l.scan([]byte{replica.HintQuarantinePrefix}, []byte{replica.HintQuarantinePrefix + 1}, func(k, _ []byte) bool {
		hk := append([]byte{replica.HintPrefix}, k[1:]...)
		target, _, _, _ := parseHintKey(hk)
		l.acct(target).quarantined++
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("repair: read quarantined hints: %w", err)
	}
	return l, nil
}

// Config is the log's configuration, defaults applied.
func (l *HintLog) Config() HintLogConfig { return l.cfg }

// acct returns target's accounting; l.mu must be held (or l unshared).
func (l *HintLog) acct(target string) *targetAcct {
	a := l.mu.targets[target]
	if a == nil {
		a = &targetAcct{}
		l.mu.targets[target] = a
	}
	return a
}

func (l *HintLog) scan(lower, upper []byte, fn func(k, v []byte) bool) error {
	it, err := l.eng.NewIter(lower, upper)
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		if !fn(it.Key(), it.Value()) {
			break
		}
	}
	return it.Error()
}

func hintPrefix(target string) []byte {
	k := make([]byte, 0, 2+len(target))
	k = append(k, replica.HintPrefix, byte(len(target)))
	return append(k, target...)
}

func hintKey(target string, loc replica.Loc, key []byte) []byte {
	k := hintPrefix(target)
	k = binary.BigEndian.AppendUint32(k, loc.Keyspace)
	k = binary.BigEndian.AppendUint16(k, uint16(loc.Partition))
	return append(k, key...)
}

// prefixEnd is the first key after every key starting with p (nil: none).
func prefixEnd(p []byte) []byte {
	p = slices.Clone(p)
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] != 0xff {
			p[i]++
			return p[:i+1]
		}
	}
	return nil
}

// parseHintKey splits a hint key. A key too short for its layout yields
// ok false (and whatever target it names, or "").
func parseHintKey(k []byte) (target string, loc replica.Loc, key []byte, ok bool) {
	if len(k) < 2 || len(k) < 2+int(k[1]) {
		return "", loc, nil, false
	}
	tl := int(k[1])
	target = string(k[2 : 2+tl])
	rest := k[2+tl:]
	if len(rest) < 6 {
		return target, loc, nil, false
	}
	loc = replica.Loc{Keyspace: binary.BigEndian.Uint32(rest[:4]), Partition: int(binary.BigEndian.Uint16(rest[4:6]))}
	return target, loc, rest[6:], true
}

func encodeHintValue(stored, born time.Time, keyspace string, set version.Set) []byte {
	v := make([]byte, 0, 18+len(keyspace)+set.EncodedSize())
	v = append(v, bornMarker)
	v = binary.BigEndian.AppendUint64(v, uint64(stored.UnixNano()))
	v = binary.BigEndian.AppendUint64(v, uint64(born.UnixNano()))
	v = append(v, byte(len(keyspace)))
	v = append(v, keyspace...)
	return set.AppendEncode(v)
}

// storedAt reads a value's first-stored and born times and the length of
// its header; values of the original layout date from when the log opened.
func (l *HintLog) storedAt(v []byte) (stored, born time.Time, header int, ok bool) {
	switch {
	case len(v) > 0 && v[0] == bornMarker:
		if len(v) < 17 {
			return time.Time{}, time.Time{}, 0, false
		}
		stored = time.Unix(0, int64(binary.BigEndian.Uint64(v[1:9])))
		return stored, time.Unix(0, int64(binary.BigEndian.Uint64(v[9:17]))), 17, true
	case len(v) > 0 && v[0] == valueMarker:
		if len(v) < 9 {
			return time.Time{}, time.Time{}, 0, false
		}
		stored = time.Unix(0, int64(binary.BigEndian.Uint64(v[1:9])))
		return stored, stored, 9, true
	}
	return l.opened, l.opened, 0, true
}

func (l *HintLog) decodeValue(v []byte) (stored, born time.Time, keyspace string, set version.Set, err error) {
	stored, born, header, ok := l.storedAt(v)
	if !ok {
		return stored, born, "", set, errors.New("repair: malformed hint: short header")
	}
	v = v[header:]
	if len(v) < 1 || len(v) < 1+int(v[0]) {
		return stored, born, "", set, errors.New("repair: malformed hint: short keyspace")
	}
	keyspace = string(v[1 : 1+v[0]])
	set, err = version.DecodeSet(v[1+v[0]:])
	if err != nil {
		return stored, born, "", set, fmt.Errorf("repair: malformed hint: %w", err)
	}
	return stored, born, keyspace, set, nil
}

// tooOld reports whether h is past MaxAge: delivered, it could bring back
// a value deleted since (see HintLogConfig.MaxAge).
func (l *HintLog) tooOld(h Hint) bool {
	return l.cfg.MaxAge > 0 && l.cfg.Now().Sub(h.Born) > l.cfg.MaxAge
}

// decode turns a stored entry into a Hint.
func (l *HintLog) decode(k, v []byte) (Hint, error) {
	target, loc, key, ok := parseHintKey(k)
	if !ok {
		return Hint{}, fmt.Errorf("repair: malformed hint key %x", k)
	}
	h := Hint{Target: target, Loc: loc, Key: slices.Clone(key)}
	var err error
	h.Stored, h.Born, h.Keyspace, h.Set, err = l.decodeValue(v)
	return h, err
}

func (l *HintLog) lock(hk []byte) *sync.Mutex { return &l.locks[xxhash.Sum64(hk)%hintStripes] }

// StoreHint merges set into the hint held for target (one hint per target
// and key: repeated writes while the target is down fold into one). Past a
// bound it stores nothing and returns an error wrapping ErrHintDropped.
// It satisfies the coordinator's Hints interface.
func (l *HintLog) StoreHint(target string, loc replica.Loc, keyspace string, key []byte, set version.Set, sync bool) error {
	return l.StoreHintBorn(target, loc, keyspace, key, set, sync, time.Time{})
}

// StoreHintBorn is StoreHint of a write first hinted at born (zero or
// ahead of this node's clock: now), the age MaxAge bounds: a hint handed
// on from another node keeps its age.
func (l *HintLog) StoreHintBorn(target string, loc replica.Loc, keyspace string, key []byte, set version.Set, sync bool, born time.Time) error {
	if target == "" || len(target) > 255 || len(keyspace) > 255 {
		return fmt.Errorf("repair: bad hint target %q or keyspace %q", target, keyspace)
	}
	if len(key) > replica.MaxKeyLen {
		return replica.ErrKeyTooLong
	}
	if l.cfg.Off {
		return l.refuse(target, loc, DropOff, "hints are off on this node")
	}
	now := l.cfg.Now()
	hk := hintKey(target, loc, key)
	mu := l.lock(hk)
	mu.Lock()
	defer mu.Unlock()
	if born.IsZero() || born.After(now) {
		born = now
	}
	stored, merged := now, set
	raw, err := l.eng.Get(hk)
	exists := err == nil
	switch {
	case errors.Is(err, engine.ErrNotFound):
	case err != nil:
		return fmt.Errorf("repair: read hint: %w", err)
	default:
		// A hint that does not decode is replaced (delivery would set it aside).
		if s, b, _, cur, derr := l.decodeValue(raw); derr == nil {
			stored, merged = s, version.Merge(cur, set)
			if b.Before(born) {
				born = b
			}
		}
	}
	if err := merged.Check(version.Limits{}); err != nil {
		// Stored, it would not decode at delivery and would be set
		// aside with the writes it already holds: keep those, refuse
		// this one (its partition is marked for repair).
		return l.refuse(target, loc, DropLimit, fmt.Sprintf("the hint for %s would pass a hard limit: %v", target, err))
	}
	val := encodeHintValue(stored, born, keyspace, merged)
	delta := int64(len(val) - len(raw))
	if !exists {
		delta = int64(len(hk) + len(val))
	}
	l.mu.Lock()
	a := l.acct(target)
	var reason, why string
	switch {
	case a.count > 0 && !a.oldest.IsZero() && now.Sub(a.oldest) > l.cfg.Window:
		reason, why = DropWindow, fmt.Sprintf("%s has been owed hints for %v, over the %v hint window", target, now.Sub(a.oldest).Round(time.Second), l.cfg.Window)
	case !exists && a.count+1 > l.cfg.MaxCount:
		reason, why = DropCount, fmt.Sprintf("%s already has %d hints, the most held per target", target, a.count)
	case delta > 0 && a.bytes+delta > l.cfg.MaxBytes:
		reason, why = DropBytes, fmt.Sprintf("hints for %s would take %d bytes, over the %d held per target", target, a.bytes+delta, l.cfg.MaxBytes)
	}
	if reason == "" {
		if !exists {
			a.count++
		}
		a.bytes += delta
		// The target is owed this write from now on, and the hint's own
		// time when that hint was owed already. One older than every
		// hint owed (or with none owed) was kept for another replica (a
		// refusal, a partition moved off the target): the write merged
		// into it is owed from now, not from that hint's time.
		owed := stored
		if exists && (a.oldest.IsZero() || stored.Before(a.oldest)) {
			owed = now
		}
		if a.oldest.IsZero() || owed.Before(a.oldest) {
			a.oldest = owed
		}
		if a.passMin.IsZero() || owed.Before(a.passMin) {
			a.passMin = owed
		}
		a.refusedOnly = false // a write not yet offered to the target
	}
	l.mu.Unlock()
	if reason != "" {
		return l.refuse(target, loc, reason, why)
	}
	b := l.eng.NewBatch()
	defer b.Close()
	b.Set(hk, val)
	if err := b.Commit(sync); err != nil {
		l.mu.Lock()
		if !exists {
			a.count--
		}
		a.bytes -= delta
		l.mu.Unlock()
		return fmt.Errorf("repair: store hint: %w", err)
	}
	return nil
}

func (l *HintLog) refuse(target string, loc replica.Loc, reason, why string) error {
	l.countDropped(reason, 1)
	if l.cfg.OnDropped != nil {
		l.cfg.OnDropped(target, loc)
	}
	switch reason {
	case DropOff, DropLimit:
		return fmt.Errorf("%w: %w: %s", ErrHintDropped, errRefusedForGood, why)
	case DropWindow:
		return fmt.Errorf("%w: %w: %s", ErrHintDropped, ErrHintWindow, why)
	}
	return fmt.Errorf("%w: %s", ErrHintDropped, why)
}

// errRefusedForGood marks a refusal that asking again cannot change
// (hints off, a set past a hard limit), unlike a full target.
var errRefusedForGood = errors.New("refused for good")

func (l *HintLog) countDropped(reason string, n uint64) {
	l.mu.Lock()
	l.mu.dropped[reason] += n
	l.mu.Unlock()
}

// Hints calls fn for every hint held for target, in key order, until fn
// returns false. With target "" it visits hints for every target. Hints
// that do not decode are skipped (delivery sets them aside).
func (l *HintLog) Hints(target string, fn func(Hint) bool) error {
	lower, upper := []byte{replica.HintPrefix}, []byte{replica.HintPrefix + 1}
	if target != "" {
		lower = hintPrefix(target)
		upper = prefixEnd(lower)
	}
	return l.scan(lower, upper, func(k, v []byte) bool {
		h, err := l.decode(k, v)
		return err != nil || fn(h)
	})
}

// Delete removes a delivered hint, unless it changed since it was read (a
// newer write folded in): then it stays for the next round.
func (l *HintLog) Delete(h Hint) (bool, error) {
	hk := hintKey(h.Target, h.Loc, h.Key)
	return l.remove(hk, func(v []byte) bool {
		_, _, _, cur, err := l.decodeValue(v)
		return err == nil && cur.Equal(h.Set)
	})
}

// remove deletes the hint under hk if keep(value) says so, updating the
// accounting.
func (l *HintLog) remove(hk []byte, match func(v []byte) bool) (bool, error) {
	mu := l.lock(hk)
	mu.Lock()
	defer mu.Unlock()
	raw, err := l.eng.Get(hk)
	if errors.Is(err, engine.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("repair: read hint: %w", err)
	}
	if match != nil && !match(raw) {
		return false, nil
	}
	b := l.eng.NewBatch()
	defer b.Close()
	b.Delete(hk)
	if err := b.Commit(false); err != nil {
		return false, fmt.Errorf("repair: delete hint: %w", err)
	}
	target, _, _, _ := parseHintKey(hk)
	l.forget(target, int64(len(hk)+len(raw)))
	return true, nil
}

func (l *HintLog) forget(target string, size int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a := l.acct(target)
	a.count--
	a.bytes -= size
	if a.count <= 0 {
		a.count, a.bytes, a.oldest = 0, 0, time.Time{}
	}
}

// drop removes a hint undelivered and counts it under reason.
func (l *HintLog) drop(h Hint, reason string) error {
	ok, err := l.remove(hintKey(h.Target, h.Loc, h.Key), nil)
	if err != nil || !ok {
		return err
	}
	l.countDropped(reason, 1)
	if l.cfg.OnDropped != nil && reason != DropNonMember && reason != DropKeyspace {
		l.cfg.OnDropped(h.Target, h.Loc)
	}
	return nil
}

// quarantine moves an entry that does not decode from the hint key space
// to the quarantine prefix, so that delivery goes on with the others.
func (l *HintLog) quarantine(hk []byte) error {
	mu := l.lock(hk)
	mu.Lock()
	defer mu.Unlock()
	raw, err := l.eng.Get(hk)
	if errors.Is(err, engine.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("repair: read hint: %w", err)
	}
	b := l.eng.NewBatch()
	defer b.Close()
	b.Set(append([]byte{replica.HintQuarantinePrefix}, hk[1:]...), raw)
	b.Delete(hk)
	if err := b.Commit(false); err != nil {
		return fmt.Errorf("repair: quarantine hint: %w", err)
	}
	target, _, _, _ := parseHintKey(hk)
	l.forget(target, int64(len(hk)+len(raw)))
	l.mu.Lock()
	l.acct(target).quarantined++
	l.mu.Unlock()
	return nil
}

// Purge drops every hint held for target, quarantined ones included, and
// returns how many it dropped.
func (l *HintLog) Purge(target string) (uint64, error) {
	if target == "" || len(target) > 255 {
		return 0, fmt.Errorf("repair: bad hint target %q", target)
	}
	n, err := l.dropAll(target, DropPurged)
	if err != nil {
		return n, err
	}
	qp := append([]byte{replica.HintQuarantinePrefix}, hintPrefix(target)[1:]...)
	var keys [][]byte
	if err := l.scan(qp, prefixEnd(qp), func(k, _ []byte) bool { keys = append(keys, slices.Clone(k)); return true }); err != nil {
		return n, err
	}
	if len(keys) > 0 {
		b := l.eng.NewBatch()
		defer b.Close()
		for _, k := range keys {
			b.Delete(k)
		}
		if err := b.Commit(false); err != nil {
			return n, fmt.Errorf("repair: purge quarantined hints: %w", err)
		}
		l.mu.Lock()
		l.acct(target).quarantined = 0
		l.mu.Unlock()
	}
	return n + uint64(len(keys)), nil
}

// dropAll removes every hint held for target, counted under reason.
func (l *HintLog) dropAll(target, reason string) (uint64, error) {
	p := hintPrefix(target)
	var n uint64
	for {
		var keys [][]byte
		err := l.scan(p, prefixEnd(p), func(k, _ []byte) bool {
			keys = append(keys, slices.Clone(k))
			return len(keys) < 1024
		})
		if err != nil {
			return n, err
		}
		if len(keys) == 0 {
			return n, nil
		}
		removed := uint64(0)
		for _, k := range keys {
			ok, err := l.remove(k, nil)
			if err != nil {
				return n, err
			}
			if ok {
				removed++
				// As drop does: what the hint carried now waits for
				// anti-entropy, its partition first.
				if _, loc, _, parsed := parseHintKey(k); parsed && l.cfg.OnDropped != nil {
					l.cfg.OnDropped(target, loc)
				}
			}
		}
		n += removed
		l.countDropped(reason, removed)
	}
}

// forgetTarget drops the accounting of a target that left the topology
// once it holds no hints (quarantined ones included), so that the log's
// accounting holds the targets it has hints for, not every node ever
// hinted.
func (l *HintLog) forgetTarget(target string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if a := l.mu.targets[target]; a != nil && a.count == 0 && a.quarantined == 0 {
		delete(l.mu.targets, target)
	}
}

// Targets lists the nodes this log holds at least one hint for, sorted.
func (l *HintLog) Targets() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for t, a := range l.mu.targets {
		if a.count > 0 {
			out = append(out, t)
		}
	}
	slices.Sort(out)
	return out
}

// Owed lists, sorted, the nodes this log holds hints for that are still
// on their way: a target whose every hint was refused by it in the last
// full delivery pass (and none stored or changed since that pass began)
// is left out. Those hints wait for the target to take them (or expire),
// but holding the target out of read quorums (the coordinator counts no
// replica still owed hints) would not bring them closer: it would only
// cost reads a replica for up to the hint window.
func (l *HintLog) Owed() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for t, a := range l.mu.targets {
		if a.owed() {
			out = append(out, t)
		}
	}
	slices.Sort(out)
	return out
}

// Stats describes every target the log holds hints or quarantined hints
// for, sorted by target.
func (l *HintLog) Stats() []TargetStats {
	now := l.cfg.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []TargetStats
	for t, a := range l.mu.targets {
		if a.count == 0 && a.quarantined == 0 {
			continue
		}
		s := TargetStats{Target: t, Count: a.count, Bytes: a.bytes, Quarantined: a.quarantined, Rate: a.rate(now),
			Refused: a.refused, Owed: a.owed()}
		if a.count > 0 && !a.oldest.IsZero() {
			s.OldestAge = max(now.Sub(a.oldest), 0)
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b TargetStats) int {
		if a.Target < b.Target {
			return -1
		}
		if a.Target > b.Target {
			return 1
		}
		return 0
	})
	return out
}

// Dropped returns how many hints were dropped, by reason.
func (l *HintLog) Dropped() map[string]uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]uint64, len(l.mu.dropped))
	for r, n := range l.mu.dropped {
		out[r] = n
	}
	return out
}

// noteDelivered records n hints delivered to target at now.
func (l *HintLog) noteDelivered(target string, now time.Time, n int) {
	sec := now.Unix()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := &l.acct(target).delivered[sec%60]
	if b.sec != sec {
		b.sec, b.n = sec, 0
	}
	b.n += int64(n)
}

// rate is the hints delivered per second over the last minute.
func (a *targetAcct) rate(now time.Time) float64 {
	sec := now.Unix()
	var n int64
	for _, b := range a.delivered {
		if b.sec > sec-60 && b.sec <= sec {
			n += b.n
		}
	}
	return float64(n) / 60
}

// beginPass marks the start of a delivery pass over target's hints.
func (l *HintLog) beginPass(target string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.acct(target).passMin = time.Time{}
}

// endPass sets target's oldest hint time after a full delivery pass:
// the oldest the pass left behind or stored since it began; and, from the
// hints the pass left because the target refused them, whether those are
// all it holds (nothing stored or changed since the pass began). When the
// pass left only hints that count for no oldest (refused past the window,
// waiting for another replica to take them), the target is owed nothing
// on its way: its oldest is cleared (zero), and the window, which bounds
// how long a target is owed hints, does not refuse it new ones.
func (l *HintLog) endPass(target string, oldestLeft time.Time, refused, notOwed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a := l.acct(target)
	a.refused = int64(refused)
	left := int64(refused + notOwed) // left in place, not on their way to the target
	a.refusedOnly = left > 0 && a.passMin.IsZero() && a.count <= left
	if a.count == 0 {
		a.oldest = time.Time{}
		return
	}
	o := oldestLeft
	if o.IsZero() || (!a.passMin.IsZero() && a.passMin.Before(o)) {
		o = a.passMin
	}
	a.oldest = o
}
