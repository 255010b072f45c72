package node_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/node"
)

// TestGossipKeyFileRotation: with --gossip-key-file the keyring comes from
// the file, and rotating it in three reloads never shows a member down.
func TestGossipKeyFileRotation(t *testing.T) {
	dir := t.TempDir()
	a, err := node.GenerateGossipKey()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := node.GenerateGossipKey()
	file := func(id string) string { return filepath.Join(dir, id+".gossip") }
	write := func(id string, keys ...string) {
		if err := os.WriteFile(file(id), []byte(strings.Join(keys, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"n1", "n2", "n3"} {
		write(id, a)
	}
	// Each node has its own cluster secret: gossip works only because the
	// key file, not the secret, keys it.
	l := startCluster(t, node.LocalSpec{NodesPerDC: 3, Engine: "memory", Configure: func(c *node.Config) {
		c.GossipKeyFile = file(c.ID)
		c.ClusterSecrets = []string{node.GenerateSecret()}
	}})
	for _, step := range [][]string{{a, b}, {b, a}, {b}} {
		for _, n := range l.Nodes() {
			write(n.ID(), step...)
			if _, err := n.ReloadSecrets(); err != nil {
				t.Fatal(err)
			}
		}
		for _, n := range l.Nodes() {
			for _, m := range n.Gossip().Members() {
				if m.State != membership.StateAlive {
					t.Fatalf("after a rotation step %s sees %s %s", n.ID(), m.Meta.ID, m.State)
				}
			}
		}
	}
	if err := l.WaitConverged(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

func TestLoadGossipKeysRefusesBadKeys(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"empty":   "\n# nothing\n",
		"short":   "c2hvcnQ=\n",
		"garbage": "not base64!\n",
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := node.LoadGossipKeys(p); err == nil {
			t.Errorf("%s: a bad gossip key file was accepted", name)
		}
	}
	k, _ := node.GenerateGossipKey()
	p := filepath.Join(dir, "good")
	os.WriteFile(p, []byte("# primary\n"+k+"\n"), 0o600)
	if keys, err := node.LoadGossipKeys(p); err != nil || len(keys) != 1 || len(keys[0]) != 32 {
		t.Fatalf("good file: %v %v", keys, err)
	}
}
