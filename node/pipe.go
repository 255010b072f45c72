package node

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	"github.com/meridiankv/meridian/pki"
	"github.com/meridiankv/meridian/transport"
)

// callEpochKey carries a piped call's sender epoch in its context (unary
// calls carry it in their metadata).
type callEpochKey struct{}

// Calls serves a peer's pipe (see transport.CallServer): each call passes
// the shutdown gate like a unary call, and runs with the epoch its sender
// stamped on it.
func (s *replicaServer) Calls(stream internalv1.Replica_CallsServer) error {
	n := s.n
	var check func() error
	if !n.cfg.Insecure {
		// Membership can change while a stream lives: a removed node's
		// stream ends at its next batch.
		cert, _ := pki.PeerCertificate(stream.Context())
		peer, _ := pki.NodeID(cert)
		check = func() error {
			if !n.mayTalk(peer) {
				return status.Errorf(codes.PermissionDenied, "node %q is no longer a member of this cluster", peer)
			}
			return nil
		}
	}
	return transport.CallServer{
		Serve: s.serveCall,
		CallBounds: transport.CallBounds{
			Enter:      n.gate.enter,
			Leave:      n.gate.leave,
			Refused:    errShuttingDown,
			Closing:    n.gate.closing,
			Check:      check,
			Running:    &n.pipedRunning,
			MaxRunning: n.cfg.PeerCallsRunning,
			// And by bytes, as a client's stream is.
			MaxReplyBytes: int64(n.cfg.PeerCallReplyBytes),
			ReplyBytes:    &n.peerReplyBytes,
		},
	}.ServeStream(stream)
}

// serveCall runs one piped call.
func (s *replicaServer) serveCall(ctx context.Context, c *internalv1.Call, deadline time.Time) *internalv1.Reply {
	if time.Now().After(deadline) {
		// It waited past its sender's deadline: nobody waits for it now.
		return &internalv1.Reply{Result: transport.ReplyError(status.FromContextError(context.DeadlineExceeded).Err())}
	}
	// A read or write here waits on nothing but the engine: the call
	// needs no context with its deadline (and no timer).
	ctx = context.WithValue(ctx, callEpochKey{}, c.GetEpoch())
	switch op := c.GetOp().(type) {
	case *internalv1.Call_Read:
		resp, err := s.n.coord.ServeRead(ctx, op.Read)
		if err != nil {
			return &internalv1.Reply{Result: transport.ReplyError(err)}
		}
		r := &readReply{result: internalv1.Reply_Read{Read: resp}}
		r.reply.Result = &r.result
		return &r.reply
	case *internalv1.Call_Write:
		resp, err := s.n.coord.ServeWrite(ctx, op.Write)
		if err != nil {
			return &internalv1.Reply{Result: transport.ReplyError(err)}
		}
		r := &writeReply{result: internalv1.Reply_Write{Write: resp}}
		r.reply.Result = &r.result
		return &r.reply
	default:
		return &internalv1.Reply{Result: transport.ReplyError(status.Error(codes.InvalidArgument, "call without an operation (sent by a newer version?)"))}
	}
}

// readReply and writeReply are a reply with its result: one allocation
// for both.
type readReply struct {
	reply  internalv1.Reply
	result internalv1.Reply_Read
}

type writeReply struct {
	reply  internalv1.Reply
	result internalv1.Reply_Write
}
