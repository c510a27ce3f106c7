"""Outbound Thrift routes (--thrift-route 127.0.0.1:PORT=DEST), with real processes: members are
pinghelp's Thrift port each behind its own sidecar's --thrift-listen; the caller is a sidecar
whose route port Apache Thrift's Python client (framed, binary) calls as a local service would.
Members are found statically, or in a real ZooKeeper where the test writes them as serverset JSON
carrying the additional endpoint `thrift`."""
import json
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
import unittest

from harness import PINGHELP, SIDECAR, SidecarTestCase, free_port, reserve_port
from test_thrift import (NODE_CLIENT, PROBE, call, frame, generate_python, node_client, plain_client,
                         raw_connection, read_reply, require_thrift)
from test_thrift_proxy import Collector, read_upgraded_reply, request_header
from harness import wait_for


class TlsRelay:
    """A member that does not speak TTwitter: mTLS in front of pinghelp's own Thrift port (which
    answers the probe with an exception), bytes relayed both ways untouched."""

    def __init__(self, test, certs, target):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(certs.path("server.pem"), certs.path("server.key"))
        self.ctx.load_verify_locations(certs.path("ca.pem"))
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.target = target
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.thrift = self.sock.getsockname()[1]
        test.addCleanup(self.sock.close)
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        try:
            tls = self.ctx.wrap_socket(conn, server_side=True)
            back = socket.create_connection(("127.0.0.1", self.target))
        except OSError:
            return

        def pump(a, b):
            try:
                while True:
                    data = a.recv(65536)
                    if not data:
                        break
                    b.sendall(data)
            except OSError:
                pass
            for x in (a, b):
                try:
                    x.close()
                except OSError:
                    pass
        threading.Thread(target=pump, args=(back, tls), daemon=True).start()
        pump(tls, back)


class ThriftOutboundTest(SidecarTestCase):
    zk = None

    @classmethod
    def setUpClass(cls):
        compiler = require_thrift()
        super().setUpClass()
        cls.PingHelp, cls.ttypes = generate_python(compiler, cls.tmp)

    @classmethod
    def tearDownClass(cls):
        if cls.zk is not None:
            cls.zk.stop(signal.SIGKILL, timeout=10)
        super().tearDownClass()

    # --- processes -------------------------------------------------------------------------------

    def member(self, *extra):
        """pinghelp with a Thrift port, behind its own sidecar's --thrift-listen: the sidecar,
        with .port (HTTP mTLS), .admin and .thrift (Thrift mTLS)."""
        ph = self.spawn_serving("pinghelp", lambda ports: (
            [PINGHELP, "--listen", f"127.0.0.1:{ports[0]}", "--thrift-listen",
             f"127.0.0.1:{ports[1]}"], None), 2)
        sc = self.spawn_serving("member", lambda ports: ([
            SIDECAR, "--listen", f"127.0.0.1:{ports[0]}", "--upstream", f"127.0.0.1:{ph.ports[0]}",
            "--admin-listen", f"127.0.0.1:{ports[1]}", "--thrift-listen", f"127.0.0.1:{ports[2]}",
            "--thrift-upstream", f"127.0.0.1:{ph.ports[1]}", "--workers", "2",
            "--tls-cert", self.certs.path("server.pem"), "--tls-key", self.certs.path("server.key"),
            "--tls-client-ca", self.certs.path("ca.pem"), *extra], None), 3)
        sc.port, sc.admin, sc.thrift = sc.ports
        sc.pinghelp_thrift = ph.ports[1]
        return sc

    def caller(self, dest, *extra):
        """A sidecar with one Thrift route, DEST, on a loopback port of its own (.route; its name
        .name is thrift:PORT). Its own local service is not needed: a port held refused."""
        held = reserve_port()
        self.addCleanup(held.close)
        sc = self.spawn_serving("caller", lambda ports: ([
            SIDECAR, "--listen", f"127.0.0.1:{ports[0]}", "--upstream", f"127.0.0.1:{held.port}",
            "--admin-listen", f"127.0.0.1:{ports[1]}", "--workers", "2",
            "--thrift-route", f"127.0.0.1:{ports[2]}={dest}",
            "--tls-cert", self.certs.path("server.pem"), "--tls-key", self.certs.path("server.key"),
            "--tls-client-ca", self.certs.path("ca.pem"), *extra], None), 3)
        sc.port, sc.admin, sc.route = sc.ports
        sc.name = f"thrift:{sc.route}"
        return sc

    def static(self, *members):
        return "static!" + ",".join(f"127.0.0.1:{m.thrift}" for m in members)

    def shared_zk(self):
        if ThriftOutboundTest.zk is None or ThriftOutboundTest.zk.poll() is not None:
            zk = self.start_zookeeper()
            self.procs.remove(zk)  # outlives the test; tearDownClass stops it
            ThriftOutboundTest.zk = zk
        return ThriftOutboundTest.zk

    def announce(self, zk, path, members):
        """Writes path's parents and one member node per member, as Finagle's announcer would for
        a server with an HTTP main endpoint and a `thrift` additional one."""
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            self.zkctl(zk.port, "create", "/" + "/".join(parts[:i]), "")
        for n, m in enumerate(members):
            data = json.dumps({"serviceEndpoint": {"host": "127.0.0.1", "port": m.port},
                               "additionalEndpoints": {
                                   "thrift": {"host": "127.0.0.1", "port": m.thrift}},
                               "status": "ALIVE"})
            r = self.zkctl(zk.port, "create", f"{path}/member_{n:010d}", data)
            self.assertEqual(r.returncode, 0, r.stderr)

    # --- clients ---------------------------------------------------------------------------------

    def client(self, port):
        return plain_client(self, port)

    def raw(self, port):
        return raw_connection(self, port)

    def decode_exception(self, rest):
        from thrift.Thrift import TApplicationException
        from thrift.protocol import TBinaryProtocol
        from thrift.transport import TTransport
        e = TApplicationException()
        e.read(TBinaryProtocol.TBinaryProtocol(TTransport.TMemoryBuffer(rest)))
        return e

    def replied(self, member):
        return self.metric(member, "sidecar_thrift_calls_total", result="replied")

    def route_requests(self, caller, code):
        return self.metric_sum(caller, "sidecar_outbound_requests_total", route=caller.name,
                               code=code)

    def assertSpread(self, caller, members, calls=40):
        """calls pings on a few connections: all answered, and both members got some."""
        before = [self.replied(m) for m in members]
        for i in range(calls):
            if i % 5 == 0:
                c = self.client(caller.route)
            self.assertEqual(c.ping(), "pong")
        got = [self.replied(m) - b for m, b in zip(members, before)]
        self.assertEqual(sum(got), calls, got)
        for n in got:
            self.assertGreater(n, 0, f"a member got no call: {got}")

    # --- tests -----------------------------------------------------------------------------------

    def test_python_client_calls_ping_help_and_help_for_across_two_static_members(self):
        a, b = self.member(), self.member()
        caller = self.caller(self.static(a, b))
        c = self.client(caller.route)
        self.assertEqual(c.ping(), "pong")
        methods = c.help()
        self.assertGreaterEqual(len(methods), 2)
        self.assertEqual(c.helpFor(methods[0].name).name, methods[0].name)
        with self.assertRaises(self.ttypes.UnknownMethod) as caught:
            c.helpFor("nope")
        self.assertEqual(caught.exception.name, "nope")
        self.assertSpread(caller, [a, b])
        self.assertSettles(lambda: self.route_requests(caller, "2xx"), 44.0)
        # A route like the HTTP ones: on /admin/clients with both members.
        status, text = self.admin_get(caller, "/admin/clients")
        self.assertEqual(status, 200, text)
        routes = {r["route"]: r for r in json.loads(text)["clients"]}
        self.assertEqual({m["address"] for m in routes[caller.name]["members"]},
                         {f"127.0.0.1:{a.thrift}", f"127.0.0.1:{b.thrift}"})
        _, js = self.admin_get(caller, "/admin/metrics.json")
        self.assertEqual(json.loads(js)[f"clnt/{caller.name}/loadbalancer/size"], 2)

    def test_zookeeper_members_with_a_thrift_endpoint_are_called_on_it(self):
        zk = self.shared_zk()
        a, b = self.member(), self.member()
        path = f"/discovery/{self._testMethodName}/pinghelp"
        self.announce(zk, path, [a, b])
        # The serverset's main endpoint is the members' HTTP port: only !thrift reaches Thrift.
        caller = self.caller(f"zk2!127.0.0.1:{zk.port}!{path}!thrift")
        self.assertSpread(caller, [a, b])
        # A path on --zk names the same members.
        on_zk = self.caller(f"{path}!thrift", "--zk", f"127.0.0.1:{zk.port}")
        self.assertSpread(on_zk, [a, b], calls=20)

    def test_an_empty_serverset_gives_internal_error_with_the_callers_seqid(self):
        zk = self.shared_zk()
        path = f"/discovery/{self._testMethodName}/pinghelp"
        self.announce(zk, path, [])
        caller = self.caller(f"zk2!127.0.0.1:{zk.port}!{path}!thrift")
        s = self.raw(caller.route)
        s.sendall(frame(call("ping", -42)))
        kind, name, seqid, rest = read_reply(s)
        self.assertEqual((kind, name, seqid), (3, "ping", -42))
        e = self.decode_exception(rest)
        self.assertEqual(e.type, 6)  # INTERNAL_ERROR
        self.assertIn(f"no usable member of route {caller.name}", e.message)
        # The connection stays usable: the next call gets its own answer.
        s.sendall(frame(call("help", 9)))
        self.assertEqual(read_reply(s)[:3], (3, "help", 9))
        self.assertSettles(lambda: self.metric_sum(caller, "sidecar_outbound_no_members_total",
                                                   route=caller.name), 2.0)

    def test_a_killed_member_sidecar_leaves_the_calls_to_the_other(self):
        from thrift.Thrift import TApplicationException
        a, b = self.member(), self.member()
        caller = self.caller(self.static(a, b))
        self.assertSpread(caller, [a, b], calls=20)  # both have pooled connections now
        a.stop(signal.SIGKILL, timeout=10)
        before = self.replied(b)
        c = self.client(caller.route)
        for i in range(30):
            if i % 10 == 0:
                c = self.client(caller.route)
            try:
                self.assertEqual(c.ping(), "pong")
            except TApplicationException as e:
                self.fail(f"call {i} failed: {e.message}")
        self.assertEqual(self.replied(b) - before, 30)
        # (Whether any call met a's dead connections depends on the balancer: with two members
        # P2C always weighs both, and may prefer b throughout. The next test makes it meet one.)

    def test_node_client_calls_across_two_members(self):
        node, work = node_client(self, NODE_CLIENT)
        a, b = self.member(), self.member()
        caller = self.caller(self.static(a, b))
        for _ in range(4):  # each run a new connection; its calls balanced on their own
            r = subprocess.run([node, "client.js", str(caller.route)], cwd=work,
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            got = json.loads(r.stdout)
            self.assertEqual(got["ping"], "pong")
            self.assertIn("ping", [m["name"] for m in got["help"]])
            self.assertEqual(got["helpFor"]["name"], "ping")
            self.assertEqual(got["unknown"], {"isUnknownMethod": True, "name": "nope"})
        self.assertEqual(self.replied(a) + self.replied(b), 16)
        self.assertGreater(self.replied(a), 0)
        self.assertGreater(self.replied(b), 0)

    def test_a_call_refused_by_a_dead_member_is_retried_on_the_other(self):
        from thrift.Thrift import TApplicationException
        held = reserve_port()  # bound, not listening: connections refused
        self.addCleanup(held.close)
        b = self.member()
        caller = self.caller(f"static!127.0.0.1:{held.port},127.0.0.1:{b.thrift}")
        c = self.client(caller.route)
        for i in range(20):
            try:
                self.assertEqual(c.ping(), "pong")
            except TApplicationException as e:
                self.fail(f"call {i} failed: {e.message}")
        self.assertEqual(self.replied(b), 20)
        # The dead member was tried (a new member is) and each such call went on to b.
        self.assertGreaterEqual(self.metric_sum(caller, "sidecar_outbound_retries_total",
                                                route=caller.name), 1)

    def test_no_reachable_member_gives_internal_error_and_the_python_client_sees_it(self):
        from thrift.Thrift import TApplicationException
        held = reserve_port()  # bound, not listening: connections refused
        self.addCleanup(held.close)
        caller = self.caller(f"static!127.0.0.1:{held.port}")
        c = self.client(caller.route)
        with self.assertRaises(TApplicationException) as caught:
            c.ping()
        self.assertEqual(caught.exception.type, TApplicationException.INTERNAL_ERROR)
        self.assertIn(caller.name, caught.exception.message)
        self.assertIn("refused", caught.exception.message)
        with self.assertRaises(TApplicationException):
            c.ping()  # the same connection, answered again
        self.assertSettles(lambda: self.route_requests(caller, "5xx"), 2.0)

    def test_pipelined_calls_are_answered_in_order_and_a_probe_is_answered_here(self):
        a, b = self.member(), self.member()
        caller = self.caller(self.static(a, b))
        s = self.raw(caller.route)
        s.sendall(frame(call("ping", -12345)) + frame(call("help", 7)) +
                  frame(call("ping", 2**31 - 1)))
        self.assertEqual(read_reply(s)[:3], (2, "ping", -12345))
        self.assertEqual(read_reply(s)[:3], (2, "help", 7))
        self.assertEqual(read_reply(s)[:3], (2, "ping", 2**31 - 1))
        # A Finagle local client's probe is answered here with a REPLY (it costs no member a
        # call); the members' sidecars see only our own probes, one per new connection.
        t = self.raw(caller.route)
        t.sendall(frame(call(PROBE, 0)))
        self.assertEqual(read_reply(t), (2, PROBE, 0, b"\x00"))
        self.assertEqual(self.metric(caller, "sidecar_thrift_outbound_probes_total",
                                     route=caller.name), 1)
        upgrades = self.metric(caller, "sidecar_thrift_outbound_upgrades_total",
                               route=caller.name, result="upgraded")
        self.assertGreaterEqual(upgrades, 1)
        self.assertEqual(sum(self.metric(m, "sidecar_thrift_probes_total") for m in (a, b)),
                         upgrades)

    def test_calls_to_an_upgrading_member_carry_our_client_id_and_the_local_trace(self):
        collector = Collector(self)
        member = self.member("--zipkin-url", collector.url, "--trace-sample-rate", "0")
        caller = self.caller(self.static(member), "--thrift-client-id", "caller-svc")
        # A plain local client: the member still gets a RequestHeader, with our client id.
        c = self.client(caller.route)
        self.assertEqual(c.ping(), "pong")
        self.assertEqual(self.metric(member, "sidecar_thrift_client_requests_total",
                                     client_id="caller-svc"), 1)
        # A Finagle local client: its trace continues to the member (a child of its span).
        s = self.raw(caller.route)
        s.sendall(frame(call(PROBE, 9)))
        self.assertEqual(read_reply(s), (2, PROBE, 9, b"\x00"))
        s.sendall(frame(request_header(0xABC, 0xDEF, sampled=True, client_id="local",
                                       contexts=[(b"k", b"v")]) + call("ping", 41)))
        rh, kind, name, seqid, _ = read_upgraded_reply(s)
        self.assertEqual((rh, kind, name, seqid), (b"\x00", 2, "ping", 41))
        wait_for(lambda: collector.spans, timeout=10, what="the member's server span")
        span = collector.spans[0]
        self.assertEqual(span["traceId"], "0000000000000abc")
        self.assertEqual(span["parentId"], "0000000000000def")
        self.assertNotEqual(span["id"], "0000000000000def")
        self.assertEqual(span["tags"]["thrift.client_id"], "caller-svc")
        self.assertEqual(self.metric(member, "sidecar_thrift_client_requests_total",
                                     client_id="caller-svc"), 2)
        self.assertEqual(self.metric(caller, "sidecar_thrift_outbound_upgrades_total",
                                     route=caller.name, result="refused"), 0)

    def test_a_member_that_refuses_the_upgrade_gets_plain_thrift(self):
        ph = self.member()  # its pinghelp's own Thrift port, behind a TLS relay of ours
        relay = TlsRelay(self, self.certs, ph.pinghelp_thrift)
        caller = self.caller(f"static!127.0.0.1:{relay.thrift}")
        c = self.client(caller.route)
        for _ in range(3):
            self.assertEqual(c.ping(), "pong")
        self.assertGreaterEqual(len(c.help()), 2)
        s = self.raw(caller.route)
        s.sendall(frame(call(PROBE, 1)))
        read_reply(s)
        s.sendall(frame(request_header(5, 6) + call("ping", 2)))
        self.assertEqual(read_upgraded_reply(s)[:4], (b"\x00", 2, "ping", 2))
        self.assertGreaterEqual(self.metric(caller, "sidecar_thrift_outbound_upgrades_total",
                                            route=caller.name, result="refused"), 1)
        self.assertEqual(self.metric(caller, "sidecar_thrift_outbound_upgrades_total",
                                     route=caller.name, result="upgraded"), 0)

    def test_an_oversized_frame_closes_only_its_connection_and_is_counted(self):
        a = self.member()
        caller = self.caller(self.static(a), "--thrift-max-frame", "1024")
        s = self.raw(caller.route)
        s.sendall(struct.pack(">i", 2000) + b"\x80\x01\x00\x01")
        s.settimeout(5)
        self.assertEqual(s.recv(100), b"")
        self.assertSettles(lambda: self.metric(caller, "sidecar_thrift_outbound_frames_refused_total",
                                               route=caller.name, reason="too_large"), 1.0)
        self.assertEqual(self.client(caller.route).ping(), "pong", "the sidecar carries on")

    def test_a_frame_with_a_second_message_is_refused_before_any_member_sees_it(self):
        # A member would answer both messages, and the second answer would wait on the pooled
        # member connection for the next call of the same name and seqid.
        a = self.member()
        caller = self.caller(self.static(a))
        s = self.raw(caller.route)
        s.sendall(frame(call("ping", 0) + call("ping", 0)))
        kind, name, seqid, rest = read_reply(s)
        self.assertEqual((kind, name, seqid), (3, "ping", 0))
        self.assertEqual(self.decode_exception(rest).type, 7)  # PROTOCOL_ERROR
        s.settimeout(5)
        self.assertEqual(s.recv(100), b"")
        self.assertSettles(lambda: self.metric(caller, "sidecar_thrift_outbound_frames_refused_total",
                                               route=caller.name, reason="malformed"), 1.0)
        self.assertEqual(self.replied(a), 0, "the member never saw the frame")
        self.assertEqual(self.client(caller.route).ping(), "pong", "the sidecar carries on")

    def test_a_non_loopback_route_port_without_the_flag_exits_2_with_one_line(self):
        r = subprocess.run([
            SIDECAR, "--thrift-route", f"0.0.0.0:{free_port()}=static!127.0.0.1:1",
            "--tls-cert", self.certs.path("server.pem"), "--tls-key", self.certs.path("server.key"),
            "--tls-client-ca", self.certs.path("ca.pem")], capture_output=True, text=True,
            timeout=30)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertIn("--thrift-route", r.stderr)
        self.assertIn("loopback", r.stderr)


if __name__ == "__main__":
    unittest.main()
