package node

import (
	"strings"
	"testing"
	"time"

	"github.com/meridiankv/meridian/membership"
)

// TestOwedHintsByHolderDC: hints a dc3 node holds for a dc1 replica keep
// it from counting toward global reads, not toward dc1's LOCAL_* reads
// (a copy hinted in dc3 never counted toward a dc1 local write), and a
// removed holder's list is forgotten.
func TestOwedHintsByHolderDC(t *testing.T) {
	l := newLiveness(time.Now)
	l.MemberChanged(membership.Member{Meta: membership.Meta{ID: "n7", DC: "dc3", HintsFor: []string{"n1"}}, State: membership.StateAlive})
	l.MemberChanged(membership.Member{Meta: membership.Meta{ID: "n2", DC: "dc1", HintsFor: []string{"n3"}}, State: membership.StateAlive})
	if !l.pendingHints("n1") || l.pendingHintsFrom("n1", "dc1") || !l.pendingHintsFrom("n1", "dc3") {
		t.Fatal("hints held in dc3 for n1: owed globally and from dc3, not from dc1")
	}
	if !l.pendingHintsFrom("n3", "dc1") {
		t.Fatal("hints held in dc1 for n3 must count for dc1's local reads")
	}
	l.forgetExcept(func(id string) bool { return id != "n7" })
	if l.pendingHints("n1") {
		t.Fatal("a removed holder's hint targets must be forgotten")
	}
}

// TestOwedHintsTooManyToName: a holder whose hint targets did not fit in
// its gossip metadata (sent as "all") makes every other node owed hints,
// globally and from its DC, until it gossips a list again or is removed.
func TestOwedHintsTooManyToName(t *testing.T) {
	l := newLiveness(time.Now)
	l.MemberChanged(membership.Member{Meta: membership.Meta{ID: "n7", DC: "dc3", HintsAll: true}, State: membership.StateAlive})
	for _, id := range []string{"n1", "n2", "n9"} {
		if !l.pendingHints(id) || !l.pendingHintsFrom(id, "dc3") || l.pendingHintsFrom(id, "dc1") {
			t.Fatalf("%s: owed %v, from dc3 %v, from dc1 %v; want owed globally and from dc3 only", id,
				l.pendingHints(id), l.pendingHintsFrom(id, "dc3"), l.pendingHintsFrom(id, "dc1"))
		}
	}
	if l.pendingHints("n7") {
		t.Fatal("a holder does not owe itself hints")
	}
	l.MemberChanged(membership.Member{Meta: membership.Meta{ID: "n7", DC: "dc3", HintsFor: []string{"n1"}}, State: membership.StateAlive})
	if !l.pendingHints("n1") || l.pendingHints("n2") {
		t.Fatal("once the holder names its targets again, only they are owed")
	}
	l.MemberChanged(membership.Member{Meta: membership.Meta{ID: "n7", DC: "dc3", HintsAll: true}, State: membership.StateAlive})
	l.forgetExcept(func(id string) bool { return id != "n7" })
	if l.pendingHints("n2") {
		t.Fatal("a removed holder's hint targets must be forgotten")
	}
}

// TestOnUpSaysWhenANodeCameBack: gossip reporting a node alive calls onUp
// each time, and says "back" only when the node was dead or left before,
// or low on disk (then its hints are due at once).
func TestOnUpSaysWhenANodeCameBack(t *testing.T) {
	l := newLiveness(time.Now)
	got := make(chan bool, 8)
	l.setOnUp(func(id string, back bool) {
		if id == "n2" {
			got <- back
		}
	})
	member := func(s membership.State) membership.Member {
		return membership.Member{Meta: membership.Meta{ID: "n2", DC: "dc1"}, State: s}
	}
	next := func() bool {
		t.Helper()
		select {
		case b := <-got:
			return b
		case <-time.After(10 * time.Second):
			t.Fatal("onUp not called")
			return false
		}
	}
	l.MemberChanged(member(membership.StateAlive))
	if next() {
		t.Fatal("first sight counted as coming back")
	}
	l.MemberChanged(member(membership.StateDead))
	l.MemberChanged(member(membership.StateAlive))
	if !next() {
		t.Fatal("alive after dead not counted as coming back")
	}
	l.MemberChanged(member(membership.StateAlive)) // a metadata update
	if next() {
		t.Fatal("a metadata update counted as coming back")
	}
	// Refusing writes low on disk, then taking them again: back.
	low := member(membership.StateAlive)
	low.Meta.DiskLow = true
	l.MemberChanged(low)
	if next() {
		t.Fatal("going low on disk counted as coming back")
	}
	l.MemberChanged(low)
	if next() {
		t.Fatal("staying low on disk counted as coming back")
	}
	l.MemberChanged(member(membership.StateAlive))
	if !next() {
		t.Fatal("room on disk again not counted as coming back")
	}
	l.MemberChanged(member(membership.StateAlive))
	if next() {
		t.Fatal("a metadata update after that counted as coming back")
	}
}

// TestDiskLowFollowsGossip: a member is low on disk while it gossips so
// and is up; a repeated report counts once, and a dead one is not low.
func TestDiskLowFollowsGossip(t *testing.T) {
	l := newLiveness(time.Now)
	report := func(id string, low bool, st membership.State) {
		l.MemberChanged(membership.Member{Meta: membership.Meta{ID: id, DiskLow: low}, State: st})
	}
	steps := []struct {
		id    string
		low   bool
		state membership.State
		want  string // the members low on disk after the step
	}{
		{"n1", false, membership.StateAlive, ""},
		{"n1", true, membership.StateAlive, "n1"},
		{"n1", true, membership.StateAlive, "n1"},
		{"n2", true, membership.StateAlive, "n1 n2"},
		{"n1", false, membership.StateAlive, "n2"},
		{"n2", true, membership.StateDead, ""},
		{"n2", true, membership.StateAlive, "n2"},
		{"n2", false, membership.StateLeft, ""},
	}
	for i, s := range steps {
		report(s.id, s.low, s.state)
		var got []string
		for _, id := range []string{"n1", "n2", "n3"} {
			if l.DiskLow(id) {
				got = append(got, id)
			}
		}
		if g := strings.Join(got, " "); g != s.want || int(l.lowOnDisk.Load()) != len(got) {
			t.Fatalf("step %d: low on disk %q (count %d), want %q", i, g, l.lowOnDisk.Load(), s.want)
		}
	}
}

// TestForgetExceptDropsFormerMembers: what gossip and failed calls said of
// a node that left the topology is dropped, so the maps hold members, not
// every node ever seen; the low-disk count follows.
func TestForgetExceptDropsFormerMembers(t *testing.T) {
	l := newLiveness(time.Now)
	l.MemberChanged(membership.Member{Meta: membership.Meta{ID: "gone", DC: "dc1", DiskLow: true}, State: membership.StateAlive})
	l.MemberChanged(membership.Member{Meta: membership.Meta{ID: "dead", DC: "dc1"}, State: membership.StateDead})
	l.MemberChanged(membership.Member{Meta: membership.Meta{ID: "n1", DC: "dc1", DiskLow: true}, State: membership.StateAlive})
	if !l.DiskLow("gone") || !l.DiskLow("n1") || l.Alive("dead") {
		t.Fatal("gossip not recorded")
	}
	l.forgetExcept(func(id string) bool { return id == "n1" })
	l.mu.RLock()
	down, low := len(l.mu.down), len(l.mu.diskLow)
	l.mu.RUnlock()
	if down != 1 || low != 1 || l.lowOnDisk.Load() != 1 || l.DiskLow("gone") || !l.DiskLow("n1") {
		t.Fatalf("after forgetting former members: %d down entries, %d low on disk (count %d); want only n1's", down, low, l.lowOnDisk.Load())
	}
}

// TestEventsOfARemovedMemberAreVoid: an event of a node checked against
// the topology before its removal but recorded after forgetExcept (the
// race between a gossip event and applying a new topology) is void: the
// removed holder's hint targets are not brought back, to keep replicas
// out of read quorums until the next topology change.
func TestEventsOfARemovedMemberAreVoid(t *testing.T) {
	l := newLiveness(time.Now)
	members := map[string]bool{"n1": true, "r": true}
	l.isMember = func(id string) bool { return members[id] }
	holder := membership.Member{Meta: membership.Meta{ID: "r", DC: "dc1", HintsFor: []string{"n1"}}, State: membership.StateAlive}
	l.MemberChanged(holder)
	if !l.pendingHints("n1") {
		t.Fatal("r's hint targets not recorded")
	}
	delete(members, "r") // the new topology, swapped in before forgetExcept
	l.forgetExcept(func(id string) bool { return members[id] })
	l.MemberChanged(holder) // the late event
	if l.pendingHints("n1") {
		t.Fatal("a removed holder's late event brought its hint targets back")
	}
}
