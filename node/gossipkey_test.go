package node_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
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

// TestReloadSecretsAllOrNothing: a reload whose gossip key file does not
// load changes nothing (as its error says): contexts handed out after it
// are still signed with the secret in use before, not the new one.
func TestReloadSecretsAllOrNothing(t *testing.T) {
	dir := t.TempDir()
	secretFile, keyFile := filepath.Join(dir, "cluster.secret"), filepath.Join(dir, "gossip.key")
	old, next := node.GenerateSecret(), node.GenerateSecret()
	key, _ := node.GenerateGossipKey()
	write := func(path, content string) {
		if err := os.WriteFile(path, []byte(content+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(secretFile, old)
	write(keyFile, key)
	l := startCluster(t, node.LocalSpec{NodesPerDC: 1, Engine: "memory", Configure: func(c *node.Config) {
		c.ClusterSecrets, c.ClusterSecretFile, c.GossipKeyFile = nil, secretFile, keyFile
	}})
	n := l.Nodes()[0]
	kv := dial(t, n.Addr())
	ctx := ctxT(t)
	if _, err := kv.Put(ctx, &kvv1.PutRequest{Key: []byte("k"), Value: []byte("v1")}); err != nil {
		t.Fatal(err)
	}
	write(secretFile, next)
	write(keyFile, "not a key")
	if _, err := n.ReloadSecrets(); err == nil {
		t.Fatal("a reload with a bad gossip key file succeeded")
	}
	got, err := kv.Get(ctx, &kvv1.GetRequest{Key: []byte("k")})
	if err != nil {
		t.Fatal(err)
	}
	// Back to the old secret alone: a context signed with the new one
	// would now be refused.
	write(secretFile, old)
	write(keyFile, key)
	if _, err := n.ReloadSecrets(); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, &kvv1.PutRequest{Key: []byte("k"), Context: got.GetContext(), Value: []byte("v2")}); err != nil {
		t.Fatalf("a context handed out after the failed reload: %v (signed with the secret the failed reload read)", err)
	}
}
