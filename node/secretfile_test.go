package node_test

import (
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/meridiankv/meridian/node"
)

// TestExposedSecretFileWarns: a node whose cluster-secret file others may
// read starts, and says which file and what to run; with mode 0600 it says
// nothing of the kind.
func TestExposedSecretFileWarns(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("Windows files have no Unix modes")
	}
	for _, tc := range []struct {
		mode os.FileMode
		warn bool
	}{{0o644, true}, {0o640, true}, {0o600, false}} {
		dir := t.TempDir()
		secret := filepath.Join(dir, "secret")
		if err := os.WriteFile(secret, []byte(node.GenerateSecret()+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(secret, tc.mode); err != nil { // past the umask
			t.Fatal(err)
		}
		cfg := soloConfig(t, "n1", "127.0.0.1:0", filepath.Join(dir, "data"))
		cfg.ClusterSecrets, cfg.ClusterSecretFile = nil, secret
		var logs lockedBuffer
		n, err := node.Start(ctxT(t), cfg, node.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatalf("mode %#o: %v", tc.mode, err)
		}
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
		want := "cluster-secret-file " + secret + " can be read or written by other users: run chmod 600 on it"
		if got := strings.Contains(logs.String(), want); got != tc.warn {
			t.Fatalf("mode %#o: warned %v, want %v:\n%s", tc.mode, got, tc.warn, logs.String())
		}
	}
}
