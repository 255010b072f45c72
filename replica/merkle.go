package replica

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/meridiankv/meridian/engine"
	"github.com/meridiankv/meridian/version"
)

// Merkle trees for anti-entropy.
//
// Every (keyspace, partition) gets a one-level tree of Buckets leaves. A key
// falls in the leaf Bucket(key) and contributes Contribution(key, digest)
// (digest is version.Set.Digest of its stored set) to it; a leaf is the XOR
// of its keys' contributions. XOR makes the leaves independent of write
// order and lets a write replace its key's contribution in O(1): XOR out the
// old one, XOR in the new one. Two replicas holding equal data therefore
// hold equal leaves; a differing leaf names the bucket to compare key by key
// (BucketDigests).
//
// Trees live in memory only. A partition's tree is built on first use
// (Leaves, BucketDigests) by scanning a snapshot of the partition, and is
// kept exact from then on by every write. After a restart or a crash the
// trees are simply rebuilt on first use.
//
// Exactness while a build races with writes: a tree is registered (state
// pending) before it is built. Writes look the tree up under their key's
// stripe lock and, if it exists, commit under its read lock; a write that
// sees a pending tree changes no leaf. The build
//
//  1. cycles every stripe lock once, so every write that looked up the
//     partition before the tree was registered has committed;
//  2. takes the tree's write lock (every in-flight write has committed),
//     takes an engine snapshot and marks the tree building, and unlocks;
//  3. scans the snapshot without any lock, while writes XOR their deltas
//     (old ^ new contribution) into the leaves;
//  4. XORs the scan result into the leaves.
//
// A write that committed before the snapshot is in the scan and changed no
// leaf; one that committed after it changed the leaves by exactly its delta,
// and the first such delta for a key starts from the state the scan saw, so
// the deltas telescope. The result is exact, and writes never wait for a
// scan.

// Buckets is the number of leaves of every partition's tree.
const Buckets = 256

// Bucket returns the leaf a user key falls in: the low 8 bits of
// xxhash64(key). Partitions take the top bits of the same hash
// (placement.Ring.Partition), so buckets spread evenly within a partition.
func Bucket(key []byte) int { return bucketOf(xxhash.Sum64(key)) }

func bucketOf(h uint64) int { return int(h & (Buckets - 1)) }

// KeyDigest is one key and the digest of its stored sibling set.
type KeyDigest struct {
	Key    []byte
	Digest uint64
}

// Contribution is what a key whose stored set has the given digest
// (version.Set.Digest) XORs into its leaf. Every replica computes it alike.
func Contribution(key []byte, digest uint64) uint64 {
	return mix(xxhash.Sum64(key), digest)
}

// mix combines a key hash and a set digest into one well-spread value
// (splitmix64 finalizers), so that XORing many of them cancels nothing
// systematically.
func mix(keyHash, digest uint64) uint64 {
	return fmix(keyHash ^ fmix(digest^0x243f6a8885a308d3))
}

func fmix(z uint64) uint64 {
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// contribution is a stored set's share of its leaf; an empty set (or an
// absent key) contributes nothing.
func contribution(keyHash uint64, set version.Set) uint64 {
	if set.IsEmpty() {
		return 0
	}
	return mix(keyHash, set.Digest())
}

const (
	treePending  = iota // registered, writes do not touch the leaves
	treeBuilding        // snapshot taken, writes XOR their deltas
)

// tree is one partition's leaves.
type tree struct {
	// mu: writes hold it shared around commit and leaf update; a build
	// holds it exclusively to switch state (and take its snapshot).
	mu    sync.RWMutex
	state int // guarded by mu
	// built is set once the scan's result is in the leaves (under buildMu).
	built atomic.Bool
	// buildMu serializes builds of this tree; flushed (guarded by it)
	// records that the stripe locks were cycled after registration.
	buildMu sync.Mutex
	flushed bool
	leaves  [Buckets]atomic.Uint64
}

func (t *tree) xor(i int, d uint64) {
	l := &t.leaves[i]
	for {
		old := l.Load()
		if l.CompareAndSwap(old, old^d) {
			return
		}
	}
}

// trees is the registry of a store's partition trees.
type trees struct {
	mu sync.RWMutex
	m  map[Loc]*tree
}

// get returns loc's tree, or nil if it has none.
func (ts *trees) get(loc Loc) *tree {
	ts.mu.RLock()
	t := ts.m[loc]
	ts.mu.RUnlock()
	return t
}

// getOrAdd returns loc's tree, registering a pending one if it has none.
func (ts *trees) getOrAdd(loc Loc) *tree {
	if t := ts.get(loc); t != nil {
		return t
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.m == nil {
		ts.m = make(map[Loc]*tree)
	}
	t := ts.m[loc]
	if t == nil {
		t = &tree{}
		ts.m[loc] = t
	}
	return t
}

// commitData commits b, which writes the data key of (loc, key with hash h)
// from old to next, keeping loc's tree exact. The caller holds the key's
// stripe lock. With noSyncWait the batch is committed with
// CommitNoSyncWait and its wait returned; otherwise with Commit(sync).
func (s *Store) commitData(b engine.Batch, loc Loc, h uint64, old, next version.Set, sync, noSyncWait bool) (func() error, error) {
	t := s.trees.get(loc)
	var d uint64
	if t != nil {
		d = contribution(h, old) ^ contribution(h, next)
		t.mu.RLock()
	}
	wait := noWait
	var err error
	if noSyncWait {
		wait, err = b.CommitNoSyncWait()
	} else {
		err = b.Commit(sync)
	}
	if t != nil {
		if err == nil && d != 0 && t.state != treePending {
			t.xor(bucketOf(h), d)
		}
		t.mu.RUnlock()
	}
	return wait, err
}

// SetLogger sets the logger for tree builds: a build scanning for longer
// than treeProgressEvery logs its progress at that interval, and its end.
// Without a logger, builds log nothing.
func (s *Store) SetLogger(l *slog.Logger) { s.logger.Store(l) }

// treeProgressEvery is how often a long tree build logs its progress.
const treeProgressEvery = 5 * time.Second

// Leaves returns the partition's leaves (a copy, len Buckets). Leaf i is the
// XOR over the keys in bucket i of Contribution(key, set.Digest()); an
// absent key or an empty set contributes nothing. Two replicas with equal
// data have equal leaves. The tree of a partition is built on first use by
// scanning the partition and from then on kept current by every write.
func (s *Store) Leaves(loc Loc) ([]uint64, error) {
	t, err := s.builtTree(loc, nil)
	if err != nil {
		return nil, err
	}
	out := make([]uint64, Buckets)
	for i := range out {
		out[i] = t.leaves[i].Load()
	}
	return out, nil
}

// HasTree reports whether loc's tree is kept (built, or registered to be).
func (s *Store) HasTree(loc Loc) bool { return s.trees.get(loc) != nil }

// ScanLeaves is Leaves computed by a scan of the partition, keeping no
// tree: for a partition this node does not hold, which a peer may still
// ask about, and whose tree would otherwise be kept for good.
func (s *Store) ScanLeaves(loc Loc) ([]uint64, error) {
	snap, err := s.eng.NewSnapshot()
	if err != nil {
		return nil, fmt.Errorf("replica: snapshot: %w", err)
	}
	defer snap.Close()
	out := make([]uint64, Buckets)
	err = s.scanPartition(snap, loc, nil, func(_ []byte, h, digest uint64) {
		out[bucketOf(h)] ^= mix(h, digest)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// BucketDigests lists the keys (with digests) stored in the given buckets of
// a partition, in key order. Keys holding an empty set are left out (they
// contribute nothing to the leaves). If the partition's tree is not built
// yet, the same scan builds it.
func (s *Store) BucketDigests(loc Loc, buckets []int) ([]KeyDigest, error) {
	return s.bucketDigests(loc, buckets, true)
}

// ScanBucketDigests is BucketDigests by a scan alone, keeping no tree (see
// ScanLeaves).
func (s *Store) ScanBucketDigests(loc Loc, buckets []int) ([]KeyDigest, error) {
	return s.bucketDigests(loc, buckets, false)
}

func (s *Store) bucketDigests(loc Loc, buckets []int, keep bool) ([]KeyDigest, error) {
	var want [Buckets]bool
	for _, b := range buckets {
		if b < 0 || b >= Buckets {
			return nil, fmt.Errorf("replica: bucket %d out of range [0, %d)", b, Buckets)
		}
		want[b] = true
	}
	var out []KeyDigest
	visit := func(key []byte, h uint64, digest uint64) {
		if want[bucketOf(h)] {
			out = append(out, KeyDigest{Key: append([]byte(nil), key...), Digest: digest})
		}
	}
	t := s.trees.get(loc)
	if keep && t == nil {
		t = s.trees.getOrAdd(loc)
	}
	if t != nil && !t.built.Load() {
		scanned, err := s.buildTree(loc, t, visit)
		if err != nil {
			return nil, err
		}
		if scanned {
			return out, nil
		}
		// Another build won the race: scan for ourselves.
		out = nil
	}
	snap, err := s.eng.NewSnapshot()
	if err != nil {
		return nil, fmt.Errorf("replica: snapshot: %w", err)
	}
	defer snap.Close()
	if err := s.scanPartition(snap, loc, func(h uint64) bool { return want[bucketOf(h)] }, visit); err != nil {
		return nil, err
	}
	return out, nil
}

// builtTree returns loc's tree, building it first if it is not built yet.
func (s *Store) builtTree(loc Loc, visit func(key []byte, h, digest uint64)) (*tree, error) {
	t := s.trees.getOrAdd(loc)
	if t.built.Load() {
		return t, nil
	}
	if _, err := s.buildTree(loc, t, visit); err != nil {
		return nil, err
	}
	return t, nil
}

// buildTree builds t (see the comment at the top of the file) unless
// another build already did; visit, if not nil, sees every key the build's
// scan contributes. It reports whether this call scanned.
func (s *Store) buildTree(loc Loc, t *tree, visit func(key []byte, h, digest uint64)) (bool, error) {
	t.buildMu.Lock()
	defer t.buildMu.Unlock()
	if t.built.Load() {
		return false, nil
	}
	if !t.flushed {
		// Wait out every write that may have looked the partition up
		// before its tree was registered: they hold their stripe lock
		// until they have committed.
		for i := range s.locks {
			s.locks[i].Lock()
			//lint:ignore SA2001 the empty critical section is the point
			s.locks[i].Unlock()
		}
		t.flushed = true
	}
	t.mu.Lock()
	snap, err := s.eng.NewSnapshot()
	if err != nil {
		t.mu.Unlock()
		return false, fmt.Errorf("replica: snapshot for Merkle tree: %w", err)
	}
	t.state = treeBuilding
	t.mu.Unlock()
	defer snap.Close()

	var acc [Buckets]uint64
	err = s.scanPartition(snap, loc, nil, func(key []byte, h, digest uint64) {
		if visit != nil {
			visit(key, h, digest)
		}
		acc[bucketOf(h)] ^= mix(h, digest)
	})
	if err != nil {
		// Back to pending: the deltas gathered since the snapshot are
		// discarded with the leaves, and the next build starts afresh.
		t.mu.Lock()
		t.state = treePending
		for i := range t.leaves {
			t.leaves[i].Store(0)
		}
		t.mu.Unlock()
		return false, fmt.Errorf("replica: build Merkle tree of %v: %w", loc, err)
	}
	for i, v := range acc {
		if v != 0 {
			t.xor(i, v)
		}
	}
	t.built.Store(true)
	return true, nil
}

// scanPartition calls fn for every key of loc in r holding a non-empty set,
// in key order, with the key's hash and its set's digest. If want is not
// nil, keys whose hash it refuses are skipped without decoding. Long scans
// log their progress.
func (s *Store) scanPartition(r engine.Reader, loc Loc, want func(h uint64) bool, fn func(key []byte, h, digest uint64)) error {
	lower, upper := PartitionBounds(loc)
	it, err := r.NewIter(lower, upper)
	if err != nil {
		return err
	}
	defer it.Close()
	log := s.logger.Load()
	every := treeProgressEvery
	if s.progressEvery != 0 {
		every = s.progressEvery
	}
	start := time.Now()
	next := start.Add(every)
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		n++
		if log != nil && n%1024 == 0 {
			if now := time.Now(); now.After(next) {
				next = now.Add(every)
				log.Info("replica: scanning partition for Merkle tree",
					"keyspace", loc.Keyspace, "partition", loc.Partition, "keys", n, "elapsed", now.Sub(start).Round(time.Millisecond))
			}
		}
		key := it.Key()[len(lower):]
		h := xxhash.Sum64(key)
		if want != nil && !want(h) {
			continue
		}
		set, err := version.DecodeSet(it.Value())
		if err != nil {
			return fmt.Errorf("replica: decode stored set of %q: %w", key, err)
		}
		if set.IsEmpty() {
			continue
		}
		fn(key, h, set.Digest())
	}
	if err := it.Error(); err != nil {
		return err
	}
	if log != nil && time.Since(start) >= every {
		log.Info("replica: scanned partition for Merkle tree",
			"keyspace", loc.Keyspace, "partition", loc.Partition, "keys", n, "elapsed", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// DeleteIfUnchanged deletes key if its stored set still Equals set
// (tombstone collection once every replica was proven to hold it), keeping
// the tree exact; it reports whether it deleted. An absent key is not
// deleted. The delete is not fsynced: lost in a crash, the set comes back
// and is collected again.
func (s *Store) DeleteIfUnchanged(loc Loc, key []byte, set version.Set) (bool, error) {
	if len(key) > MaxKeyLen {
		return false, ErrKeyTooLong
	}
	k := DataKey(loc, key)
	h := xxhash.Sum64(key)
	mu := &s.locks[stripeOf(loc.Keyspace, h)]
	mu.Lock()
	defer mu.Unlock()
	raw, err := s.eng.Get(k)
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("replica: read: %w", err)
	}
	cur, err := version.DecodeSet(raw)
	if err != nil {
		return false, fmt.Errorf("replica: decode stored set: %w", err)
	}
	if !cur.Equal(set) {
		return false, nil
	}
	b := s.eng.NewBatch()
	defer b.Close()
	b.Delete(k)
	_, err = s.commitData(b, loc, h, cur, version.Set{}, false, false)
	s.rows.remove(k, h)
	if err != nil {
		return false, fmt.Errorf("replica: delete: %w", err)
	}
	return true, nil
}

// Partitions lists the (keyspace, partition) locations that hold data on
// this store, in order: one seek per partition, not a scan of every key.
func (s *Store) Partitions() ([]Loc, error) {
	it, err := s.eng.NewIter([]byte{prefixData}, []byte{prefixData + 1})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []Loc
	for ok := it.First(); ok; {
		loc, _, err := DecodeDataKey(it.Key())
		if err != nil {
			return nil, err
		}
		out = append(out, loc)
		if loc.Keyspace == ^uint32(0) && loc.Partition == 0xffff {
			break
		}
		_, upper := PartitionBounds(loc)
		ok = it.SeekGE(upper)
	}
	if err := it.Error(); err != nil {
		return nil, err
	}
	return out, nil
}
