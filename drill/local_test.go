package drill

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestStartLocalRefusesAPreviousCluster: a local cluster started in a
// directory that holds a previous drill's is refused before anything is
// written (not half-way, by the CA, with advice to pass a --force the
// drill does not have), and the previous cluster's secret is left as it
// was. The nodes are /bin/false: only the files matter.
func TestStartLocalRefusesAPreviousCluster(t *testing.T) {
	if _, err := os.Stat("/bin/false"); err != nil {
		t.Skip("no /bin/false to run as the nodes")
	}
	dir := t.TempDir()
	spec := LocalSpec{Binary: "/bin/false", Dir: dir, DCs: 1, NodesPerDC: 1}
	if l, err := StartLocal(context.Background(), spec); err == nil {
		l.Close()
		t.Fatal("a cluster of /bin/false started")
	}
	secretPath := filepath.Join(dir, "cluster.secret")
	secret, err := os.ReadFile(secretPath)
	if err != nil {
		t.Fatalf("the first start left no secret: %v", err)
	}
	_, err = StartLocal(context.Background(), spec)
	if err == nil || !strings.Contains(err.Error(), dir+" holds a previous drill's cluster") ||
		!strings.Contains(err.Error(), "give a new --dir or remove it") || strings.Contains(err.Error(), "--force") {
		t.Errorf("second start in %s: %v, want a refusal to reuse the directory (and no --force)", dir, err)
	}
	if again, err := os.ReadFile(secretPath); err != nil || !bytes.Equal(again, secret) {
		t.Errorf("the refused start changed %s (%v): %q, was %q", secretPath, err, again, secret)
	}
}

// TestRunRestoreRefusesAPreviousRestore: a restore drill in a directory a
// previous one used (its old cluster, its downloaded snapshots or its
// restored data) is refused before a cluster starts, naming the
// directory given rather than one of its subdirectories.
func TestRunRestoreRefusesAPreviousRestore(t *testing.T) {
	for _, sub := range []string{"old", "backup", "new"} {
		root := t.TempDir()
		if err := os.Mkdir(filepath.Join(root, sub), 0o755); err != nil {
			t.Fatal(err)
		}
		_, err := RunRestore(context.Background(), RestoreConfig{}, LocalSpec{Binary: "/bin/false", Dir: root, DCs: 1, NodesPerDC: 1})
		if want := root + " holds a previous drill's cluster (" + sub + "): give a new --dir or remove it"; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("with %s/: %v, want an error containing %q", sub, err, want)
		}
		if _, err := os.Stat(filepath.Join(root, "old", "cluster.secret")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("with %s/: a cluster was created in old/ (%v)", sub, err)
		}
	}
}

// TestChildEnvDropsMeridianVariables: a drill's node processes and the
// commands it runs get the environment without MERIDIAN_* (an operator's
// MERIDIAN_CONFIG or MERIDIAN_INSECURE would reconfigure them), and with
// everything else (PATH, OTEL_*).
func TestChildEnvDropsMeridianVariables(t *testing.T) {
	got := childEnv([]string{"PATH=/bin", "MERIDIAN_CONFIG=/etc/meridian.yaml", "OTEL_EXPORTER_OTLP_ENDPOINT=http://c:4317", "MERIDIAN_INSECURE=true", "XMERIDIAN_Y=1"})
	want := []string{"PATH=/bin", "OTEL_EXPORTER_OTLP_ENDPOINT=http://c:4317", "XMERIDIAN_Y=1"}
	if !slices.Equal(got, want) {
		t.Fatalf("childEnv = %v, want %v", got, want)
	}
}
