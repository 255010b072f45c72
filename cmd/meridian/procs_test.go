package main

import "testing"

func TestSchedulerProcs(t *testing.T) {
	env := func(vals map[string]string) func(string) string {
		return func(k string) string { return vals[k] }
	}
	for _, tc := range []struct {
		name    string
		env     map[string]string
		current int
		want    int
	}{
		{"twice the CPUs", nil, 2, 4},
		{"one CPU", nil, 1, 2},
		{"the environment wins", map[string]string{"GOMAXPROCS": "3"}, 3, 3},
		{"even when it says one", map[string]string{"GOMAXPROCS": "1"}, 1, 1},
	} {
		if got := schedulerProcs(env(tc.env), tc.current); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}
