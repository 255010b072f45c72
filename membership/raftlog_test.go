package membership

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestRaftLogLevels: Raft's hclog lines keep their level in slog, except a
// read error on a connection this node closed itself, which Raft reports at
// ERROR on every clean shutdown and which is not one.
func TestRaftLogLevels(t *testing.T) {
	for _, tc := range []struct {
		line string
		want string
	}{
		{`[ERROR] raft: failed to decode incoming command: error="read tcp 127.0.0.1:34771->127.0.0.1:46574: use of closed network connection"`, "DEBUG"},
		{`[ERROR] raft: failed to heartbeat to: peer=n1 backoff time=10ms error=EOF`, "ERROR"},
		{`[WARN]  raft: heartbeat timeout reached, starting election`, "WARN"},
		{`[INFO]  raft: entering follower state`, "INFO"},
		{`[DEBUG] raft: votes: needed=2`, "DEBUG"},
	} {
		var buf bytes.Buffer
		w := &slogWriter{log: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
		if _, err := w.Write([]byte(tc.line + "\n")); err != nil {
			t.Fatal(err)
		}
		if got := buf.String(); !strings.Contains(got, "level="+tc.want+" ") || !strings.Contains(got, "metadata log: ") {
			t.Errorf("%s\nlogged as %q, want level %s", tc.line, got, tc.want)
		}
	}
}
