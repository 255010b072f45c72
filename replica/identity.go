package replica

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/meridiankv/meridian/engine"
)

// Writer identity. Every store incarnation mints version dots under an
// actor name no store has used before: the node ID, '#', and a random
// 64-bit number taken when the store is created and again after every
// unclean shutdown (when unsynced writes, and the dots they carried, may be
// gone). A bare node ID is never an actor, so a node restarted on a wiped or
// replaced disk cannot re-mint the dots its previous disk handed out.
//
// Within an incarnation, dots come from a store-wide counter that only
// grows (version.Set.Mint's floor). The counter is leased in blocks: the
// ceiling is made durable before any counter below it is used, so a crash
// never hands out a counter twice.

const (
	metaActor        = "actor"
	metaIncarnations = "incarnations"
	metaCeiling      = "counter-ceiling"

	// counterBlock is how many counters one durable lease covers.
	counterBlock = 1 << 20
	// maxIncarnations bounds the persisted list of past actors.
	maxIncarnations = 64
)

// counter hands out store-wide counters from a durable lease.
type counter struct {
	eng  engine.Engine
	next atomic.Uint64 // the last counter handed out
	mu   struct {
		sync.Mutex
		ceiling uint64 // counters up to here are covered by the lease
	}
}

// Next returns a counter never returned before by this store, across
// restarts and crashes.
func (c *counter) Next() (uint64, error) {
	n := c.next.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if n <= c.mu.ceiling {
		return n, nil
	}
	ceiling := max(c.mu.ceiling, n) + counterBlock
	if err := putUint(c.eng, metaKey(metaCeiling), ceiling); err != nil {
		return 0, fmt.Errorf("replica: extend counter lease: %w", err)
	}
	c.mu.ceiling = ceiling
	return n, nil
}

func putUint(eng engine.Engine, k []byte, v uint64) error {
	b := eng.NewBatch()
	defer b.Close()
	b.Set(k, binary.BigEndian.AppendUint64(nil, v))
	return b.Commit(true)
}

// openIdentity reads or creates the store's actor. clean says whether the
// previous run recorded a clean shutdown.
func openIdentity(eng engine.Engine, nodeID string, clean bool, random io.Reader) (actor string, past []string, ctr *counter, err error) {
	cur, err := eng.Get(metaKey(metaActor))
	switch {
	case err == nil:
		actor = string(cur)
	case errors.Is(err, engine.ErrNotFound):
	default:
		return "", nil, nil, fmt.Errorf("replica: read actor: %w", err)
	}
	if raw, err := eng.Get(metaKey(metaIncarnations)); err == nil {
		past = strings.Fields(string(raw))
	} else if !errors.Is(err, engine.ErrNotFound) {
		return "", nil, nil, fmt.Errorf("replica: read incarnations: %w", err)
	}
	if actor != "" && !strings.HasPrefix(actor, nodeID+"#") {
		return "", nil, nil, fmt.Errorf("replica: this data belongs to actor %q, not to node %q", actor, nodeID)
	}
	if actor == "" || !clean {
		var b [8]byte
		if _, err := io.ReadFull(random, b[:]); err != nil {
			return "", nil, nil, fmt.Errorf("replica: draw an incarnation: %w", err)
		}
		actor = nodeID + "#" + strconv.FormatUint(binary.BigEndian.Uint64(b[:]), 36)
		past = append(past, actor)
		if len(past) > maxIncarnations {
			past = past[len(past)-maxIncarnations:]
		}
	}
	ceiling, err := readUint(eng, metaKey(metaCeiling))
	if err != nil {
		return "", nil, nil, fmt.Errorf("replica: read counter lease: %w", err)
	}
	// Counters below the old ceiling may have been handed out: start above
	// it, with a new lease, recorded with the actor in one durable batch.
	ctr = &counter{eng: eng}
	ctr.next.Store(ceiling)
	ctr.mu.ceiling = ceiling + counterBlock
	b := eng.NewBatch()
	defer b.Close()
	b.Set(metaKey(metaActor), []byte(actor))
	b.Set(metaKey(metaIncarnations), []byte(strings.Join(past, " ")))
	b.Set(metaKey(metaCeiling), binary.BigEndian.AppendUint64(nil, ctr.mu.ceiling))
	b.Delete(metaKey(metaClean))
	if err := b.Commit(true); err != nil {
		return "", nil, nil, fmt.Errorf("replica: record incarnation: %w", err)
	}
	return actor, past, ctr, nil
}

// NextCounter returns a store-wide counter never returned before: the floor
// for the next dot this store mints, and the suffix of one-off actor names.
func (s *Store) NextCounter() (uint64, error) { return s.ctr.Next() }

// MintedUpTo is the highest counter this store has handed out: no version
// of its actor (Actor) can have a higher one, whatever a peer claims.
func (s *Store) MintedUpTo() uint64 { return s.ctr.next.Load() }

// Incarnations lists the actors this store has minted under, oldest first
// (at most the last 64); the last one is Actor.
func (s *Store) Incarnations() []string { return append([]string(nil), s.past...) }
