package coordinator

// A write runs a few things at once: a send to each other replica, the wait
// for its local fsync, and, once the client has its answer, the drain of the
// late replies; a read, a read from each other replica. A goroutine started
// for each would allocate a closure per task (and grow a fresh stack);
// instead a task goes to a goroutine kept from an earlier task that is
// waiting for one, and a new goroutine starts only when none waits. At most
// a bounded number wait; they stop on Close.

// task is one of a write's or a read's concurrent parts.
type task struct {
	f    *fanout
	kind taskKind
	i    int // the target of taskSend and taskExtra

	rd *readFan // taskRead
	t  target   // taskRead
}

type taskKind uint8

const (
	taskLocal taskKind = iota // wait for the local write's fsync
	taskSend                  // write to plan.targets[i]
	taskExtra                 // write to plan.extras[i]
	taskDrain                 // take the late replies (background work)
	taskRead                  // read from t (rd)
)

func (t task) run() {
	switch t.kind {
	case taskLocal:
		t.f.awaitLocal()
	case taskSend:
		t.f.send(t.i)
	case taskExtra:
		t.f.sendExtra(t.i)
	case taskDrain:
		t.f.drain()
	case taskRead:
		t.rd.read(t.t)
	}
}

// workers hands tasks to waiting goroutines. The zero value has none: every
// task starts a goroutine.
type workers struct {
	tasks chan task     // unbuffered: taken only by a goroutine waiting
	idle  chan struct{} // a token per waiting goroutine: at most cap(idle)
}

func newWorkers(maxIdle int) workers {
	return workers{tasks: make(chan task), idle: make(chan struct{}, maxIdle)}
}

// goTask runs t on a waiting goroutine, or on a new one.
func (c *Coordinator) goTask(t task) {
	select {
	case c.work.tasks <- t:
	default:
		c.bg.Add(1)
		go c.worker(t)
	}
}

// worker runs t, then, while fewer than the bound wait, waits for another
// task, until Close.
func (c *Coordinator) worker(t task) {
	defer c.bg.Done()
	for {
		t.run()
		select {
		case c.work.idle <- struct{}{}:
		default:
			return // enough goroutines wait already
		}
		select {
		case t = <-c.work.tasks:
			<-c.work.idle
		case <-c.bgCtx.Done():
			<-c.work.idle
			return
		}
	}
}
