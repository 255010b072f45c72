package telemetry

import (
	"context"
	"net"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// unusedAddr is a 127.0.0.1 address nothing listens on.
func unusedAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// TestBadSampleRatioLeavesNoExporter: a Setup refused for its sample
// ratio (from the config or from the environment) leaves nothing running
// behind it: no OTLP exporter, gRPC connection or goroutine.
func TestBadSampleRatioLeavesNoExporter(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	addr := unusedAddr(t)
	for _, c := range []struct {
		name string
		cfg  Config
	}{
		{"config ratio", Config{Exporter: "otlp", OTLPEndpoint: addr, OTLPProtocol: "grpc", SampleRatio: ratio(2), Getenv: env(nil)}},
		{"environment ratio", Config{Getenv: env(map[string]string{
			"OTEL_EXPORTER_OTLP_ENDPOINT": "http://" + addr,
			"OTEL_TRACES_SAMPLER":         "parentbased_traceidratio",
			"OTEL_TRACES_SAMPLER_ARG":     "lots",
		})}},
	} {
		tel, err := Setup(context.Background(), c.cfg)
		if err == nil {
			tel.Close(context.Background())
			t.Fatalf("%s: Setup accepted a sample ratio that is not a fraction from 0 to 1", c.name)
		}
		if !strings.Contains(err.Error(), "fraction from 0 to 1") {
			t.Fatalf("%s: Setup = %v; want the ratio refused", c.name, err)
		}
	}
}
