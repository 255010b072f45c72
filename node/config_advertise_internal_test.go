package node

import (
	"context"
	"net"
	"strings"
	"testing"
)

// TestAdvertiseHost: a node binding every interface publishes the
// advertise host, or its initial-cluster host, and refuses to start with
// neither; a host that names no single machine is refused.
func TestAdvertiseHost(t *testing.T) {
	base := func() Config {
		return Config{ID: "n1", Engine: "memory", Insecure: true, ClusterSecretFile: "s", GRPCAddr: "10.0.0.1:7001", InitialCluster: "n1=10.0.0.1:7001,n2=10.0.0.2:7001"}
	}
	for _, c := range []struct {
		name    string
		change  func(*Config)
		adv     string // advertiseHost()
		problem string // in Validate's error; "" valid
	}{
		{"a host named: nothing to advertise for", func(*Config) {}, "10.0.0.1", ""},
		{"wildcard, initial-cluster names the host", func(c *Config) { c.GRPCAddr = "0.0.0.0:7001" }, "10.0.0.1", ""},
		{"no host, initial-cluster names the host", func(c *Config) { c.GRPCAddr = ":7001" }, "10.0.0.1", ""},
		{"wildcard on both", func(c *Config) { c.GRPCAddr, c.InitialCluster = "0.0.0.0:7001", "n1=0.0.0.0:7001" }, "", "grpc-addr 0.0.0.0:7001 binds every interface"},
		{"wildcard on both, advertise-host given", func(c *Config) {
			c.GRPCAddr, c.InitialCluster, c.AdvertiseHost = "0.0.0.0:7001", "n1=0.0.0.0:7001", "node1.example"
		}, "node1.example", ""},
		{"a joiner binding every interface", func(c *Config) {
			c.GRPCAddr, c.InitialCluster, c.JoinAddr, c.DC, c.Rack, c.Weight = "[::]:7001", "", "10.0.0.2:7001", "dc1", "r1", 1
		}, "", "grpc-addr [::]:7001 binds every interface"},
		{"a wildcard peer-addr, initial-cluster names the host", func(c *Config) { c.PeerAddr = "0.0.0.0:7201" }, "10.0.0.1", ""},
		{"advertise-host a wildcard", func(c *Config) { c.AdvertiseHost = "0.0.0.0" }, "0.0.0.0", "advertise-host \"0.0.0.0\""},
		{"advertise-host with a port", func(c *Config) { c.AdvertiseHost = "node1:7001" }, "node1:7001", "no port"},
	} {
		cfg := base()
		c.change(&cfg)
		if got := cfg.advertiseHost(); got != c.adv {
			t.Errorf("%s: advertise host %q, want %q", c.name, got, c.adv)
		}
		err := cfg.Validate()
		if c.problem == "" && err != nil || c.problem != "" && (err == nil || !strings.Contains(err.Error(), c.problem)) {
			t.Errorf("%s: Validate = %v, want %q", c.name, err, c.problem)
		}
	}
}

func TestPublicAddr(t *testing.T) {
	for _, c := range []struct{ addr, adv, want string }{
		{"0.0.0.0:7001", "10.0.0.1", "10.0.0.1:7001"},
		{"[::]:7001", "node1.example", "node1.example:7001"},
		{"[::]:7001", "fd00::1", "[fd00::1]:7001"},
		{"127.0.0.1:7001", "10.0.0.1", "127.0.0.1:7001"}, // a host named: as it is
		{"0.0.0.0:7001", "", "0.0.0.0:7001"},
	} {
		if got := publicAddr(c.addr, c.adv); got != c.want {
			t.Errorf("publicAddr(%q, %q) = %q, want %q", c.addr, c.adv, got, c.want)
		}
	}
	if ip, err := advertiseIP(context.Background(), "10.0.0.1"); err != nil || ip != "10.0.0.1" {
		t.Errorf("advertiseIP of an IP address: %q, %v", ip, err)
	}
	if ip, err := advertiseIP(context.Background(), ""); err != nil || ip != "" {
		t.Errorf("advertiseIP of nothing: %q, %v", ip, err)
	}
	for _, c := range []struct {
		host string
		ips  []string
		want string // "" refused
	}{
		{"node1", []string{"fd00::1", "10.0.0.1"}, "10.0.0.1"},
		{"node1", []string{"127.0.1.1", "fd00::1"}, "fd00::1"},
		{"node1", []string{"127.0.1.1"}, ""}, // a default /etc/hosts: peers would dial themselves
		{"localhost", []string{"127.0.0.1"}, "127.0.0.1"},
	} {
		var ips []net.IP
		for _, s := range c.ips {
			ips = append(ips, net.ParseIP(s))
		}
		got, err := pickAdvertiseIP(c.host, ips)
		if got != c.want || (c.want == "") != (err != nil) {
			t.Errorf("pickAdvertiseIP(%s, %v) = %q, %v; want %q", c.host, c.ips, got, err, c.want)
		}
	}
}
