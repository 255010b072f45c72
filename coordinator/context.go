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
	// MaxContextBytes bounds a client context.
	MaxContextBytes = 64 << 10
)

// sealer signs and checks contexts. Its keys can be swapped at run time
// (secret rotation without a restart).
type sealer struct {
	keys atomic.Pointer[sealKeys]
}

// sealKeys is one generation of secrets with a pool of HMACs for the first.
type sealKeys struct {
	secrets [][]byte
	pool    sync.Pool
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
	k.pool.New = func() any { return hmac.New(sha256.New, first) }
	s.keys.Store(k)
	return nil
}

func (s *sealer) mac(h hash.Hash, keyspace string, key, clock []byte) []byte {
	h.Reset()
	var n [binary.MaxVarintLen64]byte
	h.Write([]byte(contextTag))
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(keyspace)))])
	h.Write([]byte(keyspace))
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(key)))])
	h.Write(key)
	h.Write(clock)
	return h.Sum(nil)[:contextMACLen]
}

// Seal returns the context to hand a client for clock on (keyspace, key).
// An empty clock is an empty context.
func (s *sealer) Seal(keyspace string, key []byte, clock version.Clock) []byte {
	if clock.IsEmpty() {
		return nil
	}
	enc := clock.Encode()
	k := s.keys.Load()
	h := k.pool.Get().(hash.Hash)
	m := s.mac(h, keyspace, key, enc)
	k.pool.Put(h)
	out := make([]byte, 0, 1+contextMACLen+len(enc))
	out = append(out, contextFormat)
	out = append(out, m...)
	return append(out, enc...)
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
		var h hash.Hash
		if i == 0 {
			h = k.pool.Get().(hash.Hash)
		} else {
			h = hmac.New(sha256.New, secret)
		}
		if hmac.Equal(sum, s.mac(h, keyspace, key, enc)) {
			ok = true
		}
		if i == 0 {
			k.pool.Put(h)
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
