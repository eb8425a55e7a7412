#!/bin/bash
# Which drop reasons does this node produce with nothing wrong? Traces the
# kernel's own kfree_skb tracepoint (a tracefs instance) idle for 60 s, then
# busy for 50 s (iperf3 TCP x4 + UDP 200 Mbit/s between two namespaces,
# connection churn), and counts the reasons. Run as root; README "Drops"
# has the result the default drops.ignore_reasons was chosen from.
set -u
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing
T=/sys/kernel/tracing/instances/dropmeasure; rmdir $T 2>/dev/null; mkdir $T
echo 8192 > $T/buffer_size_kb
echo 1 > $T/events/skb/kfree_skb/enable
sleep 60
echo "== idle 60 s"; grep -o "reason: [A-Z_0-9]*" $T/trace | sort | uniq -c | sort -rn
echo > $T/trace
# busy: two namespaces, iperf3 TCP, connection churn, UDP
ip netns add mA; ip netns add mB
ip link add mvA netns mA type veth peer name mvB netns mB
ip -n mA addr add 10.78.0.1/24 dev mvA; ip -n mB addr add 10.78.0.2/24 dev mvB
for n in mA mB; do ip -n $n link set lo up; done; ip -n mA link set mvA up; ip -n mB link set mvB up
ip netns exec mB iperf3 -s -D -p 5201 ; ip netns exec mB iperf3 -s -D -p 5202; sleep 1
ip netns exec mA iperf3 -c 10.78.0.2 -p 5201 -t 50 -P 4 >/dev/null &
ip netns exec mA iperf3 -c 10.78.0.2 -p 5202 -u -b 200M -t 50 >/dev/null &
ip netns exec mB python3 -c "
import socket,threading
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); s.bind(('10.78.0.2',8080)); s.listen(512)
while True:
  c,_=s.accept(); c.recv(100); c.send(b'HTTP/1.0 200 OK\r\n\r\nok'); c.close()" &
P=$!
sleep 0.5
ip netns exec mA python3 -c "
import socket,time
t=time.time()
while time.time()-t<50:
  c=socket.create_connection(('10.78.0.2',8080)); c.send(b'GET / HTTP/1.0\r\n\r\n'); c.recv(100); c.close()"
wait %1 %2 2>/dev/null
kill $P
echo "== busy 50 s (iperf3 TCP x4 + UDP 200M + connection churn)"; grep -o "reason: [A-Z_0-9]*" $T/trace | sort | uniq -c | sort -rn
echo 0 > $T/events/skb/kfree_skb/enable; rmdir $T
pkill -f "iperf3 -s -D"; ip netns del mA; ip netns del mB
