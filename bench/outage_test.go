//go:build bench

package bench

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	_ "google.golang.org/grpc/encoding/gzip" // the exporters compress
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/ebpfnet/ebpfnet/internal/collectortest"
	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

// countingSink is an OTLP/gRPC backend that counts what it receives; it
// can be stopped and started again on the same address (an outage).
type countingSink struct {
	addr                string
	srv                 *grpc.Server
	logs, spans, points atomic.Int64
	ptraceotlp.UnimplementedGRPCServer
}

type sinkL struct {
	s *countingSink
	plogotlp.UnimplementedGRPCServer
}

type sinkM struct {
	s *countingSink
	pmetricotlp.UnimplementedGRPCServer
}

func (s *countingSink) Export(_ context.Context, r ptraceotlp.ExportRequest) (ptraceotlp.ExportResponse, error) {
	s.spans.Add(int64(r.Traces().SpanCount()))
	return ptraceotlp.NewExportResponse(), nil
}

func (l *sinkL) Export(_ context.Context, r plogotlp.ExportRequest) (plogotlp.ExportResponse, error) {
	l.s.logs.Add(int64(r.Logs().LogRecordCount()))
	return plogotlp.NewExportResponse(), nil
}

func (m *sinkM) Export(_ context.Context, r pmetricotlp.ExportRequest) (pmetricotlp.ExportResponse, error) {
	m.s.points.Add(int64(r.Metrics().DataPointCount()))
	return pmetricotlp.NewExportResponse(), nil
}

func (s *countingSink) start(t *testing.T) {
	ln, err := net.Listen("tcp", s.addr)
	require.NoError(t, err)
	s.addr = ln.Addr().String()
	s.srv = grpc.NewServer(grpc.MaxRecvMsgSize(64 << 20))
	ptraceotlp.RegisterGRPCServer(s.srv, s)
	plogotlp.RegisterGRPCServer(s.srv, &sinkL{s: s})
	pmetricotlp.RegisterGRPCServer(s.srv, &sinkM{s: s})
	go func() { _ = s.srv.Serve(ln) }()
}

func (s *countingSink) stop() { s.srv.Stop() }

// exampleAgent is the example agent's collector config and the memory
// settings of its DaemonSet (GOMEMLIMIT, the memory limit).
type exampleAgent struct {
	config     map[string]any
	goMemLimit string
	limit      int64
}

func readExampleAgent(t *testing.T) exampleAgent {
	root := filepath.Join("..", "examples", "kubernetes")
	raw, err := os.ReadFile(filepath.Join(root, "20-agent-config.yaml"))
	require.NoError(t, err)
	var cm corev1.ConfigMap
	require.NoError(t, yaml.Unmarshal(raw, &cm))
	var a exampleAgent
	require.NoError(t, yaml.Unmarshal([]byte(cm.Data["config.yaml"]), &a.config))
	raw, err = os.ReadFile(filepath.Join(root, "30-agent-daemonset.yaml"))
	require.NoError(t, err)
	var ds appsv1.DaemonSet
	require.NoError(t, yaml.Unmarshal(raw, &ds))
	c := ds.Spec.Template.Spec.Containers[0]
	for _, e := range c.Env {
		if e.Name == "GOMEMLIMIT" {
			a.goMemLimit = e.Value
		}
	}
	a.limit = c.Resources.Limits.Memory().Value()
	require.NotEmpty(t, a.goMemLimit)
	require.NotZero(t, a.limit)
	return a
}

// benchConfig is the example agent's config on the bench node: no
// Kubernetes (no API server here), the gateway replaced by the sink, and
// the collector's own metrics on a local port.
func (a exampleAgent) benchConfig(t *testing.T, node *testnet.Node, sink string, metricsPort int) []byte {
	get := func(m map[string]any, k string) map[string]any { return m[k].(map[string]any) }
	cfg := a.config
	rcv := get(get(cfg, "receivers"), "ebpfnet")
	delete(rcv, "cgroup_path")
	delete(rcv, "k8s")
	rcv["node_name"] = "bench-node"
	rcv["interfaces"] = map[string]any{"include": fmt.Sprintf("^%s-", testnet.Prefix(node.ID)), "exclude": ""}
	delete(get(cfg, "processors"), "k8s_attributes")
	exp := get(get(cfg, "exporters"), "otlp_grpc")
	exp["endpoint"] = sink
	delete(cfg, "extensions")
	svc := get(cfg, "service")
	delete(svc, "extensions")
	for _, p := range get(svc, "pipelines") {
		pl := p.(map[string]any)
		var procs []any
		for _, name := range pl["processors"].([]any) {
			if name != "k8s_attributes" {
				procs = append(procs, name)
			}
		}
		pl["processors"] = procs
	}
	svc["telemetry"] = map[string]any{"metrics": map[string]any{"level": "normal", "readers": []any{
		map[string]any{"pull": map[string]any{"exporter": map[string]any{"prometheus": map[string]any{
			"host": "127.0.0.1", "port": metricsPort}}}}}}}
	out, err := yaml.Marshal(cfg)
	require.NoError(t, err)
	return out
}

// selfMetrics sums the collector's own metrics by name (every label set).
func selfMetrics(port int) map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(f[0], "{")
		name = strings.TrimSuffix(name, "_total") // the Prometheus exporter may add it
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			out[name] += v
		}
	}
	return out
}

// procStat is a process's RSS (MiB) and CPU time (user+sys).
func procStat(pid int) (rss float64, cpu time.Duration) {
	rss = statusMiB(pid, "VmRSS")
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		cpu = time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ 100
	}
	return rss, cpu
}

// memCgroupMiB reads the first of files (a v2 and a v1 name) of a memory
// cgroup, in MiB.
func memCgroupMiB(dir string, files ...string) float64 {
	for _, f := range files {
		if b, err := os.ReadFile(filepath.Join(dir, f)); err == nil {
			n, _ := strconv.ParseFloat(strings.TrimSpace(string(b)), 64)
			return n / (1 << 20)
		}
	}
	return 0
}

// statusMiB is a /proc/<pid>/status field given in kB, in MiB.
func statusMiB(pid int, field string) float64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			kb, _ := strconv.ParseFloat(strings.Fields(v)[0], 64)
			return kb / 1024
		}
	}
	return 0
}

// outageSample is one 10 s sample of the collector under the outage bench.
type outageSample struct {
	at       time.Duration
	phase    string
	rss, cg  float64 // MiB: the process's RSS, the memory cgroup's usage (BPF maps included)
	cpu      float64 // % of one core over the sample
	self     map[string]float64
	received int64 // records at the backend so far
}

// TestBenchOutage: the ocb collector with the example agent's config and
// memory settings (GOMEMLIMIT, memory_limiter, queues; in a memory cgroup
// of the DaemonSet's limit, so that the BPF maps count), under the steady
// bench's mixed traffic, with the backend up for BENCH_OUTAGE_BEFORE
// seconds, down for BENCH_OUTAGE_SECONDS (600) and up again for 120 s.
func TestBenchOutage(t *testing.T) {
	testnet.RequireRoot(t)
	secs := envSeconds("BENCH_OUTAGE_SECONDS", 600)
	before := envSeconds("BENCH_OUTAGE_BEFORE", 120)
	after := envSeconds("BENCH_OUTAGE_AFTER", 120)
	agent := readExampleAgent(t)
	bin := collectortest.Build(t)
	node := testnet.NewNode(t, 97)
	p1 := node.AddPod(t, 2)
	p2 := node.AddPod(t, 3)
	busyClient(t, p1.NS)
	sink := &countingSink{addr: "127.0.0.1:0"}
	sink.start(t)
	const metricsPort = 18888
	cg := testnet.MemoryCgroup(t, "ebpfnet-outage", agent.limit)
	col := agent.start(t, bin, agent.benchConfig(t, node, sink.addr, metricsPort), cg)
	total := before + secs + after
	mixedTraffic(t, p1, p2, total+30)

	var samples []outageSample
	start := time.Now()
	_, cpu0 := procStat(col.Cmd.Process.Pid)
	last := start
	down := false
	for time.Since(start) < time.Duration(total)*time.Second {
		time.Sleep(10 * time.Second)
		el := time.Since(start)
		phase := "before"
		switch {
		case el > time.Duration(before+secs)*time.Second:
			phase = "after"
			if down {
				sink.start(t) // same address: the exporters reconnect
				down = false
			}
		case el > time.Duration(before)*time.Second:
			phase = "outage"
			if !down {
				sink.stop()
				down = true
			}
		}
		rss, cpu1 := procStat(col.Cmd.Process.Pid)
		now := time.Now()
		s := outageSample{at: el, phase: phase, rss: rss, cg: memCgroupMiB(cg, "memory.current", "memory.usage_in_bytes"), self: selfMetrics(metricsPort),
			cpu:      100 * (cpu1 - cpu0).Seconds() / now.Sub(last).Seconds(),
			received: sink.logs.Load() + sink.spans.Load() + sink.points.Load()}
		cpu0, last = cpu1, now
		require.NoError(t, col.Cmd.Process.Signal(syscall.Signal(0)), "the collector died:\n%s", tail(col.Output(), 4000))
		samples = append(samples, s)
		sum := func(m string) float64 {
			return s.self[m+"_log_records"] + s.self[m+"_spans"] + s.self[m+"_metric_points"]
		}
		t.Logf("%4.0fs %-6s rss %.0f MiB cgroup %.0f MiB cpu %.0f%% received %d accepted %.0f queue %v enqueue_failed %.0f send_failed %.0f refused %.0f",
			el.Seconds(), phase, s.rss, s.cg, s.cpu, s.received, sum("otelcol_receiver_accepted"), s.self["otelcol_exporter_queue_size"],
			sum("otelcol_exporter_enqueue_failed"), sum("otelcol_exporter_send_failed"), sum("otelcol_receiver_refused"))
	}
	addSection(outageReport(agent, secs, before, after, samples))
}

func envSeconds(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// start runs the collector with config in cgroup cg, with the
// DaemonSet's GOMEMLIMIT, until the test ends.
func (a exampleAgent) start(t *testing.T, bin string, config []byte, cg string) *collectortest.Collector {
	path := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(path, config, 0o600))
	return collectortest.Start(t, bin, path, func(cmd *exec.Cmd) {
		cmd.Env = append(os.Environ(), "GOMEMLIMIT="+a.goMemLimit)
		testnet.InCgroup(cg, cmd)
	})
}

func tail(s string, n int) string { return s[max(0, len(s)-n):] }

// outageReport is the bench's section: each phase's RSS, cgroup usage and
// CPU, and the collector's own counts of what it queued, dropped, refused.
func outageReport(a exampleAgent, secs, before, after int, samples []outageSample) string {
	var b strings.Builder
	b.WriteString("## Backend outage (the example agent's memory settings)\n\n")
	fmt.Fprintf(&b, "Reproduce: `make bench` (or `BENCH_OUTAGE_SECONDS=%d go test -count=1 -timeout 60m -tags bench -run TestBenchOutage -v ./bench/`).\n", secs)
	b.WriteString("The ocb collector runs the example agent's config (`examples/kubernetes/20-agent-config.yaml`: memory_limiter,\n")
	b.WriteString("batch, the OTLP exporter's queue; without k8s_attributes, no API server here) with the DaemonSet's\n")
	fmt.Fprintf(&b, "GOMEMLIMIT=%s, in a memory cgroup of the DaemonSet's limit (%d MiB), which the BPF maps are charged to as\n", a.goMemLimit, a.limit>>20)
	b.WriteString("in a pod. Load: the steady-state section's mixed traffic (a 200 Mbit/s TCP stream, a 20 Mbit/s UDP stream, 500\n")
	fmt.Fprintf(&b, "new TCP connections/s). The backend (an OTLP sink) is up for %d s, down for %d s, up again for %d s.\n", before, secs, after)
	b.WriteString("Sampled every 10 s: the collector's RSS, the cgroup's usage (RSS, the BPF maps, page cache), its CPU, and its\n")
	b.WriteString("own metrics (Prometheus endpoint; sums over the signals).\n\n")
	b.WriteString("| phase | samples | RSS MiB median (max) | cgroup MiB median (max) | CPU % of a core median (max) |\n|---|---|---|---|---|\n")
	for _, ph := range []string{"before", "outage", "after"} {
		var rss, cg, cpu []float64
		for _, s := range samples {
			if s.phase == ph {
				rss, cg, cpu = append(rss, s.rss), append(cg, s.cg), append(cpu, s.cpu)
			}
		}
		if len(rss) == 0 {
			continue
		}
		r, c, p := summarize(rss), summarize(cg), summarize(cpu)
		fmt.Fprintf(&b, "| %s | %d | %.0f (%.0f) | %.0f (%.0f) | %.0f (%.0f) |\n", ph, len(rss), r.med, r.max, c.med, c.max, p.med, p.max)
	}
	last := samples[len(samples)-1].self
	b.WriteString("\nThe collector's own counts at the end (records; logs + spans + metric points):\n\n| metric | value |\n|---|---|\n")
	for _, m := range []string{"otelcol_receiver_accepted", "otelcol_receiver_refused", "otelcol_exporter_sent",
		"otelcol_exporter_enqueue_failed", "otelcol_exporter_send_failed"} {
		var v float64
		for _, sig := range []string{"log_records", "spans", "metric_points"} {
			v += last[m+"_"+sig]
		}
		fmt.Fprintf(&b, "| %s_* | %.0f |\n", m, v)
	}
	fmt.Fprintf(&b, "| received by the backend | %d |\n", samples[len(samples)-1].received)
	return b.String()
}
