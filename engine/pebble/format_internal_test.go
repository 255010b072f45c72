package pebble

import (
	"os"
	"path/filepath"
	"testing"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestStoredFormat reads the format from a directory's files: the
// marker's highest iteration wins, CURRENT alone is format 1, and a
// directory with neither says nothing.
func TestStoredFormat(t *testing.T) {
	for _, c := range []struct {
		name  string
		files []string
		want  pebbledb.FormatMajorVersion
		ok    bool
	}{
		{"empty", nil, 0, false},
		{"unrelated files", []string{"NODE_ID", "000001.log"}, 0, false},
		{"format 1", []string{"CURRENT", "MANIFEST-000001"}, 1, true},
		{"a marker", []string{"marker.format-version.000003.016", "marker.manifest.000002.MANIFEST-000005"}, 16, true},
		{"the highest iteration wins", []string{"marker.format-version.000004.024", "marker.format-version.000003.016"}, 24, true},
		{"a marker beats CURRENT", []string{"CURRENT", "marker.format-version.000001.013"}, 13, true},
		{"malformed markers ignored", []string{"marker.format-version.x.016", "marker.format-version.000001"}, 0, false},
	} {
		dir := t.TempDir()
		for _, f := range c.files {
			if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		v, ok, err := storedFormat(vfs.Default, dir)
		if err != nil || v != c.want || ok != c.ok {
			t.Errorf("%s: storedFormat = %v, %v, %v; want %v, %v", c.name, v, ok, err, c.want, c.ok)
		}
	}
}
