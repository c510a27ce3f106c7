"""pinghelp over gRPC (--grpc-listen, docs/http2.md): the real binary called by a client no one
here wrote, Python grpcio (Debian's python3-grpcio), directly over h2c and through a sidecar
(--upstream-protocol h2c). Debian's grpcio has no protoc plugin here (python3-grpc-tools is not
installed), so the test writes and reads proto/pinghelp.proto's few fields by hand: a string
field is a tag byte, a varint length and the bytes. The same answers as HTTP /help, gRPC errors
for unknown methods and malformed messages (pinghelp carries on after each), raw HTTP/2 frames
(python3-h2) for what grpcio would never send, the idle timeout, SIGTERM and bad flags."""
import json
import random
import re
import signal
import socket
import subprocess
import sys
import time
import unittest
import urllib.request

sys.path.append("/usr/lib/python3/dist-packages")  # Debian's grpcio and h2 beside pyenv's Python
import grpc  # noqa: E402
import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402

from harness import PINGHELP, SidecarTestCase  # noqa: E402
from protowire import read_fields, string_field  # noqa: E402

PING = "/pinghelp.PingHelp/Ping"
HELP = "/pinghelp.PingHelp/Help"
CHECK = "/grpc.health.v1.Health/Check"


class PinghelpGrpcTest(SidecarTestCase):

    def setUp(self):
        super().setUp()
        self.channels = []

    def tearDown(self):
        for c in self.channels:
            c.close()
        super().tearDown()

    def start_grpc_pinghelp(self, *extra):
        p = self.spawn_serving("pinghelp", lambda ports: (
            [PINGHELP, "--listen", f"127.0.0.1:{ports[0]}",
             "--grpc-listen", f"127.0.0.1:{ports[1]}", *extra], None), 2)
        p.port, p.grpc = p.ports
        return p

    def channel(self, port):
        c = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.channels.append(c)
        return c

    def secure_channel(self, sc):
        c = grpc.secure_channel(f"127.0.0.1:{sc.port}", self.grpc_credentials(),
                                options=[("grpc.ssl_target_name_override", "localhost")])
        self.channels.append(c)
        return c

    @staticmethod
    def call(channel, method, request=b"", timeout=10):
        """The reply's bytes, or the grpc.RpcError."""
        try:
            return channel.unary_unary(method)(request, timeout=timeout)
        except grpc.RpcError as e:
            return e

    def http_get(self, port, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.read()

    def assertStatus(self, result, code, msg=None):
        self.assertIsInstance(result, grpc.RpcError, msg)
        self.assertEqual(result.code(), code, msg)

    def assertAnswersAsHttp(self, ch, ph):
        """Ping and Help as GET /ping and GET /help[/<method>] answer, byte for byte."""
        self.assertEqual(read_fields(self.call(ch, PING)), {1: b"pong"})
        self.assertEqual(read_fields(self.call(ch, HELP))[1], self.http_get(ph.port, "/help"))
        for method in json.loads(self.http_get(ph.port, "/help"))["methods"]:
            name = method["name"]
            self.assertEqual(read_fields(self.call(ch, HELP, string_field(1, name)))[1],
                             self.http_get(ph.port, f"/help/{name}"))
        nope = self.call(ch, HELP, string_field(1, "nope"))
        self.assertStatus(nope, grpc.StatusCode.NOT_FOUND)
        self.assertIn("nope", nope.details())

    def test_ping_and_help_answer_as_http_does(self):
        ph = self.start_grpc_pinghelp()
        self.assertAnswersAsHttp(self.channel(ph.grpc), ph)
        self.assertStatus(self.call(self.channel(ph.grpc), "/x.Y/Z"), grpc.StatusCode.UNIMPLEMENTED)
        samples = {}
        for line in self.http_get(ph.port, "/metrics").decode().splitlines():
            m = re.match(r'pinghelp_grpc_requests_total\{(.*)\} (\S+)$', line)
            if m:
                labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
                samples[(labels["method"], labels["grpc_status"])] = float(m.group(2))
        self.assertEqual(samples[("ping", "0")], 1)
        self.assertEqual(samples[("help", "5")], 1)  # the one "nope"
        self.assertEqual(samples[("other", "12")], 1)

    def test_ping_and_help_through_a_sidecar_over_h2c(self):
        ph = self.start_grpc_pinghelp()
        sc = self.start_sidecar(ph.grpc, "--upstream-protocol", "h2c")
        self.assertAnswersAsHttp(self.secure_channel(sc), ph)

    def test_health_check_answers_serving(self):
        ph = self.start_grpc_pinghelp()
        ch = self.channel(ph.grpc)
        for service in ("", "pinghelp.PingHelp"):
            request = string_field(1, service) if service else b""
            self.assertEqual(read_fields(self.call(ch, CHECK, request)), {1: 1}, service)
        self.assertStatus(self.call(ch, CHECK, string_field(1, "other.Svc")),
                          grpc.StatusCode.NOT_FOUND)

    def test_unknown_methods_are_unimplemented(self):
        ph = self.start_grpc_pinghelp()
        ch = self.channel(ph.grpc)
        for method in ("/pinghelp.PingHelp/Nope", "/other.Svc/Ping", "/grpc.health.v1.Health/Watch"):
            self.assertStatus(self.call(ch, method), grpc.StatusCode.UNIMPLEMENTED, method)
        self.assertEqual(read_fields(self.call(ch, PING)), {1: b"pong"})

    def test_malformed_messages_get_grpc_errors_and_pinghelp_carries_on(self):
        ph = self.start_grpc_pinghelp()
        ch = self.channel(ph.grpc)
        internal = grpc.StatusCode.INTERNAL
        for request, code in [(b"\x0a\x05ab", internal),              # length past the end
                              (b"\x0b\x0c", internal),                # a group
                              (b"\x0f", internal),                    # wire type 7
                              (b"\x08\x01", internal),                # field 1 as a varint
                              (b"\x02\x00", internal),                # field number 0
                              (b"\x08" + b"\xff" * 10 + b"\x01", internal),  # varint too long
                              (b"\x0a", internal),                    # a tag and nothing
                              (b"\x0a\x02\xff\xfe", grpc.StatusCode.INVALID_ARGUMENT)]:
            self.assertStatus(self.call(ch, HELP, request), code, request)
        # Unknown fields are skipped, as protobuf's own parsers do.
        reply = self.call(ch, HELP, b"\x10\x07" + string_field(9, "x") + string_field(1, "ping"))
        self.assertEqual(read_fields(reply)[1], self.http_get(ph.port, "/help/ping"))
        # Random bytes: an answer or a gRPC error, never a dead server.
        rng = random.Random(26)
        for _ in range(300):
            request = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
            result = self.call(ch, HELP, request)
            if isinstance(result, grpc.RpcError):
                self.assertIn(result.code(), (internal, grpc.StatusCode.INVALID_ARGUMENT,
                                              grpc.StatusCode.NOT_FOUND), request)
        too_large = self.call(ch, HELP, string_field(1, "x" * 20000))
        self.assertStatus(too_large, grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertEqual(read_fields(self.call(ch, PING)), {1: b"pong"})
        self.assertIsNone(ph.poll())

    # --- raw frames: what grpcio never sends ---------------------------------------------------

    def h2_call(self, port, headers, body=b"", end=True):
        """One stream on a fresh connection: the answer's (head, trailers) as dicts."""
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.addCleanup(s.close)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                    header_encoding="utf-8"))
        conn.initiate_connection()
        conn.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":path", HELP),
                              (":authority", "pinghelp"), *headers], end_stream=not body and end)
        if body:
            conn.send_data(1, body, end_stream=end)
        s.sendall(conn.data_to_send())
        head, trailers, deadline = None, {}, time.monotonic() + 10
        while time.monotonic() < deadline:
            data = s.recv(65536)
            if not data:
                break
            for e in conn.receive_data(data):
                if isinstance(e, h2.events.ResponseReceived):
                    head = dict(e.headers)
                elif isinstance(e, h2.events.TrailersReceived):
                    trailers = dict(e.headers)
                elif isinstance(e, h2.events.DataReceived):
                    conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                elif isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)):
                    return head, trailers
            s.sendall(conn.data_to_send())
        self.fail("no answer")

    def test_framing_errors_and_plain_http2_requests(self):
        ph = self.start_grpc_pinghelp()
        grpc_ct = [("content-type", "application/grpc"), ("te", "trailers")]
        message = string_field(1, "ping")
        cases = [
            (b"\x00\x00\x00\x00\x64" + message, "13"),                      # shorter than said
            (b"\x00\x00\x00\x00\x02" + message, "13"),                      # bytes after it
            (b"\x00\x00\x00", "13"),                                        # a cut prefix
            (b"", "13"),                                                    # no message at all
            (b"\x01" + len(message).to_bytes(4, "big") + message, "12"),   # compressed
            (b"\x07" + len(message).to_bytes(4, "big") + message, "13"),   # no such flag
        ]
        for body, status in cases:
            head, trailers = self.h2_call(ph.grpc, grpc_ct, body)
            self.assertEqual(head[":status"], "200", body)
            self.assertEqual({**head, **trailers}.get("grpc-status"), status, body)
        head, _ = self.h2_call(ph.grpc, [("content-type", "text/plain")], b"hi")
        self.assertEqual(head[":status"], "415")
        head, trailers = self.h2_call(
            ph.grpc, grpc_ct, b"\x00" + len(message).to_bytes(4, "big") + message)
        self.assertEqual((head[":status"], trailers.get("grpc-status")), ("200", "0"))
        self.assertIsNone(ph.poll())

    def test_an_answer_before_the_requests_end_asks_the_caller_to_stop_sending(self):
        ph = self.start_grpc_pinghelp()
        for headers, body, status in [
                ([("content-type", "text/plain")], b"hi", "415"),
                ([("content-type", "application/grpc")], b"\x00" + b"\xff" * 40000, "200")]:
            s = socket.create_connection(("127.0.0.1", ph.grpc), timeout=10)
            self.addCleanup(s.close)
            conn = h2.connection.H2Connection(h2.config.H2Configuration(
                client_side=True, header_encoding="utf-8"))
            conn.initiate_connection()
            conn.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":path", HELP),
                                  (":authority", "pinghelp"), *headers])
            for i in range(0, len(body), 16000):  # and no end: the request goes on, we said
                conn.send_data(1, body[i:i + 16000])
            s.sendall(conn.data_to_send())
            events, deadline = [], time.monotonic() + 10
            while time.monotonic() < deadline and not any(
                    isinstance(e, h2.events.StreamReset) for e in events):
                data = s.recv(65536)
                if not data:
                    break
                events += conn.receive_data(data)
                s.sendall(conn.data_to_send())
            heads = [dict(e.headers) for e in events if isinstance(e, h2.events.ResponseReceived)]
            self.assertEqual([h[":status"] for h in heads], [status], events)
            resets = [e for e in events if isinstance(e, h2.events.StreamReset)]
            # NO_ERROR, after the whole answer: the caller may stop sending, nothing failed.
            self.assertEqual([r.error_code for r in resets], [0], events)
        self.assertIsNone(ph.poll())

    def test_idle_connection_is_closed_and_sigterm_exits_0(self):
        ph = self.start_grpc_pinghelp("--idle-timeout", "300ms")
        s = socket.create_connection(("127.0.0.1", ph.grpc), timeout=10)
        self.addCleanup(s.close)
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        start, data = time.monotonic(), b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        self.assertLess(time.monotonic() - start, 5)
        self.assertIn(b"\x07\x00\x00\x00\x00\x00", data)  # a GOAWAY frame (type 7) before the close
        held = socket.create_connection(("127.0.0.1", ph.grpc), timeout=10)
        self.addCleanup(held.close)
        ph.send(signal.SIGTERM)
        self.assertEqual(ph.wait(10), 0)

    def test_bad_grpc_listen_exits_2(self):
        held = socket.socket()  # listening: a bind beside it fails even with SO_REUSEADDR
        self.addCleanup(held.close)
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        for value, mentions in [("localhost:1", "is not IP:port"), ("127.0.0.1", "is not IP:port"),
                                (f"127.0.0.1:{port}", f"--grpc-listen 127.0.0.1:{port}")]:
            with self.subTest(value=value):
                r = subprocess.run([PINGHELP, "--listen", "127.0.0.1:0", "--grpc-listen", value],
                                   capture_output=True, text=True, timeout=10)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn(mentions, r.stderr)


if __name__ == "__main__":
    unittest.main()
