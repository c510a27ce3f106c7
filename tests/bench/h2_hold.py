#!/usr/bin/env python3
"""h2_hold: holds HTTP/2 connections (mTLS, ALPN h2) open for tests/bench/h2.sh's memory figures.

  h2_hold.py PORT CERT KEY CA N

Opens N connections, each: TLS 1.3 handshake with a client certificate, the HTTP/2 preface and an
empty SETTINGS, the server's SETTINGS acknowledged; PINGs are answered, everything else read and
dropped. Prints "held N" once all are up (a connection the server refused or closed is counted
and opened again, up to 3 tries). Then it reads commands on stdin, one a line:

  streams C M PATH   on each of the first C connections, M more GET PATH streams (END_STREAM):
                     streams that stay open while the upstream does not answer; prints
                     "streams K answered A reset R goaway G" once sent
  count              prints "open N answered A reset R goaway G"

and stops at end of input. Standard library only: HPACK for four fields is a few bytes by hand.
Not part of the product."""
import asyncio
import ssl
import struct
import sys

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def literal(index, value):
    # Literal header field without indexing, indexed name (RFC 7541 6.2.2), no Huffman.
    v = value.encode()
    assert index < 15 and len(v) < 127
    return bytes([index, len(v)]) + v


def headers_block(path):
    # :method GET (static 2), :scheme https (static 7), :path (name 4), :authority (name 1)
    return b"\x82\x87" + literal(4, path) + literal(1, "localhost")


class Conn:
    def __init__(self):
        self.reader = self.writer = None
        self.next_stream = 1
        self.open = False


stats = {"answered": 0, "reset": 0, "goaway": 0}


async def read_loop(c):
    try:
        while True:
            head = await c.reader.readexactly(9)
            length = int.from_bytes(head[:3], "big")
            ftype, flags = head[3], head[4]
            payload = await c.reader.readexactly(length) if length else b""
            if ftype == 4 and not flags & 1:      # SETTINGS: acknowledge
                c.writer.write(frame(4, 1, 0))
            elif ftype == 6 and not flags & 1:    # PING: answer
                c.writer.write(frame(6, 1, 0, payload))
            elif ftype == 1:                      # HEADERS: an answer came
                stats["answered"] += 1
            elif ftype == 3:                      # RST_STREAM
                stats["reset"] += 1
            elif ftype == 7:                      # GOAWAY
                stats["goaway"] += 1
    except (asyncio.IncompleteReadError, ConnectionError, OSError, ssl.SSLError):
        pass
    c.open = False


async def connect(port, ctx, c):
    for _ in range(3):
        try:
            c.reader, c.writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                               server_hostname="localhost")
            if c.writer.get_extra_info("ssl_object").selected_alpn_protocol() != "h2":
                sys.exit("h2_hold: the server did not choose h2")
            c.writer.write(PREFACE + frame(4, 0, 0))
            await c.writer.drain()
            c.open = True
            asyncio.get_running_loop().create_task(read_loop(c))
            return
        except (ConnectionError, OSError, ssl.SSLError, asyncio.TimeoutError):
            await asyncio.sleep(0.1)


async def main():
    port, cert, key, ca, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2"])
    conns = [Conn() for _ in range(n)]
    # 50 handshakes at a time: the servers' accept queues and the client's CPU stay reasonable.
    for i in range(0, n, 50):
        await asyncio.gather(*(connect(int(port), ctx, c) for c in conns[i:i + 50]))
    await asyncio.sleep(0.3)  # the SETTINGS acknowledgements are out
    print(f"held {sum(c.open for c in conns)}", flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        words = line.split()
        if words and words[0] == "streams":
            nconns, per, path = int(words[1]), int(words[2]), words[3]
            block = headers_block(path)
            sent = 0
            for c in conns[:nconns]:
                if not c.open:
                    continue
                for _ in range(per):
                    c.writer.write(frame(1, 0x5, c.next_stream, block))  # END_STREAM | END_HEADERS
                    c.next_stream += 2
                    sent += 1
            await asyncio.gather(*(c.writer.drain() for c in conns[:nconns] if c.open),
                                 return_exceptions=True)
            print(f"streams {sent} " + " ".join(f"{k} {v}" for k, v in stats.items()), flush=True)
        elif words and words[0] == "count":
            print(f"open {sum(c.open for c in conns)} " + " ".join(f"{k} {v}" for k, v in stats.items()),
                  flush=True)
    for c in conns:
        if c.writer:
            c.writer.close()


asyncio.run(main())
