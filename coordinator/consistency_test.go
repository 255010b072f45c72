package coordinator

import (
	"errors"
	"strings"
	"testing"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/placement"
)

func TestResolveLevels(t *testing.T) {
	oneDC := Replication{"dc1": 3}
	twoDC := Replication{"east": 3, "west": 2}
	small := Replication{"dc1": 2}
	lv := func(l kvv1.Level) *kvv1.Consistency { return &kvv1.Consistency{Level: l} }
	tests := []struct {
		name   string
		c      *kvv1.Consistency
		op     Op
		repl   Replication
		local  string
		total  int
		perDC  map[string]int
		hints  bool
		count  int
		errHas string
	}{
		{"default is quorum", nil, OpRead, oneDC, "dc1", 2, nil, true, 2, ""},
		{"one", lv(kvv1.Level_LEVEL_ONE), OpWrite, oneDC, "dc1", 1, nil, true, 1, ""},
		{"two", lv(kvv1.Level_LEVEL_TWO), OpRead, oneDC, "dc1", 2, nil, true, 2, ""},
		{"three", lv(kvv1.Level_LEVEL_THREE), OpRead, oneDC, "dc1", 3, nil, true, 3, ""},
		{"three with N=2", lv(kvv1.Level_LEVEL_THREE), OpRead, small, "dc1", 0, nil, false, 0, "THREE needs 3 replicas but the keyspace's N is 2"},
		{"quorum of 5", lv(kvv1.Level_LEVEL_QUORUM), OpWrite, twoDC, "east", 3, nil, true, 3, ""},
		{"all of 5 never counts hints", lv(kvv1.Level_LEVEL_ALL), OpWrite, twoDC, "east", 5, nil, false, 5, ""},
		{"local one", lv(kvv1.Level_LEVEL_LOCAL_ONE), OpRead, twoDC, "west", 0, map[string]int{"west": 1}, true, 1, ""},
		{"local quorum east", lv(kvv1.Level_LEVEL_LOCAL_QUORUM), OpWrite, twoDC, "east", 0, map[string]int{"east": 2}, true, 2, ""},
		{"local quorum west", lv(kvv1.Level_LEVEL_LOCAL_QUORUM), OpRead, twoDC, "west", 0, map[string]int{"west": 2}, true, 2, ""},
		{"local quorum in DC without replicas", lv(kvv1.Level_LEVEL_LOCAL_QUORUM), OpRead, twoDC, "south", 0, nil, false, 0, "where the keyspace has no replicas"},
		{"each quorum", lv(kvv1.Level_LEVEL_EACH_QUORUM), OpWrite, twoDC, "east", 0, map[string]int{"east": 2, "west": 2}, true, 4, ""},
		{"any write", lv(kvv1.Level_LEVEL_ANY), OpWrite, oneDC, "dc1", 1, nil, true, 1, ""},
		{"any read", lv(kvv1.Level_LEVEL_ANY), OpRead, oneDC, "dc1", 0, nil, false, 0, "ANY is for writes only"},
		{"any primary only", &kvv1.Consistency{Level: kvv1.Level_LEVEL_ANY, PrimaryOnly: true}, OpWrite, oneDC, "dc1", 0, nil, false, 0, "primary_only"},
		{"explicit r", &kvv1.Consistency{Level: kvv1.Level_LEVEL_ALL, R: 1}, OpRead, oneDC, "dc1", 1, nil, true, 1, ""},
		{"explicit w ignored for reads", &kvv1.Consistency{Level: kvv1.Level_LEVEL_ONE, W: 3}, OpRead, oneDC, "dc1", 1, nil, true, 1, ""},
		{"explicit w above N", &kvv1.Consistency{W: 4}, OpWrite, oneDC, "dc1", 0, nil, false, 0, "w=4 is more than the keyspace's N=3"},
		{"primary only quorum", &kvv1.Consistency{Level: kvv1.Level_LEVEL_QUORUM, PrimaryOnly: true}, OpWrite, oneDC, "dc1", 2, nil, false, 2, ""},
		{"unknown level", lv(kvv1.Level(42)), OpRead, oneDC, "dc1", 0, nil, false, 0, "unknown consistency level"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			need, err := Resolve(tt.c, tt.op, tt.repl, tt.local)
			if tt.errHas != "" {
				var inv *InvalidError
				if !errors.As(err, &inv) || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("err = %v, want InvalidError containing %q", err, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if need.Total != tt.total || need.Hints != tt.hints || need.Count() != tt.count {
				t.Errorf("need = %+v (count %d), want total %d hints %v count %d", need, need.Count(), tt.total, tt.hints, tt.count)
			}
			if len(need.PerDC) != len(tt.perDC) {
				t.Fatalf("perDC = %v, want %v", need.PerDC, tt.perDC)
			}
			for dc, k := range tt.perDC {
				if need.PerDC[dc] != k {
					t.Errorf("perDC[%s] = %d, want %d", dc, need.PerDC[dc], k)
				}
			}
			if need.N != sum(tt.repl) {
				t.Errorf("N = %d, want %d", need.N, sum(tt.repl))
			}
		})
	}
}

func sum(r Replication) int {
	n := 0
	for _, v := range r {
		n += v
	}
	return n
}

func TestTally(t *testing.T) {
	// EACH_QUORUM over east:3, west:2 needs 2 in each.
	need, err := Resolve(&kvv1.Consistency{Level: kvv1.Level_LEVEL_EACH_QUORUM}, OpWrite, Replication{"east": 3, "west": 2}, "east")
	if err != nil {
		t.Fatal(err)
	}
	tl := newTally(need)
	for _, dc := range []string{"east", "east", "east", "west", "west"} {
		tl.expect(dc, false)
	}
	tl.answer("east", false, true)
	tl.answer("east", false, true)
	if tl.met() {
		t.Fatal("met with no west answers")
	}
	tl.answer("east", false, false) // the third east replica failing changes nothing
	if tl.hopeless() {
		t.Fatal("hopeless with both west replicas still pending")
	}
	tl.answer("west", false, false) // west needs 2 of 2: one failure loses
	if !tl.hopeless() {
		t.Fatal("not hopeless after a west replica failed")
	}
	if got := tl.shortfall(); got != "west: 1 of 2 needed could answer" {
		t.Fatalf("shortfall = %q", got)
	}

	// LOCAL_QUORUM ignores the remote DC entirely.
	need, _ = Resolve(&kvv1.Consistency{Level: kvv1.Level_LEVEL_LOCAL_QUORUM}, OpRead, Replication{"east": 3, "west": 3}, "east")
	tl = newTally(need)
	for _, dc := range []string{"east", "east", "east", "west", "west", "west"} {
		tl.expect(dc, false)
	}
	tl.answer("west", false, true)
	tl.answer("west", false, true)
	tl.answer("west", false, true)
	if tl.met() {
		t.Fatal("LOCAL_QUORUM met by remote answers")
	}
	tl.answer("east", false, true)
	tl.answer("east", false, true)
	if !tl.met() {
		t.Fatal("LOCAL_QUORUM not met by two local answers")
	}

	// Hinted copies count for QUORUM, not with primary_only.
	for _, primaryOnly := range []bool{false, true} {
		need, _ = Resolve(&kvv1.Consistency{Level: kvv1.Level_LEVEL_QUORUM, PrimaryOnly: primaryOnly}, OpWrite, Replication{"dc1": 3}, "dc1")
		tl = newTally(need)
		tl.expect("dc1", false)
		tl.answer("dc1", false, true)
		tl.expect("dc1", true)
		if got := tl.hopeless(); got != primaryOnly {
			t.Errorf("primaryOnly=%v: hopeless=%v", primaryOnly, got)
		}
		tl.answer("dc1", true, true)
		if got := tl.met(); got == primaryOnly {
			t.Errorf("primaryOnly=%v: met=%v", primaryOnly, got)
		}
	}
}

func TestPickReads(t *testing.T) {
	c := &Coordinator{cfg: Config{NodeID: "n2"}}
	live := []target{
		{Replica: placement.Replica{Node: "n1", DC: "east"}},
		{Replica: placement.Replica{Node: "n2", DC: "east"}},
		{Replica: placement.Replica{Node: "n3", DC: "east"}},
		{Replica: placement.Replica{Node: "n4", DC: "west"}},
		{Replica: placement.Replica{Node: "n5", DC: "west"}},
	}
	names := func(ts []target) string {
		var s []string
		for _, t := range ts {
			s = append(s, t.Node)
		}
		return strings.Join(s, ",")
	}
	repl := Replication{"east": 3, "west": 2}
	cases := []struct {
		level         kvv1.Level
		local         string
		asked, spares string
	}{
		{kvv1.Level_LEVEL_ONE, "east", "n2", "n1,n3,n4,n5"},
		{kvv1.Level_LEVEL_QUORUM, "east", "n2,n1,n3", "n4,n5"},
		{kvv1.Level_LEVEL_LOCAL_QUORUM, "west", "n4,n5", "n2,n1,n3"},
		{kvv1.Level_LEVEL_EACH_QUORUM, "east", "n2,n1,n4,n5", "n3"},
		{kvv1.Level_LEVEL_ALL, "east", "n2,n1,n3,n4,n5", ""},
	}
	for _, tc := range cases {
		need, err := Resolve(&kvv1.Consistency{Level: tc.level}, OpRead, repl, tc.local)
		if err != nil {
			t.Fatal(err)
		}
		asked, spares := c.pickReads(need, live, false)
		if names(asked) != tc.asked || names(spares) != tc.spares {
			t.Errorf("%s from %s: asked %s spares %s, want %s / %s", tc.level, tc.local, names(asked), names(spares), tc.asked, tc.spares)
		}
	}
	if asked, _ := c.pickReads(Need{Total: 1}, live, true); len(asked) != 5 {
		t.Errorf("read-repair read asked %d replicas, want all 5", len(asked))
	}
}
