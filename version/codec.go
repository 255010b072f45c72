package version

import (
	"encoding/binary"
	"fmt"
	"math/bits"
)

// Encoding (all integers uvarint unless noted, strings and bytes
// length-prefixed):
//
//	clock: format(1 byte = 1) | n | n × (node | counter | time as zigzag varint)
//	set:   format(1 byte = 1) | clock body (n | entries) | m | m × sibling
//	sibling: dot node | dot counter | flags(1 byte: bit0 tombstone, bit1 request ID) | wall (varint) | logical | [request ID bytes] | value bytes
//
// Node names in sibling dots refer to the clock's entries by index + 1
// (0 = literal name follows), which keeps sets with many siblings small.
const formatV1 = 1

// Hard limits, the same for the encoder's callers (Set.Check) and the
// decoder: a set that Check accepts always decodes, and a lying length
// prefix cannot cause a huge allocation.
const (
	// MaxSiblings is the most siblings a stored set can hold.
	MaxSiblings = 1024
	// MaxClockEntries is the most entries a clock can hold: one per
	// sibling's actor plus the pruning policy's free entries, with room.
	MaxClockEntries = 2048
	// MaxNameLen is the longest actor name.
	MaxNameLen = 256
	// MaxCounter is the largest counter accepted; far beyond anything a
	// store mints (2^62), it leaves room so that +1 never wraps.
	MaxCounter = 1 << 62
	// MaxRequestIDLen is the longest request ID.
	MaxRequestIDLen = 64
	// MaxSetBytes is the largest encoded set.
	MaxSetBytes = 128 << 20
	// MaxClockBytes bounds an encoded clock within these limits (as
	// Clock.EncodedSize counts).
	MaxClockBytes = 1 + binary.MaxVarintLen64 + MaxClockEntries*(3*binary.MaxVarintLen64+MaxNameLen)
)

const (
	flagTombstone = 1 << 0
	flagRequestID = 1 << 1
)

// Encode returns the compact binary form of the clock (empty for an empty
// clock).
func (c Clock) Encode() []byte {
	if c.IsEmpty() {
		return nil
	}
	return c.AppendEncode(make([]byte, 0, c.EncodedSize()))
}

// AppendEncode appends Encode's output to dst.
func (c Clock) AppendEncode(dst []byte) []byte {
	if c.IsEmpty() {
		return dst
	}
	return c.appendBody(append(dst, formatV1))
}

// EncodedSize returns len(c.Encode()), cheaply.
func (c Clock) EncodedSize() int {
	if c.IsEmpty() {
		return 0
	}
	return 1 + c.bodySize()
}

// bodySize is the exact length of appendBody's output.
func (c Clock) bodySize() int {
	size := uvarintLen(uint64(len(c.Entries)))
	for _, e := range c.Entries {
		size += uvarintLen(uint64(len(e.Node))) + len(e.Node) + uvarintLen(e.Counter) + varintLen(e.Time)
	}
	return size
}

// uvarintLen is the length of binary.AppendUvarint's encoding of x.
func uvarintLen(x uint64) int { return (bits.Len64(x|1) + 6) / 7 }

// varintLen is the length of binary.AppendVarint's encoding of x.
func varintLen(x int64) int {
	ux := uint64(x) << 1
	if x < 0 {
		ux = ^ux
	}
	return uvarintLen(ux)
}

func (c Clock) appendBody(b []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(c.Entries)))
	for _, e := range c.Entries {
		b = appendString(b, e.Node)
		b = binary.AppendUvarint(b, e.Counter)
		b = binary.AppendVarint(b, e.Time)
	}
	return b
}

// DecodeClock parses Encode's output; empty input is the empty clock.
func DecodeClock(b []byte) (Clock, error) {
	if len(b) == 0 {
		return Clock{}, nil
	}
	if b[0] != formatV1 {
		return Clock{}, fmt.Errorf("%w: unknown clock format %d", ErrMalformed, b[0])
	}
	d := decoder{b: b[1:]}
	c := d.clock()
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return Clock{}, d.err
	}
	return c, nil
}

// EncodedSize returns len(s.Encode()), cheaply (row caches charge what
// an encoding holds, and buffers are sized by it).
func (s Set) EncodedSize() int {
	size := 1 + s.Clock.bodySize() + uvarintLen(uint64(len(s.Siblings)))
	for _, sib := range s.Siblings {
		v := sib.Value
		if i, ok := s.Clock.find(sib.Dot.Node); ok {
			size += uvarintLen(uint64(i + 1))
		} else {
			size += 1 + uvarintLen(uint64(len(sib.Dot.Node))) + len(sib.Dot.Node)
		}
		size += uvarintLen(sib.Dot.Counter) + 1 + varintLen(v.Time.Wall) + uvarintLen(uint64(v.Time.Logical)) +
			uvarintLen(uint64(len(v.Bytes))) + len(v.Bytes)
		if len(v.RequestID) > 0 {
			size += uvarintLen(uint64(len(v.RequestID))) + len(v.RequestID)
		}
	}
	return size
}

// Encode returns the compact, deterministic binary form of the set.
func (s Set) Encode() []byte { return s.AppendEncode(nil) }

// AppendEncode appends the set's binary form to dst.
func (s Set) AppendEncode(dst []byte) []byte {
	// Exact, so the buffer is allocated once and holds no slack (a row
	// cache keeps it).
	size := s.EncodedSize()
	if cap(dst)-len(dst) < size {
		n := make([]byte, len(dst), len(dst)+size)
		copy(n, dst)
		dst = n
	}
	dst = append(dst, formatV1)
	dst = s.Clock.appendBody(dst)
	dst = binary.AppendUvarint(dst, uint64(len(s.Siblings)))
	for _, sib := range s.Siblings {
		if i, ok := s.Clock.find(sib.Dot.Node); ok {
			dst = binary.AppendUvarint(dst, uint64(i+1))
		} else {
			dst = append(dst, 0)
			dst = appendString(dst, sib.Dot.Node)
		}
		dst = binary.AppendUvarint(dst, sib.Dot.Counter)
		var flags byte
		if sib.Value.Tombstone {
			flags |= flagTombstone
		}
		if len(sib.Value.RequestID) > 0 {
			flags |= flagRequestID
		}
		dst = append(dst, flags)
		dst = binary.AppendVarint(dst, sib.Value.Time.Wall)
		dst = binary.AppendUvarint(dst, uint64(sib.Value.Time.Logical))
		if len(sib.Value.RequestID) > 0 {
			dst = binary.AppendUvarint(dst, uint64(len(sib.Value.RequestID)))
			dst = append(dst, sib.Value.RequestID...)
		}
		dst = binary.AppendUvarint(dst, uint64(len(sib.Value.Bytes)))
		dst = append(dst, sib.Value.Bytes...)
	}
	return dst
}

// DecodeSet parses Encode's output. Empty input is the empty set. It checks
// the invariants (sorted unique entries and dots, dots covered by the clock)
// so corrupted bytes are rejected rather than merged.
func DecodeSet(b []byte) (Set, error) { return decodeSet(b, false) }

// DecodeSetShared is DecodeSet without copying values and request IDs: they
// alias b. For a buffer the caller owns outright (a copy read from an
// engine, a decoded message) and never modifies while the set is in use.
func DecodeSetShared(b []byte) (Set, error) { return decodeSet(b, true) }

func decodeSet(b []byte, share bool) (Set, error) {
	if len(b) == 0 {
		return Set{}, nil
	}
	if b[0] != formatV1 {
		return Set{}, fmt.Errorf("%w: unknown set format %d", ErrMalformed, b[0])
	}
	d := decoder{b: b[1:], share: share}
	s := Set{Clock: d.clock()}
	n := d.uvarint()
	if len(b) > MaxSetBytes {
		d.fail("set of %d bytes over the limit of %d", len(b), MaxSetBytes)
	}
	if n > MaxSiblings || n > uint64(len(d.b)) {
		d.fail("sibling count %d too large", n)
	}
	if d.err == nil && n > 0 {
		s.Siblings = make([]Sibling, 0, n)
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		var sib Sibling
		ref := d.uvarint()
		switch {
		case ref == 0:
			sib.Dot.Node = d.string()
		case ref <= uint64(len(s.Clock.Entries)):
			sib.Dot.Node = s.Clock.Entries[ref-1].Node
		default:
			d.fail("sibling node reference %d out of range", ref)
		}
		sib.Dot.Counter = d.counter()
		flags := d.byte()
		if flags&^(flagTombstone|flagRequestID) != 0 {
			d.fail("unknown sibling flags %#x", flags)
		}
		sib.Value.Tombstone = flags&flagTombstone != 0
		sib.Value.Time.Wall = d.varint()
		logical := d.uvarint()
		if logical > 1<<32-1 {
			d.fail("logical time %d too large", logical)
		}
		sib.Value.Time.Logical = uint32(logical)
		if flags&flagRequestID != 0 {
			sib.Value.RequestID = d.bytes()
			if n := len(sib.Value.RequestID); d.err == nil && (n == 0 || n > MaxRequestIDLen) {
				d.fail("request ID of %d bytes", n)
			}
		}
		sib.Value.Bytes = d.bytes()
		if d.err != nil {
			break
		}
		if sib.Dot.Counter == 0 || !s.Clock.Covers(sib.Dot) {
			d.fail("sibling %s not covered by clock %s", sib.Dot, s.Clock)
		}
		if len(s.Siblings) > 0 && !s.Siblings[len(s.Siblings)-1].Dot.less(sib.Dot) {
			d.fail("siblings out of order")
		}
		s.Siblings = append(s.Siblings, sib)
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return Set{}, d.err
	}
	return s, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// decoder reads from b, remembering the first error.
type decoder struct {
	b   []byte
	err error
	// share: bytes() aliases b instead of copying.
	share bool
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
	}
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad uvarint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// counter reads a counter and checks it against MaxCounter.
func (d *decoder) counter() uint64 {
	v := d.uvarint()
	if v > MaxCounter {
		d.fail("counter %d over the limit of %d", v, uint64(MaxCounter))
		return 0
	}
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail("truncated")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail("length %d beyond the %d bytes left", n, len(d.b))
		return nil
	}
	var out []byte
	if d.share {
		out = d.b[:n:n] // capped: an append to it never overwrites what follows
	} else {
		out = make([]byte, n)
		copy(out, d.b[:n])
	}
	d.b = d.b[n:]
	return out
}

func (d *decoder) string() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n == 0 || n > MaxNameLen || n > uint64(len(d.b)) {
		d.fail("name length %d invalid", n)
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) clock() Clock {
	n := d.uvarint()
	if n > MaxClockEntries || n > uint64(len(d.b)) {
		d.fail("clock entry count %d too large", n)
	}
	if d.err != nil {
		return Clock{}
	}
	var c Clock
	if n > 0 {
		c.Entries = make([]Entry, 0, n)
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		e := Entry{Node: d.string(), Counter: d.counter(), Time: d.varint()}
		if d.err != nil {
			break
		}
		if e.Counter == 0 {
			d.fail("clock entry %q has counter 0", e.Node)
		}
		if len(c.Entries) > 0 && c.Entries[len(c.Entries)-1].Node >= e.Node {
			d.fail("clock entries out of order")
		}
		c.Entries = append(c.Entries, e)
	}
	return c
}
