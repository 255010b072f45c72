package membership

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
)

// Raft's wire format (hashicorp/raft's NetworkTransport): a type byte, then
// the request in msgpack; an InstallSnapshot request is followed by Size
// bytes of snapshot.
const (
	rpcAppendEntries uint8 = iota
	rpcRequestVote
	rpcInstallSnapshot
	rpcTimeoutNow
	rpcRequestPreVote
)

// guardedConn is an accepted metadata-log connection whose requests are
// passed to Raft only once their sender checks out. Raft believes the
// node ID a request names (a vote is granted to it, appended entries come
// from it as leader), while the listener authenticated the connection as
// a node certificate's ID once: a member could have named another node,
// a voter or the leader, and been taken for it. Each request is decoded
// here, refused (the connection closed) unless every ID and address it
// names is the sender's own and the sender is still a member, and handed
// on re-encoded (the same struct Raft decodes into, so nothing Raft would
// have read is lost).
type guardedConn struct {
	net.Conn
	// sender authenticates the connection (its peer's node ID; "" when
	// the listener does not authenticate: no check).
	sender func(net.Conn) (string, error)
	// member tells whether the sender may still talk to this node.
	member func(id string) bool
	log    *slog.Logger

	started bool
	id      string
	r       *bufio.Reader
	dec     *codec.Decoder
	enc     *codec.Encoder
	out     bytes.Buffer
	// raw is how many snapshot bytes still pass through as they are.
	raw int64
}

// errSender is wrapped by every refusal of a request's sender.
var errSender = errors.New("metadata log request refused")

func (c *guardedConn) Read(p []byte) (int, error) {
	if !c.started {
		id, err := c.sender(c.Conn)
		if err != nil {
			return 0, err
		}
		c.id, c.started = id, true
		if id != "" {
			c.r = bufio.NewReader(c.Conn)
			c.dec = codec.NewDecoder(c.r, &codec.MsgpackHandle{})
			// As Raft's own sender encodes by default (the decoder
			// reads both time formats).
			h := &codec.MsgpackHandle{}
			h.TimeNotBuiltin = true
			c.enc = codec.NewEncoder(&c.out, h)
		}
	}
	if c.id == "" {
		return c.Conn.Read(p)
	}
	for c.out.Len() == 0 {
		if c.raw > 0 {
			n, err := c.r.Read(p[:min(int64(len(p)), c.raw)])
			c.raw -= int64(n)
			return n, err
		}
		if err := c.next(); err != nil {
			return 0, err
		}
	}
	return c.out.Read(p)
}

// next reads, checks and re-encodes one request.
func (c *guardedConn) next() error {
	kind, err := c.r.ReadByte()
	if err != nil {
		return err
	}
	var (
		req    any
		header *raft.RPCHeader
	)
	switch kind {
	case rpcAppendEntries:
		r := &raft.AppendEntriesRequest{}
		req, header = r, &r.RPCHeader
	case rpcRequestVote:
		r := &raft.RequestVoteRequest{}
		req, header = r, &r.RPCHeader
	case rpcInstallSnapshot:
		r := &raft.InstallSnapshotRequest{}
		req, header = r, &r.RPCHeader
	case rpcTimeoutNow:
		r := &raft.TimeoutNowRequest{}
		req, header = r, &r.RPCHeader
	case rpcRequestPreVote:
		r := &raft.RequestPreVoteRequest{}
		req, header = r, &r.RPCHeader
	default:
		return fmt.Errorf("%w: unknown request type %d from %s", errSender, kind, c.id)
	}
	if err := c.dec.Decode(req); err != nil {
		return err
	}
	var legacy []byte // the sender field from before the header
	switch r := req.(type) {
	case *raft.AppendEntriesRequest:
		//lint:ignore SA1019 checked because Raft still reads it from older senders
		legacy = r.Leader
	case *raft.RequestVoteRequest:
		//lint:ignore SA1019 checked because Raft still reads it from older senders
		legacy = r.Candidate
	case *raft.InstallSnapshotRequest:
		legacy = r.Leader
		if r.Size < 0 {
			return fmt.Errorf("%w: snapshot of %d bytes from %s", errSender, r.Size, c.id)
		}
		c.raw = r.Size
	}
	if err := c.check(header, legacy); err != nil {
		c.log.Warn("metadata log request refused: the connection is closed", "err", err)
		return err
	}
	c.out.WriteByte(kind)
	return c.enc.Encode(req)
}

// check refuses a request that names a node other than its sender (the
// group's addresses are node IDs), or whose sender is no longer a member.
func (c *guardedConn) check(h *raft.RPCHeader, legacy []byte) error {
	if string(h.ID) != c.id {
		return fmt.Errorf("%w: a request from node %s names node %q as its sender", errSender, c.id, h.ID)
	}
	if len(h.Addr) > 0 && string(h.Addr) != c.id {
		return fmt.Errorf("%w: a request from node %s gives the address %q", errSender, c.id, h.Addr)
	}
	if len(legacy) > 0 && string(legacy) != c.id {
		return fmt.Errorf("%w: a request from node %s names %q as leader or candidate", errSender, c.id, legacy)
	}
	if c.member != nil && !c.member(c.id) {
		return fmt.Errorf("%w: node %s is no longer a member of this cluster", errSender, c.id)
	}
	return nil
}
