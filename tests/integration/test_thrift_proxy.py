"""Inbound Thrift through the sidecar (--thrift-listen, --thrift-upstream): pinghelp's Thrift
port behind a sidecar, called over mTLS by Apache Thrift's Python library (python3-thrift,
TSSLSocket with the client certificate, framed, binary); Finagle's upgrade probe answered by the
sidecar; seqids echoed; oversized and non-Thrift frames closing the connection and counted; the
local service down and a caller not allowed answered with a TApplicationException; the announced
member's `thrift` endpoint."""
import json
import socket
import ssl
import struct
import subprocess
import unittest

from harness import PINGHELP, SIDECAR, SLOW, SidecarTestCase, wait_for
from test_thrift import PROBE, call, frame, generate_python, read_reply, require_thrift


class ThriftProxyTest(SidecarTestCase):

    @classmethod
    def setUpClass(cls):
        compiler = require_thrift()
        super().setUpClass()
        cls.PingHelp, cls.ttypes = generate_python(compiler, cls.tmp)

    def start(self, *extra, thrift_upstream=None):
        """pinghelp with a Thrift port, and a sidecar whose --thrift-listen passes to it (or to
        thrift_upstream, a port of the test's own)."""
        ph = self.spawn_serving("pinghelp", lambda ports: (
            [PINGHELP, "--listen", f"127.0.0.1:{ports[0]}", "--thrift-listen",
             f"127.0.0.1:{ports[1]}"], None), 2)
        ph.http, ph.thrift = ph.ports
        sc = self.spawn_serving("sidecar", lambda ports: ([
            SIDECAR, "--listen", f"127.0.0.1:{ports[0]}",
            "--upstream", f"127.0.0.1:{ph.http}", "--admin-listen", f"127.0.0.1:{ports[1]}",
            "--thrift-listen", f"127.0.0.1:{ports[2]}",
            "--thrift-upstream", f"127.0.0.1:{thrift_upstream or ph.thrift}", "--workers", "2",
            "--tls-cert", self.certs.path("server.pem"), "--tls-key", self.certs.path("server.key"),
            "--tls-client-ca", self.certs.path("ca.pem"), *extra], None), 3)
        sc.port, sc.admin, sc.thrift = sc.ports
        return ph, sc

    def client(self, port, cert="client"):
        """Apache Thrift's Python client over TLS with a client certificate, framed, binary."""
        from thrift.protocol import TBinaryProtocol
        from thrift.transport import TSSLSocket, TTransport
        sock = TSSLSocket.TSSLSocket("127.0.0.1", port, cert_reqs=ssl.CERT_REQUIRED,
                                     ca_certs=self.certs.path("ca.pem"),
                                     certfile=self.certs.path(f"{cert}.pem"),
                                     keyfile=self.certs.path(f"{cert}.key"))
        sock.setTimeout(10_000)
        transport = TTransport.TFramedTransport(sock)
        transport.open()
        self.addCleanup(transport.close)
        return self.PingHelp.Client(TBinaryProtocol.TBinaryProtocol(transport))

    def raw(self, port, cert="client"):
        s = self.tls_socket(port, cert)
        self.addCleanup(s.close)
        return s

    def decode_exception(self, rest):
        """The TApplicationException after a reply's header, decoded by Apache Thrift itself."""
        from thrift.Thrift import TApplicationException
        from thrift.protocol import TBinaryProtocol
        from thrift.transport import TTransport
        e = TApplicationException()
        e.read(TBinaryProtocol.TBinaryProtocol(TTransport.TMemoryBuffer(rest)))
        return e

    def assertClosed(self, sock, within=5):
        sock.settimeout(within)
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            return
        except socket.timeout:
            self.fail(f"the connection is still open after {within}s")
        self.assertEqual(data, b"", "expected the connection closed, got bytes")

    def counter(self, sc, name, **labels):
        return self.metric(sc, name, **labels)

    def test_python_client_calls_ping_help_and_help_for_through_the_sidecar(self):
        _, sc = self.start()
        c = self.client(sc.thrift)
        self.assertEqual(c.ping(), "pong")
        methods = c.help()
        self.assertGreaterEqual(len(methods), 2)
        self.assertEqual(c.helpFor(methods[0].name).name, methods[0].name)
        with self.assertRaises(self.ttypes.UnknownMethod):
            c.helpFor("nope")
        self.assertEqual(c.ping(), "pong")
        self.assertSettles(lambda: self.counter(sc, "sidecar_thrift_calls_total",
                                                result="replied"), 5.0)

    def test_finagle_probe_is_answered_by_the_sidecar_and_the_connection_goes_on(self):
        _, sc = self.start()
        s = self.raw(sc.thrift)
        probe = frame(call(PROBE, 0))
        self.assertEqual(len(probe), 44)
        s.sendall(probe)
        kind, name, seqid, rest = read_reply(s)
        self.assertEqual((kind, name, seqid), (3, PROBE, 0))
        e = self.decode_exception(rest)
        self.assertEqual(e.type, 1)  # UNKNOWN_METHOD
        s.sendall(frame(call("ping", 5)))
        kind, name, seqid, _ = read_reply(s)
        self.assertEqual((kind, name, seqid), (2, "ping", 5))
        self.assertEqual(self.counter(sc, "sidecar_thrift_probes_total"), 1)
        self.assertEqual(self.counter(sc, "sidecar_thrift_calls_total", result="replied"), 1)

    def test_negative_seqid_echoed_and_pipelined_calls_answered_in_order(self):
        _, sc = self.start()
        s = self.raw(sc.thrift)
        s.sendall(frame(call("ping", -12345)) + frame(call("ping", 7)) + frame(call("help", -1)))
        self.assertEqual(read_reply(s)[:3], (2, "ping", -12345))
        self.assertEqual(read_reply(s)[:3], (2, "ping", 7))
        self.assertEqual(read_reply(s)[:3], (2, "help", -1))

    def test_frame_over_the_limit_closes_the_connection_and_is_counted(self):
        _, sc = self.start("--thrift-max-frame", "1024")
        s = self.raw(sc.thrift)
        s.sendall(struct.pack(">i", 2000) + b"\x80\x01\x00\x01")
        self.assertClosed(s)
        self.assertSettles(lambda: self.counter(sc, "sidecar_thrift_frames_refused_total",
                                                reason="too_large"), 1.0)
        self.assertEqual(self.client(sc.thrift).ping(), "pong", "the sidecar carries on")

    def test_non_thrift_frame_closes_the_connection_and_is_counted(self):
        _, sc = self.start()
        s = self.raw(sc.thrift)
        s.sendall(frame(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        self.assertClosed(s)
        self.assertSettles(lambda: self.counter(sc, "sidecar_thrift_frames_refused_total",
                                                reason="not_thrift"), 1.0)
        self.assertEqual(self.client(sc.thrift).ping(), "pong", "the sidecar carries on")

    def test_local_service_down_gives_internal_error_with_the_calls_seqid(self):
        from thrift.Thrift import TApplicationException
        ph, sc = self.start()
        c = self.client(sc.thrift)
        self.assertEqual(c.ping(), "pong")
        ph.stop()
        with self.assertRaises(TApplicationException) as caught:
            c.ping()
        self.assertEqual(caught.exception.type, TApplicationException.INTERNAL_ERROR)
        self.assertIn("local Thrift service", caught.exception.message)
        s = self.raw(sc.thrift)
        s.sendall(frame(call("ping", -77)))
        kind, name, seqid, rest = read_reply(s)
        self.assertEqual((kind, name, seqid), (3, "ping", -77))
        self.assertEqual(self.decode_exception(rest).type, 6)
        s.sendall(frame(call("ping", 78)))
        self.assertEqual(read_reply(s)[:3], (3, "ping", 78), "the connection stays usable")
        self.assertGreaterEqual(self.counter(sc, "sidecar_thrift_calls_total",
                                             result="local_error"), 3)
        self.assertGreaterEqual(self.counter(sc, "sidecar_thrift_local_errors_total",
                                             reason="connect"), 2)

    def test_local_service_too_slow_gives_internal_error_that_says_so(self):
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts (in the kernel) and never answers
        self.addCleanup(silent.close)
        _, sc = self.start("--upstream-timeout", "300ms", thrift_upstream=silent.getsockname()[1])
        s = self.raw(sc.thrift)
        s.sendall(frame(call("ping", 41)))
        kind, name, seqid, rest = read_reply(s)
        self.assertEqual((kind, name, seqid), (3, "ping", 41))
        e = self.decode_exception(rest)
        self.assertEqual(e.type, 6)
        self.assertIn("timed out", e.message)
        self.assertEqual(self.counter(sc, "sidecar_thrift_local_errors_total", reason="timeout"), 1)

    def test_caller_not_allowed_gets_an_exception_and_the_connection_closes(self):
        from thrift.Thrift import TApplicationException
        _, sc = self.start("--allow-identity", "spiffe://dev.local/caller")
        c = self.client(sc.thrift, cert="intruder")
        with self.assertRaises(TApplicationException) as caught:
            c.ping()
        self.assertEqual(caught.exception.type, TApplicationException.INTERNAL_ERROR)
        self.assertEqual(caught.exception.message, "caller identity not allowed")
        s = self.raw(sc.thrift, cert="intruder")
        s.sendall(frame(call("ping", -9)))
        kind, name, seqid, _ = read_reply(s)
        self.assertEqual((kind, name, seqid), (3, "ping", -9))
        self.assertClosed(s)
        self.assertEqual(self.client(sc.thrift).ping(), "pong", "the allowed caller is served")
        self.assertGreaterEqual(self.counter(sc, "sidecar_thrift_calls_total", result="refused"), 2)

    def test_announced_member_carries_the_thrift_endpoint_and_resolves_by_name(self):
        zk = self.start_zookeeper()
        path = "/discovery/test/thrift"
        _, sc = self.start("--zk", f"127.0.0.1:{zk.port}", "--zk-path", path,
                           "--advertise-host", "127.0.0.1", "--health-interval", "200ms")
        wait_for(lambda: self.admin_get(sc, "/ready")[0] == 200, timeout=20 * SLOW,
                 what="announced")
        [member] = self.members(zk.port, path)
        data = json.loads(self.zkctl(zk.port, "get", f"{path}/{member}").stdout.split("\n")[0])
        self.assertEqual(data["serviceEndpoint"], {"host": "127.0.0.1", "port": sc.port})
        self.assertEqual(data["additionalEndpoints"], {
            "admin": {"host": "127.0.0.1", "port": sc.admin},
            "http": {"host": "127.0.0.1", "port": sc.port},
            "thrift": {"host": "127.0.0.1", "port": sc.thrift}})
        address = f"zk2!127.0.0.1:{zk.port}!{path}!thrift"
        r = subprocess.run([SIDECAR, "resolve", address], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        [line] = r.stdout.splitlines()
        resolved = json.loads(line)
        self.assertEqual((resolved["host"], resolved["port"]), ("127.0.0.1", sc.thrift))
        self.assertEqual(self.client(resolved["port"]).ping(), "pong",
                         "the resolved port is the Thrift listener")


if __name__ == "__main__":
    unittest.main()
