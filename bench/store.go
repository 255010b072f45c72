package bench

import (
	"context"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/client"
)

// Store is what the benchmark drives. Implementations are safe for
// concurrent use.
type Store interface {
	// Get reads a key and returns its causal context.
	Get(ctx context.Context, key []byte) (kvctx []byte, found bool, err error)
	// Put writes a value with a causal context (nil for a blind write) and
	// returns the new context.
	Put(ctx context.Context, key, value, kvctx []byte) ([]byte, error)
}

// GRPCStore drives Meridian's kv.v1 API, spreading requests over several
// nodes' clients round-robin.
type GRPCStore struct {
	Clients  []kvv1.KVClient
	Keyspace string
	Read     *kvv1.Consistency
	Write    *kvv1.Consistency
}

func (s *GRPCStore) client(key []byte) kvv1.KVClient {
	if len(s.Clients) == 1 {
		return s.Clients[0]
	}
	// Spread by key so a key's requests go to one node (it coordinates
	// its writes with warm state), while load spreads over all nodes.
	h := uint64(0xCBF29CE484222325)
	for _, b := range key {
		h = (h ^ uint64(b)) * 1099511628211
	}
	return s.Clients[h%uint64(len(s.Clients))]
}

// Get implements Store.
func (s *GRPCStore) Get(ctx context.Context, key []byte) ([]byte, bool, error) {
	resp, err := s.client(key).Get(ctx, &kvv1.GetRequest{Keyspace: s.Keyspace, Key: key, Consistency: s.Read})
	if err != nil {
		return nil, false, err
	}
	found := false
	for _, sib := range resp.Siblings {
		found = found || !sib.Tombstone
	}
	return resp.Context, found, nil
}

// Put implements Store.
func (s *GRPCStore) Put(ctx context.Context, key, value, kvctx []byte) ([]byte, error) {
	resp, err := s.client(key).Put(ctx, &kvv1.PutRequest{Keyspace: s.Keyspace, Key: key, Value: value, Context: kvctx, Consistency: s.Write})
	if err != nil {
		return nil, err
	}
	return resp.Context, nil
}

// ClientStore drives Meridian through the partition-aware Go client: each
// request goes straight to a replica of its key.
type ClientStore struct {
	Client   *client.Client
	Keyspace string
	Read     *kvv1.Consistency
	Write    *kvv1.Consistency
}

// Get implements Store.
func (s *ClientStore) Get(ctx context.Context, key []byte) ([]byte, bool, error) {
	res, err := s.Client.Get(ctx, s.Keyspace, key, client.Consistency(s.Read))
	if err != nil {
		return nil, false, err
	}
	return res.Context, len(res.Values) > 0, nil
}

// Put implements Store.
func (s *ClientStore) Put(ctx context.Context, key, value, kvctx []byte) ([]byte, error) {
	res, err := s.Client.Put(ctx, s.Keyspace, key, value, client.Consistency(s.Write), client.Context(kvctx))
	if err != nil {
		return nil, err
	}
	return res.Context, nil
}
