package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/ops"
)

type adminFlags struct {
	sec     clientSec
	addr    string
	json    bool
	timeout time.Duration
}

func (f *adminFlags) bind(cmd *cobra.Command) {
	cmd.PersistentFlags().StringVar(&f.addr, "addr", "127.0.0.1:7001", "client or admin address of any node (the admin address is found through the client one)")
	cmd.PersistentFlags().BoolVar(&f.json, "json", false, "print machine-readable JSON")
	cmd.PersistentFlags().DurationVar(&f.timeout, "timeout", defaultAdminTimeout,
		fmt.Sprintf("request deadline; unless given, the calls the nodes may work on longer wait as long: snapshot create, list and delete %s, cluster plan show --sizes %s",
			snapshotTimeout, planSizesTimeout))
	f.sec.bind(cmd.PersistentFlags())
}

const (
	// defaultAdminTimeout is --timeout's default.
	defaultAdminTimeout = 10 * time.Second
	// budgetMargin is what a call whose nodes' part has a budget of its
	// own gets beyond it by default: for the answering node to reach the
	// others and gather their answers.
	budgetMargin = 15 * time.Second
	// snapshotTimeout is the default deadline of the snapshot calls: the
	// answering node gives every node (at once) ops.SnapshotCallTimeout.
	snapshotTimeout = ops.SnapshotCallTimeout + budgetMargin
	// planSizesTimeout is the default deadline of a plan shown with its
	// sizes: the answering node gives the size queries (at once)
	// ops.PlanSizesTimeout.
	planSizesTimeout = ops.PlanSizesTimeout + budgetMargin
)

// timeoutFor is the deadline of a command whose call the nodes may work
// on for up to budget: --timeout when given, else the larger of its
// default and budget.
func (f *adminFlags) timeoutFor(cmd *cobra.Command, budget time.Duration) time.Duration {
	if fl := cmd.Flags().Lookup("timeout"); fl != nil && fl.Changed {
		return f.timeout
	}
	return max(f.timeout, budget)
}

func withAdmin(ctx context.Context, f *adminFlags, fn func(context.Context, adminv1.AdminClient) error) error {
	return f.call(ctx, f.timeout, "", fn)
}

// call runs fn against the admin API of the node at --addr, under
// timeout. An error because the call ran out of it is an *outOfTime, with
// hint: what else to do for this command.
func (f *adminFlags) call(ctx context.Context, timeout time.Duration, hint string, fn func(context.Context, adminv1.AdminClient) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := dialAdmin(ctx, f.addr, f.sec)
	if err != nil {
		return ranOutOfTime(ctx, err, timeout, hint)
	}
	defer conn.Close()
	return ranOutOfTime(ctx, fn(ctx, adminv1.NewAdminClient(conn)), timeout, hint)
}

// outOfTime is a call that ran out of its deadline (--timeout).
type outOfTime struct {
	err     error
	timeout time.Duration
	// hint says what else to do, for the command.
	hint string
}

func (e *outOfTime) Error() string { return e.err.Error() }
func (e *outOfTime) Unwrap() error { return e.err }

// describe says that the call ran out of time, and what to do.
func (e *outOfTime) describe() string {
	msg := fmt.Sprintf("DeadlineExceeded: the call ran out of time (--timeout %s): retry with a larger --timeout, e.g. --timeout %s", e.timeout, 2*e.timeout)
	if e.hint != "" {
		msg += "; " + e.hint
	}
	return msg
}

// ranOutOfTime makes err an *outOfTime if it is ctx's deadline (of
// timeout) running out. The node's DEADLINE_EXCEEDED may arrive just
// before ctx's own timer fires (the node holds the same deadline): one
// within a tenth of the timeout of it counts too.
func ranOutOfTime(ctx context.Context, err error, timeout time.Duration, hint string) error {
	if err == nil {
		return err
	}
	if dl, ok := ctx.Deadline(); !ok || ctx.Err() == nil && time.Until(dl) > timeout/10+10*time.Millisecond {
		return err
	}
	if status.Code(err) != codes.DeadlineExceeded && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return &outOfTime{err: err, timeout: timeout, hint: hint}
}

// dialAdmin connects to a node's admin listener given its client or admin
// address: a client listener names the admin one through Discovery.
func dialAdmin(ctx context.Context, addr string, sec clientSec) (*grpc.ClientConn, error) {
	conn, err := dial(addr, sec)
	if err != nil {
		return nil, err
	}
	info, err := internalv1.NewDiscoveryClient(conn).Info(ctx, &internalv1.InfoRequest{})
	if status.Code(err) == codes.Unimplemented {
		return conn, nil // already the admin listener
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("ask %s for its admin address: %w (is the node running?)", addr, err)
	}
	if info.GetAdminAddr() == "" || info.GetAdminAddr() == addr {
		return conn, nil
	}
	conn.Close()
	return dial(info.GetAdminAddr(), sec)
}

func printJSON(w io.Writer, m proto.Message) error {
	return writeJSON(w, m, protojson.MarshalOptions{Multiline: true, Indent: "  "})
}

// printJSONLine prints m as JSON on one line (JSON Lines: for output that
// carries a series of objects, such as a watch).
func printJSONLine(w io.Writer, m proto.Message) error {
	return writeJSON(w, m, protojson.MarshalOptions{})
}

// writeJSON prints m with o's layout, every field named as in the .proto
// and present (zero values too).
func writeJSON(w io.Writer, m proto.Message, o protojson.MarshalOptions) error {
	o.EmitUnpopulated, o.UseProtoNames = true, true
	b, err := o.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

func newStatusCmd() *cobra.Command {
	var f adminFlags
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the cluster's members and their state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd.Context(), &f, func(ctx context.Context, c adminv1.AdminClient) error {
				resp, err := c.Status(ctx, &adminv1.StatusRequest{})
				if err != nil {
					return err
				}
				if f.json {
					return printJSON(cmd.OutOrStdout(), resp)
				}
				return writeStatus(cmd.OutOrStdout(), resp)
			})
		},
	}
	f.bind(cmd)
	return cmd
}

// writeStatus prints `meridian status`: the answering node's view of the
// members, their gossip and member states, the metadata epoch each has
// applied and its role in the metadata log.
func writeStatus(w io.Writer, resp *adminv1.StatusResponse) error {
	fmt.Fprintf(w, "as seen by %s (cluster %s, leader %s, epoch %d, %d partitions)\n",
		resp.Node, orUnknown(resp.ClusterId), orNone(resp.Leader), resp.Epoch, resp.Partitions)
	if resp.RestoredFrom != "" {
		fmt.Fprintf(w, "restored from the snapshots of cluster %s\n", resp.RestoredFrom)
	}
	if resp.NotServing != "" {
		fmt.Fprintf(w, "%s DOES NOT SERVE: %s\n", resp.Node, resp.NotServing)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tMEMBER\tEPOCH\tRAFT\tDC\tRACK\tWEIGHT\tADDRESS")
	var low []string
	for _, n := range resp.Nodes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%d\t%s\n", n.Id, n.State, orUnknown(n.MemberState), n.Epoch, raftRole(n), n.Dc, n.Rack, n.Weight, n.GrpcAddr)
		if n.DiskLow {
			low = append(low, n.Id)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, id := range low {
		fmt.Fprintf(w, "%s refuses writes: low on disk (free space under its min-free-disk; reads are served). Free space on its data volume, grow it, or add nodes; meridian_disk_free_bytes shows how much is free.\n", id)
	}
	return nil
}

// raftRole is a node's role in the metadata log, "leader" for the leader.
func raftRole(n *adminv1.Node) string {
	if n.Leader {
		return "leader"
	}
	return orUnknown(n.RaftRole)
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// orNone names a missing leader: an election is under way or the node
// cannot reach a quorum of the metadata log.
func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func newRingCmd() *cobra.Command {
	var f adminFlags
	cmd := &cobra.Command{
		Use:   "ring",
		Short: "Show each node's DC, rack, weight, partitions and share of each keyspace",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd.Context(), &f, func(ctx context.Context, c adminv1.AdminClient) error {
				resp, err := c.Ring(ctx, &adminv1.RingRequest{})
				if err != nil {
					return err
				}
				if f.json {
					return printJSON(cmd.OutOrStdout(), resp)
				}
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "%d partitions, epoch %d\n", resp.Partitions, resp.Epoch)
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				header := "NODE\tDC\tRACK\tWEIGHT\tSTATE\tOWNED\tOWNED%\tWEIGHT%"
				if len(resp.Nodes) > 0 {
					for _, ks := range resp.Nodes[0].Keyspaces {
						header += "\t" + ks.Keyspace + "%"
					}
				}
				fmt.Fprintln(tw, header)
				for _, n := range resp.Nodes {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%d\t%.1f\t%.1f", n.Node.Id, n.Node.Dc, n.Node.Rack, n.Node.Weight, n.Node.State,
						n.OwnedPartitions, 100*n.OwnedShare, 100*n.WeightShare)
					for _, ks := range n.Keyspaces {
						fmt.Fprintf(tw, "\t%.1f", 100*ks.Share)
					}
					fmt.Fprintln(tw)
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				fmt.Fprintln(out, "OWNED%: share of its DC's partitions; WEIGHT%: its weight's share of the DC; <keyspace>%: partitions it holds a replica of.")
				return nil
			})
		},
	}
	f.bind(cmd)
	return cmd
}

func newEndpointsCmd() *cobra.Command {
	var (
		f        adminFlags
		keyspace string
	)
	cmd := &cobra.Command{
		Use:   "endpoints KEY",
		Short: "Show a key's partition, preference list and first fallbacks",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(cmd.Context(), &f, func(ctx context.Context, c adminv1.AdminClient) error {
				resp, err := c.Endpoints(ctx, &adminv1.EndpointsRequest{Keyspace: keyspace, Key: []byte(args[0])})
				if err != nil {
					return err
				}
				if f.json {
					return printJSON(cmd.OutOrStdout(), resp)
				}
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "key %q in keyspace %s: partition %d, N=%d\n", args[0], resp.Keyspace, resp.Partition, resp.N)
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ROLE\tNODE\tDC\tRACK\tALIVE\tADDRESS")
				for i, e := range resp.Replicas {
					fmt.Fprintf(tw, "replica %d\t%s\t%s\t%s\t%v\t%s\n", i+1, e.Node, e.Dc, e.Rack, e.Alive, e.GrpcAddr)
				}
				for i, e := range resp.Fallbacks {
					fmt.Fprintf(tw, "fallback %d\t%s\t%s\t%s\t%v\t%s\n", i+1, e.Node, e.Dc, e.Rack, e.Alive, e.GrpcAddr)
				}
				return tw.Flush()
			})
		},
	}
	f.bind(cmd)
	cmd.Flags().StringVar(&keyspace, "keyspace", "", "keyspace (default \"default\")")
	return cmd
}

// parseReplication parses "dc-east=3,dc-west=2".
func parseReplication(s string) (map[string]uint32, error) {
	out := map[string]uint32{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		dc, rf, ok := strings.Cut(part, "=")
		n, err := strconv.ParseUint(rf, 10, 32)
		if !ok || dc == "" || err != nil {
			return nil, fmt.Errorf("--replication %q: want DC=RF pairs, e.g. dc-east=3,dc-west=2", s)
		}
		out[dc] = uint32(n)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--replication is empty: give DC=RF pairs, e.g. dc1=3")
	}
	return out, nil
}

func formatReplication(r map[string]uint32) string {
	dcs := make([]string, 0, len(r))
	for dc := range r {
		dcs = append(dcs, dc)
	}
	sort.Strings(dcs)
	parts := make([]string, len(dcs))
	for i, dc := range dcs {
		parts[i] = fmt.Sprintf("%s=%d", dc, r[dc])
	}
	return strings.Join(parts, ",")
}

func newKeyspaceCmd() *cobra.Command {
	var f adminFlags
	cmd := &cobra.Command{
		Use:   "keyspace",
		Short: "Create, alter, drop, list and describe keyspaces",
	}
	f.bind(cmd)
	var repl, conflict string
	create := &cobra.Command{
		Use:   "create NAME --replication DC=RF[,DC=RF...] [--conflict siblings|lww]",
		Short: "Create a keyspace in the cluster metadata (every node applies it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := parseReplication(repl)
			if err != nil {
				return err
			}
			return withAdmin(cmd.Context(), &f, func(ctx context.Context, c adminv1.AdminClient) error {
				resp, err := c.CreateKeyspace(ctx, &adminv1.CreateKeyspaceRequest{Keyspace: &adminv1.Keyspace{Name: args[0], Replication: r, Conflict: conflict}})
				if err != nil {
					return err
				}
				if f.json {
					return printJSON(cmd.OutOrStdout(), resp)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "created keyspace %s (replication %s, N=%d, conflict %s) in the cluster metadata\n",
					resp.Keyspace.Name, formatReplication(resp.Keyspace.Replication), resp.Keyspace.N, resp.Keyspace.Conflict)
				return nil
			})
		},
	}
	create.Flags().StringVar(&repl, "replication", "", "replication factor per datacenter, e.g. dc-east=3,dc-west=2 (required)")
	create.Flags().StringVar(&conflict, "conflict", "siblings", "how concurrent writes resolve: siblings (keep all) or lww (greatest hybrid-logical-clock time wins)")
	list := &cobra.Command{
		Use:   "list",
		Short: "List keyspaces",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd.Context(), &f, func(ctx context.Context, c adminv1.AdminClient) error {
				resp, err := c.ListKeyspaces(ctx, &adminv1.ListKeyspacesRequest{})
				if err != nil {
					return err
				}
				if f.json {
					return printJSON(cmd.OutOrStdout(), resp)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "KEYSPACE\tN\tREPLICATION\tCONFLICT")
				for _, k := range resp.Keyspaces {
					fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", k.Name, k.N, formatReplication(k.Replication), k.Conflict)
				}
				return tw.Flush()
			})
		},
	}
	describe := &cobra.Command{
		Use:   "describe NAME",
		Short: "Describe one keyspace",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(cmd.Context(), &f, func(ctx context.Context, c adminv1.AdminClient) error {
				resp, err := c.ListKeyspaces(ctx, &adminv1.ListKeyspacesRequest{})
				if err != nil {
					return err
				}
				for _, k := range resp.Keyspaces {
					if k.Name != args[0] {
						continue
					}
					if f.json {
						return printJSON(cmd.OutOrStdout(), k)
					}
					out := cmd.OutOrStdout()
					fmt.Fprintf(out, "keyspace:      %s\nid:            %d\nreplication:   %s\nN:             %d\nconflict:      %s\nmax siblings:  %s\nmax set bytes: %s\n",
						k.Name, k.Id, formatReplication(k.Replication), k.N, k.Conflict, formatMaxSiblings(k.MaxSiblings), formatMaxSetBytes(k.MaxSetBytes))
					return nil
				}
				return fmt.Errorf("keyspace %q does not exist: see 'meridian keyspace list'", args[0])
			})
		},
	}
	cmd.AddCommand(create, newKeyspaceAlterCmd(&f), newKeyspaceDropCmd(&f), list, describe)
	return cmd
}

// findKeyspace reads a keyspace's current definition.
func findKeyspace(ctx context.Context, c adminv1.AdminClient, name string) (*adminv1.Keyspace, error) {
	resp, err := c.ListKeyspaces(ctx, &adminv1.ListKeyspacesRequest{})
	if err != nil {
		return nil, err
	}
	for _, k := range resp.Keyspaces {
		if k.Name == name {
			return k, nil
		}
	}
	return nil, fmt.Errorf("keyspace %q does not exist: see 'meridian keyspace list'", name)
}

func newKeyspaceAlterCmd(f *adminFlags) *cobra.Command {
	var (
		repl, setBytes string
		maxSiblings    uint32
	)
	cmd := &cobra.Command{
		Use:   "alter NAME [--replication DC=RF,...] [--max-siblings N] [--max-set-bytes SIZE]",
		Short: "Change a keyspace's replication or limits (a replication change moves data)",
		Long: `Change a keyspace through the cluster metadata. Fields not given keep
their current value. A replication change moves data like a membership
change: the partitions whose preference lists change stream to their new
replicas, one by one (follow it with 'meridian cluster status --watch').
Limits change at once and move nothing.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			fl := cmd.Flags()
			if !fl.Changed("replication") && !fl.Changed("max-siblings") && !fl.Changed("max-set-bytes") {
				return errors.New("nothing to change: give --replication, --max-siblings or --max-set-bytes")
			}
			var (
				r       map[string]uint32
				setSize int64
				err     error
			)
			if fl.Changed("replication") {
				if r, err = parseReplication(repl); err != nil {
					return err
				}
			}
			if fl.Changed("max-set-bytes") {
				if setSize, err = node.ParseBytes(setBytes); err != nil {
					return fmt.Errorf("--max-set-bytes %q: want bytes such as 1048576 or 64MiB (0: the default, 64 MiB)", setBytes)
				}
			}
			return withAdmin(cmd.Context(), f, func(ctx context.Context, c adminv1.AdminClient) error {
				cur, err := findKeyspace(ctx, c, args[0])
				if err != nil {
					return err
				}
				k := &adminv1.Keyspace{Name: cur.Name, Replication: cur.Replication, Conflict: cur.Conflict,
					MaxSiblings: cur.MaxSiblings, MaxSetBytes: cur.MaxSetBytes}
				if r != nil {
					k.Replication = r
				}
				if fl.Changed("max-siblings") {
					k.MaxSiblings = maxSiblings
				}
				if fl.Changed("max-set-bytes") {
					k.MaxSetBytes = uint64(setSize)
				}
				resp, err := c.AlterKeyspace(ctx, &adminv1.AlterKeyspaceRequest{Keyspace: k})
				if err != nil {
					return err
				}
				if f.json {
					return printJSON(cmd.OutOrStdout(), resp)
				}
				writeAltered(cmd.OutOrStdout(), resp)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&repl, "replication", "", "new replication factor per datacenter, e.g. dc-east=3,dc-west=2 (moves data)")
	cmd.Flags().Uint32Var(&maxSiblings, "max-siblings", 0, "most siblings a write may leave on a key (0: the default, 100)")
	cmd.Flags().StringVar(&setBytes, "max-set-bytes", "", "largest stored versions of a key, e.g. 64MiB (0: the default, 64 MiB)")
	return cmd
}

// writeAltered says what `keyspace alter` changed and whether data moves.
func writeAltered(w io.Writer, resp *adminv1.AlterKeyspaceResponse) {
	k := resp.Keyspace
	fmt.Fprintf(w, "altered keyspace %s (replication %s, N=%d, max siblings %s, max set bytes %s)\n",
		k.GetName(), formatReplication(k.GetReplication()), k.GetN(), formatMaxSiblings(k.GetMaxSiblings()), formatMaxSetBytes(k.GetMaxSetBytes()))
	if resp.MovesData {
		fmt.Fprintf(w, "replication change committed at epoch %d: data moves to the new replicas; follow it with `meridian cluster status`\n", resp.Epoch)
		return
	}
	fmt.Fprintf(w, "committed at epoch %d: no data moves\n", resp.Epoch)
}

func formatMaxSiblings(n uint32) string {
	if n == 0 {
		return "100 (default)"
	}
	return strconv.FormatUint(uint64(n), 10)
}

func formatMaxSetBytes(n uint64) string {
	if n == 0 {
		return formatBytes(64<<20) + " (default)"
	}
	return formatBytes(n)
}

func newKeyspaceDropCmd(f *adminFlags) *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "drop NAME --yes",
		Short: "Remove a keyspace: every node deletes its data (not undoable)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !yes {
				return fmt.Errorf("dropping keyspace %q makes every node delete its data, and it cannot be undone: run again with --yes to drop it", args[0])
			}
			return withAdmin(cmd.Context(), f, func(ctx context.Context, c adminv1.AdminClient) error {
				resp, err := c.DropKeyspace(ctx, &adminv1.DropKeyspaceRequest{Name: args[0]})
				if err != nil {
					return err
				}
				if f.json {
					return printJSON(cmd.OutOrStdout(), resp)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "dropped keyspace %s at epoch %d: every node deletes its data in the background\n", args[0], resp.Epoch)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "confirm: every node deletes the keyspace's data")
	return cmd
}
