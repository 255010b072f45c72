// Package client is Meridian's partition-aware Go client.
//
// Dial learns the cluster's topology (nodes, their datacenters and client
// addresses, and for every keyspace the replicas of each partition, at an
// epoch) from any seed, and keeps it current: every answer carries the
// coordinator's epoch (Effective.Epoch), and a newer one than the client
// routes by makes it re-read the topology at once, from that node first;
// it also re-reads it periodically (RefreshInterval, default 30s), after a
// node turns out unreachable or answers DEADLINE_EXCEEDED while the caller
// still had time (replicas did not answer it: the cluster may know of a
// node gone), and when a call names a keyspace it does not know (once
// per keyspace per RefreshInterval: calls to a keyspace that does not
// exist get the node's NOT_FOUND without a topology fetch each). A node
// that left the topology gets no new calls; the calls already sent to it
// get its answers (its connection closes 30 s later). Each
// request then goes straight to a replica of its key, so no request pays
// a forwarding hop:
//
//  1. live replicas in the caller's datacenter (LocalDC; without it, the
//     datacenter of the first seed that is a node's address), in the
//     partition's preference order (like gocql's token-aware, DC-aware
//     policy);
//  2. live replicas in other datacenters;
//  3. replicas believed down, the caller's datacenter's first (for a
//     write, only those the client found unreachable or low on disk:
//     those the topology reports dead come last, after 4, as a write
//     they coordinated could reach no other replica);
//  4. any other live node (it forwards to a replica: correct, one hop
//     slower).
//
// The next candidate is tried only when a node could not be reached at
// all (codes.Unavailable without Meridian's google.rpc.ErrorInfo, domain
// "meridian.kv", or no ready connection to it: see below), or when it
// shed the call for overload
// (codes.ResourceExhausted with the ErrorInfo reason "OVERLOADED", which a
// node answers before doing anything with a request) — at most twice per
// call, and for about one call in ten overall (a retry budget, like gRPC's
// retry throttling), so that a node shedding now and then costs its
// callers nothing while a cluster-wide overload gets at most a tenth more
// requests; a shed call that is not passed on fails with the node's
// RESOURCE_EXHAUSTED. A write refused by a node low on disk
// (codes.ResourceExhausted, reason "DISK_LOW", also answered before
// anything is done) goes on to the next candidate without that budget:
// the node refuses every write until its disk has room again, and each
// candidate is asked at most once; writes then try that node last for 10
// seconds (reads still go to it). A last-writer-wins write refused by a
// node whose clock runs ahead of its peers' (codes.Unavailable, reason
// "CLOCK_AHEAD": nothing written) goes on to the next candidate too,
// without marking the node down. Any other answer from a node, success
// or error, is final; so is DEADLINE_EXCEEDED, which is never passed on. A
// node found unreachable goes to the back of the order for 10 seconds or
// until it answers again. A node that stops answering without closing its
// connections (its host crashed, a partition drops its traffic) is found
// unreachable by keepalive pings: 15 seconds without a word from it while
// calls are open, then 5 more for an answer to a ping. A call is sent
// only on a ready connection: one whose node has none waits for it at
// most a second (a third of the call's time left, when less), then
// counts the node unreachable (nothing was sent) and goes on, so that a
// host gone silent (a new connection to it waits seconds for an answer
// that never comes) holds no call until its deadline while the cluster
// still sees it alive.
//
// A write whose node could not be reached (UNAVAILABLE as above, a
// connection never ready aside: nothing was sent then) may still have
// arrived: its stream or connection may have failed after sending it. So
// it is sent to the same node once more, on a new stream, when a connection to that node is ready or gets ready within a second,
// before it goes to the next candidate (see Reading and writing for why).
// When no node at all could be reached, a Put or Delete re-reads the
// topology and is routed again (three passes in all, same request ID,
// each first to the node the write was first sent to) before failing
// with an error wrapping ErrNoReplica, whose gRPC status is
// UNAVAILABLE. Calls fail with gRPC statuses (status.Code works on them;
// ErrClosed aside): the caller's own context ending is CANCELED or
// DEADLINE_EXCEEDED, also while a call waits to be sent again; a call
// waiting so when the client is closed fails with ErrClosed.
//
// # Connecting
//
// Transport security is never chosen silently: pass credentials with
// WithDialOptions, or Insecure for a plaintext cluster.
//
//	creds := grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig))
//	c, err := client.Dial(ctx, []string{"10.0.0.1:7001", "10.0.0.2:7001"},
//		client.WithDialOptions(creds), client.LocalDC("dc1"))
//	if err != nil {
//		return err // e.g. "client: no seed reachable (tried ...): ..."
//	}
//	defer c.Close()
//
// Dial options: WithDialOptions, Insecure, LocalDC, RefreshInterval,
// DefaultCallOptions, UnaryCalls.
//
// # Call streams
//
// The client carries its calls to each node on one long-lived
// kv.v1.KV/Calls stream: calls made while the previous batch was being
// sent go out together, and the node answers them, in batches too,
// matched by ID. A node does for a call on the stream exactly what it does
// for the unary Get, Put or Delete (same checks, same errors, same
// deadline), but without the cost of a gRPC call of its own, which is most
// of the work of a small request. Calls stay unary when they are traced
// (their span is sampled, so the trace context travels in the RPC's
// metadata), when their context carries outgoing gRPC metadata, when the
// key, value and causal context are over 64 KiB, and with nodes that do
// not serve Calls (an older version; the client tries a stream again a
// minute later, so an upgraded node gets them). A stream stops taking new
// calls as soon as its connection stops being ready (a node recycling
// connections sends a GOAWAY, then gives the calls open 30 seconds,
// which bounds a call anyway), or 20 seconds after it opened, and closes
// once its calls are answered: the node's connection recycling cuts no
// call off, short of a GOAWAY the client has not yet seen when it sends
// a call. UnaryCalls turns streams off.
//
// # Reading and writing
//
// Get returns every concurrent value (siblings) and an opaque causal
// context; a Put or Delete with that context (the Context call option)
// supersedes exactly what the Get saw. A Put without a context is blind and
// becomes a sibling of what is there.
//
//	res, err := c.Get(ctx, "orders", []byte("k"), client.Level(kvv1.Level_LEVEL_QUORUM))
//	// res.Values, res.Context, res.Effective, res.Node
//	_, err = c.Put(ctx, "orders", []byte("k"), []byte("v2"),
//		client.Context(res.Context), client.Durable(false))
//
// Every Put and Delete carries a request ID (RequestID, or a random one per
// call), the same for every node the client sends it to. A node answers a
// write of a key whose ID it has seen for that key (stored with a sibling
// of the key, or remembered: 10 minutes, at most 100,000 IDs) without
// applying it again; the same ID on another key is another write.
// The node the write first went to (or the replica it forwarded it to)
// knows the ID as soon as it applied the write, which is why a write whose
// call failed goes to that node again first, and, when routed again after
// no node could be reached, to that node first. Another replica knows it only
// once the write has reached it, so one window remains: the write is
// applied twice when the first node applied it, then could not be reached
// again (crashed, cut off) before the write reached the other replicas,
// and the client's retry went to one of those. Give your own ID to make
// your own retries idempotent too, under the same terms:
//
//	id := []byte(orderID)
//	_, err = c.Put(ctx, "orders", key, value, client.RequestID(id))
//	// on a timeout, retrying with the same id creates no second sibling
//	// once the first attempt has reached the replicas
//
// Per-call options: Level, R, W, PrimaryOnly, Durable, ConsistencyDC (or
// Consistency for the whole message), Timeout, Context, RequestID, Hedge,
// Attempts. The keyspace is an argument of each call ("" is "default").
// With LocalDC set, LOCAL_ONE and LOCAL_QUORUM count in that datacenter
// (the request names it, unless ConsistencyDC names another), also when
// the request fails over or is hedged to a replica in another one.
//
// # Read-modify-write
//
// Update reads the key, lets a function resolve the siblings into one new
// value, and writes it with the read's context. When the write comes back
// with siblings (another writer got in between) it runs the cycle again,
// up to Attempts times (default 10), then fails with ErrConflict:
//
//	// Add "x" to a comma-separated set, never losing a concurrent add.
//	_, err = c.Update(ctx, "sets", []byte("s"), func(siblings [][]byte) ([]byte, error) {
//		set := map[string]bool{"x": true}
//		for _, v := range siblings {
//			for _, e := range strings.Split(string(v), ",") {
//				if e != "" {
//					set[e] = true
//				}
//			}
//		}
//		return []byte(strings.Join(slices.Sorted(maps.Keys(set)), ",")), nil
//	}, client.Attempts(20))
//
// fn must be a merge that keeps what every sibling contributed (a union,
// a maximum, ...), since siblings are exactly the concurrent writes; it
// may be called several times.
//
// # Hedged reads
//
// With Hedge(d), a Get that has no answer from its first replica after d
// also asks the next one; the first answer wins and the slower call is
// cancelled. Writes never hedge.
//
//	res, err := c.Get(ctx, "orders", key, client.Hedge(20*time.Millisecond))
//
// A hedged read costs a second request on slow calls only; pick d near
// the latency percentile you want to cut (e.g. p95).
package client
