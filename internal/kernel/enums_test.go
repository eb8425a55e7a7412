package kernel

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ebpfnet/ebpfnet/internal/flow"
)

// TestModelEnumsMatchKernel holds the model's enums equal to the values the
// BPF programs write (bpf2go's constants from bpf/types.h): the decode
// converts by value.
func TestModelEnumsMatchKernel(t *testing.T) {
	reasons := map[flow.Reason]ebpfnetCounterReason{
		flow.ReasonNonIP:             ebpfnetCounterReasonCOUNTER_NON_IP,
		flow.ReasonTruncated:         ebpfnetCounterReasonCOUNTER_TRUNCATED,
		flow.ReasonMalformed:         ebpfnetCounterReasonCOUNTER_MALFORMED,
		flow.ReasonFragment:          ebpfnetCounterReasonCOUNTER_FRAGMENT,
		flow.ReasonMapFull:           ebpfnetCounterReasonCOUNTER_MAP_FULL,
		flow.ReasonDedupUplink:       ebpfnetCounterReasonCOUNTER_DEDUP_UPLINK,
		flow.ReasonExtHdrLimit:       ebpfnetCounterReasonCOUNTER_EXT_HDR_LIMIT,
		flow.ReasonNonlinear:         ebpfnetCounterReasonCOUNTER_NONLINEAR,
		flow.ReasonConnStateFull:     ebpfnetCounterReasonCOUNTER_CONN_STATE_FULL,
		flow.ReasonConnEventsFull:    ebpfnetCounterReasonCOUNTER_CONN_EVENTS_FULL,
		flow.ReasonStateChangeMissed: ebpfnetCounterReasonCOUNTER_STATE_CHANGE_MISSED,
		flow.ReasonDialedFull:        ebpfnetCounterReasonCOUNTER_DIALED_FULL,
		flow.ReasonDropsFull:         ebpfnetCounterReasonCOUNTER_DROPS_FULL,
		flow.ReasonDropsMissed:       ebpfnetCounterReasonCOUNTER_DROPS_MISSED,
		flow.ReasonDNSPendingFull:    ebpfnetCounterReasonCOUNTER_DNS_PENDING_FULL,
		flow.ReasonDNSEventsFull:     ebpfnetCounterReasonCOUNTER_DNS_EVENTS_FULL,
	}
	require.Len(t, reasons, int(ebpfnetCounterReasonCOUNTER_MAX), "every kernel reason has a model reason")
	require.Equal(t, int(ebpfnetCounterReasonCOUNTER_MAX), flow.NumReasons)
	for m, k := range reasons {
		require.Equal(t, uint32(k), uint32(m), "reason %d", m)
	}
	require.EqualValues(t, ebpfnetFlowDirectionFLOW_TRANSMIT, flow.Transmit)
	require.EqualValues(t, ebpfnetFlowDirectionFLOW_RECEIVE, flow.Receive)
	require.EqualValues(t, ebpfnetDropKindDROP_PACKET, flow.DropPacket)
	require.EqualValues(t, ebpfnetDropKindDROP_RESET_NOSOCK, flow.DropResetNoSocket)
	require.EqualValues(t, ebpfnetDnsSideDNS_SIDE_CLIENT, flow.DNSClient)
	require.EqualValues(t, ebpfnetDnsSideDNS_SIDE_SERVER, flow.DNSServer)
	require.EqualValues(t, ebpfnetConnRoleROLE_CLIENT, flow.Client)
	require.EqualValues(t, ebpfnetConnRoleROLE_SERVER, flow.Server)
	results := map[flow.Result]ebpfnetConnResult{
		flow.Closed: ebpfnetConnResultRESULT_CLOSED, flow.Refused: ebpfnetConnResultRESULT_REFUSED,
		flow.TimedOut: ebpfnetConnResultRESULT_TIMED_OUT, flow.Unreachable: ebpfnetConnResultRESULT_UNREACHABLE,
		flow.FailedOther: ebpfnetConnResultRESULT_FAILED_OTHER, flow.Reset: ebpfnetConnResultRESULT_RESET,
		flow.NotEstablished: ebpfnetConnResultRESULT_NOT_ESTABLISHED,
	}
	for m, k := range results {
		require.Equal(t, uint32(k), uint32(m), "result %s", m)
	}
}
