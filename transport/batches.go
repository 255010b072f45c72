package transport

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/meridiankv/meridian/api/codec"
)

// BatchBytes bounds a message of several replies or calls on a stream:
// gRPC clients receive at most 4 MiB in a message unless told otherwise.
const BatchBytes = 4<<20 - 64<<10

// SendReplies sends rs in batches of at most BatchBytes (a larger reply
// goes alone). A reply of size bytes over maxMsg, which no message could
// carry, is replaced by over(r, size): its call's own RESOURCE_EXHAUSTED.
// One reply must never fail the stream, and every other call on it.
func SendReplies[R proto.Message](rs []R, maxMsg int, over func(r R, size int) R, send func([]R) error) error {
	start, size := 0, 0
	for i, r := range rs {
		n := proto.Size(r) + 16 // with its tag and length
		if n > maxMsg-1024 {
			rs[i] = over(r, n)
			n = proto.Size(rs[i]) + 16
		}
		if i > start && size+n > BatchBytes {
			if err := send(rs[start:i]); err != nil {
				return err
			}
			start, size = i, 0
		}
		size += n
	}
	return send(rs[start:])
}

// MaxBatchCalls bounds the entries of one message on a calls stream (its
// calls, and a client's cancellations), counted on the wire before the
// message is decoded: within the message size limit, a batch of empty
// calls decodes to some 45 times its bytes (a 17 MiB message to 750 MB).
// Senders here stay well below it (a pipe's or client stream's waiting
// calls, 4,096 by default; a pipe also splits its sends at it).
const MaxBatchCalls = 16384

// RecvBatch receives one message of a calls stream into m: one with more
// than MaxBatchCalls entries in a field is refused, RESOURCE_EXHAUSTED,
// before it is decoded. (It needs the server to use codec.Proto, as the
// node's listeners do; under another codec nothing is counted.)
func RecvBatch(stream grpc.ServerStream, m proto.Message) error {
	in := codec.Counted{Message: m, Max: MaxBatchCalls}
	err := stream.RecvMsg(&in)
	if in.Refused != nil {
		return status.Errorf(codes.ResourceExhausted, "a call batch with %v: send at most %d calls (and %d cancellations) in one message", in.Refused, MaxBatchCalls, MaxBatchCalls)
	}
	return err
}
