package node_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/node"
)

// TestSecretRotationUnderLoad: the cluster secret (which signs contexts
// and keys gossip) is rotated in three reload steps on every node while
// clients keep doing read-modify-write cycles: no request fails and no
// node is ever seen down.
func TestSecretRotationUnderLoad(t *testing.T) {
	dir := t.TempDir()
	oldS, newS := node.GenerateSecret(), node.GenerateSecret()
	file := func(id string) string { return filepath.Join(dir, id+".secret") }
	write := func(id string, lines ...string) {
		if err := os.WriteFile(file(id), []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"n1", "n2", "n3"} {
		write(id, oldS)
	}
	l := startCluster(t, node.LocalSpec{NodesPerDC: 3, Engine: "memory", Configure: func(c *node.Config) {
		c.ClusterSecrets, c.ClusterSecretFile = nil, file(c.ID)
	}})
	ctx := ctxT(t)

	var failures atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w, n := range l.Nodes() {
		c := dial(t, n.Addr())
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := []byte(fmt.Sprint("rot-", w))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				get, err := c.Get(ctx, &kvv1.GetRequest{Key: key})
				if err == nil {
					_, err = c.Put(ctx, &kvv1.PutRequest{Key: key, Value: []byte(fmt.Sprint(i)), Context: get.Context})
				}
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	var flaps atomic.Int64
	wg.Add(1)
	go func() { // watch for any node seeing another as down
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, n := range l.Nodes() {
				for _, m := range n.Gossip().Members() {
					if m.State != membership.StateAlive {
						flaps.Add(1)
					}
				}
			}
		}
	}()
	steps := [][]string{{oldS, newS}, {newS, oldS}, {newS}}
	for _, lines := range steps {
		for _, n := range l.Nodes() {
			write(n.ID(), lines...)
			if got, err := n.ReloadSecrets(); err != nil || got != len(lines) {
				t.Fatalf("reload on %s: %d, %v", n.ID(), got, err)
			}
		}
		// Let some load run in each state.
		for i := 0; i < 20; i++ {
			if _, err := dial(t, l.Nodes()[0].Addr()).Get(ctx, &kvv1.GetRequest{Key: []byte("probe")}); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stop)
	wg.Wait()
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d requests failed during rotation, first: %v", n, firstErr.Load())
	}
	if n := flaps.Load(); n > 0 {
		t.Fatalf("a node was seen not alive %d times during rotation", n)
	}
}
