package membership

import (
	"context"
	"fmt"
	"log"
	"math/rand/v2"
	"net"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

// filterTransport wraps memberlist's transport for fault injection: a
// packet to a node the gossip filter drops is lost (reported as sent, as
// UDP would), a stream dial to it fails. Only what this node sends is
// filtered; a link is cut both ways when both ends filter it.
type filterTransport struct {
	memberlist.NodeAwareTransport
	g *Gossip
	// dialCtx, when set, replaces the inner transport's dials (a
	// memberlist.NetTransport: a plain TCP dial) by dials that Close
	// cancels: a reconnect to a black-holed address would otherwise hold
	// Close up for memberlist's whole TCP timeout.
	dialCtx context.Context
}

func (t *filterTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.g.drops("", addr) {
		return time.Now(), nil
	}
	return t.NodeAwareTransport.WriteTo(b, addr)
}

func (t *filterTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if t.g.drops(a.Name, a.Addr) {
		return time.Now(), nil
	}
	return t.NodeAwareTransport.WriteToAddress(b, a)
}

func (t *filterTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.g.drops("", addr) {
		return nil, fmt.Errorf("fault injection: gossip to %s is cut", addr)
	}
	if t.dialCtx != nil {
		return (&net.Dialer{Timeout: timeout}).DialContext(t.dialCtx, "tcp", addr)
	}
	return t.NodeAwareTransport.DialTimeout(addr, timeout)
}

func (t *filterTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if t.g.drops(a.Name, a.Addr) {
		return nil, fmt.Errorf("fault injection: gossip to %s is cut", a.String())
	}
	if t.dialCtx != nil {
		return (&net.Dialer{Timeout: timeout}).DialContext(t.dialCtx, "tcp", a.Addr)
	}
	return t.NodeAwareTransport.DialAddressTimeout(a, timeout)
}

// nodeAware gives a plain memberlist.Transport the node-aware methods
// (memberlist does the same internally).
type nodeAware struct{ memberlist.Transport }

func (t nodeAware) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

func (t nodeAware) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

// newNetTransport binds memberlist's UDP and TCP transport on host:port,
// retrying a few times when port 0 picked a port whose other half (UDP or
// TCP) was taken, as memberlist does when it makes its own.
func newNetTransport(host string, port int, logger *log.Logger) (*memberlist.NetTransport, error) {
	tries := 1
	if port == 0 {
		tries = 10
	}
	var err error
	for range tries {
		var nt *memberlist.NetTransport
		nt, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{host}, BindPort: port, Logger: logger})
		if err == nil {
			return nt, nil
		}
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, err
}

// SetFilter makes gossip drop every message to a node for which drop
// returns true (drop may be called for every message: it must be quick).
// Nodes are named by their ID; nil removes the filter. Dropped messages
// look like a lossy network to memberlist, so the nodes cut off this way
// turn suspect, then dead. When the filter stops dropping, the reconnect
// loop brings them back.
func (g *Gossip) SetFilter(drop func(nodeID string) bool) {
	if drop == nil {
		g.filter.Store(nil)
		return
	}
	g.filter.Store(&drop)
}

// drops asks the filter about a message to a memberlist node, named or
// known by its gossip address.
func (g *Gossip) drops(name, addr string) bool {
	f := g.filter.Load()
	if f == nil {
		return false
	}
	id := name
	if id == "" {
		g.mu.RLock()
		id = g.mu.byAddr[addr]
		g.mu.RUnlock()
	}
	if id == "" || id == g.self {
		return false
	}
	return (*f)(id)
}

// Reconnect makes the reconnect loop try a dead member now instead of at
// its next tick (call it when something that cut gossip off ends).
func (g *Gossip) Reconnect() {
	select {
	case g.kick <- struct{}{}:
	default:
	}
}

// reconnectLoop joins, every interval, the gossip address of one member
// seen dead (not left): memberlist stops talking to dead nodes after a
// while, so without this two halves of a partition that outlasted it
// would never merge again.
func (g *Gossip) reconnectLoop(interval time.Duration) {
	defer g.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
		case <-g.kick:
		}
		if addr := g.deadAddr(); addr != "" {
			if _, err := g.ml.Join([]string{addr}); err != nil {
				g.log.Debug("gossip reconnect failed", "addr", addr, "err", err)
			}
		}
	}
}

// deadAddr picks the gossip address of a random member seen dead.
func (g *Gossip) deadAddr() string {
	g.mu.RLock()
	defer g.mu.RUnlock()
	var dead []string
	for id, m := range g.mu.members {
		if m.State == StateDead && m.GossipAddr != "" && id != g.self && (g.isMember == nil || g.isMember(id)) {
			dead = append(dead, m.GossipAddr)
		}
	}
	if len(dead) == 0 {
		return ""
	}
	return dead[rand.IntN(len(dead))]
}
