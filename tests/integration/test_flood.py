"""Floods of connections that never become callers: sockets that never send a byte, and TLS
handshakes that stop after the ClientHello. They must cost little while they last, give their
memory back when they end, and never lock a real caller out."""
import os
import resource
import socket
import ssl
import time
import unittest

from harness import SidecarTestCase, wait_for

SANITIZED = bool(os.environ.get("SIDECAR_SANITIZED"))


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class FloodTest(SidecarTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.fd_limit = raise_fd_limit()

    def ping(self, sc):
        rc, status, body, err = self.curl(f"https://localhost:{sc.port}/ping",
                                          args=["--resolve", f"localhost:{sc.port}:127.0.0.1"])
        self.assertEqual((status, body), (200, b"pong"), err)

    def warm(self, sc):
        """A baseline after the allocator and OpenSSL have seen some real callers."""
        for _ in range(20):
            self.ping(sc)
        time.sleep(0.5)
        return sc.rss_kib()

    def test_silent_connections_hold_no_tls_state(self):
        n = min(2000, (self.fd_limit - 200) // 2)
        app = self.start_pinghelp()
        sc = self.start_sidecar(app.port, "--handshake-timeout", "2s")
        base = self.warm(sc)
        socks = [socket.create_connection(("127.0.0.1", sc.port)) for _ in range(n)]
        try:
            wait_for(lambda: self.metric(sc, "sidecar_inbound_connections_open") >= n,
                     what=f"{n} open")
            per_conn = (sc.rss_kib() - base) * 1024 / n
            if not SANITIZED:
                # nginx's figure is about 0.5 KiB; the sidecar held 47 KiB before it waited for
                # the first byte to make TLS state. Measured now: about 0.45 KiB.
                self.assertLess(per_conn, 4096, f"{per_conn:.0f} bytes per silent connection")
            self.ping(sc)  # a real caller is served all along
            timeouts = lambda: self.metric(sc, "sidecar_tls_handshakes_total", result="timeout")
            wait_for(lambda: timeouts() >= n, timeout=15, what="the silent connections timed out")
        finally:
            for s in socks:
                s.close()
        wait_for(lambda: self.metric(sc, "sidecar_inbound_connections_open") == 0, what="0 open")
        if not SANITIZED:
            after = sc.rss_kib()
            self.assertLess(after, base * 1.2, f"resident {base} KiB before, {after} KiB after")

    def test_memory_of_stalled_handshakes_goes_back_to_the_system(self):
        n = min(1500, (self.fd_limit - 200) // 2)
        app = self.start_pinghelp()
        sc = self.start_sidecar(app.port, "--handshake-timeout", "8s")
        base = self.warm(sc)
        ctx = ssl.create_default_context(cafile=self.certs.path("ca.pem"))
        socks = []
        try:
            for _ in range(n):
                raw = socket.create_connection(("127.0.0.1", sc.port))
                t = ctx.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False)
                t.setblocking(False)
                try:
                    t.do_handshake()  # sends the ClientHello, then never answers the server
                except ssl.SSLWantReadError:
                    pass
                socks.append(t)
            # Python's client gives up on a few of these handshakes by itself; most stay open.
            wait_for(lambda: self.metric(sc, "sidecar_inbound_connections_open") >= n // 2,
                     what=f"{n // 2} open")
            time.sleep(0.5)
            peak = sc.rss_kib()
            self.ping(sc)
            wait_for(lambda: self.metric(sc, "sidecar_inbound_connections_open") <= 1, timeout=30,
                     what="the stalled handshakes timed out")
        finally:
            for s in socks:
                s.close()
        wait_for(lambda: self.metric(sc, "sidecar_memory_trims_total") >= 1, timeout=10,
                 what="a trim after the flood")
        self.ping(sc)
        if not SANITIZED:
            after = sc.rss_kib()
            # OpenSSL holds about 54 KiB per handshake in progress. Freed, most of it goes back;
            # what stays is pages pinned by asio's per-descriptor state, which it keeps for
            # reuse (about one page per connection of the peak).
            self.assertLess(after - base, (peak - base) / 4,
                            f"resident {base} KiB before, {peak} KiB at the peak, {after} KiB after")

    def test_raw_sockets_do_not_lock_callers_out(self):
        app = self.start_pinghelp()
        sc = self.start_sidecar(app.port, "--max-connections", "50")
        socks = [socket.create_connection(("127.0.0.1", sc.port)) for _ in range(60)]
        try:
            for _ in range(3):
                self.ping(sc)
            self.assertGreaterEqual(self.metric(sc, "sidecar_inbound_connections_evicted_total", listener="listen"), 3)
        finally:
            for s in socks:
                s.close()


if __name__ == "__main__":
    unittest.main()
