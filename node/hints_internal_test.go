package node

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meridiankv/meridian/coordinator"
	"github.com/meridiankv/meridian/engine/memory"
	"github.com/meridiankv/meridian/repair"
	"github.com/meridiankv/meridian/replica"
	"github.com/meridiankv/meridian/version"
)

// TestHintRefusalIsAStatus: a hint the log refuses (here: hints off) goes
// back to the peer that sent it as RESOURCE_EXHAUSTED with the
// hint-refused reason, still wrapping repair.ErrHintDropped.
func TestHintRefusalIsAStatus(t *testing.T) {
	store, err := replica.Open(memory.New(), "n1")
	if err != nil {
		t.Fatal(err)
	}
	off := time.Duration(0)
	h, err := newHintTracker(store, Config{HintWindow: &off}, time.Now, nil)
	if err != nil {
		t.Fatal(err)
	}
	set, _ := version.Set{}.Put(version.Clock{}, "n1", version.Value{Bytes: []byte("v")}, 1)
	err = h.StoreHint("n2", replica.Loc{Keyspace: 1, Partition: 2}, "ks", []byte("k"), set, false, time.Time{})
	st, _ := status.FromError(err)
	if st.Code() != codes.ResourceExhausted || !coordinator.HasReason(st, coordinator.ReasonHintRefused) || !errors.Is(err, repair.ErrHintDropped) {
		t.Fatalf("hint with hints off: %v, want RESOURCE_EXHAUSTED (%s) wrapping ErrHintDropped", err, coordinator.ReasonHintRefused)
	}
}

// TestRefreshKeepsTargetsStoredMeanwhile: a target whose first hint is
// stored while a refresh reads the log (which may not see it) stays
// owed: dropped, it would leave gossip and read quorums would count it.
func TestRefreshKeepsTargetsStoredMeanwhile(t *testing.T) {
	store, err := replica.Open(memory.New(), "n1")
	if err != nil {
		t.Fatal(err)
	}
	h, err := newHintTracker(store, Config{}, time.Now, nil)
	if err != nil {
		t.Fatal(err)
	}
	set, _ := version.Set{}.Put(version.Clock{}, "n1", version.Value{Bytes: []byte("v")}, time.Now().UnixNano())
	h.beginRefresh()
	owed := h.log.Owed() // read before the hint below lands
	if err := h.StoreHint("n2", replica.Loc{Keyspace: 1, Partition: 2}, "ks", []byte("k"), set, false, time.Time{}); err != nil {
		t.Fatal(err)
	}
	h.finishRefresh(owed)
	if !h.Has("n2") {
		t.Fatal("a target stored while the log was read was dropped from the owed set")
	}
	h.refresh() // a later round reads it from the log
	if !h.Has("n2") {
		t.Fatal("n2 no longer owed, its hint still held")
	}
}
