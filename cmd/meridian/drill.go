package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meridiankv/meridian/drill"
	"github.com/meridiankv/meridian/node"
)

// drillFlags are the flags every drill scenario shares.
type drillFlags struct {
	sec         clientSec
	clusterFile string
	local       bool
	dcs         int
	nodesPerDC  int
	partitions  int
	dir         string
	keep        bool
	rf          int
	cfg         drill.Config
	jsonOut     string
	htmlOut     string
	// scenario parameters
	dc, between, node string
	// slow-dc's and slow-disk's --delay and --jitter: each scenario has its
	// own, as a flag writes its default into its variable when defined.
	delay, jitter         time.Duration
	diskDelay, diskJitter time.Duration
}

func newDrillCmd() *cobra.Command {
	var f drillFlags
	cmd := &cobra.Command{
		Use:   "drill",
		Short: "Run a failover drill (DC outage, partition, slow DC, node crash, rolling restart, full or slow disk, restore onto new machines) and judge it",
		Long: `Run a failover drill against a cluster: a baseline, the fault induced, held,
healed, then verified, while clients in every datacenter run a LOCAL_QUORUM
workload, QUORUM and EACH_QUORUM probes, and a set workload whose
acknowledged elements must all be there at the end. The drill prints its
abort criteria first, and at the end a report and PASS or FAIL (exit status
0 or 1).

  meridian drill dc-outage --local --dcs 3                 # a fresh 9-process cluster, dc3 cut off
  meridian drill dc-partition --between dc1,dc2 --local
  meridian drill slow-dc --dc dc2 --delay 50ms --local
  meridian drill node-crash --node n5 --local              # kill -9, restart after the hold
  meridian drill rolling-restart --local
  meridian drill dc-outage --dc dc2 --cluster /tmp/mer/cluster.json --json r.json --html r.html

Faults are injected through the admin API (InjectFault) with a TTL: if the
drill dies, they expire by themselves on every node. node-crash and
rolling-restart need --local, where the drill owns the node processes.
See docs/DRILLS.md.`,
	}
	p := cmd.PersistentFlags()
	p.BoolVar(&f.local, "local", false, "start a local cluster of real 'meridian serve' processes for the drill, and stop it after")
	p.IntVar(&f.dcs, "dcs", 3, "datacenters of the --local cluster")
	p.IntVar(&f.nodesPerDC, "nodes-per-dc", 3, "nodes per datacenter of the --local cluster")
	p.IntVar(&f.partitions, "partitions", 256, "ring partitions of the --local cluster")
	p.StringVar(&f.dir, "dir", "", "directory of the --local cluster (default: a temporary one, removed after)")
	p.BoolVar(&f.keep, "keep", false, "keep the --local cluster's directory (node logs, cluster.json)")
	p.StringVar(&f.clusterFile, "cluster", "", "drill an existing cluster described by a cluster.json ('meridian dev' writes one)")
	f.sec.bind(p)
	p.StringVar(&f.cfg.Keyspace, "keyspace", "drill", "keyspace of the workload (created if missing)")
	p.IntVar(&f.rf, "rf", 3, "replication factor per DC of the keyspace when the drill creates it (at most the DC's nodes)")
	p.DurationVar(&f.cfg.Durations.Baseline, "baseline", 10*time.Second, "baseline phase: the workload alone")
	p.DurationVar(&f.cfg.Durations.Hold, "hold", 20*time.Second, "hold phase: the fault in place")
	p.DurationVar(&f.cfg.Durations.VerifyMin, "verify-min", 5*time.Second, "verify at least this long after the heal")
	p.DurationVar(&f.cfg.Durations.VerifyTimeout, "verify-timeout", 120*time.Second, "stop verifying this long after the heal even if not converged")
	p.Float64Var(&f.cfg.Rate, "rate", 50, "LOCAL_QUORUM operations per second per client DC (half reads, half writes)")
	p.Float64Var(&f.cfg.ProbeRate, "probe-rate", 5, "QUORUM probes, and EACH_QUORUM probes, per second per client DC")
	p.Float64Var(&f.cfg.SetRate, "set-rate", 5, "set workload read-modify-writes per second per client DC")
	p.IntVar(&f.cfg.Keys, "keys", 100, "keys of each DC's LOCAL_QUORUM workload")
	p.IntVar(&f.cfg.SetKeys, "set-keys", 4, "sets the set workload adds to (shared by every DC)")
	p.DurationVar(&f.cfg.OpTimeout, "op-timeout", 2*time.Second, "deadline of a workload operation")
	p.DurationVar(&f.cfg.ProbeTimeout, "probe-timeout", 2*time.Second, "deadline of a probe (EACH_QUORUM must fail before it during an outage)")
	p.DurationVar(&f.cfg.FaultTTL, "fault-ttl", 0, "the fault's TTL: it expires by itself this long after injection if the drill dies (default: hold + 30s)")
	p.DurationVar(&f.cfg.RestartPause, "pause", 2*time.Second, "rolling-restart: pause between nodes")
	p.Float64Var(&f.cfg.Criteria.MinLocalAvailability, "min-availability", 99, "criterion: LOCAL_QUORUM availability (%) of each healthy DC's clients over the drill")
	p.DurationVar(&f.cfg.Criteria.MaxConverge, "max-converge", 120*time.Second, "criterion: converged within this long after the heal")
	p.DurationVar(&f.cfg.Criteria.MaxRTO, "max-rto", 0, "criterion: every level healthy again within this long after the fault (0: only before the drill ends)")
	p.StringVar(&f.jsonOut, "json", "", "write the report as JSON to this file")
	p.StringVar(&f.htmlOut, "html", "", "write a self-contained HTML report with plots to this file")

	scenario := func(name, short string, bind func(*cobra.Command)) *cobra.Command {
		c := &cobra.Command{
			Use:   name,
			Short: short,
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				if err := refuseZeros(cmd); err != nil {
					return err
				}
				return runDrill(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), name, f)
			},
		}
		if bind != nil {
			bind(c)
		}
		return c
	}
	cmd.AddCommand(
		scenario(drill.DCOutage, "A whole DC unreachable: partitioned both ways from every other DC", func(c *cobra.Command) {
			c.Flags().StringVar(&f.dc, "dc", "", "the DC to cut off (default: the last one)")
		}),
		scenario(drill.DCPartition, "Two DCs cannot reach each other (both ways); the others reach both", func(c *cobra.Command) {
			c.Flags().StringVar(&f.between, "between", "", "the two DCs, A,B (default: the first two)")
		}),
		scenario(drill.SlowDC, "Calls from the other DCs to one DC are delayed (with jitter)", func(c *cobra.Command) {
			c.Flags().StringVar(&f.dc, "dc", "", "the slow DC (default: the last one)")
			c.Flags().DurationVar(&f.delay, "delay", 50*time.Millisecond, "added delay per call")
			c.Flags().DurationVar(&f.jitter, "jitter", 10*time.Millisecond, "up to this much more, at random")
		}),
		scenario(drill.NodeCrash, "kill -9 one node, restart it after the hold (--local only)", func(c *cobra.Command) {
			c.Flags().StringVar(&f.node, "node", "", "the node to kill (default: the last one)")
		}),
		scenario(drill.RollingRestart, "SIGTERM and restart each node in turn, waiting for health (--local only)", nil),
		scenario(drill.DiskFull, "One node's data volume reads as full: it refuses writes, serves reads", func(c *cobra.Command) {
			c.Flags().StringVar(&f.node, "node", "", "the node whose disk fills (default: the last one)")
		}),
		scenario(drill.SlowDisk, "Every fsync of one node is delayed (with jitter): a gray failure", func(c *cobra.Command) {
			c.Flags().StringVar(&f.node, "node", "", "the node whose disk is slow (default: the last one)")
			c.Flags().DurationVar(&f.diskDelay, "delay", 100*time.Millisecond, "added delay per fsync (at most 1m)")
			c.Flags().DurationVar(&f.diskJitter, "jitter", 50*time.Millisecond, "up to this much more, at random")
		}),
		newRestoreDrillCmd(&f),
	)
	return cmd
}

// newRestoreDrillCmd is `meridian drill restore`: a whole cluster restored
// from its snapshots onto new machines (--local only).
func newRestoreDrillCmd(f *drillFlags) *cobra.Command {
	var before, after time.Duration
	c := &cobra.Command{
		Use:   drill.RestoreDrill,
		Short: "Restore a whole cluster from its snapshots onto new machines, and verify it (--local only)",
		Long: `Start a local cluster, write to it from every DC, snapshot every node while
the writes go on, download the snapshots off the nodes ('meridian snapshot
download'), stop the cluster, restore each snapshot into a new directory
(the new machine) with 'meridian snapshot restore --from', and start a new
cluster from them on new ports, certificates and secret (as
docs/DRILLS.md describes for real machines). PASS when every write
acknowledged before the snapshot reads back at ALL, no write acknowledged
after it does, every key has the replicas it had, and the new cluster has
its own ID, records the old one, and takes writes.

  meridian drill restore --local --dcs 2 --json restore.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := refuseZeros(cmd); err != nil {
				return err
			}
			return runRestoreDrill(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), *f, before, after)
		},
	}
	c.Flags().DurationVar(&before, "before", 5*time.Second, "write this long before the snapshot")
	c.Flags().DurationVar(&after, "after", 3*time.Second, "write this long after every node's snapshot was taken")
	return c
}

func runRestoreDrill(ctx context.Context, out, errOut io.Writer, f drillFlags, before, after time.Duration) (rerr error) {
	if !f.local || f.clusterFile != "" {
		return errors.New("the restore drill stops the cluster and starts another from its snapshots: it needs --local (a cluster it starts and owns)")
	}
	if f.htmlOut != "" {
		return errors.New("the restore drill writes no HTML report: use --json")
	}
	if err := checkOutputs(map[string]string{"json": f.jsonOut}); err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this binary to run the nodes: %w", err)
	}
	dir := f.dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "meridian-drill-restore-"); err != nil {
			return err
		}
		if !f.keep {
			defer removeUnlessFailed(&rerr, dir, errOut)
		}
	}
	report, err := drill.RunRestore(ctx, drill.RestoreConfig{Keyspace: f.cfg.Keyspace, RF: f.rf, Before: before, After: after,
		Rate: f.cfg.Rate, OpTimeout: f.cfg.OpTimeout, Log: errOut},
		drill.LocalSpec{Binary: exe, Dir: dir, DCs: f.dcs, NodesPerDC: f.nodesPerDC, Partitions: f.partitions, Log: errOut})
	if f.keep || f.dir != "" {
		fmt.Fprintf(errOut, "node logs and snapshots are in %s (old/, backup/, new/)\n", dir)
	}
	if err != nil {
		return fmt.Errorf("drill restore: %w", err)
	}
	fmt.Fprintln(out)
	report.WriteText(out)
	if f.jsonOut != "" {
		if err := writeFile(f.jsonOut, func(w io.Writer) error {
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			return enc.Encode(report)
		}); err != nil {
			return err
		}
		fmt.Fprintf(errOut, "wrote %s\n", f.jsonOut)
	}
	if !report.Pass {
		return fmt.Errorf("drill restore FAILED: %s", strings.Join(report.Failures, "; "))
	}
	return nil
}

// drillScenario builds the scenario from the flags, with defaults taken
// from the cluster.
func drillScenario(name string, f drillFlags, t drill.Topology) drill.Scenario {
	s := drill.Scenario{Name: name, DC: f.dc, Node: f.node, Delay: f.delay, Jitter: f.jitter}
	if name == drill.SlowDisk {
		s.Delay, s.Jitter = f.diskDelay, f.diskJitter
	}
	dcs := t.DCs()
	if s.DC == "" && (name == drill.DCOutage || name == drill.SlowDC) && len(dcs) > 0 {
		s.DC = dcs[len(dcs)-1]
	}
	if f.between != "" {
		for _, dc := range strings.Split(f.between, ",") {
			s.Between = append(s.Between, strings.TrimSpace(dc))
		}
	} else if name == drill.DCPartition && len(dcs) >= 2 {
		s.Between = []string{dcs[0], dcs[1]}
	}
	if s.Node == "" && (name == drill.NodeCrash || name == drill.DiskFull || name == drill.SlowDisk) && len(t.Nodes) > 0 {
		s.Node = t.Nodes[len(t.Nodes)-1].ID
	}
	return s
}

func runDrill(ctx context.Context, out, errOut io.Writer, name string, f drillFlags) (rerr error) {
	if f.local == (f.clusterFile != "") {
		return errors.New("say which cluster to drill: --local (start one) or --cluster cluster.json (an existing one)")
	}
	if f.local && name != drill.NodeCrash && name != drill.RollingRestart && name != drill.DiskFull && name != drill.SlowDisk && f.dcs < 2 {
		return fmt.Errorf("%s needs at least two datacenters: use --dcs 2 or more", name)
	}
	if err := checkOutputs(map[string]string{"json": f.jsonOut, "html": f.htmlOut}); err != nil {
		return err
	}
	f.cfg.Log = errOut
	var target drill.Target
	var local *drill.Local
	if f.local {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find this binary to run the nodes: %w", err)
		}
		dir := f.dir
		if dir == "" {
			if dir, err = os.MkdirTemp("", "meridian-drill-"); err != nil {
				return err
			}
			if !f.keep {
				defer removeUnlessFailed(&rerr, dir, errOut)
			}
		}
		local, err = drill.StartLocal(ctx, drill.LocalSpec{Binary: exe, Dir: dir, DCs: f.dcs, NodesPerDC: f.nodesPerDC,
			Partitions: f.partitions, Log: errOut})
		if err != nil {
			return fmt.Errorf("start the local cluster: %w", err)
		}
		defer func() {
			fmt.Fprintln(errOut, "stopping the local cluster ...")
			if err := local.Close(); err != nil {
				fmt.Fprintf(errOut, "stopping the local cluster: %v\n", err)
			}
			if f.keep || f.dir != "" {
				fmt.Fprintf(errOut, "node logs and cluster.json are in %s\n", dir)
			}
		}()
		target = local.Target()
	} else {
		cf, err := node.ReadClusterFile(f.clusterFile)
		if err != nil {
			return fmt.Errorf("--cluster: %w", err)
		}
		f.sec.fromCluster(cf)
		opts, err := f.sec.options()
		if err != nil {
			return err
		}
		target = drill.Target{Name: "cluster " + f.clusterFile, DialOptions: opts}
		for _, n := range cf.Nodes {
			target.Nodes = append(target.Nodes, drill.TargetNode{ID: n.ID, DC: n.DC, GRPCAddr: n.GRPCAddr, AdminAddr: n.AdminAddr})
		}
	}
	env, closeEnv, err := drill.Connect(ctx, target, f.cfg.Keyspace, f.rf)
	if err != nil {
		return err
	}
	defer closeEnv()
	if local != nil {
		env.Procs = local
	}
	f.cfg.Scenario = drillScenario(name, f, env.Topology)
	report, err := drill.Run(ctx, f.cfg, env)
	if err != nil {
		return fmt.Errorf("drill %s: %w", name, err)
	}
	fmt.Fprintln(out)
	if err := report.WriteTable(out); err != nil {
		return err
	}
	var unwritten []string
	for _, o := range []struct {
		path  string
		write func(io.Writer) error
	}{{f.jsonOut, report.WriteJSON}, {f.htmlOut, report.WriteHTML}} {
		if o.path == "" {
			continue
		}
		if err := writeFile(o.path, o.write); err != nil {
			unwritten = append(unwritten, err.Error())
			continue
		}
		fmt.Fprintf(errOut, "wrote %s\n", o.path)
	}
	if len(unwritten) > 0 && report.Pass {
		return fmt.Errorf("drill %s PASSED, but its report could not be written: %s", name, strings.Join(unwritten, "; "))
	}
	if len(unwritten) > 0 {
		fmt.Fprintf(errOut, "could not write the report: %s\n", strings.Join(unwritten, "; "))
	}
	if !report.Pass {
		var failed []string
		for _, v := range report.Criteria {
			if !v.Pass {
				failed = append(failed, v.Name)
			}
		}
		return fmt.Errorf("drill %s FAILED: %s (see the report above)", name, strings.Join(failed, "; "))
	}
	return nil
}

// removeUnlessFailed removes a drill's temporary directory, unless the
// drill failed (*err set): its errors point at the node logs in it, so it
// is kept and named.
func removeUnlessFailed(err *error, dir string, errOut io.Writer) {
	if *err != nil {
		fmt.Fprintf(errOut, "the drill failed: its node logs are kept in %s (remove it when done)\n", dir)
		return
	}
	os.RemoveAll(dir)
}

// checkOutputs refuses, before a drill starts, report paths it could not
// write at the end (a missing directory, no permission): found after
// minutes of drilling, a passing drill would exit 1. flags maps a flag's
// name to its path ("" when not given).
func checkOutputs(flags map[string]string) error {
	for _, name := range slices.Sorted(maps.Keys(flags)) {
		path := flags[name]
		if path == "" {
			continue
		}
		probe, err := os.CreateTemp(filepath.Dir(path), ".meridian-drill-*")
		if err != nil {
			return fmt.Errorf("--%s %s: the report could not be written there (%v): give a path in an existing, writable directory", name, path, err)
		}
		probe.Close()
		os.Remove(probe.Name())
	}
	return nil
}

func writeFile(path string, write func(io.Writer) error) error {
	file, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(file); err != nil {
		file.Close()
		return err
	}
	return file.Close()
}

// refuseZeros refuses flags given as 0 that the drill's config takes for
// "the default" (it would run its default silently), saying what to give
// instead.
func refuseZeros(cmd *cobra.Command) error {
	for _, name := range []string{"rate", "probe-rate", "set-rate"} {
		if fl := cmd.Flag(name); fl != nil && fl.Changed && fl.Value.String() == "0" {
			return fmt.Errorf("--%s 0: the drill's criteria are measured on this workload, which 0 would turn into its default; give a positive rate (default %s)", name, fl.DefValue)
		}
	}
	for _, name := range []string{"baseline", "hold", "verify-min", "verify-timeout", "op-timeout", "probe-timeout", "max-converge", "pause", "keys", "set-keys"} {
		if fl := cmd.Flag(name); fl != nil && fl.Changed && (fl.Value.String() == "0" || fl.Value.String() == "0s") {
			return fmt.Errorf("--%s 0 would be taken for the default (%s): give a positive value (for no pause, a short one such as 1ms)", name, fl.DefValue)
		}
	}
	// Convergence is measured while verifying: a criterion longer than
	// verification could never be seen met.
	mc, vt := cmd.Flag("max-converge"), cmd.Flag("verify-timeout")
	if mc != nil && vt != nil {
		maxConv, _ := time.ParseDuration(mc.Value.String())
		verify, _ := time.ParseDuration(vt.Value.String())
		switch {
		case maxConv <= verify:
		case mc.Changed && vt.Changed:
			return fmt.Errorf("--max-converge %s is longer than --verify-timeout %s: verification stops before the criterion could be met; give a --verify-timeout of at least %s", maxConv, verify, maxConv)
		case mc.Changed:
			// Verify for as long as the criterion allows.
			if err := vt.Value.Set(mc.Value.String()); err != nil {
				return err
			}
		default:
			// The default criterion, within the verification asked for.
			if err := mc.Value.Set(vt.Value.String()); err != nil {
				return err
			}
		}
	}
	if fl := cmd.Flag("min-availability"); fl != nil && fl.Changed && fl.Value.String() == "0" {
		return fmt.Errorf("--min-availability 0 would be taken for the default (%s%%): to accept almost any availability, give a small percentage such as 0.01", fl.DefValue)
	}
	return nil
}
