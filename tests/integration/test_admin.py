"""The admin listener under abuse (bounded connections, no spin at the descriptor limit), and a
second sidecar on a port the first holds."""
import os
import socket
import time
import unittest
from unittest import mock

import harness
from harness import SidecarTestCase, wait_for, wait_port

ADMIN_BOUND = 32  # kAdminMaxConnections in sidecar/control/server.cpp
NOFILE = 128


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_share(pid, seconds=2.0):
    """The share of one core the process used over the next `seconds`."""
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def connect_many(port, n):
    out = []
    for _ in range(n):
        out.append(socket.create_connection(("127.0.0.1", port), timeout=5))
    return out


def close_all(socks):
    for s in socks:
        s.close()


class AdminTest(SidecarTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # prlimit sets the soft and the hard limit, so the sidecar cannot raise its own.
        cls.limited = os.path.join(cls.tmp, "sidecar-nofile")
        with open(cls.limited, "w") as f:
            f.write(f'#!/bin/sh\nexec prlimit --nofile={NOFILE} -- "$SIDECAR_REAL" "$@"\n')
        os.chmod(cls.limited, 0o755)

    def start_limited_sidecar(self, upstream_port, *extra):
        """A sidecar whose descriptor limit is NOFILE (exec'd, so the pid is the sidecar's)."""
        real = harness.SIDECAR
        with mock.patch.object(harness, "SIDECAR", self.limited):
            return self.start_sidecar(upstream_port, *extra, env={"SIDECAR_REAL": real})

    def ping(self, sc):
        with self.tls_socket(sc.port) as s:
            s.sendall(b"GET /ping HTTP/1.1\r\nHost: svc\r\n\r\n")
            return self.read_response(s)

    def test_admin_connections_are_bounded_at_the_descriptor_limit(self):
        app = self.start_pinghelp()
        sc = self.start_limited_sidecar(app.port)
        # More admin connections than the process has descriptors: unbounded, they took them all
        # and the accept loop spun on EMFILE (96 % of a core) while callers got no answer.
        hogs = connect_many(sc.admin, NOFILE + 32)
        try:
            time.sleep(0.5)  # let the sidecar accept what it will
            share = cpu_share(sc.pid)
            self.assertLess(share, 0.2, f"sidecar used {share:.0%} of a core with admin hogs")
            self.assertLess(open_fds(sc.pid), NOFILE - 16, "admin connections took the descriptors")
            # Callers still get through, and so does a scrape: it takes the longest-waiting
            # hog's place.
            self.assertEqual(self.ping(sc), (200, b"pong"))
            self.assertEqual(self.admin_get(sc, "/admin/ping"), (200, "pong"))
            self.assertEqual(self.metric(sc, "sidecar_admin_connections_open"), ADMIN_BOUND)
            evicted = self.metric(sc, "sidecar_admin_connections_evicted_total")
            self.assertGreaterEqual(evicted, len(hogs) - ADMIN_BOUND)
            self.assertEqual(self.metric(sc, "sidecar_admin_connections_refused_total"), 0)
            _, text = self.admin_get(sc, "/metrics")
            for name in ("sidecar_admin_connections_open",
                         "sidecar_admin_connections_refused_total",
                         "sidecar_admin_connections_evicted_total"):
                self.assertRegex(text, rf"# HELP {name} \S")
            # The oldest hogs were closed by the sidecar: they read end of stream.
            hogs[0].settimeout(5)
            self.assertEqual(hogs[0].recv(1), b"")
        finally:
            close_all(hogs)
        wait_for(lambda: self.metric(sc, "sidecar_admin_connections_open") == 1, timeout=10,
                 what="hogs gone from the gauge")
        self.assertEqual(self.ping(sc), (200, b"pong"))
        self.assertEqual(self.admin_get(sc, "/admin/ping"), (200, "pong"))
        self.assertNotIn("event=accept_failed", sc.output())
        self.assertIsNone(sc.poll())

    # The sanitizers' runtime needs descriptors of its own: at EMFILE, UBSan's vptr check cannot
    # make the pipe it probes memory with, reports "invalid vptr" on a live object (seen in
    # spdlog's fmt buffer and in the worker's session list) and halts the process. The plain
    # stage runs this test.
    @unittest.skipIf(os.environ.get("SIDECAR_SANITIZED"), "the sanitizer runtime fails at EMFILE")
    def test_accept_backs_off_at_the_descriptor_limit(self):
        app = self.start_pinghelp()
        # Callers mid-handshake fill the descriptors (--max-connections above what fits).
        sc = self.start_limited_sidecar(app.port, "--max-connections", "1000",
                                        "--handshake-timeout", "60s")
        callers = connect_many(sc.port, NOFILE + 16)
        admins = []
        try:
            self.at_the_limit(sc, callers, admins)
        finally:
            close_all(callers + admins)
        self.assertIsNone(sc.poll())

    def at_the_limit(self, sc, callers, admins):
        """The sidecar out of descriptors: no spin, few log lines; then it recovers."""
        wait_for(lambda: open_fds(sc.pid) >= NOFILE - 1, timeout=10,
                 what="sidecar at its descriptor limit")
        # Admin connections now wait in the backlog; accepting them fails with EMFILE.
        admins += connect_many(sc.admin, 8)
        time.sleep(0.5)
        t0 = time.monotonic()
        share = cpu_share(sc.pid)
        self.assertLess(share, 0.2, f"sidecar used {share:.0%} of a core at EMFILE")
        def admin_lines():
            return [l for l in sc.output().splitlines()
                    if "event=accept_failed" in l and "listener=admin" in l]
        # At most LogLimiter::kPerSecond (10) lines a second; the first line of a later second
        # says how many were left out. Wait for it rather than guess when it comes (a sanitized
        # build retries the accept more slowly).
        wait_for(lambda: any("suppressed=" in l for l in admin_lines()), timeout=10,
                 what="an accept_failed line with suppressed=")
        elapsed = time.monotonic() - t0 + 0.5
        lines = admin_lines()
        self.assertLessEqual(len(lines), 10 * (elapsed + 2))
        close_all(callers)
        # With the callers gone the queued admin connections are served, and new callers are.
        wait_for(lambda: open_fds(sc.pid) < NOFILE // 2, timeout=15, what="descriptors back")
        self.assertEqual(self.admin_get(sc, "/admin/ping"), (200, "pong"))
        self.assertEqual(self.ping(sc), (200, b"pong"))
        self.assertEqual(self.metric(sc, "sidecar_admin_connections_open"), len(admins) + 1)

    def test_second_sidecar_on_a_held_port_refuses_to_start(self):
        app = self.start_pinghelp()
        first = self.start_sidecar(app.port)  # two workers share --listen among themselves
        listen = f"127.0.0.1:{first.port}"
        second = self.start_sidecar(app.port, "--listen", listen, wait=False)
        wait_for(lambda: second.poll() is not None, timeout=15, what="second sidecar exits")
        self.assertNotEqual(second.returncode, 0)
        self.assertIn(f"sidecar: --listen {listen}: Address already in use",
                      second.output().splitlines())
        # The admin port is not shared either.
        admin = f"127.0.0.1:{first.admin}"
        third = self.start_sidecar(app.port, "--admin-listen", admin, wait=False)
        wait_for(lambda: third.poll() is not None, timeout=15, what="third sidecar exits")
        self.assertNotEqual(third.returncode, 0)
        self.assertIn(f"sidecar: --admin-listen {admin}: Address already in use",
                      third.output().splitlines())
        # The first one still serves every caller (none went to a second process).
        for _ in range(20):
            self.assertEqual(self.ping(first), (200, b"pong"))
        self.assertEqual(self.admin_get(first, "/admin/ping"), (200, "pong"))
        self.assertIsNone(first.poll())
        # And once it is gone, the port can be taken again (its TIME_WAIT does not count).
        first.stop()
        again = self.start_sidecar(app.port, "--listen", listen, wait=False)
        again.port = first.port
        wait_port(again.admin, proc=again)
        wait_port(again.port, proc=again)
        self.assertEqual(self.ping(again), (200, b"pong"))


if __name__ == "__main__":
    unittest.main()
