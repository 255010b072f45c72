package membership

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"
)

// metaCluster is three MetaLogs over real TCP on loopback, with their Raft
// state on disk (raft-boltdb and file snapshots).
type metaCluster struct {
	t     *testing.T
	mu    sync.Mutex
	addrs map[string]string
	logs  map[string]*MetaLog
	dirs  map[string]string
	seen  map[string]uint64 // last epoch each node applied
}

func newMetaCluster(t *testing.T, ids ...string) *metaCluster {
	c := &metaCluster{t: t, addrs: map[string]string{}, logs: map[string]*MetaLog{}, dirs: map[string]string{}, seen: map[string]uint64{}}
	for _, id := range ids {
		c.dirs[id] = t.TempDir()
	}
	for _, id := range ids {
		c.start(id, ids)
	}
	t.Cleanup(func() {
		c.mu.Lock()
		var running []string
		for id := range c.logs {
			running = append(running, id)
		}
		c.mu.Unlock()
		for _, id := range running {
			c.stop(id)
		}
	})
	return c
}

func (c *metaCluster) start(id string, voters []string) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.addrs[id] = lis.Addr().String()
	c.mu.Unlock()
	ml, err := StartMetaLog(MetaLogConfig{
		ID: id, Dir: c.dirs[id], Listener: lis, Voters: voters, Fast: true,
		Alive: func(other string) bool {
			c.mu.Lock()
			defer c.mu.Unlock()
			_, running := c.logs[other]
			return running
		},
		Dial: func(ctx context.Context, to string) (net.Conn, error) {
			c.mu.Lock()
			addr, ok := c.addrs[to]
			c.mu.Unlock()
			if !ok {
				return nil, fmt.Errorf("no address for %s", to)
			}
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
		OnChange: func(st *MetaState) {
			c.mu.Lock()
			c.seen[id] = st.Epoch
			c.mu.Unlock()
		},
	})
	if err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.logs[id] = ml
	c.mu.Unlock()
}

func (c *metaCluster) stop(id string) {
	c.mu.Lock()
	ml := c.logs[id]
	delete(c.logs, id)
	c.mu.Unlock()
	if ml != nil {
		if err := ml.Close(); err != nil {
			c.t.Logf("close %s: %v", id, err)
		}
	}
}

func (c *metaCluster) leader() *MetaLog {
	c.t.Helper()
	var found *MetaLog
	eventually(c.t, 20*time.Second, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, ml := range c.logs {
			if ml.IsLeader() {
				found = ml
				return true
			}
		}
		return false
	})
	return found
}

func (c *metaCluster) waitAll(epoch uint64) {
	c.t.Helper()
	eventually(c.t, 20*time.Second, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for id := range c.logs {
			if c.seen[id] < epoch {
				return false
			}
		}
		return true
	})
}

func eventually(t *testing.T, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestMetaLogAgreesAndSurvivesLeaderLoss(t *testing.T) {
	ids := []string{"a", "b", "c"}
	c := newMetaCluster(t, ids...)
	ctx := context.Background()
	lead := c.leader()
	var ms []MemberRecord
	for _, id := range ids {
		ms = append(ms, member(id, "dc1", "r1"))
	}
	epoch, err := lead.Apply(ctx, Command{Kind: CmdInit, ClusterID: "test", Partitions: 64, Members: ms})
	if err != nil {
		t.Fatal(err)
	}
	c.waitAll(epoch)
	// A follower cannot apply; a refusal comes back as a refusal.
	for _, id := range ids {
		if ml := c.logs[id]; ml != lead {
			if _, err := ml.Apply(ctx, Command{Kind: CmdPlanClear}); err != ErrNotLeader {
				t.Fatalf("apply on a follower: %v", err)
			}
			break
		}
	}
	spec := KeyspaceSpec{Name: "k", Replication: map[string]int{"dc1": 2}}
	if _, err := lead.Apply(ctx, Command{Kind: CmdKeyspaceCreate, Keyspace: &spec}); err != nil {
		t.Fatal(err)
	}
	other := KeyspaceSpec{Name: "k", Replication: map[string]int{"dc1": 3}}
	if _, err := lead.Apply(ctx, Command{Kind: CmdKeyspaceCreate, Keyspace: &other}); !IsRefusal(err) {
		t.Fatalf("conflicting create: %v", err)
	}
	// The leader goes away: the others elect one and go on.
	var gone string
	for id, ml := range c.logs {
		if ml == lead {
			gone = id
		}
	}
	c.stop(gone)
	next := c.leader()
	e2, err := next.Apply(ctx, Command{Kind: CmdKeyspaceCreate, Keyspace: &KeyspaceSpec{Name: "after", Replication: map[string]int{"dc1": 1}}})
	if err != nil {
		t.Fatal(err)
	}
	c.waitAll(e2)
	// The old leader comes back with its state on disk and catches up.
	c.start(gone, nil)
	c.waitAll(e2)
	st := c.logs[gone].State()
	if _, ok := st.Keyspaces["after"]; !ok || st.ClusterID != "test" || st.Keyspaces["k"].Replication["dc1"] != 2 {
		t.Fatalf("restarted node's state: %+v", st.Keyspaces)
	}
}

func TestReconcileAddsJoinersAsNonvoters(t *testing.T) {
	c := newMetaCluster(t, "a")
	ctx := context.Background()
	lead := c.leader()
	if _, err := lead.Apply(ctx, Command{Kind: CmdInit, ClusterID: "t", Partitions: 16, Members: []MemberRecord{member("a", "dc1", "r1")}}); err != nil {
		t.Fatal(err)
	}
	c.start("b", nil) // no bootstrap: waits to be added
	if _, err := lead.Apply(ctx, Command{Kind: CmdJoin, Member: &MemberRecord{ID: "b", DC: "dc1", Rack: "r1", Weight: 1, GRPCAddr: "h:1"}}); err != nil {
		t.Fatal(err)
	}
	for {
		changed, err := lead.Reconcile()
		if err != nil {
			t.Fatal(err)
		}
		if !changed {
			break
		}
	}
	roles, err := lead.Roles()
	if err != nil {
		t.Fatal(err)
	}
	if roles["b"] != "nonvoter" || roles["a"] != "voter" {
		t.Fatalf("roles %v", roles)
	}
	c.waitAll(lead.State().Epoch)
	if c.logs["b"].State().Members["b"].State != StateJoining {
		t.Fatal("the joiner did not receive the log")
	}
}

// TestRefusedCommandsAreNotLogged: a command the state refuses (a
// keyspace in a DC no member is in, a drop of one that does not exist) is
// answered as refused without an entry in the log, so bad admin input is
// not stored on every member first; one that changes nothing is not
// refused.
func TestRefusedCommandsAreNotLogged(t *testing.T) {
	c := newMetaCluster(t, "a")
	ctx := context.Background()
	lead := c.leader()
	epoch, err := lead.Apply(ctx, Command{Kind: CmdInit, ClusterID: "test", Partitions: 64, Members: []MemberRecord{member("a", "dc1", "r1")}})
	if err != nil {
		t.Fatal(err)
	}
	c.waitAll(epoch)
	before := lead.Stats().LastIndex
	bad := KeyspaceSpec{Name: "k", Replication: map[string]int{"dc9": 1}}
	for range 20 {
		var refused *RefusedError
		if _, err := lead.Apply(ctx, Command{Kind: CmdKeyspaceCreate, Keyspace: &bad}); !errors.As(err, &refused) {
			t.Fatalf("a keyspace in an unknown DC: %v, want it refused", err)
		}
		if _, err := lead.Apply(ctx, Command{Kind: CmdKeyspaceDrop, Name: "nope"}); !errors.As(err, &refused) {
			t.Fatalf("a drop of a keyspace that does not exist: %v, want it refused", err)
		}
	}
	if after := lead.Stats().LastIndex; after != before {
		t.Fatalf("log grew from index %d to %d with refused commands only", before, after)
	}
	if _, err := lead.Apply(ctx, Command{Kind: CmdPlanClear}); err != nil {
		t.Fatalf("a command that changes nothing: %v", err)
	}
}
