package kernel

// MaxIPv6ExtForTest mirrors MAX_IPV6_EXT in bpf/flow.h.
const MaxIPv6ExtForTest = 6

// flowCacheWayBits mirrors FLOW_CACHE_WAY_BITS in bpf/maps.h.
const flowCacheWayBits = 4
