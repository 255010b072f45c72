package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/bench"
	"github.com/meridiankv/meridian/client"
	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/ops"
)

type benchFlags struct {
	sec                        clientSec
	addrs, clusterFile         string
	local                      bool
	localNodes                 int
	localEngine                string
	workload, mix, dist        string
	records                    uint64
	valueSize                  string
	workers                    int
	rate                       float64
	duration, warmup, interval time.Duration
	ops                        int64
	phase                      string
	readCons, writeCons        string
	keyspace                   string
	noSync                     bool
	viaNodes                   bool
	unaryCalls                 bool
	jsonOut, hlogOut, htmlOut  string
	cpuProfile                 string
	trace                      string
	seed                       uint64
	contexts                   string
	// durationSet: --duration was given (with --ops, it still bounds the run).
	durationSet bool
}

func newBenchCmd() *cobra.Command {
	var f benchFlags
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Benchmark a cluster with YCSB workloads and HdrHistogram latencies",
		Long: `Run YCSB-style workloads against a cluster and report throughput and latency
percentiles (HdrHistogram), errors by gRPC code, and optional JSON, .hlog and
HTML reports.

  meridian bench --local --workload A --duration 30s                  # a fresh 3-node cluster, one command
  meridian bench --cluster /tmp/mer/cluster.json --workload C --workers 64
  meridian bench --addr 127.0.0.1:7001 --workload A --rate 5000 --json a.json --html a.html
  meridian bench compare a.json b.json --html cmp.html

Closed loop (default) measures capacity; --rate runs an open loop whose
latencies are measured from each operation's intended start, so stalls are
not hidden (coordinated omission corrected, as wrk2 does).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f.durationSet = cmd.Flags().Changed("duration")
			return runBench(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.addrs, "addr", "", "gRPC address(es) of nodes, comma-separated")
	f.sec.bind(fl)
	fl.StringVar(&f.clusterFile, "cluster", "", "cluster.json written by 'meridian dev' (use every node)")
	fl.BoolVar(&f.local, "local", false, "start a fresh local cluster for the run and stop it afterwards")
	fl.IntVar(&f.localNodes, "local-nodes", 3, "nodes of the --local cluster")
	fl.StringVar(&f.localEngine, "local-engine", "pebble", "engine of the --local cluster: pebble or memory")
	fl.StringVar(&f.workload, "workload", "A", "YCSB core workload: A, B, C, D or F (E needs scans, which Meridian does not offer)")
	fl.StringVar(&f.mix, "mix", "", "custom mix instead of --workload, e.g. read=70,update=20,insert=10,rmw=0")
	fl.StringVar(&f.dist, "distribution", "", "key distribution: zipfian (scrambled, θ=0.99), uniform or latest (default: the workload's)")
	fl.Uint64Var(&f.records, "records", 10000, "records loaded and read")
	fl.StringVar(&f.valueSize, "value-size", "100", "value size in bytes, or a range MIN-MAX")
	fl.IntVar(&f.workers, "workers", 64, "concurrent clients")
	fl.Float64Var(&f.rate, "rate", 0, "open loop: total operations per second (0 = closed loop)")
	fl.DurationVar(&f.duration, "duration", 30*time.Second, "run phase length (after warm-up)")
	fl.Int64Var(&f.ops, "ops", 0, "stop the run phase after this many operations, the warm-up's included (0 = by duration)")
	fl.DurationVar(&f.warmup, "warmup", 5*time.Second, "initial period whose operations are not recorded")
	fl.DurationVar(&f.interval, "interval", time.Second, "progress and time-series interval")
	fl.StringVar(&f.phase, "phase", "both", "load, run or both")
	fl.StringVar(&f.readCons, "read-consistency", "quorum", "consistency of reads")
	fl.StringVar(&f.writeCons, "write-consistency", "quorum", "consistency of writes")
	fl.StringVar(&f.keyspace, "keyspace", "", "keyspace (default \"default\")")
	fl.BoolVar(&f.noSync, "no-sync", false, "writes acknowledged before fsync (durable acks off)")
	fl.BoolVar(&f.unaryCalls, "unary-calls", false, "send each request as a gRPC call of its own instead of on the Go client's call stream to each node (to compare the two)")
	fl.BoolVar(&f.viaNodes, "via-nodes", false, "spread requests over the given nodes round-robin by key (nodes forward writes they do not replicate) instead of the partition-aware client")
	fl.StringVar(&f.jsonOut, "json", "", "write the run's result as JSON to this file")
	fl.StringVar(&f.hlogOut, "hlog", "", "write an HdrHistogram interval log to this file")
	fl.StringVar(&f.htmlOut, "html", "", "write a self-contained HTML report to this file")
	fl.Uint64Var(&f.seed, "seed", 1, "random seed (keys and values)")
	fl.StringVar(&f.contexts, "contexts", bench.ContextsShared, "whose causal contexts updates carry: shared (the workers share what any of them read or wrote, like one application process) or worker (each its own, like separate clients: a key gathers up to one sibling per worker)")
	fl.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of this process during the run phase (with --local: the cluster's nodes too) to this file, for go tool pprof")
	fl.StringVar(&f.trace, "trace", "", "write a Go execution trace of this process during the run phase (with --local: the cluster's nodes too) to this file, for go tool trace (scheduler latency, GC, blocking: where tail latency comes from)")
	cmd.AddCommand(newBenchCompareCmd())
	return cmd
}

// newBenchCompareCmd compares two or more --json results: a text table
// (or with --json the same rows as JSON, for scripts), and with --html one
// page overlaying every run in the same charts.
func newBenchCompareCmd() *cobra.Command {
	var htmlOut string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "compare A.json B.json [C.json ...]",
		Short: "Show two or more runs side by side with ratios to the first",
		Long: `Compare results written by 'meridian bench --json': every metric of each run
and its ratio to the first. With --html, also write a self-contained page that
overlays the runs in the same charts (latency by percentile, throughput over
time) with a legend naming each file. With --json, print the comparison as
JSON instead of the table: each run's file, settings and cautions, and every
metric's values and ratios (null where a run has no such figure, such as the
latency of an operation type that failed every time).`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) < 2 {
				return fmt.Errorf("bench compare needs at least two result files (got %d): meridian bench compare a.json b.json [c.json ...]", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			results := make([]*bench.Result, len(args))
			for i, path := range args {
				r, err := bench.ReadJSON(path)
				if err != nil {
					return err
				}
				results[i] = r
			}
			write := bench.WriteCompareN
			if asJSON {
				write = bench.WriteCompareJSON
			}
			if err := write(cmd.OutOrStdout(), args, results); err != nil {
				return err
			}
			if htmlOut == "" {
				return nil
			}
			file, err := os.Create(htmlOut)
			if err != nil {
				return err
			}
			if err := bench.WriteCompareHTML(file, args, results); err != nil {
				file.Close()
				return err
			}
			if err := file.Close(); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s\n", htmlOut)
			return nil
		},
	}
	cmd.Flags().StringVar(&htmlOut, "html", "", "also write a self-contained HTML page overlaying the runs to this file")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print machine-readable JSON instead of the table")
	return cmd
}

func parseValueSize(s string) (int, int, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	a, err := strconv.Atoi(lo)
	if err != nil || a < 0 {
		return 0, 0, fmt.Errorf("--value-size %q: want bytes or MIN-MAX", s)
	}
	if !isRange {
		return a, 0, nil
	}
	b, err := strconv.Atoi(hi)
	if err != nil || b < a {
		return 0, 0, fmt.Errorf("--value-size %q: want MIN-MAX with MIN <= MAX", s)
	}
	return a, b, nil
}

func runBench(ctx context.Context, out, errOut io.Writer, f benchFlags) error {
	var w bench.Workload
	var err error
	if f.mix != "" {
		w, err = bench.ParseMix(f.mix)
	} else {
		w, err = bench.WorkloadByName(f.workload)
	}
	if err != nil {
		return err
	}
	vmin, vmax, err := parseValueSize(f.valueSize)
	if err != nil {
		return err
	}
	readLevel, err := ParseLevel(f.readCons)
	if err != nil {
		return fmt.Errorf("--read-consistency: %w", err)
	}
	writeLevel, err := ParseLevel(f.writeCons)
	if err != nil {
		return fmt.Errorf("--write-consistency: %w", err)
	}
	if f.phase != "load" && f.phase != "run" && f.phase != "both" {
		return fmt.Errorf("--phase %q: use load, run or both", f.phase)
	}
	if f.phase == "load" && (f.jsonOut != "" || f.htmlOut != "" || f.hlogOut != "") {
		return errors.New("--json, --html and --hlog report the run phase, which --phase load skips: drop them, or use --phase both")
	}
	contexts, err := bench.NewContextCache(f.contexts)
	if err != nil {
		return fmt.Errorf("--contexts: %w", err)
	}
	sources := 0
	for _, set := range []bool{f.addrs != "", f.clusterFile != "", f.local} {
		if set {
			sources++
		}
	}
	if sources != 1 {
		return fmt.Errorf("say what to benchmark with exactly one of --addr, --cluster or --local")
	}
	if f.local && f.localNodes < 1 {
		return fmt.Errorf("--local-nodes %d: use at least 1", f.localNodes)
	}

	var addrs []string
	target := ""
	var disk *bench.WALRecorder
	switch {
	case f.local:
		dir, err := os.MkdirTemp("", "meridian-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		fmt.Fprintf(errOut, "starting a local %d-node cluster (%s) in %s ...\n", f.localNodes, f.localEngine, dir)
		// The nodes run in this process: their WAL fsyncs are measured
		// with the run (the disk's share of a durable write's latency).
		var l *node.Local
		disk = bench.NewWALRecorder(func() uint64 { return syncedCommits(l) })
		l, err = node.StartLocal(ctx, node.LocalSpec{Dir: dir, NodesPerDC: f.localNodes, Engine: f.localEngine,
			Options: node.Options{Register: ops.Register, OnWALSync: disk.Observe}})
		if err != nil {
			return err
		}
		defer l.Close()
		if f.sec.dialOpt, err = l.DialOption(); err != nil {
			return err
		}
		for _, n := range l.Nodes() {
			addrs = append(addrs, n.Addr())
		}
		target = fmt.Sprintf("local %d-node cluster, %s engine", f.localNodes, f.localEngine)
	case f.clusterFile != "":
		cf, err := node.ReadClusterFile(f.clusterFile)
		if err != nil {
			return err
		}
		f.sec.fromCluster(cf)
		for _, n := range cf.Nodes {
			addrs = append(addrs, n.GRPCAddr)
		}
		target = "cluster " + f.clusterFile
	default:
		for _, a := range strings.Split(f.addrs, ",") {
			if a = strings.TrimSpace(a); a != "" {
				addrs = append(addrs, a)
			}
		}
		target = "nodes " + strings.Join(addrs, ",")
	}
	read, write := &kvv1.Consistency{Level: readLevel}, &kvv1.Consistency{Level: writeLevel}
	if f.noSync {
		durable := false
		write.Durable = &durable
	}
	var store bench.Store
	if f.viaNodes && f.unaryCalls {
		return fmt.Errorf("--unary-calls is for the Go client; --via-nodes sends every request unary already: drop one of them")
	}
	if f.viaNodes {
		gs := &bench.GRPCStore{Keyspace: f.keyspace, Read: read, Write: write}
		for _, a := range addrs {
			conn, err := dial(a, f.sec)
			if err != nil {
				return err
			}
			defer conn.Close()
			gs.Clients = append(gs.Clients, kvv1.NewKVClient(conn))
		}
		store = gs
	} else {
		// The partition-aware Go client: every request straight to a
		// replica of its key, no forwarding hop.
		opts, err := f.sec.options()
		if err != nil {
			return err
		}
		copts := []client.Option{client.WithDialOptions(opts...)}
		if f.unaryCalls {
			copts = append(copts, client.UnaryCalls())
			target += ", unary calls"
		}
		kc, err := client.Dial(ctx, addrs, copts...)
		if err != nil {
			return err
		}
		defer kc.Close()
		store = &bench.ClientStore{Client: kc, Keyspace: f.keyspace, Read: read, Write: write}
	}
	cfg := bench.Config{
		Workload: w, Distribution: f.dist, RecordCount: f.records, ValueSize: vmin, ValueSizeMax: vmax,
		Workers: f.workers, Rate: f.rate, Duration: f.duration, Ops: f.ops, Warmup: f.warmup,
		Interval: f.interval, Seed: f.seed, Contexts: contexts,
	}
	if disk != nil && f.localEngine == "pebble" {
		cfg.Disk = disk
	}
	if f.ops > 0 && !f.durationSet {
		cfg.Duration = 0
	}
	if f.phase != "run" {
		fmt.Fprintf(errOut, "load phase: inserting %d records with %d workers\n", f.records, f.workers)
		res, err := bench.Load(ctx, cfg, store, errOut)
		if err != nil {
			return err
		}
		res.Config.Target = target
		if err := res.WriteTable(out); err != nil {
			return err
		}
		if res.Partial {
			return fmt.Errorf("the load phase was interrupted: %w (the run phase did not start)", errInterrupted)
		}
	}
	if f.phase == "load" {
		return nil
	}
	// closeHlog closes the --hlog file once: right after the run, its
	// error returned once the table is out (a log cut short must not
	// exit 0), and deferred for the paths that return sooner.
	closeHlog := func() error { return nil }
	if f.hlogOut != "" {
		hf, err := os.Create(f.hlogOut)
		if err != nil {
			return err
		}
		closeHlog = sync.OnceValue(hf.Close)
		defer closeHlog()
		cfg.Hlog = hf
	}
	fmt.Fprintf(errOut, "run phase: workload %s, %d workers, %s\n", w.Name, f.workers, loopName(f.rate))
	stopProfile, err := startCPUProfile(f.cpuProfile)
	if err != nil {
		return err
	}
	stopTrace, err := startTrace(f.trace)
	if err != nil {
		stopProfile()
		return err
	}
	res, err := bench.Run(ctx, cfg, store, errOut)
	if perr := stopProfile(); err == nil && perr != nil {
		err = perr
	}
	if terr := stopTrace(); err == nil && terr != nil {
		err = terr
	}
	if err != nil {
		return err
	}
	hlogErr := closeHlog()
	res.Config.Target = target
	res.Config.ReadConsistency, res.Config.WriteConsistency = strings.ToUpper(f.readCons), strings.ToUpper(f.writeCons)
	if f.noSync {
		res.Config.WriteConsistency += " (no-sync)"
	}
	if err := res.WriteTable(out); err != nil {
		return err
	}
	for _, o := range []struct {
		path  string
		write func(io.Writer) error
	}{{f.jsonOut, res.WriteJSON}, {f.htmlOut, res.WriteHTML}} {
		if o.path == "" {
			continue
		}
		file, err := os.Create(o.path)
		if err != nil {
			return err
		}
		if err := o.write(file); err != nil {
			file.Close()
			return err
		}
		if err := file.Close(); err != nil {
			return err
		}
		fmt.Fprintf(errOut, "wrote %s\n", o.path)
	}
	if hlogErr != nil {
		hlogErr = fmt.Errorf("--hlog %s: %w", f.hlogOut, hlogErr)
	}
	if res.Partial {
		// The partial result is written, marked partial; a script going on
		// to compare it must know.
		return errors.Join(fmt.Errorf("the run phase was interrupted: %w (the result above and its files are partial)", errInterrupted), hlogErr)
	}
	return hlogErr
}

// errInterrupted ends a bench cut short (its exit status is not 0).
var errInterrupted = errors.New("interrupted")

func loopName(rate float64) string {
	if rate > 0 {
		return fmt.Sprintf("open loop at %.0f ops/s", rate)
	}
	return "closed loop"
}

// startCPUProfile starts a CPU profile into path ("": none); the returned
// function stops it and closes the file.
func startCPUProfile(path string) (stop func() error, err error) {
	return startRecording(path, "--cpuprofile", pprof.StartCPUProfile, pprof.StopCPUProfile)
}

// startTrace starts a runtime execution trace into path ("": none); the
// returned function stops it and closes the file.
func startTrace(path string) (stop func() error, err error) {
	return startRecording(path, "--trace", trace.Start, trace.Stop)
}

// startRecording creates path and starts writing a recording (a profile,
// a trace) into it; flag names it in errors.
func startRecording(path, flag string, start func(io.Writer) error, end func()) (stop func() error, err error) {
	if path == "" {
		return func() error { return nil }, nil
	}
	file, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	if err := start(file); err != nil {
		file.Close()
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	return func() error {
		end()
		return file.Close()
	}, nil
}

// syncedCommits is the durable writes the local cluster's engines have
// committed so far (0 before it started).
func syncedCommits(l *node.Local) uint64 {
	if l == nil {
		return 0
	}
	var n float64
	for _, nd := range l.Nodes() {
		n += nd.Store().Engine().Stats()["synced_commits_total"]
	}
	return uint64(n)
}
