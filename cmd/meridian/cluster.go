package main

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
	"github.com/meridiankv/meridian/placement"
)

// tableCap is how many rows the plan's moves and the transfers tables
// show without --all.
const tableCap = 50

func newClusterCmd() *cobra.Command {
	var f adminFlags
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Change membership: plan the steps, see what moves, commit, follow the transfers",
		Long: `Membership changes go through the cluster metadata log in two stages.

A plan collects steps (add a node started with --join, decommission,
remove, replace, reweight) and shows which partitions would change owner;
nothing moves yet. 'cluster commit' starts it: each moving partition
streams to its new replicas and switches once they caught up.

  meridian cluster plan add n4          # n4 was started with --join
  meridian cluster plan decommission n2
  meridian cluster plan show --sizes    # what moves, and how many bytes
  meridian cluster commit
  meridian cluster status --watch       # until every partition switched`,
	}
	f.bind(cmd)
	cmd.AddCommand(newClusterPlanCmd(&f), newClusterCommitCmd(&f), newClusterAbortCmd(&f), newClusterStatusCmd(&f))
	return cmd
}

func newClusterPlanCmd(f *adminFlags) *cobra.Command {
	var all, sizes bool
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Build the pending membership plan step by step (a dry run until 'cluster commit')",
	}
	cmd.PersistentFlags().BoolVar(&all, "all", false, "list every move, not only the first 50")
	// step adds one step to the plan and prints the plan.
	step := func(use, short string, args cobra.PositionalArgs, op func([]string) (*adminv1.PlanOp, error)) *cobra.Command {
		return &cobra.Command{
			Use:   use,
			Short: short,
			Args:  args,
			RunE: func(cmd *cobra.Command, args []string) error {
				o, err := op(args)
				if err != nil {
					return err
				}
				return withAdmin(cmd.Context(), f, func(ctx context.Context, c adminv1.AdminClient) error {
					resp, err := c.ClusterPlan(ctx, &adminv1.ClusterPlanRequest{Op: o})
					if err != nil {
						return err
					}
					if f.json {
						return printJSON(cmd.OutOrStdout(), resp)
					}
					return writePlan(cmd.OutOrStdout(), resp.GetPlan(), planView{all: all})
				})
			},
		}
	}
	nodeOp := func(op string) func([]string) (*adminv1.PlanOp, error) {
		return func(args []string) (*adminv1.PlanOp, error) {
			return &adminv1.PlanOp{Op: op, Node: args[0]}, nil
		}
	}
	var with string
	replace := step("replace ID --with NEW_ID", "Replace a node with a new one started with --join (it takes over the old node's partitions)", cobra.ExactArgs(1),
		func(args []string) (*adminv1.PlanOp, error) {
			if with == "" {
				return nil, fmt.Errorf("--with is required: the new node (started with --join) that takes over %s's partitions", args[0])
			}
			return &adminv1.PlanOp{Op: "replace", Node: args[0], With: with}, nil
		})
	replace.Flags().StringVar(&with, "with", "", "the new node, started with --join")
	show := &cobra.Command{
		Use:   "show",
		Short: "Show the pending plan: its steps and every partition that changes replicas",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			timeout := f.timeout
			if sizes {
				timeout = f.timeoutFor(cmd, planSizesTimeout)
			}
			return f.call(cmd.Context(), timeout, "", func(ctx context.Context, c adminv1.AdminClient) error {
				resp, err := c.ClusterPlanShow(ctx, &adminv1.ClusterPlanShowRequest{Sizes: sizes})
				if err != nil {
					return err
				}
				if f.json {
					return printJSON(cmd.OutOrStdout(), resp)
				}
				return writePlan(cmd.OutOrStdout(), resp.GetPlan(), planView{all: all, sizes: sizes})
			})
		},
	}
	show.Flags().BoolVar(&sizes, "sizes", false, "ask the current replicas how many bytes each move streams (slower)")
	clearCmd := &cobra.Command{
		Use:   "clear",
		Short: "Drop the pending plan (a committed one keeps going)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd.Context(), f, func(ctx context.Context, c adminv1.AdminClient) error {
				resp, err := c.ClusterPlanClear(ctx, &adminv1.ClusterPlanClearRequest{})
				if err != nil {
					return err
				}
				if f.json {
					return printJSON(cmd.OutOrStdout(), resp)
				}
				fmt.Fprintln(cmd.OutOrStdout(), "cleared the pending plan")
				return nil
			})
		},
	}
	cmd.AddCommand(
		step("add ID", "Add a node started with --join: it takes its share of partitions", cobra.ExactArgs(1), nodeOp("add")),
		step("decommission ID", "Take a live node out: its partitions stream to the others, then it leaves", cobra.ExactArgs(1), nodeOp("decommission")),
		step("remove ID", "Take a dead node out for good: its partitions are rebuilt from the other replicas (a joining node, which owns nothing, just leaves)", cobra.ExactArgs(1), nodeOp("remove")),
		replace,
		step("reweight ID=WEIGHT", "Change a node's capacity weight (its share of partitions in its DC)", cobra.ExactArgs(1),
			func(args []string) (*adminv1.PlanOp, error) {
				id, w, err := parseReweight(args[0])
				if err != nil {
					return nil, err
				}
				return &adminv1.PlanOp{Op: "reweight", Node: id, Weight: w}, nil
			}),
		show,
		clearCmd,
	)
	return cmd
}

// parseReweight parses reweight's argument, "n3=2".
func parseReweight(s string) (string, uint32, error) {
	id, ws, ok := strings.Cut(s, "=")
	id, ws = strings.TrimSpace(id), strings.TrimSpace(ws)
	if !ok || id == "" || ws == "" {
		return "", 0, fmt.Errorf("reweight %q: want ID=WEIGHT, e.g. n3=2", s)
	}
	w, err := strconv.ParseUint(ws, 10, 32)
	if err != nil {
		return "", 0, fmt.Errorf("reweight %q: weight %q is not a whole number from 1 to %d", s, ws, placement.MaxWeight)
	}
	if w == 0 {
		return "", 0, fmt.Errorf("reweight %q: weight 0 is not allowed (to take %s out, use 'meridian cluster plan decommission %s')", s, id, id)
	}
	if w > placement.MaxWeight {
		return "", 0, fmt.Errorf("reweight %q: weight %d is above the largest, %d", s, w, placement.MaxWeight)
	}
	return id, uint32(w), nil
}

func newClusterCommitCmd(f *adminFlags) *cobra.Command {
	var planID string
	cmd := &cobra.Command{
		Use:   "commit [--plan ID]",
		Short: "Start the pending plan: partitions stream to their new replicas and switch one by one",
		Long: `Start the pending plan: partitions stream to their new replicas and
switch one by one. With --plan, the ID 'meridian cluster plan show'
printed, only that plan is committed: if a step was added or taken away
since (by another operator, or a script), nothing is committed; if it
was committed already (a retry after a timeout), nothing changes and the
command succeeds. Without it, whatever plan is pending is committed.

  meridian cluster plan show          # review it: prints its ID
  meridian cluster commit --plan 3fa9c2d1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd.Context(), f, func(ctx context.Context, c adminv1.AdminClient) error {
				req := &adminv1.ClusterCommitRequest{}
				if planID != "" {
					st, err := c.ClusterStatus(ctx, &adminv1.ClusterStatusRequest{})
					if err != nil {
						return err
					}
					if req.Expect, err = reviewedPlan(st, planID); err != nil {
						return err
					}
				}
				resp, err := c.ClusterCommit(ctx, req)
				if err != nil {
					return err
				}
				if f.json {
					return printJSON(cmd.OutOrStdout(), resp)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "committed the plan %s at epoch %d: %s moving; follow progress with `meridian cluster status --watch`\n",
					formatOps(resp.Ops), resp.Epoch, plural(int(resp.PartitionsMoving), "partition"))
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&planID, "plan", "", "commit only the plan with this ID (as 'cluster plan show' prints it)")
	return cmd
}

// planID names a plan by its steps, so that a commit can say which plan
// it means: the first 8 hex digits of the SHA-256 of the steps as the CLI
// writes them.
func planID(ops []*adminv1.PlanOp) string {
	sum := sha256.Sum256([]byte(formatOps(ops)))
	return hex.EncodeToString(sum[:4])
}

// reviewedPlan is what `cluster commit --plan ID` expects: the pending
// plan when it has that ID; the steps of the change in progress when they
// do (that plan was committed already: committing it again changes
// nothing). Any other plan pending is refused before anything is sent.
func reviewedPlan(st *adminv1.ClusterStatusResponse, id string) ([]*adminv1.PlanOp, error) {
	pending := st.GetPending().GetOps()
	switch {
	case len(pending) > 0 && planID(pending) == id:
		return pending, nil
	case len(pending) == 0 && st.InTransition && !st.TransitionAborted && planID(st.TransitionOps) == id:
		return st.TransitionOps, nil
	case len(pending) == 0:
		return nil, fmt.Errorf("no plan is pending, and the change in progress (if any) is not plan %s: it may have been committed and finished already; see 'meridian cluster status'", id)
	}
	return nil, fmt.Errorf("the pending plan is now %s (ID %s), not the plan %s you reviewed: nothing committed; review it with 'meridian cluster plan show'", formatOps(pending), planID(pending), id)
}

func newClusterAbortCmd(f *adminFlags) *cobra.Command {
	var (
		yes        bool
		generation uint64
	)
	cmd := &cobra.Command{
		Use:   "abort",
		Short: "Undo the committed change in progress: switched partitions stream back, the rest stop",
		Long: `Undo the committed change (cluster commit, or keyspace alter) in progress,
for a change that cannot finish: a node receiving partitions is gone for
good, so the change waits for it forever and no other plan can be
committed. Partitions that already switched to their new replicas stream
back to the replicas they had before and switch back as they arrive; the
others stop moving at once. Reads and writes go on throughout, served by
the replicas that hold each partition. Nodes that were leaving stay; a
node that was being added stays joining (owning nothing).

Without --yes it shows what would move back and changes nothing (with
--json: the cluster status it read, transition_generation included). Follow
the undo with 'meridian cluster status --watch'. Once it is done, plan
again: for example 'meridian cluster plan remove ID' for a node that is
gone.

--generation names the change to undo (as the dry run shows it): an abort
sent again for a change already undone then changes nothing. Without it,
--yes undoes the change in progress, unless that is itself an undo:
aborting an undo takes the change up again, so it needs --generation (a
retried abort would otherwise restart the change it undid).

  meridian cluster abort                             # what would happen
  meridian cluster abort --yes --generation 42       # undo change 42
  meridian cluster abort --yes                       # undo whatever change is in progress`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd.Context(), f, func(ctx context.Context, c adminv1.AdminClient) error {
				st, err := c.ClusterStatus(ctx, &adminv1.ClusterStatusRequest{})
				if err != nil {
					return err
				}
				if !st.InTransition {
					return errors.New("no committed change is in progress: nothing to abort (see `meridian cluster status`)")
				}
				what := "the change " + formatOps(st.TransitionOps)
				if len(st.TransitionOps) == 0 {
					what = "the keyspace replication change"
				}
				if st.TransitionAborted {
					what = "the undo of " + what + " (taking the change up again)"
				}
				if !yes {
					if f.json {
						return printJSON(cmd.OutOrStdout(), st)
					}
					fmt.Fprintf(cmd.OutOrStdout(), "would undo %s (generation %d): %d of %d partitions switched and would stream back; %d would stop moving\nrun again with --yes --generation %d to undo it\n",
						what, st.TransitionGeneration, st.PartitionsDone, st.PartitionsMoving, st.PartitionsMoving-st.PartitionsDone, st.TransitionGeneration)
					return nil
				}
				gen, err := abortGeneration(st, generation)
				if err != nil {
					return err
				}
				resp, err := c.ClusterAbort(ctx, &adminv1.ClusterAbortRequest{Generation: gen})
				if err != nil {
					return err
				}
				if f.json {
					return printJSON(cmd.OutOrStdout(), resp)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "undoing %s at epoch %d: %s streaming back; follow progress with `meridian cluster status --watch`\n",
					what, resp.Epoch, plural(int(resp.PartitionsMoving), "partition"))
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "undo the change (without it: only show what would happen)")
	cmd.Flags().Uint64Var(&generation, "generation", 0, "the generation of the change to undo, as the dry run shows it (needed to abort an undo)")
	return cmd
}

// abortGeneration is the generation `cluster abort --yes` sends: the one
// given, else the change in progress, unless that is an undo. Aborting an
// undo takes the change up again, which is what an abort sent twice (a
// retry after a timeout, a command run again from the shell's history)
// would do unasked: that needs the generation named.
func abortGeneration(st *adminv1.ClusterStatusResponse, given uint64) (uint64, error) {
	switch {
	case given != 0:
		return given, nil
	case st.TransitionAborted:
		return 0, fmt.Errorf("the change in progress is the undo of an aborted change (%s, generation %d): aborting it takes the change up again, as an abort sent twice would unasked; if you mean it, run 'meridian cluster abort --yes --generation %d'",
			formatOps(st.TransitionOps), st.TransitionGeneration, st.TransitionGeneration)
	}
	return st.TransitionGeneration, nil
}

func newClusterStatusCmd(f *adminFlags) *cobra.Command {
	var (
		watch    bool
		all      bool
		interval time.Duration
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show members, the metadata log, a pending plan and the transition in progress with its transfers",
		Long: `Show the cluster as its metadata log has it: cluster ID, epoch, leader,
the members (gossip state and the epoch each has applied), a pending plan,
and, while a committed plan is in progress, how many partitions switched
and every transfer not yet done.

With --watch the view is redrawn every --interval until the transition
ends (exit status 0), or until Ctrl-C. With no transition in progress it
prints once. With --watch --json, standard output carries one JSON object
per line, one per poll; the other messages go to standard error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if watch && interval <= 0 {
				return fmt.Errorf("--interval %v: want a positive duration, e.g. 2s", interval)
			}
			out := cmd.OutOrStdout()
			render := func(resp *adminv1.ClusterStatusResponse) error {
				if f.json {
					return printJSON(out, resp)
				}
				return writeClusterStatus(out, resp, all)
			}
			fetch := func(ctx context.Context) (*adminv1.ClusterStatusResponse, error) {
				var resp *adminv1.ClusterStatusResponse
				err := withAdmin(ctx, f, func(ctx context.Context, c adminv1.AdminClient) error {
					var err error
					resp, err = c.ClusterStatus(ctx, &adminv1.ClusterStatusRequest{})
					return err
				})
				return resp, err
			}
			if !watch {
				resp, err := fetch(cmd.Context())
				if err != nil {
					return err
				}
				return render(resp)
			}
			w := watcher{out: out, errOut: cmd.ErrOrStderr(), fetch: fetch, render: render, json: f.json, interval: interval, clear: !f.json && isTerminal(out), now: time.Now}
			return w.run(cmd.Context())
		},
	}
	cmd.Flags().BoolVar(&watch, "watch", false, "redraw every --interval until the transition in progress ends")
	cmd.Flags().DurationVar(&interval, "interval", 2*time.Second, "how often --watch redraws")
	cmd.Flags().BoolVar(&all, "all", false, "list every transfer not done, not only the first 50")
	return cmd
}

// watcher redraws the cluster status until the transition in progress
// ends.
type watcher struct {
	out io.Writer
	// errOut takes the messages that are not a status with json (the
	// time of each poll, a failed poll, the end): out carries only JSON.
	errOut io.Writer
	fetch  func(context.Context) (*adminv1.ClusterStatusResponse, error)
	render func(*adminv1.ClusterStatusResponse) error
	// json prints each status as one line of JSON instead of render.
	json     bool
	interval time.Duration
	// clear redraws in place (a terminal) instead of appending.
	clear bool
	now   func() time.Time
}

// run prints the status once when no transition is in progress; otherwise
// it redraws every interval and returns nil once the transition ended. A
// failed poll after the first is shown and retried (the node asked may be
// restarting); the first fails the command. Cancelling ctx (Ctrl-C) stops
// it with an error, as the transition has not finished.
func (w watcher) run(ctx context.Context) error {
	resp, err := w.fetch(ctx)
	if err != nil {
		return err
	}
	render, msgs := w.render, w.out
	if w.json {
		render = func(r *adminv1.ClusterStatusResponse) error { return printJSONLine(w.out, r) }
		msgs = w.errOut
		if msgs == nil {
			msgs = io.Discard
		}
	}
	if !resp.InTransition {
		return render(resp)
	}
	last, watched := resp, resp
	undone := false // a later poll showed the watched change being undone
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for first := true; ; first = false {
		if w.clear {
			fmt.Fprint(w.out, "\x1b[H\x1b[2J")
		} else if !first && !w.json {
			fmt.Fprintln(w.out)
		}
		fmt.Fprintf(msgs, "%s, every %v (Ctrl-C stops)\n", w.now().Format("15:04:05"), w.interval)
		if err != nil {
			fmt.Fprintf(msgs, "poll failed, retrying: %s\n", describeErr(err))
		} else if err := render(resp); err != nil {
			return err
		}
		if err == nil && resp.InTransition && resp.TransitionAborted != watched.TransitionAborted {
			undone = true
		}
		if err == nil && !resp.InTransition {
			if err := transitionOutcome(watched, resp, undone); err != nil {
				fmt.Fprintf(msgs, "transition ended at epoch %d, but not as it began\n", resp.Epoch)
				return err
			}
			fmt.Fprintf(msgs, "transition finished: the cluster is at epoch %d\n", resp.Epoch)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stopped watching; the transition goes on (%d/%d partitions switched at epoch %d)",
				last.PartitionsDone, last.PartitionsMoving, last.Epoch)
		case <-t.C:
		}
		var next *adminv1.ClusterStatusResponse
		if next, err = w.fetch(ctx); err == nil {
			resp, last = next, next
		} else if ctx.Err() != nil {
			return fmt.Errorf("stopped watching; the transition goes on (%d/%d partitions switched at epoch %d)",
				last.PartitionsDone, last.PartitionsMoving, last.Epoch)
		}
	}
}

// transitionOutcome says whether the change --watch began watching
// (watched, its first poll) ended as it began, from the status after it
// (final): an exit status of 0 means the change happened. undone says a
// poll in between showed it being taken back (`meridian cluster abort`);
// an abort and its undo can also both end between two polls, so the
// members' states are checked against the change's steps too. A change
// that is itself the undo of an aborted one (watched.TransitionAborted)
// has ended as it began when the steps are taken back.
func transitionOutcome(watched, final *adminv1.ClusterStatusResponse, undone bool) error {
	back := watched.TransitionAborted
	if undone {
		return fmt.Errorf("the change watched (generation %d) was %s before it finished: run 'meridian cluster status' to see where the cluster is", watched.TransitionGeneration, map[bool]string{false: "aborted ('meridian cluster abort')", true: "taken up again"}[back])
	}
	state := map[string]string{}
	for _, n := range final.Nodes {
		state[n.Id] = n.MemberState
	}
	gone := func(id string) bool { s, ok := state[id]; return !ok || s == "removed" }
	var off []string
	for _, op := range watched.TransitionOps {
		var ok bool
		switch op.Op {
		case "add":
			ok = (state[op.Node] == "active") != back
		case "decommission", "remove":
			ok = gone(op.Node) != back
		case "replace":
			ok = gone(op.Node) != back && (state[op.With] == "active") != back
		default:
			ok = true // reweight: the weight is the ring's, not a state
		}
		if !ok {
			off = append(off, fmt.Sprintf("%s %s (now %s)", op.Op, op.Node, cmp.Or(state[op.Node], "gone")))
		}
	}
	if len(off) > 0 {
		verb := "did not take effect"
		if back {
			verb = "took effect although its undo was watched"
		}
		return fmt.Errorf("the change %s: %s; it was probably aborted ('meridian cluster abort') or taken up again: run 'meridian cluster status' to see where the cluster is", verb, strings.Join(off, ", "))
	}
	return nil
}

// isTerminal reports whether w is a terminal (where --watch redraws in
// place).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// planView says how much of a plan to print.
type planView struct {
	// all lists every move, not only the first tableCap.
	all bool
	// sizes: the moves carry byte estimates.
	sizes bool
}

// formatOp spells a plan step the way the command that adds it does.
func formatOp(o *adminv1.PlanOp) string {
	switch o.GetOp() {
	case "replace":
		return fmt.Sprintf("replace %s --with %s", o.GetNode(), o.GetWith())
	case "reweight":
		return fmt.Sprintf("reweight %s=%d", o.GetNode(), o.GetWeight())
	}
	return o.GetOp() + " " + o.GetNode()
}

func formatOps(ops []*adminv1.PlanOp) string {
	parts := make([]string, len(ops))
	for i, o := range ops {
		parts[i] = formatOp(o)
	}
	return strings.Join(parts, "; ")
}

// writePlan prints the pending plan: its steps, how many partitions
// change, and a table of the moves.
func writePlan(w io.Writer, p *adminv1.Plan, v planView) error {
	if len(p.GetOps()) == 0 {
		fmt.Fprintf(w, "no pending plan (epoch %d): add steps with `meridian cluster plan add|decommission|remove|replace|reweight`, then `meridian cluster commit`\n", p.GetEpoch())
		return nil
	}
	fmt.Fprintf(w, "pending plan %s against epoch %d:\n", planID(p.GetOps()), p.GetEpoch())
	for i, o := range p.GetOps() {
		fmt.Fprintf(w, "  %d. %s\n", i+1, formatOp(o))
	}
	moves := p.GetMoves()
	total := max(int(p.GetMovesTotal()), len(moves))
	fmt.Fprint(w, changeCount(p.GetPartitionsChanged()))
	if total != int(p.GetPartitionsChanged()) {
		fmt.Fprintf(w, " (%s across keyspaces)", plural(total, "move"))
	}
	fmt.Fprintln(w)
	if len(moves) > 0 {
		shown := moves
		if !v.all && len(shown) > tableCap {
			shown = shown[:tableCap]
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KEYSPACE\tPARTITION\tOLD\tNEW\tBYTES")
		for _, m := range shown {
			b := "-"
			switch {
			case v.sizes && m.GetUnsized():
				b = "?"
			case v.sizes:
				b = formatBytes(m.GetBytes())
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", m.GetKeyspace(), m.GetPartition(), strings.Join(m.GetOld(), ","), strings.Join(m.GetNew(), ","), b)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		switch n := total - len(shown); {
		case n > 0 && len(shown) < len(moves) && len(moves) == total:
			fmt.Fprintf(w, "... and %d more (--all lists every move)\n", n)
		case n > 0 && len(shown) < len(moves):
			fmt.Fprintf(w, "... and %d more (--all lists the first %d)\n", n, len(moves))
		case n > 0:
			fmt.Fprintf(w, "... and %d more (an answer lists the first %d)\n", n, len(moves))
		}
	}
	if unsized := int(p.GetUnsizedMoves()); v.sizes && unsized > 0 {
		fmt.Fprintf(w, "at least %s to stream in total (estimated from one current replica of each partition): %s of %d could not be sized, their source replica did not answer (BYTES ?), and count as 0 in the total; show the sizes again once it is up\n",
			formatBytes(p.GetBytesToMove()), plural(unsized, "move"), total)
	} else if v.sizes {
		fmt.Fprintf(w, "%s to stream in total (estimated from one current replica of each partition)\n", formatBytes(p.GetBytesToMove()))
	} else if len(moves) > 0 {
		fmt.Fprintln(w, "bytes to move: `meridian cluster plan show --sizes`")
	}
	fmt.Fprintf(w, "start it with `meridian cluster commit --plan %s` (this plan only), or drop it with `meridian cluster plan clear`\n", planID(p.GetOps()))
	return nil
}

// transferStates orders transfers by how much they need attention, so a
// capped table shows those first; a state not listed comes before all.
var transferStates = []string{"failed", "streaming", "catching-up", "waiting", "done"}

// writeClusterStatus prints `meridian cluster status`.
func writeClusterStatus(w io.Writer, resp *adminv1.ClusterStatusResponse, all bool) error {
	fmt.Fprintf(w, "cluster %s, epoch %d, leader %s\n", orUnknown(resp.ClusterId), resp.Epoch, orNone(resp.Leader))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tDC\tRACK\tWEIGHT\tMEMBER\tGOSSIP\tEPOCH\tRAFT")
	for _, n := range resp.Nodes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%d\t%s\n", n.Id, n.Dc, n.Rack, n.Weight, orUnknown(n.MemberState), orUnknown(n.State), n.Epoch, raftRole(n))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if p := resp.Pending; len(p.GetOps()) > 0 && p.GetPartitionsChanged() > 0 {
		fmt.Fprintf(w, "pending plan (not committed): %s; %s; see `meridian cluster plan show`\n",
			formatOps(p.GetOps()), changeCount(p.GetPartitionsChanged()))
	} else if len(p.GetOps()) > 0 {
		// No count: the plan changes nothing, or no longer fits (the
		// node sends its steps alone then).
		fmt.Fprintf(w, "pending plan (not committed): %s; see `meridian cluster plan show`, which says whether it still fits\n",
			formatOps(p.GetOps()))
	}
	if !resp.InTransition {
		fmt.Fprintln(w, "no transition in progress")
		return nil
	}
	if resp.TransitionAborted {
		fmt.Fprintf(w, "transition in progress: undoing (aborted) %s\n", formatOps(resp.TransitionOps))
	} else {
		fmt.Fprintf(w, "transition in progress: %s\n", formatOps(resp.TransitionOps))
	}
	fmt.Fprintf(w, "partitions switched %d/%d (%s)\n", resp.PartitionsDone, resp.PartitionsMoving, percent(resp.PartitionsDone, resp.PartitionsMoving))
	var open []*adminv1.Transfer
	states := map[string]int{}
	for _, t := range resp.Transfers {
		states[t.State]++
		if t.State != "done" {
			open = append(open, t)
		}
	}
	sort.SliceStable(open, func(i, j int) bool { return stateRank(open[i].State) < stateRank(open[j].State) })
	fmt.Fprintf(w, "transfers: %s\n", formatStates(states))
	if len(open) > 0 {
		shown := open
		if !all && len(shown) > tableCap {
			shown = shown[:tableCap]
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tKEYSPACE\tPARTITION\tSOURCE\tSTATE\tKEYS\tBYTES\tRATE")
		for _, t := range shown {
			rate := "-"
			if t.BytesPerSecond > 0 {
				rate = formatBytes(uint64(t.BytesPerSecond)) + "/s"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%d\t%s\t%s\n", t.Node, t.Keyspace, t.Partition, orDash(t.Source), t.State, t.Keys, formatBytes(t.Bytes), rate)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if n := len(open) - len(shown); n > 0 {
			fmt.Fprintf(w, "... and %d more (--all lists every transfer)\n", n)
		}
		for _, t := range shown {
			if t.Error != "" {
				fmt.Fprintf(w, "%s %s/%d from %s: %s\n", t.Node, t.Keyspace, t.Partition, t.Source, t.Error)
			}
		}
	}
	if len(resp.Unreachable) > 0 {
		fmt.Fprintf(w, "unreachable (their transfers are not shown): %s\n", strings.Join(resp.Unreachable, ", "))
		if !resp.TransitionAborted {
			fmt.Fprintln(w, "a node receiving partitions that is gone for good holds the change back: undo it with `meridian cluster abort`")
		} else {
			// The undo streams partitions back to the replicas the change
			// displaced: a removed or replaced node that is dead never
			// reports them, and nothing else ends that wait.
			fmt.Fprintf(w, "the undo waits for every node it streams partitions back to: if one of them is gone for good, `meridian cluster abort --yes --generation %d` takes the change up again (a dead node it removes needs nothing from it)\n", resp.TransitionGeneration)
		}
	}
	return nil
}

// orDash fills an empty cell (a waiting transfer has no source yet).
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func stateRank(s string) int {
	return slices.Index(transferStates, s) // -1 for a state not listed
}

// formatStates counts transfers per state in transferStates order: "2
// streaming, 40 waiting, 7 done".
func formatStates(states map[string]int) string {
	if len(states) == 0 {
		return "none reported yet"
	}
	names := make([]string, 0, len(states))
	for s := range states {
		names = append(names, s)
	}
	sort.Slice(names, func(i, j int) bool {
		if ri, rj := stateRank(names[i]), stateRank(names[j]); ri != rj {
			return ri < rj
		}
		return names[i] < names[j]
	})
	parts := make([]string, len(names))
	for i, s := range names {
		parts[i] = fmt.Sprintf("%d %s", states[s], s)
	}
	return strings.Join(parts, ", ")
}

// percent rounds down: 100% only once every partition switched.
func percent(done, total uint32) string {
	if total == 0 {
		return "100%"
	}
	return fmt.Sprintf("%d%%", uint64(done)*100/uint64(total))
}

// changeCount is "1 partition changes", "3 partitions change".
func changeCount(n uint32) string {
	if n == 1 {
		return "1 partition changes"
	}
	return fmt.Sprintf("%d partitions change", n)
}

// plural is "1 partition", "3 partitions".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
