package drill

import (
	"strings"
	"testing"
)

// TestRestoreJudge: the restore drill passes only when every write
// acknowledged before the snapshot is back, none acknowledged after it is
// (and there were some of each, or nothing was verified), the placement
// held, and the new cluster has its own ID, names the old
// one, went on from its epoch and takes writes.
func TestRestoreJudge(t *testing.T) {
	good := func() RestoreReport {
		return RestoreReport{OldCluster: "a", NewCluster: "b", RestoredFrom: "a", OldEpoch: 8, NewEpoch: 15,
			AckedBefore: 10, FoundBefore: 10, AckedDuring: 2, FoundDuring: 1, AckedAfter: 5, PlacementChecked: 10}
	}
	for _, tc := range []struct {
		name   string
		change func(*RestoreReport)
		want   string // "" passes
	}{
		{"all back", func(*RestoreReport) {}, ""},
		{"a write during the snapshot either way", func(r *RestoreReport) { r.FoundDuring = 2 }, ""},
		{"nothing acknowledged", func(r *RestoreReport) { r.AckedBefore, r.FoundBefore = 0, 0 }, "nothing was verified"},
		{"nothing acknowledged after", func(r *RestoreReport) { r.AckedAfter = 0 }, "no write was acknowledged after the snapshot: nothing verified"},
		{"a write lost", func(r *RestoreReport) { r.FoundBefore, r.Missing = 9, []string{"k7"} }, "1 of 10 writes acknowledged before the snapshot are missing after the restore (e.g. k7)"},
		{"a later write back", func(r *RestoreReport) { r.FoundAfter, r.Resurrected = 1, []string{"k9"} }, "1 writes sent after every node's snapshot"},
		{"the old cluster ID", func(r *RestoreReport) { r.NewCluster = "a" }, "must have its own"},
		{"no record of the old cluster", func(r *RestoreReport) { r.RestoredFrom = "" }, "restored from \"\""},
		{"epoch went back", func(r *RestoreReport) { r.NewEpoch = 3 }, "not past the old one's 8"},
		{"a key moved", func(r *RestoreReport) { r.PlacementMoved = []string{"k1"} }, "1 of 10 keys have other replicas"},
		{"writes refused", func(r *RestoreReport) { r.WriteError = "UNAVAILABLE" }, "refused a write: UNAVAILABLE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := good()
			tc.change(&r)
			r.Judge()
			if tc.want == "" {
				if !r.Pass || len(r.Failures) != 0 {
					t.Fatalf("failures %v, want a pass", r.Failures)
				}
				return
			}
			if r.Pass || len(r.Failures) != 1 || !strings.Contains(r.Failures[0], tc.want) {
				t.Fatalf("pass %v failures %q, want one naming %q", r.Pass, r.Failures, tc.want)
			}
		})
	}
}
