package main

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/meridiankv/meridian/coordinator"
	"github.com/meridiankv/meridian/node"
)

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

// TestMaxInFlightHelp: --max-in-flight's help states the default the
// binary really has: coordinator.DefaultMaxInFlight per P, with the Ps
// per CPU that schedulerProcs gives when GOMAXPROCS is not set.
func TestMaxInFlightHelp(t *testing.T) {
	perP := coordinator.DefaultMaxInFlight() / runtime.GOMAXPROCS(0)
	perCPU := perP * schedulerProcs(func(string) string { return "" }, 1)
	want := fmt.Sprintf("default %d per P: %d per CPU unless GOMAXPROCS is set", perP, perCPU)
	var cfg node.Config
	var sf serveFlags
	usage := newServeCmdFor(&cfg, &sf).Flags().Lookup("max-in-flight").Usage
	if !strings.Contains(usage, want) {
		t.Fatalf("--max-in-flight help %q does not say %q", usage, want)
	}
}
