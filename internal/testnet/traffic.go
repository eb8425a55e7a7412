package testnet

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// TCPTransfer sends n bytes over one TCP connection from client to
// server:port (the server listens in its namespace) and waits until the
// server read all of them and both sides closed. A nil namespace is the
// test's own (the node).
func TCPTransfer(client, server *Netns, dst netip.AddrPort, n int) error {
	var ln net.Listener
	if err := inNS(server, func() (err error) {
		ln, err = net.Listen("tcp", dst.String())
		return err
	}); err != nil {
		return err
	}
	defer ln.Close()
	var wg sync.WaitGroup
	var got int64
	var srvErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			srvErr = err
			return
		}
		defer c.Close()
		got, srvErr = io.Copy(io.Discard, c)
	}()
	var conn net.Conn
	if err := inNS(client, func() (err error) {
		conn, err = net.DialTimeout("tcp", dst.String(), 5*time.Second)
		return err
	}); err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	for left := n; left > 0; {
		k := min(left, len(buf))
		if _, err := conn.Write(buf[:k]); err != nil {
			conn.Close()
			return err
		}
		left -= k
	}
	conn.Close()
	wg.Wait()
	if srvErr != nil {
		return srvErr
	}
	if got != int64(n) {
		return fmt.Errorf("server read %d bytes, want %d", got, n)
	}
	return nil
}

// UDPSend sends count datagrams of size bytes from client to dst and waits
// until the server received them all (UDP on a quiet veth does not drop).
// The client socket is connect()ed before it is bound (net.Dial).
func UDPSend(client, server *Netns, dst netip.AddrPort, count, size int) (srcPort uint16, err error) {
	return UDPSendVia(client, server, dst, dst, count, size)
}

// UDPSendVia is UDPSend to dst with the server listening on listen: a
// socket-level load balancer sends what the client addresses to dst there.
func UDPSendVia(client, server *Netns, dst, listen netip.AddrPort, count, size int) (srcPort uint16, err error) {
	var pc net.PacketConn
	if err := inNS(server, func() (err error) {
		pc, err = net.ListenPacket("udp", listen.String())
		return err
	}); err != nil {
		return 0, err
	}
	defer pc.Close()
	conn, err := udpWrite(client, dst, count, size)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	rb := make([]byte, size+1)
	_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i := 0; i < count; i++ {
		if _, _, err := pc.ReadFrom(rb); err != nil {
			return 0, fmt.Errorf("received %d of %d datagrams: %w", i, count, err)
		}
	}
	return uint16(conn.LocalAddr().(*net.UDPAddr).Port), nil
}

// UDPSendOnly sends count datagrams of size bytes from client to dst,
// with nothing listening for them.
func UDPSendOnly(client *Netns, dst netip.AddrPort, count, size int) error {
	conn, err := udpWrite(client, dst, count, size)
	if err == nil {
		conn.Close()
	}
	return err
}

// udpWrite sends count datagrams of size bytes from a socket of client
// connected to dst, and returns the socket.
func udpWrite(client *Netns, dst netip.AddrPort, count, size int) (net.Conn, error) {
	var conn net.Conn
	if err := inNS(client, func() (err error) {
		conn, err = net.Dial("udp", dst.String())
		return err
	}); err != nil {
		return nil, err
	}
	buf := make([]byte, size)
	for i := 0; i < count; i++ {
		if _, err := conn.Write(buf); err != nil {
			conn.Close()
			return nil, err
		}
	}
	return conn, nil
}

func inNS(ns *Netns, fn func() error) error {
	if ns == nil {
		return fn()
	}
	return ns.Do(fn)
}

// Listener accepts TCP connections in a namespace and counts the bytes of
// each until it is closed.
type Listener struct {
	ln    net.Listener
	mu    sync.Mutex
	Bytes []int64 // bytes read per accepted connection, in accept order
	wg    sync.WaitGroup
}

// ListenTCP listens on addr in ns (nil: the test's own namespace).
func ListenTCP(ns *Netns, addr netip.AddrPort) (*Listener, error) {
	l := &Listener{}
	if err := inNS(ns, func() (err error) {
		l.ln, err = net.Listen("tcp", addr.String())
		return err
	}); err != nil {
		return nil, err
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			c, err := l.ln.Accept()
			if err != nil {
				return
			}
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				defer c.Close()
				n, _ := io.Copy(io.Discard, c)
				l.mu.Lock()
				l.Bytes = append(l.Bytes, n)
				l.mu.Unlock()
			}()
		}
	}()
	return l, nil
}

// Close stops accepting and waits for the open connections to finish.
func (l *Listener) Close() {
	l.ln.Close()
	l.wg.Wait()
}

// Dial opens a TCP connection from ns to dst, writes n bytes and closes it,
// waiting for the peer to close too. It returns the local port.
func Dial(ns *Netns, dst netip.AddrPort, n int, timeout time.Duration) (uint16, error) {
	var conn net.Conn
	if err := inNS(ns, func() (err error) {
		conn, err = net.DialTimeout("tcp", dst.String(), timeout)
		return err
	}); err != nil {
		return 0, err
	}
	defer conn.Close()
	port := uint16(conn.LocalAddr().(*net.TCPAddr).Port)
	if _, err := conn.Write(make([]byte, n)); err != nil {
		return port, err
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		return port, err
	}
	// Wait for the server's FIN, so that both sides close cleanly.
	_ = conn.SetReadDeadline(time.Now().Add(timeout))
	_, _ = io.Copy(io.Discard, conn)
	return port, nil
}

// SendFrames sends n raw Ethernet frames out of iface in ns (nil: the
// test's own namespace; an AF_PACKET socket: below the namespace's own
// stack) to the MAC dst. next returns frame i, given the previous frame's
// buffer to reuse.
func SendFrames(ns *Netns, iface string, dst net.HardwareAddr, n int, next func(i int, buf []byte) []byte) error {
	return inNS(ns, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		ifc, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		sa := &unix.SockaddrLinklayer{Ifindex: ifc.Index, Halen: 6}
		copy(sa.Addr[:], dst)
		var frame []byte
		for i := range n {
			frame = next(i, frame[:0])
			if err := unix.Sendto(fd, frame, 0, sa); err != nil {
				return fmt.Errorf("frame %d: %w", i, err)
			}
		}
		return nil
	})
}

// UDPFrame builds, in buf, an Ethernet/IPv4/UDP frame with an 18-byte payload.
func UDPFrame(buf []byte, srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, sport, dport uint16) []byte {
	buf = buf[:0]
	buf = append(buf, dstMAC...)
	buf = append(buf, srcMAC...)
	buf = append(buf, 0x08, 0x00)
	ip := len(buf)
	total := 20 + 8 + 18
	buf = append(buf, 0x45, 0, byte(total>>8), byte(total), 0, 0, 0x40, 0, 64, 17, 0, 0)
	s, d := src.As4(), dst.As4()
	buf = append(buf, s[:]...)
	buf = append(buf, d[:]...)
	var sum uint32
	for i := ip; i < ip+20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(buf[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(buf[ip+10:], ^uint16(sum))
	buf = binary.BigEndian.AppendUint16(buf, sport)
	buf = binary.BigEndian.AppendUint16(buf, dport)
	buf = append(buf, 0, 8+18, 0, 0) // length, no checksum
	return append(buf, make([]byte, 18)...)
}

// TCPSYNFrame builds an Ethernet/IPv4/TCP SYN frame into buf (reused),
// with valid IP and TCP checksums (a receiving stack checks them before it
// looks for a socket).
func TCPSYNFrame(buf []byte, srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, sport, dport uint16) []byte {
	buf = buf[:0]
	buf = append(buf, dstMAC...)
	buf = append(buf, srcMAC...)
	buf = append(buf, 0x08, 0x00)
	ip := len(buf)
	const total = 20 + 20
	buf = append(buf, 0x45, 0, 0, total, 0, 0, 0x40, 0, 64, 6, 0, 0)
	s, d := src.As4(), dst.As4()
	buf = append(buf, s[:]...)
	buf = append(buf, d[:]...)
	binary.BigEndian.PutUint16(buf[ip+10:], ^fold(sum16(buf[ip:ip+20], 0)))
	tcp := len(buf)
	buf = binary.BigEndian.AppendUint16(buf, sport)
	buf = binary.BigEndian.AppendUint16(buf, dport)
	buf = append(buf, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xfa, 0xf0, 0, 0, 0, 0) // seq 1, SYN, window 64240
	pseudo := sum16(s[:], 0)
	pseudo = sum16(d[:], pseudo) + 6 + 20
	binary.BigEndian.PutUint16(buf[tcp+16:], ^fold(sum16(buf[tcp:], pseudo)))
	return buf
}

// sum16 adds b as big-endian 16-bit words to sum.
func sum16(b []byte, sum uint32) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	return sum
}

func fold(sum uint32) uint16 {
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

// SendUDPFlows sends n UDP frames from pod p's eth0 to the node's bridge
// (AF_PACKET: counted on the pod's veth as the pod's transmit, then routed
// or dropped by the node), frame i to flow(i)'s destination and ports.
func (n *Node) SendUDPFlows(p *Pod, count int, flow func(i int) (dst netip.Addr, sport, dport uint16)) error {
	src, err := net.ParseMAC(p.MAC)
	if err != nil {
		return err
	}
	bridge, err := net.ParseMAC(n.bridgeMAC)
	if err != nil {
		return err
	}
	return SendFrames(p.NS, "eth0", bridge, count, func(i int, buf []byte) []byte {
		dst, sport, dport := flow(i)
		return UDPFrame(buf, src, bridge, p.IPv4, dst, sport, dport)
	})
}
