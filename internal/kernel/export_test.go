package kernel

// MaxIPv6ExtForTest mirrors MAX_IPV6_EXT in bpf/flow.h.
const MaxIPv6ExtForTest = 6
