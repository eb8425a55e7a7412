package ebpfnetreceiver

import (
	"context"
	"net"
	"sync"
	"testing"

	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	_ "google.golang.org/grpc/encoding/gzip" // the collector's exporters compress
)

// otlpSink is an OTLP/gRPC server that keeps what it receives: the
// backend of the end-to-end tests on the node.
type otlpSink struct {
	Addr string
	mu   sync.Mutex
	m    []pmetric.Metrics
	l    []plog.Logs
	tr   []ptrace.Traces
	ptraceotlp.UnimplementedGRPCServer
}

type sinkMetrics struct {
	s *otlpSink
	pmetricotlp.UnimplementedGRPCServer
}

type sinkLogs struct {
	s *otlpSink
	plogotlp.UnimplementedGRPCServer
}

// startOTLPSink listens on host (an address of this machine), port chosen
// by the kernel, until the test ends.
func startOTLPSink(t testing.TB, host string) *otlpSink {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	s := &otlpSink{Addr: ln.Addr().String()}
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(64 << 20))
	ptraceotlp.RegisterGRPCServer(srv, s)
	pmetricotlp.RegisterGRPCServer(srv, &sinkMetrics{s: s})
	plogotlp.RegisterGRPCServer(srv, &sinkLogs{s: s})
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return s
}

func (s *otlpSink) Export(_ context.Context, r ptraceotlp.ExportRequest) (ptraceotlp.ExportResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	td := ptrace.NewTraces()
	r.Traces().CopyTo(td)
	s.tr = append(s.tr, td)
	return ptraceotlp.NewExportResponse(), nil
}

func (m *sinkMetrics) Export(_ context.Context, r pmetricotlp.ExportRequest) (pmetricotlp.ExportResponse, error) {
	m.s.mu.Lock()
	defer m.s.mu.Unlock()
	md := pmetric.NewMetrics()
	r.Metrics().CopyTo(md)
	m.s.m = append(m.s.m, md)
	return pmetricotlp.NewExportResponse(), nil
}

func (l *sinkLogs) Export(_ context.Context, r plogotlp.ExportRequest) (plogotlp.ExportResponse, error) {
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	ld := plog.NewLogs()
	r.Logs().CopyTo(ld)
	l.s.l = append(l.s.l, ld)
	return plogotlp.NewExportResponse(), nil
}

// Traces returns what was received so far.
func (s *otlpSink) Traces() []ptrace.Traces {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]ptrace.Traces(nil), s.tr...)
}

// Metrics returns what was received so far.
func (s *otlpSink) Metrics() []pmetric.Metrics {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]pmetric.Metrics(nil), s.m...)
}

// Logs returns what was received so far.
func (s *otlpSink) Logs() []plog.Logs {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]plog.Logs(nil), s.l...)
}
