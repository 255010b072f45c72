package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestNoExporterIsNoop(t *testing.T) {
	tel, err := Setup(context.Background(), Config{Getenv: env(nil)})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Close(context.Background())
	_, span := tel.Tracer("test").Start(context.Background(), "x")
	if span.IsRecording() || span.SpanContext().IsValid() {
		t.Fatal("with no exporter configured, spans must be no-ops")
	}
}

func TestStdoutExporter(t *testing.T) {
	var buf bytes.Buffer
	tel, err := Setup(context.Background(), Config{Exporter: "stdout", Stdout: &buf, NodeID: "n1", Getenv: env(nil)})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tel.Tracer("test").Start(context.Background(), "meridian.test.span")
	span.End()
	if err := tel.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "meridian.test.span") {
		t.Fatalf("stdout exporter wrote %q", buf.String())
	}
}

func TestOTLPFromEnvironment(t *testing.T) {
	// An endpoint in the standard variable turns OTLP on (nothing listens:
	// export fails quietly in the background, setup must still succeed).
	for _, proto := range []string{"grpc", "http/protobuf"} {
		tel, err := Setup(context.Background(), Config{Getenv: env(map[string]string{
			"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": proto,
			"OTEL_TRACES_SAMPLER_ARG": "0.5",
		})})
		if err != nil {
			t.Fatalf("%s: %v", proto, err)
		}
		_, span := tel.Tracer("test").Start(context.Background(), "x")
		span.End()
		ctx, cancel := context.WithTimeout(context.Background(), 0)
		tel.Close(ctx)
		cancel()
	}
	for _, c := range []struct {
		cfg Config
		has string
	}{
		{Config{Exporter: "zipkin"}, "use otlp, stdout or none"},
		{Config{Exporter: "otlp", OTLPProtocol: "thrift"}, "use grpc or http/protobuf"},
		{Config{Exporter: "stdout", SampleRatio: ratio(2), Stdout: io.Discard}, "fraction from 0 to 1"},
	} {
		c.cfg.Getenv = env(nil)
		if _, err := Setup(context.Background(), c.cfg); err == nil || !strings.Contains(err.Error(), c.has) {
			t.Errorf("Setup(%+v) = %v, want %q", c.cfg, err, c.has)
		}
	}
}

func ratio(r float64) *float64 { return &r }

// TestSampleRatio: a ratio set in the config wins, 0 included (no new
// traces at all); unset, OTEL_TRACES_SAMPLER decides (with its
// OTEL_TRACES_SAMPLER_ARG for the ratio samplers, and alone when no
// sampler is named), else every trace is sampled. A sampler this node
// does not implement is ignored, with its argument, and logged.
func TestSampleRatio(t *testing.T) {
	const s, arg = "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"
	for _, c := range []struct {
		set  *float64
		env  map[string]string
		want float64
		err  bool
		warn bool
	}{
		{ratio(0), map[string]string{arg: "0.5"}, 0, false, false},
		{ratio(0.01), nil, 0.01, false, false},
		{nil, map[string]string{arg: "0.25"}, 0.25, false, false},
		{nil, nil, 1, false, false},
		{ratio(-0.1), nil, 0, true, false},
		{nil, map[string]string{arg: "2"}, 0, true, false},

		{nil, map[string]string{s: "always_off"}, 0, false, false},
		{nil, map[string]string{s: "parentbased_always_off", arg: "0.5"}, 0, false, false},
		{nil, map[string]string{s: " Always_Off "}, 0, false, false},
		{nil, map[string]string{s: "always_on", arg: "0.5"}, 1, false, false},
		{nil, map[string]string{s: "parentbased_always_on"}, 1, false, false},
		{nil, map[string]string{s: "traceidratio", arg: "0.25"}, 0.25, false, false},
		{nil, map[string]string{s: "parentbased_traceidratio", arg: "0.1"}, 0.1, false, false},
		{nil, map[string]string{s: "parentbased_traceidratio"}, 1, false, false},
		{nil, map[string]string{s: "traceidratio", arg: "half"}, 0, true, false},
		{nil, map[string]string{s: "parentbased_traceidratio", arg: "-0.5"}, 0, true, false},
		{nil, map[string]string{s: "parentbased_jaeger_remote", arg: "endpoint=http://localhost:14250,pollingIntervalMs=5000"}, 1, false, true},
		{nil, map[string]string{s: "xray"}, 1, false, true},
		// The config's ratio wins over every sampler, supported or not.
		{ratio(0.5), map[string]string{s: "always_off"}, 0.5, false, false},
		{ratio(0.01), map[string]string{s: "traceidratio", arg: "0.25"}, 0.01, false, false},
		{ratio(0.2), map[string]string{s: "jaeger_remote", arg: "endpoint=http://localhost:14250"}, 0.2, false, false},
	} {
		var logged bytes.Buffer
		got, err := sampleRatio(Config{SampleRatio: c.set, Getenv: env(c.env), Logger: slog.New(slog.NewTextHandler(&logged, nil))})
		if (err != nil) != c.err || got != c.want {
			t.Errorf("ratio %v, env %v: %v, %v; want %v (error %v)", c.set, c.env, got, err, c.want, c.err)
		}
		warned := strings.Contains(logged.String(), "level=WARN") && strings.Contains(logged.String(), "not supported") &&
			strings.Contains(logged.String(), "ratio 1") && strings.Contains(logged.String(), strings.TrimSpace(c.env[s]))
		if warned != c.warn || (!c.warn && logged.Len() != 0) {
			t.Errorf("ratio %v, env %v: logged %q; want a warning naming the sampler and the default: %v", c.set, c.env, logged.String(), c.warn)
		}
	}
}

// TestSamplerFromEnvironment: with an OTLP endpoint in the environment,
// OTEL_TRACES_SAMPLER=always_off starts no trace of the node's own (the
// coin never picks a root, and a root span is not sampled), and a sampler
// the node does not implement (with an argument that is no ratio) is
// logged and ignored rather than stopping the node.
func TestSamplerFromEnvironment(t *testing.T) {
	endpoint := "http://" + unusedAddr(t)
	setup := func(t *testing.T, cfg Config, vars map[string]string) *Telemetry {
		t.Helper()
		vars["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
		cfg.Getenv = env(vars)
		tel, err := Setup(context.Background(), cfg)
		if err != nil {
			t.Fatalf("Setup with %v: %v", vars, err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 0)
			defer cancel()
			tel.Close(ctx)
		})
		tel.coin = func() float64 { return 0 } // the luckiest draw
		return tel
	}

	t.Run("always_off", func(t *testing.T) {
		tel := setup(t, Config{}, map[string]string{"OTEL_TRACES_SAMPLER": "always_off"})
		if _, span := tel.StartStreamCall(context.Background(), "kv.Put"); span.IsRecording() {
			t.Error("always_off: the gate started a trace of its own")
		}
		if _, span := tel.Tracer("test").Start(context.Background(), "root"); span.SpanContext().IsSampled() {
			t.Error("always_off: a new root span was sampled")
		}
	})

	t.Run("parentbased_jaeger_remote", func(t *testing.T) {
		var logged lockedBuffer
		tel := setup(t, Config{Logger: slog.New(slog.NewTextHandler(&logged, nil))}, map[string]string{
			"OTEL_TRACES_SAMPLER":     "parentbased_jaeger_remote",
			"OTEL_TRACES_SAMPLER_ARG": "endpoint=http://localhost:14250,pollingIntervalMs=5000,initialSamplingRate=0.25",
		})
		if !strings.Contains(logged.String(), "not supported") || !strings.Contains(logged.String(), "parentbased_jaeger_remote") {
			t.Errorf("logged %q; want a warning that the sampler is not supported", logged.String())
		}
		if _, span := tel.StartStreamCall(context.Background(), "kv.Put"); !span.IsRecording() {
			t.Error("an unsupported sampler: the default (every new trace sampled) was not used")
		}
	})

	t.Run("explicit ratio wins", func(t *testing.T) {
		tel := setup(t, Config{SampleRatio: ratio(1)}, map[string]string{"OTEL_TRACES_SAMPLER": "always_off"})
		if _, span := tel.StartStreamCall(context.Background(), "kv.Put"); !span.IsRecording() {
			t.Error("trace-sample-ratio 1 with OTEL_TRACES_SAMPLER=always_off: no trace started; the config must win")
		}
	})
}

func TestMetricsAndPprof(t *testing.T) {
	// A bare port binds loopback only.
	tel, err := Setup(context.Background(), Config{MetricsAddr: ":0", Pprof: true, Getenv: env(nil)})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Close(context.Background())
	if host, _, _ := net.SplitHostPort(tel.MetricsAddr()); host != "127.0.0.1" {
		t.Fatalf("metrics-addr :0 bound %s, want loopback only", tel.MetricsAddr())
	}
	tel.Metrics.RequestDone("Get", "QUORUM", "OK", 1e6)
	for path, want := range map[string]string{
		"/metrics":      `meridian_requests_total{level="QUORUM",op="Get",outcome="OK"} 1`,
		"/debug/pprof/": "goroutine",
	} {
		resp, err := http.Get("http://" + tel.MetricsAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), want) {
			t.Errorf("%s lacks %q", path, want)
		}
	}
}

func TestLoggerAddsTraceIDs(t *testing.T) {
	var buf bytes.Buffer
	l, err := NewLogger(&buf, "debug", "json", "n1", "dc1")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	tel, _ := Setup(context.Background(), Config{Exporter: "stdout", Stdout: &out, Getenv: env(nil)})
	defer tel.Close(context.Background())
	ctx, span := tel.Tracer("t").Start(context.Background(), "req")
	l.InfoContext(ctx, "hello")
	span.End()
	line := buf.String()
	for _, want := range []string{`"node":"n1"`, `"dc":"dc1"`, `"trace_id":"` + span.SpanContext().TraceID().String()} {
		if !strings.Contains(line, want) {
			t.Errorf("log line %s lacks %s", line, want)
		}
	}
	if _, err := NewLogger(&buf, "loud", "", "", ""); err == nil {
		t.Error("bad level accepted")
	}
}

// TestOTLPHTTPEndpointFlag: --otlp-endpoint HOST:PORT with http/protobuf
// posts spans to /v1/traces (the exporter alone would post to "/"), the
// flag wins over OTEL_TRACES_EXPORTER=none, and an attribute value is cut
// to DefaultAttributeValueLength bytes.
func TestOTLPHTTPEndpointFlag(t *testing.T) {
	var mu sync.Mutex
	var paths []string
	var largest int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		paths = append(paths, r.URL.Path)
		largest = max(largest, len(b))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	tel, err := Setup(context.Background(), Config{OTLPEndpoint: strings.TrimPrefix(srv.URL, "http://"), OTLPProtocol: "http/protobuf",
		Getenv: env(map[string]string{"OTEL_TRACES_EXPORTER": "none"})})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tel.Tracer("test").Start(context.Background(), "x")
	span.SetAttributes(attribute.String("meridian.keyspace", strings.Repeat("k", 1<<20)))
	span.End()
	if err := tel.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(paths) == 0 || paths[0] != "/v1/traces" {
		t.Fatalf("spans posted to %v, want /v1/traces", paths)
	}
	if largest > 64<<10 {
		t.Fatalf("an export of one span with a 1 MiB attribute took %d bytes: the value was not cut", largest)
	}
}

// TestHistogramBucketsCoverTheirRange: a read of 50 or 120 siblings (the
// default limit is 100, the warning starts at 25) and a throttled
// exchange of two minutes land in finite buckets, not only in +Inf.
func TestHistogramBucketsCoverTheirRange(t *testing.T) {
	tel := NewForTest(nil)
	tel.Metrics.SiblingsReturned(50)
	tel.Metrics.SiblingsReturned(120)
	rm, err := tel.Metrics.Repair(func() time.Duration { return 0 })
	if err != nil {
		t.Fatal(err)
	}
	rm.Exchanged(2*time.Minute, 0)
	families, err := tel.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"meridian_siblings": 120, "meridian_repair_exchange_duration_seconds": 120}
	for _, f := range families {
		top, ok := want[f.GetName()]
		if !ok {
			continue
		}
		delete(want, f.GetName())
		h := f.GetMetric()[0].GetHistogram()
		var finite uint64
		for _, b := range h.GetBucket() {
			if b.GetUpperBound() >= top {
				finite = max(finite, b.GetCumulativeCount())
			}
		}
		if finite != h.GetSampleCount() {
			t.Errorf("%s: %d of %d observations up to %v in a finite bucket", f.GetName(), finite, h.GetSampleCount(), top)
		}
	}
	if len(want) != 0 {
		t.Fatalf("histograms not registered: %v", want)
	}
}

// TestCloseFlushesSpansWhileAProfileRuns: a profile download still running
// at shutdown (continuous profilers pull them all the time) does not use
// up the time the last spans need to be exported.
func TestCloseFlushesSpansWhileAProfileRuns(t *testing.T) {
	var buf lockedBuffer
	tel, err := Setup(context.Background(), Config{Exporter: "stdout", Stdout: &buf, MetricsAddr: "127.0.0.1:0", Pprof: true, Getenv: env(nil)})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tel.Tracer("test").Start(context.Background(), "meridian.last.span")
	span.End()
	started := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		req, _ := http.NewRequest("GET", "http://"+tel.MetricsAddr()+"/debug/pprof/profile?seconds=20", nil)
		close(started)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	<-started
	time.Sleep(200 * time.Millisecond) // let the profile begin (no signal to poll for)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	tel.Close(ctx)
	// Checked as Close returns: later, the batcher's own timer would
	// export it anyway.
	exported := strings.Contains(buf.String(), "meridian.last.span")
	<-done
	if !exported {
		t.Fatal("the last span was not exported: the profile download used up the shutdown's time")
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestExportFailuresGoToTheNodesLog: a span export that fails is reported
// on the node's logger (with its attributes, in its format), not printed
// by OpenTelemetry's global handler to stderr.
func TestExportFailuresGoToTheNodesLog(t *testing.T) {
	var logged lockedBuffer
	log := slog.New(slog.NewJSONHandler(&logged, nil)).With("node", "n1")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens there now
	tel, err := Setup(context.Background(), Config{OTLPEndpoint: addr, OTLPProtocol: "http/protobuf", Logger: log, Getenv: env(nil)})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tel.Tracer("test").Start(context.Background(), "x")
	span.End()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	tel.Close(ctx)
	var line map[string]any
	if err := json.Unmarshal(bytes.TrimSpace([]byte(logged.String())), &line); err != nil || line["node"] != "n1" || !strings.Contains(fmt.Sprint(line["msg"]), "exporting spans failed") {
		t.Fatalf("logged %q (%v); want one JSON line of n1 saying the export failed", logged.String(), err)
	}
}
