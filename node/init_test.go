package node_test

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/node"
)

// TestRefusedInitAppendsNothing: a configuration whose keyspaces the
// initial cluster cannot place (dc1=5 with one node) is refused before it
// reaches the metadata log, at every retry (each would otherwise append
// the whole ring to the log, once a second for good), and the node says
// what to correct.
func TestRefusedInitAppendsNothing(t *testing.T) {
	var logs lockedBuffer
	cfg := soloConfig(t, "n1", "127.0.0.1:0", t.TempDir())
	cfg.Keyspaces = []membership.KeyspaceSpec{{Name: "wide", Replication: map[string]int{"dc1": 5}}}
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
