package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/ops"
	"github.com/meridiankv/meridian/telemetry"
)

func newDevCmd() *cobra.Command {
	var (
		spec      node.LocalSpec
		nodes     int
		logLevel  string
		pprofAddr string
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a local cluster in the foreground until Ctrl-C",
		Long: `Run a local cluster in this process: every node has its own Pebble directory
under --dir and its own gRPC port on loopback. DIR/cluster.json lists each
node's ID and addresses, so scripts and 'meridian bench --cluster' can find it.

  meridian dev --nodes 3 --dir /tmp/mer
  meridian dev --dcs 3 --nodes-per-dc 3 --racks-per-dc 2 --dir /tmp/mer`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if spec.Dir == "" {
				return fmt.Errorf("--dir is required: the nodes' data and cluster.json go there")
			}
			if cmd.Flags().Changed("nodes") {
				if spec.DCs > 1 {
					return fmt.Errorf("--nodes is for one datacenter: with --dcs use --nodes-per-dc")
				}
				spec.NodesPerDC = nodes
			}
			if spec.DCs < 1 || spec.NodesPerDC < 1 || spec.RacksPerDC < 1 {
				return fmt.Errorf("--dcs, --nodes-per-dc and --racks-per-dc must be at least 1")
			}
			logger, err := newLogger(logLevel, "text")
			if err != nil {
				return err
			}
			if err := os.MkdirAll(spec.Dir, 0o755); err != nil {
				return err
			}
			spec.Logger = logger
			spec.Options.Register = ops.Register
			spec.Reflection = true
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "starting %d node(s) in %d datacenter(s) under %s ...\n", spec.DCs*spec.NodesPerDC, spec.DCs, spec.Dir)
			l, err := node.StartLocal(cmd.Context(), spec)
			if err != nil {
				return err
			}
			defer l.Close()
			path := filepath.Join(spec.Dir, "cluster.json")
			if err := l.WriteClusterFile(path); err != nil {
				return err
			}
			for _, n := range l.Nodes() {
				fmt.Fprintf(out, "  %-4s dc=%-4s grpc=%s peer=%s admin=%s gossip=%s\n", n.ID(), n.DC(), n.Addr(), n.PeerAddr(), n.AdminAddr(), n.GossipAddr())
			}
			fmt.Fprintf(out, "cluster file: %s\n", path)
			if ca, cert, key := l.ClientTLS(); ca != "" {
				fmt.Fprintf(out, "TLS: every listener; connect with\n  export MERIDIAN_CA=%s MERIDIAN_CERT=%s MERIDIAN_KEY=%s\n", ca, cert, key)
			}
			if pprofAddr != "" {
				stop, addr, err := servePprof(pprofAddr)
				if err != nil {
					return err
				}
				defer stop()
				fmt.Fprintf(out, "pprof: http://%s/debug/pprof/ (go tool pprof http://%s/debug/pprof/heap)\n", addr, addr)
			}
			fmt.Fprintln(out, "ready; Ctrl-C to stop")
			<-cmd.Context().Done()
			fmt.Fprintln(out, "stopping ...")
			return l.Close()
		},
	}
	f := cmd.Flags()
	f.StringVar(&spec.Dir, "dir", "", "directory for node data and cluster.json (required)")
	f.IntVar(&nodes, "nodes", 3, "number of nodes (one datacenter)")
	f.IntVar(&spec.DCs, "dcs", 1, "number of datacenters")
	f.IntVar(&spec.NodesPerDC, "nodes-per-dc", 3, "nodes in each datacenter")
	f.IntVar(&spec.RacksPerDC, "racks-per-dc", 1, "racks in each datacenter")
	f.StringVar(&spec.Engine, "engine", "pebble", "storage engine: pebble or memory")
	f.BoolVar(&spec.SeparateHosts, "separate-hosts", true, "bind datacenter i to 127.0.0.(i+1) (false: every node on 127.0.0.1)")
	f.StringVar(&logLevel, "log-level", "warn", "debug, info, warn or error")
	f.StringVar(&pprofAddr, "pprof-addr", "", "serve net/http/pprof for the whole process (every node) on this address, e.g. 127.0.0.1:6060 (a bare :6060 binds localhost only)")
	return cmd
}

// servePprof serves net/http/pprof on addr until stop is called; it
// returns the address bound.
func servePprof(addr string) (stop func(), bound string, err error) {
	lis, err := net.Listen("tcp", telemetry.LocalByDefault(addr))
	if err != nil {
		return nil, "", fmt.Errorf("--pprof-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(lis)
	}()
	return func() { srv.Close(); <-done }, lis.Addr().String(), nil
}
