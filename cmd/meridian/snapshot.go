package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/status"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/ops"
)

func newSnapshotCmd() *cobra.Command {
	var f adminFlags
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Take, list, delete and restore snapshots of the nodes' data (backups)",
		Long: `A snapshot is a copy of a node's data as it was at one moment, kept on the
node in <data-dir>/snapshots/<name>: a Pebble checkpoint, so it costs
little space until compactions replace the tables it shares with the live
data. "create" snapshots every node under one name; "download" copies
them off the machines for a backup (every node's through the one at
--addr, each file checked). "restore" runs on a stopped
node's machine and puts a snapshot in place of its data: one under its
<data-dir>/snapshots/ by NAME, or a copied one with --from, on the same
machine or on a new one (a whole cluster onto new machines: see
'meridian snapshot restore --help' and 'meridian drill restore').

Restoring every node from snapshots taken together brings the cluster back
to that moment. Restoring one node brings back its data as it was; the
other replicas then repair what it missed (anti-entropy), as long as the
snapshot is younger than tombstone-grace (older, deleted keys could come
back: restore refuses it without --force). A restored node starts under a
new incarnation, so the versions it writes never collide with the ones it
wrote after the snapshot. Admin role only.`,
	}
	f.bind(cmd)
	cmd.AddCommand(newSnapshotCreateCmd(&f), newSnapshotListCmd(&f), newSnapshotDeleteCmd(&f), newSnapshotDownloadCmd(&f), newSnapshotRestoreCmd())
	return cmd
}

func newSnapshotCreateCmd(f *adminFlags) *cobra.Command {
	var only string
	cmd := &cobra.Command{
		Use:   "create [NAME] [--node ID]",
		Short: "Snapshot every node's data under NAME (default: the time)",
		Long: `Snapshot every node's data under NAME (default: the time), each node in
its data directory. A node that was down or refused takes its part later
under the same name with --node (relayed through the node at --addr; the
others are left as they are):

  meridian snapshot create nightly
  meridian snapshot create nightly --node n3`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			if only != "" && name == "" {
				return errors.New("--node needs the NAME of the snapshot the node missed (see 'meridian snapshot list')")
			}
			hint := "some nodes may have finished their snapshot: check 'meridian snapshot list' first"
			return f.call(cmd.Context(), f.timeoutFor(cmd, snapshotTimeout), hint, func(ctx context.Context, c adminv1.AdminClient) error {
				resp, err := c.CreateSnapshot(ctx, &adminv1.CreateSnapshotRequest{Name: name, Node: only})
				if err != nil {
					return err
				}
				if f.json {
					if err := printJSON(cmd.OutOrStdout(), resp); err != nil {
						return err
					}
				} else {
					writeSnapshots(cmd.OutOrStdout(), resp.GetSnapshots())
					for _, id := range resp.GetUnreachable() {
						fmt.Fprintf(cmd.OutOrStdout(), "%s: unreachable, no snapshot taken: once it is up, run 'meridian snapshot create %s --node %s'\n", id, snapshotNameOf(resp, name), id)
					}
					for _, why := range resp.GetFailed() {
						fmt.Fprintf(cmd.OutOrStdout(), "failed: %s\n", why)
					}
				}
				if n := len(resp.GetUnreachable()) + len(resp.GetFailed()); n > 0 {
					return fmt.Errorf("%d node(s) did not report a snapshot taken (see each above: a refusal, unreachable, or no answer in time)", n)
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&only, "node", "", "snapshot only this member (one that missed NAME), relayed through --addr")
	return cmd
}

// snapshotNameOf is the name a create used: the one given, else the one
// the nodes chose (the time), as the snapshots taken say.
func snapshotNameOf(resp *adminv1.CreateSnapshotResponse, given string) string {
	if given != "" {
		return given
	}
	for _, s := range resp.GetSnapshots() {
		return s.GetName()
	}
	return "NAME"
}

func newSnapshotListCmd(f *adminFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List every node's snapshots",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.call(cmd.Context(), f.timeoutFor(cmd, snapshotTimeout), "", func(ctx context.Context, c adminv1.AdminClient) error {
				resp, err := c.ListSnapshots(ctx, &adminv1.ListSnapshotsRequest{})
				if err != nil {
					return err
				}
				if f.json {
					return printJSON(cmd.OutOrStdout(), resp)
				}
				if len(resp.GetSnapshots()) == 0 {
					fmt.Fprintln(cmd.OutOrStdout(), "no snapshots (meridian snapshot create takes one)")
				} else {
					writeSnapshots(cmd.OutOrStdout(), resp.GetSnapshots())
				}
				for _, id := range resp.GetUnreachable() {
					fmt.Fprintf(cmd.OutOrStdout(), "%s: unreachable, its snapshots are not listed\n", id)
				}
				for _, f := range resp.GetFailed() {
					fmt.Fprintf(cmd.OutOrStdout(), "%s (its snapshots are not listed)\n", f)
				}
				return nil
			})
		},
	}
}

func newSnapshotDeleteCmd(f *adminFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete snapshot NAME on every node that has it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			hint := "some nodes may have deleted their copy: check 'meridian snapshot list' first"
			return f.call(cmd.Context(), f.timeoutFor(cmd, snapshotTimeout), hint, func(ctx context.Context, c adminv1.AdminClient) error {
				resp, err := c.DeleteSnapshot(ctx, &adminv1.DeleteSnapshotRequest{Name: args[0]})
				if err != nil {
					return err
				}
				if f.json {
					if err := printJSON(cmd.OutOrStdout(), resp); err != nil {
						return err
					}
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "deleted %s on %d node(s): %v\n", args[0], len(resp.GetDeleted()), resp.GetDeleted())
					for _, id := range resp.GetUnreachable() {
						fmt.Fprintf(cmd.OutOrStdout(), "%s: unreachable, its copy (if any) is still there: delete again once it is up\n", id)
					}
					for _, why := range resp.GetFailed() {
						fmt.Fprintf(cmd.OutOrStdout(), "failed: %s\n", why)
					}
				}
				// A rotation script must not take the snapshot for gone.
				if n := len(resp.GetUnreachable()); n > 0 {
					return fmt.Errorf("%d node(s) unreachable (%s): their copies of %s may remain; run delete again once they are up", n, strings.Join(resp.GetUnreachable(), ", "), args[0])
				}
				if n := len(resp.GetFailed()); n > 0 {
					return fmt.Errorf("%d node(s) failed to delete %s (%s): fix what each says and run delete again", n, args[0], strings.Join(resp.GetFailed(), "; "))
				}
				return nil
			})
		},
	}
}

func newSnapshotRestoreCmd() *cobra.Command {
	var (
		dataDir string
		from    string
		grace   time.Duration
		force   bool
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use:   "restore NAME --data-dir DIR | restore --from SNAPSHOT_DIR --data-dir DIR",
		Short: "Put a snapshot in place of a stopped node's data (run on the node's machine)",
		Long: `Put snapshot NAME (from DIR/snapshots) in place of the data of the node whose
--data-dir is DIR. The node must be stopped. Its current data is moved to
DIR/data.replaced-<time>, not deleted: remove it once the node runs as you
want. Then start the node; it takes a new incarnation. The files are
hard-linked where the snapshot is on the data directory's filesystem and
copied otherwise (from a backup volume: it can take a while); progress
goes to standard error.

Data that holds hints for other nodes (writes they missed, for some the
only copy) is refused without --force: start the node and let them be
delivered ('meridian hints'), then stop it and restore.

A snapshot older than the node's tombstone-grace (recorded in the snapshot;
24h for snapshots taken before it was; --tombstone-grace overrides it) is
refused without --force: the other replicas may have collected the
tombstones of keys deleted since, and this node alone would bring those
keys back. Restoring every node from snapshots of the same name is safe:
pass --force on each.

Restoring a whole cluster onto new machines: copy each node's snapshot
directory (<data-dir>/snapshots/NAME, whole) to the machine that takes
that node's place, restore it there with --from into an empty --data-dir,
then start every node with the same node ID and DC as before and an
--initial-cluster that lists them at their new addresses (as for a new
cluster). The first node to lead initializes the new cluster from the
restored metadata: the same ring, members and keyspaces, a new cluster
ID. Restore every node of the old cluster so before its first start: a
node holding restored data refuses a cluster initialized without it (and
one whose data is of another cluster), and says so.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dataDir == "" {
				return errors.New("--data-dir is required: the stopped node's data directory")
			}
			switch {
			case len(args) == 1 && from != "":
				return errors.New("name the snapshot (NAME, from --data-dir's snapshots) or give --from SNAPSHOT_DIR, not both")
			case len(args) == 0 && from == "":
				return fmt.Errorf("which snapshot? name it: %s", node.SnapshotsHint(dataDir))
			}
			if grace < 0 {
				grace = time.Duration(math.MaxInt64) // tombstones never collected
			}
			var (
				res node.RestoreResult
				err error
			)
			progress := node.WithCopyProgress(copyProgress(cmd.ErrOrStderr(), 2*time.Second, time.Now))
			interrupt := node.WithContext(cmd.Context()) // Ctrl-C stops it, replacing nothing
			if from != "" {
				res, err = node.RestoreSnapshotFrom(dataDir, from, time.Now(), grace, force, progress, interrupt)
			} else {
				res, err = node.RestoreSnapshot(dataDir, args[0], time.Now(), grace, force, progress, interrupt)
			}
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "restored node %s's data from snapshot %s (taken %s, epoch %d).\n",
				res.Snapshot.Node, res.Snapshot.Name, res.Snapshot.Created.Format(time.RFC3339), res.Snapshot.Epoch)
			if res.Replaced != "" {
				fmt.Fprintf(out, "The data it replaced is in %s: delete it once the node runs as you want.\n", res.Replaced)
			}
			if res.NewCluster {
				fmt.Fprintf(out, "This node has no metadata log: it starts as a member of a new cluster initialized from the restored metadata (of cluster %s, epoch %d).\n"+
					"Restore every other node of that cluster the same way, from snapshots taken together (the same name), then start them all with\n"+
					"--id %s and an --initial-cluster that lists every node at its new address, each in its old DC. See 'meridian snapshot restore --help'.\n",
					orUnknown(res.Snapshot.ClusterID), res.Snapshot.Epoch, res.Snapshot.Node)
				return nil
			}
			fmt.Fprintf(out, "Start the node now (--id %s); it takes a new incarnation, and anti-entropy brings it what the other replicas wrote since.\n", res.Snapshot.Node)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&dataDir, "data-dir", "", "the stopped node's data directory (created if it does not exist)")
	fl.StringVar(&from, "from", "", "a snapshot directory copied from the node's old machine (holds SNAPSHOT.json and data/)")
	fl.DurationVar(&grace, "tombstone-grace", 0, "the node's tombstone-grace: older snapshots need --force (default: the one the snapshot recorded, else 24h; negative: tombstones are never collected)")
	fl.BoolVar(&force, "force", false, "restore a snapshot older than --tombstone-grace, or over data holding hints for other nodes (every node from the same snapshot)")
	fl.BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

// copyProgress prints a restore's copy progress to w, as 'snapshot
// download' does: at most once per every, then a last line with the
// totals.
func copyProgress(w io.Writer, every time.Duration, now func() time.Time) func(node.CopyProgress) {
	last := now()
	return func(p node.CopyProgress) {
		if p.Done {
			fmt.Fprintf(w, "restore: %s in %s in place (%d hard-linked, %d copied)\n", formatBytes(uint64(p.Bytes)), plural(p.Files, "file"), p.Linked, p.Files-p.Linked)
			return
		}
		if t := now(); t.Sub(last) >= every {
			last = t
			fmt.Fprintf(w, "restore: %s of %s (%d of %d files)\n", formatBytes(uint64(p.Bytes)), formatBytes(uint64(p.TotalBytes)), p.Files, p.TotalFiles)
		}
	}
}

// writeSnapshots prints snapshots as a table.
func writeSnapshots(w io.Writer, ss []*adminv1.Snapshot) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tNODE\tTAKEN\tEPOCH\tSIZE\tDIR")
	for _, s := range ss {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", s.GetName(), s.GetNode(),
			time.UnixMilli(s.GetCreatedUnixMs()).UTC().Format(time.RFC3339), s.GetEpoch(), formatBytes(uint64(s.GetBytes())), s.GetDir())
	}
	tw.Flush()
}
func newSnapshotDownloadCmd(f *adminFlags) *cobra.Command {
	var (
		to    string
		nodes []string
	)
	cmd := &cobra.Command{
		Use:   "download NAME --to DIR",
		Short: "Copy every node's snapshot NAME into DIR/<node>, over the admin API (a backup off the machines)",
		Long: `Copy snapshot NAME of every member (or of --node ones) into DIR/<node> on
this machine, over the admin API of the node at --addr (it relays the
other nodes' files, so reaching one node is enough). Every file is checked
against its size and SHA-256 as the node read it; a node's copy is
written under DIR/.<node>.partial and renamed when whole. Each DIR/<node>
is a snapshot directory: 'meridian snapshot restore --from DIR/<node>'
restores it, on the node's machine or on a new one. Admin role only.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if to == "" {
				return errors.New("--to is required: the directory to copy the snapshots into (one DIR/<node> each)")
			}
			name := args[0]
			if err := node.CheckSnapshotName(name); err != nil {
				return errors.New(status.Convert(err).Message())
			}
			dctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
			conn, err := dialAdmin(dctx, f.addr, f.sec)
			cancel()
			if err != nil {
				return err
			}
			defer conn.Close()
			c := adminv1.NewAdminClient(conn)
			if len(nodes) == 0 {
				sctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
				st, err := c.Status(sctx, &adminv1.StatusRequest{})
				cancel()
				if err != nil {
					return err
				}
				for _, n := range st.GetNodes() {
					if n.GetMemberState() != "removed" {
						nodes = append(nodes, n.GetId())
					}
				}
			}
			if err := os.MkdirAll(to, 0o700); err != nil {
				return err
			}
			var (
				got    []downloadedSnapshot
				failed []string
			)
			for _, id := range nodes {
				d, err := downloadSnapshot(cmd.Context(), c, name, id, to, cmd.ErrOrStderr())
				if err != nil {
					failed = append(failed, fmt.Sprintf("%s: %v", id, err))
					continue
				}
				got = append(got, d)
			}
			out := cmd.OutOrStdout()
			if f.json {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(struct {
					Snapshots []downloadedSnapshot `json:"snapshots"`
					Failed    []string             `json:"failed,omitempty"`
				}{got, failed}); err != nil {
					return err
				}
			} else {
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NODE\tFILES\tSIZE\tEPOCH\tDIR")
				for _, d := range got {
					fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%s\n", d.Node, d.Files, formatBytes(uint64(d.Bytes)), d.Epoch, d.Dir)
				}
				tw.Flush()
				for _, why := range failed {
					fmt.Fprintf(out, "failed: %s\n", why)
				}
				if len(got) > 0 {
					fmt.Fprintf(out, "restore one with: meridian snapshot restore --from %s --data-dir DATA_DIR (on its machine, or a new one)\n", filepath.Join(to, got[0].Node))
				}
			}
			if len(failed) > 0 {
				return fmt.Errorf("%d of %d node(s) not copied (see each above)", len(failed), len(nodes))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "directory to copy into (DIR/<node> for each node)")
	cmd.Flags().StringSliceVar(&nodes, "node", nil, "copy only these nodes' snapshots (default: every member)")
	return cmd
}

// downloadedSnapshot is one node's snapshot copied by `snapshot download`.
type downloadedSnapshot struct {
	Node      string `json:"node"`
	Dir       string `json:"dir"`
	Files     int    `json:"files"`
	Bytes     int64  `json:"bytes"`
	Epoch     uint64 `json:"epoch"`
	ClusterID string `json:"cluster_id,omitempty"`
}

// downloadSnapshot copies node id's snapshot name into to/id, printing
// progress to progress.
func downloadSnapshot(ctx context.Context, c adminv1.AdminClient, name, id, to string, progress io.Writer) (downloadedSnapshot, error) {
	final := filepath.Join(to, id)
	if _, err := os.Stat(final); err == nil {
		return downloadedSnapshot{}, fmt.Errorf("%s exists: copy into another --to, or remove it first", final)
	}
	tmp := filepath.Join(to, "."+id+".partial")
	if err := os.RemoveAll(tmp); err != nil {
		return downloadedSnapshot{}, err
	}
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return downloadedSnapshot{}, err
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.ReadSnapshot(ctx, &adminv1.ReadSnapshotRequest{Name: name, Node: id})
	if err != nil {
		return downloadedSnapshot{}, err
	}
	rx := ops.NewSnapshotReceiver(tmp)
	defer rx.Close()
	last := time.Now()
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return downloadedSnapshot{}, err
		}
		if err := rx.Add(chunk); err != nil {
			return downloadedSnapshot{}, err
		}
		if time.Since(last) >= 2*time.Second {
			last = time.Now()
			fmt.Fprintf(progress, "%s: %s of %s (%d of %d files)\n", id, formatBytes(uint64(rx.Bytes)), formatBytes(uint64(rx.TotalBytes)), rx.Files, rx.TotalFiles)
		}
	}
	if err := rx.Finish(); err != nil {
		return downloadedSnapshot{}, err
	}
	info, err := node.ReadSnapshotInfo(tmp)
	if err != nil {
		return downloadedSnapshot{}, fmt.Errorf("the copy is not a snapshot: %w", err)
	}
	if info.Node != id || info.Name != name {
		return downloadedSnapshot{}, fmt.Errorf("the copy is snapshot %q of node %s, not %q of %s", info.Name, info.Node, name, id)
	}
	// Every file it was taken with, as taken: the node sends what its
	// disk holds, which a damaged snapshot there would not be.
	if err := node.VerifySnapshot(tmp); err != nil {
		return downloadedSnapshot{}, fmt.Errorf("the snapshot on %s: %w", id, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return downloadedSnapshot{}, err
	}
	done = true
	if d, err := os.Open(to); err == nil {
		d.Sync()
		d.Close()
	}
	fmt.Fprintf(progress, "%s: %s in %d files, checked\n", id, formatBytes(uint64(rx.Bytes)), rx.Files)
	return downloadedSnapshot{Node: id, Dir: final, Files: rx.Files, Bytes: rx.Bytes, Epoch: info.Epoch, ClusterID: info.ClusterID}, nil
}
