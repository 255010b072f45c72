package replica

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/meridiankv/meridian/version"
)

// Hint is a copy of a key held for a replica that was unreachable.
type Hint struct {
	Target   string
	Loc      Loc
	Keyspace string
	Key      []byte
	Set      version.Set
}

func hintPrefix(target string) []byte {
	k := make([]byte, 0, 2+len(target))
	k = append(k, prefixHint, byte(len(target)))
	return append(k, target...)
}

func hintKey(target string, loc Loc, key []byte) []byte {
	k := hintPrefix(target)
	k = binary.BigEndian.AppendUint32(k, loc.Keyspace)
	k = binary.BigEndian.AppendUint16(k, uint16(loc.Partition))
	return append(k, key...)
}

// StoreHint merges set into the hint held for target (one hint per target
// and key: repeated writes while the target is down fold into one).
func (s *Store) StoreHint(target string, loc Loc, keyspace string, key []byte, set version.Set, sync bool) error {
	if target == "" || len(target) > 255 || len(keyspace) > 255 {
		return fmt.Errorf("replica: bad hint target %q or keyspace %q", target, keyspace)
	}
	if len(key) > MaxKeyLen {
		return ErrKeyTooLong
	}
	hk := hintKey(target, loc, key)
	mu := &s.locks[stripe(loc.Keyspace, key)]
	mu.Lock()
	defer mu.Unlock()
	cur, _, err := s.readHint(hk)
	if err != nil {
		return err
	}
	merged := version.Merge(cur, set)
	b := s.eng.NewBatch()
	defer b.Close()
	b.Set(hk, encodeHint(keyspace, merged))
	return b.Commit(sync)
}

func encodeHint(keyspace string, set version.Set) []byte {
	v := append([]byte{byte(len(keyspace))}, keyspace...)
	return set.AppendEncode(v)
}

func (s *Store) readHint(hk []byte) (version.Set, string, error) {
	raw, err := s.eng.Get(hk)
	if err != nil {
		if isNotFound(err) {
			return version.Set{}, "", nil
		}
		return version.Set{}, "", fmt.Errorf("replica: read hint: %w", err)
	}
	return decodeHintValue(raw)
}

func decodeHintValue(raw []byte) (version.Set, string, error) {
	if len(raw) < 1 || len(raw) < 1+int(raw[0]) {
		return version.Set{}, "", errors.New("replica: malformed hint")
	}
	ks := string(raw[1 : 1+raw[0]])
	set, err := version.DecodeSet(raw[1+raw[0]:])
	if err != nil {
		return version.Set{}, "", fmt.Errorf("replica: hint: %w", err)
	}
	return set, ks, nil
}

// Hints calls fn for every hint held for target, in key order, until fn
// returns false. With target "" it visits hints for every target.
func (s *Store) Hints(target string, fn func(Hint) bool) error {
	lower := []byte{prefixHint}
	upper := []byte{prefixHint + 1}
	if target != "" {
		lower = hintPrefix(target)
		upper = hintUpper(target)
	}
	it, err := s.eng.NewIter(lower, upper)
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		if len(k) < 2 || len(k) < 2+int(k[1])+6 {
			continue
		}
		tl := int(k[1])
		h := Hint{Target: string(k[2 : 2+tl])}
		rest := k[2+tl:]
		h.Loc = Loc{Keyspace: binary.BigEndian.Uint32(rest[:4]), Partition: int(binary.BigEndian.Uint16(rest[4:6]))}
		h.Key = append([]byte(nil), rest[6:]...)
		h.Set, h.Keyspace, err = decodeHintValue(it.Value())
		if err != nil {
			return err
		}
		if !fn(h) {
			break
		}
	}
	return it.Error()
}

// hintUpper is the first key after every hint of target.
func hintUpper(target string) []byte {
	p := hintPrefix(target)
	// Increment the prefix as a big-endian number.
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] != 0xff {
			p[i]++
			return p[:i+1]
		}
	}
	return nil
}

// DeleteHint removes a delivered hint, unless it changed since delivered
// (a newer write folded in): then it stays for the next round.
func (s *Store) DeleteHint(h Hint) (bool, error) {
	hk := hintKey(h.Target, h.Loc, h.Key)
	mu := &s.locks[stripe(h.Loc.Keyspace, h.Key)]
	mu.Lock()
	defer mu.Unlock()
	cur, _, err := s.readHint(hk)
	if err != nil {
		return false, err
	}
	if !cur.Equal(h.Set) {
		return false, nil
	}
	b := s.eng.NewBatch()
	defer b.Close()
	b.Delete(hk)
	return true, b.Commit(false)
}

// HintTargets returns the nodes this store holds at least one hint for, in
// order, seeking from one target's hints to the next.
func (s *Store) HintTargets() ([]string, error) {
	it, err := s.eng.NewIter([]byte{prefixHint}, []byte{prefixHint + 1})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []string
	for ok := it.First(); ok; {
		k := it.Key()
		if len(k) < 2 || len(k) < 2+int(k[1]) {
			ok = it.Next()
			continue
		}
		target := string(k[2 : 2+int(k[1])])
		out = append(out, target)
		next := hintUpper(target)
		if next == nil {
			break
		}
		ok = it.SeekGE(next)
	}
	return out, it.Error()
}
