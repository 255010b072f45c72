package membership

import (
	"context"
	"maps"
	"testing"
	"time"
)

// TestClockOffsets: each member's offset is taken from its ack's clock and
// the round trip, with half the round trip of uncertainty counted toward
// agreement; the lower median of the fresh samples says how far this
// node leads, so one member with a wrong clock does not make it look
// wrong; stale and malformed samples do not count.
func TestClockOffsets(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	ms := time.Millisecond
	type sample struct {
		member  string
		theirs  time.Time // the member's clock in the ack
		rtt     time.Duration
		age     time.Duration // how long before now it was taken
		payload []byte        // instead of theirs, when set
	}
	for _, tc := range []struct {
		name    string
		samples []sample
		ahead   time.Duration
		members int
	}{
		{"nothing known", nil, 0, 0},
		{"in step", []sample{{member: "a", theirs: now.Add(-ms), rtt: 2 * ms}, {member: "b", theirs: now.Add(-ms), rtt: 2 * ms}}, 0, 2},
		{"this node 3s ahead of both", []sample{{member: "a", theirs: now.Add(-3 * time.Second), rtt: 2 * ms}, {member: "b", theirs: now.Add(-3 * time.Second), rtt: 2 * ms}},
			3*time.Second - 2*ms, 2},
		{"this node 3s behind both", []sample{{member: "a", theirs: now.Add(3 * time.Second), rtt: 2 * ms}, {member: "b", theirs: now.Add(3 * time.Second), rtt: 2 * ms}},
			-3 * time.Second, 2},
		{"one member 3s behind, the other in step", []sample{{member: "a", theirs: now.Add(-3 * time.Second), rtt: 0}, {member: "b", theirs: now, rtt: 0}}, 0, 2},
		{"one member an hour ahead, two in step", []sample{{member: "a", theirs: now.Add(time.Hour)}, {member: "b", theirs: now}, {member: "c", theirs: now}}, 0, 3},
		{"within the round trip's uncertainty", []sample{{member: "a", theirs: now.Add(-10 * ms), rtt: 40 * ms}}, 0, 1},
		{"a stale sample", []sample{{member: "a", theirs: now.Add(-time.Hour), age: clockSampleTTL + time.Second}}, 0, 0},
		{"a malformed payload", []sample{{member: "a", payload: []byte{1, 2, 3}}}, 0, 0},
		{"an older node's empty payload", []sample{{member: "a", payload: []byte{}}}, 0, 0},
		{"members with clocks at 1970, clamped to a day", []sample{{member: "a", theirs: time.Unix(0, 0)}, {member: "b", theirs: time.Unix(0, 0)}}, maxClockSkew, 2},
		{"members with clocks at the far end of time, clamped", []sample{{member: "a", payload: []byte{0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}}, -maxClockSkew, 1},
	} {
		var c clockOffsets
		for _, s := range tc.samples {
			at := now.Add(-s.age)
			p := s.payload
			if p == nil {
				p = ackPayload(s.theirs.Add(-s.age))
			}
			c.sample(s.member, p, s.rtt, at)
		}
		ahead, members := c.ahead(now)
		if ahead != tc.ahead || members != tc.members {
			t.Errorf("%s: ahead %v of %d members, want %v of %d", tc.name, ahead, members, tc.ahead, tc.members)
		}
	}
	var c clockOffsets
	c.sample("a", ackPayload(now.Add(-time.Minute)), 0, now)
	c.forget("a")
	if _, members := c.ahead(now); members != 0 {
		t.Fatal("a forgotten member still counts")
	}

	// The estimate writes ask for is at most a second old.
	c.sample("a", ackPayload(now.Add(-time.Minute)), 0, now)
	if ahead, _ := c.estimate(now); ahead != time.Minute {
		t.Fatalf("estimate %v, want 1m", ahead)
	}
	c.sample("a", ackPayload(now), 0, now)
	if ahead, _ := c.estimate(now.Add(500 * time.Millisecond)); ahead != time.Minute {
		t.Fatalf("estimate within the second %v, want the cached 1m", ahead)
	}
	if ahead, _ := c.estimate(now.Add(time.Second)); ahead != 0 {
		t.Fatalf("estimate a second later %v, want the new sample's 0", ahead)
	}
}

// TestGossipEstimatesClockOffsets: over real gossip on loopback, a node
// whose clock runs 5 s fast learns from its pings that it is ahead of the
// others, and they that they are behind it but not of each other.
func TestGossipEstimatesClockOffsets(t *testing.T) {
	startAt := func(id string, seeds []string, skew time.Duration) *Gossip {
		g, err := Start(context.Background(), Config{
			Meta:     Meta{ID: id, GRPCAddr: "127.0.0.1:1" + id[1:], DC: "dc1", Rack: "r1", Weight: 1, Epoch: 1},
			BindAddr: "127.0.0.1:0", Seeds: seeds, Profile: "test", JoinRetry: 50 * time.Millisecond,
			Now: func() time.Time { return time.Now().Add(skew) },
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { g.Close() })
		return g
	}
	g1 := startAt("n1", nil, 0)
	g2 := startAt("n2", []string{g1.Addr()}, 0)
	fast := startAt("n3", []string{g1.Addr()}, 5*time.Second)
	waitFor(t, "every node to estimate both others' clocks", func() bool {
		for _, g := range []*Gossip{g1, g2, fast} {
			if _, n := g.ClockAhead(); n != 2 {
				return false
			}
		}
		return true
	})
	if ahead, _ := fast.ClockAhead(); ahead < 4*time.Second || ahead > 6*time.Second {
		t.Fatalf("the fast node thinks it is %v ahead, want about 5s", ahead)
	}
	// Each node in step sees the other in step and the fast node 5 s
	// ahead; its estimate, the lower median of the two, is that it runs
	// about 5 s behind: behind, never ahead.
	for _, g := range []*Gossip{g1, g2} {
		g.clocks.mu.Lock()
		samples := maps.Clone(g.clocks.samples)
		g.clocks.mu.Unlock()
		other := "n2"
		if g == g2 {
			other = "n1"
		}
		if off := samples[other].offset; off < -time.Second || off > time.Second {
			t.Fatalf("%s sees %s's clock %v off, want about in step", g.self, other, off)
		}
		if off := samples["n3"].offset; off < 4*time.Second || off > 6*time.Second {
			t.Fatalf("%s sees the fast node's clock %v off, want about 5s ahead", g.self, off)
		}
		if ahead, _ := g.ClockAhead(); ahead > 0 {
			t.Fatalf("%s thinks it is %v ahead", g.self, ahead)
		}
	}
}
