package coordinator

import (
	"context"
	"testing"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/placement"
	"github.com/meridiankv/meridian/replica"
)

// TestTombstoneMarkedAfterItIsStored: a delete marks its partition for
// tombstone collection once the tombstone is stored, never before. (Marked
// before, a collection scan between the mark and the write found nothing
// and marked the partition clean for good: that tombstone was never
// collected.)
func TestTombstoneMarkedAfterItIsStored(t *testing.T) {
	nodes := []placement.Node{{ID: "n1", DC: "dc1", Rack: "r1", Weight: 1}}
	var stores map[string]*replica.Store
	var marks, storedAtMark int
	_, coords, stores := testCluster(t, nodes, map[string]int{"dc1": 1}, func(c *Config) {
		c.OnTombstone = func(loc replica.Loc) {
			marks++
			set, err := stores["n1"].Get(loc, []byte("k"))
			if err == nil && len(set.Siblings) == 1 && set.Siblings[0].Value.Tombstone {
				storedAtMark++
			}
		}
	})
	ctx := context.Background()
	if _, err := coords["n1"].Put(ctx, &kvv1.PutRequest{Keyspace: "ks", Key: []byte("k"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	got, err := coords["n1"].Get(ctx, &kvv1.GetRequest{Keyspace: "ks", Key: []byte("k")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := coords["n1"].Delete(ctx, &kvv1.DeleteRequest{Keyspace: "ks", Key: []byte("k"), Context: got.GetContext()}); err != nil {
		t.Fatal(err)
	}
	if marks == 0 || storedAtMark != marks {
		t.Fatalf("%d marks, %d of them with the tombstone stored; want every mark after the store", marks, storedAtMark)
	}
}
