package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/ops"
)

// TestHintsCommand: with a replica down, `meridian hints` on a node that
// keeps hints for it lists the target (text and JSON), and `hints purge`
// drops them, only with --yes (a hint may be a write's only copy).
func TestHintsCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := node.StartLocal(ctx, node.LocalSpec{NodesPerDC: 3, Engine: "memory", GossipProfile: "test", Insecure: true,
		Options: node.Options{Register: ops.Register}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addr := l.Nodes()[0].Addr()
	down := l.Nodes()[2].ID()
	run := cliRunner(ctx)
	out, err := run("hints", "--addr", addr)
	if err != nil || !strings.Contains(out, "holds no hints") {
		t.Fatalf("hints before any: %v\n%s", err, out)
	}
	if err := l.Stop(down); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		run("kv", "put", "--addr", addr, "--consistency", "one", "--blind", fmt.Sprintf("k%d", i), "v")
		out, err = run("hints", "--addr", addr)
		if err == nil && strings.Contains(out, down) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no hints listed for %s: %v\n%s", down, err, out)
		}
	}
	for _, col := range []string{"TARGET", "COUNT", "BYTES", "OLDEST", "RATE/S", "QUARANTINED", "REFUSED", "ALIVE"} {
		if !strings.Contains(out, col) {
			t.Fatalf("hints table lacks %s:\n%s", col, out)
		}
	}
	out, err = run("hints", "--addr", addr, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var resp struct {
		Node    string `json:"node"`
		Targets []struct {
			Target string `json:"target"`
			Count  string `json:"count"`
			Alive  bool   `json:"alive"`
			Owed   bool   `json:"owed"`
		} `json:"targets"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	if len(resp.Targets) != 1 || resp.Targets[0].Target != down || resp.Targets[0].Count == "0" || resp.Targets[0].Alive || !resp.Targets[0].Owed {
		t.Fatalf("--json targets %+v", resp.Targets)
	}
	if _, err := run("hints", "purge", "--addr", addr); err == nil || !strings.Contains(err.Error(), "--target is required") {
		t.Fatalf("purge without --target: %v", err)
	}
	if _, err := run("hints", "purge", "--addr", addr, "--target", down); err == nil || !strings.Contains(err.Error(), "run again with --yes") {
		t.Fatalf("purge without --yes: %v", err)
	}
	if n := l.Node(l.Nodes()[0].ID()).HintLog().Targets(); len(n) != 1 {
		t.Fatalf("hints held after a purge without --yes: for %v, want %s's kept", n, down)
	}
	out, err = run("hints", "purge", "--addr", addr, "--target", down, "--yes")
	if err != nil || !strings.Contains(out, "purged") || strings.Contains(out, "purged 0 ") {
		t.Fatalf("purge: %v\n%s", err, out)
	}
	if n := l.Node(l.Nodes()[0].ID()).HintLog().Targets(); len(n) != 0 {
		t.Fatalf("hints left for %v after purge", n)
	}
}
