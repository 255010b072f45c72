package replica

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/meridiankv/meridian/engine"
	"github.com/meridiankv/meridian/version"
)

const (
	prefixData = 'd'
	prefixHint = 'h'
	prefixMeta = 'm'

	lockStripes = 4096

	metaClean = "clean-shutdown"
)

// MaxKeyLen is the longest user key the layout accepts.
const MaxKeyLen = 64 << 10

// ErrKeyTooLong is returned for a key longer than MaxKeyLen.
var ErrKeyTooLong = errors.New("replica: key longer than 64 KiB")

// Loc names where a key lives: its keyspace's numeric ID and its partition.
type Loc struct {
	Keyspace  uint32
	Partition int
}

// Store is a node's local data on top of an engine.
type Store struct {
	eng   engine.Engine
	actor string
	past  []string
	ctr   *counter
	locks [lockStripes]sync.Mutex
	rows  *rowCache // encoded sets of hot keys (rowcache.go); nil: none

	trees         trees // Merkle trees of the partitions, built on first use (merkle.go)
	logger        atomic.Pointer[slog.Logger]
	gate          atomic.Pointer[func() error] // SetWriteGate
	progressEvery time.Duration                // tree build progress interval; 0: treeProgressEvery (tests set it)
}

// Options tune a store. Zero values mean the defaults.
type Options struct {
	// RowCacheSize bounds, in bytes, the cache of recently read and
	// written sibling sets that lets reads and read-modify-writes of hot
	// keys skip the engine (default DefaultRowCacheSize; negative: none).
	RowCacheSize int64
	// Random is the randomness for incarnations (default crypto/rand).
	Random io.Reader
}

// DefaultRowCacheSize is the row cache's default size.
const DefaultRowCacheSize = 32 << 20

// Open wraps an engine with the default options. nodeID is this node's
// ID; the store mints version dots under an actor derived from it and a
// random incarnation (see identity.go): new for a new store and after
// every unclean shutdown.
func Open(eng engine.Engine, nodeID string) (*Store, error) {
	return OpenWith(eng, nodeID, Options{})
}

// OpenWith is Open with options.
func OpenWith(eng engine.Engine, nodeID string, opts Options) (*Store, error) {
	if nodeID == "" {
		return nil, errors.New("replica: empty node ID")
	}
	random := opts.Random
	if random == nil {
		random = rand.Reader
	}
	if opts.RowCacheSize == 0 {
		opts.RowCacheSize = DefaultRowCacheSize
	}
	_, err := eng.Get(metaKey(metaClean))
	clean := err == nil
	if err != nil && !errors.Is(err, engine.ErrNotFound) {
		return nil, fmt.Errorf("replica: read shutdown marker: %w", err)
	}
	actor, past, ctr, err := openIdentity(eng, nodeID, clean, random)
	if err != nil {
		return nil, err
	}
	return &Store{eng: eng, actor: actor, past: past, ctr: ctr, rows: newRowCache(opts.RowCacheSize)}, nil
}

// Actor is the name this store mints version dots under.
func (s *Store) Actor() string { return s.actor }

// CacheStats returns the row cache's counters and sizes (row_cache_*), for
// metrics.
func (s *Store) CacheStats() map[string]float64 { return s.rows.stats() }

// Engine returns the underlying engine.
func (s *Store) Engine() engine.Engine { return s.eng }

// Close records a clean shutdown; it does not close the engine.
func (s *Store) Close() error {
	b := s.eng.NewBatch()
	defer b.Close()
	b.Set(metaKey(metaClean), []byte{1})
	if err := b.Commit(true); err != nil {
		return fmt.Errorf("replica: record clean shutdown: %w", err)
	}
	return nil
}

// SetWriteGate makes every write of data (Update and the calls built on
// it: client writes, replica writes, repairs, transfers) first ask gate,
// and fail with its error, writing nothing, when it returns one: a node
// low on disk refuses new data. Writes that free space (tombstone
// collection, dropping a partition) and metadata are not gated.
func (s *Store) SetWriteGate(gate func() error) { s.gate.Store(&gate) }

// WritesRefused is the write gate's answer now: nil while data writes are
// accepted.
func (s *Store) WritesRefused() error {
	if g := s.gate.Load(); g != nil && *g != nil {
		return (*g)()
	}
	return nil
}

// Get returns the stored sibling set of key; an absent key is an empty set.
func (s *Store) Get(loc Loc, key []byte) (version.Set, error) {
	raw, set, cached, err := s.read(loc, key)
	if err != nil || !cached {
		return set, err
	}
	return decodeStored(slices.Clone(raw)) // callers may keep what they get
}

// GetEncoded is Get without the decoding: the stored set's encoding (as
// version.Set.Encode writes it), nil for an absent key, for a caller that
// only passes it on — a peer's replica read. The bytes may be the row
// cache's own: the caller must not modify them.
func (s *Store) GetEncoded(loc Loc, key []byte) ([]byte, error) {
	raw, _, _, err := s.read(loc, key)
	return raw, err
}

// read reads key: from the row cache, its encoding (cached: shared, never
// to be modified); from the engine, its encoding (the caller's own) and
// the set decoded from it. raw is nil for an absent key.
func (s *Store) read(loc Loc, key []byte) (raw []byte, set version.Set, cached bool, err error) {
	if len(key) > MaxKeyLen {
		return nil, version.Set{}, false, ErrKeyTooLong
	}
	k := DataKey(loc, key)
	h := xxhash.Sum64(key)
	if raw, ok := s.rows.get(k, h); ok {
		return s.hit(raw)
	}
	if s.rows == nil {
		set, raw, _, err := s.fill(k, h)
		return raw, set, false, err
	}
	// A miss is filled under the key's lock, so that no write can land
	// between the engine read and the fill (see rowCache).
	mu := &s.locks[stripeOf(loc.Keyspace, h)]
	mu.Lock()
	defer mu.Unlock()
	if raw, ok := s.rows.lookup(k, h); ok {
		return s.hit(raw)
	}
	set, raw, _, err = s.fill(k, h)
	return raw, set, false, err
}

// hit is read's answer for a cached encoding: the encoding, unless the
// engine failed.
func (s *Store) hit(raw []byte) ([]byte, version.Set, bool, error) {
	if err := s.cachedOK(); err != nil {
		return nil, version.Set{}, false, err
	}
	return raw, version.Set{}, true, nil
}

// readLocked returns the stored set of engine key k (whose user key's
// xxhash is h), from the row cache or the engine, and whether the key is
// stored (so cached, unless too large to be). The caller holds k's stripe
// lock.
func (s *Store) readLocked(k []byte, h uint64) (version.Set, bool, error) {
	if raw, ok := s.rows.get(k, h); ok {
		set, err := s.decodeCached(raw)
		return set, true, err
	}
	set, _, found, err := s.fill(k, h)
	return set, found, err
}

// decodeCached decodes a copy of a cached set (callers may keep what they
// get), unless the engine failed: then, as the engine would, it returns the
// failure (a set the cache holds may be one whose fsync failed).
func (s *Store) decodeCached(raw []byte) (version.Set, error) {
	if err := s.cachedOK(); err != nil {
		return version.Set{}, err
	}
	return decodeStored(slices.Clone(raw))
}

// cachedOK is nil unless the engine failed: then a cached set reads as
// the failure, as the engine would (it may be one whose fsync failed).
func (s *Store) cachedOK() error {
	if err := s.eng.Failure(); err != nil {
		return fmt.Errorf("replica: read: %w", err)
	}
	return nil
}

// fill reads k from the engine, decodes it, and caches its encoding;
// found says whether the engine holds anything. set and raw (which set
// shares) are the caller's own: the cache keeps a copy. With a row cache
// the caller holds k's stripe lock.
func (s *Store) fill(k []byte, h uint64) (set version.Set, raw []byte, found bool, err error) {
	raw, err = s.eng.Get(k)
	if errors.Is(err, engine.ErrNotFound) {
		return version.Set{}, nil, false, nil
	}
	if err != nil {
		return version.Set{}, nil, false, fmt.Errorf("replica: read: %w", err)
	}
	if set, err = decodeStored(raw); err != nil { // Get returned a copy: ours
		return version.Set{}, nil, false, err
	}
	if s.rows != nil {
		s.rows.set(k, h, slices.Clone(raw))
	}
	return set, raw, true, nil
}

// decodeStored decodes a stored set aliasing raw, which the caller owns.
func decodeStored(raw []byte) (version.Set, error) {
	set, err := version.DecodeSetShared(raw)
	if err != nil {
		return version.Set{}, fmt.Errorf("replica: decode stored set: %w", err)
	}
	return set, nil
}

// Update runs a read-modify-write of key under its lock: fn gets the stored
// set and returns the set to store. The result is written with the given
// durability and returned. If fn returns an error nothing is written.
func (s *Store) Update(loc Loc, key []byte, sync bool, fn func(cur version.Set) (version.Set, error)) (version.Set, error) {
	if len(key) > MaxKeyLen {
		return version.Set{}, ErrKeyTooLong
	}
	return s.update(DataKey(loc, key), loc, key, sync, fn)
}

func (s *Store) update(k []byte, loc Loc, key []byte, sync bool, fn func(cur version.Set) (version.Set, error)) (version.Set, error) {
	w, err := s.apply(k, loc, key, sync, fn)
	if err != nil {
		return version.Set{}, err
	}
	if err := w.Wait(); err != nil {
		return version.Set{}, err
	}
	return w.Set, nil
}

// UpdateNoSyncWait is Update for a durable write that returns once the new
// set is visible, before its fsync: the caller can send it to other
// replicas meanwhile, and must call wait (which returns once the local copy
// is durable) before counting this replica's acknowledgement.
func (s *Store) UpdateNoSyncWait(loc Loc, key []byte, fn func(cur version.Set) (version.Set, error)) (version.Set, func() error, error) {
	w, err := s.UpdateEncoded(loc, key, true, fn)
	if err != nil {
		return version.Set{}, nil, err
	}
	return w.Set, w.Wait, nil
}

// Written is what a read-modify-write stored, and its pending fsync.
type Written struct {
	Set version.Set
	// Encoded is Set's encoding as written to the engine, nil when the
	// update stored nothing new. It is shared: never modify it.
	Encoded []byte
	// fsync is the durable write's fsync still running (nil: none);
	// barrier: nothing was written, but what is stored may be unsynced.
	fsync   func() error
	barrier bool
	s       *Store
}

// Wait returns once the write is durable: at once for a write without
// sync. Acknowledge nothing before it returns nil.
func (w Written) Wait() error {
	var err error
	switch {
	case w.fsync != nil:
		err = w.fsync()
	case w.barrier:
		err = w.s.eng.SyncWAL()
	}
	if err != nil {
		return fmt.Errorf("replica: sync: %w", err)
	}
	return nil
}

// UpdateEncoded is Update without sync, or UpdateNoSyncWait with sync (then
// call Wait before acknowledging), that also returns the encoding it
// stored: a caller sending the new set on need not encode it again.
func (s *Store) UpdateEncoded(loc Loc, key []byte, sync bool, fn func(cur version.Set) (version.Set, error)) (Written, error) {
	if len(key) > MaxKeyLen {
		return Written{}, ErrKeyTooLong
	}
	return s.apply(DataKey(loc, key), loc, key, sync, fn)
}

func noWait() error { return nil }

// apply runs the read-modify-write under the key's lock. A durable write
// becomes visible under the lock, so the next read-modify-write of this key
// builds on it, but its fsync is waited for outside the lock (in Wait), so
// writes to a hot key share fsyncs (group commit) instead of queueing one
// fsync each. The WAL is sequential: a later write's sync covers every
// earlier one.
func (s *Store) apply(k []byte, loc Loc, key []byte, sync bool, fn func(cur version.Set) (version.Set, error)) (Written, error) {
	if err := s.WritesRefused(); err != nil {
		return Written{}, err
	}
	h := xxhash.Sum64(key)
	mu := &s.locks[stripeOf(loc.Keyspace, h)]
	mu.Lock()
	cur, found, err := s.readLocked(k, h)
	if err != nil {
		mu.Unlock()
		return Written{}, err
	}
	next, err := fn(cur)
	if err != nil {
		mu.Unlock()
		return Written{}, err
	}
	if next.Equal(cur) {
		mu.Unlock()
		// Nothing to write, but the stored content may itself be unsynced
		// (an earlier write without sync, or a durable one whose fsync is
		// still running): acknowledge it durable only after a WAL barrier.
		return Written{Set: cur, barrier: sync, s: s}, nil
	}
	b := s.eng.NewBatch()
	enc := next.Encode()
	b.Set(k, enc) // the batch copies it: enc is the caller's to share
	// A durable write is committed without waiting for its fsync (see
	// above); commitData keeps the partition's Merkle tree exact.
	wait, err := s.commitData(b, loc, h, cur, next, sync, sync)
	switch {
	case err != nil:
		s.rows.remove(k, h) // what the engine holds is not known
	case found:
		// A key written before is kept current in the cache; a new key
		// (an insert) is cached once it is read, so that bulk inserts do
		// not flush the hot keys out.
		s.rows.set(k, h, enc)
	}
	mu.Unlock()
	b.Close()
	if err != nil {
		return Written{}, fmt.Errorf("replica: write: %w", err)
	}
	w := Written{Set: next, Encoded: enc, s: s}
	if sync {
		w.fsync = wait
	}
	return w, nil
}

// Merge merges an incoming sibling set (from another replica) into the
// stored one and returns the result. Versions the incoming set has not seen
// survive; versions it has superseded go.
func (s *Store) Merge(loc Loc, key []byte, in version.Set, sync bool) (version.Set, error) {
	return s.Update(loc, key, sync, func(cur version.Set) (version.Set, error) {
		return version.Merge(cur, in), nil
	})
}

// DataKey is the engine key of a user key.
func DataKey(loc Loc, key []byte) []byte {
	k := make([]byte, 0, 7+len(key))
	k = append(k, prefixData)
	k = binary.BigEndian.AppendUint32(k, loc.Keyspace)
	k = binary.BigEndian.AppendUint16(k, uint16(loc.Partition))
	return append(k, key...)
}

// PartitionBounds returns the engine key range [lower, upper) holding one
// partition of a keyspace.
func PartitionBounds(loc Loc) (lower, upper []byte) {
	lower = DataKey(loc, nil)
	upper = DataKey(Loc{Keyspace: loc.Keyspace, Partition: loc.Partition + 1}, nil)
	if loc.Partition == 0xffff {
		upper = DataKey(Loc{Keyspace: loc.Keyspace + 1}, nil)
		if loc.Keyspace == ^uint32(0) {
			upper = []byte{prefixData + 1} // the last of all data keys
		}
	}
	return lower, upper
}

// DecodeDataKey splits an engine data key into its location and user key.
func DecodeDataKey(k []byte) (Loc, []byte, error) {
	if len(k) < 7 || k[0] != prefixData {
		return Loc{}, nil, fmt.Errorf("replica: not a data key: %x", k)
	}
	return Loc{
		Keyspace:  binary.BigEndian.Uint32(k[1:5]),
		Partition: int(binary.BigEndian.Uint16(k[5:7])),
	}, k[7:], nil
}

func isNotFound(err error) bool { return errors.Is(err, engine.ErrNotFound) }

func metaKey(name string) []byte { return append([]byte{prefixMeta}, name...) }

func readUint(eng engine.Engine, k []byte) (uint64, error) {
	v, err := eng.Get(k)
	if errors.Is(err, engine.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("malformed value of %q", k)
	}
	return binary.BigEndian.Uint64(v), nil
}

// stripeOf is the lock stripe of a key of keyspace ks whose xxhash64 is h.
func stripeOf(ks uint32, h uint64) int {
	return int((h ^ uint64(ks)*0x9e3779b97f4a7c15) % lockStripes)
}

// PutMeta durably stores a piece of node metadata (e.g. a keyspace spec).
func (s *Store) PutMeta(name string, value []byte) error {
	b := s.eng.NewBatch()
	defer b.Close()
	b.Set(metaKey(name), value)
	if err := b.Commit(true); err != nil {
		return fmt.Errorf("replica: store meta %q: %w", name, err)
	}
	return nil
}

// PutMetaNoSync stores a metadata entry without waiting for an fsync (a
// cache the node can rebuild).
func (s *Store) PutMetaNoSync(name string, value []byte) error {
	b := s.eng.NewBatch()
	defer b.Close()
	b.Set(metaKey(name), value)
	if err := b.Commit(false); err != nil {
		return fmt.Errorf("replica: store meta %q: %w", name, err)
	}
	return nil
}

// ScanMeta calls fn for every metadata entry whose name starts with prefix.
func (s *Store) ScanMeta(prefix string, fn func(name string, value []byte) error) error {
	lower := metaKey(prefix)
	upper := metaKey(prefix + "\xff")
	it, err := s.eng.NewIter(lower, upper)
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		if err := fn(string(it.Key()[1:]), append([]byte(nil), it.Value()...)); err != nil {
			return err
		}
	}
	return it.Error()
}

// DeleteMeta durably removes a piece of node metadata; removing an absent
// name is not an error.
func (s *Store) DeleteMeta(name string) error {
	b := s.eng.NewBatch()
	defer b.Close()
	b.Delete(metaKey(name))
	if err := b.Commit(true); err != nil {
		return fmt.Errorf("replica: delete meta %q: %w", name, err)
	}
	return nil
}
