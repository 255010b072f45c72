package node

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/transport"
)

// Calls serves a client's call stream: each Get, Put or Delete on it runs
// as the unary method would (the coordinator admits it, times it and
// answers with the same statuses), authorized for its keyspace by the
// principal the stream authenticated as when it opened, and passes the
// shutdown gate like a unary call. A call is traced (a root of its own)
// at the node's sample ratio.
func (s *kvServer) Calls(stream kvv1.KV_CallsServer) error {
	ctx := stream.Context()
	allow, can, err := s.z.streamPrincipal(ctx)
	if err != nil {
		return err
	}
	// The stream's own span, if its RPC was traced, is no parent of the
	// calls on it: each is traced or not on its own.
	ctx = trace.ContextWithSpanContext(ctx, trace.SpanContext{})
	batch := &kvv1.ReplyBatch{}
	var running runningCalls
	return transport.CallLoop[*kvv1.Call, *kvv1.Reply]{
		Serve: func(ctx context.Context, c *kvv1.Call, deadline time.Time) *kvv1.Reply {
			ctx, cancel := context.WithDeadline(ctx, deadline)
			defer cancel()
			running.add(c.GetId(), cancel)
			defer running.remove(c.GetId())
			return s.serveCall(ctx, c, allow, can)
		},
		Refuse: callRefused,
		Size:   func(r *kvv1.Reply) int { return proto.Size(r) },
		CallBounds: transport.CallBounds{
			Enter:      s.n.gate.enter,
			Leave:      s.n.gate.leave,
			Refused:    errShuttingDown,
			Closing:    s.n.gate.closing,
			MaxRunning: s.n.cfg.ClientCallsRunning,
			Running:    &s.n.clientCallsRunning,
			// And by bytes: a client that stops reading stops the node
			// reading its calls before their replies pile up.
			MaxReplyBytes: int64(s.n.cfg.ClientCallReplyBytes),
			ReplyBytes:    &s.n.clientReplyBytes,
			// As a unary call without a deadline (the coordinator caps
			// every request at its maximum, which MaxCallTime's default
			// matches).
			DefaultCallTime: s.n.cfg.RequestTimeout,
		},
	}.Run(ctx, func() ([]*kvv1.Call, error) {
		b := &kvv1.CallBatch{}
		err := transport.RecvBatch(stream, b)
		running.cancel(b.GetCancel())
		return b.GetCalls(), err
	}, func(rs []*kvv1.Reply) error {
		return sendReplies(rs, s.maxMsg, func(rs []*kvv1.Reply) error {
			batch.Replies = rs
			err := stream.Send(batch)
			batch.Replies = nil
			return err
		})
	})
}

// runningCalls are the cancel functions of a stream's calls running now,
// by the ID their sender gave them (at most the stream's MaxRunning): a
// sender that gives up on a call it sent cancels it, as a cancelled
// unary call is.
type runningCalls struct {
	mu sync.Mutex
	m  map[uint64]context.CancelFunc
}

func (r *runningCalls) add(id uint64, cancel context.CancelFunc) {
	r.mu.Lock()
	if r.m == nil {
		r.m = map[uint64]context.CancelFunc{}
	}
	r.m[id] = cancel
	r.mu.Unlock()
}

func (r *runningCalls) remove(id uint64) {
	r.mu.Lock()
	delete(r.m, id)
	r.mu.Unlock()
}

// maxCancels bounds the cancellations a batch may carry that are looked
// at (a sender has at most a few thousand calls in flight).
const maxCancels = 4096

// cancel cancels the calls of ids still running; the others (done, or not
// started yet) are left alone.
func (r *runningCalls) cancel(ids []uint64) {
	if len(ids) == 0 {
		return
	}
	ids = ids[:min(len(ids), maxCancels)]
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		if cancel, ok := r.m[id]; ok {
			cancel()
		}
	}
}

// sendReplies sends rs in batches (transport.SendReplies). A reply over
// maxMsg, which the unary call could not have sent either, becomes that
// call's RESOURCE_EXHAUSTED.
func sendReplies(rs []*kvv1.Reply, maxMsg int, send func([]*kvv1.Reply) error) error {
	return transport.SendReplies(rs, maxMsg, func(r *kvv1.Reply, n int) *kvv1.Reply {
		return &kvv1.Reply{Id: r.GetId(), Result: &kvv1.Reply_Error{Error: transport.EncodeStatus(status.Errorf(grpccodes.ResourceExhausted,
			"the response is %d bytes, over the node's %d-byte message limit: read fewer siblings (resolve them with a write) or raise max-value-size", n, maxMsg))}}
	}, send)
}

// serveCall runs one call of a stream.
func (s *kvServer) serveCall(ctx context.Context, c *kvv1.Call, allow func(keyspace, perm string) error, can func(keyspace, perm string) bool) *kvv1.Reply {
	r := &kvv1.Reply{Id: c.GetId()}
	var span trace.Span
	var err error
	switch op := c.GetOp().(type) {
	case *kvv1.Call_Get:
		if err = allow(op.Get.GetKeyspace(), "read"); err == nil {
			ctx, span = s.n.tel.StartStreamCall(ctx, "kv.v1.KV/Calls/Get")
			var resp *kvv1.GetResponse
			if resp, err = s.n.coord.Get(ctx, op.Get); err == nil {
				r.Result = &kvv1.Reply_Get{Get: resp}
			}
		}
	case *kvv1.Call_Put:
		if err = allow(op.Put.GetKeyspace(), "write"); err == nil {
			ctx, span = s.n.tel.StartStreamCall(ctx, "kv.v1.KV/Calls/Put")
			var resp *kvv1.PutResponse
			if resp, err = s.n.coord.Put(ctx, op.Put); err == nil {
				if !can(op.Put.GetKeyspace(), "read") {
					withholdValues(resp)
				}
				r.Result = &kvv1.Reply_Put{Put: resp}
			}
		}
	case *kvv1.Call_Delete:
		if err = allow(op.Delete.GetKeyspace(), "write"); err == nil {
			ctx, span = s.n.tel.StartStreamCall(ctx, "kv.v1.KV/Calls/Delete")
			var resp *kvv1.DeleteResponse
			if resp, err = s.n.coord.Delete(ctx, op.Delete); err == nil {
				r.Result = &kvv1.Reply_Delete{Delete: resp}
			}
		}
	default:
		err = status.Error(grpccodes.InvalidArgument, "call without a Get, Put or Delete (sent by a newer client?)")
	}
	if span != nil {
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
	if err != nil {
		r.Result = &kvv1.Reply_Error{Error: transport.EncodeStatus(err)}
	}
	return r
}

// callRefused answers a call the node did not run.
func callRefused(c *kvv1.Call, err error) *kvv1.Reply {
	return &kvv1.Reply{Id: c.GetId(), Result: &kvv1.Reply_Error{Error: transport.EncodeStatus(err)}}
}
