package membership

import "testing"

func TestAdvertiseAddr(t *testing.T) {
	for _, c := range []struct{ bind, adv, want string }{
		{"0.0.0.0", "10.0.0.1", "10.0.0.1"},
		{"::", "10.0.0.1", "10.0.0.1"},
		{"", "10.0.0.1", "10.0.0.1"},
		{"127.0.0.1", "10.0.0.1", "127.0.0.1"}, // a host named: itself
		{"0.0.0.0", "", "0.0.0.0"},
	} {
		if got := advertiseAddr(c.bind, c.adv); got != c.want {
			t.Errorf("advertiseAddr(%q, %q) = %q, want %q", c.bind, c.adv, got, c.want)
		}
	}
}
