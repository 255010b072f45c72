package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
	"github.com/meridiankv/meridian/node"
)

func newHintsCmd() *cobra.Command {
	var f adminFlags
	cmd := &cobra.Command{
		Use:   "hints",
		Short: "Show the hints a node holds for unreachable nodes, per target",
		Long: `Show the hints the node at --addr holds for other nodes: per target the
hints held, their bytes, the oldest one's age, the delivery rate over the
last minute, hints set aside because they did not decode, hints the target
refused in the last delivery pass (kept until it takes them or they
expire; the node's log says why), and whether the target is alive.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd.Context(), &f, func(ctx context.Context, c adminv1.AdminClient) error {
				resp, err := c.Hints(ctx, &adminv1.HintsRequest{})
				if err != nil {
					return err
				}
				if f.json {
					return printJSON(cmd.OutOrStdout(), resp)
				}
				out := cmd.OutOrStdout()
				if len(resp.Targets) == 0 {
					fmt.Fprintf(out, "%s holds no hints (%d dropped since it started)\n", resp.Node, resp.Dropped)
					return nil
				}
				fmt.Fprintf(out, "hints held by %s (%d dropped since it started)\n", resp.Node, resp.Dropped)
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "TARGET\tCOUNT\tBYTES\tOLDEST\tRATE/S\tQUARANTINED\tREFUSED\tALIVE")
				for _, t := range resp.Targets {
					age := time.Duration(t.OldestAgeSeconds * float64(time.Second)).Round(time.Second)
					fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%.1f\t%d\t%d\t%v\n", t.Target, t.Count, formatBytes(t.Bytes), age, t.DeliveryRate, t.Quarantined, t.Refused, t.Alive)
				}
				return tw.Flush()
			})
		},
	}
	f.bind(cmd)
	cmd.AddCommand(newHintsPurgeCmd())
	return cmd
}

func newHintsPurgeCmd() *cobra.Command {
	var (
		f      adminFlags
		target string
		yes    bool
	)
	cmd := &cobra.Command{
		Use:   "purge --target ID --yes",
		Short: "Drop every hint a node holds for one target (writes only hints hold are lost)",
		Long: `Drop every hint the node at --addr holds for one target. Anti-entropy
brings the target what the hints carried from the other replicas, their
partitions first, but a hint can be the only copy of an acknowledged
write: one accepted at ANY, or by fallbacks alone, while every replica
of its key was down. Such writes are lost. Hints for a node that left
the cluster need no purge: they are handed to the partition's replicas.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if target == "" {
				return errors.New("--target is required: the node ID whose hints to drop (see 'meridian hints')")
			}
			if !yes {
				return fmt.Errorf("purging the hints for %s cannot be undone, and a hint may be the only copy of an acknowledged write (one accepted at ANY, or by fallbacks, while every replica of its key was down): run again with --yes to drop them", target)
			}
			return withAdmin(cmd.Context(), &f, func(ctx context.Context, c adminv1.AdminClient) error {
				resp, err := c.PurgeHints(ctx, &adminv1.PurgeHintsRequest{Target: target})
				if err != nil {
					return err
				}
				if f.json {
					return printJSON(cmd.OutOrStdout(), resp)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "purged %d hint(s) for %s\n", resp.Purged, target)
				return nil
			})
		},
	}
	f.bind(cmd)
	cmd.Flags().StringVar(&target, "target", "", "node ID whose hints to drop")
	cmd.Flags().BoolVar(&yes, "yes", false, "confirm: the hints are deleted, with the writes only they hold")
	return cmd
}

// formatBytes is a size in binary units: 512B, 1.5KiB, 12.3MiB, 2.0TiB.
func formatBytes(n uint64) string {
	switch {
	case n >= 1<<40:
		return fmt.Sprintf("%.1fTiB", float64(n)/(1<<40))
	case n >= 1<<30:
		return fmt.Sprintf("%.1fGiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fKiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}

// optDuration is a flag for a duration where unset (nil) and 0 differ.
type optDuration struct{ p **time.Duration }

func (o optDuration) String() string {
	if o.p == nil || *o.p == nil {
		return ""
	}
	return (*o.p).String()
}

func (o optDuration) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration such as 3h or 30m (0 turns hints off): %w", err)
	}
	if d < 0 {
		return fmt.Errorf("%v is negative: want a duration such as 3h (0 turns hints off)", d)
	}
	*o.p = &d
	return nil
}

func (optDuration) Type() string { return "duration" }

// optBytes is a flag for a byte size (256MiB, 1GiB, 1000000) where unset
// (nil) and 0 differ.
type optBytes struct{ p **node.Bytes }

func (o optBytes) String() string {
	if o.p == nil || *o.p == nil {
		return ""
	}
	return strconv.FormatInt(int64(**o.p), 10)
}

func (o optBytes) Set(s string) error {
	n, err := node.ParseBytes(s)
	if err != nil {
		return err
	}
	*o.p = new(node.Bytes(n))
	return nil
}

func (optBytes) Type() string { return "bytes" }

// bytesFlag is a size flag of a Bytes field whose zero means the default.
// String gives what Set takes back ("0" too: resolveConfig sets a given
// flag again from it, after the file).
type bytesFlag struct{ p *node.Bytes }

func (b bytesFlag) String() string {
	if b.p == nil {
		return "0"
	}
	return strconv.FormatInt(int64(*b.p), 10)
}

func (b bytesFlag) Set(s string) error {
	n, err := node.ParseBytes(s)
	if err != nil {
		return err
	}
	*b.p = node.Bytes(n)
	return nil
}

func (bytesFlag) Type() string { return "bytes" }

// optFloatFlag is a number flag where unset (nil: the default) and 0
// differ: --trace-sample-ratio (0 to 1) and --trace-caller-rate (0 or
// more). Values outside [0, max] are refused, naming want.
type optFloatFlag struct {
	p    **float64
	max  float64
	want string
	typ  string
}

func (f optFloatFlag) String() string {
	if f.p == nil || *f.p == nil {
		return ""
	}
	return strconv.FormatFloat(**f.p, 'g', -1, 64)
}

func (f optFloatFlag) Set(s string) error {
	r, err := strconv.ParseFloat(s, 64)
	if err != nil || r < 0 || r > f.max || math.IsNaN(r) {
		return fmt.Errorf("%q: want %s", s, f.want)
	}
	*f.p = &r
	return nil
}

func (f optFloatFlag) Type() string { return f.typ }
