package membership

import (
	"bytes"
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

func startWith(t *testing.T, id string, seeds []string, l Listener, mod func(*Config)) *Gossip {
	t.Helper()
	cfg := Config{
		Meta:     Meta{ID: id, GRPCAddr: "127.0.0.1:1", DC: "dc1", Rack: "r1", Weight: 1, Epoch: 1},
		BindAddr: "127.0.0.1:0", Seeds: seeds, Profile: "test", JoinRetry: 50 * time.Millisecond,
	}
	mod(&cfg)
	g, err := Start(context.Background(), cfg, l)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

func aliveIDs(g *Gossip) map[string]bool {
	out := map[string]bool{}
	for _, m := range g.Members() {
		if m.State == StateAlive {
			out[m.Meta.ID] = true
		}
	}
	return out
}

func key(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

// TestGossipIgnoresStrangers: a node with the wrong key, the wrong label,
// an ID outside the topology, or metadata claiming another node's ID never
// becomes a member.
func TestGossipIgnoresStrangers(t *testing.T) {
	members := map[string]bool{"n1": true, "n2": true, "n3": true, "n4": true}
	good := func(c *Config) {
		c.Keys, c.Label = [][]byte{key(1)}, "meridian/prod"
		c.IsMember = func(id string) bool { return members[id] }
	}
	g1 := startWith(t, "n1", nil, nil, good)
	g2 := startWith(t, "n2", []string{g1.Addr()}, nil, good)
	waitFor(t, "n1 and n2 to see each other", func() bool { return aliveIDs(g1)["n2"] && aliveIDs(g2)["n1"] })

	startWith(t, "n3", []string{g1.Addr()}, nil, func(c *Config) { good(c); c.Keys = [][]byte{key(2)} })
	startWith(t, "n4", []string{g1.Addr()}, nil, func(c *Config) { good(c); c.Label = "meridian/staging" })
	startWith(t, "intruder", []string{g1.Addr()}, nil, good)
	startWith(t, "n5", []string{g1.Addr()}, nil, func(c *Config) { good(c); c.Meta.ID = "n2" })
	// Give them every chance: several gossip and push-pull rounds.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		for id := range aliveIDs(g1) {
			if id != "n1" && id != "n2" {
				t.Fatalf("n1 took %q as a member", id)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestKeyRotationWithoutFlap: rotating the keyring in three steps on every
// node keeps every member alive throughout.
func TestKeyRotationWithoutFlap(t *testing.T) {
	old, next := key(1), key(9)
	withKeys := func(c *Config) { c.Keys = [][]byte{old} }
	g1 := startWith(t, "n1", nil, nil, withKeys)
	g2 := startWith(t, "n2", []string{g1.Addr()}, nil, withKeys)
	g3 := startWith(t, "n3", []string{g1.Addr()}, nil, withKeys)
	all := []*Gossip{g1, g2, g3}
	waitFor(t, "three members", func() bool {
		for _, g := range all {
			if len(aliveIDs(g)) != 3 {
				return false
			}
		}
		return true
	})
	steps := [][][]byte{{old, next}, {next, old}, {next}}
	for _, keys := range steps {
		for _, g := range all {
			if err := g.RotateKeys(keys); err != nil {
				t.Fatal(err)
			}
			// Between nodes' steps, members stay alive.
			for _, h := range all {
				if n := len(aliveIDs(h)); n != 3 {
					t.Fatalf("a member dropped during rotation: %v", aliveIDs(h))
				}
			}
		}
	}
	// Gossip keeps flowing with the new key only: a metadata update
	// reaches every node.
	m := g1.mu.meta
	m.Epoch = 7
	if err := g1.UpdateMeta(m); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the update to arrive under the new key", func() bool {
		for _, g := range []*Gossip{g2, g3} {
			ok := false
			for _, x := range g.Members() {
				ok = ok || x.Meta.ID == "n1" && x.Meta.Epoch == 7 && x.State == StateAlive
			}
			if !ok {
				return false
			}
		}
		return true
	})
	for _, g := range all {
		if n := len(aliveIDs(g)); n != 3 {
			t.Fatalf("after rotation: %v", aliveIDs(g))
		}
	}
}

// TestRemovedMembersLeaveTheTable: a member that leaves the topology
// (removed) and then stops is dropped from the member table, not kept in
// its last state; ForgetExcept drops one that stopped first.
func TestRemovedMembersLeaveTheTable(t *testing.T) {
	var mu sync.Mutex
	members := map[string]bool{"n1": true, "n2": true, "n3": true}
	isMember := func(c *Config) {
		c.IsMember = func(id string) bool {
			mu.Lock()
			defer mu.Unlock()
			return members[id]
		}
	}
	g1 := startWith(t, "n1", nil, nil, isMember)
	g2 := startWith(t, "n2", []string{g1.Addr()}, nil, isMember)
	g3 := startWith(t, "n3", []string{g1.Addr()}, nil, isMember)
	waitFor(t, "n1 to see n2 and n3", func() bool { return aliveIDs(g1)["n2"] && aliveIDs(g1)["n3"] })
	listed := func(id string) bool {
		return slices.ContainsFunc(g1.Members(), func(m Member) bool { return m.Meta.ID == id })
	}

	mu.Lock()
	members["n2"] = false // removed, then stopped
	mu.Unlock()
	g2.Close()
	waitFor(t, "n1 to drop removed n2", func() bool { return !listed("n2") })

	g3.Close() // stopped, then removed
	waitFor(t, "n1 to see n3 down", func() bool { return listed("n3") && !aliveIDs(g1)["n3"] })
	g1.ForgetExcept(func(id string) bool { return id != "n3" })
	if listed("n3") {
		t.Fatal("ForgetExcept kept n3")
	}
	if !listed("n1") {
		t.Fatal("ForgetExcept dropped this node")
	}
}
