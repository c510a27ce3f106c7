"""`sidecar probe`, the image's health check, against a local HTTP server: exit 0 on 2xx, 1 with a
reason otherwise, 2 on a bad argument. Needs no container engine."""
import http.server
import os
import socket
import subprocess
import threading
import time
import unittest

SIDECAR = os.environ["SIDECAR_BIN"]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 200 if self.path == "/health" else 503
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"OK\n" if code == 200 else b"draining\n")

    def do_POST(self):
        self.send_response(200 if self.path == "/quitquitquit" and self.headers["Content-Length"] == "0" else 400)
        self.end_headers()

    def log_message(self, *args):
        pass


def probe(*args, env=None):
    full = {k: v for k, v in os.environ.items() if k != "SIDECAR_ADMIN_LISTEN"}
    full.update(env or {})
    return subprocess.run([SIDECAR, "probe", *args], capture_output=True, text=True, timeout=30, env=full)


class ProbeTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        cls.url = f"http://127.0.0.1:{cls.server.server_address[1]}"
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()

    def test_2xx_is_healthy_and_silent(self):
        r = probe(f"{self.url}/health")
        self.assertEqual((r.returncode, r.stderr), (0, ""))

    def test_other_status_says_which(self):
        r = probe(f"{self.url}/ready")
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr, f"sidecar probe: {self.url}/ready: answered 503 Service Unavailable\n")

    def test_post_with_an_empty_body(self):
        self.assertEqual(probe("--method", "POST", f"{self.url}/quitquitquit").returncode, 0)

    def test_refused(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        r = probe(f"http://127.0.0.1:{port}/health")
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot connect", r.stderr)
        self.assertEqual(len(r.stderr.splitlines()), 1)

    def test_timeout_bounds_a_silent_server(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            start = time.monotonic()
            r = probe("--timeout", "300ms", f"http://127.0.0.1:{s.getsockname()[1]}/health")
            elapsed = time.monotonic() - start
        self.assertEqual(r.returncode, 1)
        self.assertIn("no answer within 300 ms", r.stderr)
        self.assertLess(elapsed, 2)

    def test_no_url_asks_health_on_the_admin_listener_the_environment_names(self):
        """The image's HEALTHCHECK: SIDECAR_ADMIN_LISTEN moved, the probe follows; a wildcard
        address is asked on loopback."""
        port = self.server.server_address[1]
        for admin in (f"127.0.0.1:{port}", f"0.0.0.0:{port}"):
            with self.subTest(admin=admin):
                r = probe(env={"SIDECAR_ADMIN_LISTEN": admin})
                self.assertEqual((r.returncode, r.stderr), (0, ""))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            free = s.getsockname()[1]
        r = probe(env={"SIDECAR_ADMIN_LISTEN": f"0.0.0.0:{free}"})
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"http://127.0.0.1:{free}/health: cannot connect", r.stderr)
        for bad in ("nowhere", "0.0.0.0:0"):
            with self.subTest(bad=bad):
                r = probe(env={"SIDECAR_ADMIN_LISTEN": bad})
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertEqual(r.stderr, f"sidecar probe: SIDECAR_ADMIN_LISTEN: '{bad}' is not host:port "
                                           "with a port from 1 to 65535\n")

    def test_bad_arguments_exit_2_naming_them(self):
        for args, word in [(["https://x/"], "'https://x/'"), (["http://:80/"], "'http://:80/'"),
                           (["http://h:99999/"], "99999"), (["--timeout", "2", "http://h/"], "--timeout"),
                           (["--method", "PUT", "http://h/"], "--method"), (["--nope", "http://h/"], "nope")]:
            with self.subTest(args=args):
                r = probe(*args)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn(word, r.stderr)
                self.assertEqual(len(r.stderr.splitlines()), 1)

    def test_help(self):
        r = probe("--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("--timeout", r.stdout)


if __name__ == "__main__":
    unittest.main()
