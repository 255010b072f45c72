package ops

import (
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
)

// TestSnapshotReceiver: a stream of chunks becomes the files it names,
// and a stream that leaves the directory, skips, repeats, lies about a
// size or a checksum, or ends early is refused.
func TestSnapshotReceiver(t *testing.T) {
	sum := func(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }
	good := func() []*adminv1.SnapshotChunk {
		return []*adminv1.SnapshotChunk{
			{Path: "data/000001.sst", Offset: 0, Data: []byte("hello "), TotalFiles: 2, TotalBytes: 13},
			{Path: "data/000001.sst", Offset: 6, Data: []byte("world"), Last: true, Size: 11, Sha256: sum("hello world")},
			{Path: "SNAPSHOT.json", Offset: 0, Data: []byte("{}"), Last: true, Size: 2, Sha256: sum("{}")},
		}
	}
	run := func(chunks []*adminv1.SnapshotChunk) (string, error) {
		dir := t.TempDir()
		r := NewSnapshotReceiver(dir)
		defer r.Close()
		for _, c := range chunks {
			if err := r.Add(c); err != nil {
				return dir, err
			}
		}
		return dir, r.Finish()
	}
	dir, err := run(good())
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "data", "000001.sst")); err != nil || string(b) != "hello world" {
		t.Fatalf("file: %q %v", b, err)
	}
	for _, tc := range []struct {
		name   string
		change func([]*adminv1.SnapshotChunk) []*adminv1.SnapshotChunk
		want   string
	}{
		{"a path out of the directory", func(c []*adminv1.SnapshotChunk) []*adminv1.SnapshotChunk {
			c[2].Path = "../escape"
			return c
		}, "not inside the snapshot"},
		{"an absolute path", func(c []*adminv1.SnapshotChunk) []*adminv1.SnapshotChunk {
			c[0].Path, c[1].Path = "/etc/x", "/etc/x"
			return c
		}, "not inside the snapshot"},
		{"a gap", func(c []*adminv1.SnapshotChunk) []*adminv1.SnapshotChunk {
			c[1].Offset = 7
			return c
		}, "out of order"},
		{"a file twice", func(c []*adminv1.SnapshotChunk) []*adminv1.SnapshotChunk {
			c[2].Path = "data/000001.sst"
			return c
		}, "sent twice"},
		{"a wrong checksum", func(c []*adminv1.SnapshotChunk) []*adminv1.SnapshotChunk {
			c[1].Sha256 = sum("hello there")
			return c
		}, "SHA-256"},
		{"a wrong size", func(c []*adminv1.SnapshotChunk) []*adminv1.SnapshotChunk {
			c[1].Size = 12
			return c
		}, "its size is 12"},
		{"more bytes than announced", func(c []*adminv1.SnapshotChunk) []*adminv1.SnapshotChunk {
			c[0].TotalBytes = 5
			return c
		}, "more than the 5 bytes"},
		{"more files than announced", func(c []*adminv1.SnapshotChunk) []*adminv1.SnapshotChunk {
			c[0].TotalFiles = 1
			return c
		}, "more than the 1 files"},
		{"ends inside a file", func(c []*adminv1.SnapshotChunk) []*adminv1.SnapshotChunk { return c[:1] }, "ended inside"},
		{"a file missing", func(c []*adminv1.SnapshotChunk) []*adminv1.SnapshotChunk { return c[:2] }, "received 1 of 2 files"},
		{"no totals", func(c []*adminv1.SnapshotChunk) []*adminv1.SnapshotChunk {
			c[0].TotalFiles = 0
			return c
		}, "does not announce"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := run(tc.change(good())); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v, want an error naming %q", err, tc.want)
			}
		})
	}
}
