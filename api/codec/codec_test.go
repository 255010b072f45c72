package codec_test

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // gRPC's codec, to compare with
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/meridiankv/meridian/api/codec"
	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
)

func sample() *kvv1.CallBatch {
	return &kvv1.CallBatch{Calls: []*kvv1.Call{
		{Id: 7, TimeoutMicros: 1500, Op: &kvv1.Call_Put{Put: &kvv1.PutRequest{Key: []byte("k"), Value: []byte("small value")}}},
		{Id: 8, Op: &kvv1.Call_Get{Get: &kvv1.GetRequest{Key: []byte("other")}}},
	}}
}

func TestSameBytesAsGRPCsCodec(t *testing.T) {
	grpcs := encoding.GetCodecV2("proto")
	for _, m := range []proto.Message{sample(), &kvv1.CallBatch{}, &kvv1.PutRequest{Value: bytes.Repeat([]byte("v"), 64<<10)}} {
		ours, err := codec.Proto{}.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		theirs, err := grpcs.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ours.Materialize(), theirs.Materialize()) {
			t.Fatalf("%T: bytes differ from gRPC's codec", m)
		}
		// Either side decodes the other's bytes.
		got := m.ProtoReflect().New().Interface()
		if err := (codec.Proto{}).Unmarshal(theirs, got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, m) {
			t.Fatalf("%T: round trip changed the message", m)
		}
		ours.Free()
		theirs.Free()
	}
}

func TestSmallMessagesUsePooledBuffers(t *testing.T) {
	data, err := codec.Proto{}.Marshal(sample())
	if err != nil {
		t.Fatal(err)
	}
	defer data.Free()
	if len(data) != 1 {
		t.Fatalf("%d buffers, want 1", len(data))
	}
	if _, ok := data[0].(mem.SliceBuffer); ok {
		t.Fatal("a small message was marshalled into an unpooled slice")
	}
	// gRPC's codec allocates a slice, its interface box and the buffer list
	// for a small message; this one only the list.
	m := sample()
	grpcs := encoding.GetCodecV2("proto")
	count := func(c encoding.CodecV2) float64 {
		return testing.AllocsPerRun(200, func() {
			d, err := c.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			d.Free()
		})
	}
	if ours, theirs := count(codec.Proto{}), count(grpcs); ours >= theirs || ours > 1.5 {
		t.Fatalf("allocations per small message: %.1f, gRPC's codec %.1f", ours, theirs)
	}
}

func TestRefusesWhatIsNotAMessage(t *testing.T) {
	if _, err := (codec.Proto{}).Marshal("text"); err == nil {
		t.Fatal("marshalled a string")
	}
	if err := (codec.Proto{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer("x")}, new(int)); err == nil {
		t.Fatal("unmarshalled into an int")
	}
	if got := (codec.Proto{}).Name(); got != "proto" {
		t.Fatalf("name %q: the content type would change", got)
	}
}

// TestCountedRefusesBeforeDecoding: a Counted message with more entries
// than Max in a repeated field (messages, or packed varints) is refused
// without being decoded; one at the bound decodes as usual.
func TestCountedRefusesBeforeDecoding(t *testing.T) {
	c := codec.Proto{}
	wire := func(m proto.Message) mem.BufferSlice {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}
	}
	calls := func(n int) []*kvv1.Call {
		out := make([]*kvv1.Call, n)
		for i := range out {
			out[i] = &kvv1.Call{Id: uint64(i + 1)}
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		batch  *kvv1.CallBatch
		refuse bool
	}{
		{"calls at the bound", &kvv1.CallBatch{Calls: calls(4), Cancel: []uint64{1, 1 << 40, 3, 4}}, false},
		{"calls over", &kvv1.CallBatch{Calls: calls(5)}, true},
		{"empty calls over", &kvv1.CallBatch{Calls: []*kvv1.Call{{}, {}, {}, {}, {}}}, true},
		{"cancellations over", &kvv1.CallBatch{Cancel: []uint64{1, 2, 3, 1 << 60, 5}}, true},
	} {
		got := &kvv1.CallBatch{}
		in := codec.Counted{Message: got, Max: 4}
		if err := c.Unmarshal(wire(tc.batch), &in); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		switch {
		case tc.refuse && (in.Refused == nil || len(got.GetCalls())+len(got.GetCancel()) > 0):
			t.Errorf("%s: refused %v, decoded %d calls and %d cancellations; want refused, nothing decoded", tc.name, in.Refused, len(got.GetCalls()), len(got.GetCancel()))
		case !tc.refuse && (in.Refused != nil || !proto.Equal(got, tc.batch)):
			t.Errorf("%s: refused %v, decoded %v; want %v", tc.name, in.Refused, got, tc.batch)
		}
	}
}
