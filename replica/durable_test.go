package replica_test

import (
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/meridiankv/meridian/engine/pebble"
	"github.com/meridiankv/meridian/replica"
	"github.com/meridiankv/meridian/version"
)

// TestDurableWriteOfUnsyncedContentSurvivesCrash: a write without sync,
// then the same content written durably (nothing changes, so nothing is
// written). Once the durable call has returned, a crash that drops every
// unsynced byte must keep the value: the durable call acknowledged it.
func TestDurableWriteOfUnsyncedContentSurvivesCrash(t *testing.T) {
	for _, noSyncWait := range []bool{false, true} {
		name := map[bool]string{false: "Merge", true: "UpdateNoSyncWait"}[noSyncWait]
		t.Run(name, func(t *testing.T) {
			fs := vfs.NewCrashableMem()
			eng, err := pebble.Open(pebble.Options{Dir: "/db", FS: fs})
			if err != nil {
				t.Fatal(err)
			}
			s, err := replica.Open(eng, "n1")
			if err != nil {
				t.Fatal(err)
			}
			loc := replica.Loc{Keyspace: 1, Partition: 2}
			key := []byte("k")
			set, _ := version.Set{}.Put(version.Clock{}, "n2", version.Value{Bytes: []byte("v")}, 1)
			if _, err := s.Merge(loc, key, set, false); err != nil {
				t.Fatal(err)
			}
			if noSyncWait {
				_, wait, err := s.UpdateNoSyncWait(loc, key, func(cur version.Set) (version.Set, error) {
					return version.Merge(cur, set), nil
				})
				if err != nil {
					t.Fatal(err)
				}
				if err := wait(); err != nil {
					t.Fatal(err)
				}
			} else if _, err := s.Merge(loc, key, set, true); err != nil {
				t.Fatal(err)
			}

			// Power cut: no clean-shutdown marker, unsynced data gone.
			crashed := fs.CrashClone(vfs.CrashCloneCfg{})
			eng.Close()
			eng, err = pebble.Open(pebble.Options{Dir: "/db", FS: crashed})
			if err != nil {
				t.Fatal(err)
			}
			defer eng.Close()
			s, err = replica.Open(eng, "n1")
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.Get(loc, key)
			if err != nil {
				t.Fatal(err)
			}
			if !got.Equal(set) {
				t.Fatalf("after the crash the key holds %+v, want the durably acknowledged %+v", got, set)
			}
		})
	}
}
