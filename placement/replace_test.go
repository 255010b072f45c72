package placement

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestReplace(t *testing.T) {
	ring, err := New(256, []Node{
		{ID: "a", DC: "east", Rack: "r1", Weight: 1},
		{ID: "b", DC: "east", Rack: "r2", Weight: 2},
		{ID: "c", DC: "east", Rack: "r3", Weight: 1},
		{ID: "w", DC: "west", Rack: "r1", Weight: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := ring.Replace("b", Node{ID: "z", DC: "east", Rack: "r2", Weight: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := rep.Node("b"); ok {
		t.Error("b is still a member")
	}
	if !reflect.DeepEqual(rep.Owned("z"), ring.Owned("b")) {
		t.Error("z does not own exactly b's partitions")
	}
	moves := ring.Moves(rep)
	if len(moves) != len(ring.Owned("b")) {
		t.Errorf("%d moves, want %d", len(moves), len(ring.Owned("b")))
	}
	for _, m := range moves {
		if m.From != "b" || m.To != "z" || m.DC != "east" {
			t.Errorf("unexpected move %+v", m)
		}
	}
	if len(rep.Nodes()) != len(ring.Nodes()) {
		t.Errorf("%d nodes after replace, want %d", len(rep.Nodes()), len(ring.Nodes()))
	}

	cases := []struct {
		old  string
		n    Node
		want error
		has  string
	}{
		{"nobody", Node{ID: "z", DC: "east", Weight: 1}, ErrUnknownNode, `"nobody"`},
		{"a", Node{ID: "", DC: "east", Weight: 1}, ErrBadNode, "empty ID"},
		{"a", Node{ID: "z", DC: "east", Weight: 0}, ErrBadNode, "weight 0"},
		{"a", Node{ID: "c", DC: "east", Weight: 1}, ErrDuplicateNodeID, `"c" is already a member`},
		{"a", Node{ID: "a", DC: "east", Weight: 1}, ErrDuplicateNodeID, `"a" is already a member`},
		{"a", Node{ID: "z", DC: "west", Weight: 1}, ErrBadNode, `"z" is in datacenter west but "a", which it replaces, is in east`},
	}
	for _, c := range cases {
		r, err := ring.Replace(c.old, c.n)
		if r != nil || !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.has) {
			t.Errorf("Replace(%q, %+v) = %v, %v; want %v containing %q", c.old, c.n, r, err, c.want, c.has)
		}
	}
}
