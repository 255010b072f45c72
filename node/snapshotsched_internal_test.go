package node

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSnapshotBoundaries: boundaries are multiples of the interval of UTC
// time, so nodes with slightly different clocks name one boundary's
// snapshot alike.
func TestSnapshotBoundaries(t *testing.T) {
	at := func(s string) time.Time {
		t.Helper()
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	cases := []struct {
		now   string
		every time.Duration
		want  string
	}{
		{"2026-12-02T14:59:59.9Z", 6 * time.Hour, "auto-20261202T120000Z"},
		{"2026-12-02T18:00:00.2Z", 6 * time.Hour, "auto-20261202T180000Z"},
		{"2026-12-02T18:00:00.2+02:00", 6 * time.Hour, "auto-20261202T120000Z"},
		{"2026-12-02T00:00:30Z", 24 * time.Hour, "auto-20261202T000000Z"},
		{"2026-12-02T14:07:31.5Z", time.Second, "auto-20261202T140731Z"},
	}
	for _, c := range cases {
		if got := autoSnapshotName(snapshotBoundary(at(c.now), c.every)); got != c.want {
			t.Errorf("boundary of %s every %s = %s, want %s", c.now, c.every, got, c.want)
		}
	}
}

// TestAutoSnapshotsToPrune: only scheduled snapshots are pruned, the
// oldest first, down to keep.
func TestAutoSnapshotsToPrune(t *testing.T) {
	cases := []struct {
		names string
		keep  int
		want  string
	}{
		{"", 3, ""},
		{"auto-20261202T120000Z auto-20261202T180000Z", 3, ""},
		{"auto-20261202T180000Z before-upgrade auto-20261202T000000Z auto-20261202T120000Z auto-20261202T060000Z", 2,
			"auto-20261202T000000Z auto-20261202T060000Z"},
		{"auto-20261202T120000Z 20261201T000000Z auto-20261202T180000Z", 1, "auto-20261202T120000Z"},
		// Only the schedule's names: one taken by hand (before "auto-"
		// was reserved) or copied in under another name is not pruned.
		{"auto-1.4-upgrade auto-20261202T120000Z auto-20261202T180000Z auto-20261202T180000Z.bak", 1, "auto-20261202T120000Z"},
	}
	for _, c := range cases {
		got := strings.Join(autoSnapshotsToPrune(strings.Fields(c.names), c.keep), " ")
		if got != c.want {
			t.Errorf("prune %q keep %d = %q, want %q", c.names, c.keep, got, c.want)
		}
	}
	if names := []string{"b", "a"}; autoSnapshotsToPrune(names, 0) != nil || !slices.Equal(names, []string{"b", "a"}) {
		t.Error("names without the prefix are never pruned, and the input is not reordered")
	}
}
