package coordinator

import "testing"

func TestReadShortfall(t *testing.T) {
	for _, tc := range []struct {
		shortfall string
		behind    int
		want      string
	}{
		{"", 0, ""},
		{"dc3: 0 of 2 needed could answer", 0, "dc3: 0 of 2 needed could answer"},
		{"", 6, "6 replica(s) up but still owed hints, not counted until delivered"},
		{"dc3: 0 of 2 needed could answer", 1, "dc3: 0 of 2 needed could answer; 1 replica(s) up but still owed hints, not counted until delivered"},
	} {
		if got := readShortfall(tc.shortfall, tc.behind); got != tc.want {
			t.Errorf("readShortfall(%q, %d) = %q, want %q", tc.shortfall, tc.behind, got, tc.want)
		}
	}
}
