package node_test

import (
	"encoding/json"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridiankv/meridian/engine/pebble"
	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/replica"
)

// TestKeyspacesThatCannotBePlacedAreRefusedAtStart: a new cluster's
// configuration whose keyspaces its initial members cannot place (dc1=5
// with one node, or a DC that has none) stops the node at start, saying
// what to correct, rather than leaving the cluster uninitialized for good.
func TestKeyspacesThatCannotBePlacedAreRefusedAtStart(t *testing.T) {
	for _, repl := range []map[string]int{{"dc1": 5}, {"eats": 1}} {
		cfg := soloConfig(t, "n1", "127.0.0.1:0", t.TempDir())
		cfg.Keyspaces = []membership.KeyspaceSpec{{Name: "wide", Replication: repl}}
		n, err := node.Start(ctxT(t), cfg, node.Options{})
		if err == nil {
			n.Close()
			t.Fatalf("keyspace wide %v on one node in dc1 started", repl)
		}
		if !strings.Contains(err.Error(), `keyspace "wide"`) || !strings.Contains(err.Error(), "correct the keyspaces of the config file") {
			t.Fatalf("keyspace wide %v: %v; want an error naming it and what to correct", repl, err)
		}
	}
}

// TestRefusedInitAppendsNothing: keyspaces the initial cluster cannot
// place that come from the data directory (saved by an older version of
// the node, not checked at start) are refused before they reach the
// metadata log, at every retry (each would otherwise append the whole
// ring to the log, once a second for good), and the node says what to
// correct.
func TestRefusedInitAppendsNothing(t *testing.T) {
	var logs lockedBuffer
	dir := t.TempDir()
	saveKeyspace(t, dir, "n1", membership.KeyspaceSpec{Name: "wide", Replication: map[string]int{"dc1": 5}})
	cfg := soloConfig(t, "n1", "127.0.0.1:0", dir)
	n, err := node.Start(ctxT(t), cfg, node.Options{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	tries := func() int { return strings.Count(logs.String(), "cluster metadata not initialized yet") }
	// From the second try on (a new leader's own entries are in by
	// then), each refused try would append an entry.
	eventually(t, "two refused inits", func() bool { return tries() >= 2 })
	first := n.MetaLog().Stats().LastIndex
	eventually(t, "three more tries", func() bool { return tries() >= 5 })
	if last := n.MetaLog().Stats().LastIndex; last != first {
		t.Fatalf("the metadata log grew from index %d to %d while the init was refused", first, last)
	}
	if n.Topology().Agreed() {
		t.Fatal("a refused init gave agreed metadata")
	}
	if out := logs.String(); !strings.Contains(out, `keyspace \"wide\"`) || !strings.Contains(out, "correct the keyspaces of the config file") {
		t.Fatalf("the warning does not say what to correct:\n%s", out)
	}
}

// saveKeyspace stores spec in dataDir's node store as an older version of
// the node did for keyspaces created at run time.
func saveKeyspace(t *testing.T, dataDir, id string, spec membership.KeyspaceSpec) {
	t.Helper()
	eng, err := pebble.Open(pebble.Options{Dir: filepath.Join(dataDir, "data")})
	if err != nil {
		t.Fatal(err)
	}
	store, err := replica.Open(eng, id)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.PutMeta("keyspace/"+spec.Name, raw); err != nil {
		t.Fatal(err)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	if err := eng.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestConfigKeyspaceTheClusterCannotPlaceIsProposedOnce: a joiner whose
// config file has a keyspace the cluster cannot place (RF over its DC's
// nodes) says so once and stops proposing it: every refused proposal was a
// committed entry on every voter, four a second for the node's life.
func TestConfigKeyspaceTheClusterCannotPlaceIsProposedOnce(t *testing.T) {
	var logs lockedBuffer
	l := startCluster(t, node.LocalSpec{NodesPerDC: 1, Engine: "memory",
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		Configure: func(c *node.Config) {
			if c.ID == "j1" {
				c.Keyspaces = []membership.KeyspaceSpec{{Name: "wide", Replication: map[string]int{"dc1": 5}}}
			}
		}})
	if _, err := l.Join(ctxT(t), "j1", "dc1", "r1"); err != nil {
		t.Fatal(err)
	}
	said := func() int { return strings.Count(logs.String(), "cannot be created in this cluster") }
	eventually(t, "the joiner to say the keyspace cannot be created", func() bool { return said() >= 1 })
	leader := metaLeader(t, l.Nodes())
	first := leader.MetaLog().Stats().LastIndex
	// Its metadata loop runs four times a second: give it many rounds.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if last := leader.MetaLog().Stats().LastIndex; last > first+1 {
			t.Fatalf("the metadata log grew from %d to %d: the keyspace was proposed again", first, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := said(); n != 1 {
		t.Fatalf("said %d times, want once", n)
	}
	if _, ok := l.Nodes()[0].Topology().Keyspaces["wide"]; ok {
		t.Fatal("a keyspace the cluster cannot place was created")
	}
}
