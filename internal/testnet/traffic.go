package testnet

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"
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
func UDPSend(client, server *Netns, dst netip.AddrPort, count, size int) (srcPort uint16, err error) {
	var pc net.PacketConn
	if err := inNS(server, func() (err error) {
		pc, err = net.ListenPacket("udp", dst.String())
		return err
	}); err != nil {
		return 0, err
	}
	defer pc.Close()
	var conn net.Conn
	if err := inNS(client, func() (err error) {
		conn, err = net.Dial("udp", dst.String())
		return err
	}); err != nil {
		return 0, err
	}
	defer conn.Close()
	buf := make([]byte, size)
	for i := 0; i < count; i++ {
		if _, err := conn.Write(buf); err != nil {
			return 0, err
		}
	}
	rb := make([]byte, size+1)
	_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i := 0; i < count; i++ {
		if _, _, err := pc.ReadFrom(rb); err != nil {
			return 0, fmt.Errorf("received %d of %d datagrams: %w", i, count, err)
		}
	}
	return uint16(conn.LocalAddr().(*net.UDPAddr).Port), nil
}

func inNS(ns *Netns, fn func() error) error {
	if ns == nil {
		return fn()
	}
	return ns.Do(fn)
}
