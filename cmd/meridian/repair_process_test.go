package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
)

// TestRepairWithProcesses: with hints off, a node that was down during
// 2,000 QUORUM writes holds none of them; `meridian repair run --wait`
// brings every key to it (checked on its own copy), and a second run finds
// nothing left to repair. Then its data directory is deleted and the node
// restarted empty: repair refills every key.
func TestRepairWithProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs processes")
	}
	c := startProcCluster(t, 3, "--max-hint-bytes", "0", "--anti-entropy-period", "1h", "--partitions", "64")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	kv1 := c.kv(t, 0)
	n3 := c.procs[2]
	retry(t, ctx, "warm-up write", func() (*kvv1.PutResponse, error) {
		return kv1.Put(ctx, &kvv1.PutRequest{Key: []byte("warm"), Value: []byte("x"), Consistency: all})
	})
	n3.kill()
	const keys = 2000
	for i := 0; i < keys; i++ {
		retry(t, ctx, "put", func() (*kvv1.PutResponse, error) {
			return kv1.Put(ctx, &kvv1.PutRequest{Key: []byte(fmt.Sprintf("key-%04d", i)), Value: []byte("v"),
				Consistency: &kvv1.Consistency{Level: kvv1.Level_LEVEL_QUORUM}})
		})
	}
	n3.start(t, c.bin)
	waitHealthyWith(t, n3.addr, c.creds)
	admin := c.admin(t, 0)
	// Hints are off: nothing but anti-entropy can bring n3 these keys (it
	// starts on its own, prioritised for a returning node, and the run
	// below finishes the job).
	hints, err := admin.Hints(ctx, &adminv1.HintsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(hints.Targets) != 0 {
		t.Fatalf("n1 holds hints with --max-hint-bytes 0: %v", hints.Targets)
	}
	missing := func() int {
		n := 0
		for i := 0; i < keys; i++ {
			resp, err := admin.ReplicaGet(ctx, &adminv1.ReplicaGetRequest{Node: "n3", Key: []byte(fmt.Sprintf("key-%04d", i))})
			if err != nil || len(resp.Siblings) != 1 {
				n++
			}
		}
		return n
	}
	out := c.cli(t, ctx, "repair", "run", "--wait", "--addr", n3.addr)
	if !strings.Contains(out, "repair done: 64 partition(s)") {
		t.Fatalf("repair run output: %s", out)
	}
	if m := missing(); m != 0 {
		t.Fatalf("after repair run, n3 lacks %d of %d keys", m, keys)
	}
	// One key through the CLI as an operator would check it.
	if out := c.cli(t, ctx, "kv", "get", "--replica", "n3", "--addr", c.procs[0].addr, "key-0042"); !strings.Contains(out, `"v"`) {
		t.Fatalf("kv get --replica n3: %s", out)
	}
	// Trees equal everywhere: a second run finds no mismatch.
	if out := c.cli(t, ctx, "repair", "run", "--wait", "--addr", c.procs[0].addr); !strings.Contains(out, "0 mismatching key(s)") {
		t.Fatalf("second repair run should find nothing: %s", out)
	}

	// The background exchange alone: n3 misses more writes, returns, and
	// with no repair run asked for, catches up (a returning node's
	// partitions go first).
	n3.kill()
	for i := keys; i < keys+200; i++ {
		retry(t, ctx, "put", func() (*kvv1.PutResponse, error) {
			return kv1.Put(ctx, &kvv1.PutRequest{Key: []byte(fmt.Sprintf("key-%04d", i)), Value: []byte("v"),
				Consistency: &kvv1.Consistency{Level: kvv1.Level_LEVEL_QUORUM}})
		})
	}
	n3.start(t, c.bin)
	waitHealthyWith(t, n3.addr, c.creds)
	deadline := time.Now().Add(2 * time.Minute)
	for i := keys; i < keys+200; i++ {
		for {
			resp, err := admin.ReplicaGet(ctx, &adminv1.ReplicaGetRequest{Node: "n3", Key: []byte(fmt.Sprintf("key-%04d", i))})
			if err == nil && len(resp.Siblings) == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the background exchange did not bring key-%04d to n3: %v", i, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// A wiped disk: n3 comes back empty and repair refills it.
	n3.kill()
	if err := os.RemoveAll(filepath.Join(c.dir, "n3")); err != nil {
		t.Fatal(err)
	}
	n3.start(t, c.bin)
	waitHealthyWith(t, n3.addr, c.creds)
	c.cli(t, ctx, "repair", "run", "--wait", "--addr", n3.addr)
	if m := missing(); m != 0 {
		t.Fatalf("after a wiped disk and repair, n3 lacks %d of %d keys", m, keys)
	}
}

// admin dials node i's admin listener through its client address.
func (c *procCluster) admin(t *testing.T, i int) adminv1.AdminClient {
	t.Helper()
	conn, err := dialAdmin(context.Background(), c.procs[i].addr, c.sec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return adminv1.NewAdminClient(conn)
}

// cli runs the meridian binary with the cluster's client credentials.
func (c *procCluster) cli(t *testing.T, ctx context.Context, args ...string) string {
	t.Helper()
	args = append(args, "--ca", c.sec.ca, "--cert", c.sec.cert, "--key", c.sec.key)
	out, err := exec.CommandContext(ctx, c.bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("meridian %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
