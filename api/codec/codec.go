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
	"slices"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
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
	if c, ok := v.(*Counted); ok {
		if err := c.check(buf.ReadOnlyData()); err != nil {
			// Not an error to gRPC, which would answer INTERNAL at once
			// (a server stream writes the status of a failed receive
			// itself): the receiver answers from Refused.
			c.Refused = err
			return nil
		}
	}
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

// Counted is a message to receive (pass a *Counted to RecvMsg) whose
// repeated top-level fields are counted on the wire before it is decoded.
// Decoded, an entry can take many times its wire size (an empty message
// is 2 bytes on the wire, a pointer and a struct in memory; a packed
// varint 1 byte, 8 decoded), so a message within the size limit could
// otherwise take gigabytes. Past Max entries in any one field, Unmarshal
// decodes nothing and sets Refused, which the receiver must check (and
// answer, say with RESOURCE_EXHAUSTED) before using the message: gRPC
// would turn a codec error into an INTERNAL status of its own.
type Counted struct {
	proto.Message
	Max     int
	Refused error
}

// check counts the entries of each repeated top-level field in b: one per
// occurrence, or per element of a packed scalar.
func (c *Counted) check(b []byte) error {
	fields := c.ProtoReflect().Descriptor().Fields()
	type count struct {
		num protowire.Number
		n   int
	}
	var buf [4]count // on the stack for messages of a few repeated fields
	counts := buf[:0]
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil // malformed: proto.Unmarshal says so
		}
		b = b[n:]
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return nil
		}
		value := b[:m]
		b = b[m:]
		fd := fields.ByNumber(num)
		if fd == nil || !fd.IsList() {
			continue
		}
		entries := 1
		if typ == protowire.BytesType {
			if contents, k := protowire.ConsumeBytes(value); k > 0 {
				entries = packedEntries(fd.Kind(), contents)
			}
		}
		i := slices.IndexFunc(counts, func(c count) bool { return c.num == num })
		if i < 0 {
			i = len(counts)
			counts = append(counts, count{num: num})
		}
		if counts[i].n += entries; counts[i].n > c.Max {
			return fmt.Errorf("more than %d entries in %s of %s", c.Max, fd.Name(), fd.ContainingMessage().FullName())
		}
	}
	return nil
}

// packedEntries is how many elements the contents of a length-delimited
// field of kind k hold: one message, string or bytes; or a packed run of
// scalars (a varint ends in a byte below 0x80).
func packedEntries(k protoreflect.Kind, contents []byte) int {
	switch k {
	case protoreflect.MessageKind, protoreflect.GroupKind, protoreflect.StringKind, protoreflect.BytesKind:
		return 1
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		return len(contents) / 4
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		return len(contents) / 8
	}
	n := 0
	for _, c := range contents {
		if c < 0x80 {
			n++
		}
	}
	return n
}
