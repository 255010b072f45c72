// Package codec puts the API's protobuf messages on the wire for gRPC, the
// way gRPC's own codec does, except that every message is marshalled into a
// buffer from gRPC's pool, small ones included. gRPC's codec allocates a
// fresh slice (and an interface box for it) for each message under 1 KiB,
// which for a store of small values is nearly every call, reply and batch:
// two allocations per message on the hottest path. The bytes on the wire
// are the same, so either side may use either codec.
//
// Use it on both ends: grpc.ForceServerCodecV2(codec.Proto{}) on a server,
// grpc.WithDefaultCallOptions(grpc.ForceCodecV2(codec.Proto{})) on a client.
package codec

import (
	"fmt"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// Proto is the codec. Its name is gRPC's ("proto"), so the content type on
// the wire does not change.
type Proto struct{}

// pooled is the least capacity asked of the pool: gRPC returns buffers
// smaller than its pooling threshold (1 KiB) to no pool, so a smaller one
// would be garbage after one use.
const pooled = 1<<10 + 1

// Name is the content subtype, gRPC's own.
func (Proto) Name() string { return "proto" }

// Marshal encodes v into one pooled buffer, which gRPC frees once written.
func (Proto) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("codec: cannot marshal %T: not a protobuf message", v)
	}
	size := proto.Size(m)
	pool := mem.DefaultBufferPool()
	buf := pool.Get(max(size, pooled))
	// UseCachedSize reuses the sizes proto.Size just stored in the message
	// (it must not change concurrently, as for gRPC's codec).
	out, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend((*buf)[:0], m)
	if err != nil {
		pool.Put(buf)
		return nil, err
	}
	*buf = out
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

// Unmarshal decodes data into v, as gRPC's codec does.
func (Proto) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("codec: cannot unmarshal into %T: not a protobuf message", v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}
