// Package replica owns a node's local copy of the data: how keys are laid
// out in the engine, and how a sibling set is read, merged and written back
// under a per-key lock so that a concurrent version is never lost.
//
// Layout (all integers big-endian):
//
//	data:  'd' | keyspace ID (4) | partition (2) | user key  → encoded version.Set
//	hints: 'h' | target length (1) | target node ID | keyspace ID (4) | partition (2) | user key
//	       → keyspace name length (1) | keyspace name | encoded version.Set
//	meta:  'm' | name → value
//
// Keeping the partition in the data key makes a partition one contiguous key
// range, so handoff and Merkle exchanges are range scans.
//
// Every read-modify-write of a key happens under one of a fixed array of
// striped mutexes chosen by a hash of (keyspace, key): writes to unrelated
// keys almost never wait on each other, while two writes to the same key are
// always serialized, so the second sees the first.
//
// For anti-entropy every (keyspace, partition) has an in-memory Merkle tree
// of Buckets leaves (merkle.go): leaf i is the XOR over the keys in bucket i
// of Contribution(key, digest of the stored set). Built on first use by
// scanning a snapshot, then kept exact by every write of a data key (the
// write XORs out its key's old contribution and XORs in the new one while
// it commits); not persisted, so rebuilt after a restart.
package replica
