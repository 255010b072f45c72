package repair

import (
	"slices"
	"testing"
	"time"

	"github.com/meridiankv/meridian/membership"
)

func TestPickDue(t *testing.T) {
	ks := &membership.Keyspace{Name: "default"}
	base := time.Unix(1000, 0)
	// cands: partitions 0..n-1; prio lists the priority ones; partition
	// p was verified p seconds after base unless never lists it.
	cands := func(n int, prio []int, never []int) []candidate {
		var cs []candidate
		for p := range n {
			c := candidate{t: target{ks: ks, p: p}, prio: slices.Contains(prio, p), verified: base.Add(time.Duration(p) * time.Second)}
			if slices.Contains(never, p) {
				c.verified = time.Time{}
			}
			cs = append(cs, c)
		}
		return cs
	}
	seq := func(from, to int) []int {
		var out []int
		for p := from; p < to; p++ {
			out = append(out, p)
		}
		return out
	}
	cases := []struct {
		name             string
		cs               []candidate
		quota, prioLimit int
		want             []int
	}{
		{"nothing due", nil, 2, 16, nil},
		{"the period's pace, oldest first", cands(10, nil, nil), 3, 16, []int{0, 1, 2}},
		{"never verified before the rest", cands(10, nil, []int{7, 8}), 3, 16, []int{7, 8, 0}},
		{"a few priority ones all go, then the pace", cands(10, []int{5, 9}, nil), 3, 16, []int{5, 9, 0}},
		{"priority ones beyond the pace, up to the limit", cands(10, []int{4, 5, 6, 7, 8}, nil), 2, 4, []int{4, 5, 6, 7}},
		// After a flap: every partition priority; a tick takes the limit,
		// not all 1,024.
		{"a node came back: paced", cands(1024, seq(0, 1024), nil), 2, 16, seq(0, 16)},
		{"a pace above the limit wins", cands(100, seq(0, 100), nil), 20, 16, seq(0, 20)},
		{"priority ones and then regular ones up to the pace", cands(10, []int{9}, nil), 3, 16, []int{9, 0, 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got []int
			for _, tg := range pickDue(c.cs, c.quota, c.prioLimit) {
				got = append(got, tg.p)
			}
			if !slices.Equal(got, c.want) {
				t.Fatalf("pickDue = %v, want %v", got, c.want)
			}
		})
	}
}
