package drill

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
)

// hintsAdmin answers Hints with a count for target n1 that the test sets.
type hintsAdmin struct {
	adminv1.AdminClient
	mu   sync.Mutex
	held uint64
	asks int
}

func (a *hintsAdmin) Hints(context.Context, *adminv1.HintsRequest, ...grpc.CallOption) (*adminv1.HintsResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.asks++
	if a.asks > 3 {
		a.held = 0 // delivered by the fourth poll
	}
	return &adminv1.HintsResponse{Targets: []*adminv1.HintTarget{{Target: "n1", Count: a.held}, {Target: "n2", Count: 7}}}, nil
}

// TestRollWaitsForHints: a rolling restart goes on once no node holds
// hints for the node it restarted (hints for others do not hold it up),
// and after its limit it goes on anyway, saying so in the report.
func TestRollWaitsForHints(t *testing.T) {
	a := &hintsAdmin{held: 5}
	var log bytes.Buffer
	d := &driller{cfg: Config{Log: &log}, env: Env{Admin: map[string]adminv1.AdminClient{"n1": a}}, ids: []string{"n1"}, start: time.Now()}
	if err := d.waitHintsDelivered(context.Background(), "n1", time.Minute); err != nil {
		t.Fatal(err)
	}
	if a.asks != 4 || len(d.notes) != 0 {
		t.Fatalf("returned after %d polls with notes %q; want 4 polls (held until the fourth), no note", a.asks, d.notes)
	}

	stuck := &hintsAdmin{held: 5, asks: -1 << 30} // never delivered
	d = &driller{cfg: Config{Log: &log}, env: Env{Admin: map[string]adminv1.AdminClient{"n1": stuck}}, ids: []string{"n1"}, start: time.Now()}
	if err := d.waitHintsDelivered(context.Background(), "n1", 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if len(d.notes) != 1 || !strings.Contains(d.notes[0], "5 hint(s) for n1 still held") {
		t.Fatalf("notes %q, want one saying 5 hints for n1 were still held", d.notes)
	}
}
