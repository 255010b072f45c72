package node

import (
	"context"
	"testing"
	"time"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/transport"
)

// TestSendRepliesSplitsAndBounds: replies go in messages of at most
// replyBatchBytes (a larger one alone), and a reply over the message
// limit becomes its call's RESOURCE_EXHAUSTED instead of failing the
// stream.
func TestSendRepliesSplitsAndBounds(t *testing.T) {
	get := func(id uint64, size int) *kvv1.Reply {
		return &kvv1.Reply{Id: id, Result: &kvv1.Reply_Get{Get: &kvv1.GetResponse{Siblings: []*kvv1.Sibling{{Value: make([]byte, size)}}}}}
	}
	const maxMsg = 16 << 20
	rs := []*kvv1.Reply{get(1, 100), get(2, 3<<20), get(3, 3<<20), get(4, 5<<20), get(5, 100), get(6, 17<<20), get(7, 100)}
	var batches [][]uint64
	err := sendReplies(rs, maxMsg, func(b []*kvv1.Reply) error {
		var ids []uint64
		for _, r := range b {
			ids = append(ids, r.GetId())
		}
		batches = append(batches, ids)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := [][]uint64{{1, 2}, {3}, {4}, {5, 6, 7}}
	if len(batches) != len(want) {
		t.Fatalf("batches %v, want %v", batches, want)
	}
	for i := range want {
		if len(batches[i]) != len(want[i]) {
			t.Fatalf("batches %v, want %v", batches, want)
		}
		for j := range want[i] {
			if batches[i][j] != want[i][j] {
				t.Fatalf("batches %v, want %v", batches, want)
			}
		}
	}
	e, ok := rs[5].GetResult().(*kvv1.Reply_Error)
	if !ok {
		t.Fatalf("reply over the limit sent as is")
	}
	var sp spb.Status
	if err := proto.Unmarshal(e.Error, &sp); err != nil {
		t.Fatal(err)
	}
	if st := status.FromProto(&sp); st.Code() != codes.ResourceExhausted || rs[5].GetId() != 6 {
		t.Fatalf("reply over the limit: %v (id %d), want RESOURCE_EXHAUSTED for call 6", st.Err(), rs[5].GetId())
	}
}

// TestLateReplicaCallIsNotRun: a piped replica call that waited past its
// deadline is answered DEADLINE_EXCEEDED without running (this server has
// no node: running it would panic).
func TestLateReplicaCallIsNotRun(t *testing.T) {
	s := &replicaServer{}
	c := &internalv1.Call{Id: 7, Op: &internalv1.Call_Write{Write: &internalv1.WriteRequest{Key: []byte("k")}}}
	r := s.serveCall(context.Background(), c, time.Now().Add(-time.Millisecond))
	if st := transport.ReplyStatus(r); st.Code() != codes.DeadlineExceeded {
		t.Fatalf("late call answered %v, want DEADLINE_EXCEEDED", st.Err())
	}
}

// TestRunningCallsCancel: a cancellation from the sender cancels the
// running call of that ID only; IDs not running (done, not started, or
// made up) are ignored, and a batch's cancellations past maxCancels are
// not looked at.
func TestRunningCallsCancel(t *testing.T) {
	var r runningCalls
	ctx1, cancel1 := context.WithCancel(context.Background())
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	r.add(1, cancel1)
	r.add(2, cancel2)
	r.cancel([]uint64{1, 99})
	if ctx1.Err() == nil || ctx2.Err() != nil {
		t.Fatalf("after cancelling 1: call 1 %v, call 2 %v; want only 1 cancelled", ctx1.Err(), ctx2.Err())
	}
	r.remove(2)
	r.cancel([]uint64{2})
	if ctx2.Err() != nil {
		t.Fatal("a call already done was cancelled")
	}
	ctx3, cancel3 := context.WithCancel(context.Background())
	defer cancel3()
	r.add(3, cancel3)
	many := make([]uint64, maxCancels+1)
	many[maxCancels] = 3 // past the bound
	r.cancel(many)
	if ctx3.Err() != nil {
		t.Fatal("a cancellation past maxCancels was looked at")
	}
}
