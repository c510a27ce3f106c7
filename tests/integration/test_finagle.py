"""A Finagle fleet sees us as one of its own (issue 23), against real ZooKeeper servers: members
written byte for byte as Finagle's announcer writes them (Gson, fields in the order
serviceEndpoint, additionalEndpoints, status, shard), read through every address form a Finagle
client uses (zk2!, zk2! with ensembles joined by '#', the older zk!), by `sidecar resolve` and by
outbound routes; and a caller that keeps calling a withdrawn member for as long as Finagle's zk2!
resolver does, failing no call with the default --deregister-grace; and a rolling restart of three
members behind a caller that keeps removed members for a 10 s stabilisation window, failing no
request."""
import json
import signal
import subprocess
import threading
import time
import unittest

from harness import SIDECAR, SLOW, SidecarTestCase, wait_for

PATH = "/discovery/finagle/svc"

# Finagle's Zk2Resolver stabilises removals over two turns of a 10 s epoch (Stabilizer.scala): a
# removed member stays in its callers' sets for 10 to 20 s after ZooKeeper lost it.
FINAGLE_REMOVAL_WINDOW = 20.0
# The done-when: a caller that keeps a removed member in its set for 10 s.
STABILISATION_WINDOW = 10.0


def finagle_member(service=None, additional=(), shard=0, status="ALIVE"):
    """The bytes Finagle's announcer writes: Gson's compact JSON in the schema's field order, with
    no serviceEndpoint at all when there is none (Gson leaves out a null field)."""
    def endpoint(hp):
        return '{"host":"%s","port":%d}' % hp
    out = "{"
    if service is not None:
        out += '"serviceEndpoint":%s,' % endpoint(service)
    out += '"additionalEndpoints":{%s},' % ",".join('"%s":%s' % (name, endpoint(hp)) for name, hp in additional)
    out += '"status":"%s","shard":%d}' % (status, shard)
    return out


class FinagleTest(SidecarTestCase):

    def write(self, zk, path, data=""):
        """Creates path (and its missing parents, empty) in zk, persistent, with data."""
        parts = path.strip("/").split("/")
        for i in range(1, len(parts)):
            self.zkctl(zk.port, "create", "/" + "/".join(parts[:i]), "")
        r = self.zkctl(zk.port, "create", path, data)
        self.assertEqual(r.returncode, 0, r.stderr)

    def resolve(self, address, *extra):
        r = subprocess.run([SIDECAR, "resolve", address, *extra], capture_output=True, text=True, timeout=60)
        return r.returncode, [json.loads(line) for line in r.stdout.splitlines()], r.stderr

    def test_members_written_as_finagle_writes_them_resolve_by_every_address_form(self):
        a, b = self.start_zookeeper(), self.start_zookeeper()
        local = "127.0.0.1"
        self.write(a, f"{PATH}/member_0000000000",
                   finagle_member((local, 8001), [("thrift", (local, 9001))], shard=0))
        # Named endpoints only: Finagle's Entry selects it by name and never by default.
        self.write(a, f"{PATH}/member_0000000001", finagle_member(None, [("thrift", (local, 9002))], shard=1))
        # Nothing to call at all: malformed, named on stderr.
        self.write(a, f"{PATH}/member_0000000002", finagle_member(None, [], shard=2))
        self.write(b, f"{PATH}/member_0000000000", finagle_member((local, 8003), [], shard=3))
        self.write(b, f"{PATH}/member_0000000001", finagle_member((local, 8001), [], shard=0))  # also in a
        za, zb = f"{local}:{a.port}", f"{local}:{b.port}"

        def ports(lines):
            return sorted(line["port"] for line in lines)

        rc, lines, err = self.resolve(f"zk2!{za}!{PATH}")
        self.assertEqual((rc, ports(lines)), (0, [8001]), err)
        self.assertEqual(err.strip().splitlines(),
                         ["skipped malformed member member_0000000002: no serviceEndpoint and no additional "
                          "endpoint with a string host and a port from 1 to 65535"])

        rc, lines, err = self.resolve(f"zk2!{za}!{PATH}!thrift")
        self.assertEqual((rc, ports(lines)), (0, [9001, 9002]), err)
        self.assertEqual({l["member"]: l["shard"] for l in lines},
                         {"member_0000000000": 0, "member_0000000001": 1})

        # Finagle's older resolver form: the same members, the third part an endpoint name.
        rc, lines, err = self.resolve(f"zk!{za}!{PATH}!thrift")
        self.assertEqual((rc, ports(lines)), (0, [9001, 9002]), err)
        rc, lines, err = self.resolve(f"zk!{za}!{PATH}")
        self.assertEqual((rc, ports(lines)), (0, [8001]), err)

        # Two ensembles joined by '#': one set, each host:port once, named by their ensemble.
        rc, lines, err = self.resolve(f"zk2!{za}#{zb}!{PATH}")
        self.assertEqual(rc, 0, err)
        self.assertEqual(sorted((l["member"], l["port"]) for l in lines),
                         [(f"member_0000000000@{za}", 8001), (f"member_0000000000@{zb}", 8003)])
        self.assertIn(f"skipped malformed member member_0000000002@{za}", err)

        # One ensemble out of reach: no whole set within the timeout, and the line says which.
        b.stop(signal.SIGKILL)
        rc, lines, err = self.resolve(f"zk2!{za}#{zb}!{PATH}", "--timeout", "2s")
        self.assertEqual((rc, lines), (1, []), err)
        self.assertIn(f"no answer from ZooKeeper at {zb} within 2000 ms", err)

        for bad in (f"zk!{za}#{zb}!{PATH}", f"zk2!{za}#!{PATH}", f"zk2!{za}!{PATH}!"):
            with self.subTest(address=bad):
                rc, lines, err = self.resolve(bad)
                self.assertEqual(rc, 2, err)
                self.assertEqual(len(err.strip().splitlines()), 1, err)
                self.assertIn(bad, err)

    def test_routes_reach_members_of_two_ensembles_and_members_without_a_service_endpoint(self):
        a, b = self.start_zookeeper(), self.start_zookeeper()
        ph = self.start_pinghelp()
        first = self.start_member(a, PATH, ph.port)
        second = self.start_member(b, PATH, ph.port)
        # A Finagle server's member with its HTTP port only as the named endpoint "http".
        third = self.start_sidecar(ph.port)
        named = "/discovery/finagle/named"
        self.write(a, f"{named}/member_0000000000", finagle_member(None, [("http", ("127.0.0.1", third.port))], shard=7))
        za, zb = f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"
        caller = self.start_outbound_sidecar("--route", f"both=zk2!{za}#{zb}!{PATH}",
                                             "--route", f"old=zk!{za}!{named}!http")

        def members(route):
            status, text = self.admin_get(caller, "/admin/clients")
            clients = {c["route"]: c for c in json.loads(text)["clients"]}
            return sorted(m["address"] for m in clients[route]["members"]) if route in clients else []

        def wait_members(route, *procs):
            want = sorted(f"127.0.0.1:{p.port}" for p in procs)
            wait_for(lambda: members(route) == want, timeout=10 * SLOW, what=f"route {route} resolved to {want}")

        def calls(route):
            for _ in range(3):
                self.assertEqual(self.outbound_call(caller.outbound, route, "/ping")[:2], (200, b"pong"))

        # The old form, and a member without serviceEndpoint called on its named endpoint.
        wait_members("old", third)
        calls("old")
        self.assertGreater(self.metric_sum(third, "sidecar_requests_total", code="2xx"), 0)

        # The union of both ensembles: with the member in a gone, b's carries the calls.
        wait_members("both", first, second)
        calls("both")
        self.assertEqual(first.stop(), 0)
        wait_members("both", second)
        calls("both")
        self.assertGreater(self.metric_sum(second, "sidecar_requests_total", code="2xx"), 0)

    def test_a_caller_that_calls_a_withdrawn_member_as_long_as_finagle_does_sees_no_failure(self):
        zk = self.start_zookeeper()
        ph = self.start_pinghelp()
        sc = self.start_member(zk, PATH, ph.port, grace=None)  # the default --deregister-grace

        def call():
            s = self.tls_socket(sc.port)
            try:
                s.sendall(b"GET /ping HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n")
                return self.read_response(s)
            finally:
                s.close()

        self.assertEqual(call(), (200, b"pong"))
        sc.send(signal.SIGTERM)  # a rolling deploy takes this member away
        wait_for(lambda: self.members(zk.port, PATH) == [], timeout=5, what="member withdrawn")
        removed = time.monotonic()
        # What a Finagle client does: it keeps calling the member, on new connections too, until
        # its resolver lets go of it.
        answers, failures = 0, []
        while time.monotonic() - removed < FINAGLE_REMOVAL_WINDOW:
            try:
                status, body = call()
                if (status, body) != (200, b"pong"):
                    failures.append(f"{time.monotonic() - removed:.1f}s: {status} {body!r}")
                answers += 1
            except OSError as e:
                failures.append(f"{time.monotonic() - removed:.1f}s: {e}")
            time.sleep(0.1)
        self.assertEqual(failures, [])
        self.assertGreater(answers, 50)
        self.assertEqual(self.admin_get(sc, "/health")[0], 503)  # draining all along
        # The grace ends soon after the window, and the sidecar with it.
        self.assertEqual(sc.wait(15 * SLOW), 0)


    def test_a_rolling_restart_behind_a_caller_with_a_10s_stabilisation_window_fails_no_request(self):
        zk = self.start_zookeeper()
        ph = self.start_pinghelp()
        address = f"zk2!127.0.0.1:{zk.port}!{PATH}"

        def member():
            return self.start_member(zk, PATH, ph.port, grace=None)  # the default --deregister-grace

        olds = [member() for _ in range(3)]

        # The caller, as a Finagle client with a stabilisation window: it reads the serverset over
        # and over, adds a member as soon as it appears and keeps a removed one in its set for
        # STABILISATION_WINDOW after it disappeared (the last read that still had it); a failed
        # read changes nothing. It sends requests round robin over its set, each on a new mTLS
        # connection, without pause, for the whole restart.
        lock = threading.Lock()
        seen = {}        # port -> monotonic time of the last read that had it
        announced = []   # the ports in the last read
        served = {}      # port -> answers
        failures = []
        done = threading.Event()

        def current():
            now = time.monotonic()
            with lock:
                return sorted(p for p, t in seen.items() if now - t < STABILISATION_WINDOW)

        def watch():
            while not done.is_set():
                rc, lines, _ = self.resolve(address, "--timeout", "2s")
                if rc == 0:
                    now = time.monotonic()
                    with lock:
                        announced[:] = sorted(line["port"] for line in lines)
                        for port in announced:
                            seen[port] = now
                done.wait(0.1)

        def call(port):
            s = self.tls_socket(port)
            try:
                s.sendall(b"GET /ping HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n")
                return self.read_response(s)
            finally:
                s.close()

        start = time.monotonic()

        def send():
            turn = 0
            while not done.is_set():
                ports = current()
                if not ports:
                    time.sleep(0.05)
                    continue
                port = ports[turn % len(ports)]
                turn += 1
                try:
                    answer = call(port)
                    if answer != (200, b"pong"):
                        failures.append(f"{time.monotonic() - start:.1f}s: {port}: {answer!r}")
                    else:
                        with lock:
                            served[port] = served.get(port, 0) + 1
                except OSError as e:
                    failures.append(f"{time.monotonic() - start:.1f}s: {port}: {e!r}")
                time.sleep(0.02)

        threads = [threading.Thread(target=watch), threading.Thread(target=send)]
        for t in threads:
            t.start()
        try:
            def in_set(procs):
                return lambda: set(p.port for p in procs) <= set(current())

            wait_for(in_set(olds), timeout=10 * SLOW, what="the caller has the three members")
            # The rolling deploy: a replacement comes up and is announced, then the member it
            # replaces is stopped; the next replacement starts during that member's grace, and the
            # next member is stopped only once the last one is gone: one withdrawing at a time.
            news = [member()]
            for i, old in enumerate(olds):
                wait_for(in_set(news), timeout=10 * SLOW, what=f"the caller has replacement {i}")
                old.send(signal.SIGTERM)
                wait_for(lambda: old.port not in announced, timeout=5 * SLOW, what=f"member {i} withdrawn")
                if i + 1 < len(olds):
                    news.append(member())
                    self.assertEqual(old.wait(30 * SLOW), 0)
            # The last one is gone from the caller's set once its window has passed.
            wait_for(lambda: current() == sorted(p.port for p in news),
                     timeout=(STABILISATION_WINDOW + 5) * SLOW, what="the caller let go of the last stopped member")
        finally:
            done.set()
            for t in threads:
                t.join(30)
        self.assertEqual(failures, [])
        for p in olds + news:
            self.assertGreater(served.get(p.port, 0), 0, f"member on {p.port} served no request: {served}")

if __name__ == "__main__":
    unittest.main()
