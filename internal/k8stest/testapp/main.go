// Command testapp is the workload of the test node's pods (built locally):
//
//	testapp server            TCP on :8080: reads a request line "<n>\n", answers n bytes, closes;
//	                          UDP on :5353: echoes every datagram
//	testapp client TCP UDP N  every 200 ms, one TCP connection to TCP (host:port) asking for N
//	                          bytes, and one UDP datagram of up to N bytes to UDP; logs each result
//	testapp resolve WAIT ROUNDS NAME...
//	                          after WAIT, ROUNDS times every 200 ms, looks up each NAME through the
//	                          Go resolver (the pod's resolv.conf); logs each result, then "done"
//
// The client keeps no state: what it did is in its log (one line per
// request), which tests read through the API server.
package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	if len(os.Args) >= 2 && os.Args[1] == "server" {
		serve()
		return
	}
	if len(os.Args) == 5 && os.Args[1] == "client" {
		n, err := strconv.Atoi(os.Args[4])
		if err == nil {
			client(os.Args[2], os.Args[3], n)
			return
		}
	}
	if len(os.Args) >= 5 && os.Args[1] == "resolve" {
		wait, err := time.ParseDuration(os.Args[2])
		rounds, err2 := strconv.Atoi(os.Args[3])
		if err == nil && err2 == nil {
			resolve(wait, rounds, os.Args[4:])
			return
		}
	}
	fmt.Fprintln(os.Stderr, "usage: testapp server | testapp client TCP-ADDR UDP-ADDR N | testapp resolve WAIT ROUNDS NAME...")
	os.Exit(2)
}

func serve() {
	ln, err := net.Listen("tcp", ":8080")
	if err != nil {
		fatal(err)
	}
	pc, err := net.ListenPacket("udp", ":5353")
	if err != nil {
		fatal(err)
	}
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				fatal(err)
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			fatal(err)
		}
		go answer(c)
	}
}

// answer reads "<n>\n" and writes n bytes.
func answer(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return
	}
	n, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || n < 0 || n > 1<<24 {
		return
	}
	_, _ = c.Write(make([]byte, n))
}

func client(tcpAddr, udpAddr string, n int) {
	for i := 0; ; i++ {
		start := time.Now()
		got, err := request(tcpAddr, n)
		fmt.Printf("tcp %d sent=%d received=%d err=%v ms=%d\n", i, len(strconv.Itoa(n))+1, got, err, time.Since(start).Milliseconds())
		sent, echoed, err := datagram(udpAddr, n)
		fmt.Printf("udp %d sent=%d received=%d err=%v\n", i, sent, echoed, err)
		time.Sleep(200 * time.Millisecond)
	}
}

// resolve looks names up, then idles (the pod stays Running: its log is
// read after).
func resolve(wait time.Duration, rounds int, names []string) {
	time.Sleep(wait)
	r := &net.Resolver{PreferGo: true}
	for i := 0; i < rounds; i++ {
		for _, name := range names {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			addrs, err := r.LookupHost(ctx, name)
			cancel()
			fmt.Printf("dns %d %s addrs=%v err=%v\n", i, name, addrs, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	fmt.Println("done")
	for {
		time.Sleep(time.Hour)
	}
}

func request(addr string, n int) (int64, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "%d\n", n); err != nil {
		return 0, err
	}
	return io.Copy(io.Discard, c)
}

func datagram(addr string, n int) (int, int, error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	sent, err := c.Write(make([]byte, min(n, 1200)))
	if err != nil {
		return sent, 0, err
	}
	buf := make([]byte, 65536)
	got, err := c.Read(buf)
	return sent, got, err
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "testapp:", err)
	os.Exit(1)
}
