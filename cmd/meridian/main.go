// Command meridian is the one Meridian binary: it serves a node, runs local
// clusters and the demo, talks to a cluster as a client, and benchmarks it.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func main() {
	runtime.GOMAXPROCS(schedulerProcs(os.Getenv, runtime.GOMAXPROCS(0)))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "meridian:", describeErr(err))
		os.Exit(1)
	}
}

// describeErr renders gRPC errors as "CODE: message" for people, within
// whatever a command wrapped around them.
func describeErr(err error) string {
	var late *outOfTime
	if errors.As(err, &late) {
		return late.describe()
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		st := se.GRPCStatus()
		msg := fmt.Sprintf("%s: %s", st.Code(), st.Message())
		// A command's own words around the status (which node, what to
		// do next) stay; only the status is rendered for people.
		if inner, ok := se.(error); ok && inner != err {
			if whole, raw := err.Error(), inner.Error(); strings.Contains(whole, raw) {
				msg = strings.Replace(whole, raw, msg, 1)
			}
		}
		if hint := connectionHint(st.Message()); hint != "" {
			msg += " (" + hint + ")"
		} else if st.Code() == codes.DeadlineExceeded {
			msg += " (the call ran out of time: retry with a larger --timeout)"
		}
		return msg
	}
	return err.Error()
}

// connectionHint says what to do about the usual TLS mismatches.
func connectionHint(msg string) string {
	switch {
	case strings.Contains(msg, "error reading server preface"):
		return "the node speaks TLS: pass the cluster's --ca (and --cert/--key or --token), or MERIDIAN_CA"
	case strings.Contains(msg, "first record does not look like a TLS handshake"):
		return "the node is plaintext (--insecure): drop --ca"
	case strings.Contains(msg, "certificate"):
		return "check --ca names the cluster's CA and that --cert/--key are a client certificate it signed"
	}
	return ""
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "meridian",
		Short:         "Meridian: a Dynamo-style multi-datacenter key-value store",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newServeCmd(),
		newKVCmd(),
		newDevCmd(),
		newDemoCmd(),
		newStatusCmd(),
		newRingCmd(),
		newEndpointsCmd(),
		newKeyspaceCmd(),
		newClusterCmd(),
		newSecretCmd(),
		newAuthCmd(),
		newHintsCmd(),
		newFaultCmd(),
		newSnapshotCmd(),
		newRepairCmd(),
		newCertsCmd(),
		newBenchCmd(),
		newDrillCmd(),
		newVersionCmd(),
	)
	return root
}

// dial opens a client connection to a node (plaintext gRPC). Messages may
// be as large as the server accepts (gRPC's default 4 MiB receive limit
// would refuse a get of any larger value).
func dial(addr string, sec clientSec) (*grpc.ClientConn, error) {
	opts, err := sec.options()
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w (is --addr host:port?)", addr, err)
	}
	return conn, nil
}

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "dev"

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "meridian", Version)
		},
	}
}
