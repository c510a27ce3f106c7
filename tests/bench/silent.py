#!/usr/bin/env python3
"""What a connection that never sends a byte costs each TLS listener: N TCP connections opened to
--listen (HTTP) or --thrift-listen (Thrift) of a fresh one-worker sidecar, held silent, and the
sidecar's resident set before and after, per connection. Both listeners wait for a first byte
before any TLS state exists, so both should hold about the same.
  tests/bench/silent.py BUILD CERTS [N] [ROUNDS]
CERTS: a directory deploy/make-certs.sh filled."""
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def one(build, certs, listener, n):
    http, thrift, admin, up = free_port(), free_port(), free_port(), free_port()
    # Nothing listens on the upstreams: no connection gets that far.
    p = subprocess.Popen([
        os.path.join(build, "sidecar", "sidecar"), "--listen", f"127.0.0.1:{http}",
        "--upstream", f"127.0.0.1:{up}", "--thrift-listen", f"127.0.0.1:{thrift}",
        "--thrift-upstream", f"127.0.0.1:{up}", "--admin-listen", f"127.0.0.1:{admin}",
        "--tls-cert", f"{certs}/server.pem", "--tls-key", f"{certs}/server.key",
        "--tls-client-ca", f"{certs}/ca.pem", "--workers", "1", "--log-level", "error",
        "--max-connections", str(n + 100), "--thrift-max-connections", str(n + 100)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{admin}/admin/ping", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        port = http if listener == "listen" else thrift
        # Warm-up: the first connections grow the worker's tables once.
        warm = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
        time.sleep(0.5)
        before = rss(p.pid)
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
        time.sleep(1.5)
        after = rss(p.pid)
        for s in held + warm:
            s.close()
        return (after - before) / n
    finally:
        p.terminate()
        p.wait()


def main():
    build, certs = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 4000
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 2 * n + 1000)), hard))
    print(f"{n} silent TCP connections, one worker, a fresh sidecar per run: bytes of RSS each")
    for listener in ("listen", "thrift-listen"):
        figures = [one(build, certs, listener, n) for _ in range(rounds)]
        print(f"--{listener:14} " + "  ".join(f"{f:7.0f}" for f in figures))


if __name__ == "__main__":
    main()
