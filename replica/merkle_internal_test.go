package replica

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/cespare/xxhash/v2"

	"github.com/meridiankv/meridian/engine/memory"
	"github.com/meridiankv/meridian/version"
)

// BenchmarkTreeWrite isolates what a write to a partition with a built tree
// adds to the write path: the tree lookup, the old and new contributions,
// the tree's read lock and the leaf XOR (the commit itself is left out).
func BenchmarkTreeWrite(b *testing.B) {
	for _, size := range []int{100, 4096} {
		b.Run(fmt.Sprintf("value=%d", size), func(b *testing.B) {
			s, err := Open(memory.New(), "n1")
			if err != nil {
				b.Fatal(err)
			}
			loc := Loc{Keyspace: 1, Partition: 1}
			if _, err := s.Leaves(loc); err != nil {
				b.Fatal(err)
			}
			val := version.Value{Bytes: bytes.Repeat([]byte("x"), size)}
			old, _ := version.Set{}.Put(version.Clock{}, "n1#abc", val, 1)
			next, _ := old.Put(old.Context(), "n1#abc", val, 2)
			h := xxhash.Sum64([]byte("some-user-key-0001"))
			b.ReportAllocs()
			for b.Loop() {
				t := s.trees.get(loc)
				d := contribution(h, old) ^ contribution(h, next)
				t.mu.RLock()
				if t.state != treePending {
					t.xor(bucketOf(h), d)
				}
				t.mu.RUnlock()
			}
		})
	}
}
