// Package bench is the engine of `meridian bench`: YCSB-style workloads
// against a Meridian cluster, with latencies recorded in HdrHistograms.
//
// Methodology, as YCSB, wrk2 and cassandra-stress practise it:
//
//   - Closed loop (Rate == 0): each of Workers issues its next operation as
//     soon as the previous one returns. It measures capacity; its latencies
//     understate what users see when the system stalls, because a stalled
//     worker stops issuing work.
//   - Open loop (Rate > 0): operations are scheduled at a constant total rate
//     (each worker owns an evenly spaced share of the schedule), and latency
//     is measured from the intended send time, not the actual one. A stall
//     therefore shows up in every operation scheduled during it — the
//     correction for coordinated omission that wrk2 made standard.
//   - Warm-up: operations scheduled during the first Warmup are executed but
//     not recorded.
//   - Errors are counted by gRPC code and never dropped; a run with more than
//     1% errors is flagged. The first message of each code and op is kept
//     (Result.ErrorExamples, printed under the counts and in the HTML
//     report): which limit shed a request, which replicas were missing.
//
// Each worker records into its own histograms (no shared locks on the hot
// path); they are merged per reporting interval and at the end.
package bench
