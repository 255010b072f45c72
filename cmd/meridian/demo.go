package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/ops"
)

func newDemoCmd() *cobra.Command {
	var (
		dir  string
		keep bool
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Walk through Meridian on a local cluster it starts and stops itself",
		Long: `Start a local 3-node cluster (Pebble on disk, gRPC on 127.0.0.1) and walk
through quorum reads and writes, siblings from concurrent writes, resolving
them with a merged context, a node failure (QUORUM keeps working while ALL
fails with a clear error, hinted handoff after the restart) and adding a
fourth node while writes go on. Then a second cluster of 3 datacenters:
a keyspace replicated per DC, LOCAL_QUORUM and EACH_QUORUM, a DC cut off
and healed, and a snapshot of every node (a backup).

With --keep the cluster stays up after the walk-through until Ctrl-C, and
its data directory is kept.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			if dir != "" {
				// A previous demo's data names other ports: the nodes
				// would refuse it only after starting.
				if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
					return fmt.Errorf("--dir %s is not empty (a previous demo's data?): give a new or empty directory, or omit --dir for a temporary one", dir)
				}
			}
			if dir == "" {
				d, err := os.MkdirTemp("", "meridian-demo-")
				if err != nil {
					return err
				}
				dir = d
				if !keep {
					defer os.RemoveAll(d)
				}
			}
			d := &demo{out: out}
			return d.run(cmd.Context(), dir, keep)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "data directory (default: a temporary one, removed afterwards)")
	cmd.Flags().BoolVar(&keep, "keep", false, "leave the cluster running after the walk-through (until Ctrl-C) and keep its data")
	return cmd
}

type demo struct {
	out   io.Writer
	step  int
	conns []*grpc.ClientConn
	// sec is how the demo's clients reach its TLS cluster.
	sec clientSec
}

func (d *demo) say(format string, args ...any) {
	d.step++
	fmt.Fprintf(d.out, "\n%d. %s\n", d.step, fmt.Sprintf(format, args...))
}

func (d *demo) show(format string, args ...any) {
	fmt.Fprintf(d.out, "   %s\n", fmt.Sprintf(format, args...))
}

// conn dials addr and remembers the connection for close.
func (d *demo) conn(addr string) (*grpc.ClientConn, error) {
	conn, err := dial(addr, d.sec)
	if err != nil {
		return nil, err
	}
	d.conns = append(d.conns, conn)
	return conn, nil
}

func (d *demo) client(addr string) (kvv1.KVClient, error) {
	conn, err := d.conn(addr)
	if err != nil {
		return nil, err
	}
	return kvv1.NewKVClient(conn), nil
}

func (d *demo) close() {
	for _, c := range d.conns {
		c.Close()
	}
}

func level(l kvv1.Level) *kvv1.Consistency { return &kvv1.Consistency{Level: l} }

func values(sibs []*kvv1.Sibling) string {
	var vs []string
	for _, s := range sibs {
		if s.Tombstone {
			vs = append(vs, "<deleted>")
			continue
		}
		vs = append(vs, fmt.Sprintf("%q", s.Value))
	}
	return "[" + strings.Join(vs, ", ") + "]"
}

func (d *demo) run(ctx context.Context, dir string, keep bool) error {
	defer d.close()
	fmt.Fprintf(d.out, "Meridian demo, part one: a 3-node cluster on 127.0.0.1, Pebble data under %s\n", dir)
	l, err := node.StartLocal(ctx, node.LocalSpec{Dir: dir, DCs: 1, NodesPerDC: 3, Options: node.Options{Register: ops.Register}})
	if err != nil {
		return err
	}
	defer l.Close()
	if d.sec.dialOpt, err = l.DialOption(); err != nil {
		return err
	}
	for _, n := range l.Nodes() {
		d.show("%s  grpc=%s  gossip=%s", n.ID(), n.Addr(), n.GossipAddr())
	}
	nodes := l.Nodes()
	c1, err := d.client(nodes[0].Addr())
	if err != nil {
		return err
	}
	c2, err := d.client(nodes[1].Addr())
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	key := []byte("greeting")

	d.say("Put greeting=\"hello\" at QUORUM through %s (N=3, W=2)", nodes[0].ID())
	put, err := c1.Put(rctx, &kvv1.PutRequest{Key: key, Value: []byte("hello"), Consistency: level(kvv1.Level_LEVEL_QUORUM)})
	if err != nil {
		return err
	}
	d.show("acknowledged by %v (coordinator %s), n=%d w=%d", put.Effective.Replicas, put.Effective.Coordinator, put.Effective.N, put.Effective.W)

	d.say("Get greeting at QUORUM through %s", nodes[1].ID())
	get, err := c2.Get(rctx, &kvv1.GetRequest{Key: key, Consistency: level(kvv1.Level_LEVEL_QUORUM)})
	if err != nil {
		return err
	}
	d.show("siblings %s, answered by %v, r=%d", values(get.Siblings), get.Effective.Replicas, get.Effective.R)
	d.show("context %s", encodeContext(get.Context))

	d.say("Two clients write concurrently with the same context: neither saw the other")
	if _, err := c1.Put(rctx, &kvv1.PutRequest{Key: key, Value: []byte("hello from alice"), Context: get.Context}); err != nil {
		return err
	}
	if _, err := c2.Put(rctx, &kvv1.PutRequest{Key: key, Value: []byte("hello from bob"), Context: get.Context}); err != nil {
		return err
	}
	get, err = c1.Get(rctx, &kvv1.GetRequest{Key: key, Consistency: level(kvv1.Level_LEVEL_ALL)})
	if err != nil {
		return err
	}
	d.show("get at ALL returns %d siblings: %s — both writes kept, nothing lost", len(get.Siblings), values(get.Siblings))

	d.say("A client merges them and writes back with the merged context")
	merged, err := c2.Put(rctx, &kvv1.PutRequest{Key: key, Value: []byte("hello from alice and bob"), Context: get.Context})
	if err != nil {
		return err
	}
	get, err = c1.Get(rctx, &kvv1.GetRequest{Key: key, Consistency: level(kvv1.Level_LEVEL_ALL)})
	if err != nil {
		return err
	}
	d.show("put returned %d sibling(s); get at ALL now returns %s", len(merged.Siblings), values(get.Siblings))

	victim := nodes[2]
	d.say("Stop %s (a replica of every key in a 3-node cluster)", victim.ID())
	if err := l.Stop(victim.ID()); err != nil {
		return err
	}
	d.show("%s stopped; the other nodes see it leave through gossip", victim.ID())
	put, err = c1.Put(rctx, &kvv1.PutRequest{Key: key, Value: []byte("still writable"), Context: get.Context, Consistency: level(kvv1.Level_LEVEL_QUORUM)})
	if err != nil {
		return fmt.Errorf("QUORUM put with one node down: %w", err)
	}
	d.show("QUORUM put: ok, acknowledged by %v", put.Effective.Replicas)
	get, err = c2.Get(rctx, &kvv1.GetRequest{Key: key, Consistency: level(kvv1.Level_LEVEL_QUORUM)})
	if err != nil {
		return fmt.Errorf("QUORUM get with one node down: %w", err)
	}
	d.show("QUORUM get: %s from %v", values(get.Siblings), get.Effective.Replicas)
	_, err = c1.Put(rctx, &kvv1.PutRequest{Key: key, Value: []byte("x"), Context: get.Context, Consistency: level(kvv1.Level_LEVEL_ALL)})
	if err == nil {
		return fmt.Errorf("ALL put succeeded with a node down: that is a bug")
	}
	d.show("ALL put fails as it should: %s: %s", status.Code(err), status.Convert(err).Message())
	_, err = c2.Get(rctx, &kvv1.GetRequest{Key: key, Consistency: level(kvv1.Level_LEVEL_ALL)})
	if err == nil {
		return fmt.Errorf("ALL get succeeded with a node down: that is a bug")
	}
	d.show("ALL get fails as it should: %s: %s", status.Code(err), status.Convert(err).Message())

	d.say("Restart %s: it rejoins, and hinted handoff delivers what it missed", victim.ID())
	if _, err := l.Restart(rctx, victim.ID()); err != nil {
		return err
	}
	if err := l.WaitConverged(rctx); err != nil {
		return err
	}
	// Until its hints arrive, a replica that missed writes does not count
	// toward R: ALL stays UNAVAILABLE for a moment.
	restarted := time.Now()
	for {
		get, err = c1.Get(rctx, &kvv1.GetRequest{Key: key, Consistency: level(kvv1.Level_LEVEL_ALL)})
		if status.Code(err) != codes.Unavailable || rctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	d.show("hints delivered within %s; ALL get: %s from %v", time.Since(restarted).Round(100*time.Millisecond), values(get.Siblings), get.Effective.Replicas)

	if err := d.grow(rctx, l); err != nil {
		return fmt.Errorf("adding a node: %w", err)
	}

	if err := d.multiDC(ctx, filepath.Join(dir, "multi-dc")); err != nil {
		return fmt.Errorf("multi-DC walk-through: %w", err)
	}

	if keep {
		path := dir + "/cluster.json"
		if err := l.WriteClusterFile(path); err != nil {
			return err
		}
		fmt.Fprintf(d.out, "\nThe cluster keeps running (cluster file %s). Try:\n", path)
		if ca, cert, key := l.ClientTLS(); ca != "" {
			// Every listener takes TLS only: the command needs the
			// cluster's CA and a client certificate.
			fmt.Fprintf(d.out, "  export MERIDIAN_CA=%s MERIDIAN_CERT=%s MERIDIAN_KEY=%s\n", ca, cert, key)
		}
		fmt.Fprintf(d.out, "  meridian kv get --addr %s greeting\nCtrl-C to stop.\n", nodes[0].Addr())
		<-ctx.Done()
	}
	fmt.Fprintln(d.out, "\nDemo complete; stopping the cluster.")
	return nil
}

// waitKeyspace waits until every node applied a keyspace created through
// the metadata log (each applies the log on its own).
func waitKeyspace(ctx context.Context, nodes []*node.Node, name string) error {
	for _, n := range nodes {
		for n.Topology().Keyspaces[name] == nil {
			select {
			case <-ctx.Done():
				return fmt.Errorf("node %s has not applied keyspace %s: %w", n.ID(), name, ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

// multiDC is the second act: 3 datacenters × 3 nodes on 127.0.0.1-3, two
// racks per DC, and the levels that know about datacenters.
func (d *demo) multiDC(ctx context.Context, dir string) error {
	fmt.Fprintf(d.out, "\nPart two: 3 datacenters x 3 nodes (2 racks each), DC i on 127.0.0.i\n")
	spec := node.LocalSpec{Dir: dir, DCs: 3, NodesPerDC: 3, RacksPerDC: 2, SeparateHosts: true,
		Options: node.Options{Register: ops.Register}}
	l, err := node.StartLocal(ctx, spec)
	if errors.Is(err, node.ErrNoSeparateHosts) {
		// (macOS: only 127.0.0.1 on loopback.) The DCs are the same
		// without their own addresses.
		fmt.Fprintf(d.out, "   (%v; every DC on 127.0.0.1 instead)\n", err)
		spec.SeparateHosts = false
		l, err = node.StartLocal(ctx, spec)
	}
	if err != nil {
		return err
	}
	defer l.Close()
	if d.sec.dialOpt, err = l.DialOption(); err != nil {
		return err
	}
	byDC := map[string][]*node.Node{}
	for _, n := range l.Nodes() {
		byDC[n.DC()] = append(byDC[n.DC()], n)
		d.show("%s  %s  grpc=%s", n.ID(), n.DC(), n.Addr())
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	ks := "orders"
	d.say("Create keyspace %s with replication dc1=3,dc2=2,dc3=2 (N=7)", ks)
	admin, err := d.admin(byDC["dc1"][0].AdminAddr())
	if err != nil {
		return err
	}
	created, err := admin.CreateKeyspace(rctx, &adminv1.CreateKeyspaceRequest{Keyspace: &adminv1.Keyspace{
		Name: ks, Replication: map[string]uint32{"dc1": 3, "dc2": 2, "dc3": 2}}})
	if err != nil {
		return err
	}
	if err := waitKeyspace(rctx, l.Nodes(), ks); err != nil {
		return err
	}
	d.show("keyspace %s (N=%d) is in the cluster metadata, and every node applied it", created.Keyspace.Name, created.Keyspace.N)
	ep, err := admin.Endpoints(rctx, &adminv1.EndpointsRequest{Keyspace: ks, Key: []byte("order-1")})
	if err != nil {
		return err
	}
	var reps []string
	for _, r := range ep.Replicas {
		reps = append(reps, fmt.Sprintf("%s(%s/%s)", r.Node, r.Dc, r.Rack))
	}
	d.show("order-1 lives in partition %d on %s", ep.Partition, strings.Join(reps, " "))

	d.say("LOCAL_QUORUM writes and reads in each datacenter: a request waits for a quorum of its own DC's replicas; the other DCs get the write without being waited for")
	dcOf := map[string]string{}
	for _, n := range l.Nodes() {
		dcOf[n.ID()] = n.DC()
	}
	for _, dc := range []string{"dc1", "dc2", "dc3"} {
		c, err := d.client(byDC[dc][0].Addr())
		if err != nil {
			return err
		}
		key := []byte("order-" + dc)
		put, err := c.Put(rctx, &kvv1.PutRequest{Keyspace: ks, Key: key, Value: []byte("placed in " + dc), Consistency: level(kvv1.Level_LEVEL_LOCAL_QUORUM)})
		if err != nil {
			return err
		}
		get, err := c.Get(rctx, &kvv1.GetRequest{Keyspace: ks, Key: key, Consistency: level(kvv1.Level_LEVEL_LOCAL_QUORUM)})
		if err != nil {
			return err
		}
		ep, err := admin.Endpoints(rctx, &adminv1.EndpointsRequest{Keyspace: ks, Key: key})
		if err != nil {
			return err
		}
		var all []string
		for _, r := range ep.Replicas {
			all = append(all, r.Node)
		}
		local, remote := splitByDC(put.Effective.Replicas, dc, dcOf)
		line := fmt.Sprintf("%s: put w=%d: acknowledged within the request by %s", dc, put.Effective.W, withDCs(local, dcOf))
		if len(remote) > 0 {
			line += fmt.Sprintf(", and by %s, which answered before the local quorum was complete", withDCs(remote, dcOf))
		}
		if rest := without(all, put.Effective.Replicas); len(rest) > 0 {
			line += fmt.Sprintf("; %s received it in the background", withDCs(rest, dcOf))
		}
		d.show("%s", line)
		d.show("%s: get r=%d -> %s from %s", dc, get.Effective.R, values(get.Siblings), withDCs(get.Effective.Replicas, dcOf))
	}

	c1, err := d.client(byDC["dc1"][0].Addr())
	if err != nil {
		return err
	}
	d.say("EACH_QUORUM: a quorum in every datacenter (2 of 3 in dc1, 2 of 2 in dc2 and dc3)")
	put, err := c1.Put(rctx, &kvv1.PutRequest{Keyspace: ks, Key: []byte("order-1"), Value: []byte("confirmed"), Consistency: level(kvv1.Level_LEVEL_EACH_QUORUM)})
	if err != nil {
		return err
	}
	d.show("put w=%d acked by %v", put.Effective.W, put.Effective.Replicas)

	d.say("Make dc3 unreachable from dc1 and dc2 (fault injection on every link into dc3)")
	for _, dc := range []string{"dc1", "dc2"} {
		for _, n := range byDC[dc] {
			n.Faults().CutDC("dc3")
		}
	}
	put, err = c1.Put(rctx, &kvv1.PutRequest{Keyspace: ks, Key: []byte("order-2"), Value: []byte("during the outage"), Consistency: level(kvv1.Level_LEVEL_LOCAL_QUORUM)})
	if err != nil {
		return fmt.Errorf("LOCAL_QUORUM in dc1 with dc3 cut off: %w", err)
	}
	d.show("LOCAL_QUORUM put in dc1: ok, acked by %v", put.Effective.Replicas)
	c2, err := d.client(byDC["dc2"][0].Addr())
	if err != nil {
		return err
	}
	get, err := c2.Get(rctx, &kvv1.GetRequest{Keyspace: ks, Key: []byte("order-dc2"), Consistency: level(kvv1.Level_LEVEL_LOCAL_QUORUM)})
	if err != nil {
		return fmt.Errorf("LOCAL_QUORUM in dc2 with dc3 cut off: %w", err)
	}
	d.show("LOCAL_QUORUM get in dc2: %s", values(get.Siblings))
	_, err = c1.Put(rctx, &kvv1.PutRequest{Keyspace: ks, Key: []byte("order-2"), Value: []byte("x"), Consistency: level(kvv1.Level_LEVEL_EACH_QUORUM)})
	if err == nil {
		return fmt.Errorf("EACH_QUORUM succeeded with dc3 unreachable: that is a bug")
	}
	d.show("EACH_QUORUM put fails as it should: %s: %s", status.Code(err), status.Convert(err).Message())

	d.say("Heal the links; EACH_QUORUM works again")
	for _, n := range l.Nodes() {
		n.Faults().Heal()
	}
	for {
		put, err = c1.Put(rctx, &kvv1.PutRequest{Keyspace: ks, Key: []byte("order-3"), Value: []byte("after the outage"), Consistency: level(kvv1.Level_LEVEL_EACH_QUORUM)})
		if err == nil || rctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond) // dc3 is retried after a short back-off
	}
	if err != nil {
		return err
	}
	d.show("EACH_QUORUM put: ok, acked by %v", put.Effective.Replicas)

	d.say("Back up: every node snapshots its data (meridian snapshot create)")
	a, err := d.admin(l.Nodes()[0].AdminAddr())
	if err != nil {
		return err
	}
	snaps, err := a.CreateSnapshot(rctx, &adminv1.CreateSnapshotRequest{Name: "demo"})
	if err != nil {
		return err
	}
	if n := len(snaps.GetUnreachable()) + len(snaps.GetFailed()); n > 0 {
		return fmt.Errorf("snapshot: %d node(s) took none: %v %v", n, snaps.GetUnreachable(), snaps.GetFailed())
	}
	for _, s := range snaps.GetSnapshots() {
		d.show("%s: %s (%s, tables hard-linked)", s.GetNode(), s.GetDir(), formatBytes(uint64(s.GetBytes())))
	}
	d.show("restore one with the node stopped: meridian snapshot restore demo --data-dir <its data dir>")
	return nil
}

// grow adds a fourth node through the metadata log while writes go on:
// join, plan (a dry run), commit, then every write is readable at ALL.
func (d *demo) grow(ctx context.Context, l *node.Local) error {
	nodes := l.Nodes()
	d.say("Add a fourth node: it joins owning nothing, a plan adds it, and partitions move to it while writes go on")
	n4, err := l.Join(ctx, "n4", "dc1", "r1")
	if err != nil {
		return err
	}
	for {
		if m, ok := nodes[0].MetaState().Member("n4"); ok && n4.Topology().Agreed() {
			d.show("n4 joined as %s: a member of the metadata log (epoch %d) that replicates nothing yet", m.State, n4.Topology().Epoch)
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(50 * time.Millisecond)
	}
	adm, err := d.admin(nodes[0].AdminAddr())
	if err != nil {
		return err
	}
	plan, err := adm.ClusterPlan(ctx, &adminv1.ClusterPlanRequest{Op: &adminv1.PlanOp{Op: "add", Node: "n4"}})
	if err != nil {
		return err
	}
	q := nodes[0].Topology().Ring.Partitions()
	d.show("plan (a dry run, nothing moves yet): add n4 changes the replicas of %d of %d partitions", plan.Plan.PartitionsChanged, q)
	c, err := d.client(nodes[1].Addr())
	if err != nil {
		return err
	}
	start := time.Now()
	commit, err := adm.ClusterCommit(ctx, &adminv1.ClusterCommitRequest{})
	if err != nil {
		return err
	}
	d.show("committed at epoch %d: %d partitions streaming to n4, which receives every new write meanwhile", commit.Epoch, commit.PartitionsMoving)
	var written []string
	for i := 0; ; i++ {
		st, err := adm.ClusterStatus(ctx, &adminv1.ClusterStatusRequest{})
		if err != nil {
			return err
		}
		if !st.InTransition {
			break
		}
		key := fmt.Sprintf("during-move-%d", i)
		if _, err := c.Put(ctx, &kvv1.PutRequest{Key: []byte(key), Value: []byte("v"), Consistency: level(kvv1.Level_LEVEL_QUORUM)}); err != nil {
			return fmt.Errorf("QUORUM put during the move: %w", err)
		}
		written = append(written, key)
	}
	d.show("every partition switched in %s; %d QUORUM writes acknowledged during the move, none refused", time.Since(start).Round(100*time.Millisecond), len(written))
	for _, key := range append(written, "greeting") {
		for {
			_, err = c.Get(ctx, &kvv1.GetRequest{Key: []byte(key), Consistency: level(kvv1.Level_LEVEL_ALL)})
			if status.Code(err) != codes.Unavailable || ctx.Err() != nil {
				break
			}
			time.Sleep(100 * time.Millisecond) // a new replica still owed hints does not count yet
		}
		if err != nil {
			return fmt.Errorf("ALL get of %s after the move: %w", key, err)
		}
	}
	d.show("all %d keys readable at ALL through the new ring; n4 owns %d partitions", len(written)+1, len(n4.Topology().Ring.Owned("n4")))
	return nil
}

func (d *demo) admin(addr string) (adminv1.AdminClient, error) {
	conn, err := d.conn(addr)
	if err != nil {
		return nil, err
	}
	return adminv1.NewAdminClient(conn), nil
}

// splitByDC splits node IDs into those of dc and the others, keeping order.
func splitByDC(ids []string, dc string, dcOf map[string]string) (in, out []string) {
	for _, id := range ids {
		if dcOf[id] == dc {
			in = append(in, id)
		} else {
			out = append(out, id)
		}
	}
	return in, out
}

// without returns the IDs of all that are not in drop, keeping order.
func without(all, drop []string) []string {
	var out []string
	for _, id := range all {
		if !slices.Contains(drop, id) {
			out = append(out, id)
		}
	}
	return out
}

// withDCs renders node IDs with their DCs, grouped by DC (in the order of
// each DC's first ID): "n1, n2 (dc1), n4 (dc2)".
func withDCs(ids []string, dcOf map[string]string) string {
	if len(ids) == 0 {
		return "none"
	}
	first := map[string]int{}
	for i, id := range ids {
		if _, ok := first[dcOf[id]]; !ok {
			first[dcOf[id]] = i
		}
	}
	ids = slices.Clone(ids)
	slices.SortStableFunc(ids, func(a, b string) int { return first[dcOf[a]] - first[dcOf[b]] })
	var parts []string
	for i, id := range ids {
		if i+1 < len(ids) && dcOf[ids[i+1]] == dcOf[id] {
			parts = append(parts, id)
			continue
		}
		parts = append(parts, fmt.Sprintf("%s (%s)", id, dcOf[id]))
	}
	return strings.Join(parts, ", ")
}
