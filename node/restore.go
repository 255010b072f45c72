package node

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/meridiankv/meridian/membership"
)

// A whole cluster restored onto new machines: every node's data directory
// gets its own snapshot (`meridian snapshot restore --from`), and the
// nodes start as a new cluster (`--initial-cluster`, new addresses). Each
// store still holds the old cluster's metadata (cached at its last
// apply), but no node has a metadata log. The first leader initializes
// the new cluster from that metadata (membership's restored init: the
// same ring, members and keyspaces, a new cluster ID, the new addresses),
// so the restored data sits where the ring says it does. A restored node
// adopts only a cluster initialized from its own old cluster: one
// started afresh would place keys by another ring, and this node's data
// would be unreachable by reads.

// metaLogExists reports whether the node's metadata log has a store on
// disk (a node that ran as a member before). The memory engine keeps the
// log in memory: it never has one at start.
func metaLogExists(cfg Config) bool {
	if cfg.Engine == "memory" || cfg.DataDir == "" {
		return false
	}
	_, err := os.Stat(filepath.Join(cfg.DataDir, "raft", "raft.db"))
	return err == nil || !errors.Is(err, fs.ErrNotExist)
}

// adoptable says whether a node whose data was last placed by the
// metadata of cluster dataCluster ("": it has none) may route by agreed
// state st, and if not, why: st must be of that cluster or of a cluster
// initialized from it. restored says the data came from a snapshot onto
// a node with no metadata log (for the message).
func adoptable(dataCluster string, restored bool, st *membership.MetaState) error {
	switch {
	case dataCluster == "" || st.ClusterID == dataCluster || st.RestoredFrom == dataCluster:
		return nil
	case restored && st.RestoredFrom == "":
		return fmt.Errorf("this node's data was restored from a snapshot of cluster %s, but the cluster was initialized afresh (its first leader had no restored data): keys are placed by another ring there and this node's data would not be found. Restore every node of the new cluster from its snapshot before its first start, or move this node's data directory aside to start it empty", dataCluster)
	case restored:
		return fmt.Errorf("this node's data was restored from a snapshot of cluster %s, but the cluster was initialized from cluster %s's: restore every node from snapshots of one cluster", dataCluster, st.RestoredFrom)
	default:
		return fmt.Errorf("this node's data was last in cluster %s, but its metadata log is of cluster %s (data restored from another cluster's snapshot?): restore this node's own snapshot, or move its data directory aside to start it empty", dataCluster, st.ClusterID)
	}
}
