package node_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/engine"
	"github.com/meridiankv/meridian/node"
)

// pollUntil polls cond until it holds or the deadline passes.
func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func startOne(t *testing.T, spec node.LocalSpec) *node.Local {
	t.Helper()
	spec.NodesPerDC = 1
	spec.Dir = t.TempDir()
	spec.Insecure = true
	spec.GossipProfile = "test"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := node.StartLocal(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// heldEngine holds every durable data write (in its wait) until release
// is closed, and records when those writes and the clean-shutdown marker
// complete.
type heldEngine struct {
	engine.Engine
	release chan struct{}
	held    atomic.Int32

	mu     sync.Mutex
	events []string
}

func (e *heldEngine) record(ev string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.events = append(e.events, ev)
}

func (e *heldEngine) log() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.events...)
}

func (e *heldEngine) NewBatch() engine.Batch { return &heldBatch{Batch: e.Engine.NewBatch(), e: e} }

type heldBatch struct {
	engine.Batch
	e            *heldEngine
	data, marker bool
}

func (b *heldBatch) Set(k, v []byte) {
	b.data = b.data || k[0] == 'd'
	b.marker = b.marker || string(k) == "mclean-shutdown"
	b.Batch.Set(k, v)
}

func (b *heldBatch) Commit(sync bool) error {
	err := b.Batch.Commit(sync)
	if b.marker && err == nil {
		b.e.record("clean-shutdown marker")
	}
	return err
}

func (b *heldBatch) CommitNoSyncWait() (func() error, error) {
	wait, err := b.Batch.CommitNoSyncWait()
	if err != nil || !b.data {
		return wait, err
	}
	return func() error {
		b.e.held.Add(1)
		<-b.e.release
		err := wait()
		b.e.record("data write done")
		return err
	}, nil
}

// TestCloseWaitsForCallsInFlight: Close refuses new calls with UNAVAILABLE
// at once, but records the clean shutdown only after the write of a
// handler still running has finished.
func TestCloseWaitsForCallsInFlight(t *testing.T) {
	eng := &heldEngine{release: make(chan struct{})}
	l := startOne(t, node.LocalSpec{Engine: "memory", Options: node.Options{
		DrainTimeout: 20 * time.Second,
		WrapEngine:   func(e engine.Engine) engine.Engine { eng.Engine = e; return eng },
	}})
	kv := kvv1.NewKVClient(dialConn(t, l.Nodes()[0].Addr()))
	ctx := ctxT(t)

	putDone := make(chan error, 1)
	go func() {
		_, err := kv.Put(ctx, &kvv1.PutRequest{Key: []byte("k"), Value: []byte("v")})
		putDone <- err
	}()
	pollUntil(t, "the put to block in its write", func() bool { return eng.held.Load() > 0 })

	closeDone := make(chan error, 1)
	go func() { closeDone <- l.Close() }()
	pollUntil(t, "calls to be refused as the node shuts down", func() bool {
		_, err := kv.Get(ctx, &kvv1.GetRequest{Key: []byte("other")})
		st := status.Convert(err)
		return st.Code() == codes.Unavailable && strings.Contains(st.Message(), "shutting down")
	})
	select {
	case err := <-closeDone:
		t.Fatalf("Close returned (%v) while a handler was still writing", err)
	default:
	}
	if ev := eng.log(); len(ev) != 0 {
		t.Fatalf("before the handler finished: %v", ev)
	}

	close(eng.release)
	if err := <-putDone; err != nil {
		t.Fatalf("the put in flight at Close: %v", err)
	}
	if err := <-closeDone; err != nil {
		t.Fatal(err)
	}
	if ev := eng.log(); len(ev) != 2 || ev[0] != "data write done" || ev[1] != "clean-shutdown marker" {
		t.Fatalf("events %q, want the write, then the marker", ev)
	}
}

// TestCloseRecordsNoCleanShutdownWhenCallsOutlastTheBound: a handler still
// writing when the drain bound passes means no clean-shutdown marker.
func TestCloseRecordsNoCleanShutdownWhenCallsOutlastTheBound(t *testing.T) {
	eng := &heldEngine{release: make(chan struct{})}
	l := startOne(t, node.LocalSpec{Engine: "memory", Options: node.Options{
		DrainTimeout: 100 * time.Millisecond,
		WrapEngine:   func(e engine.Engine) engine.Engine { eng.Engine = e; return eng },
	}})
	kv := kvv1.NewKVClient(dialConn(t, l.Nodes()[0].Addr()))
	ctx := ctxT(t)

	putDone := make(chan error, 1)
	go func() {
		_, err := kv.Put(ctx, &kvv1.PutRequest{Key: []byte("k"), Value: []byte("v")})
		putDone <- err
	}()
	pollUntil(t, "the put to block in its write", func() bool { return eng.held.Load() > 0 })
	l.Close() // errors from a cut-off shutdown are expected
	if ev := eng.log(); len(ev) != 0 {
		t.Fatalf("Close with a handler still writing recorded %q", ev)
	}
	close(eng.release) // let the handler's goroutine end
	<-putDone
	pollUntil(t, "the held handler to finish", func() bool { return len(eng.log()) > 0 })
	if ev := eng.log(); len(ev) != 1 || ev[0] != "data write done" {
		t.Fatalf("events %q, want only the write (no marker)", ev)
	}
}

// lockedBuffer is a log sink safe for concurrent writers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestStorageFailureStopsTheNode: a failed WAL fsync fails the write
// waiting for it, turns health NOT_SERVING, logs why, and closes Failed;
// later writes are refused even once the disk "recovers".
func TestStorageFailureStopsTheNode(t *testing.T) {
	var armed atomic.Bool
	fs := errorfs.Wrap(vfs.NewMem(), errorfs.InjectorFunc(func(op errorfs.Op) error {
		switch op.Kind {
		case errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo:
			if armed.Load() && strings.HasSuffix(op.Path, ".log") {
				return errorfs.ErrInjected
			}
		}
		return nil
	}))
	var logs lockedBuffer
	l := startOne(t, node.LocalSpec{
		Engine:  "pebble",
		Logger:  slog.New(slog.NewTextHandler(&logs, nil)),
		Options: node.Options{EngineFS: fs},
	})
	defer l.Close() // a failed node's Close reports the failure again
	n := l.Nodes()[0]
	conn := dialConn(t, n.Addr())
	kv := kvv1.NewKVClient(conn)
	ctx := ctxT(t)
	if _, err := kv.Put(ctx, &kvv1.PutRequest{Key: []byte("before"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-n.Failed():
		t.Fatal("Failed closed on a healthy node")
	default:
	}

	armed.Store(true)
	if _, err := kv.Put(ctx, &kvv1.PutRequest{Key: []byte("k"), Value: []byte("v")}); err == nil {
		t.Fatal("a durable put whose fsync failed was acknowledged")
	}
	armed.Store(false)
	select {
	case <-n.Failed():
	case <-ctx.Done():
		t.Fatal("Failed not closed after the storage failed")
	}
	if err := n.Failure(); !errors.Is(err, engine.ErrFailed) || !errors.Is(err, errorfs.ErrInjected) {
		t.Fatalf("Failure = %v", err)
	}
	for _, svc := range []string{"", "kv.v1.KV"} {
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.Status != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Fatalf("health of %q after the storage failed = %v, %v; want NOT_SERVING", svc, resp, err)
		}
	}
	for _, durable := range []bool{false, true} {
		_, err := kv.Put(ctx, &kvv1.PutRequest{Key: []byte("later"), Value: []byte("v"),
			Consistency: &kvv1.Consistency{Durable: &durable}})
		if err == nil {
			t.Fatalf("put (durable %v) after the storage failed was acknowledged", durable)
		}
	}
	if out := logs.String(); !strings.Contains(out, "storage failed to sync") || !strings.Contains(out, "Check the disk, then restart") {
		t.Fatalf("no clear log line about the failure in:\n%s", out)
	}
}
