package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/ops"
)

// TestFaultCommands: inject, list (text and JSON) and clear through the
// CLI, and the CLI's own refusals.
func TestFaultCommands(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := node.StartLocal(ctx, node.LocalSpec{DCs: 2, NodesPerDC: 1, Engine: "memory", GossipProfile: "test", Insecure: true,
		Options: node.Options{Register: ops.Register}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addr := l.Nodes()[0].Addr()
	run := cliRunner(ctx)

	if _, err := run("fault", "inject", "partition", "--addr", addr); err == nil || !strings.Contains(err.Error(), "--ttl is required") {
		t.Fatalf("inject without --ttl: %v", err)
	}
	if _, err := run("fault", "inject", "flood", "--ttl", "1m", "--addr", addr); err == nil || !strings.Contains(err.Error(), `kind "flood"`) {
		t.Fatalf("inject an unknown kind: %v", err)
	}
	out, err := run("fault", "inject", "delay", "--from-dc", "dc1", "--to-dc", "dc2", "--both-ways", "--delay", "50ms", "--jitter", "10ms", "--ttl", "5m", "--addr", addr)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "delay 50ms±10ms dc dc1 <-> dc dc2, for 5m0s") || !strings.Contains(out, "applied by n1, n2") {
		t.Fatalf("inject output:\n%s", out)
	}
	id := strings.TrimSuffix(strings.Fields(out)[2], ":")

	out, err = run("fault", "list", "--addr", addr)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"NODE", "EXPIRES IN", "n1", "n2", id} {
		if !strings.Contains(out, want) {
			t.Fatalf("list lacks %q:\n%s", want, out)
		}
	}
	out, err = run("fault", "list", "--json", "--addr", addr)
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Nodes []struct {
			Node   string `json:"node"`
			Faults []struct {
				ID      string  `json:"id"`
				DelayMs float64 `json:"delay_ms"`
			} `json:"faults"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	if len(list.Nodes) != 2 || len(list.Nodes[0].Faults) != 1 || list.Nodes[0].Faults[0].ID != id || list.Nodes[0].Faults[0].DelayMs != 50 {
		t.Fatalf("--json list = %+v", list)
	}

	out, err = run("fault", "clear", id, "--addr", addr)
	if err != nil || !strings.Contains(out, "cleared 2 fault(s)") {
		t.Fatalf("clear: %v\n%s", err, out)
	}
	out, err = run("fault", "list", "--addr", addr)
	if err != nil || !strings.Contains(out, "no faults on any of 2 node(s)") {
		t.Fatalf("list after clear: %v\n%s", err, out)
	}
}
