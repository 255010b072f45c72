package drill

import (
	"context"
	"fmt"
	"slices"
	"time"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
)

// checkSet reads every set the workload added to: first each replica's
// own copy through admin ReplicaGet (elements missing there are replicas
// that did not converge), then at ALL through a client (acknowledged
// elements missing are lost writes). The replicas come first because a
// read at ALL repairs the replicas it finds behind: read after it, a
// replica that never converged (anti-entropy wrongly finding it equal)
// would be repaired by the check itself and pass.
func (d *driller) checkSet(ctx context.Context, acked map[string][]string) SetCheck {
	out := SetCheck{Node: d.cfg.Scenario.NodeUnderTest(), Replicas: map[string]int{}, ReplicaErrors: map[string]string{}}
	var keys [][]byte
	for _, key := range d.setKeys {
		if elems := acked[string(key)]; len(elems) > 0 {
			keys = append(keys, key)
			out.Keys++
			out.Acked += len(elems)
		}
	}
	if err := d.checkReplicas(ctx, keys, acked, &out); err != nil {
		out.Error = err.Error()
		return out
	}
	if err := d.checkAll(ctx, keys, acked, &out); err != nil {
		out.Error = err.Error()
		return out
	}
	if len(out.ReplicaErrors) == 0 {
		out.ReplicaErrors = nil
	}
	out.Checked = true
	return out
}

// checkReplicas counts, per replica, the acknowledged elements its own
// copy of each key lacks. It reads nothing at ALL (nor at any level that
// repairs): what a replica holds is what replication, hints and
// anti-entropy gave it.
func (d *driller) checkReplicas(ctx context.Context, keys [][]byte, acked map[string][]string, out *SetCheck) error {
	// One wait in all for replicas to settle (Durations.Settle, from the
	// first replica checked), not one per key and replica: a replica
	// that never receives some elements must not use up ctx, turning its
	// count into "not checked".
	var settle time.Time
	for _, key := range keys {
		replicas, err := d.replicasOf(ctx, key)
		if err != nil {
			return fmt.Errorf("find the replicas of %s: %v", key, err)
		}
		if settle.IsZero() {
			settle = time.Now().Add(d.cfg.Durations.Settle)
		}
		if out.Node != "" && slices.Contains(replicas, out.Node) {
			out.NodeKeys++
		}
		for _, node := range replicas {
			missing, err := d.replicaMissing(ctx, node, key, acked[string(key)], settle)
			if err != nil {
				out.ReplicaErrors[node] = err.Error()
				continue
			}
			out.Replicas[node] += missing
		}
	}
	return nil
}

// checkAll reads every key at ALL through the first healthy DC's client
// and counts the acknowledged elements missing: lost writes.
func (d *driller) checkAll(ctx context.Context, keys [][]byte, acked map[string][]string, out *SetCheck) error {
	dcs := d.cfg.Scenario.HealthyDCs(d.env.Topology)
	if len(dcs) == 0 {
		dcs = d.env.Topology.DCs()
	}
	kv := d.env.KV[dcs[0]]
	for _, key := range keys {
		present, err := readAll(ctx, kv, key, d.cfg.ProbeTimeout)
		if err != nil {
			return fmt.Errorf("read %s at ALL: %v (is every node up? see 'meridian status')", key, err)
		}
		for _, e := range acked[string(key)] {
			if !present[e] {
				out.Lost++
				if len(out.LostExamples) < 5 {
					out.LostExamples = append(out.LostExamples, fmt.Sprintf("%s in %s", e, key))
				}
			}
		}
	}
	return nil
}

// readAll reads key at ALL, retrying until ctx ends.
func readAll(ctx context.Context, kv KV, key []byte, timeout time.Duration) (map[string]bool, error) {
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*timeout)
		values, _, err := kv.Get(rctx, key, kvv1.Level_LEVEL_ALL)
		cancel()
		if err == nil {
			return decodeSets(values), nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// replicasOf lists the key's preference list (admin Endpoints, from the
// first node that answers).
func (d *driller) replicasOf(ctx context.Context, key []byte) ([]string, error) {
	var last error
	for _, id := range d.ids {
		ectx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := d.env.Admin[id].Endpoints(ectx, &adminv1.EndpointsRequest{Keyspace: d.cfg.Keyspace, Key: key})
		cancel()
		if err != nil {
			last = err
			continue
		}
		var out []string
		for _, e := range resp.GetReplicas() {
			out = append(out, e.GetNode())
		}
		return out, nil
	}
	return nil, last
}

// replicaMissing counts the elements of elems that node's own copy of key
// lacks, waiting until deadline for it to have them all.
func (d *driller) replicaMissing(ctx context.Context, node string, key []byte, elems []string, deadline time.Time) (int, error) {
	admin := d.env.Admin[node]
	if admin == nil {
		return 0, fmt.Errorf("no admin connection to %s", node)
	}
	for {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := admin.ReplicaGet(rctx, &adminv1.ReplicaGetRequest{Node: node, Keyspace: d.cfg.Keyspace, Key: key})
		cancel()
		missing := 0
		if err == nil {
			var values [][]byte
			for _, s := range resp.GetSiblings() {
				if !s.GetTombstone() {
					values = append(values, s.GetValue())
				}
			}
			have := decodeSets(values)
			for _, e := range elems {
				if !have[e] {
					missing++
				}
			}
			if missing == 0 {
				return 0, nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return missing, err
		}
		time.Sleep(time.Second)
	}
}

// maxSetKeyTries bounds the names chooseSetKeys tries for a set that must
// live on the scenario's node. A node holding a share s of the keyspace's
// partitions misses them all with probability (1-s)^256: below 1e-11 for
// one partition in ten (a node of a 10-node DC at RF 3 holds three).
const maxSetKeyTries = 256

// chooseSetKeys names the drill's sets. When the scenario acts on one
// node, the final check must cover it: in a DC with more nodes than
// replicas the plain names (setKey try 0) may all live elsewhere, and
// "nothing lost, every replica holds every element" would then pass
// without the node ever having missed a write, been hinted or repaired.
// So the first half of the sets (at least one) each take the first name,
// of drill/set/RUN/i, drill/set/RUN/i.1, ..., that admin Endpoints
// places on the node; the others keep their plain names, wherever those
// live. Other scenarios keep the plain names.
func (d *driller) chooseSetKeys(ctx context.Context) ([][]byte, error) {
	keys := make([][]byte, d.cfg.SetKeys)
	for i := range keys {
		keys[i] = setKey(d.runID, i, 0)
	}
	node := d.cfg.Scenario.NodeUnderTest()
	if node == "" {
		return keys, nil
	}
	must := (len(keys) + 1) / 2
	onNode := 0
	for i := range keys {
		for try := 0; ; try++ {
			key := setKey(d.runID, i, try)
			replicas, err := d.replicasOf(ctx, key)
			if err != nil {
				return nil, fmt.Errorf("find the replicas of %s in keyspace %s (admin Endpoints): %v", key, d.cfg.Keyspace, err)
			}
			if slices.Contains(replicas, node) {
				keys[i] = key
				onNode++
				break
			}
			if i >= must {
				break // counted when it lives there, not sought
			}
			if try+1 == maxSetKeyTries {
				return nil, d.notOnNode(ctx, node, i)
			}
		}
	}
	d.logf("set workload: %d of its %d sets live on %s", onNode, len(keys), node)
	return keys, nil
}

// notOnNode says why no name tried for set i lives on node: the node
// holds no partition of the keyspace at all (admin Ring says so), or too
// small a share of it for the names tried.
func (d *driller) notOnNode(ctx context.Context, node string, i int) error {
	ks := d.cfg.Keyspace
	tried := fmt.Sprintf("none of the %d names tried for set %d (%s, %s, ...) is replicated on %s in keyspace %s (admin Endpoints)",
		maxSetKeyTries, i, setKey(d.runID, i, 0), setKey(d.runID, i, 1), node, ks)
	held, total, ok := d.partitionsOn(ctx, node)
	switch {
	case ok && held == 0:
		return fmt.Errorf("%s holds no partition of keyspace %s (admin Ring: 0 of %d partitions): the set workload cannot write to it, so the final check could not see what %s lost or missed; drill a node that replicates keyspace %s (see 'meridian ring')",
			node, ks, total, node, ks)
	case ok:
		return fmt.Errorf("%s, though it holds %d of %d partitions (admin Ring): the final check would not cover %s; run the drill again (it tries other names), or drill a node with a larger share (see 'meridian ring')",
			tried, held, total, node)
	}
	return fmt.Errorf("%s: the final check would not cover %s; does it hold any partition of %s? see 'meridian ring'", tried, node, ks)
}

// partitionsOn is how many of the ring's partitions node replicates in
// the drill's keyspace (admin Ring, from the first node that answers); ok
// is false when no node said.
func (d *driller) partitionsOn(ctx context.Context, node string) (held, total uint32, ok bool) {
	for _, id := range d.ids {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := d.env.Admin[id].Ring(rctx, &adminv1.RingRequest{})
		cancel()
		if err != nil {
			continue
		}
		for _, n := range resp.GetNodes() {
			if n.GetNode().GetId() != node {
				continue
			}
			for _, s := range n.GetKeyspaces() {
				if s.GetKeyspace() == d.cfg.Keyspace {
					return s.GetReplicaPartitions(), resp.GetPartitions(), true
				}
			}
		}
		return 0, 0, false
	}
	return 0, 0, false
}
