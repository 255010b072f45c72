package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
)

// Helpers for the membership process tests: a procCluster whose members
// change (nodes started later with --join, killed, restarted), driven
// through the meridian CLI as an operator would, with a QUORUM write load
// that remembers what was acknowledged.

// memberCluster is a procCluster whose membership a test changes.
type memberCluster struct {
	*procCluster
	// extra are the serve flags every node gets, joiners included.
	extra []string
}

func startMemberCluster(t *testing.T, n int, extra ...string) *memberCluster {
	t.Helper()
	return &memberCluster{procCluster: startProcCluster(t, n, extra...), extra: extra}
}

// index is the position in c.procs of node id.
func (c *memberCluster) index(t *testing.T, id string) int {
	t.Helper()
	i := slices.IndexFunc(c.procs, func(p *proc) bool { return p.id == id })
	if i < 0 {
		t.Fatalf("no node %s in the test cluster", id)
	}
	return i
}

// proc is node id's process.
func (c *memberCluster) proc(t *testing.T, id string) *proc {
	t.Helper()
	return c.procs[c.index(t, id)]
}

// join starts node id with --join through node via's client address, with
// its own certificate from the cluster's CA, and waits until it serves
// (it has applied agreed metadata that lists it). The node is appended to
// c.procs, so the cluster's clean-up stops it and prints its log on
// failure.
func (c *memberCluster) join(t *testing.T, id string, via int) *proc {
	t.Helper()
	certs := filepath.Join(c.dir, "certs")
	if out, err := exec.Command(c.bin, "certs", "create-node", id, "--dir", certs).CombinedOutput(); err != nil {
		t.Fatalf("meridian certs create-node %s: %v\n%s", id, err, out)
	}
	ports := freePorts(t, 2)
	logf, err := os.Create(filepath.Join(c.dir, id+".log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logf.Close() })
	p := &proc{id: id, addr: fmt.Sprintf("127.0.0.1:%d", ports[0]), log: logf}
	p.args = []string{"--id", id, "--grpc-addr", p.addr, "--gossip-addr", fmt.Sprintf("127.0.0.1:%d", ports[1]),
		"--data-dir", filepath.Join(c.dir, id), "--join", c.procs[via].addr, "--dc", "dc1", "--rack", "rack1", "--weight", "1",
		"--cluster-secret-file", filepath.Join(c.dir, "cluster.secret"), "--gossip-profile", "test", "--hint-interval", "200ms",
		"--ca", filepath.Join(certs, "ca.crt"), "--cert", filepath.Join(certs, "node."+id+".crt"), "--key", filepath.Join(certs, "node."+id+".key")}
	p.args = append(p.args, c.extra...)
	c.procs = append(c.procs, p)
	p.start(t, c.bin)
	c.waitJoined(t, p)
	return p
}

// waitJoined waits until a node started with --join serves: it was
// admitted and has applied agreed metadata. If it does not, the failure
// quotes what its log says about the metadata log.
func (c *memberCluster) waitJoined(t *testing.T, p *proc) {
	t.Helper()
	conn, err := grpc.NewClient(p.addr, c.creds)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.Status == healthpb.HealthCheckResponse_SERVING {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	raw, _ := os.ReadFile(p.log.Name())
	var refused []string
	admitted := 0
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.Contains(line, "not authorized") && len(refused) < 2 {
			refused = append(refused, strings.TrimSpace(line))
		}
		if strings.Contains(line, "admitted as a joining node") {
			admitted++
		}
	}
	msg := fmt.Sprintf("%s, started with --join, is not serving 30s later: it has not applied agreed metadata that lists it. "+
		"Its log shows it was admitted %d time(s) (each retry of the join is proposed again, a new epoch each time)", p.id, admitted)
	if len(refused) > 0 {
		msg += ", and its metadata-log listener refused the members' connections:\n" + strings.Join(refused, "\n")
	}
	t.Fatal(msg)
}

// restart starts a stopped node again with the same flags and waits until
// it serves.
func (c *memberCluster) restart(t *testing.T, p *proc) {
	t.Helper()
	p.start(t, c.bin)
	waitHealthyWith(t, p.addr, c.creds)
}

// terminate stops a node with SIGTERM and waits for it to exit.
func terminate(t *testing.T, p *proc) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM %s: %v", p.id, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- p.cmd.Wait() }()
	select {
	case err := <-exited:
		p.cmd = nil
		if err != nil {
			t.Fatalf("%s exited with %v after SIGTERM", p.id, err)
		}
	case <-time.After(30 * time.Second):
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-exited
		p.cmd = nil
		t.Fatalf("%s did not exit within 30s of SIGTERM", p.id)
	}
}

// run runs the meridian CLI with the cluster's client credentials and
// returns its stdout and stderr.
func (c *memberCluster) run(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	args = append(slices.Clone(args), "--ca", c.sec.ca, "--cert", c.sec.cert, "--key", c.sec.key)
	cmd := exec.CommandContext(ctx, c.bin, args...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// runOK runs the CLI and fails the test if it fails.
func (c *memberCluster) runOK(t *testing.T, ctx context.Context, args ...string) string {
	t.Helper()
	out, errOut, err := c.run(ctx, args...)
	if err != nil {
		t.Fatalf("meridian %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// runJSON runs the CLI with --json and decodes its output into m.
func (c *memberCluster) runJSON(ctx context.Context, m proto.Message, args ...string) error {
	out, errOut, err := c.run(ctx, append(slices.Clone(args), "--json")...)
	if err != nil {
		return fmt.Errorf("meridian %s --json: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errOut))
	}
	if err := protojson.Unmarshal([]byte(out), m); err != nil {
		return fmt.Errorf("meridian %s --json printed what does not decode (%v):\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// clusterStatus is `meridian cluster status --json` through node via.
func (c *memberCluster) clusterStatus(ctx context.Context, via int) (*adminv1.ClusterStatusResponse, error) {
	resp := &adminv1.ClusterStatusResponse{}
	return resp, c.runJSON(ctx, resp, "cluster", "status", "--addr", c.procs[via].addr)
}

// status is `meridian status --json` through node via.
func (c *memberCluster) status(ctx context.Context, via int) (*adminv1.StatusResponse, error) {
	resp := &adminv1.StatusResponse{}
	return resp, c.runJSON(ctx, resp, "status", "--addr", c.procs[via].addr)
}

// memberState is a node's member state in a status, "" if not listed.
func memberState(nodes []*adminv1.Node, id string) string {
	for _, n := range nodes {
		if n.Id == id {
			return n.MemberState
		}
	}
	return ""
}

// pollUntil polls cond until it holds; past timeout the test fails with
// cond's last description of what it saw.
func pollUntil(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, saw := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; last seen: %s", what, timeout, saw)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitJoining waits until `cluster status --json` lists id as joining.
func (c *memberCluster) waitJoining(t *testing.T, ctx context.Context, id string, via int) {
	t.Helper()
	pollUntil(t, 30*time.Second, id+" listed as joining", func() (bool, string) {
		st, err := c.clusterStatus(ctx, via)
		if err != nil {
			return false, err.Error()
		}
		s := memberState(st.Nodes, id)
		return s == "joining", fmt.Sprintf("%s is %q", id, s)
	})
}

// plan adds each step to the plan (`cluster plan ...`) and checks that
// `plan show --json` (with --sizes when sizes) lists moves.
func (c *memberCluster) plan(t *testing.T, ctx context.Context, via int, sizes bool, steps ...[]string) *adminv1.Plan {
	t.Helper()
	addr := c.procs[via].addr
	for _, s := range steps {
		c.runOK(t, ctx, append(append([]string{"cluster", "plan"}, s...), "--addr", addr)...)
	}
	args := []string{"cluster", "plan", "show", "--addr", addr}
	if sizes {
		args = append(args, "--sizes")
	}
	show := &adminv1.ClusterPlanResponse{}
	if err := c.runJSON(ctx, show, args...); err != nil {
		t.Fatal(err)
	}
	if len(show.GetPlan().GetOps()) != len(steps) || len(show.GetPlan().GetMoves()) == 0 || show.GetPlan().GetPartitionsChanged() == 0 {
		t.Fatalf("plan show --json after %v: %s", steps, protojson.Format(show))
	}
	return show.GetPlan()
}

// commit runs `cluster commit` through node via.
func (c *memberCluster) commit(t *testing.T, ctx context.Context, via int, flags ...string) {
	t.Helper()
	out := c.runOK(t, ctx, append([]string{"cluster", "commit", "--addr", c.procs[via].addr}, flags...)...)
	if !strings.Contains(out, "committed the plan ") {
		t.Fatalf("cluster commit: %s", out)
	}
}

// planAndCommit plans the steps, checks the plan lists moves, and commits
// that plan by its ID.
func (c *memberCluster) planAndCommit(t *testing.T, ctx context.Context, via int, steps ...[]string) *adminv1.Plan {
	t.Helper()
	p := c.plan(t, ctx, via, false, steps...)
	c.commit(t, ctx, via, "--plan", planID(p.GetOps()))
	return p
}

// watchTransition runs `cluster status --watch` through node via until it
// exits; it must exit 0 (the transition finished) within timeout.
func (c *memberCluster) watchTransition(t *testing.T, via int, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	// The watch reads one node's applied metadata: first let that node
	// catch up with the newest epoch any running node has (the commit was
	// applied on the node it went through before it returned), or a
	// lagging node would report "no transition in progress" at once.
	var newest uint64
	for i, p := range c.procs {
		if p.cmd == nil {
			continue
		}
		if st, err := c.clusterStatus(ctx, i); err == nil && st.Epoch > newest {
			newest = st.Epoch
		}
	}
	for {
		st, err := c.clusterStatus(ctx, via)
		if err == nil && st.Epoch >= newest {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("%s did not reach epoch %d within %v", c.procs[via].id, newest, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
	out, errOut, err := c.run(ctx, "cluster", "status", "--watch", "--interval", "500ms", "--addr", c.procs[via].addr)
	if err != nil {
		t.Fatalf("cluster status --watch through %s did not exit 0 within %v (%v): the transition did not finish.\nstderr: %s\n%s",
			c.procs[via].id, timeout, err, strings.TrimSpace(errOut), c.stuck(via))
	}
	if !strings.Contains(out, "transition finished") && !strings.Contains(out, "no transition in progress") {
		t.Fatalf("cluster status --watch exited 0 without saying the transition ended:\n%s", out)
	}
	t.Logf("transition finished %v after the watch started", time.Since(start).Round(100*time.Millisecond))
}

// stuck describes a transition that does not finish: its progress, its
// transfers by state, and each distinct transfer error with how many
// transfers report it.
func (c *memberCluster) stuck(via int) string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := c.clusterStatus(ctx, via)
	if err != nil {
		return "cluster status: " + err.Error()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "epoch %d, leader %q, partitions switched %d/%d, unreachable %v\n", st.Epoch, st.Leader, st.PartitionsDone, st.PartitionsMoving, st.Unreachable)
	for _, n := range st.Nodes {
		fmt.Fprintf(&b, "  %s: member %s, gossip %s, epoch %d\n", n.Id, n.MemberState, n.State, n.Epoch)
	}
	states := map[string]int{}
	errs := map[string]int{}
	for _, tr := range st.Transfers {
		states[tr.Node+" "+tr.State]++
		if tr.Error != "" {
			errs[tr.Node+": "+tr.Error]++
		}
	}
	fmt.Fprintf(&b, "transfers by receiver and state: %v\n", states)
	keys := slices.Sorted(maps.Keys(errs))
	for _, e := range keys[:min(5, len(keys))] {
		fmt.Fprintf(&b, "  %d transfer(s) report: %s\n", errs[e], e)
	}
	if len(keys) > 5 {
		fmt.Fprintf(&b, "  and %d other errors\n", len(keys)-5)
	}
	return b.String()
}

// writeLoad writes fresh keys at QUORUM through some nodes until stopped
// and remembers the ones acknowledged.
type writeLoad struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     struct {
		sync.Mutex
		acked   map[string]string
		failed  int
		lastErr error
	}
}

// startWriteLoad starts two writers, each taking the nodes in turn, a
// write every few milliseconds (the machine runs every node too).
func startWriteLoad(t *testing.T, c *memberCluster, prefix string, via ...int) *writeLoad {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &writeLoad{cancel: cancel}
	w.mu.acked = map[string]string{}
	clients := make([]kvv1.KVClient, len(via))
	for i, v := range via {
		clients[i] = c.kv(t, v)
	}
	for g := range 2 {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				key := fmt.Sprintf("%s-%d-%06d", prefix, g, i)
				val := "v-" + key
				cctx, ccancel := context.WithTimeout(ctx, 3*time.Second)
				_, err := clients[(i+g)%len(clients)].Put(cctx, &kvv1.PutRequest{Key: []byte(key), Value: []byte(val),
					Consistency: &kvv1.Consistency{Level: kvv1.Level_LEVEL_QUORUM}})
				ccancel()
				w.mu.Lock()
				if err == nil {
					w.mu.acked[key] = val
				} else if ctx.Err() == nil {
					w.mu.failed++
					w.mu.lastErr = err
				}
				w.mu.Unlock()
				select {
				case <-ctx.Done():
				case <-time.After(10 * time.Millisecond):
				}
			}
		}()
	}
	t.Cleanup(func() { w.cancel(); w.wg.Wait() })
	return w
}

func (w *writeLoad) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.mu.acked)
}

// waitAcked waits until the load has n more acknowledged writes than now.
func (w *writeLoad) waitMore(t *testing.T, n int) {
	t.Helper()
	base := w.count()
	pollUntil(t, 30*time.Second, fmt.Sprintf("%d more writes acknowledged", n), func() (bool, string) {
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.mu.acked) >= base+n, fmt.Sprintf("%d acknowledged, %d failed, last error %v", len(w.mu.acked)-base, w.mu.failed, w.mu.lastErr)
	})
}

// stop ends the load and returns the acknowledged writes.
func (w *writeLoad) stop(t *testing.T) map[string]string {
	t.Helper()
	w.cancel()
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	t.Logf("write load: %d writes acknowledged at QUORUM, %d failed (last: %v)", len(w.mu.acked), w.mu.failed, w.mu.lastErr)
	if len(w.mu.acked) == 0 {
		t.Fatal("the write load got no acknowledgement at all")
	}
	return w.mu.acked
}

// putMany writes n fresh keys with values of size bytes at QUORUM through
// node via, sixteen at a time, and returns them.
func putMany(t *testing.T, c *memberCluster, via int, prefix string, n, size int) map[string]string {
	t.Helper()
	kv := c.kv(t, via)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out := make(map[string]string, n)
	var mu sync.Mutex
	var wg sync.WaitGroup
	keys := make(chan int)
	pad := strings.Repeat("x", size)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range keys {
				key := fmt.Sprintf("%s-%06d", prefix, i)
				val := (key + "=" + pad)[:size]
				retry(t, ctx, "put "+key, func() (*kvv1.PutResponse, error) {
					return kv.Put(ctx, &kvv1.PutRequest{Key: []byte(key), Value: []byte(val),
						Consistency: &kvv1.Consistency{Level: kvv1.Level_LEVEL_QUORUM}})
				})
				mu.Lock()
				out[key] = val
				mu.Unlock()
			}
		}()
	}
	for i := range n {
		keys <- i
	}
	close(keys)
	wg.Wait()
	return out
}

// mergeKeys returns the union of acknowledged writes.
func mergeKeys(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// readAllAtALL reads every key at ALL through node via and wants its
// value. A read is retried until timeout: a replica still owed hints (or
// just restarted) does not count toward ALL, so the first reads may fail
// until hints are delivered.
func readAllAtALL(t *testing.T, c *memberCluster, via int, acked map[string]string, timeout time.Duration) {
	t.Helper()
	start := time.Now()
	kv := c.kv(t, via)
	deadline := start.Add(timeout)
	keys := make(chan string)
	var (
		mu       sync.Mutex
		failures []string
		retried  int
		wg       sync.WaitGroup
	)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range keys {
				for attempt := 0; ; attempt++ {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					resp, err := kv.Get(ctx, &kvv1.GetRequest{Key: []byte(k), Consistency: all})
					cancel()
					if err == nil && slices.Contains(sibValues(resp.Siblings), acked[k]) {
						if attempt > 0 {
							mu.Lock()
							retried++
							mu.Unlock()
						}
						break
					}
					if time.Now().After(deadline) {
						mu.Lock()
						if err != nil {
							failures = append(failures, fmt.Sprintf("%s: %v", k, err))
						} else {
							failures = append(failures, fmt.Sprintf("%s = %q, want %q", k, sibValues(resp.Siblings), acked[k]))
						}
						mu.Unlock()
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
		}()
	}
	for k := range acked {
		keys <- k
	}
	close(keys)
	wg.Wait()
	if len(failures) > 0 {
		slices.Sort(failures)
		held := c.hintsHeld()
		if held == "" {
			held = "  none"
			if slices.ContainsFunc(failures, func(f string) bool { return strings.Contains(f, "still owed hints") }) {
				held += ": no running node holds a hint, yet the coordinator counts a replica as owed hints (a stale record)"
			}
		}
		t.Fatalf("%d of %d acknowledged keys not readable at ALL through %s within %v; first: %s\nhints held (meridian hints --json on every running node):\n%s",
			len(failures), len(acked), c.procs[via].id, timeout, strings.Join(failures[:min(3, len(failures))], "; "), held)
	}
	t.Logf("%d acknowledged keys read at ALL through %s in %v (%d needed a retry)", len(acked), c.procs[via].id, time.Since(start).Round(10*time.Millisecond), retried)
}

// hintsHeld describes the hints every running node holds (`meridian hints
// --json`), for a failure message.
func (c *memberCluster) hintsHeld() string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var b strings.Builder
	for _, p := range c.procs {
		if p.cmd == nil {
			continue
		}
		resp := &adminv1.HintsResponse{}
		if err := c.runJSON(ctx, resp, "hints", "--addr", p.addr); err != nil {
			fmt.Fprintf(&b, "  %s: %v\n", p.id, err)
			continue
		}
		for _, h := range resp.Targets {
			fmt.Fprintf(&b, "  %s holds %d hints for %s (alive %v, oldest %.0fs)\n", p.id, h.Count, h.Target, h.Alive, h.OldestAgeSeconds)
		}
	}
	return b.String()
}

// checkSameEpoch waits until `meridian status --json` through node via
// shows every listed node (removed ones aside) at the status's epoch, each
// with a role in the metadata log, and exactly one leader.
func (c *memberCluster) checkSameEpoch(t *testing.T, ctx context.Context, via int) *adminv1.StatusResponse {
	t.Helper()
	var last *adminv1.StatusResponse
	pollUntil(t, 30*time.Second, "every node at the same epoch with a Raft role", func() (bool, string) {
		st, err := c.status(ctx, via)
		if err != nil {
			return false, err.Error()
		}
		last = st
		leaders := 0
		var bad []string
		for _, n := range st.Nodes {
			if n.MemberState == "removed" {
				continue
			}
			if n.Leader {
				leaders++
			}
			if n.Epoch != st.Epoch || (n.RaftRole != "voter" && n.RaftRole != "nonvoter") {
				bad = append(bad, fmt.Sprintf("%s at epoch %d role %q", n.Id, n.Epoch, n.RaftRole))
			}
		}
		if leaders != 1 || st.Leader == "" {
			bad = append(bad, fmt.Sprintf("%d nodes marked leader, leader field %q", leaders, st.Leader))
		}
		return len(bad) == 0, fmt.Sprintf("status epoch %d: %v", st.Epoch, bad)
	})
	return last
}
