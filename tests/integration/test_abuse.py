"""Abuse: connection and overload limits, slow-loris, many idle connections, renegotiation,
callers that never read. The sidecar must keep answering normal callers and give every
descriptor back."""
import os
import resource
import socket
import ssl
import statistics
import subprocess
import threading
import time
import unittest

from harness import SidecarTestCase, wait_for

LOADGEN = os.environ.get("LOADGEN_BIN", "")
SANITIZED = bool(os.environ.get("SIDECAR_SANITIZED"))


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


class AbuseTest(SidecarTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.fd_limit = raise_fd_limit()

    def get(self, s, path=b"/ping"):
        s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: svc\r\n\r\n")
        return self.read_response(s)

    def latencies(self, port, n=60):
        with self.tls_socket(port) as s:
            out = []
            for _ in range(n):
                t = time.perf_counter()
                status, _ = self.get(s)
                out.append(time.perf_counter() - t)
                self.assertEqual(status, 200)
        return out

    def test_max_connections_refuses_busy_and_evicts_idle(self):
        up = self.start_upstream()
        sc = self.start_sidecar(up.port, "--workers", "1", "--max-connections", "4",
                                "--upstream-timeout", "5s")
        # Four connections that have not finished (or begun) a handshake are not callers yet:
        # a fifth caller is served, and the oldest of them makes room (issue 11: 60 raw sockets
        # locked callers out at --max-connections 50).
        stalled = [socket.create_connection(("127.0.0.1", sc.port)) for _ in range(4)]
        wait_for(lambda: self.metric(sc, "sidecar_inbound_connections_open") == 4, what="4 open")
        with self.tls_socket(sc.port) as s:
            self.assertEqual(self.get(s)[0], 200)
        self.assertEqual(self.metric(sc, "sidecar_inbound_connections_evicted_total", listener="listen"), 1)
        stalled[0].settimeout(5)
        self.assertEqual(stalled[0].recv(1), b"", "the oldest silent connection was closed")
        for s in stalled:
            s.close()
        wait_for(lambda: self.metric(sc, "sidecar_inbound_connections_open") == 0, what="0 open")
        # Four requests waiting on the local service are busy: a fifth connection is closed at once.
        busy = [self.tls_socket(sc.port) for _ in range(4)]
        for s in busy:
            s.sendall(b"GET /stall HTTP/1.1\r\nHost: svc\r\n\r\n")
        wait_for(lambda: self.metric(sc, "sidecar_requests_pending") == 4, what="4 pending")
        with self.assertRaises((ssl.SSLError, ConnectionError, OSError)):
            with self.tls_socket(sc.port) as s:
                self.get(s)
        self.assertEqual(self.metric(sc, "sidecar_inbound_connections_refused_total", listener="listen"), 1)
        for s in busy:
            s.close()
        wait_for(lambda: self.metric(sc, "sidecar_inbound_connections_open") == 0, timeout=15,
                 what="0 open")
        # Four idle keep-alive connections: a fifth caller is served, and the oldest idle one goes.
        idle = [self.tls_socket(sc.port) for _ in range(4)]
        for s in idle:
            self.assertEqual(self.get(s)[0], 200)
        with self.tls_socket(sc.port) as s:
            self.assertEqual(self.get(s)[0], 200)
        self.assertEqual(self.metric(sc, "sidecar_inbound_connections_evicted_total", listener="listen"), 2)
        idle[0].settimeout(5)
        self.assertEqual(idle[0].recv(1), b"", "the longest-idle connection was closed")
        self.assertEqual(self.get(idle[3])[0], 200, "the others still work")
        for s in idle:
            s.close()
        self.assertIsNone(sc.poll())

    def test_max_pending_answers_503_at_once(self):
        up = self.start_upstream()
        sc = self.start_sidecar(up.port, "--workers", "1", "--max-pending", "2")
        results = []

        def slow():
            results.append(self.curl(f"https://localhost:{sc.port}/slow?ms=2000",
                                     args=["--resolve", f"localhost:{sc.port}:127.0.0.1"])[1])

        threads = [threading.Thread(target=slow) for _ in range(2)]
        for t in threads:
            t.start()
        wait_for(lambda: self.metric(sc, "sidecar_requests_pending") == 2, what="2 pending")
        with self.tls_socket(sc.port) as s:
            t0 = time.monotonic()  # after the handshake: the time to answer is what is judged
            status, body = self.get(s)
            took = time.monotonic() - t0
        self.assertEqual(status, 503)
        self.assertEqual(body, b"local service overloaded\n")
        self.assertEqual(results, [], "answered while both slow requests were still pending")
        self.assertLess(took, 0.5 * (2 if SANITIZED else 1), "overload is answered at once, not queued")
        for t in threads:
            t.join()
        self.assertEqual(results, [200, 200])
        self.assertEqual(self.metric(sc, "sidecar_local_replies_total", status="503"), 1)
        # A request stops counting as pending once its answer is written, a moment after the
        # caller has it.
        wait_for(lambda: self.metric(sc, "sidecar_requests_pending") == 0, what="0 pending")
        with self.tls_socket(sc.port) as s:
            self.assertEqual(self.get(s)[0], 200, "served again once below the limit")

    def test_slow_loris_does_not_slow_normal_callers(self):
        app = self.start_pinghelp()
        # Sanitized builds handshake several times slower: the loris must outlive the set-up.
        deadline = 30 if SANITIZED else 8
        sc = self.start_sidecar(app.port, "--workers", "2", "--handshake-timeout", f"{deadline}s",
                                "--head-timeout", f"{deadline}s")
        baseline = self.latencies(sc.port)
        # 500 connections that trickle a request head byte by byte, 500 that never start TLS.
        # The TLS ones are made first (idle, under the long idle deadline); the loris starts once
        # all are open, so that every deadline runs while the normal caller is measured.
        trickling = [self.tls_socket(sc.port) for _ in range(500)]
        silent = [socket.create_connection(("127.0.0.1", sc.port)) for _ in range(500)]
        for s in trickling:
            s.sendall(b"G")
        wait_for(lambda: open_fds(sc.pid) >= 1000, timeout=deadline, what="1000 loris connections accepted")
        stop = threading.Event()

        def trickle():
            while not stop.is_set():
                for s in trickling:
                    try:
                        s.sendall(b"E")
                    except OSError:
                        pass
                stop.wait(0.5)

        t = threading.Thread(target=trickle)
        t.start()
        try:
            under = self.latencies(sc.port)
            with self.tls_socket(sc.port) as s:  # a fresh handshake gets through as well
                self.assertEqual(self.get(s)[0], 200)
        finally:
            stop.set()
            t.join()
        b50, u50 = statistics.median(baseline), statistics.median(under)
        self.assertLess(u50, 3 * b50 + 0.005, f"median {u50*1e3:.2f} ms under loris vs {b50*1e3:.2f} ms")
        # The deadlines close every loris connection, and count them.
        wait_for(lambda: self.metric(sc, "sidecar_inbound_connections_open") == 0,
                 timeout=deadline + 15, what="loris connections closed")
        self.assertEqual(self.metric(sc, "sidecar_tls_handshakes_total", result="timeout"), 500)
        self.assertEqual(self.metric(sc, "sidecar_local_replies_total", status="408"), 500)
        for s in silent + trickling:
            s.close()
        self.assertIsNone(sc.poll())

    @unittest.skipUnless(LOADGEN, "LOADGEN_BIN not set")
    def test_ten_thousand_idle_connections(self):
        # Sanitized builds handshake several times slower: 2 000 there.
        n = min(2_000 if SANITIZED else 10_000, (self.fd_limit - 200) // 2)
        app = self.start_pinghelp()
        # The loadgen opens them 64 handshakes at a time; on two loaded cores that took over a
        # minute, and the default 60 s idle deadline closed the first ones before the last was
        # open. Idle deadlines are not what is measured here.
        sc = self.start_sidecar(app.port, "--workers", "2", "--idle-timeout", "10m")
        base_fds, base_rss = open_fds(sc.pid), sc.rss_kib()
        lg = subprocess.Popen([LOADGEN, "--target", f"127.0.0.1:{sc.port}", "--tls",
                               "--cert", self.certs.path("client.pem"),
                               "--key", self.certs.path("client.key"),
                               "--ca", self.certs.path("ca.pem"), "--hold", str(n),
                               "--seconds", "300"],  # held until killed below
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              preexec_fn=raise_fd_limit)
        try:
            line = lg.stderr.readline()
            self.assertEqual(line.strip(), f"held {n}")
            self.assertEqual(self.metric(sc, "sidecar_inbound_connections_open"), n)
            rc, status, body, _ = self.curl(f"https://localhost:{sc.port}/ping",
                                            args=["--resolve", f"localhost:{sc.port}:127.0.0.1"])
            self.assertEqual((rc, status, body), (0, 200, b"pong"))
            per_conn = (sc.rss_kib() - base_rss) / n
            if not SANITIZED:
                # Measured: about 31 KiB with the lean TLS stream (90 KiB with asio's SSL stream);
                # the bound catches a regression, not the 20 KiB goal.
                self.assertLess(per_conn, 48, f"{per_conn:.1f} KiB per idle connection")
        finally:
            lg.kill()
            lg.wait()
        wait_for(lambda: self.metric(sc, "sidecar_inbound_connections_open") == 0, timeout=30,
                 what="held connections closed")
        # Every descriptor comes back, but for the pooled keep-alive connections to the local service.
        wait_for(lambda: open_fds(sc.pid) <= base_fds + 2 + self.metric(sc, "sidecar_upstream_pool_idle"),
                 timeout=10, what="descriptors back")

    def test_renegotiation_refused(self):
        app = self.start_pinghelp()
        sc = self.start_sidecar(app.port)
        cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{sc.port}", "-tls1_2",
               "-CAfile", self.certs.path("ca.pem"), "-cert", self.certs.path("client.pem"),
               "-key", self.certs.path("client.key")]
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
        out = []
        reader = threading.Thread(target=lambda: out.extend(iter(lambda: p.stdout.read1(4096), b"")))
        reader.start()
        text = lambda: b"".join(out).decode(errors="replace")
        try:
            # s_client prints its session summary once the handshake is done; "R" asks for a
            # renegotiation (a line of its own), and the request follows once it was asked for.
            wait_for(lambda: "Verify return code" in text() or p.poll() is not None,
                     timeout=20, what="s_client connected")
            p.stdin.write(b"R\n")
            p.stdin.flush()
            wait_for(lambda: "RENEGOTIATING" in text() or p.poll() is not None,
                     timeout=20, what="s_client renegotiating")
            # The refusal is an alert; then the connection must not serve the request.
            wait_for(lambda: "no renegotiation" in text().lower() or p.poll() is not None,
                     timeout=20, what="the sidecar's answer to the renegotiation")
            p.stdin.write(b"GET /ping HTTP/1.1\r\nHost: svc\r\n\r\n")
            p.stdin.flush()
        except BrokenPipeError:  # s_client already quit: the sidecar closed the connection
            pass
        finally:
            try:
                p.stdin.close()
            except BrokenPipeError:
                pass
            p.wait(timeout=20)
            reader.join(10)
            p.stdout.close()
        self.assertIn("RENEGOTIATING", text())
        self.assertIn("no renegotiation", text().lower())
        self.assertNotIn("pong", text())
        with self.tls_socket(sc.port) as s:
            self.assertEqual(self.get(s)[0], 200)

    def test_caller_that_never_reads(self):
        up = self.start_upstream()
        sc = self.start_sidecar(up.port, "--workers", "1", "--idle-timeout", "2s")
        s = self.tls_socket(sc.port)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"GET /download?bytes=200000000 HTTP/1.1\r\nHost: svc\r\n\r\n")
        # The write deadline closes the connection although the caller is still there.
        wait_for(lambda: self.metric(sc, "sidecar_inbound_connections_open") == 0, timeout=20,
                 what="stuck caller closed by the write deadline")
        self.assertLess(sc.rss_peak_kib(), 64 * 1024 * (4 if SANITIZED else 1))
        s.close()
        with self.tls_socket(sc.port) as s2:
            self.assertEqual(self.get(s2)[0], 200)


if __name__ == "__main__":
    unittest.main()
