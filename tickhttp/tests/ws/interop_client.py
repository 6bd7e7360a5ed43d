"""An independent WebSocket client (the `websockets` package) against tickhttp's echo test
server. Usage: interop_client.py ws://127.0.0.1:PORT

Prints one line per check passed ("ok NAME") and exits 1 at the first failure. The server
has /ws (echo, 1 MiB messages, 64 KiB frames; "close-me" makes it close with 4000) and
/proto (echo, subprotocols chat.v2 and chat.v1).
"""

import asyncio
import sys

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
import websockets.asyncio.client

BASE = sys.argv[1]
TIMEOUT = 10


def check(name, cond, detail=""):
    if not cond:
        print(f"FAILED {name} {detail}", flush=True)
        sys.exit(1)
    print(f"ok {name}", flush=True)


def closed_by_server(ws):
    """Reads until the server closes; returns the close frame it sent."""
    try:
        while True:
            ws.recv(timeout=TIMEOUT)
    except ConnectionClosed as e:
        return e.rcvd


def main():
    with connect(f"{BASE}/ws", open_timeout=TIMEOUT, max_size=4 * 1024 * 1024) as ws:
        ws.send("hello, ünïcødé ✓")
        check("text echo", ws.recv(timeout=TIMEOUT) == "hello, ünïcødé ✓")
        data = bytes(range(256)) * 4
        ws.send(data)
        check("binary echo", ws.recv(timeout=TIMEOUT) == data)
        ws.send("")
        check("empty text", ws.recv(timeout=TIMEOUT) == "")
        ws.send(b"")
        check("empty binary", ws.recv(timeout=TIMEOUT) == b"")
        # A message sent as three fragments comes back whole.
        ws.send(["frag", "mented ", "text"])
        check("fragmented send", ws.recv(timeout=TIMEOUT) == "fragmented text")
        # 300 KiB, sent in 32 KiB fragments (one frame over the server's 64 KiB frame limit
        # would be refused), comes back whole (in the server's own fragments).
        big = "".join(chr(ord("a") + i % 26) for i in range(300 * 1024))
        ws.send([big[i:i + 32 * 1024] for i in range(0, len(big), 32 * 1024)])
        check("fragmented echo", ws.recv(timeout=TIMEOUT) == big)
        # A ping with a payload is answered.
        pong = ws.ping(b"are you there")
        check("ping answered", pong.wait(TIMEOUT))
        # Pipelined messages keep their order.
        for i in range(100):
            ws.send(f"n{i}")
        got = [ws.recv(timeout=TIMEOUT) for _ in range(100)]
        check("order kept", got == [f"n{i}" for i in range(100)], got[:5])
        ws.close(code=4001, reason="bye from python")
        # The server answers with the same code.
        check("client close answered", ws.close_code == 4001, ws.close_code)

    with connect(f"{BASE}/ws", open_timeout=TIMEOUT) as ws:
        ws.send("close-me")
        rcvd = closed_by_server(ws)
        check("server close 4000", rcvd is not None and rcvd.code == 4000 and rcvd.reason == "asked",
              rcvd)

    with connect(f"{BASE}/ws", open_timeout=TIMEOUT) as ws:
        ws.send("y" * (2 * 1024 * 1024))
        rcvd = closed_by_server(ws)
        check("too big closes 1009", rcvd is not None and rcvd.code == 1009, rcvd)

    with connect(f"{BASE}/proto", subprotocols=["other", "chat.v1"], open_timeout=TIMEOUT) as ws:
        check("subprotocol", ws.subprotocol == "chat.v1", ws.subprotocol)
        ws.send("with protocol")
        check("echo with protocol", ws.recv(timeout=TIMEOUT) == "with protocol")

    asyncio.run(concurrent_clients(50, 20))


async def concurrent_clients(clients, messages):
    """Many asyncio clients at once, interleaving their messages."""

    async def one(n):
        async with websockets.asyncio.client.connect(f"{BASE}/ws", open_timeout=TIMEOUT) as ws:
            for i in range(messages):
                await ws.send(f"client {n} message {i}")
                reply = await asyncio.wait_for(ws.recv(), TIMEOUT)
                if reply != f"client {n} message {i}":
                    return False
            return True

    results = await asyncio.gather(*(one(n) for n in range(clients)))
    check(f"{clients} concurrent asyncio clients", all(results), results.count(False))


if __name__ == "__main__":
    main()
