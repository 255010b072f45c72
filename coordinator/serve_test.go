package coordinator

import (
	"bytes"
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	"github.com/meridiankv/meridian/replica"
	"github.com/meridiankv/meridian/version"
)

// TestServeCollectTombstones: a peer's request is checked before anything
// is read (a key out of range is the peer's fault: INVALID_ARGUMENT), a
// sender that gave up stops the loop, and only a tombstone with the same
// digest is deleted.
func TestServeCollectTombstones(t *testing.T) {
	c, store, id := transferCoordinator(t)
	c.cfg.Now = time.Now
	key := []byte("gone")
	loc := replica.Loc{Keyspace: id, Partition: c.cfg.Topology().Ring.Partition(key)}
	tomb, _ := version.Set{}.Put(version.Clock{}, "old", version.Value{Tombstone: true, Time: version.Timestamp{Wall: 1}}, 1)
	if _, err := store.Merge(loc, key, tomb, false); err != nil {
		t.Fatal(err)
	}
	req := func(keys ...[]byte) *internalv1.CollectTombstonesRequest {
		r := &internalv1.CollectTombstonesRequest{Keyspace: "ks", Partition: uint32(loc.Partition)}
		for _, k := range keys {
			r.Keys = append(r.Keys, &internalv1.KeyDigest{Key: k, Digest: tomb.Digest()})
		}
		return r
	}
	for name, r := range map[string]*internalv1.CollectTombstonesRequest{
		"a key longer than any key": req(key, bytes.Repeat([]byte{'k'}, MaxKeySize+1)),
		"an empty key":              req(key, nil),
	} {
		if _, err := c.ServeCollectTombstones(context.Background(), r); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want INVALID_ARGUMENT", name, err)
		}
	}
	gaveUp, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.ServeCollectTombstones(gaveUp, req(key)); status.Code(err) != codes.Canceled {
		t.Errorf("a sender that gave up: %v, want CANCELED", err)
	}
	if set, _ := store.Get(loc, key); set.IsEmpty() {
		t.Fatal("a refused request collected the tombstone")
	}
	resp, err := c.ServeCollectTombstones(context.Background(), req(key))
	if err != nil || resp.GetCollected() != 1 {
		t.Fatalf("collect: %v, %v; want 1 collected", resp, err)
	}
	if set, _ := store.Get(loc, key); !set.IsEmpty() {
		t.Fatal("tombstone still stored")
	}
}
