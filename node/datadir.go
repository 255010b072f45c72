package node

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// nodeIDFile, in a data directory, names the node that created it.
const nodeIDFile = "NODE_ID"

// checkDataDir makes sure the pebble engine's data directory is this
// node's and free: it creates the directory if needed, records the node ID
// in it on first use and refuses a directory that belongs to another node
// or that another process has open.
func checkDataDir(cfg Config) error {
	if cfg.Engine != "pebble" {
		return nil
	}
	dir := cfg.DataDir
	// Only this node's user reads its data: every stored value, every
	// snapshot, lies below.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data-dir %s: %w", dir, err)
	}
	path := filepath.Join(dir, nodeIDFile)
	raw, err := os.ReadFile(path)
	switch {
	case err == nil:
		owner := strings.TrimSpace(string(raw))
		if owner != cfg.ID {
			return fmt.Errorf("data-dir %s belongs to node %q, not %q: use --id %s or another --data-dir", dir, owner, cfg.ID, owner)
		}
	case errors.Is(err, fs.ErrNotExist):
		if err := writeNodeID(dir, cfg.ID); err != nil {
			return fmt.Errorf("data-dir %s: record the node ID: %w", dir, err)
		}
	default:
		return fmt.Errorf("data-dir %s: %w", dir, err)
	}
	// Pebble locks data/LOCK; say who holds it before Pebble fails with a
	// bare "resource temporarily unavailable".
	switch pid := lockHolder(filepath.Join(dir, "data", "LOCK")); {
	case pid > 0:
		return fmt.Errorf("data-dir %s is in use by another process (pid %d): is this node already running?", dir, pid)
	case pid < 0:
		return fmt.Errorf("data-dir %s is in use by another process: is this node already running?", dir)
	}
	return nil
}

// writeNodeID writes dir/NODE_ID durably.
func writeNodeID(dir, id string) error {
	return writeFileSynced(dir, nodeIDFile, []byte(id+"\n"))
}

// writeFileSynced writes dir/name durably and whole: a temporary file,
// fsync, rename, fsync of the directory.
func writeFileSynced(dir, name string, data []byte) error {
	tmp, err := os.CreateTemp(dir, name+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return err
	}
	return syncDir(dir)
}

// syncDir fsyncs a directory, making its entries durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
