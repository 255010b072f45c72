package coordinator

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"sync"
	"sync/atomic"

	"github.com/meridiankv/meridian/version"
)

// Causal contexts handed to clients are authenticated: a client can only
// send back a context the cluster gave it, for the same keyspace and key.
// A forged or copied context would make the replicas treat writes they
// never showed the client as seen, and drop them.
//
// Wire form: format byte (1) | 16-byte MAC | encoded clock. The MAC is
// HMAC-SHA256 under the cluster secret over a domain tag, the keyspace, the
// key and the clock bytes. The first secret signs; every secret verifies,
// so operators rotate secrets without refusing contexts in flight.

const (
	contextFormat = 1
	contextMACLen = 16
	contextTag    = "meridian/context/v1"
	// MaxContextBytes bounds a client context: the largest the cluster
	// can issue (a clock at the codec's limits), so every context handed
	// out is accepted back (about 572 KiB).
	MaxContextBytes = 1 + contextMACLen + version.MaxClockBytes
)

// sealer signs and checks contexts. Its keys can be swapped at run time
// (secret rotation without a restart).
type sealer struct {
	keys atomic.Pointer[sealKeys]
}

// sealKeys is one generation of secrets with a pool of HMACs for the first.
type sealKeys struct {
	secrets [][]byte
	pool    sync.Pool // of *macer
}

// macer is an HMAC with scratch space for the MAC's input header and its
// sum, so that computing a MAC allocates nothing.
type macer struct {
	h   hash.Hash
	buf []byte
}

func newSealer(secrets [][]byte) (*sealer, error) {
	s := &sealer{}
	return s, s.set(secrets)
}

func (s *sealer) set(secrets [][]byte) error {
	if len(secrets) == 0 {
		return errors.New("coordinator: no cluster secret to authenticate contexts with")
	}
	k := &sealKeys{secrets: secrets}
	first := secrets[0]
	k.pool.New = func() any { return &macer{h: hmac.New(sha256.New, first)} }
	s.keys.Store(k)
	return nil
}

// mac returns the MAC of (keyspace, key, clock), in m's scratch space: use
// it before m goes back to the pool.
func (m *macer) mac(keyspace string, key, clock []byte) []byte {
	m.h.Reset()
	b := append(m.buf[:0], contextTag...)
	b = binary.AppendUvarint(b, uint64(len(keyspace)))
	b = append(b, keyspace...)
	b = binary.AppendUvarint(b, uint64(len(key)))
	m.h.Write(b)
	m.h.Write(key)
	m.h.Write(clock)
	m.buf = m.h.Sum(b[:0])
	return m.buf[:contextMACLen]
}

// Seal returns the context to hand a client for clock on (keyspace, key).
// An empty clock is an empty context.
func (s *sealer) Seal(keyspace string, key []byte, clock version.Clock) []byte {
	if clock.IsEmpty() {
		return nil
	}
	out := make([]byte, 1+contextMACLen, 1+contextMACLen+clock.EncodedSize())
	out[0] = contextFormat
	out = clock.AppendEncode(out)
	k := s.keys.Load()
	m := k.pool.Get().(*macer)
	copy(out[1:], m.mac(keyspace, key, out[1+contextMACLen:]))
	k.pool.Put(m)
	return out
}

// Open checks a client's context for (keyspace, key) and returns its
// clock; an empty context is the empty clock (a blind write). The error
// says what is wrong, for INVALID_ARGUMENT.
func (s *sealer) Open(keyspace string, key, ctx []byte) (version.Clock, error) {
	if len(ctx) == 0 {
		return version.Clock{}, nil
	}
	if len(ctx) > MaxContextBytes {
		return version.Clock{}, fmt.Errorf("context is %d bytes, over the %d-byte limit", len(ctx), MaxContextBytes)
	}
	if ctx[0] != contextFormat || len(ctx) < 1+contextMACLen+1 {
		return version.Clock{}, errors.New("context is not one this cluster issued (unknown format)")
	}
	sum, enc := ctx[1:1+contextMACLen], ctx[1+contextMACLen:]
	ok := false
	k := s.keys.Load()
	for i, secret := range k.secrets {
		var m *macer
		if i == 0 {
			m = k.pool.Get().(*macer)
		} else {
			m = &macer{h: hmac.New(sha256.New, secret)}
		}
		if hmac.Equal(sum, m.mac(keyspace, key, enc)) {
			ok = true
		}
		if i == 0 {
			k.pool.Put(m)
		}
		if ok {
			break
		}
	}
	if !ok {
		return version.Clock{}, errors.New("context was not issued for this keyspace and key, or was altered (contexts are bound to the key they were read from)")
	}
	clk, err := version.DecodeClock(enc)
	if err != nil {
		return version.Clock{}, fmt.Errorf("context is malformed: %v", err)
	}
	return clk, nil
}
