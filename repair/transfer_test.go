package repair

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
	"github.com/meridiankv/meridian/engine/memory"
	"github.com/meridiankv/meridian/membership"
	"github.com/meridiankv/meridian/placement"
	"github.com/meridiankv/meridian/replica"
	"github.com/meridiankv/meridian/version"
)

// xferKS is the keyspace ID of the transfer tests; keys are
// "p<partition>/k<n>", so the merger knows their partition.
const xferKS = 7

type xferEntry struct{ key, set []byte }

type xferCall struct {
	node      string
	partition int
	after     []byte
	entries   int
}

// xferPeers serves partition pages from a map, the same data from every
// source, with injectable failures.
type xferPeers struct {
	data map[int][]xferEntry // by partition, in key order
	// fail, if set, may fail the n-th call (from 0) to node.
	fail func(node string, n int) error
	// mangle, if set, may alter a page before it is returned.
	mangle func(node string, n int, resp *internalv1.ScanPartitionResponse)
	// hook, if set, runs after a page is computed; an error replaces it.
	hook func(ctx context.Context, c xferCall) error
	// delay, if set, is how long every call takes.
	delay time.Duration

	mu          sync.Mutex
	calls       []xferCall
	perNode     map[string]int
	inflight    int
	maxInflight int
}

func newXferPeers(partitions map[int]int) *xferPeers {
	p := &xferPeers{data: map[int][]xferEntry{}, perNode: map[string]int{}}
	for part, n := range partitions {
		for i := range n {
			key := fmt.Appendf(nil, "p%d/k%05d", part, i)
			set, _ := version.Set{}.Put(version.Clock{}, "src", version.Value{Bytes: fmt.Appendf(nil, "value of %s", key)}, 1)
			p.data[part] = append(p.data[part], xferEntry{key: key, set: set.Encode()})
		}
	}
	return p
}

func (p *xferPeers) ScanPartition(ctx context.Context, node string, req *internalv1.ScanPartitionRequest) (*internalv1.ScanPartitionResponse, error) {
	p.mu.Lock()
	n := p.perNode[node]
	p.perNode[node]++
	c := xferCall{node: node, partition: int(req.GetPartition()), after: bytes.Clone(req.GetAfter())}
	if p.fail != nil {
		if err := p.fail(node, n); err != nil {
			p.calls = append(p.calls, c)
			p.mu.Unlock()
			return nil, err
		}
	}
	all := p.data[c.partition]
	i, _ := slices.BinarySearchFunc(all, req.GetAfter(), func(e xferEntry, k []byte) int { return bytes.Compare(e.key, k) })
	if i < len(all) && len(req.GetAfter()) > 0 && bytes.Equal(all[i].key, req.GetAfter()) {
		i++
	}
	limit := int(req.GetMaxKeys())
	if limit == 0 {
		limit = 1000
	}
	resp := &internalv1.ScanPartitionResponse{}
	for ; i < len(all) && len(resp.Entries) < limit; i++ {
		resp.Entries = append(resp.Entries, &internalv1.ScanEntry{Key: bytes.Clone(all[i].key), Set: bytes.Clone(all[i].set)})
	}
	resp.Done = i == len(all)
	c.entries = len(resp.Entries)
	p.calls = append(p.calls, c)
	p.inflight++
	p.maxInflight = max(p.maxInflight, p.inflight)
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.inflight--
		p.mu.Unlock()
	}()
	if p.delay > 0 {
		select {
		case <-time.After(p.delay):
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	if p.mangle != nil {
		p.mangle(node, n, resp)
	}
	if p.hook != nil {
		if err := p.hook(ctx, c); err != nil {
			return nil, err
		}
	}
	return resp, nil
}

func (p *xferPeers) callLog() []xferCall {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.calls)
}

// xferMerger merges into a real replica store, as the coordinator does.
type xferMerger struct {
	s     *replica.Store
	syncs atomic.Int64
}

func (m *xferMerger) MergeLocal(_ string, key []byte, set version.Set) error {
	var p int
	if _, err := fmt.Sscanf(string(key), "p%d/", &p); err != nil {
		return fmt.Errorf("key %q has no partition: %w", key, err)
	}
	_, err := m.s.Merge(replica.Loc{Keyspace: xferKS, Partition: p}, key, set, false)
	return err
}

func (m *xferMerger) Sync() error {
	m.syncs.Add(1)
	return m.s.Engine().SyncWAL()
}

func xferStore(t *testing.T) *replica.Store {
	t.Helper()
	s, err := replica.Open(memory.New(), "new-owner")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func xferTask(p int, gen uint64, sources ...string) TransferTask {
	return TransferTask{Keyspace: "ks", Loc: replica.Loc{Keyspace: xferKS, Partition: p}, Sources: sources, Generation: gen}
}

// checkAllKeys fails unless s holds exactly the source's sets of partition p.
func checkAllKeys(t *testing.T, s *replica.Store, peers *xferPeers, p int) {
	t.Helper()
	for _, e := range peers.data[p] {
		got, err := s.Get(replica.Loc{Keyspace: xferKS, Partition: p}, e.key)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := version.DecodeSet(e.set)
		if !got.Equal(want) {
			t.Fatalf("key %q: stored %v, want %v", e.key, got, want)
		}
	}
}

func checkpoints(t *testing.T, s *replica.Store) map[string]string {
	t.Helper()
	out := map[string]string{}
	if err := s.ScanMeta(checkpointPrefix, func(name string, v []byte) error {
		out[name] = string(v)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// run starts tr.Run and returns a stop that cancels it and waits for it.
func run(tr *Transfers) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		tr.Run(ctx)
	}()
	return func() {
		cancel()
		<-ended
	}
}

func statusOf(tr *Transfers, p int) TransferStatus {
	for _, st := range tr.Status() {
		if st.Partition == p {
			return st
		}
	}
	return TransferStatus{}
}

// TestTransferStreamsAndCatchesUp: every key arrives, each page is synced
// before its checkpoint is written, the catch-up runs after the stream,
// then Done, and the checkpoint goes.
func TestTransferStreamsAndCatchesUp(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	synctest.Test(t, func(t *testing.T) {
		peers := newXferPeers(map[int]int{3: 2500})
		s := xferStore(t)
		m := &xferMerger{s: s}
		var tr *Transfers
		var doneCalls atomic.Int32
		done := make(chan TransferTask, 1)
		var checkpointAtCatchUp map[string]string
		tr = NewTransfers(TransferConfig{
			Peers: peers, Merge: m, Checkpoints: s, PageKeys: 100,
			CatchUp: func(ctx context.Context, task TransferTask) error {
				if st := statusOf(tr, 3); st.State != TransferCatchingUp {
					t.Errorf("state during catch-up %q, want %q", st.State, TransferCatchingUp)
				}
				checkpointAtCatchUp = checkpoints(t, s)
				return nil
			},
			Done: func(task TransferTask) { doneCalls.Add(1); done <- task },
		})
		stop := run(tr)
		defer stop()
		tr.Set([]TransferTask{xferTask(3, 1, "s1")})
		got := <-done
		if got.Loc.Partition != 3 || got.Generation != 1 {
			t.Fatalf("Done(%+v)", got)
		}
		synctest.Wait()
		checkAllKeys(t, s, peers, 3)
		if n := len(peers.callLog()); n != 25 {
			t.Fatalf("%d pages requested for 2500 keys in pages of 100, want 25", n)
		}
		if m.syncs.Load() != 25 {
			t.Fatalf("%d syncs for 25 pages, want one per page", m.syncs.Load())
		}
		// The last page is not checkpointed (the report follows it): the
		// checkpoint at catch-up is the page before.
		if want := map[string]string{"transfer/1/7/3": "p3/k02399"}; fmt.Sprint(checkpointAtCatchUp) != fmt.Sprint(want) {
			t.Fatalf("checkpoints at catch-up %v, want %v", checkpointAtCatchUp, want)
		}
		// Kept after Done, whose report may not be committed yet: a
		// restart meanwhile resumes from the last page; the generation's
		// end sweeps it.
		if cp := checkpoints(t, s); fmt.Sprint(cp) != fmt.Sprint(checkpointAtCatchUp) {
			t.Fatalf("checkpoints after Done %v, want the last one kept, %v", cp, checkpointAtCatchUp)
		}
		st := statusOf(tr, 3)
		if st.State != TransferDone || st.Keys != 2500 || st.Source != "s1" || st.Err != "" || st.Bytes == 0 {
			t.Fatalf("status %+v", st)
		}
		if doneCalls.Load() != 1 {
			t.Fatalf("Done called %d times", doneCalls.Load())
		}
	})
}

// TestTransferPageTimeoutCoversALargeSet: each page's deadline allows for
// the most a page can carry (the page's bytes and one set of the
// keyspace's largest) at a slow link's rate, beyond Timeout: a source that
// needs 2 s for a page (a large set over a slow link) is waited for, where
// a fixed Timeout failed every attempt at that page and the transfer, and
// the transition, never ended.
func TestTransferPageTimeoutCoversALargeSet(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	peers := newXferPeers(map[int]int{5: 10})
	// The source answers only a call that leaves it 2 s: what the page
	// takes over this link (the answer itself comes at once).
	peers.hook = func(ctx context.Context, _ xferCall) error {
		if d, ok := ctx.Deadline(); !ok || time.Until(d) < 2*time.Second {
			return status.Error(codes.DeadlineExceeded, "the page did not arrive in time")
		}
		return nil
	}
	s := xferStore(t)
	done := make(chan struct{})
	tr := NewTransfers(TransferConfig{Peers: peers, Merge: &xferMerger{s: s}, Checkpoints: s, Timeout: 100 * time.Millisecond,
		PageBytes: 64 << 10, SetBytes: func(string) int { return 2 << 20 },
		Done: func(TransferTask) { close(done) }})
	if got := tr.pageTimeout("ks"); got < 2*time.Second || got > 3*time.Second {
		t.Fatalf("page timeout %v for 64 KiB pages of sets up to 2 MiB after a 100ms base; want 2.1-2.2s", got)
	}
	tr.Set([]TransferTask{xferTask(5, 4, "s1")})
	stop := run(tr)
	defer stop()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the transfer did not finish: %+v", tr.Status())
	}
	checkAllKeys(t, s, peers, 5)
}

// TestTransferResumesFromCheckpoint: a run stopped mid-way leaves a
// checkpoint; a new Transfers over the same store continues after it (the
// pages before it are not requested again) and ends with every key.
func TestTransferResumesFromCheckpoint(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	peers := newXferPeers(map[int]int{5: 2000})
	s := xferStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	peers.hook = func(_ context.Context, c xferCall) error {
		if len(peers.callLog()) == 7 {
			cancel() // the "crash": after the seventh page is sent
		}
		return nil
	}
	tr := NewTransfers(TransferConfig{Peers: peers, Merge: &xferMerger{s: s}, Checkpoints: s, PageKeys: 100,
		Done: func(TransferTask) { t.Error("Done before the stream ended") }})
	tr.Set([]TransferTask{xferTask(5, 4, "s1")})
	tr.Run(ctx) // returns once the hook cancelled, every goroutine stopped
	cp := checkpoints(t, s)["transfer/4/7/5"]
	if cp == "" {
		t.Fatal("no checkpoint after a stop mid-way")
	}
	var resumeAt int
	if _, err := fmt.Sscanf(cp, "p5/k%d", &resumeAt); err != nil {
		t.Fatal(err)
	}
	resumeAt++
	if resumeAt%100 != 0 || resumeAt < 100 || resumeAt > 700 {
		t.Fatalf("checkpoint %q is not the end of one of the first seven pages", cp)
	}
	// Everything up to the checkpoint is stored (it was synced before).
	for _, e := range peers.data[5][:resumeAt] {
		if set, _ := s.Get(replica.Loc{Keyspace: xferKS, Partition: 5}, e.key); set.IsEmpty() {
			t.Fatalf("key %q before the checkpoint %q is missing", e.key, cp)
		}
	}

	again := newXferPeers(map[int]int{5: 2000})
	done := make(chan struct{})
	tr2 := NewTransfers(TransferConfig{Peers: again, Merge: &xferMerger{s: s}, Checkpoints: s, PageKeys: 100,
		Done: func(TransferTask) { close(done) }})
	tr2.Set([]TransferTask{xferTask(5, 4, "s1")})
	stop := run(tr2)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the resumed transfer did not finish")
	}
	stop()
	calls := again.callLog()
	if string(calls[0].after) != cp {
		t.Fatalf("resumed after %q, want the checkpoint %q", calls[0].after, cp)
	}
	if want := (2000 - resumeAt) / 100; len(calls) != want {
		t.Fatalf("resumed transfer requested %d pages, want %d (the rest after the checkpoint)", len(calls), want)
	}
	checkAllKeys(t, s, again, 5)
	if st := statusOf(tr2, 5); st.Keys != uint64(2000-resumeAt) || st.State != TransferDone {
		t.Fatalf("resumed status %+v, want %d keys, done", st, 2000-resumeAt)
	}
}

// TestTransferRotatesSources: failures move the task to the next source
// (a down one is skipped), and every attempt resumes from the checkpoint.
func TestTransferRotatesSources(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	synctest.Test(t, func(t *testing.T) {
		peers := newXferPeers(map[int]int{1: 1000})
		unavailable := status.Error(codes.Unavailable, "flapping")
		// s1 fails every other call, s2 every third; s0 is down.
		peers.fail = func(node string, n int) error {
			switch {
			case node == "s0":
				t.Errorf("a call to the down source s0")
			case node == "s1" && n%2 == 1, node == "s2" && n%3 == 2:
				return unavailable
			}
			return nil
		}
		s := xferStore(t)
		done := make(chan struct{})
		tr := NewTransfers(TransferConfig{Peers: peers, Merge: &xferMerger{s: s}, Checkpoints: s, PageKeys: 50,
			Alive: func(node string) bool { return node != "s0" },
			Done:  func(TransferTask) { close(done) }})
		stop := run(tr)
		defer stop()
		start := time.Now()
		tr.Set([]TransferTask{xferTask(1, 1, "s0", "s1", "s2")})
		<-done
		checkAllKeys(t, s, peers, 1)
		calls := peers.callLog()
		used := map[string]int{}
		var last []byte
		ok := 0
		for i, c := range calls {
			used[c.node]++
			if c.entries == 0 {
				continue // a failed call
			}
			ok++
			if i > 0 && bytes.Compare(c.after, last) < 0 {
				t.Fatalf("call %d went back to %q after %q was merged", i, c.after, last)
			}
			last = peers.data[1][slices.IndexFunc(peers.data[1], func(e xferEntry) bool { return bytes.Compare(e.key, c.after) > 0 })+c.entries-1].key
		}
		if used["s1"] == 0 || used["s2"] == 0 {
			t.Fatalf("sources used %v, want both s1 and s2", used)
		}
		if ok != 20 {
			t.Fatalf("%d successful pages for 1000 keys in pages of 50, want 20 (none repeated)", ok)
		}
		if took := time.Since(start); took > time.Minute {
			t.Fatalf("took %v of back-off for %d failures", took, len(calls)-ok)
		}
	})
}

// TestTransferWaitsForALiveSource: with every source down the task waits
// (saying why), and starts once one is back.
func TestTransferWaitsForALiveSource(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	synctest.Test(t, func(t *testing.T) {
		peers := newXferPeers(map[int]int{2: 10})
		s := xferStore(t)
		var alive atomic.Bool
		done := make(chan struct{})
		tr := NewTransfers(TransferConfig{Peers: peers, Merge: &xferMerger{s: s}, Checkpoints: s,
			Alive: func(string) bool { return alive.Load() },
			Done:  func(TransferTask) { close(done) }})
		stop := run(tr)
		defer stop()
		tr.Set([]TransferTask{xferTask(2, 1, "s1", "s2")})
		time.Sleep(10 * time.Second) // fake time: several looks for a live source
		synctest.Wait()
		if st := statusOf(tr, 2); st.State != TransferWaiting || !strings.Contains(st.Err, "no live source") {
			t.Fatalf("status with every source down: %+v", st)
		}
		if n := len(peers.callLog()); n != 0 {
			t.Fatalf("%d calls to down sources", n)
		}
		alive.Store(true)
		<-done
		checkAllKeys(t, s, peers, 2)
	})
}

// TestTransferRefusesUndecodablePage: a page with an entry that does not
// decode stores nothing of itself; the task fails with a clear error and
// completes from the next source.
func TestTransferRefusesUndecodablePage(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	synctest.Test(t, func(t *testing.T) {
		peers := newXferPeers(map[int]int{4: 300})
		peers.mangle = func(node string, n int, resp *internalv1.ScanPartitionResponse) {
			if node == "bad" && n == 1 {
				resp.Entries[50].Set = []byte{0xff, 0xfe, 0xfd}
			}
		}
		s := xferStore(t)
		done := make(chan struct{})
		tr := NewTransfers(TransferConfig{Peers: peers, Merge: &xferMerger{s: s}, Checkpoints: s, PageKeys: 100,
			Done: func(TransferTask) { close(done) }})
		stop := run(tr)
		defer stop()
		tr.Set([]TransferTask{xferTask(4, 1, "bad", "good")})
		synctest.Wait() // the second page failed; the retry waits its back-off
		st := statusOf(tr, 4)
		if st.State != TransferFailed || !strings.Contains(st.Err, "undecodable") || !strings.Contains(st.Err, "p4/k00150") {
			t.Fatalf("status after a corrupt page: %+v", st)
		}
		loc := replica.Loc{Keyspace: xferKS, Partition: 4}
		for i, e := range peers.data[4][:200] {
			set, _ := s.Get(loc, e.key)
			if (i < 100) == set.IsEmpty() {
				t.Fatalf("key %q present=%v: only the first page may be stored", e.key, !set.IsEmpty())
			}
		}
		<-done
		checkAllKeys(t, s, peers, 4)
		if calls := peers.callLog(); string(calls[2].after) != "p4/k00099" || calls[2].node != "good" {
			t.Fatalf("retry went to %s after %q, want good after the first page", calls[2].node, calls[2].after)
		}
	})
}

// TestTransferRefusesKeyOfAnotherPartition: a page holding a key outside
// the task's partition stores nothing of itself (the key would land in a
// partition this node was not given); the task completes from the next
// source.
func TestTransferRefusesKeyOfAnotherPartition(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	synctest.Test(t, func(t *testing.T) {
		peers := newXferPeers(map[int]int{4: 300})
		peers.mangle = func(node string, n int, resp *internalv1.ScanPartitionResponse) {
			if node == "bad" && n == 1 {
				resp.Entries[len(resp.Entries)-1].Key = []byte("p5/k00000")
			}
		}
		partition := func(key []byte) int {
			var p int
			fmt.Sscanf(string(key), "p%d/", &p)
			return p
		}
		s := xferStore(t)
		done := make(chan struct{})
		tr := NewTransfers(TransferConfig{Peers: peers, Merge: &xferMerger{s: s}, Checkpoints: s, PageKeys: 100,
			Partition: partition, Done: func(TransferTask) { close(done) }})
		stop := run(tr)
		defer stop()
		tr.Set([]TransferTask{xferTask(4, 1, "bad", "good")})
		synctest.Wait()
		st := statusOf(tr, 4)
		if st.State != TransferFailed || !strings.Contains(st.Err, "of partition 5, not 4") {
			t.Fatalf("status after a page with a key of another partition: %+v", st)
		}
		loc := replica.Loc{Keyspace: xferKS, Partition: 4}
		for i, e := range peers.data[4][:200] {
			set, _ := s.Get(loc, e.key)
			if (i < 100) == set.IsEmpty() {
				t.Fatalf("key %q present=%v: only the first page may be stored", e.key, !set.IsEmpty())
			}
		}
		<-done
		checkAllKeys(t, s, peers, 4)
	})
}

// TestTransferThrottle: pulls are paced by BytesPerSecond, measured on the
// bubble's fake clock.
func TestTransferThrottle(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, rate := range []float64{20_000, 1 << 30} {
		synctest.Test(t, func(t *testing.T) {
			peers := newXferPeers(map[int]int{6: 2000})
			total := 0
			for _, e := range peers.data[6] {
				total += len(e.key) + len(e.set)
			}
			s := xferStore(t)
			done := make(chan struct{})
			tr := NewTransfers(TransferConfig{Peers: peers, Merge: &xferMerger{s: s}, Checkpoints: s, PageKeys: 100,
				BytesPerSecond: rate, Done: func(TransferTask) { close(done) }})
			stop := run(tr)
			defer stop()
			start := time.Now()
			tr.Set([]TransferTask{xferTask(6, 1, "s1")})
			<-done
			took := time.Since(start)
			// A one-second burst, then the rate; the last page's debt is
			// waited for too.
			want := time.Duration(float64(total)/rate*float64(time.Second)) - time.Second
			if took < want || took > want+2*time.Second {
				t.Fatalf("%d bytes at %.0f B/s took %v, want about %v", total, rate, took, want+time.Second)
			}
			if rate < 1<<30 {
				// Bursting the first second, then at the rate.
				if st, avg := statusOf(tr, 6), float64(total)/took.Seconds(); st.BytesPerSecond > avg*1.05 || st.BytesPerSecond < avg*0.95 {
					t.Fatalf("reported rate %.0f B/s, measured %.0f B/s", st.BytesPerSecond, avg)
				}
			}
			checkAllKeys(t, s, peers, 6)
		})
	}
}

// TestTransferParallel: at most Parallel tasks pull at once.
func TestTransferParallel(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	synctest.Test(t, func(t *testing.T) {
		peers := newXferPeers(map[int]int{0: 300, 1: 300, 2: 300, 3: 300, 4: 300})
		peers.delay = 10 * time.Millisecond
		s := xferStore(t)
		var n atomic.Int32
		all := make(chan struct{})
		tr := NewTransfers(TransferConfig{Peers: peers, Merge: &xferMerger{s: s}, Checkpoints: s, PageKeys: 100,
			Done: func(TransferTask) {
				if n.Add(1) == 5 {
					close(all)
				}
			}})
		stop := run(tr)
		defer stop()
		var tasks []TransferTask
		for p := range 5 {
			tasks = append(tasks, xferTask(p, 1, "s1"))
		}
		tr.Set(tasks)
		<-all
		if peers.maxInflight != 2 {
			t.Fatalf("%d pulls at once, want Parallel (2)", peers.maxInflight)
		}
		for p := range 5 {
			checkAllKeys(t, s, peers, p)
		}
	})
}

// TestTransferSetCancelsReplacesAndSweeps: Set cancels tasks no longer
// wanted, deletes the checkpoints of generations no longer wanted, and
// does not rerun tasks done in their generation.
func TestTransferSetCancelsReplacesAndSweeps(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	synctest.Test(t, func(t *testing.T) {
		peers := newXferPeers(map[int]int{1: 300, 2: 300, 3: 300})
		// Partition 1 hangs on its second page until cancelled.
		peers.hook = func(ctx context.Context, c xferCall) error {
			if c.partition == 1 && len(c.after) > 0 {
				<-ctx.Done()
				return status.FromContextError(ctx.Err()).Err()
			}
			return nil
		}
		s := xferStore(t)
		for _, name := range []string{"transfer/0/7/9", "transfer/2/7/2"} {
			if err := s.PutMeta(name, []byte("p9/k00001")); err != nil {
				t.Fatal(err)
			}
		}
		var mu sync.Mutex
		doneTasks := map[string]int{}
		tr := NewTransfers(TransferConfig{Peers: peers, Merge: &xferMerger{s: s}, Checkpoints: s, PageKeys: 100,
			Done: func(task TransferTask) {
				mu.Lock()
				defer mu.Unlock()
				doneTasks[fmt.Sprintf("%d/%d", task.Generation, task.Loc.Partition)]++
			}})
		stop := run(tr)
		defer stop()
		tr.Set([]TransferTask{xferTask(1, 1, "s1")})
		synctest.Wait() // hanging on page two; generation 0 swept
		if st := statusOf(tr, 1); st.State != TransferStreaming || st.Keys != 100 {
			t.Fatalf("status of the hanging task: %+v", st)
		}
		if cp := checkpoints(t, s); fmt.Sprint(cp) != "map[transfer/1/7/1:p1/k00099]" {
			t.Fatalf("checkpoints while generation 1 runs: %v (stale generations 0 and 2 must go)", cp)
		}

		// Generation 2 replaces generation 1: its task is cancelled and
		// its checkpoint deleted; generation 2's own stays (its task is
		// done, but the report may not be committed yet).
		tr.Set([]TransferTask{xferTask(2, 2, "s1")})
		synctest.Wait()
		if cp := checkpoints(t, s); fmt.Sprint(cp) != "map[transfer/2/7/2:p2/k00199]" {
			t.Fatalf("checkpoints after generation 1 was dropped and 2 finished: %v", cp)
		}
		if st := tr.Status(); len(st) != 1 || st[0].Partition != 2 || st[0].State != TransferDone {
			t.Fatalf("status after the switch: %+v", st)
		}
		calls := len(peers.callLog())

		// Done in generation 2: not rerun, neither when wanted again nor
		// when dropped and wanted again; a new task of the generation runs.
		tr.Set([]TransferTask{xferTask(2, 2, "s1")})
		synctest.Wait()
		tr.Set([]TransferTask{xferTask(3, 2, "s1")})
		synctest.Wait()
		tr.Set([]TransferTask{xferTask(2, 2, "s1"), xferTask(3, 2, "s1")})
		synctest.Wait()
		mu.Lock()
		if fmt.Sprint(doneTasks) != "map[2/2:1 2/3:1]" {
			t.Fatalf("Done calls %v, want each task of generation 2 once", doneTasks)
		}
		mu.Unlock()
		if got := len(peers.callLog()) - calls; got != 3 {
			t.Fatalf("%d pages requested after generation 2's first task was done, want 3 (partition 3 only)", got)
		}
		if st := tr.Status(); len(st) != 2 || st[0].State != TransferDone || st[1].State != TransferDone {
			t.Fatalf("status: %+v", st)
		}
		// A generation that comes back is run again (not done in it).
		tr.Set([]TransferTask{xferTask(2, 3, "s1")})
		synctest.Wait()
		mu.Lock()
		if doneTasks["3/2"] != 1 {
			t.Fatalf("task of generation 3 not run: %v", doneTasks)
		}
		mu.Unlock()
		// The transition over (no task wanted): every checkpoint goes.
		tr.Set(nil)
		synctest.Wait()
		if cp := checkpoints(t, s); len(cp) != 0 {
			t.Fatalf("checkpoints with no task wanted: %v", cp)
		}
	})
}

// TestTransferCatchUpFailureRetriesWithoutRestreaming: a failed catch-up
// is retried; the stream is not pulled again.
func TestTransferCatchUpFailureRetriesWithoutRestreaming(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	synctest.Test(t, func(t *testing.T) {
		peers := newXferPeers(map[int]int{8: 500})
		s := xferStore(t)
		var catchUps atomic.Int32
		done := make(chan struct{})
		tr := NewTransfers(TransferConfig{Peers: peers, Merge: &xferMerger{s: s}, Checkpoints: s, PageKeys: 100,
			CatchUp: func(ctx context.Context, _ TransferTask) error {
				if catchUps.Add(1) == 1 {
					return errors.New("s1 is down: sync again once it is back")
				}
				return nil
			},
			Done: func(TransferTask) { close(done) }})
		stop := run(tr)
		defer stop()
		tr.Set([]TransferTask{xferTask(8, 1, "s1")})
		<-done
		if n := len(peers.callLog()); n != 6 {
			t.Fatalf("%d pages requested, want 5 and one empty last page after the checkpoint", n)
		}
		if catchUps.Load() != 2 {
			t.Fatalf("%d catch-ups, want 2", catchUps.Load())
		}
		checkAllKeys(t, s, peers, 8)
	})
}

// refusingXferMerger is xferMerger refusing one key, as a replica refuses
// a version too far ahead of its clock.
type refusingXferMerger struct {
	*xferMerger
	refuse string
}

func (m refusingXferMerger) MergeLocal(keyspace string, key []byte, set version.Set) error {
	if string(key) == m.refuse {
		return replica.Refuse("a version written an hour ahead of this node's clock")
	}
	return m.xferMerger.MergeLocal(keyspace, key, set)
}

// TestTransferSkipsRefusedKey: a key this node refuses to merge does not
// hold the partition's move back: the other keys are stored, and a
// catch-up that only reports refused keys ends the task, which is done
// after one attempt.
func TestTransferSkipsRefusedKey(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	synctest.Test(t, func(t *testing.T) {
		peers := newXferPeers(map[int]int{8: 300})
		s := xferStore(t)
		const refused = "p8/k00150"
		var catchUps atomic.Int32
		done := make(chan struct{})
		tr := NewTransfers(TransferConfig{Peers: peers, Merge: refusingXferMerger{&xferMerger{s: s}, refused}, Checkpoints: s, PageKeys: 100,
			CatchUp: func(ctx context.Context, _ TransferTask) error {
				catchUps.Add(1)
				return fmt.Errorf("s1: 1 key(s) refused, the rest repaired: %w", replica.Refuse("a version written an hour ahead"))
			},
			Done: func(TransferTask) { close(done) }})
		stop := run(tr)
		defer stop()
		tr.Set([]TransferTask{xferTask(8, 1, "s1")})
		<-done
		if n := catchUps.Load(); n != 1 {
			t.Fatalf("%d catch-ups, want 1", n)
		}
		if n := len(peers.callLog()); n != 3 {
			t.Fatalf("%d pages requested for 300 keys in pages of 100, want 3 (no attempt again)", n)
		}
		for _, e := range peers.data[8] {
			got, err := s.Get(replica.Loc{Keyspace: xferKS, Partition: 8}, e.key)
			if err != nil {
				t.Fatal(err)
			}
			if present, want := !got.IsEmpty(), string(e.key) != refused; present != want {
				t.Fatalf("key %s present %v, want %v", e.key, present, want)
			}
		}
	})
}

// --- anti-entropy: SyncWith and tombstones of moving partitions ---

// exchangeNet serves ExchangePeers from real stores, by node.
type exchangeNet struct {
	stores map[string]*replica.Store
	topo   *membership.Topology
	// collects records the keys of each CollectTombstones request.
	collects []int
	// keeps are the nodes whose grace keeps every tombstone: they
	// collect nothing and answer every key they hold as kept.
	keeps map[string]bool
	// kept, when set, is what every CollectTombstones answers as kept.
	kept []uint32
	// writes counts the pushes, and synced those asking for an fsync.
	writes, synced atomic.Int64
}

func (n *exchangeNet) loc(keyspace string, key []byte) replica.Loc {
	ks := n.topo.Keyspaces[keyspace]
	return replica.Loc{Keyspace: ks.ID, Partition: n.topo.Ring.Partition(key)}
}

func (n *exchangeNet) store(node string) (*replica.Store, error) {
	s, ok := n.stores[node]
	if !ok {
		return nil, status.Errorf(codes.Unavailable, "no node %s", node)
	}
	return s, nil
}

func (n *exchangeNet) Leaves(_ context.Context, node string, req *internalv1.LeavesRequest) (*internalv1.LeavesResponse, error) {
	s, err := n.store(node)
	if err != nil {
		return nil, err
	}
	l, err := s.Leaves(replica.Loc{Keyspace: n.topo.Keyspaces[req.GetKeyspace()].ID, Partition: int(req.GetPartition())})
	return &internalv1.LeavesResponse{Leaves: l}, err
}

func (n *exchangeNet) BucketDigests(_ context.Context, node string, req *internalv1.BucketDigestsRequest) (*internalv1.BucketDigestsResponse, error) {
	s, err := n.store(node)
	if err != nil {
		return nil, err
	}
	var b []int
	for _, x := range req.GetBuckets() {
		b = append(b, int(x))
	}
	keys, err := s.BucketDigests(replica.Loc{Keyspace: n.topo.Keyspaces[req.GetKeyspace()].ID, Partition: int(req.GetPartition())}, b)
	resp := &internalv1.BucketDigestsResponse{}
	for _, k := range keys {
		resp.Keys = append(resp.Keys, &internalv1.KeyDigest{Key: k.Key, Digest: k.Digest})
	}
	return resp, err
}

func (n *exchangeNet) CollectTombstones(_ context.Context, node string, req *internalv1.CollectTombstonesRequest) (*internalv1.CollectTombstonesResponse, error) {
	s, err := n.store(node)
	if err != nil {
		return nil, err
	}
	n.collects = append(n.collects, len(req.GetKeys()))
	if n.kept != nil {
		return &internalv1.CollectTombstonesResponse{Kept: n.kept}, nil
	}
	loc := replica.Loc{Keyspace: n.topo.Keyspaces[req.GetKeyspace()].ID, Partition: int(req.GetPartition())}
	resp := &internalv1.CollectTombstonesResponse{}
	for i, k := range req.GetKeys() {
		set, err := s.Get(loc, k.GetKey())
		if err != nil {
			return nil, err
		}
		switch {
		case set.IsEmpty():
		case n.keeps[node] || set.Digest() != k.GetDigest() || len(set.Live()) > 0:
			resp.Kept = append(resp.Kept, uint32(i))
		default:
			if _, err := s.DeleteIfUnchanged(loc, k.GetKey(), set); err != nil {
				return nil, err
			}
		}
	}
	return resp, nil
}

func (n *exchangeNet) Read(_ context.Context, node string, req *internalv1.ReadRequest) (*internalv1.ReadResponse, error) {
	s, err := n.store(node)
	if err != nil {
		return nil, err
	}
	set, err := s.Get(n.loc(req.GetKeyspace(), req.GetKey()), req.GetKey())
	if err != nil || set.IsEmpty() {
		return &internalv1.ReadResponse{}, err
	}
	return &internalv1.ReadResponse{Set: set.Encode()}, nil
}

func (n *exchangeNet) Write(_ context.Context, node string, req *internalv1.WriteRequest) error {
	s, err := n.store(node)
	if err != nil {
		return err
	}
	set, err := version.DecodeSet(req.GetSet())
	if err != nil {
		return err
	}
	n.writes.Add(1)
	if req.GetSync() {
		n.synced.Add(1)
	}
	_, err = s.Merge(n.loc(req.GetKeyspace(), req.GetKey()), req.GetKey(), set, req.GetSync())
	return err
}

// netMerger merges into one node's store of an exchangeNet.
type netMerger struct {
	n    *exchangeNet
	node string
}

func (m netMerger) MergeLocal(keyspace string, key []byte, set version.Set) error {
	_, err := m.n.stores[m.node].Merge(m.n.loc(keyspace, key), key, set, false)
	return err
}

func (m netMerger) Sync() error { return nil }

type aliveSet map[string]bool

func (a aliveSet) Alive(id string) bool        { return a[id] }
func (a aliveSet) PendingHints(id string) bool { return false }
func (a aliveSet) DiskLow(id string) bool      { return false }

// exchangeCluster is a topology of nodes in one DC with keyspace "ks" at
// the given replication factor, and a store per node.
func exchangeCluster(t *testing.T, rf int, nodes ...string) *exchangeNet {
	t.Helper()
	var infos []membership.NodeInfo
	n := &exchangeNet{stores: map[string]*replica.Store{}}
	for i, id := range nodes {
		infos = append(infos, membership.NodeInfo{Node: placement.Node{ID: id, DC: "dc1", Rack: fmt.Sprint("r", i), Weight: 1}})
		s, err := replica.Open(memory.New(), id)
		if err != nil {
			t.Fatal(err)
		}
		n.stores[id] = s
	}
	topo, err := membership.NewTopology(1, 16, infos, []membership.KeyspaceSpec{{Name: "ks", Replication: map[string]int{"dc1": rf}}})
	if err != nil {
		t.Fatal(err)
	}
	n.topo = topo
	return n
}

// keysIn returns n keys of partition p.
func (n *exchangeNet) keysIn(p, count int) [][]byte {
	var out [][]byte
	for i := 0; len(out) < count; i++ {
		k := fmt.Appendf(nil, "key-%d", i)
		if n.topo.Ring.Partition(k) == p {
			out = append(out, k)
		}
	}
	return out
}

func (n *exchangeNet) put(t *testing.T, node string, key []byte, v version.Value) {
	t.Helper()
	s := n.stores[node]
	if _, err := s.Update(n.loc("ks", key), key, false, func(cur version.Set) (version.Set, error) {
		next, _ := cur.Put(cur.Context(), s.Actor(), v, 1)
		return next, nil
	}); err != nil {
		t.Fatal(err)
	}
}

// partitionWithout is a partition of keyspace ks that node does not
// replicate, and its replicas.
func partitionWithout(t *testing.T, n *exchangeNet, node string) (p int, owners []string) {
	t.Helper()
	for q := range 16 {
		reps := n.topo.Keyspaces["ks"].Table.Replicas(q)
		if !slices.ContainsFunc(reps, func(r placement.Replica) bool { return r.Node == node }) {
			for _, r := range reps {
				owners = append(owners, r.Node)
			}
			return q, owners
		}
	}
	t.Fatalf("no partition without %s", node)
	return -1, nil
}

// TestSyncWithPendingOwner: a node outside the partition's preference
// list syncs with the replicas in both directions.
func TestSyncWithPendingOwner(t *testing.T) {
	n := exchangeCluster(t, 2, "n1", "n2", "n3")
	p, owners := partitionWithout(t, n, "n3")
	keys := n.keysIn(p, 30)
	for i, k := range keys {
		switch i % 3 {
		case 0:
			n.put(t, owners[0], k, version.Value{Bytes: []byte("a")})
		case 1:
			n.put(t, owners[1], k, version.Value{Bytes: []byte("b")})
		case 2: // concurrent on both owners, and a newer one here
			n.put(t, owners[0], k, version.Value{Bytes: []byte("a")})
			n.put(t, owners[1], k, version.Value{Bytes: []byte("b")})
			n.put(t, "n3", k, version.Value{Bytes: []byte("c")})
		}
	}
	alive := aliveSet{"n1": true, "n2": true, "n3": true}
	ae, err := NewAntiEntropy(AntiEntropyConfig{Self: "n3", DC: "dc1", Store: n.stores["n3"], Peers: n, Merge: netMerger{n, "n3"},
		Routing: alive, Topology: func() *membership.Topology { return n.topo }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	mism, err := ae.SyncWith(ctx, "ks", p, append([]string{"n3"}, owners...))
	if err != nil || mism == 0 {
		t.Fatalf("SyncWith = %d mismatches, %v", mism, err)
	}
	if n.writes.Load() == 0 || n.synced.Load() != 0 {
		t.Fatalf("SyncWith pushed %d sets, %d fsynced; want some, none fsynced (a catch-up keeps its own copy)", n.writes.Load(), n.synced.Load())
	}
	loc := n.loc("ks", keys[0])
	want := leaves(t, n.stores["n3"], loc)
	for _, o := range owners {
		if got := leaves(t, n.stores[o], loc); !slices.Equal(got, want) {
			t.Fatalf("%s differs from n3 after SyncWith", o)
		}
	}
	for i, k := range keys {
		set, _ := n.stores["n3"].Get(loc, k)
		if wantLive := []int{1, 1, 3}[i%3]; len(set.Live()) != wantLive {
			t.Fatalf("key %q on n3: %d live siblings, want %d", k, len(set.Live()), wantLive)
		}
	}
	if mism, err := ae.SyncWith(ctx, "ks", p, owners); err != nil || mism != 0 {
		t.Fatalf("second SyncWith = %d mismatches, %v; want 0", mism, err)
	}

	alive[owners[1]] = false
	if _, err := ae.SyncWith(ctx, "ks", p, owners); err == nil || !strings.Contains(err.Error(), owners[1]+" is down") {
		t.Fatalf("SyncWith with %s down = %v, want an error naming it", owners[1], err)
	}
	if _, err := ae.SyncWith(ctx, "nope", p, owners); err == nil {
		t.Fatal("SyncWith of an unknown keyspace succeeded")
	}
	if _, err := ae.SyncWith(ctx, "ks", 16, owners); err == nil {
		t.Fatal("SyncWith of a partition past the ring succeeded")
	}
	if _, err := ae.SyncWith(ctx, "ks", p, []string{"n3"}); err == nil {
		t.Fatal("SyncWith with no peer but itself succeeded")
	}
}

func leaves(t *testing.T, s *replica.Store, loc replica.Loc) []uint64 {
	t.Helper()
	l, err := s.Leaves(loc)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestNoTombstoneCollectionWhileMoving: a verified old tombstone is kept
// while its partition moves, and collected once it does not.
func TestNoTombstoneCollectionWhileMoving(t *testing.T) {
	n := exchangeCluster(t, 2, "n1", "n2")
	const p = 5
	key := n.keysIn(p, 1)[0]
	tomb, _ := version.Set{}.Put(version.Clock{}, "old", version.Value{Tombstone: true, Time: version.Timestamp{Wall: 1}}, 1)
	loc := n.loc("ks", key)
	for _, s := range n.stores {
		if _, err := s.Merge(loc, key, tomb, false); err != nil {
			t.Fatal(err)
		}
	}
	var moving atomic.Bool
	moving.Store(true)
	ae, err := NewAntiEntropy(AntiEntropyConfig{Self: "n1", DC: "dc1", Store: n.stores["n1"], Peers: n, Merge: netMerger{n, "n1"},
		Routing: aliveSet{"n1": true, "n2": true}, Topology: func() *membership.Topology { return n.topo },
		TombstoneGrace: time.Hour, Moving: func(ks string, part int) bool { return ks == "ks" && part == p && moving.Load() }})
	if err != nil {
		t.Fatal(err)
	}
	present := func() (out []string) {
		for _, id := range []string{"n1", "n2"} {
			if set, _ := n.stores[id].Get(loc, key); !set.IsEmpty() {
				out = append(out, id)
			}
		}
		return out
	}
	if _, err := ae.RunNow(context.Background(), "ks", p, nil); err != nil {
		t.Fatal(err)
	}
	if got := present(); len(got) != 2 {
		t.Fatalf("tombstone of a moving partition collected: left on %v", got)
	}
	moving.Store(false)
	if _, err := ae.RunNow(context.Background(), "ks", p, nil); err != nil {
		t.Fatal(err)
	}
	if got := present(); len(got) != 0 {
		t.Fatalf("tombstone not collected once the partition stopped moving: left on %v", got)
	}
}

// refusingMerger is netMerger refusing one key as a replica refuses a
// version too far ahead of its clock.
type refusingMerger struct {
	netMerger
	refuse string
}

func (m refusingMerger) MergeLocal(keyspace string, key []byte, set version.Set) error {
	if string(key) == m.refuse {
		return replica.Refuse("a version written too far ahead of this node's clock")
	}
	return m.netMerger.MergeLocal(keyspace, key, set)
}

// TestRefusedKeyDoesNotHoldUpTheRest: a key this node refuses to merge
// (FAILED_PRECONDITION) is skipped, the other keys of the partition are
// repaired, and the round reports the refusal.
func TestRefusedKeyDoesNotHoldUpTheRest(t *testing.T) {
	n := exchangeCluster(t, 2, "n1", "n2")
	const p = 4
	keys := n.keysIn(p, 5)
	for _, key := range keys {
		n.put(t, "n2", key, version.Value{Bytes: []byte("v")})
	}
	refuse := string(keys[2])
	ae, err := NewAntiEntropy(AntiEntropyConfig{Self: "n1", DC: "dc1", Store: n.stores["n1"], Peers: n,
		Merge:   refusingMerger{netMerger{n, "n1"}, refuse},
		Routing: aliveSet{"n1": true, "n2": true}, Topology: func() *membership.Topology { return n.topo }, TombstoneGrace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	_, err = ae.RunNow(context.Background(), "ks", p, nil)
	if err == nil || !strings.Contains(err.Error(), "1 key(s) refused") {
		t.Fatalf("round with a refused key: %v, want it reported", err)
	}
	for _, key := range keys {
		set, _ := n.stores["n1"].Get(n.loc("ks", key), key)
		if got, want := !set.IsEmpty(), string(key) != refuse; got != want {
			t.Errorf("key %q on n1: present %v, want %v", key, got, want)
		}
	}
}

// foreignKeyNet is exchangeNet whose nodes list one key of another
// partition among a partition's bucket digests.
type foreignKeyNet struct {
	*exchangeNet
	foreign []byte
}

func (n foreignKeyNet) BucketDigests(ctx context.Context, node string, req *internalv1.BucketDigestsRequest) (*internalv1.BucketDigestsResponse, error) {
	resp, err := n.exchangeNet.BucketDigests(ctx, node, req)
	if err == nil {
		resp.Keys = append(resp.Keys, &internalv1.KeyDigest{Key: n.foreign, Digest: 1})
	}
	return resp, err
}

// TestExchangeIgnoresKeysOfAnotherPartition: a key a peer lists in an
// exchange of partition p that belongs to another partition is not taken
// (a peer cannot place data in partitions through an exchange of
// another); p's own keys are repaired.
func TestExchangeIgnoresKeysOfAnotherPartition(t *testing.T) {
	n := exchangeCluster(t, 2, "n1", "n2")
	const p, q = 4, 5
	own, foreign := n.keysIn(p, 1)[0], n.keysIn(q, 1)[0]
	n.put(t, "n2", own, version.Value{Bytes: []byte("v")})
	n.put(t, "n2", foreign, version.Value{Bytes: []byte("v")})
	ae, err := NewAntiEntropy(AntiEntropyConfig{Self: "n1", DC: "dc1", Store: n.stores["n1"], Peers: foreignKeyNet{n, foreign}, Merge: netMerger{n, "n1"},
		Routing: aliveSet{"n1": true, "n2": true}, Topology: func() *membership.Topology { return n.topo }, TombstoneGrace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ae.RunNow(context.Background(), "ks", p, nil); err != nil {
		t.Fatal(err)
	}
	if set, _ := n.stores["n1"].Get(n.loc("ks", own), own); set.IsEmpty() {
		t.Fatal("the partition's own key was not repaired")
	}
	if set, _ := n.stores["n1"].Get(n.loc("ks", foreign), foreign); !set.IsEmpty() {
		t.Fatalf("a key of partition %d was taken in an exchange of partition %d", q, p)
	}
}

// bucketCountingNet is exchangeNet recording how many buckets each
// BucketDigests call asks for.
type bucketCountingNet struct {
	*exchangeNet
	asked *[]int
}

func (n bucketCountingNet) BucketDigests(ctx context.Context, node string, req *internalv1.BucketDigestsRequest) (*internalv1.BucketDigestsResponse, error) {
	*n.asked = append(*n.asked, len(req.GetBuckets()))
	return n.exchangeNet.BucketDigests(ctx, node, req)
}

// TestExchangeAsksForBucketsAFewAtATime: a replica that differs in most
// buckets of a partition (one restarted empty) is asked for their keys in
// calls of at most bucketsPerCall buckets, not one reply listing the
// whole partition, and every key is repaired.
func TestExchangeAsksForBucketsAFewAtATime(t *testing.T) {
	n := exchangeCluster(t, 2, "n1", "n2")
	const p = 6
	keys := n.keysIn(p, 2000) // most of the 256 buckets
	for _, key := range keys {
		n.put(t, "n2", key, version.Value{Bytes: []byte("v")})
	}
	var asked []int
	ae, err := NewAntiEntropy(AntiEntropyConfig{Self: "n1", DC: "dc1", Store: n.stores["n1"], Peers: bucketCountingNet{n, &asked}, Merge: netMerger{n, "n1"},
		Routing: aliveSet{"n1": true, "n2": true}, Topology: func() *membership.Topology { return n.topo }, TombstoneGrace: time.Hour,
		KeysPerSecond: 1e9, BytesPerSecond: 1e12})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ae.RunNow(context.Background(), "ks", p, nil); err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, b := range asked {
		if b > bucketsPerCall {
			t.Fatalf("a call asked for %d buckets, over %d (calls: %v)", b, bucketsPerCall, asked)
		}
		total += b
	}
	if total < 200 || len(asked) < 200/bucketsPerCall {
		t.Fatalf("%d calls for %d buckets, want most of the 256 buckets asked for in calls of at most %d", len(asked), total, bucketsPerCall)
	}
	for _, key := range keys {
		if set, _ := n.stores["n1"].Get(n.loc("ks", key), key); set.IsEmpty() {
			t.Fatalf("key %q not repaired", key)
		}
	}
}

// TestManyTombstonesCollectedInBatches: after a mass delete a partition's
// tombstones (more than one request may carry) go to the other replica in
// bounded requests, and every one is collected on both.
func TestManyTombstonesCollectedInBatches(t *testing.T) {
	n := exchangeCluster(t, 2, "n1", "n2")
	const p, count = 3, 2*collectBatchKeys + 17
	tomb, _ := version.Set{}.Put(version.Clock{}, "old", version.Value{Tombstone: true, Time: version.Timestamp{Wall: 1}}, 1)
	keys := n.keysIn(p, count)
	loc := n.loc("ks", keys[0])
	for _, s := range n.stores {
		for _, key := range keys {
			if _, err := s.Merge(loc, key, tomb, false); err != nil {
				t.Fatal(err)
			}
		}
	}
	ae, err := NewAntiEntropy(AntiEntropyConfig{Self: "n1", DC: "dc1", Store: n.stores["n1"], Peers: n, Merge: netMerger{n, "n1"},
		Routing: aliveSet{"n1": true, "n2": true}, Topology: func() *membership.Topology { return n.topo }, TombstoneGrace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ae.RunNow(context.Background(), "ks", p, nil); err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, k := range n.collects {
		if k > collectBatchKeys {
			t.Fatalf("a request carried %d keys, more than %d", k, collectBatchKeys)
		}
		total += k
	}
	if total != count || len(n.collects) != 3 {
		t.Fatalf("requests of %v keys, want %d keys in 3", n.collects, count)
	}
	for id, s := range n.stores {
		for _, key := range keys {
			if set, _ := s.Get(loc, key); !set.IsEmpty() {
				t.Fatalf("%s still holds the tombstone of %q", id, key)
			}
		}
	}
}

// TestTombstonesKeptWhereAReplicaKeepsThem: a replica whose own grace
// still keeps a tombstone answers it as kept, and the collecting node
// keeps its copy too (dropped there alone, anti-entropy would bring it
// back from the replica until both graces passed); once the replica lets
// it go, both collect it. A reply naming a key the request did not carry
// deletes nothing.
func TestTombstonesKeptWhereAReplicaKeepsThem(t *testing.T) {
	n := exchangeCluster(t, 2, "n1", "n2")
	const p = 5
	tomb, _ := version.Set{}.Put(version.Clock{}, "old", version.Value{Tombstone: true, Time: version.Timestamp{Wall: 1}}, 1)
	keys := n.keysIn(p, 3)
	loc := n.loc("ks", keys[0])
	for _, s := range n.stores {
		for _, key := range keys {
			if _, err := s.Merge(loc, key, tomb, false); err != nil {
				t.Fatal(err)
			}
		}
	}
	ae, err := NewAntiEntropy(AntiEntropyConfig{Self: "n1", DC: "dc1", Store: n.stores["n1"], Peers: n, Merge: netMerger{n, "n1"},
		Routing: aliveSet{"n1": true, "n2": true}, Topology: func() *membership.Topology { return n.topo }, TombstoneGrace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	held := func(node string) int {
		c := 0
		for _, key := range keys {
			if set, _ := n.stores[node].Get(loc, key); !set.IsEmpty() {
				c++
			}
		}
		return c
	}

	n.kept = []uint32{uint32(len(keys))} // out of range
	if _, err := ae.RunNow(context.Background(), "ks", p, nil); err == nil {
		t.Fatal("a reply keeping a key the request did not carry: no error")
	}
	if got := held("n1"); got != len(keys) {
		t.Fatalf("after a bad reply n1 holds %d of %d tombstones, want all", got, len(keys))
	}
	n.kept = nil

	n.keeps = map[string]bool{"n2": true}
	if _, err := ae.RunNow(context.Background(), "ks", p, nil); err != nil {
		t.Fatal(err)
	}
	if got1, got2 := held("n1"), held("n2"); got1 != len(keys) || got2 != len(keys) {
		t.Fatalf("n2 keeps its tombstones: n1 holds %d, n2 %d of %d; want all on both", got1, got2, len(keys))
	}

	n.keeps = nil
	if _, err := ae.RunNow(context.Background(), "ks", p, nil); err != nil {
		t.Fatal(err)
	}
	if got1, got2 := held("n1"), held("n2"); got1 != 0 || got2 != 0 {
		t.Fatalf("n2's grace passed: n1 holds %d, n2 %d tombstones; want none", got1, got2)
	}
}

func TestCollectChunk(t *testing.T) {
	keys := func(sizes ...int) []*internalv1.KeyDigest {
		var out []*internalv1.KeyDigest
		for _, n := range sizes {
			out = append(out, &internalv1.KeyDigest{Key: make([]byte, n)})
		}
		return out
	}
	many := make([]int, collectBatchKeys+5)
	for i := range many {
		many[i] = 1
	}
	for _, tc := range []struct {
		name  string
		cands []*internalv1.KeyDigest
		want  int
	}{
		{"few small keys go together", keys(3, 4, 5), 3},
		{"at most the batch's keys", keys(many...), collectBatchKeys},
		{"bytes bound the batch", keys(collectBatchBytes/2, collectBatchBytes/2, 1), 2},
		{"a key alone past the bytes still goes", keys(collectBatchBytes+1, 1), 1},
		{"a key that would pass the bytes waits", keys(10, collectBatchBytes), 1},
	} {
		if got := collectChunk(tc.cands); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}

// TestNoTombstoneCollectionWithPendingReplicas: the placement table's
// pending replicas alone stop collection (Moving nil).
func TestNoTombstoneCollectionWithPendingReplicas(t *testing.T) {
	n := exchangeCluster(t, 2, "n1", "n2")
	old := n.topo.Keyspaces["ks"].Table
	nodes := []placement.Node{
		{ID: "n1", DC: "dc1", Rack: "r0", Weight: 1},
		{ID: "n2", DC: "dc1", Rack: "r1", Weight: 1},
		{ID: "n3", DC: "dc1", Rack: "r2", Weight: 1},
	}
	ring, err := placement.New(16, nodes)
	if err != nil {
		t.Fatal(err)
	}
	next, err := ring.Table(placement.Replication{"dc1": 2})
	if err != nil {
		t.Fatal(err)
	}
	moving, err := placement.Transition(old, next, func(int) bool { return false })
	if err != nil {
		t.Fatal(err)
	}
	p := -1
	for q := range 16 {
		if len(moving.Pending(q)) > 0 {
			p = q
			break
		}
	}
	if p < 0 {
		t.Fatal("no partition moves to n3")
	}
	key := n.keysIn(p, 1)[0]
	loc := n.loc("ks", key)
	tomb, _ := version.Set{}.Put(version.Clock{}, "old", version.Value{Tombstone: true, Time: version.Timestamp{Wall: 1}}, 1)
	for _, s := range n.stores {
		if _, err := s.Merge(loc, key, tomb, false); err != nil {
			t.Fatal(err)
		}
	}
	var table atomic.Pointer[placement.Table]
	table.Store(moving)
	topo := func() *membership.Topology {
		ks := *n.topo.Keyspaces["ks"]
		ks.Table = table.Load()
		tp := *n.topo
		tp.Keyspaces = map[string]*membership.Keyspace{"ks": &ks}
		return &tp
	}
	ae, err := NewAntiEntropy(AntiEntropyConfig{Self: "n1", DC: "dc1", Store: n.stores["n1"], Peers: n, Merge: netMerger{n, "n1"},
		Routing: aliveSet{"n1": true, "n2": true}, Topology: topo, TombstoneGrace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ae.RunNow(context.Background(), "ks", p, nil); err != nil {
		t.Fatal(err)
	}
	if set, _ := n.stores["n1"].Get(loc, key); set.IsEmpty() {
		t.Fatalf("tombstone of partition %d collected while it moves to %v", p, moving.Pending(p))
	}
	table.Store(old)
	if _, err := ae.RunNow(context.Background(), "ks", p, nil); err != nil {
		t.Fatal(err)
	}
	if set, _ := n.stores["n1"].Get(loc, key); !set.IsEmpty() {
		t.Fatal("tombstone not collected once the partition stopped moving")
	}
}

// lowRouting is aliveSet with some nodes low on disk.
type lowRouting struct {
	aliveSet
	low map[string]bool
}

func (r lowRouting) DiskLow(id string) bool { return r.low[id] }

// TestExchangeWithPeerLowOnDisk: an exchange with a peer that gossips it
// is low on disk pulls everything it has that this node lacks and pushes
// it nothing (it would refuse), while the other peers get both ways; the
// partition is not verified and the run says why.
func TestExchangeWithPeerLowOnDisk(t *testing.T) {
	n := exchangeCluster(t, 3, "n1", "n2", "n3")
	p := 5
	keys := n.keysIn(p, 6)
	for i, k := range keys {
		if i%2 == 0 {
			n.put(t, "n2", k, version.Value{Bytes: []byte("from-n2")}) // to pull from n2
		} else {
			n.put(t, "n3", k, version.Value{Bytes: []byte("from-n3")}) // n2 would need a push
		}
	}
	routing := lowRouting{aliveSet{"n1": true, "n2": true, "n3": true}, map[string]bool{"n2": true}}
	ae, err := NewAntiEntropy(AntiEntropyConfig{Self: "n3", DC: "dc1", Store: n.stores["n3"], Peers: n, Merge: netMerger{n, "n3"},
		Routing: routing, Topology: func() *membership.Topology { return n.topo }})
	if err != nil {
		t.Fatal(err)
	}
	_, err = ae.RunNow(context.Background(), "ks", p, nil)
	if err == nil || !strings.Contains(err.Error(), "n2 is low on disk") {
		t.Fatalf("RunNow with n2 low on disk = %v, want an error naming it", err)
	}
	loc := n.loc("ks", keys[0])
	for i, k := range keys {
		for _, node := range []string{"n1", "n3"} {
			if set, _ := n.stores[node].Get(loc, k); len(set.Live()) != 1 {
				t.Errorf("key %d on %s: %d live values, want 1 (pulled from n2 or pushed from n3)", i, node, len(set.Live()))
			}
		}
		set, _ := n.stores["n2"].Get(loc, k)
		if got := len(set.Live()); (i%2 == 0) != (got == 1) {
			t.Errorf("key %d on n2 (low on disk): %d live values; want its own only, nothing pushed", i, got)
		}
	}
	for _, st := range ae.Status("ks") {
		if st.Partition == p && !st.Verified.IsZero() {
			t.Errorf("partition %d verified at %v with n2 left behind", p, st.Verified)
		}
	}
}

// TestSyncBeforeDropIsDurable: a node about to delete a partition it no
// longer replicates pushes what only it holds with an fsync at the peer
// before the peer answers; otherwise a crash of the peer right after the
// drop loses a write acknowledged on the old owner alone.
func TestSyncBeforeDropIsDurable(t *testing.T) {
	n := exchangeCluster(t, 2, "n1", "n2", "n3")
	p, owners := partitionWithout(t, n, "n3")
	keys := n.keysIn(p, 5)
	for _, k := range keys {
		n.put(t, "n3", k, version.Value{Bytes: []byte("only on the old owner")})
	}
	ae, err := NewAntiEntropy(AntiEntropyConfig{Self: "n3", DC: "dc1", Store: n.stores["n3"], Peers: n, Merge: netMerger{n, "n3"},
		Routing: aliveSet{"n1": true, "n2": true, "n3": true}, Topology: func() *membership.Topology { return n.topo },
		TombstoneGrace: longGrace})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ae.SyncBeforeDrop(context.Background(), "ks", p, owners); err != nil {
		t.Fatal(err)
	}
	if want := int64(len(keys) * len(owners)); n.writes.Load() != want || n.synced.Load() != want {
		t.Fatalf("pushed %d sets, %d fsynced; want %d, every one fsynced", n.writes.Load(), n.synced.Load(), want)
	}
}

// longGrace is a tombstone-grace under which exchangeNet.put's sets,
// stamped at the start of 1970, are younger than the grace: pushed
// before a drop (staleForDrop).
const longGrace = 100 * 365 * 24 * time.Hour

// TestSyncBeforeDropLeavesWhatGraceOutlived: before a drop, a key the
// replicas lack whose every write is older than tombstone-grace is not
// pushed (the replicas most likely collected its tombstone: pushing it
// would bring a deleted value back everywhere); a key written within the
// grace is, fsynced.
func TestSyncBeforeDropLeavesWhatGraceOutlived(t *testing.T) {
	n := exchangeCluster(t, 2, "n1", "n2", "n3")
	p, owners := partitionWithout(t, n, "n3")
	keys := n.keysIn(p, 2)
	n.put(t, "n3", keys[0], version.Value{Bytes: []byte("written in 1970, deleted since")})
	now := time.Now().UnixNano()
	s := n.stores["n3"]
	if _, err := s.Update(n.loc("ks", keys[1]), keys[1], false, func(cur version.Set) (version.Set, error) {
		next, _ := cur.Put(cur.Context(), s.Actor(), version.Value{Bytes: []byte("written now"), Time: version.Timestamp{Wall: now}}, now)
		return next, nil
	}); err != nil {
		t.Fatal(err)
	}
	ae, err := NewAntiEntropy(AntiEntropyConfig{Self: "n3", DC: "dc1", Store: n.stores["n3"], Peers: n, Merge: netMerger{n, "n3"},
		Routing: aliveSet{"n1": true, "n2": true, "n3": true}, Topology: func() *membership.Topology { return n.topo }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ae.SyncBeforeDrop(context.Background(), "ks", p, owners); err != nil {
		t.Fatal(err)
	}
	for _, o := range owners {
		if old, _ := n.stores[o].Get(n.loc("ks", keys[0]), keys[0]); !old.IsEmpty() {
			t.Errorf("%s got the key last written 56 years ago, which it lacked: %v", o, old)
		}
		if recent, _ := n.stores[o].Get(n.loc("ks", keys[1]), keys[1]); len(recent.Live()) != 1 {
			t.Errorf("%s lacks the key written now: %v", o, recent)
		}
	}
	if want := int64(len(owners)); n.writes.Load() != want || n.synced.Load() != want {
		t.Fatalf("pushed %d sets, %d fsynced; want %d (the recent key to each owner)", n.writes.Load(), n.synced.Load(), want)
	}
}

// diskFullMerger is the merger of a node low on disk: its store's write
// gate refuses every merge with RESOURCE_EXHAUSTED, which is not a
// refusal of the key (replica.Refused). It counts the merges asked.
type diskFullMerger struct{ merges atomic.Int64 }

func (m *diskFullMerger) MergeLocal(string, []byte, version.Set) error {
	m.merges.Add(1)
	return status.Error(codes.ResourceExhausted, "node n3 is low on disk: 100.0 MiB free, under min-free-disk 256.0 MiB")
}

func (m *diskFullMerger) Sync() error { return nil }

// TestSyncBeforeDropLowOnDisk: a node low on disk lets go of a partition
// moved off it. Before the drop it pushes, fsynced, what the owners lack
// or hold only an older or concurrent version of, and merges nothing
// itself (its store would refuse, and the copy is deleted next), so keys
// the owners wrote since the move do not fail the sync and keep the
// partition, and the disk, forever.
func TestSyncBeforeDropLowOnDisk(t *testing.T) {
	n := exchangeCluster(t, 2, "n1", "n2", "n3")
	p, owners := partitionWithout(t, n, "n3")
	keys := n.keysIn(p, 3)
	a, b, c := keys[0], keys[1], keys[2]
	loc := n.loc("ks", a)
	get := func(node string, key []byte) version.Set {
		t.Helper()
		set, err := n.stores[node].Get(loc, key)
		if err != nil {
			t.Fatal(err)
		}
		return set
	}
	copySet := func(from, to string, key []byte) {
		t.Helper()
		if _, err := n.stores[to].Merge(loc, key, get(from, key), false); err != nil {
			t.Fatal(err)
		}
	}
	// A: acknowledged on the old owner alone.
	n.put(t, "n3", a, version.Value{Bytes: []byte("only on the old owner")})
	// B: the owners hold a version newer than the old owner's (written
	// there after the move).
	n.put(t, "n3", b, version.Value{Bytes: []byte("old")})
	copySet("n3", owners[0], b)
	n.put(t, owners[0], b, version.Value{Bytes: []byte("newer")})
	copySet(owners[0], owners[1], b)
	// C: concurrent versions on the old owner and on the owners.
	n.put(t, "n3", c, version.Value{Bytes: []byte("old owner")})
	for _, o := range owners {
		n.put(t, o, c, version.Value{Bytes: []byte("owner")})
	}
	bBefore := get(owners[0], b)

	m := &diskFullMerger{}
	ae, err := NewAntiEntropy(AntiEntropyConfig{Self: "n3", DC: "dc1", Store: n.stores["n3"], Peers: n, Merge: m,
		Routing: aliveSet{"n1": true, "n2": true, "n3": true}, Topology: func() *membership.Topology { return n.topo },
		TombstoneGrace: longGrace})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ae.SyncBeforeDrop(context.Background(), "ks", p, owners); err != nil {
		t.Fatalf("SyncBeforeDrop on a node low on disk = %v, want nil", err)
	}
	if got := m.merges.Load(); got != 0 {
		t.Errorf("%d local merges before a drop, want none", got)
	}
	if want := int64(2 * len(owners)); n.writes.Load() != want || n.synced.Load() != want {
		t.Errorf("pushed %d sets, %d fsynced; want %d (A and C to each owner), every one fsynced", n.writes.Load(), n.synced.Load(), want)
	}
	for _, o := range owners {
		if live := get(o, a).Live(); len(live) != 1 || string(live[0].Value.Bytes) != "only on the old owner" {
			t.Errorf("A on %s: %v, want the old owner's value", o, live)
		}
		if got := get(o, b); !got.Equal(bBefore) {
			t.Errorf("B on %s changed to %v; it held the newer version", o, got)
		}
		if live := get(o, c).Live(); len(live) != 2 {
			t.Errorf("C on %s: %d live siblings, want 2 (its own and the old owner's)", o, len(live))
		}
	}
}
