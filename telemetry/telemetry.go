// Package telemetry sets up a node's observability: OpenTelemetry tracing
// (OTLP over gRPC or HTTP, or stdout, configured by flags and the standard
// OTEL_* variables), Prometheus metrics on /metrics, optional pprof, and
// log/slog handlers that stamp every line with the node, DC and trace ID.
//
// Nothing here touches OpenTelemetry's or Prometheus's global state: the
// tracer provider, propagator and registry are values handed to the node.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	noopmetric "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	nooptrace "go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"

	internalv1 "github.com/meridiankv/meridian/api/internalapi/v1"
)

// Config selects exporters and listeners. The zero value turns tracing off
// (a no-op tracer) and serves no metrics.
type Config struct {
	// Exporter is "" (auto: otlp when an endpoint is set, else off), "otlp",
	// "stdout" or "none".
	Exporter string `yaml:"trace-exporter"`
	// OTLPEndpoint overrides OTEL_EXPORTER_OTLP_ENDPOINT / ..._TRACES_ENDPOINT.
	OTLPEndpoint string `yaml:"otlp-endpoint"`
	// OTLPProtocol is "grpc" or "http/protobuf"; default from
	// OTEL_EXPORTER_OTLP_PROTOCOL, else grpc.
	OTLPProtocol string `yaml:"otlp-protocol"`
	// SampleRatio is the fraction of new traces sampled (parent-based),
	// 0 to 1; nil means "from OTEL_TRACES_SAMPLER and
	// OTEL_TRACES_SAMPLER_ARG, else 1" (see sampleRatio).
	SampleRatio *float64 `yaml:"trace-sample-ratio"`
	// CallerTraceRate bounds the requests a second, on the client and
	// admin listeners, traced because their caller sent a sampled trace
	// context: a caller chooses that (before it is authenticated), and
	// every traced request costs spans and an export. nil means
	// DefaultCallerTraceRate; 0 follows no caller's trace.
	CallerTraceRate *float64 `yaml:"trace-caller-rate"`
	// MetricsAddr serves /metrics (and /debug/pprof with Pprof) when set.
	// A bare port (":9090") binds localhost only; name the host (for
	// example 0.0.0.0:9090) to serve other machines.
	MetricsAddr string `yaml:"metrics-addr"`
	Pprof       bool   `yaml:"pprof"`
	// ServiceName for the OTel resource (default "meridian").
	ServiceName string `yaml:"-"`
	// NodeID and DC label the resource and every log line.
	NodeID, DC string `yaml:"-"`
	// Stdout receives the stdout exporter's spans (default os.Stdout).
	Stdout io.Writer `yaml:"-"`
	// Getenv reads the environment (default os.Getenv); injectable for tests.
	Getenv func(string) string `yaml:"-"`
	// Logger receives the metrics server's and the span exporter's errors
	// (default slog.Default()).
	Logger *slog.Logger `yaml:"-"`
}

// Telemetry is a node's running observability.
type Telemetry struct {
	TracerProvider trace.TracerProvider
	Propagator     propagation.TextMapPropagator
	Registry       *prometheus.Registry
	Metrics        *Metrics

	sdk *sdktrace.TracerProvider // nil when tracing is off
	// ratio of client requests without a caller's trace that start one;
	// coin draws uniformly from [0,1) for that choice.
	ratio float64
	coin  func() float64
	// callers bounds the callers' sampled traces followed (nil: no
	// bound); now is its clock.
	callers *rate.Limiter
	now     func() time.Time
	srv     *http.Server
	lis     net.Listener
	serveWG chan struct{}
}

// Setup builds tracing and metrics from cfg. Close releases them.
func Setup(ctx context.Context, cfg Config) (*Telemetry, error) {
	if cfg.Getenv == nil {
		cfg.Getenv = os.Getenv
	}
	if cfg.ServiceName == "" {
		cfg.ServiceName = "meridian"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	t := &Telemetry{
		Propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		Registry:   prometheus.NewRegistry(),
		coin:       rand.Float64,
		now:        time.Now,
	}
	t.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	t.Metrics = newMetrics(t.Registry)

	callers, err := callerTraceRate(cfg)
	if err != nil {
		return nil, err
	}
	newExporter, err := exporter(cfg)
	if err != nil {
		return nil, err
	}
	if newExporter == nil {
		t.TracerProvider = nooptrace.NewTracerProvider()
	} else {
		// The ratio is checked before the exporter exists: an OTLP
		// exporter holds a gRPC connection and its goroutines, which a
		// refused Setup would leave behind.
		ratio, err := sampleRatio(cfg)
		if err != nil {
			return nil, err
		}
		exp, err := newExporter(ctx)
		if err != nil {
			return nil, err
		}
		res := resource.NewSchemaless(
			semconv.ServiceName(cfg.ServiceName),
			semconv.ServiceInstanceID(cfg.NodeID),
		)
		t.sdk = sdktrace.NewTracerProvider(
			sdktrace.WithBatcher(&loggedExporter{SpanExporter: exp, log: cfg.Logger}),
			sdktrace.WithResource(res),
			sdktrace.WithSampler(NewSampler(ratio)),
			sdktrace.WithRawSpanLimits(spanLimits()),
		)
		t.TracerProvider = t.sdk
		t.ratio = ratio
		t.callers = newCallerLimiter(callers)
	}
	if cfg.MetricsAddr != "" {
		if err := t.serve(cfg); err != nil {
			t.Close(ctx)
			return nil, err
		}
	}
	return t, nil
}

// NewForTest returns telemetry around a given tracer provider (for example
// one with a tracetest.SpanRecorder) and a fresh registry; every client
// request without a caller's trace starts one.
func NewForTest(tp trace.TracerProvider) *Telemetry { return NewForTestRatio(tp, 1) }

// NewForTestRatio is NewForTest starting traces for ratio of the client
// requests without a caller's trace (give tp NewSampler(ratio)).
func NewForTestRatio(tp trace.TracerProvider, ratio float64) *Telemetry {
	t := &Telemetry{
		TracerProvider: tp,
		Propagator:     propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		Registry:       prometheus.NewRegistry(),
		ratio:          ratio,
		coin:           rand.Float64,
		now:            time.Now,
	}
	t.Metrics = newMetrics(t.Registry)
	return t
}

// spanLimits are the SDK's (OTEL_SPAN_*_LIMIT, OTEL_ATTRIBUTE_*_LIMIT),
// but an attribute value is cut to DefaultAttributeValueLength bytes
// unless OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT says otherwise: attributes can
// carry what callers send (a keyspace name, a method), and a batch over
// the collector's message limit is refused whole.
func spanLimits() sdktrace.SpanLimits {
	l := sdktrace.NewSpanLimits()
	if l.AttributeValueLengthLimit < 0 {
		l.AttributeValueLengthLimit = DefaultAttributeValueLength
	}
	return l
}

// DefaultAttributeValueLength bounds a span attribute's value, bytes.
const DefaultAttributeValueLength = 1024

// loggedExporter reports export failures on the node's logger (at most
// one line a minute, with the batches failed since) instead of handing
// them to OpenTelemetry's global handler, which prints them to stderr in
// its own format, without the node's attributes.
type loggedExporter struct {
	sdktrace.SpanExporter
	log    *slog.Logger
	mu     sync.Mutex
	last   time.Time
	failed int
}

func (e *loggedExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := e.SpanExporter.ExportSpans(ctx, spans)
	if err == nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.failed++
	if now := time.Now(); now.Sub(e.last) >= time.Minute {
		e.log.Warn("exporting spans failed; they are dropped (check the collector, --otlp-endpoint and OTEL_EXPORTER_OTLP_*)", "err", err, "batches_failed", e.failed)
		e.last, e.failed = now, 0
	}
	return nil // reported here
}

// exporter chooses the span exporter cfg asks for and returns a function
// that builds it, or nil when tracing is off. Choosing starts nothing, so
// Setup can refuse the rest of the configuration first.
func exporter(cfg Config) (func(context.Context) (sdktrace.SpanExporter, error), error) {
	endpoint := cfg.OTLPEndpoint
	envEndpoint := cfg.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	if envEndpoint == "" {
		envEndpoint = cfg.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
	}
	kind := strings.ToLower(cfg.Exporter)
	if kind == "" && endpoint != "" {
		kind = "otlp" // a flag's endpoint wins over the environment
	}
	if kind == "" {
		kind = strings.ToLower(cfg.Getenv("OTEL_TRACES_EXPORTER"))
	}
	if kind == "" {
		if endpoint == "" && envEndpoint == "" {
			return nil, nil
		}
		kind = "otlp"
	}
	switch kind {
	case "none":
		return nil, nil
	case "stdout", "console":
		w := cfg.Stdout
		if w == nil {
			w = os.Stdout
		}
		return func(context.Context) (sdktrace.SpanExporter, error) {
			return stdouttrace.New(stdouttrace.WithWriter(w))
		}, nil
	case "otlp":
		proto := cfg.OTLPProtocol
		if proto == "" {
			proto = cfg.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
		}
		if proto == "" {
			proto = cfg.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
		}
		switch proto {
		case "", "grpc":
			var opts []otlptracegrpc.Option
			if endpoint != "" {
				opts = append(opts, otlptracegrpc.WithEndpointURL(withScheme(endpoint)))
			}
			return func(ctx context.Context) (sdktrace.SpanExporter, error) {
				return otlptracegrpc.New(ctx, opts...)
			}, nil
		case "http/protobuf", "http":
			var opts []otlptracehttp.Option
			if endpoint != "" {
				opts = append(opts, otlptracehttp.WithEndpointURL(withTracesPath(withScheme(endpoint))))
			}
			return func(ctx context.Context) (sdktrace.SpanExporter, error) {
				return otlptracehttp.New(ctx, opts...)
			}, nil
		default:
			return nil, fmt.Errorf("otlp protocol %q: use grpc or http/protobuf", proto)
		}
	default:
		return nil, fmt.Errorf("trace exporter %q: use otlp, stdout or none", kind)
	}
}

// withScheme lets users write host:port; OTLP wants a URL.
func withScheme(endpoint string) string {
	if strings.Contains(endpoint, "://") {
		return endpoint
	}
	return "http://" + endpoint
}

// withTracesPath adds OTLP/HTTP's /v1/traces to an endpoint given without
// a path (the exporter would post to "/"), as the OTEL_EXPORTER_OTLP_ENDPOINT
// variable's base URL gets.
func withTracesPath(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Path != "" && u.Path != "/") {
		return endpoint
	}
	u.Path = "/v1/traces"
	return u.String()
}

// sampleRatio is the fraction of new traces sampled: cfg's SampleRatio
// when set, else what the standard OTEL_TRACES_SAMPLER (and its
// OTEL_TRACES_SAMPLER_ARG) asks for. The node's sampler is always
// parent-based (a caller's sampled trace is followed, up to the caller
// rate), so each sampler and its parentbased_ form give the same ratio:
// always_on 1, always_off 0, traceidratio its argument (default 1). With
// OTEL_TRACES_SAMPLER unset, OTEL_TRACES_SAMPLER_ARG alone still gives the
// ratio, as it always has here. A sampler this node does not implement
// (jaeger_remote, xray, ...) is reported on the log and ignored, with its
// argument, as the specification asks: every new trace is sampled
// (parentbased_always_on, the default).
func sampleRatio(cfg Config) (float64, error) {
	if r := cfg.SampleRatio; r != nil {
		if *r < 0 || *r > 1 || math.IsNaN(*r) {
			return 0, fmt.Errorf("trace sample ratio %v: use a fraction from 0 to 1", *r)
		}
		return *r, nil
	}
	sampler := strings.ToLower(strings.TrimSpace(cfg.Getenv("OTEL_TRACES_SAMPLER")))
	switch sampler {
	case "always_on", "parentbased_always_on":
		return 1, nil
	case "always_off", "parentbased_always_off":
		return 0, nil
	case "", "traceidratio", "parentbased_traceidratio":
		arg := strings.TrimSpace(cfg.Getenv("OTEL_TRACES_SAMPLER_ARG"))
		if arg == "" {
			return 1, nil
		}
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 || math.IsNaN(r) {
			return 0, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG %q: use a fraction from 0 to 1", arg)
		}
		return r, nil
	default:
		log := cfg.Logger
		if log == nil {
			log = slog.Default()
		}
		log.Warn("OTEL_TRACES_SAMPLER is not supported; ignoring it and OTEL_TRACES_SAMPLER_ARG and sampling every new trace (parentbased_always_on, ratio 1): use always_on, always_off, traceidratio, their parentbased_ forms or --trace-sample-ratio",
			"sampler", sampler)
		return 1, nil
	}
}

// DefaultCallerTraceRate is trace-caller-rate's default: requests a
// second followed into a caller's sampled trace. An application tracing
// all its requests at 10,000 a second costs a node 100 traces a second,
// as a trace-sample-ratio of 0.01 would.
const DefaultCallerTraceRate = 100

// callerTraceRate is cfg's CallerTraceRate, or its default.
func callerTraceRate(cfg Config) (float64, error) {
	r := cfg.CallerTraceRate
	if r == nil {
		return DefaultCallerTraceRate, nil
	}
	if *r < 0 || math.IsNaN(*r) || math.IsInf(*r, 0) {
		return 0, fmt.Errorf("trace caller rate %v: use requests a second, 0 or more (0 follows no caller's trace)", *r)
	}
	return *r, nil
}

// newCallerLimiter admits perSecond requests a second into callers'
// traces, in bursts of up to a second's worth (at least one); 0 admits
// none.
func newCallerLimiter(perSecond float64) *rate.Limiter {
	if perSecond <= 0 {
		return rate.NewLimiter(0, 0)
	}
	return rate.NewLimiter(rate.Limit(perSecond), max(1, int(math.Ceil(perSecond))))
}

// LocalByDefault gives a host:port without a host the loopback host:
// metrics and profiles reach other machines only when the operator names
// an interface.
func LocalByDefault(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host != "" {
		return addr
	}
	return net.JoinHostPort("127.0.0.1", port)
}

func (t *Telemetry) serve(cfg Config) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(t.Registry, promhttp.HandlerOpts{Registry: t.Registry}))
	if cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	lis, err := net.Listen("tcp", LocalByDefault(cfg.MetricsAddr))
	if err != nil {
		return fmt.Errorf("listen on metrics-addr %s: %w", cfg.MetricsAddr, err)
	}
	t.lis = lis
	t.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	t.serveWG = make(chan struct{})
	go func() {
		defer close(t.serveWG)
		if err := t.srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			cfg.Logger.Error("metrics server stopped", "err", err)
		}
	}()
	return nil
}

// MetricsAddr is the address /metrics is served on ("" when off).
func (t *Telemetry) MetricsAddr() string {
	if t.lis == nil {
		return ""
	}
	return t.lis.Addr().String()
}

// Tracer returns the tracer for a component.
func (t *Telemetry) Tracer(name string) trace.Tracer {
	return t.TracerProvider.Tracer("github.com/meridiankv/meridian/" + name)
}

// ServerOptions are the gRPC server options that trace RPCs: those whose
// caller's trace is sampled and, when roots is set (the client listener),
// the configured ratio of the others; only of the methods known says the
// server has (nil: any). An RPC not traced costs nothing.
func (t *Telemetry) ServerOptions(roots bool, known func(method string) bool) []grpc.ServerOption {
	if !t.tracing() {
		return nil
	}
	return []grpc.ServerOption{grpc.StatsHandler(t.serverGate(otelgrpc.NewServerHandler(t.otelgrpcOpts()...), roots, known))}
}

// KnownMethods returns a function that tells whether a full method name
// ("/pkg.Service/Method") is one srv serves, from the services registered
// on it when first called (call it only once srv serves).
func KnownMethods(srv func() *grpc.Server) func(method string) bool {
	var (
		once  sync.Once
		known map[string]bool
	)
	return func(method string) bool {
		once.Do(func() {
			known = map[string]bool{}
			s := srv()
			if s == nil {
				return
			}
			for name, info := range s.GetServiceInfo() {
				for _, m := range info.Methods {
					known["/"+name+"/"+m.Name] = true
				}
			}
		})
		return known[method]
	}
}

// tracing reports whether spans can be recorded: with the no-op provider
// (no exporter configured) the gRPC hooks would only cost CPU and
// allocations per RPC (4% of a node's CPU and 13% of its allocations in
// profiles), so they are left out.
func (t *Telemetry) tracing() bool {
	_, noop := t.TracerProvider.(nooptrace.TracerProvider)
	return t.TracerProvider != nil && !noop
}

// DialOptions are the gRPC client options that trace the calls made
// under a sampled span and carry its trace context to the peer.
func (t *Telemetry) DialOptions() []grpc.DialOption {
	if !t.tracing() {
		return nil
	}
	return []grpc.DialOption{grpc.WithStatsHandler(clientGate(otelgrpc.NewClientHandler(t.otelgrpcOpts()...)))}
}

func (t *Telemetry) otelgrpcOpts() []otelgrpc.Option {
	return []otelgrpc.Option{
		otelgrpc.WithTracerProvider(t.TracerProvider),
		otelgrpc.WithPropagators(t.Propagator),
		otelgrpc.WithMeterProvider(noopmetric.NewMeterProvider()),
		// A peer's Calls stream lives as long as the connection and carries
		// untraced calls only (traced ones stay unary): no span for it.
		otelgrpc.WithFilter(func(info *stats.RPCTagInfo) bool {
			return info.FullMethodName != internalv1.Replica_Calls_FullMethodName
		}),
	}
}

// Close flushes spans and stops the metrics server.
func (t *Telemetry) Close(ctx context.Context) error {
	var errs []error
	// Spans first: a metrics scrape or a profile download still running
	// must not use up the time the last spans need to be exported.
	if t.sdk != nil {
		errs = append(errs, t.sdk.Shutdown(ctx))
	}
	if t.srv != nil {
		// Requests under way get a short grace (a 30 s profile would hold
		// Shutdown for all of it), then the server closes.
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		if err := t.srv.Shutdown(sctx); err != nil {
			t.srv.Close()
		}
		cancel()
		<-t.serveWG
	}
	return errors.Join(errs...)
}
