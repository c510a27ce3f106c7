#!/usr/bin/env python3
"""A scriptable local service for integration tests: shows what the sidecar forwarded.

GET  /headers          -> JSON list of [name, value] pairs as received
POST /sink             -> reads the body (Content-Length or chunked), answers {"bytes": n, "sha256": h}
GET  /download?bytes=N -> N bytes (a repeating pattern), Content-Length framed
GET  /chunked?bytes=N  -> the same, chunked
GET  /slow?ms=N        -> waits N ms, then answers "slow done"
GET  /stall            -> never answers (until the test ends)
Other paths            -> "upstream" (200)
--idle-close-ms N closes keep-alive connections idle for N ms (to make pooled connections stale).
"""
import argparse
import hashlib
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

PATTERN = bytes(range(256)) * 256  # 64 KiB


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("upstream: " + (fmt % args) + "\n")

    def reply(self, status, body, ctype="text/plain"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def read_body(self):
        digest, total = hashlib.sha256(), 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                left = size
                while left:
                    chunk = self.rfile.read(min(left, 65536))
                    digest.update(chunk)
                    left -= len(chunk)
                    total += len(chunk)
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length", "0"))
            while left:
                chunk = self.rfile.read(min(left, 65536))
                if not chunk:
                    break
                digest.update(chunk)
                left -= len(chunk)
                total += len(chunk)
        return total, digest.hexdigest()

    def do_GET(self):
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path == "/headers":
            self.reply(200, json.dumps(list(self.headers.items())).encode(), "application/json")
        elif url.path == "/download":
            n = int(query["bytes"][0])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            while n:
                part = PATTERN[: min(n, len(PATTERN))]
                self.wfile.write(part)
                n -= len(part)
        elif url.path == "/chunked":
            n = int(query["bytes"][0])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            while n:
                part = PATTERN[: min(n, len(PATTERN))]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                n -= len(part)
            self.wfile.write(b"0\r\n\r\n")
        elif url.path == "/slow":
            time.sleep(int(query["ms"][0]) / 1000)
            self.reply(200, b"slow done")
        elif url.path == "/stall":
            time.sleep(3600)
        else:
            self.reply(200, b"upstream")

    def do_POST(self):
        total, digest = self.read_body()
        self.reply(200, json.dumps({"bytes": total, "sha256": digest}).encode(), "application/json")

    do_PUT = do_POST


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--idle-close-ms", type=int, default=0)
    args = ap.parse_args()
    if args.idle_close_ms:
        Handler.timeout = args.idle_close_ms / 1000
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print("ready", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
