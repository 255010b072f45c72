package membership

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Gossip labels. memberlist can label its messages, but its label is fixed
// before the first message, and a new cluster's nodes gossip before they
// agree on a cluster ID. So the label is applied here, in the transport,
// and follows what the node knows:
//
//   - until the node knows its cluster ID, it labels with the bootstrap
//     label (Config.Label, "meridian/<cluster name>") and accepts that
//     label and any cluster-ID label (it cannot tell its own yet);
//   - once it knows the ID, it labels with "meridian-id/<cluster ID>" and
//     accepts that label and the bootstrap label (nodes still agreeing,
//     whose gossiped metadata carries no ID yet).
//
// Two initialized clusters never exchange a message, whatever their names
// and keys. Messages are encrypted inside the label (memberlist's keyring),
// so a label cannot be forged into a working message without the key.
const idLabelPrefix = "meridian-id/"

// maxIDInLabel bounds the cluster ID's part of a label; a longer ID is
// replaced by its SHA-256.
const maxIDInLabel = 64

// idLabel is the label of a cluster ID.
func idLabel(id string) string {
	if len(id) > maxIDInLabel {
		sum := sha256.Sum256([]byte(id))
		id = hex.EncodeToString(sum[:])
	}
	return idLabelPrefix + id
}

// labelOverhead is the most a label header adds to a packet.
func labelOverhead(bootstrap string) int {
	return 2 + max(len(bootstrap), len(idLabelPrefix)+maxIDInLabel)
}

// labels decides a node's gossip labels.
type labels struct {
	bootstrap string
	// clusterID returns the node's cluster ID, "" while unknown; nil: the
	// bootstrap label for good.
	clusterID func() string
	// last caches the ID label of the last ID seen ({id, label}).
	last atomic.Pointer[[2]string]
}

// idLabel is the label of the node's cluster ID, "" while unknown.
func (l *labels) idLabel() string {
	if l.clusterID == nil {
		return ""
	}
	id := l.clusterID()
	if id == "" {
		return ""
	}
	if c := l.last.Load(); c != nil && c[0] == id {
		return c[1]
	}
	c := [2]string{id, idLabel(id)}
	l.last.Store(&c)
	return c[1]
}

// current is the label this node sends.
func (l *labels) current() string {
	if lb := l.idLabel(); lb != "" {
		return lb
	}
	return l.bootstrap
}

// accepts reports whether a message with this label is taken.
func (l *labels) accepts(label string) bool {
	if label == l.bootstrap {
		return true
	}
	if own := l.idLabel(); own != "" {
		return label == own
	}
	return strings.HasPrefix(label, idLabelPrefix)
}

// labelTransport labels what this node sends and drops what arrives with
// a label it does not accept (see labels).
type labelTransport struct {
	memberlist.NodeAwareTransport
	labels  *labels
	packets chan *memberlist.Packet
	streams chan net.Conn
	// dropped counts messages refused for their label.
	dropped atomic.Uint64
	// stop: Shutdown has begun, pass nothing on; done: the inner
	// transport has shut down, the pumps return.
	stop, done     chan struct{}
	once, doneOnce sync.Once
	wg             sync.WaitGroup
}

func newLabelTransport(inner memberlist.NodeAwareTransport, l *labels) *labelTransport {
	t := &labelTransport{NodeAwareTransport: inner, labels: l,
		packets: make(chan *memberlist.Packet), streams: make(chan net.Conn), stop: make(chan struct{}), done: make(chan struct{})}
	t.wg.Add(2)
	go t.pumpPackets()
	go t.pumpStreams()
	return t
}

func (t *labelTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }
func (t *labelTransport) StreamCh() <-chan net.Conn           { return t.streams }

// pumpPackets passes on the packets whose label is accepted, without it.
// Once Shutdown has begun it keeps draining the inner transport (whose
// listener would block sending otherwise) until that has shut down.
func (t *labelTransport) pumpPackets() {
	defer t.wg.Done()
	in := t.NodeAwareTransport.PacketCh()
	for {
		var p *memberlist.Packet
		select {
		case p = <-in:
		case <-t.done:
			return
		}
		buf, label, err := memberlist.RemoveLabelHeaderFromPacket(p.Buf)
		if err != nil || !t.labels.accepts(label) {
			t.dropped.Add(1)
			continue
		}
		p.Buf = buf
		select {
		case t.packets <- p:
		case <-t.stop:
		}
	}
}

// pumpStreams passes on incoming streams wrapped so that their label is
// read and checked on the first Read, in memberlist's own goroutine for
// the stream and under its deadline (reading it here would let one slow
// peer hold up every other stream). It drains like pumpPackets.
func (t *labelTransport) pumpStreams() {
	defer t.wg.Done()
	in := t.NodeAwareTransport.StreamCh()
	for {
		var c net.Conn
		select {
		case c = <-in:
		case <-t.done:
			return
		}
		select {
		case t.streams <- &labeledConn{Conn: c, t: t}:
		case <-t.stop:
			_ = c.Close()
		}
	}
}

func (t *labelTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	lb, err := memberlist.AddLabelHeaderToPacket(b, t.labels.current())
	if err != nil {
		return time.Time{}, err
	}
	return t.NodeAwareTransport.WriteTo(lb, addr)
}

func (t *labelTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	lb, err := memberlist.AddLabelHeaderToPacket(b, t.labels.current())
	if err != nil {
		return time.Time{}, err
	}
	return t.NodeAwareTransport.WriteToAddress(lb, a)
}

func (t *labelTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	c, err := t.NodeAwareTransport.DialTimeout(addr, timeout)
	return t.labelStream(c, err)
}

func (t *labelTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	c, err := t.NodeAwareTransport.DialAddressTimeout(a, timeout)
	return t.labelStream(c, err)
}

// labelStream writes the label header first on a stream this node opened.
func (t *labelTransport) labelStream(c net.Conn, err error) (net.Conn, error) {
	if err != nil {
		return nil, err
	}
	if err := memberlist.AddLabelHeaderToStream(c, t.labels.current()); err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}

// Shutdown stops passing messages on, shuts the inner transport down
// (the pumps drain it meanwhile), then stops the pumps.
func (t *labelTransport) Shutdown() error {
	t.once.Do(func() { close(t.stop) })
	err := t.NodeAwareTransport.Shutdown()
	t.doneOnce.Do(func() { close(t.done) })
	t.wg.Wait()
	return err
}

// errUnacceptableLabel refuses a stream of another cluster.
var errUnacceptableLabel = errors.New("gossip stream with a label this node does not accept (another cluster)")

// labeledConn checks an incoming stream's label on its first Read.
type labeledConn struct {
	net.Conn
	t       *labelTransport
	checked bool
	rest    net.Conn // after the label header
	err     error
}

func (c *labeledConn) Read(p []byte) (int, error) {
	if !c.checked {
		c.checked = true
		rest, label, err := memberlist.RemoveLabelHeaderFromStream(c.Conn)
		switch {
		case err != nil:
			c.err = fmt.Errorf("gossip stream label: %w", err)
		case !c.t.labels.accepts(label):
			c.t.dropped.Add(1)
			c.err = fmt.Errorf("%w: %q", errUnacceptableLabel, label)
		default:
			c.rest = rest
		}
	}
	if c.err != nil {
		return 0, c.err
	}
	return c.rest.Read(p)
}
