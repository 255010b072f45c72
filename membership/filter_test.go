package membership

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// TestFilterCutsGossipAndReconnectHeals: with n3's links cut both ways
// (n3 drops what it sends to n1 and n2, they drop what they send to n3),
// n1 and n2 declare n3 dead and n3 them; once the filters stop dropping,
// the reconnect loop merges the cluster again. A filter acts on what its
// node sends: one end alone would still answer the streams the other end
// opens (memberlist's TCP probes and state exchanges).
func TestFilterCutsGossipAndReconnectHeals(t *testing.T) {
	g1 := start(t, "n1", nil, nil)
	defer g1.Close()
	g2 := start(t, "n2", []string{g1.Addr()}, nil)
	defer g2.Close()
	g3 := start(t, "n3", []string{g1.Addr()}, nil)
	defer g3.Close()
	all := []*Gossip{g1, g2, g3}
	allAlive := func() bool {
		for _, g := range all {
			for _, id := range []string{"n1", "n2", "n3"} {
				if !g.Alive(id) {
					return false
				}
			}
		}
		return true
	}
	waitFor(t, "three alive members everywhere", allAlive)

	var cut atomic.Bool
	var asked atomic.Int64
	g3.SetFilter(func(id string) bool {
		asked.Add(1)
		return cut.Load() && (id == "n1" || id == "n2")
	})
	for _, g := range []*Gossip{g1, g2} {
		g.SetFilter(func(id string) bool { return cut.Load() && id == "n3" })
	}
	cut.Store(true)
	waitFor(t, "n3 to be seen dead by n1 and n2, and them by n3", func() bool {
		return !g1.Alive("n3") && !g2.Alive("n3") && !g3.Alive("n1") && !g3.Alive("n2")
	})
	if !g1.Alive("n2") || !g2.Alive("n1") {
		t.Fatal("the cut reached n1<->n2")
	}
	if asked.Load() == 0 {
		t.Fatal("the filter was never asked")
	}
	cut.Store(false)
	g3.Reconnect()
	waitFor(t, "every member alive again after the cut ends", allAlive)

	g3.SetFilter(nil)
	if g3.drops("n1", "") {
		t.Fatal("a removed filter still drops")
	}
}

// TestReconnectAfterLongPartition: memberlist stops gossiping to a dead
// node after GossipToTheDeadTime, so two halves cut off for longer never
// talk again on their own; the reconnect loop joins them.
func TestReconnectAfterLongPartition(t *testing.T) {
	var cut atomic.Bool
	startCut := func(id string, seeds []string) *Gossip {
		g, err := Start(context.Background(), Config{
			Meta:     Meta{ID: id, GRPCAddr: "127.0.0.1:1", DC: "dc1", Rack: "r1", Weight: 1},
			BindAddr: "127.0.0.1:0", Seeds: seeds, Profile: "test", JoinRetry: 50 * time.Millisecond,
			tune: func(mc *memberlist.Config) { mc.GossipToTheDeadTime = 100 * time.Millisecond },
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		g.SetFilter(func(string) bool { return cut.Load() })
		return g
	}
	g1 := startCut("n1", nil)
	defer g1.Close()
	g2 := startCut("n2", []string{g1.Addr()})
	defer g2.Close()
	waitFor(t, "two alive members", func() bool { return g1.Alive("n2") && g2.Alive("n1") })
	cut.Store(true)
	waitFor(t, "each to see the other dead", func() bool { return !g1.Alive("n2") && !g2.Alive("n1") })
	time.Sleep(time.Second) // well past GossipToTheDeadTime: memberlist has given up
	cut.Store(false)
	waitFor(t, "the halves to merge again", func() bool { return g1.Alive("n2") && g2.Alive("n1") })
}
