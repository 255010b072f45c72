package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
)

func newRepairCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "repair",
		Short: "Watch and run anti-entropy (Merkle-tree repair between replicas)",
		Long: `Every node compares, for each partition it holds, its Merkle tree with every
other replica's and repairs the keys that differ, continuously (every
partition within --anti-entropy-period). These commands show that work and
start a full exchange now.`,
	}
	var sf adminFlags
	var ks string
	var all bool
	status := &cobra.Command{
		Use:   "status",
		Short: "Per keyspace and partition: time since verified, mismatches, keys and bytes repaired",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd.Context(), &sf, func(ctx context.Context, c adminv1.AdminClient) error {
				resp, err := c.RepairStatus(ctx, &adminv1.RepairStatusRequest{Keyspace: ks})
				if err != nil {
					return err
				}
				if sf.json {
					return printJSON(cmd.OutOrStdout(), resp)
				}
				return printRepairStatus(cmd.OutOrStdout(), resp, all)
			})
		},
	}
	status.Flags().StringVar(&ks, "keyspace", "", "only this keyspace")
	status.Flags().BoolVar(&all, "all", false, "list every partition (default: a summary plus partitions with mismatches or never verified)")
	sf.bind(status)

	var rf adminFlags
	var rks string
	var part int
	var wait bool
	run := &cobra.Command{
		Use:   "run",
		Short: "Start a full Merkle exchange now (with --wait: show progress until done)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd.Context(), &rf, func(ctx context.Context, c adminv1.AdminClient) error {
				if wait {
					// Progress streams until done: no overall deadline.
					ctx = context.WithoutCancel(ctx)
					ctx, cancel := context.WithCancel(ctx)
					defer cancel()
					go func() { <-cmd.Context().Done(); cancel() }()
					return repairRun(ctx, c, rks, part, true, rf.json, cmd.OutOrStdout(), cmd.ErrOrStderr())
				}
				return repairRun(ctx, c, rks, part, false, rf.json, cmd.OutOrStdout(), cmd.ErrOrStderr())
			})
		},
	}
	run.Flags().StringVar(&rks, "keyspace", "", "only this keyspace")
	run.Flags().IntVar(&part, "partition", -1, "only this partition")
	run.Flags().BoolVar(&wait, "wait", false, "wait until every partition was exchanged, showing progress")
	rf.bind(run)
	cmd.AddCommand(status, run)
	return cmd
}

// repairRun starts a repair and, with wait, shows its progress on errOut
// until done. What it prints on out (asJSON: the last progress message,
// as JSON) says how many partitions, and when waiting, what was repaired.
func repairRun(ctx context.Context, c adminv1.AdminClient, ks string, part int, wait, asJSON bool, out, errOut io.Writer) error {
	if part < -1 || part > math.MaxInt32 {
		return fmt.Errorf("--partition %d: give a partition number from 0 (see 'meridian ring'), or leave it out for every partition", part)
	}
	stream, err := c.RepairRun(ctx, &adminv1.RepairRunRequest{Keyspace: ks, Partition: int32(part)})
	if err != nil {
		return err
	}
	var shown time.Time
	for {
		p, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			if !shown.IsZero() {
				fmt.Fprintln(errOut)
			}
			return err
		}
		if !wait {
			if asJSON {
				return printJSON(out, p)
			}
			fmt.Fprintf(out, "repair started: %d partition(s); watch it with 'meridian repair status'\n", p.PartitionsTotal)
			return nil
		}
		if p.Done {
			if !shown.IsZero() {
				fmt.Fprintln(errOut)
			}
			if asJSON {
				return printJSON(out, p)
			}
			fmt.Fprintf(out, "repair done: %d partition(s), %d mismatching key(s), %d key(s) and %d byte(s) repaired\n",
				p.PartitionsTotal, p.Mismatches, p.KeysRepaired, p.BytesRepaired)
			return nil
		}
		if time.Since(shown) >= 250*time.Millisecond {
			shown = time.Now()
			fmt.Fprintf(errOut, "\r%d/%d partitions, %d mismatches, %d keys repaired ", p.PartitionsDone, p.PartitionsTotal, p.Mismatches, p.KeysRepaired)
		}
	}
}

func printRepairStatus(w io.Writer, resp *adminv1.RepairStatusResponse, all bool) error {
	parts := resp.Partitions
	sort.Slice(parts, func(i, j int) bool {
		if parts[i].Keyspace != parts[j].Keyspace {
			return parts[i].Keyspace < parts[j].Keyspace
		}
		return parts[i].Partition < parts[j].Partition
	})
	type sum struct {
		n, never, prio          int
		oldest                  float64
		mismatches, keys, bytes uint64
	}
	sums := map[string]*sum{}
	var order []string
	for _, p := range parts {
		s := sums[p.Keyspace]
		if s == nil {
			s = &sum{}
			sums[p.Keyspace] = s
			order = append(order, p.Keyspace)
		}
		s.n++
		if p.SinceVerifiedSeconds < 0 {
			s.never++
		} else {
			s.oldest = max(s.oldest, p.SinceVerifiedSeconds)
		}
		if p.Priority {
			s.prio++
		}
		s.mismatches += p.Mismatches
		s.keys += p.KeysRepaired
		s.bytes += p.BytesRepaired
	}
	fmt.Fprintf(w, "node %s\n", resp.Node)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEYSPACE\tPARTITIONS\tNEVER VERIFIED\tOLDEST VERIFIED\tPRIORITY\tMISMATCHES\tKEYS REPAIRED\tBYTES REPAIRED")
	for _, ks := range order {
		s := sums[ks]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0fs ago\t%d\t%d\t%d\t%d\n", ks, s.n, s.never, s.oldest, s.prio, s.mismatches, s.keys, s.bytes)
	}
	tw.Flush()
	var shown bool
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, p := range parts {
		if !all && p.Mismatches == 0 && p.SinceVerifiedSeconds >= 0 {
			continue
		}
		if !shown {
			fmt.Fprintln(w)
			fmt.Fprintln(tw, "KEYSPACE\tPARTITION\tVERIFIED\tMISMATCHES\tKEYS REPAIRED\tBYTES REPAIRED\tPRIORITY")
			shown = true
		}
		v := "never"
		if p.SinceVerifiedSeconds >= 0 {
			v = fmt.Sprintf("%.0fs ago", p.SinceVerifiedSeconds)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%d\t%v\n", p.Keyspace, p.Partition, v, p.Mismatches, p.KeysRepaired, p.BytesRepaired, p.Priority)
	}
	return tw.Flush()
}
