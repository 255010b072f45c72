package node

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// capListener refuses connections beyond a cap: it accepts them and closes
// them at once, so a flood of idle connections cannot exhaust the node's
// file descriptors or memory, and the kernel backlog never fills with
// callers left hanging. Refused connections are counted.
type capListener struct {
	net.Listener
	max      int64
	open     atomic.Int64
	refused  atomic.Int64
	accepted atomic.Int64 // connections admitted, ever
}

func newCapListener(l net.Listener, max int) *capListener {
	return &capListener{Listener: l, max: int64(max)}
}

// Accept returns the next connection under the cap.
func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) > l.max {
			l.open.Add(-1)
			l.refused.Add(1)
			c.Close()
			continue
		}
		l.accepted.Add(1)
		return &countedConn{Conn: c, l: l}, nil
	}
}

// Open is how many accepted connections are open.
func (l *capListener) Open() int64 { return l.open.Load() }

// Refused is how many connections were refused over the cap.
func (l *capListener) Refused() int64 { return l.refused.Load() }

type countedConn struct {
	net.Conn
	l    *capListener
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.l.open.Add(-1) })
	return c.Conn.Close()
}

// firstBytesListener gives each accepted connection until timeout to
// deliver its first bytes (through a TLS listener: the whole handshake
// and the start of the first request), then lifts the deadline. A caller
// that connects and sends nothing is dropped instead of holding a
// goroutine, buffers and a descriptor until the node stops. For listeners
// whose server sets no deadline of its own (the metadata log's).
type firstBytesListener struct {
	net.Listener
	timeout time.Duration
}

// Accept returns the next connection, its deadline set.
func (l firstBytesListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if err := c.SetDeadline(time.Now().Add(l.timeout)); err != nil {
			c.Close()
			continue
		}
		return &firstBytesConn{Conn: c}, nil
	}
}

type firstBytesConn struct {
	net.Conn
	started atomic.Bool
}

// Read lifts the deadline once the first bytes arrived.
func (c *firstBytesConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && !c.started.Load() {
		c.started.Store(true)
		if err := c.Conn.SetDeadline(time.Time{}); err != nil {
			return n, err
		}
	}
	return n, err
}
