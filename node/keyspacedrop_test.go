package node_test

import (
	"slices"
	"testing"
	"time"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/replica"
	"github.com/meridiankv/meridian/version"
)

// TestDropKeyspaceDeletesItsDataEverywhere: a dropped keyspace's data is
// deleted on every node, including one down during the drop (once it is
// back), and a keyspace created again under the same name starts empty,
// stored apart from the dropped one's data.
func TestDropKeyspaceDeletesItsDataEverywhere(t *testing.T) {
	spec := membership.KeyspaceSpec{Name: "logs", Replication: map[string]int{"dc1": 3}}
	l := startCluster(t, node.LocalSpec{NodesPerDC: 3, Partitions: 16, Keyspaces: []membership.KeyspaceSpec{spec}})
	ctx := ctxT(t)
	n1, n3 := l.Nodes()[0], l.Nodes()[2]
	c := dial(t, n1.Addr())
	const keys = 20
	for i := range keys {
		key := []byte{'k', byte('a' + i)}
		if _, err := c.Put(ctx, &kvv1.PutRequest{Keyspace: "logs", Key: key, Value: []byte("old"), Consistency: lvl(kvv1.Level_LEVEL_ALL)}); err != nil {
			t.Fatal(err)
		}
	}
	ks, _ := n1.Topology().Keyspace("logs")
	oldID := ks.ID
	holds := func(n *node.Node, id uint32) bool {
		locs, err := n.Store().Partitions()
		if err != nil {
			t.Fatal(err)
		}
		for _, loc := range locs {
			if loc.Keyspace == id {
				return true
			}
		}
		return false
	}
	if !holds(n3, oldID) {
		t.Fatal("n3 holds none of the keyspace's data before the drop")
	}
	down := n3.ID()
	if err := l.Stop(down); err != nil {
		t.Fatal(err)
	}
	if _, err := n1.DropKeyspace(ctx, "logs"); err != nil {
		t.Fatal(err)
	}
	running := l.Nodes()
	eventually(t, "the running nodes to delete the dropped keyspace's data", func() bool {
		for _, n := range running {
			if holds(n, oldID) {
				return false
			}
		}
		return true
	})
	if _, err := n1.CreateKeyspace(ctx, spec); err != nil {
		t.Fatal(err)
	}
	ks, _ = n1.Topology().Keyspace("logs")
	if ks.ID == oldID {
		t.Fatalf("the re-created keyspace is stored under the dropped one's ID %d", oldID)
	}
	back, err := l.Restart(ctx, down)
	if err != nil {
		t.Fatal(err)
	}
	// Whether or not the returning node has deleted the old data yet, the
	// new keyspace shows none of it, from any coordinator.
	eventually(t, "the re-created keyspace to be known everywhere", func() bool {
		for _, n := range l.Nodes() {
			if got, ok := n.Topology().Keyspace("logs"); !ok || got.ID != ks.ID {
				return false
			}
		}
		return true
	})
	for _, n := range l.Nodes() {
		c := dial(t, n.Addr())
		for i := range keys {
			key := []byte{'k', byte('a' + i)}
			got, err := c.Get(ctx, &kvv1.GetRequest{Keyspace: "logs", Key: key, Consistency: lvl(kvv1.Level_LEVEL_ALL)})
			if err != nil {
				t.Fatalf("get %s from %s: %v", key, n.ID(), err)
			}
			if len(got.GetSiblings()) != 0 {
				t.Fatalf("the re-created keyspace shows %q at %s from %s", vals(got.GetSiblings()), key, n.ID())
			}
		}
	}
	eventually(t, "the node down during the drop to delete the dropped keyspace's data", func() bool {
		return !holds(back, oldID)
	})
	if _, err := c.Put(ctx, &kvv1.PutRequest{Keyspace: "logs", Key: []byte("ka"), Value: []byte("new"), Consistency: lvl(kvv1.Level_LEVEL_ALL)}); err != nil {
		t.Fatal(err)
	}
	got, err := dial(t, back.Addr()).Get(ctx, &kvv1.GetRequest{Keyspace: "logs", Key: []byte("ka"), Consistency: lvl(kvv1.Level_LEVEL_ALL)})
	if err != nil || len(got.GetSiblings()) != 1 || string(got.GetSiblings()[0].GetValue()) != "new" {
		t.Fatalf("after the re-create: %v, %v", vals(got.GetSiblings()), err)
	}
}

// TestCleanupKeepsKeyspacesItDoesNotKnow: data under a keyspace ID the
// metadata neither lists nor records as dropped (a node restored from a
// snapshot newer than the cluster's metadata holds a keyspace created in
// between) is kept by the clean-up that deletes a dropped keyspace's data.
func TestCleanupKeepsKeyspacesItDoesNotKnow(t *testing.T) {
	spec := membership.KeyspaceSpec{Name: "logs", Replication: map[string]int{"dc1": 1}}
	l := startCluster(t, node.LocalSpec{NodesPerDC: 1, Partitions: 16, Keyspaces: []membership.KeyspaceSpec{spec}})
	ctx := ctxT(t)
	n1 := l.Nodes()[0]
	c := dial(t, n1.Addr())
	if _, err := c.Put(ctx, &kvv1.PutRequest{Keyspace: "logs", Key: []byte("k"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	ks, _ := n1.Topology().Keyspace("logs")
	orphan := replica.Loc{Keyspace: 424242, Partition: 3}
	if _, err := n1.Store().Update(orphan, []byte("created after the metadata"), true, func(cur version.Set) (version.Set, error) {
		next, _ := cur.Put(cur.Context(), "n9", version.Value{Bytes: []byte("only copy")}, time.Now().UnixNano())
		return next, nil
	}); err != nil {
		t.Fatal(err)
	}
	holds := func(id uint32) bool {
		locs, err := n1.Store().Partitions()
		if err != nil {
			t.Fatal(err)
		}
		return slices.ContainsFunc(locs, func(loc replica.Loc) bool { return loc.Keyspace == id })
	}
	if _, err := n1.DropKeyspace(ctx, "logs"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the clean-up to delete the dropped keyspace's data", func() bool { return !holds(ks.ID) })
	if !holds(orphan.Keyspace) {
		t.Fatal("the clean-up deleted the data of a keyspace the metadata does not know, and never dropped")
	}
}
