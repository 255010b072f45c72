package main

import (
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/ops"
)

// TestSnapshotCommands: create on every node, list (text and JSON),
// refusals with what to do, restore of a stopped node, delete.
func TestSnapshotCommands(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	l, err := node.StartLocal(ctx, node.LocalSpec{Dir: dir, NodesPerDC: 2, GossipProfile: "test", Insecure: true,
		Options: node.Options{Register: ops.Register}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addr := l.Nodes()[0].Addr()
	run := cliRunner(ctx)

	out, err := run("snapshot", "list", "--addr", addr)
	if err != nil || !strings.Contains(out, "no snapshots") {
		t.Fatalf("list before any: %q %v", out, err)
	}
	out, err = run("snapshot", "create", "nightly", "--addr", addr)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"NAME", "nightly  n1", "nightly  n2", filepath.Join(dir, "n2", "snapshots", "nightly")} {
		if !strings.Contains(out, want) {
			t.Fatalf("create output lacks %q:\n%s", want, out)
		}
	}
	if _, err := run("snapshot", "create", "nightly", "--addr", addr); err == nil || !strings.Contains(err.Error(), "2 node(s) did not report a snapshot taken") {
		t.Fatalf("create under a name taken: %v", err)
	}
	if _, err := run("snapshot", "create", "a/b", "--addr", addr); err == nil || !strings.Contains(err.Error(), "use 1 to 64 letters") {
		t.Fatalf("create with a bad name: %v", err)
	}
	// One node alone, relayed through n1 (a node that missed a snapshot
	// takes its part later): only n2 has it.
	out, err = run("snapshot", "create", "catchup", "--node", "n2", "--addr", addr)
	if err != nil || !strings.Contains(out, "catchup  n2") || strings.Contains(out, "catchup  n1") {
		t.Fatalf("create --node n2: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "n1", "snapshots", "catchup")); !os.IsNotExist(err) {
		t.Fatalf("create --node n2 made a snapshot on n1 too (%v)", err)
	}
	if _, err := run("snapshot", "create", "catchup", "--node", "n9", "--addr", addr); err == nil || !strings.Contains(err.Error(), "n9 is not a member") {
		t.Fatalf("create --node of a stranger: %v", err)
	}
	if _, err := run("snapshot", "create", "--node", "n2", "--addr", addr); err == nil || !strings.Contains(err.Error(), "--node needs the NAME") {
		t.Fatalf("create --node without a name: %v", err)
	}
	if _, err := run("snapshot", "delete", "catchup", "--addr", addr); err != nil {
		t.Fatal(err)
	}
	out, err = run("snapshot", "list", "--json", "--addr", addr)
	if err != nil {
		t.Fatal(err)
	}
	var listed struct {
		Snapshots []struct{ Node, Name, Bytes string }
	}
	if err := json.Unmarshal([]byte(out), &listed); err != nil || len(listed.Snapshots) != 2 || listed.Snapshots[0].Name != "nightly" {
		t.Fatalf("list --json: %v\n%s", err, out)
	}

	// Download: every node's copy through n1 (n2's relayed), checked and
	// identical to the node's snapshot; not over an existing copy; a
	// missing snapshot named.
	backup := filepath.Join(t.TempDir(), "backup")
	out, err = run("snapshot", "download", "nightly", "--to", backup, "--addr", addr)
	if err != nil || !strings.Contains(out, "n1 ") || !strings.Contains(out, "n2 ") || !strings.Contains(out, "restore --from") {
		t.Fatalf("download: %v\n%s", err, out)
	}
	for _, id := range []string{"n1", "n2"} {
		sameTree(t, filepath.Join(dir, id, "snapshots", "nightly"), filepath.Join(backup, id))
	}
	if _, err := run("snapshot", "download", "nightly", "--to", backup, "--addr", addr); err == nil || !strings.Contains(err.Error(), "2 of 2 node(s) not copied") {
		t.Fatalf("download over a copy: %v", err)
	}
	if out, err := run("snapshot", "download", "weekly", "--to", filepath.Join(t.TempDir(), "b2"), "--node", "n2", "--addr", addr); err == nil || !strings.Contains(out, `n2 has no snapshot "weekly"`) {
		t.Fatalf("download of a missing snapshot: %v\n%s", err, out)
	}
	if _, err := run("snapshot", "download", "nightly", "--addr", addr); err == nil || !strings.Contains(err.Error(), "--to is required") {
		t.Fatalf("download without --to: %v", err)
	}

	// Restore refuses a running node, then restores a stopped one.
	n2dir := filepath.Join(dir, "n2")
	if _, err := run("snapshot", "restore", "nightly"); err == nil || !strings.Contains(err.Error(), "--data-dir is required") {
		t.Fatalf("restore without --data-dir: %v", err)
	}
	if _, err := run("snapshot", "restore", "nightly", "--data-dir", n2dir); err == nil || !strings.Contains(err.Error(), "stop the node first") {
		t.Fatalf("restore of a running node: %v", err)
	}
	if _, err := run("snapshot", "restore", "weekly", "--data-dir", n2dir); err == nil || !strings.Contains(err.Error(), `no snapshot "weekly"`) {
		t.Fatalf("restore of a missing snapshot: %v", err)
	}
	if _, err := run("snapshot", "restore", "nightly", "--from", filepath.Join(n2dir, "snapshots", "nightly"), "--data-dir", n2dir); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Fatalf("restore with a name and --from: %v", err)
	}
	if _, err := run("snapshot", "restore", "--data-dir", n2dir); err == nil || !strings.Contains(err.Error(), "which snapshot?") {
		t.Fatalf("restore with neither a name nor --from: %v", err)
	}
	// A copy of the snapshot, restored into a data directory of a new
	// machine (empty): nothing replaced, the node ID recorded.
	newDir := filepath.Join(t.TempDir(), "n2-new")
	out, err = run("snapshot", "restore", "--from", filepath.Join(n2dir, "snapshots", "nightly"), "--data-dir", newDir)
	if err != nil || !strings.Contains(out, "restored node n2's data from snapshot nightly") || strings.Contains(out, "replaced") || !strings.Contains(out, "--id n2") || !strings.Contains(out, "member of a new cluster") {
		t.Fatalf("restore --from into a new data directory: %v\n%s", err, out)
	}
	if id, err := os.ReadFile(filepath.Join(newDir, "NODE_ID")); err != nil || strings.TrimSpace(string(id)) != "n2" {
		t.Fatalf("node ID of the new data directory: %q %v", id, err)
	}
	if err := l.Stop("n2"); err != nil {
		t.Fatal(err)
	}
	out, err = run("snapshot", "restore", "nightly", "--data-dir", n2dir)
	if err != nil || !strings.Contains(out, "restored node n2's data from snapshot nightly") || !strings.Contains(out, "data.replaced-") {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	if _, err := l.Restart(ctx, "n2"); err != nil {
		t.Fatalf("start after the restore: %v", err)
	}
	// Once n1 reaches the restarted n2 again, both list the snapshot (the
	// restore copied it in, it did not use it up).
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out, err = run("snapshot", "list", "--addr", addr)
		if err == nil && strings.Contains(out, "nightly  n2") && !strings.Contains(out, "unreachable") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("n2 not listed after its restart: %v\n%s", err, out)
		}
	}

	out, err = run("snapshot", "delete", "nightly", "--addr", addr)
	if err != nil || !strings.Contains(out, "deleted nightly on 2 node(s)") {
		t.Fatalf("delete: %v\n%s", err, out)
	}
	if _, err := run("snapshot", "delete", "nightly", "--addr", addr); err == nil || !strings.Contains(err.Error(), `no node has a snapshot "nightly"`) {
		t.Fatalf("delete again: %v", err)
	}
}

// sameTree fails unless dirs a and b hold the same files with the same
// bytes.
func sameTree(t *testing.T, a, b string) {
	t.Helper()
	files := func(root string) map[string]string {
		out := map[string]string{}
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			raw, err := os.ReadFile(path)
			rel, _ := filepath.Rel(root, path)
			out[rel] = string(raw)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	fa, fb := files(a), files(b)
	if len(fa) == 0 || len(fa) != len(fb) {
		t.Fatalf("%s has %d files, %s %d", a, len(fa), b, len(fb))
	}
	for name, content := range fa {
		if fb[name] != content {
			t.Fatalf("%s differs between %s and %s", name, a, b)
		}
	}
}

// TestRestoreErrorsNameTheSnapshots: restore runs with the node stopped,
// so its errors list the snapshots in --data-dir's snapshots directory
// (or say there are none) instead of sending the user to 'snapshot list',
// which needs a running node.
func TestRestoreErrorsNameTheSnapshots(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	run := cliRunner(ctx)
	dataDir := t.TempDir()

	for _, args := range [][]string{{"restore", "weekly"}, {"restore"}} {
		_, err := run(append(append([]string{"snapshot"}, args...), "--data-dir", dataDir)...)
		if err == nil || !strings.Contains(err.Error(), "no snapshots in "+filepath.Join(dataDir, "snapshots")) || strings.Contains(err.Error(), "snapshot list") {
			t.Fatalf("%v with no snapshots: %v", args, err)
		}
	}

	created := time.Now().Add(-time.Hour)
	for _, name := range []string{"nightly", "before-upgrade"} {
		dir := filepath.Join(dataDir, "snapshots", name)
		if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
			t.Fatal(err)
		}
		raw, err := json.Marshal(node.SnapshotInfo{Node: "n1", Name: name, Created: created})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "SNAPSHOT.json"), raw, 0o644); err != nil {
			t.Fatal(err)
		}
		created = created.Add(time.Minute)
	}
	for _, args := range [][]string{{"restore", "weekly"}, {"restore"}} {
		_, err := run(append(append([]string{"snapshot"}, args...), "--data-dir", dataDir)...)
		if err == nil || !strings.Contains(err.Error(), "nightly, before-upgrade") || !strings.Contains(err.Error(), "--from SNAPSHOT_DIR") || strings.Contains(err.Error(), "snapshot list") {
			t.Fatalf("%v with snapshots nightly and before-upgrade: %v", args, err)
		}
	}
}

// TestRestoreShowsProgress: 'snapshot restore --from' reports its copy on
// standard error, at most every 2s, and a last line with the totals.
func TestRestoreShowsProgress(t *testing.T) {
	// The printer, on a clock the test moves.
	var buf strings.Builder
	clock := time.Unix(1000, 0)
	report := copyProgress(&buf, 2*time.Second, func() time.Time { return clock })
	p := node.CopyProgress{TotalFiles: 3, TotalBytes: 3 << 20}
	for i := 1; i <= 3; i++ {
		clock = clock.Add(time.Second)
		p.Files, p.Bytes = i, int64(i)<<20
		report(p)
	}
	p.Done, p.Linked = true, 1
	report(p)
	if want := "restore: 2.0MiB of 3.0MiB (2 of 3 files)\nrestore: 3.0MiB in 3 files in place (1 hard-linked, 2 copied)\n"; buf.String() != want {
		t.Fatalf("progress printed:\n%s\nwant:\n%s", buf.String(), want)
	}

	// The command, on a snapshot directory copied from elsewhere.
	snap := filepath.Join(t.TempDir(), "nightly")
	if err := os.MkdirAll(filepath.Join(snap, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(snap, "data", "MANIFEST-000001"), []byte(strings.Repeat("m", 1500)), 0o644); err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(node.SnapshotInfo{Node: "n1", Name: "nightly", Created: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(snap, "SNAPSHOT.json"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	root := newRoot()
	var stdout, stderr strings.Builder
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	root.SetArgs([]string{"snapshot", "restore", "--from", snap, "--data-dir", filepath.Join(t.TempDir(), "n1")})
	if err := root.ExecuteContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	if want := "restore: 1.5KiB in 1 file in place (0 hard-linked, 1 copied)\n"; stderr.String() != want || !strings.Contains(stdout.String(), "restored node n1's data") {
		t.Fatalf("restore printed %q on stderr (want %q), and on stdout:\n%s", stderr.String(), want, stdout.String())
	}
}
