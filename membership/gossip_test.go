package membership

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type recordingListener struct {
	mu     sync.Mutex
	events []Member
}

func (l *recordingListener) MemberChanged(m Member) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, m)
}

func (l *recordingListener) saw(id string, s State) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.events {
		if e.Meta.ID == id && e.State == s {
			return true
		}
	}
	return false
}

func start(t *testing.T, id string, seeds []string, l Listener) *Gossip {
	t.Helper()
	g, err := Start(context.Background(), Config{
		Meta:     Meta{ID: id, GRPCAddr: "127.0.0.1:1" + id[1:], DC: "dc-" + id, Rack: "r1", Weight: 2, Epoch: 1},
		BindAddr: "127.0.0.1:0", Seeds: seeds, Profile: "test", JoinRetry: 50 * time.Millisecond,
	}, l)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestGossip(t *testing.T) {
	l1 := &recordingListener{}
	g1 := start(t, "n1", nil, l1)
	defer g1.Close()
	g2 := start(t, "n2", []string{g1.Addr()}, nil)
	defer g2.Close()
	g3 := start(t, "n3", []string{g1.Addr()}, nil)

	waitFor(t, "three alive members everywhere", func() bool {
		for _, g := range []*Gossip{g1, g2, g3} {
			alive := 0
			for _, m := range g.Members() {
				if m.State == StateAlive {
					alive++
				}
			}
			if alive != 3 {
				return false
			}
		}
		return true
	})
	for _, m := range g2.Members() {
		if m.Meta.ID == "n3" && (m.Meta.DC != "dc-n3" || m.Meta.Weight != 2 || m.Meta.GRPCAddr != "127.0.0.1:13") {
			t.Fatalf("n3's metadata as n2 sees it: %+v", m.Meta)
		}
	}
	if !g1.Alive("n2") || !g1.Alive("n1") || g1.Alive("nobody") {
		t.Fatal("Alive is wrong")
	}

	// Metadata updates propagate.
	if err := g2.UpdateMeta(Meta{ID: "n2", GRPCAddr: "127.0.0.1:12", DC: "dc-n2", Rack: "r9", Weight: 5, Epoch: 2}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "n2's new metadata at n1", func() bool {
		for _, m := range g1.Members() {
			if m.Meta.ID == "n2" && m.Meta.Rack == "r9" && m.Meta.Epoch == 2 {
				return true
			}
		}
		return false
	})

	// A graceful leave is seen as left (not dead: the reconnect loop
	// does not re-join it).
	if err := g3.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "n3 to be seen leaving", func() bool { return !g1.Alive("n3") && l1.saw("n3", StateLeft) })
	for _, m := range g1.Members() {
		if m.Meta.ID == "n3" && m.State != StateLeft {
			t.Fatalf("n3 listed as %v after leaving, want left", m.State)
		}
	}
	if addr := g1.deadAddr(); addr != "" {
		t.Fatalf("the reconnect loop would re-join %s, a node that left", addr)
	}

	// A crash (no leave) is detected as dead.
	g2.closeOnce.Do(func() {
		close(g2.stop)
		g2.ml.Shutdown()
	})
	waitFor(t, "n2 to be declared dead", func() bool { return !g1.Alive("n2") && l1.saw("n2", StateDead) })
}

func TestJoinRetriesUntilSeedIsUp(t *testing.T) {
	// Reserve an address for the seed, start the joiner first.
	seed := start(t, "n1", nil, nil)
	addr := seed.Addr()
	seed.Close()
	joiner := start(t, "n2", []string{addr}, nil)
	defer joiner.Close()
	if joiner.Joined() {
		t.Fatal("joined a seed that is down")
	}
	g, err := Start(context.Background(), Config{Meta: Meta{ID: "n1", DC: "d"}, BindAddr: addr, Profile: "test"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	waitFor(t, "the joiner to reach the late seed", func() bool { return joiner.Joined() && g.Alive("n2") })
}

func TestConfigErrors(t *testing.T) {
	cases := []struct {
		cfg Config
		has string
	}{
		{Config{BindAddr: "127.0.0.1:0"}, "Meta.ID is empty"},
		{Config{Meta: Meta{ID: "a"}, BindAddr: "nonsense"}, "not host:port"},
		{Config{Meta: Meta{ID: "a"}, BindAddr: "127.0.0.1:0", Profile: "fast"}, "profile"},
		{Config{Meta: Meta{ID: "a", DC: strings.Repeat("x", 600)}, BindAddr: "127.0.0.1:0"}, "over memberlist's 512-byte limit"},
		// Fits now (462 bytes), but not once it carries a cluster ID,
		// hints and low disk: refused at start, not silently later.
		{Config{Meta: Meta{ID: strings.Repeat("i", 64), DC: strings.Repeat("d", 64), Rack: strings.Repeat("r", 64), Weight: 1,
			GRPCAddr: "[fd00:1234:5678:9abc:def0:1234:5678:9abc]:65001", PeerAddr: "[fd00:1234:5678:9abc:def0:1234:5678:9abc]:65002",
			AdminAddr: "[fd00:1234:5678:9abc:def0:1234:5678:9abc]:65003", RaftAddr: "[fd00:1234:5678:9abc:def0:1234:5678:9abc]:65004"},
			BindAddr: "127.0.0.1:0"}, "with what it may carry later"},
	}
	for _, c := range cases {
		if err := c.cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.has) {
			t.Errorf("Validate(%+v) = %v, want %q", c.cfg.Meta, err, c.has)
		}
	}
	if _, err := decodeMeta([]byte("garbage")); err == nil {
		t.Error("garbage metadata decoded")
	}
	// A member's metadata over what any member sends (a thousand hint
	// targets) is refused, not walked on every event.
	big := Meta{ID: "a", HintsFor: make([]string, 1000)}
	for i := range big.HintsFor {
		big.HintsFor[i] = fmt.Sprintf("n%d", i)
	}
	raw, err := json.Marshal(big)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeMeta(append([]byte{metaVersion}, raw...)); err == nil || !strings.Contains(err.Error(), "over the 512") {
		t.Errorf("metadata of %d bytes: %v, want refused", len(raw)+1, err)
	}
}

// TestGossipIgnoresAnotherClusterID: a node whose label does not tell
// (it gossips with the bootstrap label, as nodes do before they agree on
// an ID) but whose metadata carries another cluster ID is reached by
// memberlist, yet never listed by the nodes of this cluster.
func TestGossipIgnoresAnotherClusterID(t *testing.T) {
	startIn := func(id, label, meta string, seeds []string) *Gossip {
		return startWith(t, id, seeds, nil, func(c *Config) {
			c.Meta.ClusterID, c.Label = meta, "meridian/prod"
			c.ClusterID = func() string { return label }
		})
	}
	a1 := startIn("n1", "cluster-a", "cluster-a", nil)
	b2 := startIn("n2", "", "cluster-b", []string{a1.Addr()})
	a3 := startIn("n3", "cluster-a", "cluster-a", []string{a1.Addr()})
	fresh := startIn("n4", "", "", []string{a1.Addr()}) // not agreed yet
	waitFor(t, "cluster-a's nodes and the fresh node to see each other", func() bool {
		return a1.Alive("n3") && a3.Alive("n1") && a1.Alive("n4") && fresh.Alive("n1")
	})
	// Memberlist itself reached n2 (it joined through n1); the cluster ID
	// in its metadata keeps it out of cluster-a's lists.
	waitFor(t, "n2 to have gossiped with n1", func() bool { return b2.ml.NumMembers() >= 3 })
	for _, g := range []*Gossip{a1, a3} {
		if g.Alive("n2") {
			t.Fatal("a cluster-a node lists n2, a node of another cluster")
		}
	}
}

// TestGossipLabelIsTheClusterID: once nodes know their cluster ID they
// label gossip with it, so a node of another initialized cluster (same
// name, same key) cannot even join; a node that learns the ID late goes
// from the bootstrap label to the ID's without dropping out.
func TestGossipLabelIsTheClusterID(t *testing.T) {
	startIn := func(id string, cluster *atomic.Pointer[string], seeds []string) *Gossip {
		return startWith(t, id, seeds, nil, func(c *Config) {
			c.Keys, c.Label = [][]byte{key(1)}, "meridian/prod"
			c.ClusterID = func() string { return *cluster.Load() }
		})
	}
	idOf := func(s string) *atomic.Pointer[string] {
		p := &atomic.Pointer[string]{}
		p.Store(&s)
		return p
	}
	a := idOf("cluster-a")
	late := idOf("")
	a1 := startIn("n1", a, nil)
	a3 := startIn("n3", a, []string{a1.Addr()})
	n4 := startIn("n4", late, []string{a1.Addr()})
	waitFor(t, "n1, n3 and the node without an ID yet to see each other", func() bool {
		return a1.Alive("n3") && a1.Alive("n4") && n4.Alive("n1") && n4.Alive("n3") && a3.Alive("n4")
	})

	b2 := startIn("n2", idOf("cluster-b"), nil)
	if _, err := b2.Join([]string{a1.Addr()}); err == nil {
		t.Fatal("a node of another cluster (same name and key) joined cluster-a")
	}
	if a1.labels.dropped.Load() == 0 {
		t.Fatal("n1 dropped nothing for its label: the join failed for another reason")
	}
	if a1.ml.NumMembers() != 3 || b2.ml.NumMembers() != 1 {
		t.Fatalf("memberlist lists %d members on n1 and %d on n2; want 3 and 1", a1.ml.NumMembers(), b2.ml.NumMembers())
	}

	// n4 learns the ID: it now labels with it, and its metadata update
	// still reaches n1 while it stays alive there.
	id := "cluster-a"
	late.Store(&id)
	m := n4.mu.meta
	m.Epoch = 9
	if err := n4.UpdateMeta(m); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "n4's update, sent under the ID label, to reach n1", func() bool {
		for _, x := range a1.Members() {
			if x.Meta.ID == "n4" && x.Meta.Epoch == 9 && x.State == StateAlive {
				return true
			}
		}
		return false
	})
	if _, err := b2.Join([]string{n4.Addr()}); err == nil {
		t.Fatal("n4, now knowing its cluster ID, let a node of another cluster join")
	}
}

// TestLabelRules: what a node sends and takes, before and after it knows
// its cluster ID.
func TestLabelRules(t *testing.T) {
	id := ""
	l := &labels{bootstrap: "meridian/prod", clusterID: func() string { return id }}
	check := func(sends string, takes map[string]bool) {
		t.Helper()
		if got := l.current(); got != sends {
			t.Errorf("id %q: sends %q, want %q", id, got, sends)
		}
		for label, want := range takes {
			if got := l.accepts(label); got != want {
				t.Errorf("id %q: accepts(%q) = %v, want %v", id, label, got, want)
			}
		}
	}
	check("meridian/prod", map[string]bool{"meridian/prod": true, "meridian-id/a": true, "meridian-id/b": true, "meridian/staging": false, "": false})
	id = "a"
	check("meridian-id/a", map[string]bool{"meridian/prod": true, "meridian-id/a": true, "meridian-id/b": false, "meridian/staging": false, "": false})
	id = strings.Repeat("x", 100) // too long for a label: its hash stands in
	if got := l.current(); len(got) != len(idLabelPrefix)+64 || !l.accepts(got) || l.accepts("meridian-id/a") {
		t.Errorf("a long ID: sends %q (%d bytes)", got, len(got))
	}
}

// TestMetaHintTargetsNeverShrink: hint targets whose names do not fit in
// the gossip metadata go as hashes, then as "all", so a reader never sees
// fewer targets than the node holds hints for (it would count a replica
// still owed writes toward a read quorum).
func TestMetaHintTargetsNeverShrink(t *testing.T) {
	long := func(port int) string { return fmt.Sprintf("meridian-12.meridian.prod.svc.cluster.local:%d", port) }
	base := Meta{ID: "meridian-12", GRPCAddr: long(7000), PeerAddr: long(7001), AdminAddr: long(7002), RaftAddr: long(7003),
		DC: "eu-west-1", Rack: "eu-west-1a", Weight: 100, Epoch: 12345, ClusterID: "0123456789abcdef0123456789abcdef"}
	targets := func(n int) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf("meridian-%d", 100+i))
		}
		return out
	}
	for _, tc := range []struct {
		n              int
		named, outline bool // names sent outright; hashes or all
		all            bool
	}{
		{n: 2, named: true},
		{n: 40, outline: true},
		{n: 2000, outline: true, all: true},
	} {
		m := base
		m.HintsFor = targets(tc.n)
		b, err := m.encode()
		if err != nil {
			t.Fatalf("%d targets: %v", tc.n, err)
		}
		if len(b) > MetaLimit {
			t.Fatalf("%d targets: %d bytes, over the limit", tc.n, len(b))
		}
		got, err := decodeMeta(b)
		if err != nil {
			t.Fatal(err)
		}
		hs := got.Hints()
		if named := len(hs.Names()) > 0; named != tc.named || hs.Opaque() != tc.outline || got.HintsAll != tc.all {
			t.Fatalf("%d targets: named %v, opaque %v, all %v; want %v, %v, %v", tc.n, named, hs.Opaque(), got.HintsAll, tc.named, tc.outline, tc.all)
		}
		for _, id := range m.HintsFor {
			if !hs.Owes(id) {
				t.Fatalf("%d targets: %s not owed after the round trip", tc.n, id)
			}
		}
		if !tc.all && hs.Owes("meridian-99") {
			t.Fatalf("%d targets: a node held no hints for is owed", tc.n)
		}
	}
	if !(Meta{HintsHashed: "!!"}).Hints().Owes("anyone") {
		t.Fatal("hashes that do not decode must count as all")
	}
}

// TestRecheckHearsMembersTurnedAway: a member gossip turned away while
// IsMember did not list it (a joining node before its metadata is
// agreed) is recorded, and the listener hears of it, once Recheck runs
// after IsMember changed: memberlist tells of it again only when its
// state or metadata changes.
func TestRecheckHearsMembersTurnedAway(t *testing.T) {
	var admit atomic.Bool
	l := &recordingListener{}
	g1 := startWith(t, "n1", nil, l, func(c *Config) {
		c.IsMember = func(id string) bool { return id == "n1" || admit.Load() }
	})
	startWith(t, "n2", []string{g1.Addr()}, nil, func(*Config) {})
	waitFor(t, "memberlist on n1 to know n2", func() bool { return g1.ml.NumMembers() >= 2 })
	if g1.Alive("n2") || l.saw("n2", StateAlive) {
		t.Fatal("n2 was listed while IsMember turned it away")
	}
	admit.Store(true)
	g1.Recheck()
	if !g1.Alive("n2") || !l.saw("n2", StateAlive) {
		t.Fatal("after Recheck, n2 is still unheard of though it is a member now")
	}
}

// hookListener records events and runs hook on the first one after arm.
type hookListener struct {
	recordingListener
	armed atomic.Bool
	hook  func(Member)
}

func (l *hookListener) MemberChanged(m Member) {
	l.recordingListener.MemberChanged(m)
	if l.armed.CompareAndSwap(true, false) {
		l.hook(m)
	}
}

func (l *recordingListener) last(id string) (Member, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.events) - 1; i >= 0; i-- {
		if l.events[i].Meta.ID == id {
			return l.events[i], true
		}
	}
	return Member{}, false
}

// TestRecheckNeverReplaysOverANewerEvent: a member that leaves while
// Recheck replays the table is heard of as dead last (the replay of its
// older state never lands after the leave), and the table says so too.
func TestRecheckNeverReplaysOverANewerEvent(t *testing.T) {
	l := &hookListener{}
	g1 := startWith(t, "n1", nil, l, func(*Config) {})
	g2 := startWith(t, "n2", []string{g1.Addr()}, nil, func(*Config) {})
	g3 := startWith(t, "n3", []string{g1.Addr()}, nil, func(*Config) {})
	waitFor(t, "n1 to hear of n2 and n3", func() bool { return g1.Alive("n2") && g1.Alive("n3") })
	nodes := map[string]*memberlist.Node{"n2": g2.ml.LocalNode(), "n3": g3.ml.LocalNode()}
	left := make(chan struct{})
	var gone string
	l.hook = func(first Member) {
		// The replay has begun with first: the other member leaves now,
		// from memberlist's side, before the replay reaches it.
		gone = map[string]string{"n2": "n3", "n3": "n2"}[first.Meta.ID]
		n := copyNode(nodes[gone])
		go func() {
			(*events)(g1).NotifyLeave(&n)
			close(left)
		}()
		select { // give the leave its chance to land mid-replay
		case <-left:
		case <-time.After(200 * time.Millisecond):
		}
	}
	l.armed.Store(true)
	g1.Recheck()
	<-left
	if m, ok := l.last(gone); !ok || m.State != StateDead || g1.Alive(gone) {
		t.Fatalf("%s left during the replay: last heard %v, table alive %v; want dead on both", gone, m.State, g1.Alive(gone))
	}
}

// TestUpdateMetaAfterClose: an update once gossip has left returns at
// once (memberlist would wait its whole timeout for a broadcast it never
// sends, holding up the node's Close).
func TestUpdateMetaAfterClose(t *testing.T) {
	g1 := start(t, "n1", nil, nil)
	g2 := start(t, "n2", []string{g1.Addr()}, nil)
	defer g2.Close()
	waitFor(t, "n1 to hear of n2", func() bool { return g1.Alive("n2") })
	meta := g1.Members()[0].Meta
	g1.Close()
	if err := g1.UpdateMeta(meta); !errors.Is(err, ErrClosed) {
		t.Fatalf("UpdateMeta after Close: %v, want ErrClosed at once", err)
	}
}
