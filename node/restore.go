package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

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

// In the data directory: CLUSTER_ID names the cluster the node's data
// was last placed by (written when the node adopts a cluster), so an
// offline restore can refuse a snapshot of another cluster into a member;
// RESTORED.json marks data restored onto a node with no metadata log, from
// the restore until the node adopted a cluster initialized from it (a
// restart in between must not route by the old cluster's metadata).
const (
	clusterIDFile   = "CLUSTER_ID"
	restoreMarkFile = "RESTORED.json"
)

// restoreMark is RESTORED.json.
type restoreMark struct {
	Node      string `json:"node"`
	Snapshot  string `json:"snapshot"`
	ClusterID string `json:"cluster_id"`
	Epoch     uint64 `json:"epoch"`
}

// onDisk reports whether the node keeps its data in cfg.DataDir.
func onDisk(cfg Config) bool { return cfg.Engine != "memory" && cfg.DataDir != "" }

// readRestoreMark reads dataDir's RESTORED.json (nil: there is none).
func readRestoreMark(dataDir string) (*restoreMark, error) {
	raw, err := os.ReadFile(filepath.Join(dataDir, restoreMarkFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var m restoreMark
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dataDir, restoreMarkFile), err)
	}
	return &m, nil
}

// readClusterIDFile reads dataDir's CLUSTER_ID ("" when there is none).
func readClusterIDFile(dataDir string) string {
	raw, err := os.ReadFile(filepath.Join(dataDir, clusterIDFile))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(raw))
}

// adopted records, after the node routes by agreed metadata of cluster
// id, that its data belongs to that cluster, and ends a restore's mark.
// Called by metaChanged alone.
func (n *Node) adopted(id string) {
	if !onDisk(n.cfg) || id == n.clusterFile {
		return
	}
	if err := writeFileSynced(n.cfg.DataDir, clusterIDFile, []byte(id+"\n")); err != nil {
		n.log.Warn("record the cluster ID in the data directory", "err", err)
		return
	}
	n.clusterFile = id
	if err := os.Remove(filepath.Join(n.cfg.DataDir, restoreMarkFile)); err == nil {
		n.log.Info("restore complete: this node routes by the cluster initialized from its restored data", "cluster_id", id)
	} else if !errors.Is(err, fs.ErrNotExist) {
		n.log.Warn("remove the restore mark", "err", err)
	}
}

// metaLogExists reports whether the node's metadata log has a store on
// disk (a node that ran as a member before). The memory engine keeps the
// log in memory: it never has one at start.
func metaLogExists(cfg Config) bool {
	return onDisk(cfg) && hasMetaLog(cfg.DataDir)
}

func hasMetaLog(dataDir string) bool {
	_, err := os.Stat(filepath.Join(dataDir, "raft", "raft.db"))
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

// freshInitWait bounds how long a new cluster's first leader without
// restored data waits for gossip to show every initial member before it
// initializes the cluster afresh (freshInitPlan).
const freshInitWait = 5 * time.Second

// freshInitPlan says what the first leader of a new cluster, holding no
// restored data, does about initializing it. seen maps each initial
// member gossip shows alive to the cluster its restored data is of (""
// none); voters are the metadata log's voters. A voter with restored data
// gets the leadership (handTo): it initializes the cluster from that data,
// which a fresh init would strand. If only members that do not vote hold
// restored data, nothing is initialized (stuck names them). Until every
// member was seen, the leader waits (up to freshInitWait after its start,
// then goes ahead: a member that is down may never come).
func freshInitPlan(self string, members, voters []string, seen map[string]string, waited time.Duration) (handTo string, wait bool, stuck []string) {
	missing := false
	for _, id := range members { // in order: the same choice on every call
		restored, ok := seen[id]
		switch {
		case id == self:
		case !ok:
			missing = true
		case restored != "" && slices.Contains(voters, id):
			return id, false, nil
		case restored != "":
			stuck = append(stuck, id)
		}
	}
	if len(stuck) > 0 {
		return "", false, stuck
	}
	return "", missing && waited < freshInitWait, nil
}
