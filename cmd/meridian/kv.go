package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	adminv1 "github.com/meridiankv/meridian/api/admin/v1"
	kvv1 "github.com/meridiankv/meridian/api/kv/v1"
	"github.com/meridiankv/meridian/client"
	"github.com/meridiankv/meridian/transport"
)

// kvFlags are shared by kv get, put and delete.
type kvFlags struct {
	sec         clientSec
	addr        string
	keyspace    string
	consistency string
	r, w        uint32
	primaryOnly bool
	noSync      bool
	dc          string
	context     string
	blind       bool
	file        string
	timeout     time.Duration
	json        bool
	explain     bool
	direct      bool
}

func newKVCmd() *cobra.Command {
	var f kvFlags
	var replicaID string
	cmd := &cobra.Command{
		Use:   "kv",
		Short: "Read and write keys",
		Long: `Read and write keys on a running cluster.

  meridian kv put --addr 127.0.0.1:7001 user:1 alice    # reads user:1 first, replaces what it read
  meridian kv get --addr 127.0.0.1:7001 user:1          # prints siblings and a context
  meridian kv put --context CTX user:1 alice2            # supersedes only what CTX saw
  meridian kv put --file photo.jpg user:1:photo          # value from a file (or - for stdin)
  meridian kv put --blind user:1 alice3                  # no read, no context: becomes a sibling
  meridian kv delete user:1                              # reads first, deletes what it read`,
	}
	p := cmd.PersistentFlags()
	p.StringVar(&f.addr, "addr", "127.0.0.1:7001", "gRPC address of any node")
	f.sec.bind(p)
	p.StringVar(&f.keyspace, "keyspace", "", "keyspace (default \"default\")")
	p.StringVar(&f.consistency, "consistency", "quorum", "one, two, three, quorum, all, local_one, local_quorum, each_quorum, any")
	p.Uint32Var(&f.r, "r", 0, "explicit read quorum (overrides --consistency for reads)")
	p.Uint32Var(&f.w, "w", 0, "explicit write quorum (overrides --consistency for writes)")
	p.BoolVar(&f.primaryOnly, "primary-only", false, "do not count fallback (hinted) copies toward R/W")
	p.BoolVar(&f.noSync, "no-sync", false, "let replicas acknowledge before fsync (faster, may lose the write on a crash)")
	p.StringVar(&f.dc, "dc", "", "datacenter to count as local for local_* levels (default: the node's)")
	p.DurationVar(&f.timeout, "timeout", 10*time.Second, "request deadline")
	p.BoolVar(&f.json, "json", false, "print machine-readable JSON")
	p.BoolVar(&f.direct, "direct", false, "send every request to --addr itself (which forwards writes it does not replicate) instead of straight to a replica of the key")
	p.BoolVar(&f.explain, "explain", false, "print the request's timeline: which replicas did what, and how long it took")

	get := &cobra.Command{
		Use:   "get KEY",
		Short: "Print every sibling of a key and the context for the next write",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if replicaID != "" {
				return replicaGet(cmd, f, replicaID, args[0])
			}
			return withKV(cmd.Context(), f, func(ctx context.Context, c kvv1.KVClient, cons *kvv1.Consistency) error {
				resp, err := c.Get(ctx, &kvv1.GetRequest{Keyspace: f.keyspace, Key: []byte(args[0]), Consistency: cons, Explain: f.explain})
				if err != nil {
					return err
				}
				return printResult(cmd.OutOrStdout(), f.json, nil, args[0], resp.Siblings, resp.Context, resp.Effective, resp.Explain)
			})
		},
	}
	get.Flags().StringVar(&replicaID, "replica", "", "read only this node's local copy (no quorum, no repair; needs the admin role)")
	put := &cobra.Command{
		Use:   "put KEY [VALUE | -]",
		Short: "Write a value, superseding what the key holds now (or what --context saw)",
		Long: `Write a value. Without --context, put first reads the key (with the same
--keyspace and consistency flags) and writes with the context it read, so the
new value replaces every value it saw; --blind skips the read and writes
without a context (the new value becomes a sibling of any existing one).

The value is the VALUE argument, standard input when VALUE is "-", or the
content of --file PATH: exactly one of them.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			value, err := readValue(cmd.InOrStdin(), args[1:], f.file)
			if err != nil {
				return err
			}
			kctx, err := writeContext(f)
			if err != nil {
				return err
			}
			return withKV(cmd.Context(), f, func(ctx context.Context, c kvv1.KVClient, cons *kvv1.Consistency) error {
				superseded, err := readFirst(ctx, c, f, cons, args[0], &kctx)
				if err != nil {
					return err
				}
				resp, err := c.Put(ctx, &kvv1.PutRequest{Keyspace: f.keyspace, Key: []byte(args[0]), Value: value, Context: kctx, Consistency: cons, Explain: f.explain})
				if err != nil {
					return err
				}
				return printWrite(cmd.OutOrStdout(), f.json, superseded, args[0], resp.Siblings, resp.Context, resp.Effective, resp.Explain)
			})
		},
	}
	del := &cobra.Command{
		Use:   "delete KEY",
		Short: "Delete a key, superseding what it holds now (or what --context saw)",
		Long: `Delete a key. Without --context, delete first reads the key (with the same
--keyspace and consistency flags) and deletes what it read; --blind skips the
read (a delete without a context removes nothing that exists).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			kctx, err := writeContext(f)
			if err != nil {
				return err
			}
			return withKV(cmd.Context(), f, func(ctx context.Context, c kvv1.KVClient, cons *kvv1.Consistency) error {
				superseded, err := readFirst(ctx, c, f, cons, args[0], &kctx)
				if err != nil {
					return err
				}
				resp, err := c.Delete(ctx, &kvv1.DeleteRequest{Keyspace: f.keyspace, Key: []byte(args[0]), Context: kctx, Consistency: cons, Explain: f.explain})
				if err != nil {
					return err
				}
				return printWrite(cmd.OutOrStdout(), f.json, superseded, args[0], nil, resp.Context, resp.Effective, resp.Explain)
			})
		},
	}
	writeFlags := func(c *cobra.Command) {
		c.Flags().StringVar(&f.context, "context", "", "causal context from a previous get or put (base64); default: read the key first and use its context")
		c.Flags().BoolVar(&f.blind, "blind", false, "write without reading the key first and without a context")
	}
	writeFlags(put)
	writeFlags(del)
	put.Flags().StringVar(&f.file, "file", "", "read the value from this file instead of the VALUE argument")
	cmd.AddCommand(get, put, del)
	return cmd
}

// maxValueInput bounds a value read from a file or standard input: nothing
// larger fits in one request.
const maxValueInput = transport.MaxMessageSize

// readValue returns the value of kv put from exactly one source: the VALUE
// argument, standard input ("-") or --file.
func readValue(stdin io.Reader, args []string, file string) ([]byte, error) {
	switch {
	case len(args) == 1 && file != "":
		return nil, fmt.Errorf("two values given (VALUE %q and --file %s): give exactly one, VALUE, - for standard input, or --file PATH", args[0], file)
	case file != "":
		fh, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("--file: %w", err)
		}
		defer fh.Close()
		return readAllLimited(fh, "--file "+file)
	case len(args) == 1 && args[0] == "-":
		return readAllLimited(stdin, "standard input")
	case len(args) == 1:
		return []byte(args[0]), nil
	default:
		return nil, errors.New("no value: give it as VALUE, - to read standard input, or --file PATH")
	}
}

func readAllLimited(r io.Reader, what string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxValueInput+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	if len(b) > maxValueInput {
		return nil, fmt.Errorf("%s is larger than %d MiB, more than one request can carry", what, maxValueInput>>20)
	}
	return b, nil
}

// writeContext decodes --context; --blind and --context exclude each other.
func writeContext(f kvFlags) ([]byte, error) {
	if f.blind && f.context != "" {
		return nil, errors.New("--blind writes without a context: drop --blind or --context")
	}
	return decodeContext(f.context)
}

// readFirst reads key when the write has neither --context nor --blind, and
// sets *kctx to the context it read. It returns how many siblings the write
// supersedes, or -1 when it did not read.
func readFirst(ctx context.Context, c kvv1.KVClient, f kvFlags, cons *kvv1.Consistency, key string, kctx *[]byte) (int, error) {
	if f.blind || f.context != "" {
		return -1, nil
	}
	resp, err := c.Get(ctx, &kvv1.GetRequest{Keyspace: f.keyspace, Key: []byte(key), Consistency: cons})
	if err != nil {
		return -1, fmt.Errorf("read %q for its context before writing: %w (pass --context from a get, or --blind to write without one)", key, err)
	}
	*kctx = resp.Context
	return len(resp.Siblings), nil
}

// printWrite prints a put or delete result; superseded >= 0 says the
// command read the key first and how many siblings the write replaced.
func printWrite(w io.Writer, asJSON bool, superseded int, key string, sibs []*kvv1.Sibling, kctx []byte, eff *kvv1.Effective, events []*kvv1.Event) error {
	if superseded < 0 {
		return printResult(w, asJSON, nil, key, sibs, kctx, eff, events)
	}
	if !asJSON {
		if superseded == 0 {
			fmt.Fprintln(w, "read context first: the key held nothing, nothing superseded")
		} else {
			fmt.Fprintf(w, "read context first: superseding %d sibling(s)\n", superseded)
		}
	}
	return printResult(w, asJSON, &superseded, key, sibs, kctx, eff, events)
}

func decodeContext(s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, fmt.Errorf("--context %q is not a context printed by get or put (base64): %v", s, err)
	}
	return b, nil
}

func encodeContext(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// ParseLevel maps a CLI level name to the API enum.
func ParseLevel(s string) (kvv1.Level, error) {
	name := "LEVEL_" + strings.ToUpper(strings.ReplaceAll(s, "-", "_"))
	v, ok := kvv1.Level_value[name]
	if !ok || v == 0 {
		return 0, fmt.Errorf("consistency %q: use one, two, three, quorum, all, local_one, local_quorum, each_quorum or any", s)
	}
	return kvv1.Level(v), nil
}

func withKV(ctx context.Context, f kvFlags, fn func(context.Context, kvv1.KVClient, *kvv1.Consistency) error) error {
	level, err := ParseLevel(f.consistency)
	if err != nil {
		return err
	}
	cons := &kvv1.Consistency{Level: level, R: f.r, W: f.w, PrimaryOnly: f.primaryOnly, Dc: f.dc}
	if f.noSync {
		durable := false
		cons.Durable = &durable
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	if f.direct {
		conn, err := dial(f.addr, f.sec)
		if err != nil {
			return err
		}
		defer conn.Close()
		return ranOutOfTime(ctx, fn(ctx, kvv1.NewKVClient(conn), cons), f.timeout, "")
	}
	// The partition-aware client: each request goes straight to a live
	// replica of its key (no forwarding hop), --addr is only the seed.
	opts, err := f.sec.options()
	if err != nil {
		return err
	}
	copts := []client.Option{client.WithDialOptions(opts...)}
	if f.dc != "" {
		copts = append(copts, client.LocalDC(f.dc))
	}
	c, err := client.Dial(ctx, []string{f.addr}, copts...)
	if err != nil {
		return fmt.Errorf("%w (is --addr a running node's client address?)", err)
	}
	defer c.Close()
	return ranOutOfTime(ctx, fn(ctx, c.KV(), cons), f.timeout, "")
}

// jsonSibling is the stable JSON form of a sibling.
type jsonSibling struct {
	Value       *string `json:"value,omitempty"`
	ValueBase64 string  `json:"value_base64"`
	Tombstone   bool    `json:"tombstone"`
	WriteTime   string  `json:"write_time"`
	Dot         string  `json:"dot"`
}

// jsonResult is the stable JSON form of a get, put or delete result.
type jsonResult struct {
	Key         string        `json:"key"`
	Found       bool          `json:"found"`
	Siblings    []jsonSibling `json:"siblings"`
	Context     string        `json:"context"`
	N           uint32        `json:"n"`
	R           uint32        `json:"r"` // 0 on a put or delete
	W           uint32        `json:"w"` // 0 on a get
	Coordinator string        `json:"coordinator"`
	Replicas    []string      `json:"replicas"`
	Hinted      []string      `json:"hinted"`
	Explain     []jsonEvent   `json:"explain,omitempty"`
	// Superseded is set on a put or delete that read the key first: how
	// many siblings the write replaced.
	Superseded *int `json:"superseded,omitempty"`
}

type jsonEvent struct {
	OffsetMicros   int64  `json:"offset_us"`
	DurationMicros int64  `json:"duration_us"`
	Node           string `json:"node"`
	Action         string `json:"action"`
	Detail         string `json:"detail"`
}

func printResult(w io.Writer, asJSON bool, superseded *int, key string, sibs []*kvv1.Sibling, kctx []byte, eff *kvv1.Effective, events []*kvv1.Event) error {
	res := jsonResult{Key: key, Context: encodeContext(kctx), Siblings: []jsonSibling{}, Replicas: []string{}, Hinted: []string{}, Superseded: superseded}
	if eff != nil {
		res.N, res.R, res.W, res.Coordinator = eff.N, eff.R, eff.W, eff.Coordinator
		if eff.Replicas != nil {
			res.Replicas = eff.Replicas
		}
		if eff.Hinted != nil {
			res.Hinted = eff.Hinted
		}
	}
	for _, s := range sibs {
		js := jsonSibling{ValueBase64: base64.StdEncoding.EncodeToString(s.Value), Tombstone: s.Tombstone, Dot: s.Dot,
			WriteTime: time.Unix(0, s.WriteTimeUnixNanos).UTC().Format(time.RFC3339Nano)}
		if utf8.Valid(s.Value) {
			v := string(s.Value)
			js.Value = &v
		}
		if !s.Tombstone {
			res.Found = true
		}
		res.Siblings = append(res.Siblings, js)
	}
	for _, e := range events {
		res.Explain = append(res.Explain, jsonEvent{e.OffsetMicros, e.DurationMicros, e.Node, e.Action, e.Detail})
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	if sibs != nil || len(kctx) == 0 {
		switch live := countLive(res.Siblings); {
		case len(res.Siblings) == 0:
			fmt.Fprintf(w, "%s: not found\n", key)
		case live == 0:
			fmt.Fprintf(w, "%s: deleted (%d tombstone(s))\n", key, len(res.Siblings))
		case len(res.Siblings) == 1:
			fmt.Fprintf(w, "%s: 1 value\n", key)
		default:
			fmt.Fprintf(w, "%s: %d siblings (concurrent values: write back a merged value with this context)\n", key, len(res.Siblings))
		}
		for i, s := range res.Siblings {
			val := "<binary, base64 " + s.ValueBase64 + ">"
			if s.Value != nil {
				val = fmt.Sprintf("%q", *s.Value)
			}
			if s.Tombstone {
				val = "<deleted>"
			}
			fmt.Fprintf(w, "  [%d] %s  (written %s, dot %s)\n", i+1, val, s.WriteTime, s.Dot)
		}
	}
	fmt.Fprintf(w, "context: %s\n", res.Context)
	fmt.Fprintf(w, "n=%d", res.N)
	if res.R > 0 {
		fmt.Fprintf(w, " r=%d", res.R)
	}
	if res.W > 0 {
		fmt.Fprintf(w, " w=%d", res.W)
	}
	fmt.Fprintf(w, " coordinator=%s replicas=%s", res.Coordinator, strings.Join(res.Replicas, ","))
	if len(res.Hinted) > 0 {
		fmt.Fprintf(w, " hinted=%s", strings.Join(res.Hinted, ","))
	}
	fmt.Fprintln(w)
	if len(res.Explain) > 0 {
		fmt.Fprintln(w, "explain:")
		for _, e := range res.Explain {
			node := e.Node
			if node == "" {
				node = "-"
			}
			fmt.Fprintf(w, "  +%7.3fms %8.3fms  %-6s %-28s %s\n", float64(e.OffsetMicros)/1000, float64(e.DurationMicros)/1000, node, e.Action, e.Detail)
		}
	}
	return nil
}

func countLive(s []jsonSibling) int {
	n := 0
	for _, x := range s {
		if !x.Tombstone {
			n++
		}
	}
	return n
}

// replicaGet prints one replica's own copy of a key (admin ReplicaGet).
func replicaGet(cmd *cobra.Command, f kvFlags, node, key string) error {
	af := adminFlags{sec: f.sec, addr: f.addr, json: f.json, timeout: f.timeout}
	return withAdmin(cmd.Context(), &af, func(ctx context.Context, c adminv1.AdminClient) error {
		resp, err := c.ReplicaGet(ctx, &adminv1.ReplicaGetRequest{Node: node, Keyspace: f.keyspace, Key: []byte(key)})
		if err != nil {
			return err
		}
		if f.json {
			return printJSON(cmd.OutOrStdout(), resp)
		}
		w := cmd.OutOrStdout()
		fmt.Fprintf(w, "%s on replica %s: %d sibling(s), clock %s\n", key, resp.Node, len(resp.Siblings), resp.Clock)
		for i, s := range resp.Siblings {
			val := fmt.Sprintf("%q", s.Value)
			if s.Tombstone {
				val = "<deleted>"
			}
			fmt.Fprintf(w, "  [%d] %s  (dot %s)\n", i+1, val, s.Dot)
		}
		return nil
	})
}
