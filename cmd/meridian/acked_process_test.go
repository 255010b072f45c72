package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/pki"
)

// procCluster is n real `meridian serve` processes sharing a secret file,
// with TLS everywhere: certificates made by `meridian certs`.
type procCluster struct {
	bin, dir string
	procs    []*proc
	creds    grpc.DialOption
	sec      clientSec // the client certificate's files
}

// makeCerts runs `meridian certs` for a CA, the nodes and a client "app".
func makeCerts(t *testing.T, bin, dir string, ids []string) (grpc.DialOption, clientSec) {
	t.Helper()
	certs := filepath.Join(dir, "certs")
	run := func(args ...string) {
		if out, err := exec.Command(bin, append([]string{"certs"}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("meridian certs %v: %v\n%s", args, err, out)
		}
	}
	run("create-ca", "--dir", certs)
	for _, id := range ids {
		run("create-node", id, "--dir", certs)
	}
	run("create-client", "app", "--dir", certs)
	ca, _ := pki.CAFiles(certs)
	cert, key := pki.ClientFiles(certs, "app")
	src, err := pki.NewSource(ca, cert, key, pki.SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return grpc.WithTransportCredentials(pki.ClientCredentials(src, pki.ClientOptions{})), clientSec{ca: ca, cert: cert, key: key}
}

func startProcCluster(t *testing.T, n int, extra ...string) *procCluster {
	t.Helper()
	// The ports come from freePorts, free when picked and from below the
	// ephemeral range; another program can still bind one before the node
	// does. Only that is retried, on other ports.
	for attempt := 1; ; attempt++ {
		c, err := tryProcCluster(t, n, extra...)
		if err == nil {
			return c
		}
		if attempt == 3 || !errors.Is(err, errPortTaken) {
			t.Fatal(err)
		}
		t.Logf("attempt %d: %v; starting the cluster again on other ports", attempt, err)
	}
}

func tryProcCluster(t *testing.T, n int, extra ...string) (*procCluster, error) {
	t.Helper()
	c := &procCluster{bin: buildBinary(t), dir: t.TempDir()}
	secret := secretFile(t, c.bin, c.dir)
	ports := freePorts(t, 2*n)
	var ids []string
	for i := 0; i < n; i++ {
		ids = append(ids, fmt.Sprintf("n%d", i+1))
	}
	c.creds, c.sec = makeCerts(t, c.bin, c.dir, ids)
	certs := filepath.Join(c.dir, "certs")
	var initial []string
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("n%d", i+1)
		addr := fmt.Sprintf("127.0.0.1:%d", ports[i])
		initial = append(initial, id+"="+addr)
		logf, err := os.Create(filepath.Join(c.dir, id+".log"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { logf.Close() })
		c.procs = append(c.procs, &proc{id: id, addr: addr, log: logf})
	}
	for i, p := range c.procs {
		p.args = []string{"--id", p.id, "--grpc-addr", p.addr,
			"--gossip-addr", fmt.Sprintf("127.0.0.1:%d", ports[n+i]),
			"--data-dir", filepath.Join(c.dir, p.id), "--initial-cluster", strings.Join(initial, ","),
			"--cluster-secret-file", secret, "--gossip-profile", "test", "--hint-interval", "200ms",
			"--ca", filepath.Join(certs, "ca.crt"), "--cert", filepath.Join(certs, "node."+p.id+".crt"), "--key", filepath.Join(certs, "node."+p.id+".key")}
		p.args = append(p.args, extra...)
	}
	t.Cleanup(func() {
		for _, p := range c.procs {
			p.kill()
		}
		if t.Failed() {
			for _, p := range c.procs {
				b, _ := os.ReadFile(p.log.Name())
				t.Logf("--- %s log:\n%s", p.id, b)
			}
		}
	})
	for _, p := range c.procs {
		p.start(t, c.bin)
	}
	for _, p := range c.procs {
		if err := p.awaitHealthy(c.creds); err != nil {
			for _, p := range c.procs {
				p.kill()
			}
			return nil, err
		}
	}
	return c, nil
}

func (c *procCluster) kv(t *testing.T, i int) kvv1.KVClient {
	t.Helper()
	conn, err := grpc.NewClient(c.procs[i].addr, c.creds)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return kvv1.NewKVClient(conn)
}

// retry calls fn until it succeeds or ctx ends (the cluster may still be
// joining gossip right after start).
func retry[T any](t *testing.T, ctx context.Context, what string, fn func() (T, error)) T {
	t.Helper()
	for {
		v, err := fn()
		if err == nil {
			return v
		}
		if ctx.Err() != nil {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var all = &kvv1.Consistency{Level: kvv1.Level_LEVEL_ALL}

func sibValues(sibs []*kvv1.Sibling) []string {
	var out []string
	for _, s := range sibs {
		out = append(out, string(s.Value))
	}
	return out
}

// TestAcknowledgedWritesWithProcesses exercises, on three real processes:
// authenticated contexts (a context is bound to its key, cannot be altered,
// and is accepted by every node of the cluster), the sibling limit, and a
// node restarted on a wiped disk, whose new writes must not be dropped as
// "already seen" by the replicas that hold its old disk's writes.
func TestAcknowledgedWritesWithProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs processes")
	}
	c := startProcCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	kv1, kv2 := c.kv(t, 0), c.kv(t, 1)

	t.Run("contexts", func(t *testing.T) {
		a := retry(t, ctx, "put a", func() (*kvv1.PutResponse, error) {
			return kv1.Put(ctx, &kvv1.PutRequest{Key: []byte("ctx-a"), Value: []byte("a1"), Consistency: all})
		})
		// A context issued by n1 is accepted by n2: the nodes share the secret.
		if _, err := kv2.Put(ctx, &kvv1.PutRequest{Key: []byte("ctx-a"), Value: []byte("a2"), Context: a.Context, Consistency: all}); err != nil {
			t.Fatalf("n2 refused n1's context: %v", err)
		}
		forged := slices.Clone(a.Context)
		forged[len(forged)-3]++
		for name, req := range map[string]*kvv1.PutRequest{
			"another key's context": {Key: []byte("ctx-b"), Value: []byte("x"), Context: a.Context},
			"an altered context":    {Key: []byte("ctx-a"), Value: []byte("x"), Context: forged},
			"an oversized context":  {Key: []byte("ctx-a"), Value: []byte("x"), Context: make([]byte, 100<<10)},
		} {
			_, err := kv2.Put(ctx, req)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "context") {
				t.Errorf("%s: %v, want INVALID_ARGUMENT about the context", name, err)
			}
		}
		get, err := kv1.Get(ctx, &kvv1.GetRequest{Key: []byte("ctx-a"), Consistency: all})
		if err != nil || !slices.Equal(sibValues(get.Siblings), []string{"a2"}) {
			t.Fatalf("ctx-a = %v (%v), want [a2]: refused writes must store nothing", sibValues(get.GetSiblings()), err)
		}
		if get, err := kv1.Get(ctx, &kvv1.GetRequest{Key: []byte("ctx-b"), Consistency: all}); err != nil || len(get.Siblings) != 0 {
			t.Fatalf("ctx-b = %v (%v), want nothing stored", sibValues(get.GetSiblings()), err)
		}
	})

	t.Run("sibling limit", func(t *testing.T) {
		key := []byte("blind")
		// At ALL, so that n2, which coordinates the 101st, holds all 100
		// (at QUORUM its copy may still lack the last ones).
		for i := 0; i < 100; i++ {
			if _, err := kv1.Put(ctx, &kvv1.PutRequest{Key: key, Value: []byte(fmt.Sprint(i)), Consistency: all}); err != nil {
				t.Fatalf("blind write %d: %v", i, err)
			}
		}
		_, err := kv2.Put(ctx, &kvv1.PutRequest{Key: key, Value: []byte("101st")})
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "101 siblings, over the limit of 100") {
			t.Fatalf("101st blind write: %v, want FAILED_PRECONDITION naming the count", err)
		}
		get, err := kv2.Get(ctx, &kvv1.GetRequest{Key: key, Consistency: all})
		if err != nil || len(get.Siblings) != 100 {
			t.Fatalf("the key must stay readable with its 100 siblings: %d, %v", len(get.GetSiblings()), err)
		}
		put, err := kv2.Put(ctx, &kvv1.PutRequest{Key: key, Value: []byte("resolved"), Context: get.Context, Consistency: all})
		if err != nil || !slices.Equal(sibValues(put.Siblings), []string{"resolved"}) {
			t.Fatalf("resolving write: %v, %v", put, err)
		}
	})

	t.Run("wiped disk", func(t *testing.T) {
		key := []byte("wiped")
		var kctx []byte
		for i := 0; i < 3; i++ {
			put := retry(t, ctx, "put", func() (*kvv1.PutResponse, error) {
				return kv1.Put(ctx, &kvv1.PutRequest{Key: key, Value: []byte(fmt.Sprint("old", i)), Context: kctx, Consistency: all})
			})
			kctx = put.Context
		}
		n1 := c.procs[0]
		n1.kill()
		if err := os.RemoveAll(filepath.Join(c.dir, "n1")); err != nil {
			t.Fatal(err)
		}
		n1.start(t, c.bin)
		waitHealthyWith(t, n1.addr, c.creds)
		retry(t, ctx, "put after wipe", func() (*kvv1.PutResponse, error) {
			return kv1.Put(ctx, &kvv1.PutRequest{Key: key, Value: []byte("new"), Consistency: all})
		})
		get, err := kv1.Get(ctx, &kvv1.GetRequest{Key: key, Consistency: all})
		if err != nil || !slices.Contains(sibValues(get.Siblings), "new") {
			t.Fatalf("after a wiped disk, read at ALL = %v (%v): the acknowledged write is lost", sibValues(get.GetSiblings()), err)
		}
	})
}
