#!/usr/bin/env python3
"""Sends N requests to 127.0.0.1:PORT over C keep-alive connections, DEPTH per write
(pipelined), and checks every response arrives. Used by instructions.sh."""
import socket
import sys

port, total, depth, conns = (int(a) for a in sys.argv[1:5])
path = sys.argv[5] if len(sys.argv) > 5 else "/plaintext"
req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
per_conn = total // conns
done = 0
socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(conns)]
for s in socks:
    s.settimeout(60)
remaining = {s: per_conn for s in socks}
while remaining:
    for s in list(remaining):
        n = min(depth, remaining[s])
        s.sendall(req * n)
        buf = b""
        while buf.count(b"HTTP/1.1 200") < n or not buf.endswith(b"!") and not buf.endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                sys.exit("connection closed early")
            buf += chunk
        done += n
        remaining[s] -= n
        if remaining[s] == 0:
            del remaining[s]
            s.close()
print(done)
