package node

import "testing"

// TestSpawnedWorkIsWaitedFor: work started from a callback (a node seen
// back: reconnect, mark its partitions) counts in the node's wait group,
// so Close waits for it; once Close stops spawning, none starts.
func TestSpawnedWorkIsWaitedFor(t *testing.T) {
	n := &Node{}
	release := make(chan struct{})
	finished := make(chan struct{})
	if !n.spawn(func() { <-release; close(finished) }) {
		t.Fatal("spawn refused on a running node")
	}
	n.stopSpawning()
	waited := make(chan struct{})
	go func() { n.wg.Wait(); close(waited) }()
	close(release)
	<-waited
	select {
	case <-finished:
	default:
		t.Fatal("the wait ended before the spawned work did")
	}
	if n.spawn(func() { t.Error("work ran after the node stopped spawning") }) {
		t.Fatal("spawn accepted work after the node stopped spawning")
	}
}
