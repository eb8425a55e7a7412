package convert

import (
	"net/netip"

	"go.opentelemetry.io/collector/pdata/pcommon"
)

// putResource writes the attributes of the local endpoint's resource: a pod
// (by its address) or, for an invalid address, the node.
func putResource(m pcommon.Map, opts Options, local netip.Addr) {
	if opts.Resource.K8sNodeName && opts.NodeName != "" {
		m.PutStr(AttrK8sNodeName, opts.NodeName)
	}
	if local.IsValid() && opts.Resource.K8sPodIP {
		m.PutStr(AttrK8sPodIP, local.String())
	}
}

// putWorkloadResource adds what a socket's cgroup says (spans).
func putWorkloadResource(m pcommon.Map, opts Options, podUID, containerID string) {
	if podUID != "" && opts.Resource.K8sPodUID {
		m.PutStr(AttrK8sPodUID, podUID)
	}
	if containerID != "" && opts.Resource.ContainerID {
		m.PutStr(AttrContainerID, containerID)
	}
}
