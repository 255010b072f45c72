package replica

import (
	"fmt"
	"slices"

	"github.com/cespare/xxhash/v2"

	"github.com/meridiankv/meridian/version"
)

// Partition scans and drops, for partition transfers: a new owner pulls a
// partition page by page from a current owner (ScanPage), an operator
// sizes a move (PartitionBytes), and an old owner drops its copy once the
// ring no longer names it (DropPartition).

// ScanEntry is one key of a partition page with its stored encoded
// sibling set (version.Set.Encode), both owned by the caller.
type ScanEntry struct {
	Key, Set []byte
}

// dropBatch is how many keys DropPartition deletes per batch.
const dropBatch = 1000

// ScanPage returns the keys of loc strictly after `after` (empty: from the
// first key), in key order, with their stored sets: at most maxKeys
// entries, stopping once the keys and sets returned reach maxBytes. A page
// holds at least one entry when any key follows, so a key larger than
// maxBytes still moves; maxKeys or maxBytes below 1 count as 1. done
// reports that no key of loc follows the page.
//
// A page is read from one engine iterator (a consistent view); writes
// landing behind the scan's position are not in later pages, so a transfer
// catches up with an anti-entropy exchange after its last page.
func (s *Store) ScanPage(loc Loc, after []byte, maxKeys, maxBytes int) (entries []ScanEntry, done bool, err error) {
	if len(after) > MaxKeyLen {
		return nil, false, fmt.Errorf("replica: scan after a key of %d bytes: %w", len(after), ErrKeyTooLong)
	}
	maxKeys, maxBytes = max(maxKeys, 1), max(maxBytes, 1)
	lower, upper := PartitionBounds(loc)
	it, err := s.eng.NewIter(lower, upper)
	if err != nil {
		return nil, false, fmt.Errorf("replica: scan %v: %w", loc, err)
	}
	defer it.Close()
	var ok bool
	if len(after) == 0 {
		ok = it.First()
	} else {
		// The first engine key after DataKey(loc, after) is its successor
		// with a zero byte appended.
		ok = it.SeekGE(append(DataKey(loc, after), 0))
	}
	size := 0
	for ; ok; ok = it.Next() {
		if len(entries) >= maxKeys || size >= maxBytes {
			return entries, false, nil
		}
		k, v := it.Key()[len(lower):], it.Value()
		entries = append(entries, ScanEntry{Key: slices.Clone(k), Set: slices.Clone(v)})
		size += len(k) + len(v)
	}
	if err := it.Error(); err != nil {
		return nil, false, fmt.Errorf("replica: scan %v: %w", loc, err)
	}
	return entries, true, nil
}

// PartitionBytes returns the bytes of user keys and encoded sets stored
// for loc, by iterating over the partition.
func (s *Store) PartitionBytes(loc Loc) (uint64, error) {
	lower, upper := PartitionBounds(loc)
	it, err := s.eng.NewIter(lower, upper)
	if err != nil {
		return 0, fmt.Errorf("replica: size %v: %w", loc, err)
	}
	defer it.Close()
	var n uint64
	for ok := it.First(); ok; ok = it.Next() {
		n += uint64(len(it.Key())-len(lower)) + uint64(len(it.Value()))
	}
	if err := it.Error(); err != nil {
		return 0, fmt.Errorf("replica: size %v: %w", loc, err)
	}
	return n, nil
}

// DropPartition deletes every key of loc, in batches of about a thousand
// keys committed without fsync (lost in a crash, the keys are dropped
// again), and forgets the partition's Merkle tree: afterwards Leaves(loc)
// is all zeros and Partitions no longer lists loc. Each batch holds the
// write locks of its keys, so a concurrent write is either dropped whole or
// applied after the drop whole; a key written behind the drop's position
// survives it (call DropPartition only once no coordinator routes writes
// of loc here). It returns how many keys it deleted.
func (s *Store) DropPartition(loc Loc) (keys int, err error) {
	lower, upper := PartitionBounds(loc)
	from := lower
	for {
		batch, err := s.partitionKeys(from, upper, dropBatch)
		if err != nil {
			return keys, fmt.Errorf("replica: drop %v: %w", loc, err)
		}
		if len(batch) == 0 {
			break
		}
		n, err := s.dropKeys(loc, lower, batch)
		if err != nil {
			return keys, fmt.Errorf("replica: drop %v: %w", loc, err)
		}
		keys += n
		from = append(slices.Clone(batch[len(batch)-1]), 0)
	}
	s.trees.forget(loc)
	return keys, nil
}

// partitionKeys returns up to n engine keys in [from, upper).
func (s *Store) partitionKeys(from, upper []byte, n int) ([][]byte, error) {
	it, err := s.eng.NewIter(from, upper)
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out [][]byte
	for ok := it.First(); ok && len(out) < n; ok = it.Next() {
		out = append(out, slices.Clone(it.Key()))
	}
	return out, it.Error()
}

// dropKeys deletes the engine keys ks of loc (lower is loc's lower bound)
// in one batch under their stripe locks, keeping loc's tree exact. It
// returns how many it deleted (those deleted meanwhile are not counted).
func (s *Store) dropKeys(loc Loc, lower []byte, ks [][]byte) (int, error) {
	hashes := make([]uint64, len(ks))
	stripes := make([]int, len(ks))
	for i, k := range ks {
		hashes[i] = xxhash.Sum64(k[len(lower):])
		stripes[i] = stripeOf(loc.Keyspace, hashes[i])
	}
	// Ascending order: no other code holds two stripe locks, and two
	// drops take theirs in the same order.
	slices.Sort(stripes)
	stripes = slices.Compact(stripes)
	for _, i := range stripes {
		s.locks[i].Lock()
	}
	defer func() {
		for _, i := range stripes {
			s.locks[i].Unlock()
		}
	}()
	b := s.eng.NewBatch()
	defer b.Close()
	var deltas [Buckets]uint64
	for i, k := range ks {
		raw, err := s.eng.Get(k)
		if isNotFound(err) {
			continue // deleted meanwhile (tombstone collection)
		}
		if err != nil {
			return 0, fmt.Errorf("read: %w", err)
		}
		b.Delete(k)
		// A set that does not decode never made it into a tree (a build
		// fails on it): it goes without a delta.
		if cur, err := version.DecodeSet(raw); err == nil {
			deltas[bucketOf(hashes[i])] ^= contribution(hashes[i], cur)
		}
	}
	if b.Len() == 0 {
		return 0, nil
	}
	// As commitData, for many keys: the tree is looked up under the
	// stripe locks and updated under its read lock.
	t := s.trees.get(loc)
	if t != nil {
		t.mu.RLock()
		defer t.mu.RUnlock()
	}
	deleted := b.Len()
	err := b.Commit(false)
	for i, k := range ks {
		s.rows.remove(k, hashes[i])
	}
	if err != nil {
		return 0, fmt.Errorf("delete: %w", err)
	}
	if t != nil && t.state != treePending {
		for i, d := range deltas {
			if d != 0 {
				t.xor(i, d)
			}
		}
	}
	return deleted, nil
}

// forget drops loc's tree from the registry. A write that looked the old
// tree up still updates it (harmlessly); the next Leaves or BucketDigests
// registers a new tree, whose build waits out such writes (it cycles the
// stripe locks) before it scans.
func (ts *trees) forget(loc Loc) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	delete(ts.m, loc)
}
