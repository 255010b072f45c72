package drill

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
)

func TestScenarioFault(t *testing.T) {
	topo := topo3(3)
	for _, tc := range []struct {
		s    Scenario
		want *adminv1.Fault
	}{
		{Scenario{Name: DCOutage, DC: "dc2"},
			&adminv1.Fault{Kind: "partition", FromDcs: []string{"dc1", "dc3"}, ToDcs: []string{"dc2"}, BothWays: true, TtlSeconds: 50}},
		{Scenario{Name: DCPartition, Between: []string{"dc3", "dc1"}},
			&adminv1.Fault{Kind: "partition", FromDcs: []string{"dc3"}, ToDcs: []string{"dc1"}, BothWays: true, TtlSeconds: 50}},
		{Scenario{Name: SlowDC, DC: "dc1", Delay: 50 * ms, Jitter: 10 * ms},
			&adminv1.Fault{Kind: "delay", FromDcs: []string{"dc2", "dc3"}, ToDcs: []string{"dc1"}, DelayMs: 50, JitterMs: 10, TtlSeconds: 50}},
		{Scenario{Name: NodeCrash, Node: "n1"}, nil},
		{Scenario{Name: RollingRestart}, nil},
		{Scenario{Name: DiskFull, Node: "n5"}, &adminv1.Fault{Kind: "disk-full", FromNodes: []string{"n5"}, TtlSeconds: 50}},
		{Scenario{Name: SlowDisk, Node: "n2", Delay: 100 * time.Millisecond, Jitter: 50 * time.Millisecond},
			&adminv1.Fault{Kind: "slow-disk", FromNodes: []string{"n2"}, DelayMs: 100, JitterMs: 50, TtlSeconds: 50}},
	} {
		got := tc.s.Fault(topo, 50*time.Second)
		if !proto.Equal(got, tc.want) {
			t.Errorf("%s: Fault = %v, want %v", tc.s, got, tc.want)
		}
	}
}

func TestScenarioValidate(t *testing.T) {
	topo := topo3(3)
	one := Topology{Nodes: []Node{{ID: "n1", DC: "dc1"}}, RF: map[string]int{"dc1": 1}}
	for _, tc := range []struct {
		s    Scenario
		t    Topology
		want string // "" = valid
	}{
		{Scenario{Name: DCOutage, DC: "dc3"}, topo, ""},
		{Scenario{Name: DCOutage}, topo, "dc-outage needs --dc (one of dc1, dc2, dc3)"},
		{Scenario{Name: DCOutage, DC: "dc9"}, topo, "--dc dc9: no such datacenter (the cluster has dc1, dc2, dc3)"},
		{Scenario{Name: DCOutage, DC: "dc1"}, one, "at least two datacenters"},
		{Scenario{Name: DCPartition, Between: []string{"dc1", "dc2"}}, topo, ""},
		{Scenario{Name: DCPartition, Between: []string{"dc1"}}, topo, "--between A,B"},
		{Scenario{Name: DCPartition, Between: []string{"dc1", "dc1"}}, topo, "two different datacenters"},
		{Scenario{Name: DCPartition, Between: []string{"dc1", "x"}}, topo, "--between x: no such datacenter"},
		{Scenario{Name: SlowDC, DC: "dc2", Delay: 50 * ms}, topo, ""},
		{Scenario{Name: SlowDC, DC: "dc2"}, topo, "--delay > 0"},
		{Scenario{Name: NodeCrash, Node: "n4"}, topo, ""},
		{Scenario{Name: NodeCrash, Node: "n42"}, topo, "--node n42: no such node (the cluster has n1, n2, n3, n4, n5, n6, n7, n8, n9)"},
		{Scenario{Name: NodeCrash}, topo, "--node ID"},
		{Scenario{Name: RollingRestart}, one, ""},
		{Scenario{Name: DiskFull, Node: "n1"}, one, ""},
		{Scenario{Name: DiskFull}, topo, "disk-full needs --node ID"},
		{Scenario{Name: DiskFull, Node: "n42"}, topo, "--node n42: no such node"},
		{Scenario{Name: SlowDisk, Node: "n1", Delay: time.Millisecond}, one, ""},
		{Scenario{Name: SlowDisk, Delay: time.Millisecond}, topo, "slow-disk needs --node ID"},
		{Scenario{Name: SlowDisk, Node: "n1"}, topo, "slow-disk needs --delay > 0"},
		{Scenario{Name: SlowDisk, Node: "n1", Delay: time.Millisecond, Jitter: -1}, topo, "--jitter >= 0"},
		{Scenario{Name: "meteor"}, topo, `unknown scenario "meteor": use one of dc-outage, dc-partition, slow-dc, node-crash, rolling-restart, disk-full, slow-disk`},
	} {
		err := tc.s.Validate(tc.t)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v, want valid", tc.s, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: %v, want an error containing %q", tc.s, err, tc.want)
		}
	}
}

func TestHealthyDCs(t *testing.T) {
	for _, tc := range []struct {
		s    Scenario
		rf   int
		want []string
	}{
		{Scenario{Name: DCOutage, DC: "dc2"}, 3, []string{"dc1", "dc3"}},
		{Scenario{Name: DCPartition, Between: []string{"dc1", "dc2"}}, 3, []string{"dc1", "dc2", "dc3"}},
		{Scenario{Name: SlowDC, DC: "dc1"}, 1, []string{"dc1", "dc2", "dc3"}},
		// RF 3 in a DC spares a node: LOCAL_QUORUM stays available there.
		{Scenario{Name: NodeCrash, Node: "n5"}, 3, []string{"dc1", "dc2", "dc3"}},
		// RF 2 or 1 does not: the crashed node's DC is not held to it.
		{Scenario{Name: NodeCrash, Node: "n4"}, 2, []string{"dc1", "dc3"}},
		{Scenario{Name: NodeCrash, Node: "n1"}, 1, []string{"dc2", "dc3"}},
		{Scenario{Name: RollingRestart}, 3, []string{"dc1", "dc2", "dc3"}},
		{Scenario{Name: RollingRestart}, 1, nil},
		// A full disk takes its node's writes away as a crash would.
		{Scenario{Name: DiskFull, Node: "n5"}, 3, []string{"dc1", "dc2", "dc3"}},
		{Scenario{Name: DiskFull, Node: "n4"}, 2, []string{"dc1", "dc3"}},
		// A slow disk takes nothing away: every DC stays held to it.
		{Scenario{Name: SlowDisk, Node: "n4"}, 2, []string{"dc1", "dc2", "dc3"}},
	} {
		if got := tc.s.HealthyDCs(topo3(tc.rf)); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s with RF %d per DC: healthy DCs %v, want %v", tc.s, tc.rf, got, tc.want)
		}
	}
}
