package ebpfnetreceiver

// Helpers of the end-to-end tests that run the ocb-built collector.

import (
	"bufio"
	"bytes"
	"os"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// jsonLines reads the file exporter's output: one OTLP/JSON request per
// line (a line still being written is skipped).
func jsonLines(path string, fn func([]byte) error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		_ = fn(sc.Bytes())
	}
}

type k8sSpan struct {
	res  pcommon.Map
	span ptrace.Span
}

func readSpans(path string) []k8sSpan {
	var out []k8sSpan
	jsonLines(path, func(line []byte) error {
		td, err := (&ptrace.JSONUnmarshaler{}).UnmarshalTraces(line)
		if err != nil {
			return err
		}
		for i := 0; i < td.ResourceSpans().Len(); i++ {
			rs := td.ResourceSpans().At(i)
			for j := 0; j < rs.ScopeSpans().Len(); j++ {
				ss := rs.ScopeSpans().At(j).Spans()
				for k := 0; k < ss.Len(); k++ {
					out = append(out, k8sSpan{rs.Resource().Attributes(), ss.At(k)})
				}
			}
		}
		return nil
	})
	return out
}

// anyLogRecord reports whether a log record of the file exporter's output
// matches (its resource's and its own attributes).
func anyLogRecord(path string, match func(res, attrs pcommon.Map) bool) bool {
	found := false
	jsonLines(path, func(line []byte) error {
		ld, err := (&plog.JSONUnmarshaler{}).UnmarshalLogs(line)
		if err != nil {
			return err
		}
		for i := 0; i < ld.ResourceLogs().Len() && !found; i++ {
			rl := ld.ResourceLogs().At(i)
			for j := 0; j < rl.ScopeLogs().Len(); j++ {
				recs := rl.ScopeLogs().At(j).LogRecords()
				for k := 0; k < recs.Len(); k++ {
					if match(rl.Resource().Attributes(), recs.At(k).Attributes()) {
						found = true
					}
				}
			}
		}
		return nil
	})
	return found
}
