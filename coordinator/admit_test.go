package coordinator

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meridiankv/meridian/engine/memory"
	"github.com/meridiankv/meridian/replica"
)

func TestAdmitterShedsAfterTheWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := newAdmitter(2, 20*time.Millisecond)
		ctx := context.Background()
		for i := 0; i < 2; i++ {
			if !a.acquire(ctx) {
				t.Fatalf("free slot %d refused", i+1)
			}
		}
		start := time.Now()
		if a.acquire(ctx) {
			t.Fatal("a third request got a slot of two")
		}
		if waited := time.Since(start); waited != 20*time.Millisecond {
			t.Fatalf("shed after %v, want after the 20ms wait", waited)
		}
		// A slot freed while a request waits goes to it.
		go func() {
			time.Sleep(5 * time.Millisecond)
			a.release()
		}()
		if !a.acquire(ctx) {
			t.Fatal("a slot freed during the wait was not taken")
		}
		if a.inUse() != 2 {
			t.Fatalf("in use %d, want 2", a.inUse())
		}
	})
}

func TestOverloadErrorIsResourceExhausted(t *testing.T) {
	err := error(&OverloadError{What: "requests", InFlight: 10, Max: 10})
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("code %v", st.Code())
	}
	var oe *OverloadError
	if !errors.As(err, &oe) || oe.Max != 10 {
		t.Fatal("not an OverloadError")
	}
	// After a wait the counts are read when it ended: the message says so
	// rather than claim the node is under its limit.
	waited := (&OverloadError{What: "requests", InFlight: 23, Max: 40, Waited: 20 * time.Millisecond}).Error()
	if want := "none of its 40 slots for requests came free for this one within 20ms (23 in flight now)"; !strings.Contains(waited, want) {
		t.Fatalf("message %q lacks %q", waited, want)
	}
}

func TestAdmitShedsWritesPastBackgroundBytes(t *testing.T) {
	store, err := replica.Open(memory.New(), "n1")
	if err != nil {
		t.Fatal(err)
	}
	c := &Coordinator{cfg: Config{Store: store, MaxBackgroundBytes: 1 << 20}, obs: nopObserver{},
		inflight: newLimiter(8, 1, 8, 0), bgSlots: newAdmitter(8, 0)}
	c.bgBytes.Store(2 << 20)
	if _, err := c.admit(context.Background(), OpWrite, nil); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("write with 2 MiB held against a 1 MiB bound: %v, want RESOURCE_EXHAUSTED", err)
	}
	slot, err := c.admit(context.Background(), OpRead, nil)
	if err != nil {
		t.Fatalf("reads are not held back by background writes: %v", err)
	}
	slot.release(true)
	c.bgBytes.Store(0)
	slot, err = c.admit(context.Background(), OpWrite, nil)
	if err != nil {
		t.Fatalf("write once the bytes drained: %v", err)
	}
	slot.release(true)
}

// TestAdmitWaitEndedByTheCaller: a request whose caller's deadline passes
// (or who gives up) while it waits for a slot gets DEADLINE_EXCEEDED (or
// CANCELED), not the RESOURCE_EXHAUSTED that tells a client to try
// another replica; one that outwaits the node's own wait is still shed.
func TestAdmitWaitEndedByTheCaller(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store, err := replica.Open(memory.New(), "n1")
		if err != nil {
			t.Fatal(err)
		}
		c := &Coordinator{cfg: Config{Store: store, MaxBackgroundBytes: 1 << 20}, obs: nopObserver{},
			inflight: newLimiter(1, 1, 1, time.Second), bgSlots: newAdmitter(8, 0)}
		held, err := c.admit(context.Background(), OpRead, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer held.release(true)

		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		if _, err := c.admit(ctx, OpRead, nil); status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("deadline passed while waiting for a slot: %v, want DEADLINE_EXCEEDED", err)
		}
		ctx, cancel = context.WithCancel(context.Background())
		go func() {
			time.Sleep(5 * time.Millisecond)
			cancel()
		}()
		if _, err := c.admit(ctx, OpWrite, nil); status.Code(err) != codes.Canceled {
			t.Fatalf("caller gave up while waiting for a slot: %v, want CANCELED", err)
		}
		if _, err := c.admit(context.Background(), OpRead, nil); status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("no slot within the node's wait: %v, want RESOURCE_EXHAUSTED", err)
		}
	})
}
