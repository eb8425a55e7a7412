package ebpfnetreceiver

import (
	_ "embed"
	"fmt"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver"
	"sigs.k8s.io/yaml"

	"github.com/ebpfnet/ebpfnet/internal/convert"
	"github.com/ebpfnet/ebpfnet/receiver/ebpfnetreceiver/internal/metadata"
)

// Schema is what the converters emit every metric as: its name,
// description and unit read from the metrics builder mdatagen generated
// from metadata.yaml (one point recorded and emitted per metric; the
// builder's recording is not used for the data: it compares attributes per
// point, quadratic in a metric's series), and the two histograms from
// histograms.yaml (see there why).
//
// Schema is exported for the benchmarks, which run the converters alone.
func Schema() (*convert.Schema, error) {
	var s convert.Schema
	// The builder reads only the build info of the settings.
	mb := metadata.NewMetricsBuilder(metadata.DefaultMetricsBuilderConfig(), receiver.Settings{})
	for id, rec := range recorders(mb) {
		rec()
		ms := mb.Emit().ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics()
		if ms.Len() != 1 {
			return nil, fmt.Errorf("schema of metric %d: the generated builder emitted %d metrics", id, ms.Len())
		}
		s[id] = def(ms.At(0))
	}
	hist, err := histogramDefs()
	if err != nil {
		return nil, err
	}
	s[convert.ConnDuration], s[convert.ConnRTT] = hist["ebpfnet.tcp.connection.duration"], hist["ebpfnet.tcp.rtt"]
	s[convert.DNSLookupDuration], s[convert.DNSServerDuration] = hist["dns.lookup.duration"], hist["ebpfnet.dns.server.duration"]
	for id := range s {
		if s[id].Name == "" {
			return nil, fmt.Errorf("schema: metric %d is not defined", id)
		}
	}
	return &s, nil
}

// recorders record one point of each metric the builder generates.
func recorders(mb *metadata.MetricsBuilder) map[convert.Metric]func() {
	var ts pcommon.Timestamp
	return map[convert.Metric]func(){
		convert.FlowIO: func() {
			mb.RecordEbpfnetFlowIoDataPoint(ts, 0, 0, "", 0, "", 0, "", "", "", "", "", "", "", false, "", 0, 0, "")
		},
		convert.FlowPackets: func() {
			mb.RecordEbpfnetFlowPacketsDataPoint(ts, 0, 0, "", 0, "", 0, "", "", "", "", "", "", "", false, "", 0, 0, "")
		},
		convert.ConnsOpened: func() {
			mb.RecordEbpfnetTCPConnectionsOpenedDataPoint(ts, 0, 0, "", 0, "", "", "", "", "", "", "", false, "")
		},
		convert.ConnsClosed: func() {
			mb.RecordEbpfnetTCPConnectionsClosedDataPoint(ts, 0, 0, 0, "", 0, "", "", "", "", "", "", "", false, "")
		},
		convert.Retransmits: func() {
			mb.RecordEbpfnetTCPRetransmitsDataPoint(ts, 0, 0, "", 0, "", "", "", "", "", "", "", false, "")
		},
		convert.ResetsReceived: func() {
			mb.RecordEbpfnetTCPResetsReceivedDataPoint(ts, 0, 0, "", 0, "", "", "", "", "", "", "", false, "")
		},
		convert.ResetsSent: func() {
			mb.RecordEbpfnetTCPResetsSentDataPoint(ts, 0, 0, "", "", 0, "", "", "", "", "", "", "", false, "")
		},
		convert.DropPackets: func() {
			mb.RecordEbpfnetPacketsDroppedDataPoint(ts, 0, "", 0, "", 0, "", 0, "", "", "", "", "", "", "", false, "", 0, "")
		},
		convert.PolicyFlows: func() {
			mb.RecordEbpfnetPolicyFlowsDataPoint(ts, 0, 0, 0, 0, "", 0, "", "", "", "", "", "", "", false, "")
		},
		convert.PolicyIO: func() {
			mb.RecordEbpfnetPolicyIoDataPoint(ts, 0, 0, 0, 0, "", 0, "", "", "", "", "", "", "", false, "")
		},
		convert.DropBytes: func() {
			mb.RecordEbpfnetBytesDroppedDataPoint(ts, 0, "", 0, "", 0, "", 0, "", "", "", "", "", "", "", false, "", 0, "")
		},
		convert.Uncounted:          func() { mb.RecordEbpfnetPacketsUncountedDataPoint(ts, 0, 0) },
		convert.ConnsUnreported:    func() { mb.RecordEbpfnetConnectionsUnreportedDataPoint(ts, 0, 0) },
		convert.StateChangesMissed: func() { mb.RecordEbpfnetTCPStateChangesMissedDataPoint(ts, 0) },
		convert.TableFlows:         func() { mb.RecordEbpfnetFlowTableFlowsDataPoint(ts, 0) },
		convert.TableCapacity:      func() { mb.RecordEbpfnetFlowTableCapacityDataPoint(ts, 0) },
		convert.SeriesEvicted:      func() { mb.RecordEbpfnetSeriesEvictedDataPoint(ts, 0) },
	}
}

func def(m pmetric.Metric) convert.MetricDef {
	return convert.MetricDef{Name: m.Name(), Description: m.Description(), Unit: m.Unit()}
}

//go:embed histograms.yaml
var histogramsYAML []byte

// histogramFile is histograms.yaml: metric definitions in metadata.yaml's form.
type histogramFile struct {
	Histograms map[string]struct {
		Description string `json:"description"`
		Unit        string `json:"unit"`
		Histogram   struct {
			Bounds []float64 `json:"bucket_boundaries"`
		} `json:"histogram"`
		Attributes []string `json:"attributes"`
	} `json:"histograms"`
}

func histogramDefs() (map[string]convert.MetricDef, error) {
	var f histogramFile
	if err := yaml.Unmarshal(histogramsYAML, &f); err != nil {
		return nil, fmt.Errorf("histograms.yaml: %w", err)
	}
	out := make(map[string]convert.MetricDef, len(f.Histograms))
	for name, h := range f.Histograms {
		out[name] = convert.MetricDef{Name: name, Description: h.Description, Unit: h.Unit, Bounds: h.Histogram.Bounds}
	}
	return out, nil
}
