package node

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRestoreReportsCopyProgress: a restore with WithCopyProgress hears
// how far its copy of the snapshot's files is, as each MiB and each file
// lands, then once with Done and the totals; the copy is whole.
func TestRestoreReportsCopyProgress(t *testing.T) {
	snapDir := filepath.Join(t.TempDir(), "nightly")
	data := filepath.Join(snapDir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"000002.log":      bytes.Repeat([]byte("w"), 3<<20+5), // copied, in several chunks
		"MANIFEST-000001": []byte("manifest"),
		"000001.sst":      bytes.Repeat([]byte("t"), 4096), // hard-linked: the same filesystem
	}
	var total int64
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(data, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		total += int64(len(b))
	}
	if err := os.WriteFile(filepath.Join(data, "LOCK"), nil, 0o644); err != nil { // not copied
		t.Fatal(err)
	}
	if err := writeSnapshotInfo(snapDir, SnapshotInfo{Node: "n1", Name: "nightly", Created: time.Now()}); err != nil {
		t.Fatal(err)
	}

	var reports []CopyProgress
	dataDir := filepath.Join(t.TempDir(), "n1")
	if _, err := RestoreSnapshotFrom(dataDir, snapDir, time.Now(), time.Hour, false, WithCopyProgress(func(p CopyProgress) {
		reports = append(reports, p)
	})); err != nil {
		t.Fatal(err)
	}
	if len(reports) < 5 { // 3 MiB in 1 MiB chunks, and a report per file
		t.Fatalf("%d progress reports, want at least 5: %+v", len(reports), reports)
	}
	for i, p := range reports {
		if p.TotalFiles != 3 || p.TotalBytes != total {
			t.Fatalf("report %d: totals %d files %d bytes, want 3 and %d", i, p.TotalFiles, p.TotalBytes, total)
		}
		if i > 0 && (p.Bytes < reports[i-1].Bytes || p.Files < reports[i-1].Files) {
			t.Fatalf("report %d went back: %+v after %+v", i, p, reports[i-1])
		}
		if p.Done != (i == len(reports)-1) {
			t.Fatalf("report %d of %d: done %v, want only the last done", i, len(reports), p.Done)
		}
	}
	last := reports[len(reports)-1]
	if last.Files != 3 || last.Bytes != total || last.Linked != 1 {
		t.Fatalf("final report %+v: want 3 files, %d bytes, 1 hard-linked", last, total)
	}
	for name, b := range files {
		got, err := os.ReadFile(filepath.Join(dataDir, "data", name))
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("restored %s: %d bytes, %v; want %d bytes", name, len(got), err, len(b))
		}
	}
}

// TestCopyTreeSyncsItsDirectories: the directories a restore's copy makes
// are synced once filled (deepest first), so that a crash right after
// the restore cannot lose their entries while the files were synced.
func TestCopyTreeSyncsItsDirectories(t *testing.T) {
	src := t.TempDir()
	for _, f := range []string{"MANIFEST-000001", "sub/000002.log", "sub/deeper/OPTIONS-000003"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(src, f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, f), []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dst := filepath.Join(t.TempDir(), "staged")
	var synced []string
	if err := copyTree(context.Background(), src, dst, nil, func(dir string) error { synced = append(synced, dir); return syncDir(dir) }); err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(dst, "sub", "deeper"), filepath.Join(dst, "sub"), dst}
	if len(synced) != len(want) {
		t.Fatalf("synced %v, want %v", synced, want)
	}
	for i := range want {
		if synced[i] != want[i] {
			t.Fatalf("synced %v, want %v (deepest first)", synced, want)
		}
	}
}

// TestRestoreInterrupted: a restore whose context ends during the copy
// (Ctrl-C) stops there: nothing is replaced, the copy so far is removed,
// and a data directory the restore created is gone (no empty node can
// start on it).
func TestRestoreInterrupted(t *testing.T) {
	snapDir := filepath.Join(t.TempDir(), "nightly")
	data := filepath.Join(snapDir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "000002.log"), bytes.Repeat([]byte("w"), 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeSnapshotInfo(snapDir, SnapshotInfo{Node: "n1", Name: "nightly", Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	for _, existing := range []bool{false, true} {
		dataDir := filepath.Join(t.TempDir(), "n1")
		if existing {
			if err := os.MkdirAll(filepath.Join(dataDir, "data"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dataDir, "data", "CURRENT"), []byte("mine"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		_, err := RestoreSnapshotFrom(dataDir, snapDir, time.Now(), time.Hour, false, WithContext(ctx), WithCopyProgress(func(p CopyProgress) {
			if p.Bytes >= 1<<20 {
				cancel() // after the first MiB
			}
		}))
		cancel()
		if err == nil || !strings.Contains(err.Error(), "interrupted") || !strings.Contains(err.Error(), "nothing was replaced") {
			t.Fatalf("existing %v: restore = %v, want it interrupted", existing, err)
		}
		if !existing {
			if _, err := os.Stat(dataDir); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("the data directory the restore created is still there: %v", err)
			}
			continue
		}
		if b, err := os.ReadFile(filepath.Join(dataDir, "data", "CURRENT")); err != nil || string(b) != "mine" {
			t.Fatalf("the node's data was touched: %q, %v", b, err)
		}
		if _, err := os.Stat(filepath.Join(dataDir, ".data.restoring")); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("the copy made so far is still there: %v", err)
		}
	}
}
