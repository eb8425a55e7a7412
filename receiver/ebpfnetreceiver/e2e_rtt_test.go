package ebpfnetreceiver

import (
	"context"
	"math"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/ebpfnet/ebpfnet/internal/testnet"
	"github.com/ebpfnet/ebpfnet/receiver/ebpfnetreceiver/internal/metadata"
)

var ssRTT = regexp.MustCompile(`rtt:([0-9.]+)/`)

// ssSRTT returns the kernel's smoothed RTT of the connection from `ss -ti`.
func ssSRTT(t *testing.T, ns *testnet.Netns, local, remote netip.AddrPort) time.Duration {
	out, err := ns.Exec("ss", "-tinH", "src", local.String(), "dst", remote.String())
	require.NoError(t, err)
	m := ssRTT.FindStringSubmatch(out)
	require.NotNil(t, m, "ss output: %s", out)
	ms, err := strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)
	return time.Duration(ms * float64(time.Millisecond))
}

type flowRecord struct {
	observed  time.Time
	direction string
	rtt       float64
	trace     pcommon.TraceID
	span      pcommon.SpanID
	src       netip.AddrPort // the flow's source (recordsOf's src)
}

// recordsOf returns the flow records of the TCP flow src -> dst.
func recordsOf(all []plog.Logs, src, dst netip.AddrPort) []flowRecord {
	var out []flowRecord
	for _, ld := range all {
		for i := 0; i < ld.ResourceLogs().Len(); i++ {
			sls := ld.ResourceLogs().At(i).ScopeLogs()
			for j := 0; j < sls.Len(); j++ {
				lrs := sls.At(j).LogRecords()
				for k := 0; k < lrs.Len(); k++ {
					lr := lrs.At(k)
					a := lr.Attributes()
					sa, _ := a.Get("source.address")
					sp, _ := a.Get("source.port")
					da, _ := a.Get("destination.address")
					dp, _ := a.Get("destination.port")
					if sa.Str() != src.Addr().String() || sp.Int() != int64(src.Port()) || da.Str() != dst.Addr().String() || dp.Int() != int64(dst.Port()) {
						continue
					}
					dir, _ := a.Get("network.io.direction")
					r := flowRecord{observed: lr.ObservedTimestamp().AsTime(), direction: dir.Str(), trace: lr.TraceID(), span: lr.SpanID(), src: src}
					if v, ok := a.Get("ebpfnet.tcp.rtt"); ok {
						r.rtt = v.Double()
					}
					out = append(out, r)
				}
			}
		}
	}
	return out
}

// TestEndToEndLiveConnectionRTTAndTraceContext: a connection that stays
// open is reported every interval: its flow records carry the smoothed RTT,
// which matches the kernel's own (`ss -ti`), and the trace and span ID of
// the span it gets at close.
func TestEndToEndLiveConnectionRTTAndTraceContext(t *testing.T) {
	node := testnet.NewNode(t, 14)
	p1 := node.AddPod(t, 2)
	p2 := node.AddPod(t, 3)
	cfg := testConfig(node.ID)
	cfg.Interval = 500 * time.Millisecond
	f := NewFactory()
	set := receivertest.NewNopSettings(metadata.Type)
	logs, traces := new(consumertest.LogsSink), new(consumertest.TracesSink)
	lr, err := f.CreateLogs(context.Background(), set, cfg, logs)
	require.NoError(t, err)
	tr, err := f.CreateTraces(context.Background(), set, cfg, traces)
	require.NoError(t, err)
	require.NoError(t, lr.Start(context.Background(), componenttest.NewNopHost()))
	require.NoError(t, tr.Start(context.Background(), componenttest.NewNopHost()))
	t.Cleanup(func() {
		_ = lr.Shutdown(context.Background())
		_ = tr.Shutdown(context.Background())
	})

	server := netip.AddrPortFrom(p2.IPv4, 7000)
	ln, err := testnet.ListenTCP(p2.NS, server)
	require.NoError(t, err)
	var conn net.Conn
	require.NoError(t, p1.NS.Do(func() (err error) {
		conn, err = net.Dial("tcp", server.String())
		return err
	}))
	client := netip.MustParseAddrPort(conn.LocalAddr().String())

	// Steady small writes for 3 s; compare RTTs while the connection is open.
	var compared int
	stop := time.Now().Add(3 * time.Second)
	for time.Now().Before(stop) {
		_, err := conn.Write(make([]byte, 100))
		require.NoError(t, err)
		time.Sleep(5 * time.Millisecond)
	}
	// The newest record of the open connection against ss right now.
	require.Eventually(t, func() bool { return len(recordsOf(logs.AllLogs(), client, server)) > 2 }, 5*time.Second, 50*time.Millisecond)
	// Compare at one instant: right after a drain, one write; once it is
	// acknowledged no RTT sample can change srtt until the next write, so
	// `ss` now and the record of this interval must agree.
	// A UDP heartbeat (another flow) gives every interval a record, so that
	// each drain can be seen.
	var hb net.Conn
	require.NoError(t, p2.NS.Do(func() (err error) {
		hb, err = net.Dial("udp", netip.AddrPortFrom(p1.IPv4, 9).String())
		return err
	}))
	hbStop := make(chan struct{})
	defer close(hbStop)
	go func() {
		for {
			select {
			case <-hbStop:
				hb.Close()
				return
			case <-time.After(20 * time.Millisecond):
				_, _ = hb.Write([]byte("tick"))
			}
		}
	}()
	waitDrain := func() {
		n := len(logs.AllLogs())
		require.Eventually(t, func() bool { return len(logs.AllLogs()) > n }, 5*time.Second, 5*time.Millisecond)
	}
	raced := 0
	for attempt := 0; compared < 5 && attempt < 15; attempt++ {
		waitDrain()
		before := ssSRTT(t, p1.NS, client, server)
		_, err := conn.Write(make([]byte, 100))
		require.NoError(t, err)
		time.Sleep(100 * time.Millisecond) // ACK received (delayed ACKs wait at most 40 ms)
		kernel := ssSRTT(t, p1.NS, client, server)
		waitDrain()
		// The client pod's view (the client socket's RTT): its data
		// (transmit) and the ACKs (receive). The newest record is from a
		// drain after the ACK was counted.
		var got time.Duration
		var newest time.Time
		all := logs.AllLogs()
		for _, r := range append(recordsOf(all, client, server), recordsOf(all, server, client)...) {
			view := (r.direction == "transmit") == (r.src == client)
			if view && !r.observed.Before(newest) {
				newest, got = r.observed, time.Duration(r.rtt*float64(time.Second))
			}
		}
		require.NotZero(t, got, "flow records of an open connection carry its RTT")
		tol := func(d time.Duration) float64 { return math.Max(0.1*float64(d), float64(50*time.Microsecond)) }
		if math.Abs(float64(got-kernel)) > tol(kernel) {
			// The one race allowed: the drain ran after tc counted the ACK
			// but before the socket processed it, so the record holds the
			// srtt from before this write, and no later packet of the flow
			// gives a newer record.
			require.InDeltaf(t, float64(before), float64(got), tol(before),
				"exported srtt %s, ss says %s now and %s before the write", got, kernel, before)
			raced++
			continue
		}
		compared++
	}
	require.Equal(t, 5, compared, "%d of the comparisons raced an ACK", raced)
	conn.Close()
	ln.Close()

	// At close, the spans: the flow records carried their IDs all along,
	// the client pod's view (transmit) the client span's, the server pod's
	// view (receive) the server span's.
	var clientTrace pcommon.TraceID
	var clientSpan, serverSpan pcommon.SpanID
	require.Eventually(t, func() bool {
		for _, s := range collectSpans(traces) {
			if sattr(s.span, "client.address") != client.Addr().String() || iattr(s.span, "client.port") != int64(client.Port()) {
				continue
			}
			if s.span.Kind() == ptrace.SpanKindClient {
				clientTrace, clientSpan = s.span.TraceID(), s.span.SpanID()
			} else {
				serverSpan = s.span.SpanID()
			}
		}
		return !clientSpan.IsEmpty() && !serverSpan.IsEmpty()
	}, 10*time.Second, 100*time.Millisecond)
	recs := recordsOf(logs.AllLogs(), client, server)
	require.NotEmpty(t, recs)
	views := map[string]int{}
	for _, r := range recs {
		require.Equal(t, clientTrace, r.trace)
		if r.direction == "transmit" {
			require.Equal(t, clientSpan, r.span)
		} else {
			require.Equal(t, serverSpan, r.span)
		}
		views[r.direction]++
	}
	require.NotZero(t, views["transmit"])
	require.NotZero(t, views["receive"])
	t.Logf("compared RTT %d times (%d raced an ACK); %d flow records carry trace %s", compared, raced, len(recs), clientTrace)
}
