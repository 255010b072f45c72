package node_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/engine/pebble"
	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/replica"
)

// TestRestoreChecksTheSnapshot: a snapshot records its data files (sizes,
// and SHA-256 but for tables) and its node's tombstone-grace. A restore
// refuses a copy with a file cut short or missing before it moves
// anything (Pebble would open a truncated log as a torn tail, its last
// acknowledged writes gone), holds the snapshot's age against the
// recorded grace when none is given, and a start sweeps what interrupted
// snapshots left.
func TestRestoreChecksTheSnapshot(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "n1")
	cfg := soloConfig(t, "n1", "127.0.0.1:0", dir)
	cfg.TombstoneGrace = time.Hour
	window := 30 * time.Minute // under nine tenths of the grace
	cfg.HintWindow = &window
	n, err := node.Start(ctxT(t), cfg, node.Options{})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "agreed metadata", func() bool { return n.Topology().Agreed() })
	c := dial(t, n.Addr())
	for _, k := range []string{"a", "b", "c"} {
		if _, err := c.Put(ctxT(t), &kvv1.PutRequest{Key: []byte(k), Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
	}
	info, err := n.Snapshot("s1")
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if info.TombstoneGrace != time.Hour {
		t.Errorf("the snapshot recorded tombstone-grace %s, want the node's 1h", info.TombstoneGrace)
	}
	var wal string
	for _, f := range info.Files {
		if strings.HasSuffix(f.Path, ".log") && f.SHA256 != "" && f.Size > 0 {
			wal = filepath.Join(dir, "snapshots", "s1", "data", filepath.FromSlash(f.Path))
		}
	}
	if wal == "" {
		t.Fatalf("the snapshot lists no write-ahead log with its SHA-256: %+v", info.Files)
	}
	whole, err := os.ReadFile(wal)
	if err != nil {
		t.Fatal(err)
	}
	replaced := func() bool {
		m, _ := filepath.Glob(filepath.Join(dir, "data.replaced-*"))
		return len(m) > 0
	}
	now := info.Created.Add(time.Minute)
	for _, tc := range []struct {
		name   string
		damage func() error
		want   string
	}{
		{"a log cut short", func() error { return os.WriteFile(wal, whole[:len(whole)/2], 0o644) }, "is damaged"},
		{"a log altered", func() error {
			b := append([]byte(nil), whole...)
			b[len(b)-1] ^= 0xff
			return os.WriteFile(wal, b, 0o644)
		}, "differs from when it was taken"},
		{"a log missing", func() error { return os.Remove(wal) }, "is incomplete"},
	} {
		if err := tc.damage(); err != nil {
			t.Fatal(err)
		}
		_, err := node.RestoreSnapshot(dir, "s1", now, 0, false)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "copy the snapshot directory again") {
			t.Fatalf("%s: restore = %v, want %q", tc.name, err, tc.want)
		}
		if replaced() {
			t.Fatalf("%s: the data was moved aside for a damaged snapshot", tc.name)
		}
	}
	if err := os.WriteFile(wal, whole, 0o644); err != nil {
		t.Fatal(err)
	}
	// Not given a grace, the restore holds the node's own (1h).
	if _, err := node.RestoreSnapshot(dir, "s1", info.Created.Add(2*time.Hour), 0, false); !errors.Is(err, node.ErrSnapshotTooOld) || !strings.Contains(err.Error(), "tombstone-grace is 1h0m0s") {
		t.Fatalf("a 2h-old snapshot of a node with a 1h grace: %v, want refused as too old", err)
	}
	// The node's current data holds a hint for another node (a write
	// that node missed, maybe its only copy): the restore would drop it,
	// so it is refused without --force, replacing nothing.
	eng, err := pebble.Open(pebble.Options{Dir: filepath.Join(dir, "data")})
	if err != nil {
		t.Fatal(err)
	}
	b := eng.NewBatch()
	b.Set([]byte{replica.HintPrefix, 2, 'n', '2', 'k'}, []byte("a hinted write"))
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	if err := eng.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := node.RestoreSnapshot(dir, "s1", now, 0, false); !errors.Is(err, node.ErrHintsHeld) || !strings.Contains(err.Error(), "holds 1 hint(s)") || replaced() {
		t.Fatalf("restore over data holding a hint: %v (data moved aside: %v), want it refused", err, replaced())
	}
	if _, err := node.RestoreSnapshot(dir, "s1", now, 0, true); err != nil {
		t.Fatalf("restore of the repaired snapshot, --force: %v", err)
	}

	// What an interrupted create or delete left is gone after a start.
	for _, left := range []string{".auto-20250101T000000Z.creating", ".old.deleting", ".n2.partial"} {
		if err := os.MkdirAll(filepath.Join(dir, "snapshots", left, "data"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	n, err = node.Start(ctxT(t), cfg, node.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	for _, left := range []string{".auto-20250101T000000Z.creating", ".old.deleting"} {
		if _, err := os.Stat(filepath.Join(dir, "snapshots", left)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is still there after a start: %v", left, err)
		}
	}
	// Not one of the node's own: a download in progress there.
	if _, err := os.Stat(filepath.Join(dir, "snapshots", ".n2.partial")); err != nil {
		t.Errorf("a download's .n2.partial was swept: %v", err)
	}
	os.RemoveAll(filepath.Join(dir, "snapshots", ".n2.partial"))
	if err := n.DeleteSnapshot("s1"); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "snapshots")); len(entries) != 0 {
		t.Errorf("left in snapshots/ after the delete: %v", entries)
	}
}
