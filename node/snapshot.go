package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meridiankv/meridian/engine/pebble"
	"github.com/meridiankv/meridian/repair"
	"github.com/meridiankv/meridian/replica"
)

// Snapshots: a node copies its data engine as it is now into
// <data-dir>/snapshots/<name>/data (a Pebble checkpoint: tables are hard
// links, so a snapshot costs little space until compactions replace what
// it shares), with SNAPSHOT.json describing it. Restoring (offline,
// RestoreSnapshot) puts that copy in place of the node's data; the node
// then starts as after an unclean shutdown, under a new incarnation (a
// checkpoint never holds the clean-shutdown marker), so it never mints a
// version dot it minted after the snapshot.

// SnapshotInfo describes one snapshot of a node's data.
type SnapshotInfo struct {
	Node    string    `json:"node"`
	Name    string    `json:"name"`
	Dir     string    `json:"dir"`
	Created time.Time `json:"created"`
	// Epoch is the metadata epoch the node had applied, of cluster
	// ClusterID ("" in snapshots taken before it was recorded).
	Epoch     uint64 `json:"epoch"`
	ClusterID string `json:"cluster_id,omitempty"`
	// Actor is the incarnation that wrote the data (restored, the node
	// takes a new one).
	Actor string `json:"actor"`
	// Bytes is the size of the snapshot's files (shared with the live
	// data while both hold the same tables).
	Bytes int64 `json:"bytes"`
	// TombstoneGrace is the node's tombstone-grace when the snapshot was
	// taken (negative: tombstones never collected; 0 in snapshots taken
	// before it was recorded): what restore holds its age against.
	TombstoneGrace time.Duration `json:"tombstone_grace_ns,omitempty"`
	// Files lists the data's files as taken, so that a copy cut short (a
	// file missing or truncated, one interrupted delete) is refused
	// before it replaces anything (nil in snapshots taken before).
	Files []SnapshotDataFile `json:"files,omitempty"`
}

// SnapshotDataFile is one file of a snapshot's data, as it was taken.
type SnapshotDataFile struct {
	// Path is under the snapshot's data/, slash-separated.
	Path string `json:"path"`
	Size int64  `json:"size"`
	// SHA256 is the hex SHA-256 of every file but the tables (.sst:
	// large, and checksummed block by block by Pebble): the write-ahead
	// logs, manifest and options, whose damage Pebble would not notice
	// (a truncated log reads as a torn tail, its last writes gone).
	SHA256 string `json:"sha256,omitempty"`
}

const (
	snapshotsDirName = "snapshots"
	snapshotInfoFile = "SNAPSHOT.json"
	// A snapshot is built under .NAME.creating and deleted from
	// .NAME.deleting: hidden, and swept after a crash.
	snapshotCreating = ".creating"
	snapshotDeleting = ".deleting"
)

var snapshotNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// CheckSnapshotName refuses names that are not a plain directory name.
func CheckSnapshotName(name string) error {
	if !snapshotNameRE.MatchString(name) {
		return status.Errorf(codes.InvalidArgument, "snapshot name %q: use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	return nil
}

// SnapshotName is the default name of a snapshot taken at t.
func SnapshotName(t time.Time) string { return t.UTC().Format("20060102T150405Z") }

func snapshotsDir(dataDir string) string { return filepath.Join(dataDir, snapshotsDirName) }

// Snapshot copies the node's data as it is now into a new snapshot called
// name (empty: the time, SnapshotName). Every write acknowledged before the
// call is in it.
//
// A name starting "auto-" is the schedule's (its snapshots are pruned) and
// refused, as is a snapshot on a node low on disk: its tables would stay
// on disk after compactions replace them, taking the space the node
// needs to take writes again.
func (n *Node) Snapshot(name string) (SnapshotInfo, error) {
	if strings.HasPrefix(name, autoSnapshotPrefix) {
		return SnapshotInfo{}, status.Errorf(codes.InvalidArgument, "snapshot name %q: names starting %q are the schedule's, which deletes old ones: choose another", name, autoSnapshotPrefix)
	}
	if n.DiskLow() {
		return SnapshotInfo{}, status.Errorf(codes.FailedPrecondition, "node %s is low on disk: a snapshot would keep tables compactions free; free space or delete snapshots first (meridian snapshot list / delete)", n.ID())
	}
	return n.snapshot(name)
}

// snapshot is Snapshot without its checks of the name and the disk (the
// schedule makes "auto-" names, and checks the disk itself).
func (n *Node) snapshot(name string) (SnapshotInfo, error) {
	if n.checkpoint == nil {
		return SnapshotInfo{}, status.Errorf(codes.FailedPrecondition, "node %s keeps its data in memory: snapshots need the pebble engine", n.ID())
	}
	if name == "" {
		name = SnapshotName(n.now())
	}
	if err := CheckSnapshotName(name); err != nil {
		return SnapshotInfo{}, err
	}
	n.snapshots.Lock() // two creates of one name must not share the partial directory
	defer n.snapshots.Unlock()
	n.sweepSnapshotLeftovers() // a crash's leftovers (a scheduled name never repeats)
	root := snapshotsDir(n.cfg.DataDir)
	dir := filepath.Join(root, name)
	if _, err := os.Stat(dir); err == nil {
		return SnapshotInfo{}, status.Errorf(codes.AlreadyExists, "node %s already has a snapshot %q: choose another name, or delete it first", n.ID(), name)
	}
	// Built under a hidden name and renamed when complete: a snapshot
	// that is listed is whole.
	tmp := filepath.Join(root, "."+name+snapshotCreating)
	if err := os.RemoveAll(tmp); err != nil {
		return SnapshotInfo{}, fmt.Errorf("snapshot %s: clear a partial one: %w", name, err)
	}
	grace := n.cfg.TombstoneGrace
	if grace == 0 {
		grace = repair.DefaultTombstoneGrace
	}
	info := SnapshotInfo{Node: n.ID(), Name: name, Dir: dir, Created: n.now().UTC(), Epoch: n.Topology().Epoch, ClusterID: n.Topology().ClusterID, Actor: n.store.Actor(),
		TombstoneGrace: grace}
	if err := n.checkpoint(filepath.Join(tmp, "data")); err != nil {
		os.RemoveAll(tmp)
		return SnapshotInfo{}, status.Errorf(codes.Internal, "snapshot %s: %v", name, err)
	}
	files, err := snapshotDataFiles(filepath.Join(tmp, "data"))
	if err != nil {
		os.RemoveAll(tmp)
		return SnapshotInfo{}, status.Errorf(codes.Internal, "snapshot %s: list its files: %v", name, err)
	}
	info.Files = files
	if err := writeSnapshotInfo(tmp, info); err != nil {
		os.RemoveAll(tmp)
		return SnapshotInfo{}, status.Errorf(codes.Internal, "snapshot %s: %v", name, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		return SnapshotInfo{}, status.Errorf(codes.Internal, "snapshot %s: %v", name, err)
	}
	if err := syncDir(root); err != nil {
		return SnapshotInfo{}, status.Errorf(codes.Internal, "snapshot %s: %v", name, err)
	}
	info.Bytes = dirBytes(dir)
	n.log.Info("snapshot taken", "name", name, "dir", dir, "bytes", info.Bytes, "epoch", info.Epoch)
	return info, nil
}

// Snapshots lists the node's snapshots, oldest first (none for a node
// that keeps its data in memory: a data directory it was given is not
// its, and may be another node's).
func (n *Node) Snapshots() ([]SnapshotInfo, error) {
	if !onDisk(n.cfg) {
		return nil, nil
	}
	return ListSnapshots(n.cfg.DataDir)
}

// DeleteSnapshot removes a snapshot (NOT_FOUND if there is none by name).
func (n *Node) DeleteSnapshot(name string) error {
	if err := CheckSnapshotName(name); err != nil {
		return err
	}
	if !onDisk(n.cfg) {
		return status.Errorf(codes.NotFound, "node %s keeps its data in memory and has no snapshots", n.ID())
	}
	n.snapshots.Lock()
	defer n.snapshots.Unlock()
	root := snapshotsDir(n.cfg.DataDir)
	dir := filepath.Join(root, name)
	if _, err := os.Stat(filepath.Join(dir, snapshotInfoFile)); err != nil {
		return status.Errorf(codes.NotFound, "node %s has no snapshot %q (meridian snapshot list shows them)", n.ID(), name)
	}
	// Out of sight first: a delete cut short leaves a hidden leftover
	// (swept later), never a listed snapshot missing some of its files.
	gone := filepath.Join(root, "."+name+snapshotDeleting)
	if err := os.RemoveAll(gone); err != nil {
		return status.Errorf(codes.Internal, "delete snapshot %s: %v", name, err)
	}
	if err := os.Rename(dir, gone); err != nil {
		return status.Errorf(codes.Internal, "delete snapshot %s: %v", name, err)
	}
	if err := syncDir(root); err != nil {
		return status.Errorf(codes.Internal, "delete snapshot %s: %v", name, err)
	}
	if err := os.RemoveAll(gone); err != nil {
		return status.Errorf(codes.Internal, "delete snapshot %s: %v", name, err)
	}
	n.log.Info("snapshot deleted", "name", name)
	return nil
}

// sweepSnapshotLeftovers removes what snapshots cut short left behind
// (a create or a delete interrupted by a crash: hidden .NAME.creating and
// .NAME.deleting directories), whose hard-linked tables would otherwise
// hold disk space for good. The caller holds n.snapshots (or the node is
// starting). Other hidden directories are left alone (a 'snapshot
// download --to' there writes .NODE.partial).
func (n *Node) sweepSnapshotLeftovers() {
	root := snapshotsDir(n.cfg.DataDir)
	entries, err := os.ReadDir(root)
	if err != nil {
		return // none yet
	}
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || !strings.HasPrefix(name, ".") || !(strings.HasSuffix(name, snapshotCreating) || strings.HasSuffix(name, snapshotDeleting)) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(root, name)); err != nil {
			n.log.Warn("remove what an interrupted snapshot left", "dir", filepath.Join(root, name), "err", err)
			continue
		}
		n.log.Info("removed what an interrupted snapshot left", "dir", filepath.Join(root, name))
	}
}

// snapshotDataFiles lists the files of a snapshot's data directory, with
// the SHA-256 of each but the tables.
func snapshotDataFiles(data string) ([]SnapshotDataFile, error) {
	var out []SnapshotDataFile
	err := filepath.WalkDir(data, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, err := filepath.Rel(data, path)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		f := SnapshotDataFile{Path: filepath.ToSlash(rel), Size: fi.Size()}
		if !strings.HasSuffix(path, ".sst") {
			if f.SHA256, err = fileSHA256(path); err != nil {
				return err
			}
		}
		out = append(out, f)
		return nil
	})
	return out, err
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// VerifySnapshot checks that the snapshot in dir has every data file it
// was taken with, at its size (and, but for tables, its SHA-256). A
// snapshot taken before files were recorded passes unchecked.
func VerifySnapshot(dir string) error {
	info, err := readSnapshotInfo(dir)
	if err != nil {
		return err
	}
	return verifySnapshotData(dir, info)
}

func verifySnapshotData(dir string, info SnapshotInfo) error {
	again := "copy the snapshot directory again, whole, or restore another snapshot"
	for _, f := range info.Files {
		if strings.Contains(f.Path, "..") || filepath.IsAbs(filepath.FromSlash(f.Path)) {
			return fmt.Errorf("snapshot %q in %s lists a file outside its data: %q", info.Name, dir, f.Path)
		}
		path := filepath.Join(dir, "data", filepath.FromSlash(f.Path))
		fi, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("snapshot %q in %s is incomplete: data/%s is missing (%v): %s", info.Name, dir, f.Path, err, again)
		}
		if fi.Size() != f.Size {
			return fmt.Errorf("snapshot %q in %s is damaged: data/%s has %d bytes, %d when taken: %s", info.Name, dir, f.Path, fi.Size(), f.Size, again)
		}
		if f.SHA256 != "" {
			sum, err := fileSHA256(path)
			if err != nil {
				return fmt.Errorf("snapshot %q in %s: read data/%s: %w", info.Name, dir, f.Path, err)
			}
			if sum != f.SHA256 {
				return fmt.Errorf("snapshot %q in %s is damaged: data/%s differs from when it was taken (SHA-256): %s", info.Name, dir, f.Path, again)
			}
		}
	}
	return nil
}

// SnapshotFile is one file of a snapshot.
type SnapshotFile struct {
	// Rel is its path inside the snapshot directory, slash-separated.
	Rel string
	// Path is where it is.
	Path string
	Size int64
}

// SnapshotFiles lists the files of snapshot name (NOT_FOUND if there is
// none), SNAPSHOT.json last: a copy that has it has the rest.
func (n *Node) SnapshotFiles(name string) ([]SnapshotFile, error) {
	if err := CheckSnapshotName(name); err != nil {
		return nil, err
	}
	if !onDisk(n.cfg) {
		return nil, status.Errorf(codes.NotFound, "node %s keeps its data in memory and has no snapshots", n.ID())
	}
	dir := filepath.Join(snapshotsDir(n.cfg.DataDir), name)
	if _, err := os.Stat(filepath.Join(dir, snapshotInfoFile)); err != nil {
		return nil, status.Errorf(codes.NotFound, "node %s has no snapshot %q (meridian snapshot list shows them)", n.ID(), name)
	}
	var files []SnapshotFile
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil // directories; a snapshot holds nothing else
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		files = append(files, SnapshotFile{Rel: filepath.ToSlash(rel), Path: path, Size: fi.Size()})
		return nil
	})
	if err != nil {
		return nil, status.Errorf(codes.Internal, "list snapshot %s: %v", name, err)
	}
	sort.SliceStable(files, func(i, j int) bool { return files[j].Rel == snapshotInfoFile && files[i].Rel != snapshotInfoFile })
	return files, nil
}

// StartSnapshotRead admits one snapshot download served by this node,
// at most snapshot-reads at once (RESOURCE_EXHAUSTED beyond); done
// records the bytes it sent and ends it.
func (n *Node) StartSnapshotRead() (done func(sent int64), err error) {
	if running := n.sched.reads.Add(1); running > int64(n.cfg.SnapshotReads) {
		n.sched.reads.Add(-1)
		n.sched.readsRefused.Add(1)
		return nil, status.Errorf(codes.ResourceExhausted, "node %s is serving %d snapshot downloads already (snapshot-reads): try again when one ends", n.ID(), n.cfg.SnapshotReads)
	}
	var once sync.Once
	return func(sent int64) {
		once.Do(func() {
			n.sched.readBytes.Add(uint64(max(sent, 0)))
			n.sched.reads.Add(-1)
		})
	}, nil
}

// ReadSnapshotInfo reads the description of the snapshot in dir (a
// snapshot directory, or a copy of one).
func ReadSnapshotInfo(dir string) (SnapshotInfo, error) { return readSnapshotInfo(dir) }

// ListSnapshots lists the snapshots in a node's data directory, oldest
// first.
func ListSnapshots(dataDir string) ([]SnapshotInfo, error) {
	entries, err := os.ReadDir(snapshotsDir(dataDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []SnapshotInfo
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		info, err := readSnapshotInfo(filepath.Join(snapshotsDir(dataDir), e.Name()))
		if err != nil {
			continue // not a snapshot of ours
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

func writeSnapshotInfo(dir string, info SnapshotInfo) error {
	raw, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	return writeFileSynced(dir, snapshotInfoFile, append(raw, '\n'))
}

func readSnapshotInfo(dir string) (SnapshotInfo, error) {
	raw, err := os.ReadFile(filepath.Join(dir, snapshotInfoFile))
	if err != nil {
		return SnapshotInfo{}, err
	}
	var info SnapshotInfo
	if err := json.Unmarshal(raw, &info); err != nil {
		return SnapshotInfo{}, fmt.Errorf("%s: %w", filepath.Join(dir, snapshotInfoFile), err)
	}
	info.Dir = dir
	info.Bytes = dirBytes(dir)
	return info, nil
}

func dirBytes(dir string) int64 {
	var total int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				total += fi.Size()
			}
		}
		return nil
	})
	return total
}

// RestoreResult is what RestoreSnapshot did.
type RestoreResult struct {
	Snapshot SnapshotInfo `json:"snapshot"`
	// Replaced is where the data the snapshot replaced was moved ("":
	// the data directory had none).
	Replaced string `json:"replaced,omitempty"`
	// NewCluster: the node had no metadata log (a new machine), so it
	// starts as a member of a new cluster initialized from the restored
	// metadata, with the other nodes restored the same way.
	NewCluster bool `json:"new_cluster,omitempty"`
}

// ErrHintsHeld refuses replacing data that holds hints for other nodes
// without force.
var ErrHintsHeld = errors.New("the node holds undelivered hints")

// ErrSnapshotTooOld refuses restoring a snapshot older than the tombstone
// grace without force.
var ErrSnapshotTooOld = errors.New("snapshot older than the tombstone grace")

// RestoreSnapshot puts snapshot name in place of the data in dataDir, whose
// node must not be running: the current data is moved aside (Replaced),
// never deleted. A snapshot missing or with damaged data files (a copy
// cut short) is refused before anything moves. A snapshot older than grace
// (0: the node's, as the snapshot recorded it, else 24h) is refused unless force:
// tombstones older than grace may have been collected on the other
// replicas, so a single node restored from it could bring deleted keys
// back (restoring every node from snapshots taken together is safe).
func RestoreSnapshot(dataDir, name string, now time.Time, grace time.Duration, force bool, opts ...RestoreOption) (RestoreResult, error) {
	if err := CheckSnapshotName(name); err != nil {
		return RestoreResult{}, errors.New(status.Convert(err).Message())
	}
	dir := filepath.Join(snapshotsDir(dataDir), name)
	if _, err := os.Stat(filepath.Join(dir, snapshotInfoFile)); errors.Is(err, fs.ErrNotExist) {
		return RestoreResult{}, fmt.Errorf("%s has no snapshot %q: %s", dataDir, name, SnapshotsHint(dataDir))
	}
	return RestoreSnapshotFrom(dataDir, dir, now, grace, force, opts...)
}

// CopyProgress is how far a restore is in copying the snapshot's files
// into the data directory.
type CopyProgress struct {
	// Files and Bytes are in place, of TotalFiles and TotalBytes.
	Files, TotalFiles int
	Bytes, TotalBytes int64
	// Linked files were hard-linked (the snapshot is on the data
	// directory's filesystem), not copied.
	Linked int
	// Done: the last report, every file in place.
	Done bool
}

// A RestoreOption changes how a restore runs.
type RestoreOption func(*restoreOptions)

type restoreOptions struct {
	progress func(CopyProgress)
	ctx      context.Context
}

// WithContext has a restore stop when ctx ends (Ctrl-C): the copy made so
// far is removed and nothing is replaced.
func WithContext(ctx context.Context) RestoreOption {
	return func(o *restoreOptions) { o.ctx = ctx }
}

// WithCopyProgress has a restore report its copy of the snapshot's files
// to fn: after each file and each MiB copied, and once at the end, with
// Done. A snapshot on another filesystem (a backup volume) is copied
// whole, which can take long. fn runs on the restoring goroutine.
func WithCopyProgress(fn func(CopyProgress)) RestoreOption {
	return func(o *restoreOptions) { o.progress = fn }
}

// SnapshotsHint says which snapshots a stopped node's data directory
// holds (in <data-dir>/snapshots, what restore takes by NAME) and what to
// do next, for restore's errors: the node is not running, so 'meridian
// snapshot list' (which asks a running node) cannot show them.
func SnapshotsHint(dataDir string) string {
	dir := snapshotsDir(dataDir)
	snaps, err := ListSnapshots(dataDir)
	if err != nil {
		return fmt.Sprintf("cannot list the snapshots in %s (%v): restore one by NAME once it is readable, or give --from SNAPSHOT_DIR (a snapshot directory copied from another machine)", dir, err)
	}
	if len(snaps) == 0 {
		return fmt.Sprintf("there are no snapshots in %s: take one with 'meridian snapshot create' while the node runs, or give --from SNAPSHOT_DIR (a snapshot directory copied from another machine, e.g. by 'meridian snapshot download')", dir)
	}
	names := make([]string, len(snaps))
	for i, s := range snaps {
		names[i] = filepath.Base(s.Dir) // what restore takes: the directory name
	}
	return fmt.Sprintf("the snapshots in %s are (oldest first) %s: restore one of them by NAME, or give --from SNAPSHOT_DIR (a snapshot directory copied from another machine)", dir, strings.Join(names, ", "))
}

// RestoreSnapshotFrom is RestoreSnapshot from a snapshot directory
// anywhere (one copied from the node's machine to a new one: it holds
// SNAPSHOT.json and data/). A data directory that does not exist yet is
// created and given the snapshot's node ID, so only that node starts on
// it; one that belongs to another node is refused.
func RestoreSnapshotFrom(dataDir, snapDir string, now time.Time, grace time.Duration, force bool, opts ...RestoreOption) (RestoreResult, error) {
	o := restoreOptions{ctx: context.Background()}
	for _, opt := range opts {
		opt(&o)
	}
	snap, err := readSnapshotInfo(snapDir)
	if errors.Is(err, fs.ErrNotExist) {
		return RestoreResult{}, fmt.Errorf("%s is not a snapshot: it has no %s (a snapshot is a directory under a node's <data-dir>/snapshots/, copied whole)", snapDir, snapshotInfoFile)
	}
	if err != nil {
		return RestoreResult{}, err
	}
	if fi, err := os.Stat(filepath.Join(snapDir, "data")); err != nil || !fi.IsDir() {
		return RestoreResult{}, fmt.Errorf("%s has no data/ directory: copy the whole snapshot directory", snapDir)
	}
	name := snap.Name
	if grace < 0 {
		grace = time.Duration(math.MaxInt64) // tombstones never collected
	}
	if grace == 0 {
		// Not given: the node's own, as the snapshot recorded it.
		switch {
		case snap.TombstoneGrace < 0:
			grace = time.Duration(math.MaxInt64) // never collected
		case snap.TombstoneGrace > 0:
			grace = snap.TombstoneGrace
		default:
			grace = repair.DefaultTombstoneGrace
		}
	}
	if owner, err := os.ReadFile(filepath.Join(dataDir, nodeIDFile)); err == nil && strings.TrimSpace(string(owner)) != snap.Node {
		return RestoreResult{}, fmt.Errorf("snapshot %q is of node %s, but %s belongs to node %s", name, snap.Node, dataDir, strings.TrimSpace(string(owner)))
	}
	if age := now.Sub(snap.Created); age > grace && !force {
		return RestoreResult{}, fmt.Errorf("%w: %q was taken %s ago, tombstone-grace is %s: the other replicas may have collected tombstones of keys deleted since, which this node would bring back. Restore every node from snapshots taken together, or pass --force if that is what you are doing",
			ErrSnapshotTooOld, name, age.Round(time.Minute), grace)
	}
	// A member of a cluster (it has a metadata log) takes back only its
	// own cluster's data; a node with no log yet gets restored data and a
	// mark saying so, until it adopts a cluster initialized from it.
	// Every file as taken, before anything is moved: Pebble would open a
	// log cut short as a torn tail, its last acknowledged writes gone.
	if err := verifySnapshotData(snapDir, snap); err != nil {
		return RestoreResult{}, err
	}
	hasLog := hasMetaLog(dataDir)
	if cur := readClusterIDFile(dataDir); hasLog && cur != "" && snap.ClusterID != "" && cur != snap.ClusterID {
		return RestoreResult{}, fmt.Errorf("snapshot %q is of cluster %s, but the node in %s is a member of cluster %s: restore a snapshot of this cluster, or restore onto a new machine into an empty --data-dir", name, snap.ClusterID, dataDir, cur)
	}
	mark, err := readRestoreMark(dataDir)
	if err != nil {
		return RestoreResult{}, err
	}
	if _, err := os.Stat(dataDir); errors.Is(err, fs.ErrNotExist) {
		// Created here: removed again if the restore does not complete,
		// so no empty node starts on it.
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			return RestoreResult{}, err
		}
		res, err := restoreInto(dataDir, snap, now, hasLog, mark != nil, force, o)
		if err != nil {
			os.RemoveAll(dataDir)
		}
		return res, err
	}
	return restoreInto(dataDir, snap, now, hasLog, mark != nil, force, o)
}

// restoreInto puts snapshot snap in place of dataDir's data, then records
// its node ID (if the directory has none) and, on a node with no metadata
// log or one restored before (marked), the restore mark.
func restoreInto(dataDir string, snap SnapshotInfo, now time.Time, hasLog, marked, force bool, o restoreOptions) (RestoreResult, error) {
	data := filepath.Join(dataDir, "data")
	_, err := os.Stat(data)
	hadData := err == nil
	// Pebble's own lock: held while the node runs.
	if err := os.MkdirAll(data, 0o700); err != nil {
		return RestoreResult{}, err
	}
	lock, err := pebble.LockDir(data)
	if err != nil {
		return RestoreResult{}, fmt.Errorf("%s is in use (%v): stop the node first", dataDir, err)
	}
	defer lock.Close()
	if hadData && !force {
		// Hints this node holds for others are writes they missed, for
		// some the only copy (a write acknowledged through a fallback):
		// the snapshot's data would drop them, silently.
		held, err := pebble.CountKeys(data, lock, []byte{replica.HintPrefix}, []byte{replica.HintPrefix + 1})
		if err != nil {
			return RestoreResult{}, fmt.Errorf("count the hints %s holds: %w (pass --force to restore without checking)", dataDir, err)
		}
		if held > 0 {
			return RestoreResult{}, fmt.Errorf("%w: the node's current data holds %d hint(s) for other nodes — writes they missed, for some the only copy — which the snapshot's data would drop. Start the node and let them be delivered ('meridian hints' shows none left), stop it and restore then; or pass --force if losing them is intended (every node restored from snapshots taken together)",
				ErrHintsHeld, held)
		}
	}
	replaced := filepath.Join(dataDir, "data.replaced-"+SnapshotName(now))
	staged := filepath.Join(dataDir, ".data.restoring")
	if err := os.RemoveAll(staged); err != nil {
		return RestoreResult{}, err
	}
	if err := copyTree(o.ctx, filepath.Join(snap.Dir, "data"), staged, o.progress, syncDir); err != nil {
		os.RemoveAll(staged)
		if o.ctx.Err() != nil {
			return RestoreResult{}, fmt.Errorf("restore interrupted while copying the snapshot: nothing was replaced, and the copy made so far is removed: %w", err)
		}
		return RestoreResult{}, fmt.Errorf("copy the snapshot: %w", err)
	}
	if err := os.Rename(data, replaced); err != nil {
		os.RemoveAll(staged)
		return RestoreResult{}, fmt.Errorf("move the current data aside: %w", err)
	}
	if err := os.Rename(staged, data); err != nil {
		return RestoreResult{}, fmt.Errorf("put the snapshot in place (the previous data is in %s): %w", replaced, err)
	}
	if !hadData {
		// Only the lock this restore made: nothing was replaced.
		if err := os.RemoveAll(replaced); err != nil {
			return RestoreResult{}, err
		}
		replaced = ""
	}
	if _, err := os.Stat(filepath.Join(dataDir, nodeIDFile)); errors.Is(err, fs.ErrNotExist) {
		if err := writeNodeID(dataDir, snap.Node); err != nil {
			return RestoreResult{}, fmt.Errorf("record the node ID in %s: %w", dataDir, err)
		}
	}
	if !hasLog || marked {
		raw, err := json.Marshal(restoreMark{Node: snap.Node, Snapshot: snap.Name, ClusterID: snap.ClusterID, Epoch: snap.Epoch})
		if err != nil {
			return RestoreResult{}, err
		}
		if err := writeFileSynced(dataDir, restoreMarkFile, append(raw, '\n')); err != nil {
			return RestoreResult{}, fmt.Errorf("mark %s as restored: %w", dataDir, err)
		}
	}
	if err := syncDir(dataDir); err != nil {
		return RestoreResult{}, err
	}
	return RestoreResult{Snapshot: snap, Replaced: replaced, NewCluster: !hasLog || marked}, nil
}

// copyTree copies the files of src into a new dst, hard-linking where the
// filesystem allows (Pebble never modifies a table or a closed file in
// place), copying otherwise, and syncs them and the directories made for
// them. progress, if not nil, hears
// how far it is (see WithCopyProgress).
// syncDirs is syncDir (tests watch it).
func copyTree(ctx context.Context, src, dst string, progress func(CopyProgress), syncDirs func(dir string) error) error {
	var p CopyProgress
	report := func() {
		if progress != nil {
			progress(p)
		}
	}
	if progress != nil {
		err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() == "LOCK" {
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			p.TotalFiles++
			p.TotalBytes += fi.Size()
			return nil
		})
		if err != nil {
			return err
		}
	}
	var dirs []string // made here: synced once filled, so their entries survive a crash
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err // interrupted: the caller removes the copy so far
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			dirs = append(dirs, to)
			return os.MkdirAll(to, 0o700)
		}
		if d.Name() == "LOCK" {
			return nil
		}
		if strings.HasSuffix(d.Name(), ".sst") || strings.HasSuffix(d.Name(), ".blob") {
			if err := os.Link(path, to); err == nil {
				if fi, err := d.Info(); err == nil {
					p.Bytes += fi.Size()
				}
				p.Files++
				p.Linked++
				report()
				return nil
			}
		}
		var w func(int)
		if progress != nil {
			w = func(n int) {
				p.Bytes += int64(n)
				report()
			}
		}
		if err := copyFile(ctx, path, to, w); err != nil {
			return err
		}
		p.Files++
		report()
		return nil
	})
	if err != nil {
		return err
	}
	for i := len(dirs) - 1; i >= 0; i-- { // the deepest first
		if err := syncDirs(dirs[i]); err != nil {
			return err
		}
	}
	p.Done = true
	report()
	return nil
}

// copyFile copies src into a new file dst and syncs it; wrote, if not
// nil, hears each chunk written (at most 1 MiB).
func copyFile(ctx context.Context, src, dst string, wrote func(int)) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	// In chunks of 1 MiB (the plain reader hides os.File's WriteTo), each
	// counted and each checking ctx: a large file from a backup volume
	// stops at once when interrupted.
	_, err = io.CopyBuffer(&countingWriter{ctx: ctx, w: out, wrote: wrote}, struct{ io.Reader }{in}, make([]byte, 1<<20))
	if err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// countingWriter tells wrote (if any) how much each write wrote, and
// fails once ctx ends.
type countingWriter struct {
	ctx   context.Context
	w     io.Writer
	wrote func(int)
}

func (c *countingWriter) Write(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.w.Write(b)
	if c.wrote != nil {
		c.wrote(n)
	}
	return n, err
}
