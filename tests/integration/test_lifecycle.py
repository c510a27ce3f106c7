"""Start-up errors, the admin interface, and graceful shutdown."""
import os
import signal
import ssl
import subprocess
import threading
import time
import unittest

from harness import PINGHELP, SIDECAR, SidecarTestCase, free_port, wait_for


class LifecycleTest(SidecarTestCase):

    def run_sidecar(self, *args, env=None):
        full = dict(os.environ)
        full.update(env or {})
        return subprocess.run([SIDECAR, *args], capture_output=True, timeout=20, env=full)

    def wait_in_flight(self, sc):
        """Until the request a thread started has reached the local service."""
        wait_for(lambda: self.metric(sc, "sidecar_requests_pending") == 1, timeout=30,
                 what="a request in flight")

    def health(self, sc):
        try:
            return self.admin_get(sc, "/health")[0]
        except OSError:  # not answering (yet, or any more)
            return None

    def test_bad_flags_and_files_exit_2_with_one_line(self):
        c = self.certs
        good = ["--tls-cert", c.path("server.pem"), "--tls-key", c.path("server.key"),
                "--tls-client-ca", c.path("ca.pem"), "--listen", "127.0.0.1:0",
                "--admin-listen", "127.0.0.1:0"]
        cases = [
            (["--bogus"], "bogus"),
            (good + ["--idle-timeout", "forever"], "--idle-timeout"),
            (["--tls-cert", "/nope.pem", "--tls-key", c.path("server.key"),
              "--tls-client-ca", c.path("ca.pem")], "/nope.pem"),
            (["--tls-cert", c.path("ca.key"), "--tls-key", c.path("server.key"),
              "--tls-client-ca", c.path("ca.pem"), "--listen", "127.0.0.1:0",
              "--admin-listen", "127.0.0.1:0"], c.path("ca.key")),
            (["--tls-cert", c.path("server.pem"), "--tls-key", c.path("client.key"),
              "--tls-client-ca", c.path("ca.pem"), "--listen", "127.0.0.1:0",
              "--admin-listen", "127.0.0.1:0"], "does not match"),
        ]
        for args, mentions in cases:
            with self.subTest(args=args):
                r = self.run_sidecar(*args)
                err = r.stderr.decode()
                self.assertEqual(r.returncode, 2, err)
                self.assertIn(mentions, err)
                self.assertEqual(err.count("\n"), 1, err)
        # A taken port is named too.
        with __import__("socket").socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            port = s.getsockname()[1]
            r = self.run_sidecar(*(good[:6] + ["--listen", f"127.0.0.1:{port}",
                                               "--admin-listen", "127.0.0.1:0"]))
            self.assertEqual(r.returncode, 2)
            self.assertIn("--listen", r.stderr.decode())

    def test_files_that_are_not_pem_say_which_and_what_was_expected(self):
        c = self.certs
        der = os.path.join(self.tmp, "server.der")
        with open(c.path("server.pem")) as f, open(der, "wb") as out:
            out.write(ssl.PEM_cert_to_DER_cert(f.read()))
        empty = os.path.join(self.tmp, "empty.pem")
        open(empty, "w").close()
        cut = os.path.join(self.tmp, "cut.pem")
        with open(c.path("server.pem")) as f, open(cut, "w") as out:
            out.write(f.read()[:200])
        files = {"cert": c.path("server.pem"), "key": c.path("server.key"), "ca": c.path("ca.pem")}
        cases = [
            ("cert", der, f"--tls-cert '{der}': not a PEM certificate (expected a '-----BEGIN CERTIFICATE-----' "
                          "block; from DER: openssl x509 -inform DER -in FILE -out FILE.pem)"),
            ("cert", c.path("server.key"), f"--tls-cert '{c.path('server.key')}': not a PEM certificate ("),
            ("key", c.path("server.pem"), f"--tls-key '{c.path('server.pem')}': not a PEM private key (expected a "
                                          "'-----BEGIN PRIVATE KEY-----' block"),
            ("key", der, f"--tls-key '{der}': not a PEM private key ("),
            ("ca", empty, f"--tls-client-ca '{empty}': not a PEM certificate bundle ("),
            ("cert", cut, f"--tls-cert '{cut}': broken PEM (bad end line)"),
        ]
        for which, path, says in cases:
            with self.subTest(which=which, path=path):
                given = dict(files, **{which: path})
                r = self.run_sidecar("--tls-cert", given["cert"], "--tls-key", given["key"],
                                     "--tls-client-ca", given["ca"], "--listen", "127.0.0.1:0",
                                     "--admin-listen", "127.0.0.1:0")
                err = r.stderr.decode()
                self.assertEqual(r.returncode, 2, err)
                self.assertEqual(err.count("\n"), 1, err)
                self.assertTrue(err.startswith("sidecar: " + says), err)
                self.assertNotIn("PEM lib", err)

    def test_help_names_the_subcommands_and_pinghelp_has_a_version(self):
        out = self.run_sidecar("--help").stdout.decode()
        self.assertIn("sidecar resolve zk2!", out)
        self.assertIn("sidecar probe [http://", out)
        version = self.run_sidecar("--version")
        ph = subprocess.run([PINGHELP, "--version"], capture_output=True, text=True, timeout=10)
        self.assertEqual((ph.returncode, ph.stderr), (0, ""))
        self.assertEqual(ph.stdout.replace("pinghelp", "sidecar"), version.stdout.decode())

    def test_a_sidecar_that_announces_nothing_stops_without_the_deregister_grace(self):
        up = self.start_upstream()
        sc = self.start_sidecar(up.port, "--deregister-grace", "10s")
        t0 = time.monotonic()
        sc.send(signal.SIGTERM)
        self.assertEqual(sc.wait(15), 0)
        self.assertLess(time.monotonic() - t0, 3)
        self.assertNotIn("event=deregistered", sc.output())
        self.assertIn("event=drain_done reason=drained", sc.output())

    def test_the_started_line_names_every_listener(self):
        ph = self.start_pinghelp()
        route = free_port()
        sc = self.start_sidecar(ph.port, "--thrift-listen", "127.0.0.1:0", "--thrift-upstream",
                                f"127.0.0.1:{ph.port}", "--thrift-route", f"127.0.0.1:{route}=static!127.0.0.1:1")
        wait_for(lambda: "event=started" in sc.output(), what="the started line")
        line = next(l for l in sc.output().splitlines() if "event=started" in l)
        self.assertRegex(line, rf"outbound=off thrift_listen=127\.0\.0\.1:[1-9]\d* thrift_routes=127\.0\.0\.1:{route} ")
        plain = self.start_sidecar(ph.port)
        wait_for(lambda: "event=started" in plain.output(), what="the started line")
        self.assertIn("outbound=off thrift_listen=off thrift_routes=off ", plain.output())

    def test_a_certificate_reload_dates_not_after_in_utc(self):
        up = self.start_upstream()
        sc = self.start_sidecar(up.port)
        sc.send(signal.SIGHUP)
        wait_for(lambda: "event=tls_reloaded" in sc.output(), what="the reload line")
        self.assertRegex(sc.output(), r"event=tls_reloaded trigger=sighup not_after=20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ\n")

    def test_help_and_environment(self):
        r = self.run_sidecar("--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("--allow-identity", r.stdout.decode())
        ph = self.start_pinghelp()
        c = self.certs
        sc = self.spawn_serving("sidecar", lambda ports: ([SIDECAR], {
            "SIDECAR_LISTEN": f"127.0.0.1:{ports[0]}", "SIDECAR_ADMIN_LISTEN": f"127.0.0.1:{ports[1]}",
            "SIDECAR_UPSTREAM": f"127.0.0.1:{ph.port}", "SIDECAR_TLS_CERT": c.path("server.pem"),
            "SIDECAR_TLS_KEY": c.path("server.key"), "SIDECAR_TLS_CLIENT_CA": c.path("ca.pem"),
            "SIDECAR_ALLOW_IDENTITY": "spiffe://dev.local/other,spiffe://dev.local/call*"}), 2)
        sc.port, sc.admin = sc.ports
        rc, status, body, _ = self.curl(f"https://localhost:{sc.port}/ping")
        self.assertEqual(body, b"pong")
        rc, status, body, _ = self.curl(f"https://localhost:{sc.port}/ping", cert="intruder")
        self.assertEqual(status, 403)

    def test_pinghelp_rejects_a_broken_help_dir(self):
        bad = os.path.join(self.tmp, "badhelp")
        os.makedirs(bad, exist_ok=True)
        with open(os.path.join(bad, "ping.json"), "w") as f:
            f.write('{"name": ')
        r = subprocess.run([PINGHELP, "--help-dir", bad, "--listen", "127.0.0.1:0"],
                           capture_output=True, timeout=10)
        self.assertEqual(r.returncode, 2)
        self.assertIn("ping.json", r.stderr.decode())

    def test_admin_endpoints(self):
        ph = self.start_pinghelp()
        sc = self.start_sidecar(ph.port)
        self.assertEqual(self.admin_get(sc, "/admin/ping"), (200, "pong"))
        self.assertEqual(self.admin_get(sc, "/health"), (200, "OK\n"))
        self.assertEqual(self.admin_get(sc, "/ready")[0], 200)
        self.assertEqual(self.admin_get(sc, "/quitquitquit")[0], 405)
        status, info = self.admin_get(sc, "/admin/server_info")
        self.assertEqual(status, 200)
        self.assertIn('"version"', info)

    def test_sigterm_lets_an_in_flight_request_finish_then_exits_0(self):
        up = self.start_upstream()
        sc = self.start_sidecar(up.port)
        result = {}

        def slow():
            result["r"] = self.curl(f"https://localhost:{sc.port}/slow?ms=1500")

        t = threading.Thread(target=slow)
        t.start()
        self.wait_in_flight(sc)
        sc.send(signal.SIGTERM)
        # Draining: health says so for as long as the in-flight request (1.5 s) holds the process.
        wait_for(lambda: self.health(sc) == 503 or sc.poll() is not None, what="health 503 while draining")
        t.join(30)
        rc, status, body, err = result["r"]
        self.assertEqual((status, body), (200, b"slow done"), err)
        self.assertEqual(sc.wait(15), 0)
        # And nothing listens any more.
        rc, status, body, _ = self.curl(f"https://localhost:{sc.port}/ping")
        self.assertNotEqual(rc, 0)

    def test_quitquitquit_drains_and_a_second_signal_exits_at_once(self):
        up = self.start_upstream()
        sc = self.start_sidecar(up.port)
        self.assertEqual(self.admin_post(sc, "/quitquitquit"), (200, "quitting\n"))
        self.assertEqual(sc.wait(15), 0)

        sc2 = self.start_sidecar(up.port, "--drain-timeout", "1m")
        t = threading.Thread(target=lambda: self.curl(f"https://localhost:{sc2.port}/stall", timeout=20))
        t.start()
        self.wait_in_flight(sc2)
        sc2.send(signal.SIGTERM)
        wait_for(lambda: self.health(sc2) == 503, what="the first SIGTERM taken")
        self.assertIsNone(sc2.poll())  # still draining: the stalled request holds it
        t0 = time.monotonic()
        sc2.send(signal.SIGTERM)
        code = sc2.wait(5)
        self.assertLess(time.monotonic() - t0, 2)
        self.assertNotEqual(code, 0)
        t.join(30)

    def test_drain_timeout_bounds_the_wait(self):
        up = self.start_upstream()
        sc = self.start_sidecar(up.port, "--drain-timeout", "1s")
        t = threading.Thread(target=lambda: self.curl(f"https://localhost:{sc.port}/stall", timeout=20))
        t.start()
        self.wait_in_flight(sc)
        t0 = time.monotonic()
        sc.send(signal.SIGTERM)
        self.assertEqual(sc.wait(10), 0)
        self.assertLess(time.monotonic() - t0, 4)
        t.join(30)


if __name__ == "__main__":
    unittest.main()
