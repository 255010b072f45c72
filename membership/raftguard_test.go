package membership

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
)

// follower starts a MetaLog "f" that cannot elect itself (its other voter,
// "x", does not exist), whose accepted connections authenticate as
// *sender and whose members are those member allows.
func follower(t *testing.T, sender *atomic.Value, member func(string) bool) (*MetaLog, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ml, err := StartMetaLog(MetaLogConfig{
		ID: "f", Listener: lis, Voters: []string{"f", "x"}, Fast: true,
		Dial: func(ctx context.Context, id string) (net.Conn, error) {
			return nil, errors.New("no dialing in this test")
		},
		Sender: func(net.Conn) (string, error) { return sender.Load().(string), nil },
		Member: member,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ml.Close() })
	return ml, lis.Addr().String()
}

// appendAs sends a heartbeat of term 5 naming "x" as its sender and leader.
func appendAs(t *testing.T, addr string) (*raft.AppendEntriesResponse, error) {
	t.Helper()
	trans, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, 2*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer trans.Close()
	req := &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("x"), Addr: []byte("x")},
		//lint:ignore SA1019 the legacy sender field, which the guard checks too
		Term: 5, Leader: []byte("x"),
	}
	var resp raft.AppendEntriesResponse
	err = trans.AppendEntries("f", raft.ServerAddress(addr), req, &resp)
	return &resp, err
}

// TestRaftRequestsMustNameTheirSender: a request naming the node its
// connection authenticated as is served (the follower takes "x" as its
// leader at term 5); the same request on a connection authenticated as
// another node, or from a node no longer a member, is refused and changes
// nothing.
func TestRaftRequestsMustNameTheirSender(t *testing.T) {
	var sender atomic.Value
	var removed atomic.Bool
	ml, addr := follower(t, &sender, func(id string) bool { return !removed.Load() })

	sender.Store("y")
	if _, err := appendAs(t, addr); err == nil {
		t.Fatal("a request from y naming x as its sender was answered")
	}
	removed.Store(true)
	sender.Store("x")
	if _, err := appendAs(t, addr); err == nil {
		t.Fatal("a request from a removed member was answered")
	}
	if term, leader := ml.Stats().Term, ml.Leader(); term >= 5 || leader != "" {
		t.Fatalf("after refused requests: term %d, leader %q; want the term below 5 and no leader", term, leader)
	}

	removed.Store(false)
	resp, err := appendAs(t, addr)
	if err != nil {
		t.Fatalf("a request from x naming x: %v", err)
	}
	if resp.Term != 5 || ml.Leader() != "x" {
		t.Fatalf("after x's heartbeat: answered term %d, leader %q; want 5 and x", resp.Term, ml.Leader())
	}
}

// TestGuardPassesSnapshotsThrough: an InstallSnapshot request's snapshot
// bytes follow it as they are, and the request after them is decoded as
// usual.
func TestGuardPassesSnapshotsThrough(t *testing.T) {
	snap := bytes.Repeat([]byte("snapshot"), 10000)
	var wire bytes.Buffer
	enc := codec.NewEncoder(&wire, &codec.MsgpackHandle{})
	hdr := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("x"), Addr: []byte("x")}
	wire.WriteByte(rpcInstallSnapshot)
	if err := enc.Encode(&raft.InstallSnapshotRequest{RPCHeader: hdr, Term: 3, Leader: []byte("x"), LastLogIndex: 7, Size: int64(len(snap))}); err != nil {
		t.Fatal(err)
	}
	wire.Write(snap)
	wire.WriteByte(rpcTimeoutNow)
	if err := enc.Encode(&raft.TimeoutNowRequest{RPCHeader: hdr}); err != nil {
		t.Fatal(err)
	}

	client, server := net.Pipe()
	defer client.Close()
	go func() { client.Write(wire.Bytes()) }()
	g := &guardedConn{Conn: server, sender: func(net.Conn) (string, error) { return "x", nil }, log: slog.New(slog.DiscardHandler)}
	defer g.Close()
	r := bufio.NewReader(g)
	dec := codec.NewDecoder(r, &codec.MsgpackHandle{})

	if kind, err := r.ReadByte(); err != nil || kind != rpcInstallSnapshot {
		t.Fatalf("first request type %d, %v", kind, err)
	}
	var is raft.InstallSnapshotRequest
	if err := dec.Decode(&is); err != nil || is.LastLogIndex != 7 || is.Size != int64(len(snap)) {
		t.Fatalf("InstallSnapshot through the guard: %+v, %v", is, err)
	}
	got := make([]byte, len(snap))
	if _, err := io.ReadFull(r, got); err != nil || !bytes.Equal(got, snap) {
		t.Fatalf("snapshot bytes through the guard differ (%v)", err)
	}
	if kind, err := r.ReadByte(); err != nil || kind != rpcTimeoutNow {
		t.Fatalf("second request type %d, %v", kind, err)
	}
	var tn raft.TimeoutNowRequest
	if err := dec.Decode(&tn); err != nil || string(tn.ID) != "x" {
		t.Fatalf("TimeoutNow after the snapshot: %+v, %v", tn, err)
	}
}
