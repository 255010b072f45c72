package ops

import (
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestSnapshotFileGoneIsNotFound: a snapshot deleted while it is being
// read (its files renamed away before they were opened) ends the download
// with NOT_FOUND saying so, not INTERNAL.
func TestSnapshotFileGoneIsNotFound(t *testing.T) {
	err := sendSnapshotFile(nil, filepath.Join(t.TempDir(), "gone.sst"), "gone.sst", nil)
	if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), "deleted while it was being read") {
		t.Fatalf("a snapshot file gone before it was opened: %v, want NOT_FOUND saying the snapshot was deleted", err)
	}
}
