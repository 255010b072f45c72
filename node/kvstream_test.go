package node_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/node"
	"github.com/meridiankv/meridian/transport"
)

// exchange sends calls as one batch and returns the replies by call ID,
// failing the test unless every call gets exactly one.
func exchange(t *testing.T, stream kvv1.KV_CallsClient, calls ...*kvv1.Call) map[uint64]*kvv1.Reply {
	t.Helper()
	if err := stream.Send(&kvv1.CallBatch{Calls: calls}); err != nil {
		t.Fatal(err)
	}
	got := map[uint64]*kvv1.Reply{}
	for len(got) < len(calls) {
		b, err := stream.Recv()
		if err != nil {
			t.Fatalf("recv after %d of %d replies: %v", len(got), len(calls), err)
		}
		for _, r := range b.GetReplies() {
			if got[r.GetId()] != nil {
				t.Fatalf("two replies for call %d", r.GetId())
			}
			got[r.GetId()] = r
		}
	}
	return got
}

// replyStatus decodes a reply's error (OK when it has none).
func replyStatus(t *testing.T, r *kvv1.Reply) *status.Status {
	t.Helper()
	e, ok := r.GetResult().(*kvv1.Reply_Error)
	if !ok {
		return status.New(codes.OK, "")
	}
	var st spb.Status
	if err := proto.Unmarshal(e.Error, &st); err != nil {
		t.Fatalf("reply %d: undecodable error: %v", r.GetId(), err)
	}
	return status.FromProto(&st)
}

func TestCallStream(t *testing.T) {
	l := startCluster(t, node.LocalSpec{NodesPerDC: 3, Engine: "memory"})
	stream, err := kvv1.NewKVClient(dialConn(t, l.Nodes()[0].Addr())).Calls(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	put := func(key, value string, causal []byte) *kvv1.Call_Put {
		return &kvv1.Call_Put{Put: &kvv1.PutRequest{Key: []byte(key), Value: []byte(value), Context: causal}}
	}
	// One batch: writes, a read of a key never written, and calls the
	// node must refuse, each answered under its own ID.
	got := exchange(t, stream,
		&kvv1.Call{Id: 1, Op: put("a", "1", nil)},
		&kvv1.Call{Id: 2, Op: put("b", "2", nil)},
		&kvv1.Call{Id: 3, Op: &kvv1.Call_Get{Get: &kvv1.GetRequest{Key: []byte("never")}}},
		&kvv1.Call{Id: 4, Op: put("", "no key", nil)},
		&kvv1.Call{Id: 5},
		&kvv1.Call{Id: 6, Op: put("a", "forged", []byte("not a context"))},
		&kvv1.Call{Id: 7, Op: &kvv1.Call_Get{Get: &kvv1.GetRequest{Key: []byte("a"), Keyspace: "nope"}}},
	)
	for _, id := range []uint64{1, 2} {
		if st := replyStatus(t, got[id]); st.Code() != codes.OK || len(got[id].GetPut().GetContext()) == 0 {
			t.Fatalf("put %d: %v, %v", id, got[id], st.Err())
		}
	}
	if r := got[3]; replyStatus(t, r).Code() != codes.OK || r.GetGet() == nil || len(r.GetGet().GetSiblings()) != 0 {
		t.Fatalf("get of a key never written: %v", r)
	}
	for id, want := range map[uint64]codes.Code{4: codes.InvalidArgument, 5: codes.InvalidArgument, 6: codes.InvalidArgument, 7: codes.NotFound} {
		if st := replyStatus(t, got[id]); st.Code() != want {
			t.Fatalf("call %d: %v, want %v", id, st.Err(), want)
		}
	}

	// The stream carries on after refusals: read, overwrite with the
	// read's context, delete, read again; and a call whose deadline is
	// already near gets DEADLINE_EXCEEDED, as a unary call would.
	got = exchange(t, stream, &kvv1.Call{Id: 8, Op: &kvv1.Call_Get{Get: &kvv1.GetRequest{Key: []byte("a")}}})
	sibs := got[8].GetGet().GetSiblings()
	if len(sibs) != 1 || string(sibs[0].GetValue()) != "1" {
		t.Fatalf("get a: %v", got[8])
	}
	got = exchange(t, stream, &kvv1.Call{Id: 9, Op: put("a", "1b", got[8].GetGet().GetContext())})
	if vals := got[9].GetPut().GetSiblings(); len(vals) != 1 || string(vals[0].GetValue()) != "1b" {
		t.Fatalf("overwrite with the read's context left %v, want one value 1b", got[9])
	}
	got = exchange(t, stream,
		&kvv1.Call{Id: 10, Op: &kvv1.Call_Delete{Delete: &kvv1.DeleteRequest{Key: []byte("a"), Context: got[9].GetPut().GetContext()}}},
		&kvv1.Call{Id: 11, TimeoutMicros: 1, Op: &kvv1.Call_Get{Get: &kvv1.GetRequest{Key: []byte("b")}}},
	)
	if st := replyStatus(t, got[10]); st.Code() != codes.OK || got[10].GetDelete() == nil {
		t.Fatalf("delete: %v", st.Err())
	}
	if st := replyStatus(t, got[11]); st.Code() != codes.DeadlineExceeded {
		t.Fatalf("call with 1µs to live: %v, want DEADLINE_EXCEEDED", st.Err())
	}
	got = exchange(t, stream, &kvv1.Call{Id: 12, Op: &kvv1.Call_Get{Get: &kvv1.GetRequest{Key: []byte("a")}}})
	for _, s := range got[12].GetGet().GetSiblings() {
		if !s.GetTombstone() {
			t.Fatalf("a read after the delete returned a live value: %v", got[12])
		}
	}

	// Closing the sending side ends the stream cleanly.
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("recv after CloseSend: %v, want EOF", err)
	}
}

func TestCallStreamAuthorizesEachCall(t *testing.T) {
	auth := node.AuthConfig{Principals: []node.Principal{
		{Name: "reader", TokenSHA256: node.HashToken("read-token"), Keyspaces: map[string]string{"default": "read"}},
	}}
	l := startCluster(t, node.LocalSpec{NodesPerDC: 1, Engine: "memory", Auth: auth})
	kv := kvv1.NewKVClient(dialConn(t, l.Nodes()[0].Addr()))

	stream, err := kv.Calls(ctxT(t))
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("call stream without credentials: %v, want UNAUTHENTICATED", err)
	}

	stream, err = kv.Calls(metadata.AppendToOutgoingContext(ctxT(t), "authorization", "Bearer read-token"))
	if err != nil {
		t.Fatal(err)
	}
	got := exchange(t, stream,
		&kvv1.Call{Id: 1, Op: &kvv1.Call_Put{Put: &kvv1.PutRequest{Key: []byte("k"), Value: []byte("v")}}},
		&kvv1.Call{Id: 2, Op: &kvv1.Call_Get{Get: &kvv1.GetRequest{Key: []byte("k")}}},
		&kvv1.Call{Id: 3, Op: &kvv1.Call_Delete{Delete: &kvv1.DeleteRequest{Key: []byte("k")}}},
	)
	for _, id := range []uint64{1, 3} {
		st := replyStatus(t, got[id])
		if st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), `no write permission on keyspace "default"`) {
			t.Fatalf("write %d by a reader: %v, want PERMISSION_DENIED saying what is missing", id, st.Err())
		}
	}
	if st := replyStatus(t, got[2]); st.Code() != codes.OK || got[2].GetGet() == nil {
		t.Fatalf("read by a reader: %v", st.Err())
	}
}

// TestCallStreamEndsWithTheNode: a node shutting down answers the calls
// it took and ends its call streams; the client's stream sees the end.
func TestCallStreamEndsWithTheNode(t *testing.T) {
	l := startCluster(t, node.LocalSpec{NodesPerDC: 1, Engine: "memory"})
	n := l.Nodes()[0]
	stream, err := kvv1.NewKVClient(dialConn(t, n.Addr())).Calls(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	exchange(t, stream, &kvv1.Call{Id: 1, Op: &kvv1.Call_Put{Put: &kvv1.PutRequest{Key: []byte("k"), Value: []byte("v")}}})
	if err := l.Stop(n.ID()); err != nil {
		t.Fatal(err)
	}
	for {
		_, err := stream.Recv()
		if err == nil {
			continue
		}
		if !errors.Is(err, io.EOF) && status.Code(err) != codes.Unavailable {
			t.Fatalf("call stream of a stopped node ended with %v, want EOF or UNAVAILABLE", err)
		}
		break
	}
}

// TestCallStreamRefusesHugeBatchesBeforeDecoding: a batch of more calls
// than transport.MaxBatchCalls (empty ones: 2 bytes each on the wire, some
// 90 decoded) ends the stream with RESOURCE_EXHAUSTED, none of its calls
// served; a batch at the bound is served whole.
func TestCallStreamRefusesHugeBatchesBeforeDecoding(t *testing.T) {
	l := startCluster(t, node.LocalSpec{NodesPerDC: 1, Engine: "memory"})
	kv := kvv1.NewKVClient(dialConn(t, l.Nodes()[0].Addr()))
	get := func(id uint64) *kvv1.Call {
		return &kvv1.Call{Id: id, Op: &kvv1.Call_Get{Get: &kvv1.GetRequest{Key: []byte("k")}}}
	}
	stream, err := kv.Calls(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	calls := make([]*kvv1.Call, transport.MaxBatchCalls)
	for i := range calls {
		calls[i] = get(uint64(i + 1))
	}
	if got := exchange(t, stream, calls...); len(got) != len(calls) {
		t.Fatalf("%d replies to a batch at the bound", len(got))
	}

	stream, err = kv.Calls(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	huge := make([]*kvv1.Call, transport.MaxBatchCalls+1)
	for i := range huge {
		huge[i] = &kvv1.Call{}
	}
	if err := stream.Send(&kvv1.CallBatch{Calls: huge}); err != nil {
		t.Fatal(err)
	}
	if b, err := stream.Recv(); err == nil {
		t.Fatalf("%d replies to a batch over the bound", len(b.GetReplies()))
	} else if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "send at most") {
		t.Fatalf("a batch over the bound: %v, want RESOURCE_EXHAUSTED saying what to send", err)
	}
	// So are cancellations past the bound (8 bytes each decoded, 1 sent).
	stream, err = kv.Calls(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&kvv1.CallBatch{Calls: []*kvv1.Call{get(1)}, Cancel: make([]uint64, transport.MaxBatchCalls+1)}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("cancellations over the bound: %v, want RESOURCE_EXHAUSTED", err)
	}
}
