package node

import (
	"slices"
	"testing"
	"time"
)

// TestFreshInitPlan: the first leader of a new cluster without restored
// data hands the leadership to a voter that has some, refuses when only
// non-voters have some, waits a bounded time for members gossip has not
// shown yet, and otherwise initializes the cluster afresh.
func TestFreshInitPlan(t *testing.T) {
	members := []string{"n1", "n2", "n3", "n4"}
	voters := []string{"n1", "n2", "n3"}
	for _, tc := range []struct {
		name   string
		seen   map[string]string
		waited time.Duration
		handTo string
		wait   bool
		stuck  []string
	}{
		{"everyone seen, none restored", map[string]string{"n2": "", "n3": "", "n4": ""}, 0, "", false, nil},
		{"a voter restored", map[string]string{"n2": "", "n3": "c-old", "n4": ""}, 0, "n3", false, nil},
		{"the first voter restored of two", map[string]string{"n2": "c-old", "n3": "c-old"}, 0, "n2", false, nil},
		{"a restored voter before everyone is seen", map[string]string{"n3": "c-old"}, 0, "n3", false, nil},
		{"only a non-voter restored", map[string]string{"n2": "", "n3": "", "n4": "c-old"}, 0, "", false, []string{"n4"}},
		{"a member not seen yet", map[string]string{"n2": "", "n3": ""}, time.Second, "", true, nil},
		{"a member not seen for too long", map[string]string{"n2": "", "n3": ""}, freshInitWait, "", false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			handTo, wait, stuck := freshInitPlan("n1", members, voters, tc.seen, tc.waited)
			if handTo != tc.handTo || wait != tc.wait || !slices.Equal(stuck, tc.stuck) {
				t.Fatalf("got hand to %q, wait %v, stuck %v; want %q, %v, %v", handTo, wait, stuck, tc.handTo, tc.wait, tc.stuck)
			}
		})
	}
}
