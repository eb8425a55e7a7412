package backendtest

import (
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Jaeger is a running Jaeger v2 with in-memory storage: OTLP gRPC in, the
// query service's HTTP API out.
type Jaeger struct {
	OTLP string // host:port of its OTLP gRPC receiver
	URL  string // http://host:port of its query API
}

// StartJaeger builds Jaeger v2 if needed (scripts/build-jaeger.sh, cached)
// and runs it until the end of the test.
func StartJaeger(tb testing.TB) *Jaeger {
	tb.Helper()
	_, self, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(self), "..", "..")
	out, err := exec.Command(filepath.Join(root, "scripts", "build-jaeger.sh")).Output()
	require.NoError(tb, err, "scripts/build-jaeger.sh")
	bin := strings.TrimSpace(string(out))
	j := &Jaeger{OTLP: FreeAddr(tb), URL: "http://" + FreeAddr(tb)}
	dir := tb.TempDir()
	cfg := filepath.Join(dir, "jaeger.yaml")
	require.NoError(tb, os.WriteFile(cfg, []byte(fmt.Sprintf(`
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces: {receivers: [otlp], processors: [batch], exporters: [jaeger_storage_exporter]}
  telemetry: {metrics: {level: none}}
extensions:
  jaeger_query:
    storage: {traces: memstore}
    http: {endpoint: %q}
    grpc: {endpoint: %q}
  jaeger_storage:
    backends: {memstore: {memory: {max_traces: 100000}}}
receivers:
  otlp: {protocols: {grpc: {endpoint: %q}}}
processors: {batch: {}}
exporters:
  jaeger_storage_exporter: {trace_storage: memstore}
`, strings.TrimPrefix(j.URL, "http://"), FreeAddr(tb), j.OTLP)), 0o600))
	run(tb, exec.Command(bin, "--config", cfg), dir, j.URL+"/api/services")
	return j
}

// JaegerTrace is a trace as Jaeger's query API returns it.
type JaegerTrace struct {
	TraceID string `json:"traceID"`
	Spans   []struct {
		SpanID        string `json:"spanID"`
		OperationName string `json:"operationName"`
		ProcessID     string `json:"processID"`
		References    []struct {
			RefType string `json:"refType"`
			SpanID  string `json:"spanID"`
		} `json:"references"`
	} `json:"spans"`
	Processes map[string]struct {
		ServiceName string `json:"serviceName"`
	} `json:"processes"`
}

// Services is GET /api/services.
func (j *Jaeger) Services(tb testing.TB) []string {
	var res struct {
		Data []string `json:"data"`
	}
	getJSON(tb, j.URL+"/api/services", &res)
	return res.Data
}

// Traces is GET /api/traces for a service, the last hour.
func (j *Jaeger) Traces(tb testing.TB, service string) []JaegerTrace {
	var res struct {
		Data []JaegerTrace `json:"data"`
	}
	getJSON(tb, j.URL+"/api/traces?limit=10000&lookback=1h&service="+url.QueryEscape(service), &res)
	return res.Data
}

// Dependencies is GET /api/dependencies over the last hour: calls by
// parent service → child service.
func (j *Jaeger) Dependencies(tb testing.TB) map[string]int {
	var res struct {
		Data []struct {
			Parent    string `json:"parent"`
			Child     string `json:"child"`
			CallCount int    `json:"callCount"`
		} `json:"data"`
	}
	getJSON(tb, fmt.Sprintf("%s/api/dependencies?endTs=%d&lookback=%d", j.URL, time.Now().Add(time.Minute).UnixMilli(), time.Hour.Milliseconds()), &res)
	out := map[string]int{}
	for _, d := range res.Data {
		out[d.Parent+" -> "+d.Child] += d.CallCount
	}
	return out
}
