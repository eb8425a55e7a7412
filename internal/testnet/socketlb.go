package testnet

import (
	"encoding/binary"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// SocketLB loads a test-only cgroup sock_addr program that does what a
// socket-level load balancer (Cilium's socket LB) does: at attach
// (cgroup/connect4: connect(); cgroup/sendmsg4: each UDP sendto) an IPv4
// service address is rewritten to backend, so the socket never sees the
// Service. The caller attaches it to a cgroup and closes it.
func SocketLB(attach ebpf.AttachType, service, backend netip.AddrPort) (*ebpf.Program, error) {
	ip := func(a netip.Addr) int32 { b := a.As4(); return int32(binary.LittleEndian.Uint32(b[:])) }
	port := func(p uint16) int32 { return int32(binary.LittleEndian.Uint32([]byte{byte(p >> 8), byte(p), 0, 0})) }
	const userIP4, userPort = 4, 24 // offsets in struct bpf_sock_addr
	return ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.CGroupSockAddr, AttachType: attach, License: "GPL",
		Instructions: asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, userIP4, asm.Word),
			asm.JNE.Imm32(asm.R2, ip(service.Addr()), "out"),
			asm.LoadMem(asm.R2, asm.R1, userPort, asm.Word),
			asm.JNE.Imm32(asm.R2, port(service.Port()), "out"),
			asm.StoreImm(asm.R1, userIP4, int64(ip(backend.Addr())), asm.Word),
			asm.StoreImm(asm.R1, userPort, int64(port(backend.Port())), asm.Word),
			asm.Mov.Imm(asm.R0, 1).WithSymbol("out"),
			asm.Return(),
		},
	})
}
