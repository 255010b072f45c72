package coordinator

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestWorkers: tasks run at once however many there are, at most the bound
// of goroutines stays waiting afterwards, a waiting one takes the next
// task, and Close stops them.
func TestWorkers(t *testing.T) {
	c := &Coordinator{work: newWorkers(2)}
	c.bgCtx, c.bgCancel = context.WithCancel(context.Background())
	// Count the worker goroutines themselves: the process's total moves
	// with whatever else the test binary runs or winds down.
	workers := func() int {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		return strings.Count(string(buf), "coordinator.(*Coordinator).worker(")
	}
	goroutines := func(want int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for workers() != want {
			if time.Now().After(deadline) {
				t.Fatalf("%d worker goroutines, want %d", workers(), want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	done := make(chan struct{})
	drains := func(n int) []*fanout {
		var fs []*fanout
		for range n {
			// A drain waiting for one late reply.
			f := &fanout{c: c, ch: make(chan reply, 1), outstanding: 1, cancel: func() { done <- struct{}{} }}
			c.goTask(task{f: f, kind: taskDrain})
			fs = append(fs, f)
		}
		return fs
	}
	fs := drains(10)
	goroutines(10) // all at once
	for _, f := range fs {
		f.ch <- reply{}
		<-done
	}
	goroutines(2) // two wait for more

	fs = drains(2)
	goroutines(2) // taken by the waiting ones
	for _, f := range fs {
		f.ch <- reply{}
		<-done
	}
	goroutines(2)

	c.Close()
	goroutines(0)
}
