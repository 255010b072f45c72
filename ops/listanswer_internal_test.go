package ops

import (
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
)

// TestSnapshotListSurvivesARefusal: one node refusing to list its
// snapshots (an unreadable directory, an older peer) is named with its
// reason while the others' snapshots are still listed; only when no node
// answered is the refusal the answer.
func TestSnapshotListSurvivesARefusal(t *testing.T) {
	n1 := &adminv1.ListSnapshotsResponse{Snapshots: []*adminv1.Snapshot{{Name: "s1", Node: "n1"}}}
	refused := map[string]error{"n2": status.Error(codes.Internal, "list snapshots: permission denied")}
	resp, err := listAnswer([]*adminv1.ListSnapshotsResponse{n1}, []string{"n3"}, refused)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetSnapshots()) != 1 || !slices.Equal(resp.GetFailed(), []string{"n2: list snapshots: permission denied"}) || !slices.Equal(resp.GetUnreachable(), []string{"n3"}) {
		t.Fatalf("answer %v, want n1's snapshot listed, n2 failed, n3 unreachable", resp)
	}
	if _, err := listAnswer(nil, nil, refused); status.Code(err) != codes.Internal {
		t.Fatalf("every node refused: %v, want the refusal", err)
	}
}
