package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
)

func newFaultCmd() *cobra.Command {
	var f adminFlags
	cmd := &cobra.Command{
		Use:   "fault",
		Short: "Inject, list and clear faults on a running cluster (failover drills)",
		Long: `Faults for failover drills, applied by the nodes themselves: a partition
(calls and gossip cut), a delay (calls wait), drops (a share of calls and
gossip messages lost), a slow disk (every fsync waits) or a full disk
(writes refused, reads served). Every fault has
a TTL, and each node removes it by its own clock when it runs out: a drill
whose runner dies never leaves the cluster broken. Admin role only.`,
	}
	f.bind(cmd)
	cmd.AddCommand(newFaultInjectCmd(&f), newFaultListCmd(&f), newFaultClearCmd(&f))
	return cmd
}

func newFaultInjectCmd(f *adminFlags) *cobra.Command {
	var (
		fromDCs, fromNodes, toDCs, toNodes []string
		bothWays                           bool
		delay, jitter, ttl                 time.Duration
		drop                               float64
	)
	cmd := &cobra.Command{
		Use:   "inject partition|delay|drop|slow-disk|disk-full --ttl DURATION [--from-dc X] [--from-nodes a,b] [--to-dc Y] [--to-nodes c] [--both-ways] [--delay 50ms] [--jitter 10ms] [--drop 10]",
		Short: "Inject a fault on the nodes it selects, for --ttl",
		Long: `Inject a fault. --from-dc / --from-nodes select the nodes that apply it
(default: every node); --to-dc / --to-nodes are its targets (default:
every other node); --both-ways makes the targets apply it toward the
selected nodes as well (a real partition cuts both ways).

  partition   calls and gossip to the targets fail
  delay       calls to the targets wait --delay (plus up to --jitter)
  drop        --drop percent of calls and gossip messages to the targets are lost
  slow-disk   every fsync of the selected nodes waits --delay (plus up to --jitter)
  disk-full   the selected nodes read their data volume as full: they refuse
              writes (RESOURCE_EXHAUSTED, DISK_LOW) and serve reads

Example: cut dc1 off from dc2 for five minutes:

  meridian fault inject partition --from-dc dc1 --to-dc dc2 --both-ways --ttl 5m`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("ttl") {
				return errors.New("--ttl is required: every fault expires by itself (at most 24h), e.g. --ttl 5m")
			}
			fault := &adminv1.Fault{
				Kind: args[0], FromDcs: fromDCs, FromNodes: fromNodes, ToDcs: toDCs, ToNodes: toNodes, BothWays: bothWays,
				DelayMs: ms(delay), JitterMs: ms(jitter), DropPercent: drop, TtlSeconds: ttl.Seconds(),
			}
			return withAdmin(cmd.Context(), f, func(ctx context.Context, c adminv1.AdminClient) error {
				resp, err := c.InjectFault(ctx, &adminv1.InjectFaultRequest{Fault: fault})
				if err != nil {
					return err
				}
				if f.json {
					if err := printJSON(cmd.OutOrStdout(), resp); err != nil {
						return err
					}
				} else {
					writeInjected(cmd.OutOrStdout(), resp)
				}
				if u := resp.GetUnreachable(); len(u) > 0 {
					// Part of the cluster runs the fault, part does not:
					// not the fault asked for.
					return fmt.Errorf("fault %s is not confirmed on %s (unreachable, or no answer in time): the others apply it; clear it ('meridian fault clear %s') and inject again once they are reachable", resp.GetFault().GetId(), strings.Join(u, ", "), resp.GetFault().GetId())
				}
				return nil
			})
		},
	}
	fl := cmd.Flags()
	fl.StringSliceVar(&fromDCs, "from-dc", nil, "datacenters whose nodes apply the fault (comma-separated or repeated)")
	fl.StringSliceVar(&fromNodes, "from-nodes", nil, "nodes that apply the fault (comma-separated or repeated)")
	fl.StringSliceVar(&toDCs, "to-dc", nil, "datacenters the fault targets")
	fl.StringSliceVar(&toNodes, "to-nodes", nil, "nodes the fault targets")
	fl.BoolVar(&bothWays, "both-ways", false, "the targets apply it toward the selected nodes too")
	fl.DurationVar(&delay, "delay", 0, "delay: wait before each call; slow-disk: wait before each fsync (at most 1m)")
	fl.DurationVar(&jitter, "jitter", 0, "a random extra wait of up to this much (at most 1m)")
	fl.Float64Var(&drop, "drop", 0, "drop: percentage of calls and gossip messages lost (0-100)")
	fl.DurationVar(&ttl, "ttl", 0, "how long the fault lasts; required, at most 24h")
	return cmd
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// describeFault says in a line what a fault does.
func describeFault(f *adminv1.Fault) string {
	sel := func(nodes, dcs []string, none string) string {
		var parts []string
		for _, dc := range dcs {
			parts = append(parts, "dc "+dc)
		}
		parts = append(parts, nodes...)
		if len(parts) == 0 {
			return none
		}
		return strings.Join(parts, ",")
	}
	from := sel(f.FromNodes, f.FromDcs, "every node")
	var what string
	switch f.Kind {
	case "slow-disk":
		return fmt.Sprintf("slow-disk on %s: fsync +%s", from, delayText(f))
	case "delay":
		what = "delay " + delayText(f)
	case "drop":
		what = fmt.Sprintf("drop %g%%", f.DropPercent)
	default:
		what = f.Kind
	}
	arrow := "->"
	if f.BothWays {
		arrow = "<->"
	}
	return fmt.Sprintf("%s %s %s %s", what, from, arrow, sel(f.ToNodes, f.ToDcs, "every other node"))
}

func delayText(f *adminv1.Fault) string {
	s := time.Duration(f.DelayMs * float64(time.Millisecond)).String()
	if f.JitterMs > 0 {
		s += "±" + time.Duration(f.JitterMs*float64(time.Millisecond)).String()
	}
	return s
}

func writeInjected(w io.Writer, resp *adminv1.InjectFaultResponse) {
	f := resp.Fault
	ttl := time.Duration(f.TtlSeconds * float64(time.Second))
	fmt.Fprintf(w, "injected fault %s: %s, for %s\n", f.Id, describeFault(f), ttl)
	if len(resp.Applied) == 0 {
		fmt.Fprintln(w, "no node is selected: nothing applies it")
	} else {
		fmt.Fprintf(w, "applied by %s; each removes it by itself when the TTL runs out (or: meridian fault clear %s)\n", strings.Join(resp.Applied, ", "), f.Id)
	}
	if len(resp.Unreachable) > 0 {
		fmt.Fprintf(w, "not confirmed on %s: unreachable, or no answer in time (one that got it late applies it until its TTL)\n", strings.Join(resp.Unreachable, ", "))
	}
}

func newFaultListCmd(f *adminFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the live faults of every node",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd.Context(), f, func(ctx context.Context, c adminv1.AdminClient) error {
				resp, err := c.ListFaults(ctx, &adminv1.ListFaultsRequest{})
				if err != nil {
					return err
				}
				if f.json {
					return printJSON(cmd.OutOrStdout(), resp)
				}
				return writeFaults(cmd.OutOrStdout(), resp)
			})
		},
	}
}

func writeFaults(w io.Writer, resp *adminv1.ListFaultsResponse) error {
	n := 0
	for _, nf := range resp.Nodes {
		n += len(nf.Faults)
	}
	if n == 0 {
		fmt.Fprintf(w, "no faults on any of %d node(s)\n", len(resp.Nodes))
	} else {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tID\tKIND\tEXPIRES IN\tFAULT")
		for _, nf := range resp.Nodes {
			for _, f := range nf.Faults {
				left := time.Duration(f.ExpiresInSeconds * float64(time.Second)).Round(time.Second)
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", nf.Node, f.Id, f.Kind, left, describeFault(f))
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	for _, nf := range resp.Nodes {
		if nf.Error != "" {
			fmt.Fprintf(w, "%s: faults unknown: %s\n", nf.Node, nf.Error)
		}
	}
	return nil
}

func newFaultClearCmd(f *adminFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "clear [ID]",
		Short: "Remove one fault (by ID) or every fault, on every node",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := ""
			if len(args) == 1 {
				id = args[0]
			}
			return withAdmin(cmd.Context(), f, func(ctx context.Context, c adminv1.AdminClient) error {
				resp, err := c.ClearFaults(ctx, &adminv1.ClearFaultsRequest{Id: id})
				if err != nil {
					return err
				}
				if f.json {
					if err := printJSON(cmd.OutOrStdout(), resp); err != nil {
						return err
					}
				} else {
					out := cmd.OutOrStdout()
					fmt.Fprintf(out, "cleared %d fault(s) over every node\n", resp.Cleared)
					if len(resp.Unreachable) > 0 {
						fmt.Fprintf(out, "%s unreachable: their faults stay until their TTL runs out\n", strings.Join(resp.Unreachable, ", "))
					}
					for _, why := range resp.GetFailed() {
						fmt.Fprintf(out, "not cleared on %s: its faults stay until their TTL runs out\n", why)
					}
				}
				if n := len(resp.GetFailed()) + len(resp.GetUnreachable()); n > 0 {
					return fmt.Errorf("faults not cleared on %d node(s): fix what they answered (or reach them: --addr a node that can) and run 'meridian fault clear' again, or wait for the faults' TTL ('meridian fault list')", n)
				}
				return nil
			})
		},
	}
}
