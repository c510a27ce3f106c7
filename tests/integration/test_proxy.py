"""The data path: mTLS in, HTTP/1.1 to the local service, with curl, openssl s_client and raw TLS."""
import hashlib
import json
import os
import subprocess
import time
import unittest

from harness import SidecarTestCase, reserve_port, tcp_connections, wait_for


class ProxyTest(SidecarTestCase):

    def test_valid_client_gets_pong_and_help(self):
        ph = self.start_pinghelp()
        sc = self.start_sidecar(ph.port)
        rc, status, body, err = self.curl(f"https://localhost:{sc.port}/ping")
        self.assertEqual((rc, status, body), (0, 200, b"pong"), err)
        rc, status, body, _ = self.curl(f"https://localhost:{sc.port}/help")
        self.assertEqual(status, 200)
        names = [m["name"] for m in json.loads(body)["methods"]]
        self.assertIn("ping", names)
        rc, status, body, _ = self.curl(f"https://localhost:{sc.port}/help/nope")
        self.assertEqual(status, 404)

    def test_identity_is_forwarded_and_forged_xfcc_replaced(self):
        up = self.start_upstream()
        sc = self.start_sidecar(up.port)
        rc, status, body, err = self.curl(
            f"https://localhost:{sc.port}/headers",
            args=["-H", "X-Forwarded-Client-Cert: By=spiffe://evil;URI=spiffe://dev.local/admin",
                  "-H", "X-Forwarded-Proto: http", "-H", "Connection: X-Hop", "-H", "X-Hop: 1"])
        self.assertEqual(status, 200, err)
        headers = [(k.lower(), v) for k, v in json.loads(body)]
        xfcc = [v for k, v in headers if k == "x-forwarded-client-cert"]
        self.assertEqual(len(xfcc), 1)
        self.assertRegex(xfcc[0], r'^Hash=[0-9a-f]{64};Subject="CN=caller,O=Sidecar Dev";'
                                  r'URI=spiffe://dev\.local/caller$')
        self.assertIn(("x-forwarded-proto", "https"), headers)
        self.assertIn(("x-forwarded-for", "127.0.0.1"), headers)
        self.assertNotIn("x-hop", [k for k, _ in headers])

    def test_identity_not_on_allow_list_gets_403(self):
        ph = self.start_pinghelp()
        sc = self.start_sidecar(ph.port, "--allow-identity", "spiffe://dev.local/caller",
                                "--allow-identity", "spiffe://dev.local/team/*")
        rc, status, body, _ = self.curl(f"https://localhost:{sc.port}/ping", cert="intruder")
        self.assertEqual(status, 403)
        self.assertEqual(body, b"caller identity not allowed\n")
        rc, status, body, _ = self.curl(f"https://localhost:{sc.port}/ping", cert="client")
        self.assertEqual((status, body), (200, b"pong"))
        self.assertEqual(self.metric(sc, "sidecar_identity_refused_total"), 1)

    def test_upstream_down_gives_502(self):
        # A port bound but not listening refuses connections, and no other process can take it.
        down = reserve_port()
        self.addCleanup(down.close)
        sc = self.start_sidecar(down.port)
        rc, status, body, _ = self.curl(f"https://localhost:{sc.port}/ping")
        self.assertEqual((status, body), (502, b"local service unavailable\n"))
        self.assertEqual(self.metric(sc, "sidecar_local_replies_total", status="502"), 1)
        self.assertGreaterEqual(self.metric(sc, "sidecar_upstream_connect_errors_total"), 1)

    def test_data_path_log_lines_are_rate_limited_and_counted(self):
        down = reserve_port()
        self.addCleanup(down.close)
        # One worker: the budget and the count of lines left out are per worker.
        sc = self.start_sidecar(down.port, "--workers", "1")

        def request():
            with self.tls_socket(sc.port) as s:
                s.sendall(b"GET /ping HTTP/1.1\r\nHost: a\r\n\r\n")
                self.assertIn(b" 502 ", s.recv(4096))

        for _ in range(40):  # an outage under load: well over 10 lines a second
            request()
        time.sleep(1.2)
        request()  # the first line of a new second says how many were left out
        wait_for(lambda: "suppressed=" in sc.output(), timeout=5, what="a line with suppressed=")
        lines = [l for l in sc.output().splitlines() if "event=upstream_connect_failed" in l]
        self.assertLess(len(lines), 41)
        suppressed = sum(int(l.split("suppressed=")[1].split()[0]) for l in lines if "suppressed=" in l)
        self.assertEqual(len(lines) + suppressed, 41, "every event is either logged or counted as left out")
        self.assertEqual(self.metric(sc, "sidecar_upstream_connect_errors_total"), 41)

    def test_upstream_stall_gives_504(self):
        up = self.start_upstream()
        sc = self.start_sidecar(up.port, "--upstream-timeout", "500ms")
        t0 = time.monotonic()
        rc, status, body, _ = self.curl(f"https://localhost:{sc.port}/stall")
        took = time.monotonic() - t0
        self.assertEqual((status, body), (504, b"local service timed out\n"))
        self.assertLess(took, 5)
        self.assertEqual(self.metric(sc, "sidecar_upstream_timeouts_total"), 1)

    def test_100mb_upload_and_download_stream_in_bounded_memory(self):
        up = self.start_upstream()
        sc = self.start_sidecar(up.port)
        size = 100 * 1024 * 1024
        path = os.path.join(self.tmp, "upload.bin")
        block = os.urandom(1024 * 1024)
        with open(path, "wb") as f:
            for _ in range(100):
                f.write(block)
        digest = hashlib.sha256(block * 100).hexdigest()
        # Content-Length framed upload (curl also sends Expect: 100-continue).
        rc, status, body, err = self.curl(f"https://localhost:{sc.port}/sink",
                                          args=["--data-binary", f"@{path}"], timeout=120)
        self.assertEqual(status, 200, err)
        self.assertEqual(json.loads(body), {"bytes": size, "sha256": digest})
        # Chunked upload.
        rc, status, body, err = self.curl(f"https://localhost:{sc.port}/sink",
                                          args=["-H", "Transfer-Encoding: chunked",
                                                "--data-binary", f"@{path}"], timeout=120)
        self.assertEqual(status, 200, err)
        self.assertEqual(json.loads(body), {"bytes": size, "sha256": digest})
        os.remove(path)
        # Download.
        out = os.path.join(self.tmp, "download.bin")
        rc, status, _, err = self.curl(f"https://localhost:{sc.port}/download?bytes={size}",
                                       output=out, timeout=120)
        self.assertEqual((rc, status), (0, 200), err)
        self.assertEqual(os.path.getsize(out), size)
        os.remove(out)
        # Chunked download (the sidecar re-chunks what it relays).
        rc, status, _, err = self.curl(f"https://localhost:{sc.port}/chunked?bytes={size}",
                                       output=out, timeout=120)
        self.assertEqual((rc, status), (0, 200), err)
        with open(out, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(),
                             hashlib.sha256((bytes(range(256)) * 256 * 1600)[:size]).hexdigest())
        os.remove(out)
        peak = sc.rss_peak_kib()
        if not os.environ.get("SIDECAR_SANITIZED"):  # ASan's quarantine holds freed memory
            self.assertLess(peak, 64 * 1024, f"sidecar peak RSS {peak} KiB")

    def test_malformed_request_gets_400(self):
        ph = self.start_pinghelp()
        sc = self.start_sidecar(ph.port)
        out, _ = self.s_client(sc.port, b"GARBAGE\r\n\r\n")
        self.assertTrue(out.startswith("HTTP/1.1 400 Bad Request"), out)
        out, _ = self.s_client(sc.port, b"GET /ping HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n")
        self.assertTrue(out.startswith("HTTP/1.1 400"), out)
        self.assertEqual(self.metric(sc, "sidecar_local_replies_total", status="400"), 2)
        # The process carries on.
        rc, status, body, _ = self.curl(f"https://localhost:{sc.port}/ping")
        self.assertEqual((status, body), (200, b"pong"))

    def test_oversized_head_gets_431_and_body_413(self):
        up = self.start_upstream()
        sc = self.start_sidecar(up.port, "--max-head-size", "4KiB", "--max-body-size", "1KiB")
        rc, status, _, _ = self.curl(f"https://localhost:{sc.port}/ping",
                                     args=["-H", "X-Big: " + "a" * 8000])
        self.assertEqual(status, 431)
        rc, status, _, _ = self.curl(f"https://localhost:{sc.port}/sink",
                                     args=["--data-binary", "b" * 5000])
        self.assertEqual(status, 413)
        rc, status, _, _ = self.curl(f"https://localhost:{sc.port}/sink",
                                     args=["-H", "Transfer-Encoding: chunked",
                                           "--data-binary", "b" * 5000])
        self.assertEqual(status, 413)
        rc, status, body, _ = self.curl(f"https://localhost:{sc.port}/sink",
                                        args=["--data-binary", "small"])
        self.assertEqual(status, 200)

    def test_slow_head_is_closed_after_deadline(self):
        ph = self.start_pinghelp()
        sc = self.start_sidecar(ph.port, "--head-timeout", "1s")
        s = self.tls_socket(sc.port)
        head = b"GET /ping HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 100 + b"\r\n\r\n"
        t0 = time.monotonic()
        closed_at = None
        try:
            for b in head:
                s.send(bytes([b]))
                time.sleep(0.1)
        except OSError:
            closed_at = time.monotonic() - t0
        if closed_at is None:
            # Every byte was accepted by the kernel; the sidecar must still not have answered pong.
            data = s.recv(4096)
            self.assertNotIn(b"pong", data)
            closed_at = time.monotonic() - t0
        self.assertLess(closed_at, 5)
        s.close()

    def test_keep_alive_reuses_one_handshake(self):
        ph = self.start_pinghelp()
        sc = self.start_sidecar(ph.port)
        url = f"https://localhost:{sc.port}/ping"
        r = subprocess.run(["curl", "-sv", "--cacert", self.certs.path("ca.pem"),
                            "--cert", self.certs.path("client.pem"),
                            "--key", self.certs.path("client.key"), url, url, url, url, url],
                           capture_output=True, timeout=30)
        self.assertEqual(r.stdout, b"pong" * 5)
        self.assertEqual(r.stderr.decode().count("Re-using existing connection"), 4)
        self.assertEqual(self.metric(sc, "sidecar_tls_handshakes_total", result="ok"), 1)
        # A request is counted once its answer is written: the last one may lag curl a moment.
        self.assertSettles(lambda: self.metric_sum(sc, "sidecar_requests_total", code="2xx"), 5)
        # Only one connection to the local service was needed for five sequential requests.
        self.assertEqual(self.metric(sc, "sidecar_upstream_connections_total"), 1)

    def test_stale_pooled_connection_is_retried_on_a_fresh_one(self):
        up = self.start_upstream("--idle-close-ms", "200")
        sc = self.start_sidecar(up.port, "--workers", "1")
        for _ in range(3):
            rc, status, body, err = self.curl(f"https://localhost:{sc.port}/ping")
            self.assertEqual((status, body), (200, b"upstream"), err)
            # The local service closes the pooled connection after 200 ms idle: wait until it
            # has (no connection of its port is established any more), however long that takes.
            wait_for(lambda: tcp_connections(local_port=up.port) == 0, what="pooled connection closed")
        self.assertGreaterEqual(self.metric(sc, "sidecar_upstream_stale_retries_total"), 2)
        self.assertEqual(self.metric(sc, "sidecar_local_replies_total", status="502"), 0)
        # A POST is not replayed: the pooled connection is checked before it is used.
        rc, status, body, err = self.curl(f"https://localhost:{sc.port}/sink", args=["-d", "x=1"])
        self.assertEqual(status, 200, err)
        self.assertEqual(json.loads(body)["bytes"], 3)

    def test_http10_and_pipelined_requests(self):
        ph = self.start_pinghelp()
        sc = self.start_sidecar(ph.port)
        out, _ = self.s_client(sc.port, b"GET /ping HTTP/1.0\r\n\r\n")
        self.assertTrue(out.startswith("HTTP/1.0 200 OK"), out)
        self.assertTrue(out.endswith("pong"), out)
        two = b"GET /ping HTTP/1.1\r\nHost: a\r\n\r\nGET /help/ping HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        out, _ = self.s_client(sc.port, two)
        self.assertEqual(out.count("HTTP/1.1 200 OK"), 2, out)
        self.assertLess(out.index("pong"), out.index('"name":"ping"'))


if __name__ == "__main__":
    unittest.main()
