package transport

import (
	"google.golang.org/protobuf/proto"
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
