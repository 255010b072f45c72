package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/drill"
)

// buildBinary compiles the meridian binary once for the process tests.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "meridian")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// secretFile creates a cluster secret with `meridian secret create` in dir,
// for every `meridian serve` of a test to share.
func secretFile(t *testing.T, bin, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "cluster.secret")
	if out, err := exec.Command(bin, "secret", "create", path).CombinedOutput(); err != nil {
		t.Fatalf("meridian secret create: %v\n%s", err, out)
	}
	return path
}

// freePorts returns n loopback ports for test nodes (see drill.FreePorts).
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	ports, err := drill.FreePorts(n)
	if err != nil {
		t.Fatal(err)
	}
	return ports
}

type proc struct {
	id   string
	addr string
	args []string
	cmd  *exec.Cmd
	log  *os.File
}

func (p *proc) start(t *testing.T, bin string) {
	t.Helper()
	p.cmd = exec.Command(bin, append([]string{"serve"}, p.args...)...)
	p.cmd.Stdout = p.log
	p.cmd.Stderr = p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
}

func (p *proc) kill() {
	if p.cmd != nil && p.cmd.Process != nil {
		p.cmd.Process.Signal(syscall.SIGKILL)
		p.cmd.Wait()
		p.cmd = nil
	}
}

// errPortTaken: a node could not bind a port picked for it.
var errPortTaken = errors.New("a port picked for a node was taken before it bound it")

// awaitHealthy waits until p serves; the error wraps errPortTaken when
// p's log says it could not bind.
func (p *proc) awaitHealthy(creds grpc.DialOption) error {
	return healthy(p.addr, creds, func() error {
		if b, _ := os.ReadFile(p.log.Name()); bytes.Contains(b, []byte("address already in use")) {
			return fmt.Errorf("node %s: %w", p.id, errPortTaken)
		}
		return nil
	})
}

func waitHealthy(t *testing.T, addr string) {
	t.Helper()
	waitHealthyWith(t, addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

func waitHealthyWith(t *testing.T, addr string, creds grpc.DialOption) {
	t.Helper()
	if err := healthy(addr, creds, nil); err != nil {
		t.Fatal(err)
	}
}

// healthy polls the node at addr until it answers SERVING (at most 60s);
// giveUp, when set, can end the wait early with its error.
func healthy(addr string, creds grpc.DialOption, giveUp func() error) error {
	conn, err := grpc.NewClient(addr, creds)
	if err != nil {
		return err
	}
	defer conn.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.Status == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
		if giveUp != nil {
			if err := giveUp(); err != nil {
				return err
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node at %s never became healthy: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSIGKILLKeepsAcknowledgedWrites runs three real `meridian serve`
// processes, writes at QUORUM with durable acks, kills every process with
// SIGKILL right after the acknowledgements, restarts them and reads every
// key back.
func TestSIGKILLKeepsAcknowledgedWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs processes")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	secret := secretFile(t, bin, dir)
	ports := freePorts(t, 6)
	var procs []*proc
	var initial []string
	for i := 0; i < 3; i++ {
		id := fmt.Sprintf("n%d", i+1)
		addr := fmt.Sprintf("127.0.0.1:%d", ports[i])
		initial = append(initial, id+"="+addr)
		logf, err := os.Create(filepath.Join(dir, id+".log"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { logf.Close() })
		procs = append(procs, &proc{id: id, addr: addr, log: logf})
	}
	for i, p := range procs {
		p.args = []string{"--id", p.id, "--grpc-addr", p.addr,
			"--gossip-addr", fmt.Sprintf("127.0.0.1:%d", ports[3+i]),
			"--data-dir", filepath.Join(dir, p.id), "--initial-cluster", strings.Join(initial, ","),
			"--cluster-secret-file", secret, "--gossip-profile", "test", "--log-level", "debug", "--insecure"}
	}
	t.Cleanup(func() {
		for _, p := range procs {
			p.kill()
		}
		if t.Failed() {
			for _, p := range procs {
				b, _ := os.ReadFile(p.log.Name())
				t.Logf("--- %s log:\n%s", p.id, b)
			}
		}
	})
	for _, p := range procs {
		p.start(t, bin)
	}
	for _, p := range procs {
		waitHealthy(t, p.addr)
	}
	conn, err := grpc.NewClient(procs[0].addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	kv := kvv1.NewKVClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Every node acknowledges only after fsync; with N=3 at ALL every
	// node holds every acknowledged write.
	const keys = 200
	for i := 0; i < keys; i++ {
		for {
			_, err := kv.Put(ctx, &kvv1.PutRequest{
				Key: []byte(fmt.Sprintf("key-%03d", i)), Value: []byte(fmt.Sprintf("value-%03d", i)),
				Consistency: &kvv1.Consistency{Level: kvv1.Level_LEVEL_ALL},
			})
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("put key-%03d: %v", i, err)
			}
			time.Sleep(50 * time.Millisecond) // the cluster may still be joining
		}
	}
	for _, p := range procs {
		p.kill()
	}
	// Each node alone must still hold every key: restart one node at a
	// time, with the others down, and read at ONE through it (its own copy
	// is the only one that can answer).
	for _, p := range procs {
		p.start(t, bin)
		waitHealthy(t, p.addr)
		pconn, err := grpc.NewClient(p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		pkv := kvv1.NewKVClient(pconn)
		for i := 0; i < keys; i++ {
			resp, err := pkv.Get(ctx, &kvv1.GetRequest{Key: []byte(fmt.Sprintf("key-%03d", i)),
				Consistency: &kvv1.Consistency{Level: kvv1.Level_LEVEL_ONE}})
			if err != nil {
				t.Fatalf("%s: get key-%03d after SIGKILL: %v", p.id, i, err)
			}
			if len(resp.Siblings) != 1 || string(resp.Siblings[0].Value) != fmt.Sprintf("value-%03d", i) {
				t.Fatalf("%s: key-%03d after SIGKILL = %v, want value-%03d", p.id, i, resp.Siblings, i)
			}
		}
		pconn.Close()
		p.kill()
	}
}

// TestServeStartupErrors starts a real node, then nodes that cannot start
// next to it: each exits non-zero with one line on stderr that says what
// to fix, and never a panic.
func TestServeStartupErrors(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs processes")
	}
	// Plaintext listeners (inherited by every process started here): these
	// refusals are not about TLS.
	t.Setenv("MERIDIAN_INSECURE", "true")
	bin := buildBinary(t)
	dir := t.TempDir()
	secret := secretFile(t, bin, dir)
	ports := freePorts(t, 6)
	addr := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", ports[i]) }
	cluster := fmt.Sprintf("n1=%s,n2=%s", addr(0), addr(1))
	logf, err := os.Create(filepath.Join(dir, "n1.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logf.Close() })
	n1Args := []string{"--id", "n1", "--grpc-addr", addr(0), "--gossip-addr", addr(2),
		"--data-dir", filepath.Join(dir, "n1"), "--initial-cluster", cluster,
		"--cluster-secret-file", secret, "--gossip-profile", "test"}
	n1 := &proc{id: "n1", addr: addr(0), args: n1Args, log: logf}
	t.Cleanup(func() {
		n1.kill()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("--- n1 log:\n%s", b)
		}
	})
	n1.start(t, bin)
	waitHealthy(t, n1.addr)

	cases := []struct {
		name string
		args []string
		want string
	}{
		{"the same node twice", n1Args, "is in use by another process"},
		{"the same data dir", []string{"--id", "n1", "--grpc-addr", "127.0.0.1:0", "--gossip-addr", addr(3),
			"--data-dir", filepath.Join(dir, "n1"), "--initial-cluster", cluster, "--cluster-secret-file", secret},
			"is this node already running?"},
		{"the same port", []string{"--id", "n2", "--grpc-addr", addr(0), "--gossip-addr", addr(3),
			"--data-dir", filepath.Join(dir, "n2"), "--initial-cluster", fmt.Sprintf("n1=%s,n2=%s", addr(1), addr(0)),
			"--cluster-secret-file", secret}, "address already in use"},
		{"n2 on n1's data dir", []string{"--id", "n2", "--grpc-addr", addr(1), "--gossip-addr", addr(3),
			"--data-dir", filepath.Join(dir, "n1"), "--initial-cluster", cluster, "--cluster-secret-file", secret},
			`belongs to node "n1", not "n2": use --id n1 or another --data-dir`},
		{"a grpc-addr unlike the initial cluster's", []string{"--id", "n2", "--grpc-addr", addr(4), "--gossip-addr", addr(3),
			"--data-dir", filepath.Join(dir, "n2b"), "--initial-cluster", cluster, "--cluster-secret-file", secret},
			"grpc-addr " + addr(4) + " differs from n2's address " + addr(1) + " in initial-cluster"},
		{"no cluster secret", []string{"--id", "n2", "--grpc-addr", addr(1), "--gossip-addr", addr(3),
			"--data-dir", filepath.Join(dir, "n2c"), "--initial-cluster", cluster},
			"meridian secret create"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, append([]string{"serve"}, c.args...)...)
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if ctx.Err() != nil {
				t.Fatalf("serve did not exit: it started? stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
			}
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() == 0 {
				t.Fatalf("serve: %v, want a non-zero exit; stderr:\n%s", err, stderr.String())
			}
			lines := strings.Split(strings.TrimRight(stderr.String(), "\n"), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "meridian: ") || !strings.Contains(lines[0], c.want) {
				t.Fatalf("stderr:\n%s\nwant one line \"meridian: ...%s...\"", stderr.String(), c.want)
			}
			if all := stdout.String() + stderr.String(); strings.Contains(all, "panic") {
				t.Fatalf("output mentions a panic:\n%s", all)
			}
		})
	}
	// n1 is still serving, and a refused start left n2's directory usable:
	// n2 starts with it.
	waitHealthy(t, n1.addr)
	n2log, err := os.Create(filepath.Join(dir, "n2.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n2log.Close() })
	n2 := &proc{id: "n2", addr: addr(1), log: n2log, args: []string{"--id", "n2", "--grpc-addr", addr(1), "--gossip-addr", addr(3),
		"--data-dir", filepath.Join(dir, "n2"), "--initial-cluster", cluster, "--cluster-secret-file", secret, "--gossip-profile", "test"}}
	t.Cleanup(func() {
		n2.kill()
		if t.Failed() {
			b, _ := os.ReadFile(n2log.Name())
			t.Logf("--- n2 log:\n%s", b)
		}
	})
	n2.start(t, bin)
	waitHealthy(t, n2.addr)
}
