package main

import (
	"context"
	"fmt"
	"net"
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

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
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

func waitHealthy(t *testing.T, addr string) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.Status == healthpb.HealthCheckResponse_SERVING {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("node at %s never became healthy: %v", addr, err)
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
			"--cluster-secret-file", secret, "--gossip-profile", "test", "--log-level", "debug"}
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
