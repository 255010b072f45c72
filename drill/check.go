package drill

import (
	"context"
	"fmt"
	"time"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
)

// checkSet reads every set the workload added to: at ALL through a
// client (acknowledged elements missing are lost writes), then each
// replica's own copy through admin ReplicaGet (elements missing there are
// replicas that did not converge).
func (d *driller) checkSet(ctx context.Context, acked map[string][]string) SetCheck {
	out := SetCheck{Replicas: map[string]int{}, ReplicaErrors: map[string]string{}}
	dcs := d.cfg.Scenario.HealthyDCs(d.env.Topology)
	if len(dcs) == 0 {
		dcs = d.env.Topology.DCs()
	}
	kv := d.env.KV[dcs[0]]
	// One wait in all for replicas to settle (Durations.Settle, from the
	// first replica checked: the ALL reads' retries use none of it), not
	// one per key and replica: a replica that never receives some
	// elements must not use up ctx, turning its count into "not checked".
	var settle time.Time
	for i := range d.cfg.SetKeys {
		key := setKey(d.runID, i)
		elems := acked[string(key)]
		if len(elems) == 0 {
			continue
		}
		out.Keys++
		out.Acked += len(elems)
		present, err := readAll(ctx, kv, key, d.cfg.ProbeTimeout)
		if err != nil {
			out.Error = fmt.Sprintf("read %s at ALL: %v (is every node up? see 'meridian status')", key, err)
			return out
		}
		for _, e := range elems {
			if !present[e] {
				out.Lost++
				if len(out.LostExamples) < 5 {
					out.LostExamples = append(out.LostExamples, fmt.Sprintf("%s in %s", e, key))
				}
			}
		}
		replicas, err := d.replicasOf(ctx, key)
		if err != nil {
			out.Error = fmt.Sprintf("find the replicas of %s: %v", key, err)
			return out
		}
		if settle.IsZero() {
			settle = time.Now().Add(d.cfg.Durations.Settle)
		}
		for _, node := range replicas {
			missing, err := d.replicaMissing(ctx, node, key, elems, settle)
			if err != nil {
				out.ReplicaErrors[node] = err.Error()
				continue
			}
			out.Replicas[node] += missing
		}
	}
	if len(out.ReplicaErrors) == 0 {
		out.ReplicaErrors = nil
	}
	out.Checked = true
	return out
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
