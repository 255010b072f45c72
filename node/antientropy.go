package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meridiankv/meridian/repair"
	"github.com/meridiankv/meridian/replica"
)

// startAntiEntropy wires and starts the Merkle exchanges.
func (n *Node) startAntiEntropy(ctx context.Context, now func() time.Time) error {
	started := now()
	ae, err := repair.NewAntiEntropy(repair.AntiEntropyConfig{
		Self: n.cfg.ID, DC: n.self.DC,
		Store: n.store, Peers: n.faults, Merge: n.coord,
		Routing:               routing{liveness: n.live, hints: n.hints},
		Topology:              n.Topology,
		Period:                n.cfg.AntiEntropyPeriod,
		KeysPerSecond:         n.cfg.RepairKeysPerSecond,
		BytesPerSecond:        n.cfg.RepairBytesPerSecond,
		CrossDCBytesPerSecond: n.cfg.RepairCrossDCBytesPerSecond,
		TombstoneGrace:        n.cfg.TombstoneGrace,
		Now:                   now,
		Logger:                n.log,
	})
	if err != nil {
		return err
	}
	obs, err := n.tel.Metrics.Repair(func() time.Duration { return ae.OldestVerified(started) })
	if err != nil {
		return err
	}
	ae.SetObserver(obs)
	n.ae.Store(ae)
	// A hint not stored (a bound reached, or hints off) leaves a replica
	// behind: verify that partition first.
	n.OnHintDropped(func(_ string, loc replica.Loc) { ae.MarkPriority(loc) })
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		ae.Run(ctx)
	}()
	return nil
}

// AntiEntropy is the node's Merkle exchange runner.
func (n *Node) AntiEntropy() *repair.AntiEntropy { return n.ae.Load() }

// RunRepair starts a full Merkle exchange of the selected partitions
// (keyspace "" and partition < 0 for all) in the background: it outlives
// the caller, not the node. Progress arrives on the first channel (the
// latest value; older ones may be skipped), which closes when the run ends;
// the second then yields its error, if any: RESOURCE_EXHAUSTED at once
// when RepairRuns are running already.
func (n *Node) RunRepair(keyspace string, partition int) (<-chan repair.Progress, <-chan error) {
	progress := make(chan repair.Progress, 1)
	done := make(chan error, 1)
	ae := n.ae.Load()
	if ae == nil || n.runCtx == nil {
		close(progress)
		done <- errNotRunning
		return progress, done
	}
	if running := n.repairRuns.Add(1); running > int64(n.cfg.RepairRuns) {
		n.repairRuns.Add(-1)
		close(progress)
		done <- &RepairRunsError{Node: n.ID(), Runs: n.cfg.RepairRuns}
		return progress, done
	}
	started := n.spawn(func() {
		_, err := ae.RunNow(n.runCtx, keyspace, partition, func(p repair.Progress) {
			select { // keep only the latest
			case <-progress:
			default:
			}
			progress <- p
		})
		// The run no longer counts before its caller hears it ended: a
		// run started right after is not refused for it.
		n.repairRuns.Add(-1)
		close(progress)
		done <- err
	})
	if !started { // the node is closing
		n.repairRuns.Add(-1)
		close(progress)
		done <- errNotRunning
	}
	return progress, done
}

// RepairRunsError is RunRepair's refusal when the node runs RepairRuns
// full repairs already; its gRPC status is RESOURCE_EXHAUSTED. A run that
// fails on the way returns another error (which may be a status of any
// code, RESOURCE_EXHAUSTED too: a peer shedding load).
type RepairRunsError struct {
	Node string
	Runs int
}

func (e *RepairRunsError) Error() string {
	return fmt.Sprintf("node %s is running %d full repairs already (repair-runs): wait for one to end ('meridian repair status'), or run this one on another node", e.Node, e.Runs)
}

// GRPCStatus is the refusal's status (RESOURCE_EXHAUSTED).
func (e *RepairRunsError) GRPCStatus() *status.Status {
	return status.New(codes.ResourceExhausted, e.Error())
}

var errNotRunning = errors.New("anti-entropy is not running (the node is starting or stopping): try again, or another node")

// DefaultRepairRuns is how many full repairs a node runs at once.
const DefaultRepairRuns = 2
