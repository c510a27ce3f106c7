"""Inbound Thrift through the sidecar (--thrift-listen, --thrift-upstream): pinghelp's Thrift
port behind a sidecar, called over mTLS by Apache Thrift's Python library (python3-thrift,
TSSLSocket with the client certificate, framed, binary); Finagle's upgrade probe answered by the
sidecar; seqids echoed; oversized and non-Thrift frames closing the connection and counted; the
local service down and a caller not allowed answered with a TApplicationException; the announced
member's `thrift` endpoint."""
import http.server
import json
import os
import random
import re
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import unittest

from harness import PINGHELP, SIDECAR, SLOW, SidecarTestCase, wait_for
from test_thrift import (PROBE, call, frame, generate_python, node_client, read_exact, read_reply,
                         require_thrift)

ONEWAY = 4

# Node's Apache Thrift over TLS with a client certificate (framed, binary): prints what it got as
# one JSON line. argv: port, CA, certificate, key.
NODE_TLS_CLIENT = r"""
const fs = require('fs');
const thrift = require('thrift');
const PingHelp = require('./PingHelp');
const types = require('./pinghelp_types');
const [port, ca, cert, key] = process.argv.slice(2);
const conn = thrift.createSSLConnection('127.0.0.1', Number(port), {
  transport: thrift.TFramedTransport, protocol: thrift.TBinaryProtocol, connect_timeout: 5000,
  ca: fs.readFileSync(ca), cert: fs.readFileSync(cert), key: fs.readFileSync(key),
  servername: 'localhost'});
conn.on('error', (e) => { console.error('connection error: ' + e); process.exit(1); });
const client = thrift.createClient(PingHelp, conn);
(async () => {
  const out = {ping: await client.ping(), help: (await client.help()).map((m) => m.name),
               helpFor: (await client.helpFor('ping')).name};
  try {
    await client.helpFor('nope');
    out.unknown = null;
  } catch (e) {
    out.unknown = {isUnknownMethod: e instanceof types.UnknownMethod, name: e.name};
  }
  conn.end();
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(String(e)); process.exit(1); });
"""


def message(kind, name, seqid, rest=b"\x00"):
    """A strict binary message of any type."""
    name = name.encode()
    return struct.pack(">Ii", 0x80010000 | kind, len(name)) + name + struct.pack(">i", seqid) + rest


class ScriptedThrift:
    """A local "Thrift service" of the test's own: for each call frame it reads, answer(payload)
    gives the bytes to send back (None: close the connection)."""

    def __init__(self, test, answer):
        self.answer = answer
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        test.addCleanup(self.sock.close)
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.connection, args=(conn,), daemon=True).start()

    def connection(self, conn):
        with conn:
            try:
                while True:
                    (length,) = struct.unpack(">i", read_exact(conn, 4))
                    out = self.answer(read_exact(conn, length))
                    if out is None:
                        return
                    conn.sendall(out)
            except (ConnectionError, OSError):
                return


def field(kind, fid):
    return struct.pack(">bh", kind, fid)


def bstr(b):
    if isinstance(b, str):
        b = b.encode()
    return struct.pack(">i", len(b)) + b


def request_header(trace_id, span_id, parent=None, sampled=None, client_id=None, flags=None,
                   contexts=(), dest=None, delegations=(), trace_id_high=None):
    """TTwitter's RequestHeader in TBinaryProtocol, byte for byte as a Finagle client writes it
    (finagle-thrift's tracing.thrift: ids are i64, client_id a struct, contexts and delegations
    lists of two-field structs)."""
    out = field(10, 1) + struct.pack(">q", trace_id) + field(10, 2) + struct.pack(">q", span_id)
    if parent is not None:
        out += field(10, 3) + struct.pack(">q", parent)
    if sampled is not None:
        out += field(2, 5) + bytes([1 if sampled else 0])
    if client_id is not None:
        out += field(12, 6) + field(11, 1) + bstr(client_id) + b"\x00"
    if flags is not None:
        out += field(10, 7) + struct.pack(">q", flags)
    if contexts:
        out += field(15, 8) + bytes([12]) + struct.pack(">i", len(contexts))
        for k, v in contexts:
            out += field(11, 1) + bstr(k) + field(11, 2) + bstr(v) + b"\x00"
    if dest is not None:
        out += field(11, 9) + bstr(dest)
    if delegations:
        out += field(15, 10) + bytes([12]) + struct.pack(">i", len(delegations))
        for src, dst in delegations:
            out += field(11, 1) + bstr(src) + field(11, 2) + bstr(dst) + b"\x00"
    if trace_id_high is not None:
        out += field(10, 11) + struct.pack(">q", trace_id_high)
    return out + b"\x00"


def read_upgraded_reply(sock):
    """One framed reply on a TTwitter connection: (ResponseHeader bytes, type, name, seqid,
    rest); the ResponseHeader here is the sidecar's, always the empty struct."""
    (length,) = struct.unpack(">i", read_exact(sock, 4))
    body = read_exact(sock, length)
    header, body = body[:1], body[1:]
    version, name_len = struct.unpack(">Ii", body[:8])
    if version & 0xFFFF0000 != 0x80010000:
        raise AssertionError(f"not a strict binary reply after the header: {body[:16]!r}")
    name = body[8:8 + name_len].decode()
    (seqid,) = struct.unpack(">i", body[8 + name_len:12 + name_len])
    return header, version & 0xFF, name, seqid, body[12 + name_len:]


class Collector:
    """A Zipkin collector of the test's own: keeps every span POSTed to /api/v2/spans."""

    def __init__(self, test):
        spans = self.spans = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                spans.extend(json.loads(body))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v2/spans"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        test.addCleanup(self.server.shutdown)


def header_of(payload):
    """(name, seqid) of a strict binary message."""
    (name_len,) = struct.unpack(">i", payload[4:8])
    (seqid,) = struct.unpack(">i", payload[8 + name_len:12 + name_len])
    return payload[8:8 + name_len].decode(), seqid


class ThriftProxyTest(SidecarTestCase):

    @classmethod
    def setUpClass(cls):
        compiler = require_thrift()
        super().setUpClass()
        cls.PingHelp, cls.ttypes = generate_python(compiler, cls.tmp)

    def start(self, *extra, thrift_upstream=None, workers=2):
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
            "--thrift-upstream", f"127.0.0.1:{thrift_upstream or ph.thrift}",
            "--workers", str(workers),
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

    def upgrade(self, s, seqid=0):
        probe = frame(call(PROBE, seqid))
        self.assertEqual(len(probe), 44)
        s.sendall(probe)
        kind, name, got, rest = read_reply(s)
        # A Finagle server's answer: a REPLY with an empty struct, not an exception.
        self.assertEqual((kind, name, got, rest), (2, PROBE, seqid, b"\x00"))

    def test_finagle_probe_upgrades_and_calls_carry_request_and_response_headers(self):
        _, sc = self.start()
        s = self.raw(sc.thrift)
        self.upgrade(s, seqid=random.randint(-2**31, 2**31 - 1))
        rng = random.Random(27)
        for i in range(6):
            seqid = rng.randint(-2**31, 2**31 - 1)
            header = request_header(rng.getrandbits(63), rng.getrandbits(63),
                                    parent=rng.getrandbits(63), sampled=i % 2 == 0,
                                    client_id="web-frontend" if i < 4 else "batch.jobs",
                                    flags=0,
                                    contexts=[(b"com.twitter.finagle.Deadline", bytes(16))],
                                    dest="/s/pinghelp", delegations=[("/s", "/zk")])
            method = "ping" if i % 2 == 0 else "help"
            s.sendall(frame(header + call(method, seqid)))
            rh, kind, name, got, _ = read_upgraded_reply(s)
            self.assertEqual((rh, kind, name, got), (b"\x00", 2, method, seqid))
        # An exception from the service on an upgraded connection has its ResponseHeader too.
        s.sendall(frame(request_header(1, 2, client_id="web-frontend") + call("nope", 77)))
        rh, kind, name, got, rest = read_upgraded_reply(s)
        self.assertEqual((rh, kind, got), (b"\x00", 3, 77))
        self.assertEqual(self.decode_exception(rest).type, 1)  # UNKNOWN_METHOD
        self.assertEqual(self.counter(sc, "sidecar_thrift_probes_total"), 1)
        self.assertEqual(self.counter(sc, "sidecar_thrift_ttwitter_calls_total", result="ok"), 7)
        self.assertEqual(self.counter(sc, "sidecar_thrift_client_requests_total",
                                      client_id="web-frontend"), 5)
        self.assertEqual(self.counter(sc, "sidecar_thrift_client_requests_total",
                                      client_id="batch.jobs"), 2)
        self.assertEqual(self.counter(sc, "sidecar_thrift_client_failures_total",
                                      client_id="web-frontend"), 1)
        self.assertEqual(self.counter(sc, "sidecar_thrift_calls_total", result="replied"), 7)

    def test_a_malformed_request_header_closes_the_connection_and_is_counted(self):
        _, sc = self.start()
        s = self.raw(sc.thrift)
        self.upgrade(s)
        # client_id's name announces more bytes than the frame holds.
        bad = field(12, 6) + field(11, 1) + struct.pack(">i", 1 << 20) + b"x"
        s.sendall(frame(bad + call("ping", 1)))
        self.assertClosed(s)
        self.assertEqual(self.counter(sc, "sidecar_thrift_ttwitter_calls_total",
                                      result="malformed"), 1)
        # A plain client that does not upgrade is as before, on the same listener.
        c = self.client(sc.thrift)
        self.assertEqual(c.ping(), "pong")
        self.assertEqual(self.counter(sc, "sidecar_thrift_client_requests_total",
                                      client_id="other"), 0)

    def test_server_spans_take_the_finagle_callers_trace_ids_and_client_id(self):
        collector = Collector(self)
        _, sc = self.start("--zipkin-url", collector.url, "--service-name", "pinghelp-thrift",
                           "--trace-sample-rate", "0")
        s = self.raw(sc.thrift)
        self.upgrade(s)
        s.sendall(frame(request_header(0x1234, 0x5678, parent=0x1111, sampled=True,
                                       client_id="web-frontend", trace_id_high=0x9) +
                        call("ping", 3)))
        self.assertEqual(read_upgraded_reply(s)[1:4], (2, "ping", 3))
        # Debug (flags bit 0) is sampled whatever the rate; unsampled is not reported.
        s.sendall(frame(request_header(0x2222, 0x3333, flags=1) + call("help", 4)))
        read_upgraded_reply(s)
        s.sendall(frame(request_header(0x4444, 0x5555, sampled=False) + call("ping", 5)))
        read_upgraded_reply(s)
        wait_for(lambda: len(collector.spans) >= 2, timeout=10, what="two spans posted")
        time.sleep(1.5)
        spans = {sp["traceId"]: sp for sp in collector.spans}
        self.assertEqual(len(collector.spans), 2, collector.spans)
        ping = spans["00000000000000090000000000001234"]
        self.assertEqual((ping["id"], ping["parentId"], ping["kind"], ping["name"]),
                         ("0000000000005678", "0000000000001111", "SERVER", "ping"))
        self.assertTrue(ping.get("shared"))
        self.assertEqual(ping["tags"]["thrift.client_id"], "web-frontend")
        self.assertEqual(ping["localEndpoint"]["serviceName"], "pinghelp-thrift")
        self.assertEqual(ping["tags"]["peer.identity"], "spiffe://dev.local/caller")
        self.assertEqual(ping["tags"]["thrift.result"], "reply")
        debug = spans["0000000000002222"]
        self.assertEqual(debug["id"], "0000000000003333")

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

    def test_refused_callers_large_frames_are_never_buffered(self):
        # A refused caller's frame is read only as far as its call's header: 20 of them sending
        # 4 MB frames at once cost the sidecar a few MB, not 80 (30 x 16 MB took it to 501 MB).
        from test_flood import SANITIZED
        _, sc = self.start("--allow-identity", "spiffe://dev.local/caller")
        self.assertEqual(self.client(sc.thrift).ping(), "pong")
        base = sc.rss_kib()
        size = 4 << 20
        payload = call("ping", 1, b"\x0b\x00\x01" + struct.pack(">i", size) + b"x" * size + b"\x00")
        peak = [0]
        answers = []

        def refused_caller():
            try:
                s = self.tls_socket(sc.thrift, cert="intruder")
                s.settimeout(10)
                try:
                    s.sendall(frame(payload))
                except OSError:
                    pass  # closed after the refusal, with part of the frame unsent
                try:
                    answers.append(read_reply(s)[:3])
                except Exception:
                    pass
                s.close()
            except OSError:
                pass

        threads = [threading.Thread(target=refused_caller) for _ in range(20)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            peak[0] = max(peak[0], sc.rss_kib())
            time.sleep(0.02)
        for t in threads:
            t.join()
        grown_mb = (peak[0] - base) / 1024
        if not SANITIZED:
            self.assertLess(grown_mb, 30, f"grew {grown_mb:.0f} MB under 20 refused 4 MB frames")
        self.assertSettles(lambda: self.counter(sc, "sidecar_thrift_calls_total",
                                                result="refused"), 20)
        self.assertIn((3, "ping", 1), answers, "the refusal reached at least one of them")
        self.assertEqual(self.client(sc.thrift).ping(), "pong")

    def test_frames_past_the_workers_buffer_budget_are_refused_and_the_rest_go_on(self):
        # --thrift-max-buffered bounds the frame bytes a worker holds over all its callers: one
        # caller holding 800 KB of an unfinished frame leaves no room for a 500 KB one; the
        # second is told (INTERNAL_ERROR) and counted, and the first finishes normally.
        _, sc = self.start("--thrift-max-buffered", "1MiB", "--thrift-max-frame", "950000",
                           workers=1)
        big = lambda seqid, n: frame(call("ping", seqid, b"\x0b\x00\x09" + struct.pack(">i", n) +
                                          b"x" * n + b"\x00"))
        a = self.raw(sc.thrift)
        first = big(1, 900_000)
        a.sendall(first[:800_000])
        time.sleep(0.3 * SLOW)  # the worker holds what came of it
        b = self.raw(sc.thrift)
        # Only as much of the second frame as crosses the budget (about 250 KB is left): the
        # refusal comes then, and the sidecar reads away what follows for at most 500 ms before
        # it closes. Sending all 500 KB raced that deadline on a loaded machine (the send failed
        # with the connection closed under it, before the answer was read).
        b.sendall(big(2, 500_000)[:320_000])
        kind, name, seqid, rest = read_reply(b)
        self.assertEqual((kind, name, seqid), (3, "ping", 2))
        e = self.decode_exception(rest)
        self.assertEqual(e.type, 6)
        self.assertIn("--thrift-max-buffered", e.message)
        self.assertClosed(b)
        self.assertSettles(lambda: self.counter(sc, "sidecar_thrift_frames_refused_total",
                                                reason="overloaded"), 1)
        a.sendall(first[800_000:])
        self.assertEqual(read_reply(a)[:3], (2, "ping", 1))
        c = self.raw(sc.thrift)  # room again once the first call was answered
        c.sendall(big(3, 500_000))
        self.assertEqual(read_reply(c)[:3], (2, "ping", 3))

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

    # --- per-method metrics, access log -----------------------------------------------------------

    def test_per_method_metrics_count_calls_replies_exceptions_and_latency(self):
        from thrift.Thrift import TApplicationException
        ph, sc = self.start()
        c = self.client(sc.thrift)
        self.assertEqual(c.ping(), "pong")
        self.assertEqual(c.ping(), "pong")
        c.help()
        with self.assertRaises(self.ttypes.UnknownMethod):
            c.helpFor("nope")  # a declared exception travels in a REPLY
        s = self.raw(sc.thrift)
        s.sendall(frame(call("noSuchMethod", 3)))
        self.assertEqual(read_reply(s)[:3], (3, "noSuchMethod", 3))  # the service's EXCEPTION
        m = lambda name, **labels: self.counter(sc, "sidecar_thrift_method_" + name, **labels)
        self.assertSettles(lambda: m("calls_total", method="ping"), 2)
        self.assertSettles(lambda: m("replies_total", method="ping"), 2)
        self.assertSettles(lambda: m("replies_total", method="helpFor"), 1)
        self.assertSettles(lambda: m("exceptions_total", method="noSuchMethod", source="service"), 1)
        self.assertEqual(m("replies_total", method="noSuchMethod"), 0)
        self.assertSettles(lambda: m("duration_seconds_count", method="ping"), 2)
        self.assertGreater(m("duration_seconds_sum", method="ping"), 0)
        ph.stop()
        with self.assertRaises(TApplicationException):
            c.ping()
        self.assertSettles(lambda: m("exceptions_total", method="ping", source="sidecar"), 1)
        _, body = self.admin_get(sc, "/admin/metrics.json")
        j = json.loads(body)
        self.assertEqual((j["srv/thrift/ping/requests"], j["srv/thrift/ping/success"],
                          j["srv/thrift/ping/failures"]), (3, 2, 1))
        self.assertEqual(j["srv/thrift/ping/request_latency_ms.count"], 3)
        self.assertGreater(j["srv/thrift/ping/request_latency_ms.p99"], 0)
        self.assertEqual(j["srv/thrift/noSuchMethod/failures"], 1)
        self.assertEqual(j["srv/thrift/requests"], 6)
        self.assertEqual(j["srv/thrift/failures"], 2)
        self.assertEqual(j["srv/thrift/other/requests"], 0)
        self.assertNotIn(f"srv/thrift/{PROBE}/requests", j)

    def test_method_names_past_the_cap_are_counted_as_other(self):
        _, sc = self.start()
        s = self.raw(sc.thrift)
        names = [f"m{i}" for i in range(70)] + ['bad"name', "other"]
        s.sendall(b"".join(frame(call(n, i)) for i, n in enumerate(names)))
        for i, n in enumerate(names):
            self.assertEqual(read_reply(s)[:3], (3, n, i))  # pinghelp: UNKNOWN_METHOD
        s.sendall(frame(call("ping", 1)))
        self.assertEqual(read_reply(s)[:3], (2, "ping", 1))
        self.assertSettles(lambda: self.counter(sc, "sidecar_thrift_method_calls_total",
                                                method="other"), 9)  # m64..m69, 2 odd, ping
        _, text = self.admin_get(sc, "/metrics")
        labels = set(re.findall(r'^sidecar_thrift_method_calls_total\{method="([^"]*)"\}', text,
                                re.M))
        self.assertEqual(labels, {f"m{i}" for i in range(64)} | {"other"})
        self.assertEqual(self.counter(sc, "sidecar_thrift_method_calls_total", method="m63"), 1)
        j = json.loads(self.admin_get(sc, "/admin/metrics.json")[1])
        self.assertEqual(j["srv/thrift/other/requests"], 9)
        self.assertNotIn("srv/thrift/m64/requests", j)

    def test_access_log_has_a_line_per_thrift_call(self):
        log = os.path.join(tempfile.mkdtemp(dir=self.tmp), "access.log")
        ph, sc = self.start("--access-log", log)
        upgraded = self.raw(sc.thrift)
        upgraded.sendall(frame(call(PROBE, 0)))
        read_reply(upgraded)
        s = self.raw(sc.thrift)
        s.sendall(frame(call("ping", -4)))
        self.assertEqual(read_reply(s)[:3], (2, "ping", -4))
        s.sendall(frame(call('no"such', 9)))
        self.assertEqual(read_reply(s)[:3], (3, 'no"such', 9))
        s.sendall(frame(message(ONEWAY, "ping", 10)))
        self.assertSettles(lambda: self.counter(sc, "sidecar_thrift_calls_total",
                                                result="oneway"), 1)
        ph.stop()
        s.sendall(frame(call("help", 11)))
        self.assertEqual(read_reply(s)[:3], (3, "help", 11))

        def lines():
            with open(log) as f:
                return [l for l in f.read().splitlines() if "listener=thrift" in l]
        wait_for(lambda: len(lines()) == 5, timeout=10, what="five Thrift access-log lines")
        fields = [dict(re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', l)) for l in lines()]
        want = [(f'"{PROBE}"', "0", "call", "upgraded"), ('"ping"', "-4", "call", "reply"),
                ('"no\\"such"', "9", "call", "exception"), ('"ping"', "10", "oneway", "oneway"),
                ('"help"', "11", "call", "local_error")]
        got = [(f["method"], f["seqid"], f["type"], f["result"]) for f in fields]
        # The probe's connection may be on another worker, whose batch of lines can come first
        # or last; one connection's lines keep their order.
        self.assertIn(want[0], got)
        self.assertEqual([g for g in got if g != want[0]], want[1:])
        for f in fields:
            self.assertEqual(f["identity"], '"spiffe://dev.local/caller"')
            self.assertGreaterEqual(int(f["duration_us"]), 0)
            self.assertIn("ts", f)
        ping = next(f for f in fields if f["seqid"] == "-4")
        self.assertEqual(int(ping["req_bytes"]), len(frame(call("ping", -4))))
        self.assertGreater(int(ping["resp_bytes"]), 4)

    # --- frames cut short, growing past the limit ------------------------------------------------

    def test_frame_cut_short_then_closed_is_counted_and_the_sidecar_carries_on(self):
        _, sc = self.start()
        s = self.raw(sc.thrift)
        whole = frame(call("ping", 1))
        s.sendall(whole[:len(whole) - 3])
        s.close()
        self.assertSettles(lambda: self.counter(sc, "sidecar_thrift_frames_refused_total",
                                                reason="cut_short"), 1)
        s = self.raw(sc.thrift)
        s.sendall(whole[:2])  # inside the length prefix
        s.close()
        self.assertSettles(lambda: self.counter(sc, "sidecar_thrift_frames_refused_total",
                                                reason="cut_short"), 2)
        self.assertEqual(self.client(sc.thrift).ping(), "pong", "the sidecar carries on")
        self.assertEqual(self.counter(sc, "sidecar_thrift_calls_total", result="replied"), 1)

    def test_frame_cut_short_then_silent_is_closed_at_the_idle_deadline(self):
        _, sc = self.start("--idle-timeout", "500ms")
        s = self.raw(sc.thrift)
        s.sendall(struct.pack(">i", 100) + b"\x80\x01\x00\x01")  # 4 of 100 bytes, then nothing
        started = time.monotonic()
        self.assertClosed(s, within=10 * SLOW)
        self.assertGreaterEqual(time.monotonic() - started, 0.3)
        self.assertSettles(lambda: self.counter(sc, "sidecar_thrift_frames_refused_total",
                                                reason="cut_short"), 1)
        self.assertEqual(self.client(sc.thrift).ping(), "pong", "the sidecar carries on")

    def test_frame_over_the_limit_after_good_calls_closes_the_connection(self):
        _, sc = self.start("--thrift-max-frame", "4096")
        s = self.raw(sc.thrift)
        big_string = b"\x0b\x00\x01" + struct.pack(">i", 8000) + b"x" * 8000 + b"\x00"
        s.sendall(frame(call("ping", 1)) + frame(call("ping", 2)))
        self.assertEqual(read_reply(s)[:3], (2, "ping", 1))
        self.assertEqual(read_reply(s)[:3], (2, "ping", 2))
        s.sendall(frame(call("helpFor", 3, big_string)))
        self.assertClosed(s)
        self.assertSettles(lambda: self.counter(sc, "sidecar_thrift_frames_refused_total",
                                                reason="too_large"), 1)
        self.assertEqual(self.client(sc.thrift).ping(), "pong", "the sidecar carries on")

    def test_reply_over_the_limit_gives_internal_error(self):
        service = ScriptedThrift(self, lambda p: struct.pack(">i", 5000) + b"\x00" * 5000)
        _, sc = self.start("--thrift-max-frame", "4096", thrift_upstream=service.port)
        s = self.raw(sc.thrift)
        s.sendall(frame(call("ping", 21)))
        kind, name, seqid, rest = read_reply(s)
        self.assertEqual((kind, name, seqid), (3, "ping", 21))
        e = self.decode_exception(rest)
        self.assertEqual(e.type, 6)
        self.assertIn("--thrift-max-frame", e.message)
        self.assertEqual(self.counter(sc, "sidecar_thrift_local_errors_total", reason="broken"), 1)

    # --- replies out of step, ONEWAY ---------------------------------------------------------------

    def test_reply_not_matching_the_call_gives_internal_error_and_is_counted(self):
        def answer(payload):
            name, seqid = header_of(payload)
            if name == "wrongName":
                return frame(message(2, "other", seqid))
            return frame(message(2, name, seqid + 1))
        service = ScriptedThrift(self, answer)
        _, sc = self.start(thrift_upstream=service.port)
        s = self.raw(sc.thrift)
        for name, seqid in (("ping", 30), ("wrongName", 31)):
            s.sendall(frame(call(name, seqid)))
            kind, got_name, got_seqid, rest = read_reply(s)
            self.assertEqual((kind, got_name, got_seqid), (3, name, seqid))
            e = self.decode_exception(rest)
            self.assertEqual(e.type, 6)
            self.assertIn("not this call's", e.message)
        self.assertEqual(self.counter(sc, "sidecar_thrift_local_errors_total", reason="broken"), 2)
        self.assertSettles(lambda: self.counter(sc, "sidecar_thrift_method_exceptions_total",
                                                method="ping", source="sidecar"), 1)
        self.assertEqual(self.counter(sc, "sidecar_thrift_calls_total", result="replied"), 0)

    def test_oneway_call_is_not_pooled_and_the_connection_goes_on(self):
        # pinghelp answers a ONEWAY-typed ping anyway (Apache Thrift's processor does not look at
        # the type): a pooled connection would hand that answer to the next call.
        _, sc = self.start()
        s = self.raw(sc.thrift)
        s.sendall(frame(message(ONEWAY, "ping", 100)))
        time.sleep(0.3)  # the stray answer arrives on the connection the sidecar closed
        for seqid in (101, 102, 103):
            s.sendall(frame(call("ping", seqid)))
            self.assertEqual(read_reply(s)[:3], (2, "ping", seqid))
        self.assertEqual(self.counter(sc, "sidecar_thrift_calls_total", result="oneway"), 1)
        self.assertSettles(lambda: self.counter(sc, "sidecar_thrift_calls_total",
                                                result="replied"), 3)
        self.assertEqual(self.counter(sc, "sidecar_thrift_local_errors_total", reason="broken"), 0)

    # --- one message per frame, one reply per call (issue: injected replies) --------------------

    def test_frame_with_a_second_message_is_refused_and_never_reaches_another_caller(self):
        # An attacker packs a second call into its frame: pinghelp would answer both, and the
        # second answer (helpFor's UnknownMethod, carrying the attacker's string, with the seqid
        # 0 every Apache Thrift client sends) would wait on the pooled connection for the next
        # caller's helpFor. The frame is refused whole: PROTOCOL_ERROR, closed, counted.
        _, sc = self.start()
        evil = "INJECTED-BY-ANOTHER-CALLER"
        helpfor_args = b"\x0b\x00\x01" + struct.pack(">i", len(evil)) + evil.encode() + b"\x00"
        victim = self.client(sc.thrift)
        for _ in range(20):
            s = self.raw(sc.thrift)
            s.sendall(frame(call("ping", 0) + call("helpFor", 0, helpfor_args)))
            kind, name, seqid, rest = read_reply(s)
            self.assertEqual((kind, name, seqid), (3, "ping", 0))
            e = self.decode_exception(rest)
            self.assertEqual(e.type, 7)  # PROTOCOL_ERROR
            self.assertIn("exactly one", e.message)
            self.assertClosed(s)
            for _ in range(5):
                got = victim.helpFor("ping")
                self.assertEqual(got.name, "ping")
                self.assertNotIn(evil, repr(got))
        # A stray byte after a whole message is refused the same way; a ONEWAY gets no answer.
        s = self.raw(sc.thrift)
        s.sendall(frame(call("ping", 3) + b"\x00"))
        self.assertEqual(read_reply(s)[:3], (3, "ping", 3))
        self.assertClosed(s)
        s = self.raw(sc.thrift)
        s.sendall(frame(message(ONEWAY, "ping", 4) + message(ONEWAY, "ping", 5)))
        self.assertClosed(s)
        self.assertSettles(lambda: self.counter(sc, "sidecar_thrift_frames_refused_total",
                                                reason="malformed"), 22)
        self.assertEqual(self.counter(sc, "sidecar_thrift_calls_total", result="oneway"), 0)
        self.assertEqual(victim.ping(), "pong")

    def test_reply_that_is_not_one_reply_message_gives_internal_error(self):
        # A CALL-typed "reply", a reply frame holding two messages, and one with a stray byte:
        # none is relayed, and the connection that carried it is not pooled.
        def answer(payload):
            name, seqid = header_of(payload)
            if name == "asCall":
                return frame(message(1, name, seqid))
            if name == "twice":
                return frame(message(2, name, seqid) + message(2, name, seqid))
            if name == "stray":
                return frame(message(2, name, seqid) + b"\x00")
            return frame(message(2, name, seqid))
        service = ScriptedThrift(self, answer)
        _, sc = self.start(thrift_upstream=service.port)
        s = self.raw(sc.thrift)
        for seqid, name in enumerate(("asCall", "twice", "stray")):
            s.sendall(frame(call(name, seqid)))
            kind, got_name, got_seqid, rest = read_reply(s)
            self.assertEqual((kind, got_name, got_seqid), (3, name, seqid))
            self.assertIn("not this call's", self.decode_exception(rest).message)
        s.sendall(frame(call("fine", 9)))
        self.assertEqual(read_reply(s)[:3], (2, "fine", 9))
        self.assertEqual(self.counter(sc, "sidecar_thrift_local_errors_total", reason="broken"), 3)

    def test_silent_connections_hold_no_tls_state_and_close_at_the_handshake_deadline(self):
        # As on --listen: no TLS state before the first byte (it held 48 KB each before).
        from test_flood import SANITIZED, raise_fd_limit
        n = min(1000, (raise_fd_limit() - 200) // 2)
        _, sc = self.start("--handshake-timeout", "2s")
        c = self.client(sc.thrift)
        for _ in range(20):
            self.assertEqual(c.ping(), "pong")
        time.sleep(0.5)
        base = sc.rss_kib()
        socks = [socket.create_connection(("127.0.0.1", sc.thrift)) for _ in range(n)]
        try:
            wait_for(lambda: self.counter(sc, "sidecar_thrift_connections_total") >= n + 1,
                     what=f"{n} accepted")
            per_conn = (sc.rss_kib() - base) * 1024 / n
            if not SANITIZED:
                self.assertLess(per_conn, 4096, f"{per_conn:.0f} bytes per silent connection")
            self.assertEqual(c.ping(), "pong", "a real caller is served all along")
            deadline = time.monotonic() + 20 * SLOW
            for s in socks:
                s.settimeout(max(0.1, deadline - time.monotonic()))
                self.assertEqual(s.recv(1), b"", "closed at --handshake-timeout")
        finally:
            for s in socks:
                s.close()
        self.assertEqual(c.ping(), "pong")
        # Counted as the HTTP listener counts its own (a handshake that never began timed out).
        self.assertSettles(lambda: self.counter(sc, "sidecar_thrift_handshakes_total",
                                                result="timeout"), n)
        self.assertEqual(self.counter(sc, "sidecar_thrift_handshakes_total", result="ok"), 1)

    def test_failed_handshakes_are_counted_by_reason(self):
        _, sc = self.start()
        for cert, reason in [("stranger", "unknown_ca"), ("expired", "expired")]:
            with self.subTest(cert=cert):
                with self.assertRaises((ssl.SSLError, ConnectionResetError, OSError)):
                    s = self.tls_socket(sc.thrift, cert)
                    self.addCleanup(s.close)
                    s.sendall(frame(call("ping", 1)))
                    read_reply(s)
                self.assertSettles(lambda: self.counter(sc, "sidecar_thrift_handshakes_total",
                                                        result=reason), 1)
        self.assertEqual(self.client(sc.thrift).ping(), "pong", "the listener carries on")

    # --- a second client library ---------------------------------------------------------------------

    def test_node_client_calls_through_the_sidecar_over_mtls(self):
        node, work = node_client(self, NODE_TLS_CLIENT)
        _, sc = self.start("--allow-identity", "spiffe://dev.local/caller")
        r = subprocess.run([node, "client.js", str(sc.thrift), self.certs.path("ca.pem"),
                            self.certs.path("client.pem"), self.certs.path("client.key")],
                           cwd=work, capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        got = json.loads(r.stdout)
        self.assertEqual(got["ping"], "pong")
        self.assertIn("ping", got["help"])
        self.assertEqual(got["helpFor"], "ping")
        self.assertEqual(got["unknown"], {"isUnknownMethod": True, "name": "nope"})
        self.assertSettles(lambda: self.counter(sc, "sidecar_thrift_calls_total",
                                                result="replied"), 4)
        # Without a certificate the handshake fails: the client certificate was what let it in.
        r = subprocess.run([node, "-e", "require('tls').connect({host: '127.0.0.1', port: %d, "
                            "ca: require('fs').readFileSync(%r), servername: 'localhost'})"
                            ".on('data', () => process.exit(0)).on('error', () => process.exit(3))"
                            ".on('end', () => process.exit(4)).on('close', () => process.exit(5))"
                            ".write('x')"
                            % (sc.thrift, self.certs.path("ca.pem"))],
                           capture_output=True, text=True, timeout=30)
        self.assertIn(r.returncode, (3, 4, 5), r.stderr)


if __name__ == "__main__":
    unittest.main()
