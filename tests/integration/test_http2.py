"""HTTP/2 and gRPC on --listen (docs/http2.md): curl and nghttp over ALPN h2, Python grpcio
(Debian's python3-grpcio) client and server through the sidecar in every streaming kind, gRPC
errors of our own, and raw-frame abuse with python3-h2."""
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import unittest
from concurrent import futures

sys.path.append("/usr/lib/python3/dist-packages")  # Debian's grpcio and h2 beside pyenv's Python
import grpc  # noqa: E402
import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402

from harness import SidecarTestCase, cpu_seconds, half_a_record, wait_for  # noqa: E402
from scripted_upstream import ScriptedUpstream  # noqa: E402


class GrpcService:
    """A gRPC server (grpcio) on loopback speaking raw bytes: test.Svc's methods."""

    def __init__(self):
        def echo(req, ctx):
            return req

        def slow(req, ctx):
            time.sleep(float(req.decode() or "2"))
            return b"late"

        def fail(req, ctx):
            ctx.abort(grpc.StatusCode.NOT_FOUND, "no such thing")

        def meta(req, ctx):
            return "\n".join(f"{k}={v}" for k, v in ctx.invocation_metadata()).encode()

        def count(req, ctx):
            for i in range(int(req.decode())):
                yield str(i).encode()

        def total(it, ctx):
            return str(sum(len(m) for m in it)).encode()

        def chat(it, ctx):
            for m in it:
                yield m.upper()

        handlers = {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Slow": grpc.unary_unary_rpc_method_handler(slow),
            "Fail": grpc.unary_unary_rpc_method_handler(fail),
            "Meta": grpc.unary_unary_rpc_method_handler(meta),
            "Count": grpc.unary_stream_rpc_method_handler(count),
            "Total": grpc.stream_unary_rpc_method_handler(total),
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
        }
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16),
                                  options=[("grpc.max_receive_message_length", 64 << 20),
                                           ("grpc.max_send_message_length", 64 << 20)])
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.Svc", handlers),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self):
        self.server.stop(0)


class ScriptedH2Service:
    """An h2c service (python3-h2) allowing one stream at a time, answering each request by
    answer(conn, sock, stream_id, path, connection_number), which returns False to end the
    connection. It records the paths of the streams it saw and counts its connections."""

    def __init__(self, answer):
        import threading
        self.answer = answer
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.seen = []
        self.received = {}  # stream path: request body bytes received
        self.ends = {}  # stream path: "ended", or the RST_STREAM code that ended the request
        self.connections = 0
        self.threading = threading
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self.threading.Thread(target=self.serve, args=(c, self.connections),
                                  daemon=True).start()

    def serve(self, c, number):
        import h2.settings
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False,
                                                                    header_encoding="utf-8"))
        conn.initiate_connection()
        conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1})
        c.sendall(conn.data_to_send())
        paths = {}
        try:
            while True:
                data = c.recv(65536)
                if not data:
                    return
                for e in conn.receive_data(data):
                    if isinstance(e, h2.events.RequestReceived):
                        path = paths[e.stream_id] = dict(e.headers)[":path"]
                        self.seen.append(path)
                        if not self.answer(conn, c, e.stream_id, path, number):
                            return
                    elif isinstance(e, h2.events.DataReceived):
                        path = paths.get(e.stream_id)
                        self.received[path] = self.received.get(path, 0) + len(e.data)
                        conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                    elif isinstance(e, h2.events.StreamEnded):
                        self.ends[paths.get(e.stream_id)] = "ended"
                    elif isinstance(e, h2.events.StreamReset):
                        self.ends[paths.get(e.stream_id)] = e.error_code
                c.sendall(conn.data_to_send())
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.sock.close()


def goaway_after_one(conn, c, stream_id, path, number):
    """The first connection answers one stream after a pause (so that others queue behind it in
    the sidecar), then ends with a GOAWAY naming it as the last; later ones answer every stream."""
    late = number == 1 and path != "/warm"
    if late:
        time.sleep(0.5)
    conn.send_headers(stream_id, [(":status", "200")])
    conn.send_data(stream_id, path.encode(), end_stream=True)
    if late:
        conn.close_connection(last_stream_id=stream_id)
        c.sendall(conn.data_to_send())
        time.sleep(0.2)
    return not late


def answer_at_once(conn, c, stream_id, path, number):
    """The whole answer as soon as the head came, the request's body still coming."""
    conn.send_headers(stream_id, [(":status", "202")])
    conn.send_data(stream_id, b"accepted", end_stream=True)
    return True


def grpc_stalling_mid_answer(conn, c, stream_id, path, number):
    """A gRPC answer that sends one message and then stalls, enforcing no deadline of its own."""
    conn.send_headers(stream_id, [(":status", "200"), ("content-type", "application/grpc")])
    conn.send_data(stream_id, b"\x00\x00\x00\x00\x02hi")
    c.sendall(conn.data_to_send())
    time.sleep(3)
    try:
        conn.send_headers(stream_id, [("grpc-status", "0")], end_stream=True)
    except Exception:  # noqa: BLE001 - the sidecar reset the stream meanwhile
        pass
    return True


class Http2Test(SidecarTestCase):

    def setUp(self):
        super().setUp()
        self.grpc_servers = []
        self.channels = []

    def tearDown(self):
        for c in self.channels:
            c.close()
        for s in self.grpc_servers:
            s.stop()
        super().tearDown()

    def grpc_service(self):
        s = GrpcService()
        self.grpc_servers.append(s)
        return s

    def channel(self, sc, cert="client"):
        c = grpc.secure_channel(f"127.0.0.1:{sc.port}", self.grpc_credentials(cert),
                                options=[("grpc.ssl_target_name_override", "localhost"),
                                         ("grpc.max_receive_message_length", 64 << 20),
                                         ("grpc.max_send_message_length", 64 << 20)])
        self.channels.append(c)
        return c

    def h2_socket(self, sc):
        ctx = ssl.create_default_context(cafile=self.certs.path("ca.pem"))
        ctx.load_cert_chain(self.certs.path("client.pem"), self.certs.path("client.key"))
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", sc.port), timeout=10)
        s = ctx.wrap_socket(raw, server_hostname="localhost")
        self.assertEqual(s.selected_alpn_protocol(), "h2")
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                    header_encoding="utf-8"))
        conn.initiate_connection()
        s.sendall(conn.data_to_send())
        return s, conn

    @staticmethod
    def read_events(s, conn, until, timeout=10):
        """Reads frames until until(events so far) is true or the connection ends."""
        events = []
        deadline = time.monotonic() + timeout
        s.settimeout(1)
        while time.monotonic() < deadline and not until(events):
            try:
                data = s.recv(65536)
            except socket.timeout:
                continue
            except (ConnectionError, ssl.SSLError):
                events.append("closed")
                break
            if not data:
                events.append("closed")
                break
            try:
                events += conn.receive_data(data)
            except Exception as e:  # noqa: BLE001 - a protocol error on our side ends it too
                events.append(e)
                break
            out = conn.data_to_send()
            if out:
                try:
                    s.sendall(out)
                except (ConnectionError, ssl.SSLError):
                    pass
        return events

    # --- plain HTTP/2 ----------------------------------------------------------------------------

    def test_curl_speaks_http2_to_an_http1_local_service(self):
        ph = self.start_pinghelp()
        log = os.path.join(self.tmp, f"access-{time.monotonic_ns()}.log")
        sc = self.start_sidecar(ph.port, "--access-log", log)
        code, status, body, err = self.curl(f"https://127.0.0.1:{sc.port}/ping",
                                            args=["--http2", "-w", " %{http_version}"])
        self.assertEqual((code, body), (0, b"pong"), err)
        code, status, body, _ = self.curl(f"https://127.0.0.1:{sc.port}/help/nothing",
                                          args=["--http2"])
        self.assertEqual(status, 404)
        self.assertSettles(lambda: self.metric(sc, "sidecar_http2_streams_total"), 2)
        self.assertEqual(self.metric(sc, "sidecar_http2_connections_total"), 2)
        self.assertEqual(self.metric(sc, "sidecar_requests_total", method="GET", code="2xx"), 1)
        wait_for(lambda: os.path.exists(log) and "protocol=h2" in open(log).read(),
                 what="an access-log line for the HTTP/2 request")

    def test_post_bodies_and_the_callers_identity_reach_an_http1_service(self):
        up = self.start_upstream()
        sc = self.start_sidecar(up.port)
        body = os.urandom(300_000)
        path = os.path.join(self.tmp, "body")
        with open(path, "wb") as f:
            f.write(body)
        code, status, echoed, err = self.curl(
            f"https://127.0.0.1:{sc.port}/echo",
            args=["--http2", "--data-binary", f"@{path}", "-H", "X-Forwarded-Client-Cert: forged",
                  "-H", "Content-Type: application/octet-stream"])
        self.assertEqual((code, status), (0, 200), err)
        import hashlib
        import json
        self.assertEqual(json.loads(echoed), {"bytes": len(body),
                                              "sha256": hashlib.sha256(body).hexdigest()})
        code, status, headers, _ = self.curl(f"https://127.0.0.1:{sc.port}/headers",
                                             args=["--http2", "-H", "X-Forwarded-Client-Cert: forged"])
        text = headers.decode().lower()
        self.assertIn("uri=spiffe://dev.local/caller", text)
        self.assertNotIn("forged", text)

    def test_streams_queued_when_the_local_service_goes_away_are_sent_again(self):
        svc = ScriptedH2Service(goaway_after_one)
        self.addCleanup(svc.close)
        sc = self.start_sidecar(svc.port, "--upstream-protocol", "h2c",
                                "--upstream-h2-connections", "1", "--workers", "1")
        s, conn = self.h2_socket(sc)
        self.addCleanup(s.close)

        def get(path):
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, [(":method", "GET"), (":scheme", "https"),
                                    (":authority", "localhost"), (":path", path)],
                              end_stream=True)
            return sid

        def answers(events):
            return {e.stream_id: e.data for e in events if isinstance(e, h2.events.DataReceived)}

        # The service's SETTINGS (one stream at a time) are known before the burst, so that the
        # burst's streams wait in the sidecar's queue rather than being sent and refused.
        warm = get("/warm")
        s.sendall(conn.data_to_send())
        events = self.read_events(s, conn, lambda ev: warm in answers(ev))
        burst = [get(f"/b{i}") for i in range(3)]
        s.sendall(conn.data_to_send())
        events = self.read_events(
            s, conn, lambda ev: sum(isinstance(e, h2.events.StreamEnded) for e in ev) >= 3)
        got = answers(events)
        self.assertEqual({sid: got.get(sid) for sid in burst},
                         {sid: f"/b{i}".encode() for i, sid in enumerate(burst)}, events)
        # Each ran once: those queued behind the GOAWAY went out on a new connection.
        self.assertEqual(sorted(svc.seen), ["/b0", "/b1", "/b2", "/warm"])
        self.assertGreaterEqual(svc.connections, 2)
        self.assertGreaterEqual(self.metric(sc, "sidecar_upstream_h2_streams_resent_total"), 1)

    def test_a_pooled_connection_dropped_unanswered_resends_only_an_idempotent_request(self):
        up = ScriptedUpstream()
        self.addCleanup(up.close)
        sc = self.start_sidecar(up.port, "--workers", "1")
        base = f"https://127.0.0.1:{sc.port}"

        def seen(method, path):
            with up.lock:
                return sum(1 for _, m, t in up.requests if (m, t) == (method, path))

        # Each call below finds the connection the /echo before it left in the pool.
        self.assertEqual(self.curl(f"{base}/echo", args=["--http2"])[1], 200)
        code, status, _, err = self.curl(f"{base}/drop-unanswered",
                                         args=["--http2", "--data-binary", "x"])
        self.assertEqual((code, status), (0, 502), err)
        self.assertEqual(seen("POST", "/drop-unanswered"), 1, "a POST may have run: never again")
        self.assertEqual(self.curl(f"{base}/echo", args=["--http2"])[1], 200)
        code, status, _, err = self.curl(f"{base}/drop-unanswered", args=["--http2"])
        self.assertEqual((code, status), (0, 502), err)
        # The GET went again on a new connection (the pooled one may just have been stale).
        self.assertEqual(seen("GET", "/drop-unanswered"), 2)

    def test_split_cookies_reach_an_http1_service_as_one_field(self):
        up = self.start_upstream()
        sc = self.start_sidecar(up.port)
        s, conn = self.h2_socket(sc)
        self.addCleanup(s.close)
        # RFC 9113 8.2.3: HTTP/2 may split Cookie; HTTP/1.1 gets it back as one field.
        conn.send_headers(1, [(":method", "GET"), (":scheme", "https"), (":authority", "svc.local"),
                              (":path", "/headers"), ("cookie", "a=1"), ("x-one", "1"),
                              ("cookie", "b=2")], end_stream=True)
        s.sendall(conn.data_to_send())
        events = self.read_events(s, conn, lambda ev: any(
            isinstance(e, h2.events.StreamEnded) for e in ev))
        body = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
        fields = [(n.lower(), v) for n, v in json.loads(body)]
        self.assertEqual([v for n, v in fields if n == "cookie"], ["a=1; b=2"], fields)
        self.assertEqual([v for n, v in fields if n == "host"], ["svc.local"], fields)
        self.assertIn(("x-one", "1"), fields)

    def test_answers_written_whole_in_one_send_by_an_http1_service(self):
        # The head and the body arrive in one read: the body is parsed then, and goes out with
        # the HEADERS. Chunked, larger than the relay's buffer, and broken after the head.
        up = ScriptedUpstream()
        self.addCleanup(up.close)
        sc = self.start_sidecar(up.port, "--workers", "1")
        s, conn = self.h2_socket(sc)
        self.addCleanup(s.close)

        def get(sid, path):
            conn.send_headers(sid, [(":method", "GET"), (":scheme", "https"),
                                    (":authority", "svc.local"), (":path", path)],
                              end_stream=True)
            s.sendall(conn.data_to_send())
            acked = [0]

            def done(ev):
                # The window is given back as the data comes: the answer is larger than it.
                for e in ev[acked[0]:]:
                    if isinstance(e, h2.events.DataReceived) and e.flow_controlled_length:
                        conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                acked[0] = len(ev)
                s.sendall(conn.data_to_send())
                return any(isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset))
                           and e.stream_id == sid for e in ev)

            events = self.read_events(s, conn, done)
            status = [dict(e.headers).get(":status") for e in events
                      if isinstance(e, h2.events.ResponseReceived)]
            body = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
            return status, body, [e for e in events if isinstance(e, h2.events.StreamReset)]

        self.assertEqual(get(1, "/one-write?form=chunked"), (["200"], b"hello world", []))
        big = bytes(i % 251 for i in range(200_000))
        self.assertEqual(get(3, "/one-write?form=big&bytes=200000"), (["200"], big, []))
        # Broken before anything of the answer went out: a 502 of our own, as for a bad head.
        status, body, resets = get(5, "/one-write?form=badchunk")
        self.assertEqual((status, resets), (["502"], []))
        self.assertNotIn(b"hello", body)
        self.assertEqual(self.metric(sc, "sidecar_local_replies_total", status="502"), 1)
        # Broken after the head and some of the body went out: the stream is reset.
        status, body, resets = get(7, "/one-write?form=badlater")
        self.assertEqual((status, len(resets)), (["200"], 1))
        self.assertNotIn(b"broken", body)
        self.assertEqual(self.metric(sc, "sidecar_http2_streams_broken_total"), 1)
        # The connection and the sidecar carry on.
        self.assertEqual(get(9, "/one-write?form=chunked"), (["200"], b"hello world", []))

    def test_nghttp_client_gets_an_answer_and_a_clean_goaway(self):
        ph = self.start_pinghelp()
        sc = self.start_sidecar(ph.port)
        r = subprocess.run(["nghttp", "-v", "--cert", self.certs.path("client.pem"),
                            "--key", self.certs.path("client.key"),
                            f"https://127.0.0.1:{sc.port}/ping"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(":status: 200", r.stdout)
        self.assertIn("pong", r.stdout)

    def test_http2_off_leaves_http11_alone(self):
        ph = self.start_pinghelp()
        sc = self.start_sidecar(ph.port, "--http2", "off")
        code, status, body, err = self.curl(f"https://127.0.0.1:{sc.port}/ping",
                                            args=["--http2", "-w", "%{http_version}"])
        self.assertEqual((code, body), (0, b"pong"), err)
        self.assertEqual(self.metric(sc, "sidecar_http2_connections_total"), 0)

    def test_a_refused_identity_gets_403(self):
        ph = self.start_pinghelp()
        sc = self.start_sidecar(ph.port, "--allow-identity", "spiffe://dev.local/someone-else")
        code, status, body, _ = self.curl(f"https://127.0.0.1:{sc.port}/ping", args=["--http2"])
        self.assertEqual(status, 403)
        self.assertEqual(self.metric(sc, "sidecar_identity_refused_total"), 1)
        # Refused while its body still comes: the connection stays for more requests.
        self.assert_answered_before_the_upload_ends(sc, "403")

    # --- gRPC ------------------------------------------------------------------------------------

    def test_grpc_unary_and_every_streaming_kind_through_h2c(self):
        svc = self.grpc_service()
        sc = self.start_sidecar(svc.port, "--upstream-protocol", "h2c")
        ch = self.channel(sc)
        self.assertEqual(ch.unary_unary("/test.Svc/Echo")(b"hello", timeout=10), b"hello")
        big = os.urandom(3 << 20)
        self.assertEqual(ch.unary_unary("/test.Svc/Echo")(big, timeout=30), big)
        self.assertEqual(list(ch.unary_stream("/test.Svc/Count")(b"5", timeout=10)),
                         [b"0", b"1", b"2", b"3", b"4"])
        self.assertEqual(ch.stream_unary("/test.Svc/Total")(iter([b"ab", b"cde", b""]),
                                                              timeout=10), b"5")
        self.assertEqual(list(ch.stream_stream("/test.Svc/Chat")(iter([b"a", b"bc"]),
                                                                 timeout=10)), [b"A", b"BC"])
        meta = ch.unary_unary("/test.Svc/Meta")(b"", timeout=10).decode()
        self.assertIn("x-forwarded-client-cert=", meta)
        self.assertIn("URI=spiffe://dev.local/caller", meta)
        self.assertSettles(lambda: self.metric(sc, "sidecar_grpc_requests_total",
                                               grpc_status="0"), 6)

    def test_grpc_status_and_message_of_the_service_reach_the_caller(self):
        svc = self.grpc_service()
        sc = self.start_sidecar(svc.port, "--upstream-protocol", "auto")
        with self.assertRaises(grpc.RpcError) as e:
            self.channel(sc).unary_unary("/test.Svc/Fail")(b"", timeout=10)
        self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)
        self.assertEqual(e.exception.details(), "no such thing")
        self.assertSettles(lambda: self.metric(sc, "sidecar_grpc_requests_total",
                                               grpc_status="5"), 1)

    def test_grpc_timeout_is_the_calls_deadline(self):
        svc = self.grpc_service()
        sc = self.start_sidecar(svc.port, "--upstream-protocol", "h2c")
        started = time.monotonic()
        with self.assertRaises(grpc.RpcError) as e:
            self.channel(sc).unary_unary("/test.Svc/Slow")(b"3", timeout=0.5)
        self.assertEqual(e.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertLess(time.monotonic() - started, 2.5)
        # A deadline the client does not enforce itself: the sidecar answers DEADLINE_EXCEEDED.
        s, conn = self.h2_socket(sc)
        conn.send_headers(1, [(":method", "POST"), (":scheme", "https"), (":path", "/test.Svc/Slow"),
                              (":authority", "localhost"), ("content-type", "application/grpc"),
                              ("te", "trailers"), ("grpc-timeout", "300m")])
        conn.send_data(1, b"\x00\x00\x00\x00\x013", end_stream=True)
        s.sendall(conn.data_to_send())
        events = self.read_events(s, conn, lambda ev: any(
            isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) for e in ev))
        heads = [dict(e.headers) for e in events if isinstance(e, h2.events.ResponseReceived)]
        self.assertTrue(heads, events)
        self.assertEqual(heads[0].get("grpc-status"), "4")

    def assert_answered_before_the_upload_ends(self, sc, status):
        """An upload's head and some of its body on a new connection: the whole answer (status)
        comes, then RST_STREAM NO_ERROR asks the caller to stop sending the rest (RFC 9113 8.1);
        the connection serves the next request (status again)."""
        s, conn = self.h2_socket(sc)
        self.addCleanup(s.close)
        conn.send_headers(1, [(":method", "POST"), (":scheme", "https"),
                              (":authority", "localhost"), (":path", "/upload")])
        conn.send_data(1, b"u" * 1000)
        s.sendall(conn.data_to_send())
        events = self.read_events(s, conn, lambda ev: any(
            isinstance(e, h2.events.StreamReset) for e in ev))
        self.assertEqual([dict(e.headers)[":status"] for e in events
                          if isinstance(e, h2.events.ResponseReceived)], [status], events)
        self.assertEqual([e.error_code for e in events if isinstance(e, h2.events.StreamReset)],
                         [0], events)
        conn.send_headers(3, [(":method", "GET"), (":scheme", "https"),
                              (":authority", "localhost"), (":path", "/next")], end_stream=True)
        s.sendall(conn.data_to_send())
        events = self.read_events(s, conn, lambda ev: any(
            isinstance(e, h2.events.StreamEnded) for e in ev))
        self.assertEqual([dict(e.headers)[":status"] for e in events
                          if isinstance(e, h2.events.ResponseReceived)], [status], events)

    def test_an_answer_before_the_upload_ends_ends_the_upload_on_both_sides(self):
        svc = ScriptedH2Service(answer_at_once)
        self.addCleanup(svc.close)
        sc = self.start_sidecar(svc.port, "--upstream-protocol", "h2c")
        # As Envoy does: the whole answer, then the caller asked to stop sending; the service's
        # stream, answered already, ended with NO_ERROR too (not CANCEL), and never ended as if
        # the request had come whole.
        self.assert_answered_before_the_upload_ends(sc, "202")
        wait_for(lambda: "/upload" in svc.ends, what="the service's stream ending")
        self.assertEqual(svc.ends["/upload"], 0)

    def test_grpc_timeout_passing_mid_answer_ends_the_call_with_deadline_exceeded(self):
        svc = ScriptedH2Service(grpc_stalling_mid_answer)
        self.addCleanup(svc.close)
        sc = self.start_sidecar(svc.port, "--upstream-protocol", "h2c")
        s, conn = self.h2_socket(sc)
        self.addCleanup(s.close)
        sid = conn.get_next_available_stream_id()
        # A raw client: it enforces no deadline itself, so what it gets is the sidecar's doing.
        conn.send_headers(sid, [(":method", "POST"), (":scheme", "https"),
                                (":authority", "localhost"), (":path", "/test.Svc/Stream"),
                                ("content-type", "application/grpc"), ("te", "trailers"),
                                ("grpc-timeout", "700m")])
        conn.send_data(sid, b"\x00\x00\x00\x00\x00", end_stream=True)
        s.sendall(conn.data_to_send())
        started = time.monotonic()
        events = self.read_events(
            s, conn, lambda ev: any(isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset))
                                    for e in ev))
        elapsed = time.monotonic() - started
        data = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
        trailers = [dict(e.headers) for e in events if isinstance(e, h2.events.TrailersReceived)]
        self.assertEqual(data, b"\x00\x00\x00\x00\x02hi", events)  # what came is delivered
        self.assertEqual([t.get("grpc-status") for t in trailers], ["4"], events)
        self.assertFalse(any(isinstance(e, h2.events.StreamReset) for e in events), events)
        self.assertLess(elapsed, 2.5, "ended at the deadline, not when the service went on")
        self.assertSettles(lambda: self.metric(sc, "sidecar_grpc_requests_total",
                                               grpc_status="4"), 1)

    def test_grpc_errors_of_our_own(self):
        # No local service: UNAVAILABLE (14).
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        sc = self.start_sidecar(port, "--upstream-protocol", "h2c")
        closed.close()
        with self.assertRaises(grpc.RpcError) as e:
            self.channel(sc).unary_unary("/test.Svc/Echo")(b"x", timeout=10)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
        # An identity not allowed: PERMISSION_DENIED (7).
        svc = self.grpc_service()
        sc2 = self.start_sidecar(svc.port, "--upstream-protocol", "h2c",
                                 "--allow-identity", "spiffe://dev.local/someone-else")
        with self.assertRaises(grpc.RpcError) as e:
            self.channel(sc2).unary_unary("/test.Svc/Echo")(b"x", timeout=10)
        self.assertEqual(e.exception.code(), grpc.StatusCode.PERMISSION_DENIED)

    def test_many_calls_share_few_upstream_connections(self):
        svc = self.grpc_service()
        sc = self.start_sidecar(svc.port, "--upstream-protocol", "h2c", "--workers", "1",
                                "--upstream-h2-connections", "2")
        ch = self.channel(sc)
        echo = ch.unary_unary("/test.Svc/Echo")
        calls = [echo.future(str(i).encode(), timeout=30) for i in range(200)]
        self.assertEqual([c.result() for c in calls], [str(i).encode() for i in range(200)])
        self.assertLessEqual(self.metric(sc, "sidecar_upstream_h2_connections_total"), 2)

    def test_answers_past_the_upstream_connections_window_keep_flowing(self):
        """Each answer's last bytes come with its end: their window must still be given back, or
        the one shared connection to the local service stalls after 1 MiB for every caller."""
        svc = self.grpc_service()
        sc = self.start_sidecar(svc.port, "--upstream-protocol", "h2c", "--workers", "1",
                                "--upstream-h2-connections", "1")
        echo = self.channel(sc).unary_unary("/test.Svc/Echo")
        payload = os.urandom(60_000)
        for _ in range(60):  # 3.6 MB through one connection
            self.assertEqual(echo(payload, timeout=10), payload)

    def test_streams_reset_with_their_head_leave_nothing_behind(self):
        """HEADERS, DATA and RST_STREAM in one write, toward an h2c local service: the request is
        cancelled wherever it is (queued or sent), and the sidecar carries on."""
        svc = self.grpc_service()
        sc = self.start_sidecar(svc.port, "--upstream-protocol", "h2c", "--workers", "1")
        s, conn = self.h2_socket(sc)
        for i in range(200):
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, [(":method", "POST"), (":scheme", "https"),
                                    (":path", "/test.Svc/Slow"), (":authority", "localhost"),
                                    ("content-type", "application/grpc"), ("te", "trailers")])
            conn.send_data(sid, b"\x00\x00\x00\x00\x010", end_stream=True)
            conn.reset_stream(sid)
            if i % 20 == 19:
                s.sendall(conn.data_to_send())
        s.sendall(conn.data_to_send())
        s.close()
        self.assertSettles(lambda: self.metric(sc, "sidecar_http2_streams_open"), 0)
        self.assertEqual(self.channel(sc).unary_unary("/test.Svc/Echo")(b"ok", timeout=10), b"ok")

    # --- the outbound leg -------------------------------------------------------------------------

    def grpc_members(self, n, *extra):
        """n member sidecars, each before a gRPC service of its own (h2c); their services count
        the calls they answered."""
        members = []
        for _ in range(n):
            svc = self.grpc_service()
            members.append((self.start_sidecar(svc.port, "--upstream-protocol", "h2c", *extra),
                            svc))
        return members

    def outbound_channel(self, caller, service):
        c = grpc.insecure_channel(f"127.0.0.1:{caller.outbound}",
                                  options=[("grpc.default_authority", service)])
        self.channels.append(c)
        return c

    def test_grpc_calls_through_the_outbound_listener_are_balanced_per_call(self):
        members = self.grpc_members(3)
        dest = ",".join(f"127.0.0.1:{m.port}" for m, _ in members)
        caller = self.start_outbound_sidecar("--route", f"svc=static!{dest}", "--workers", "1")
        ch = self.outbound_channel(caller, "svc")
        echo = ch.unary_unary("/test.Svc/Echo")
        # One connection of the local service carries every call: balancing is per stream.
        for batch in range(10):
            calls = [echo.future(b"x%d" % i, timeout=30) for i in range(300)]
            self.assertEqual([c.result() for c in calls], [b"x%d" % i for i in range(300)])
        served = [self.metric(m, "sidecar_grpc_requests_total", grpc_status="0")
                  for m, _ in members]
        self.assertEqual(sum(served), 3000, served)
        for n in served:
            self.assertGreater(n, 3000 * 0.15, f"calls per member {served}: not balanced per call")
        self.assertEqual(list(ch.unary_stream("/test.Svc/Count")(b"3", timeout=10)),
                         [b"0", b"1", b"2"])
        self.assertEqual(list(ch.stream_stream("/test.Svc/Chat")(iter([b"a", b"b"]), timeout=10)),
                         [b"A", b"B"])
        meta = ch.unary_unary("/test.Svc/Meta")(b"", timeout=10).decode()
        # The member's sidecar saw the calling sidecar's certificate (its --tls-cert).
        self.assertIn("URI=spiffe://dev.local/pinghelp", meta)
        # The caller counts its gRPC calls by method and status.
        by_method = {m: self.metric(caller, "sidecar_outbound_grpc_requests_total", method=m,
                                    grpc_status="0")
                     for m in ("test.Svc/Echo", "test.Svc/Count", "test.Svc/Chat", "test.Svc/Meta")}
        self.assertEqual(by_method, {"test.Svc/Echo": 3000, "test.Svc/Count": 1,
                                     "test.Svc/Chat": 1, "test.Svc/Meta": 1})

    def test_a_member_killed_mid_stream_fails_only_its_streams(self):
        members = self.grpc_members(3)
        dest = ",".join(f"127.0.0.1:{m.port}" for m, _ in members)
        caller = self.start_outbound_sidecar("--route", f"svc=static!{dest}", "--workers", "1")
        ch = self.outbound_channel(caller, "svc")
        slow = [ch.unary_unary("/test.Svc/Slow").future(b"2", timeout=30) for _ in range(30)]
        time.sleep(0.5)
        victim, _ = members[0]
        victim.send(9)
        victim.wait()
        failed = 0
        for c in slow:
            try:
                self.assertEqual(c.result(), b"late")
            except grpc.RpcError as e:
                # Sent, and no answer came: ours, UNAVAILABLE (never sent again: it may have run).
                self.assertEqual(e.code(), grpc.StatusCode.UNAVAILABLE, e)
                failed += 1
        self.assertGreater(failed, 0, "some calls were on the killed member")
        self.assertLess(failed, 30)
        echo = ch.unary_unary("/test.Svc/Echo")
        self.assertEqual([echo(b"y", timeout=10) for _ in range(50)], [b"y"] * 50,
                         "new calls go to the members left")

    def test_outbound_grpc_errors_of_our_own(self):
        held = socket.socket()
        held.bind(("127.0.0.1", 0))
        self.addCleanup(held.close)
        caller = self.start_outbound_sidecar(
            "--route", f"svc=static!127.0.0.1:{held.getsockname()[1]}")
        with self.assertRaises(grpc.RpcError) as e:
            self.outbound_channel(caller, "svc").unary_unary("/test.Svc/Echo")(b"x", timeout=10)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
        with self.assertRaises(grpc.RpcError) as e:
            self.outbound_channel(caller, "nothing").unary_unary("/test.Svc/Echo")(b"x", timeout=10)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNIMPLEMENTED)  # gRPC's 404
        self.assertIn("no route", e.exception.details())
        # A call that reached a route counts under its method; names callers choose are bounded
        # (a name that is no method is "other").
        self.assertEqual(self.metric(caller, "sidecar_outbound_grpc_requests_total",
                                     method="test.Svc/Echo", grpc_status="14"), 1)
        with self.assertRaises(grpc.RpcError):
            self.outbound_channel(caller, "svc").unary_unary("/no/such/method")(b"x", timeout=10)
        self.assertEqual(self.metric(caller, "sidecar_outbound_grpc_requests_total",
                                     method="other", grpc_status="14"), 1)

    def test_http2_calls_reach_a_member_without_http2_over_http11(self):
        up = self.start_upstream()
        member = self.start_sidecar(up.port, "--http2", "off")
        caller = self.start_outbound_sidecar("--route", f"svc=static!127.0.0.1:{member.port}",
                                             "--workers", "1")
        body = os.urandom(300_000)
        path = os.path.join(self.tmp, "body")
        with open(path, "wb") as f:
            f.write(body)
        base = f"http://127.0.0.1:{caller.outbound}"
        code, status, echoed, err = self.curl(
            f"{base}/echo", args=["--http2-prior-knowledge", "-H", "Host: svc",
                                  "--data-binary", f"@{path}", "-H",
                                  "Content-Type: application/octet-stream"])
        self.assertEqual((code, status), (0, 200), err)
        import hashlib
        import json
        self.assertEqual(json.loads(echoed), {"bytes": len(body),
                                              "sha256": hashlib.sha256(body).hexdigest()})
        for _ in range(3):
            code, status, headers, err = self.curl(
                f"{base}/headers", args=["--http2-prior-knowledge", "-H", "Host: svc",
                                         "-H", "X-Forwarded-Client-Cert: forged"])
            self.assertEqual((code, status), (0, 200), err)
            text = headers.decode().lower()
            self.assertIn("uri=spiffe://dev.local/pinghelp", text)  # the calling sidecar's
            self.assertNotIn("forged", text)
        # The member answered ALPN with HTTP/1.1 once; that connection carried the calls after it.
        self.assertEqual(self.metric(member, "sidecar_tls_handshakes_total", result="ok"), 1)
        self.assertEqual(self.metric(member, "sidecar_requests_total", method="POST", code="2xx"),
                         1)
        self.assertEqual(self.metric(member, "sidecar_http2_connections_total"), 0)
        self.assertEqual(self.metric(caller, "sidecar_outbound_requests_total", route="svc",
                                     code="2xx"), 4)

    def test_grpc_calls_pass_over_a_member_without_http2(self):
        (h2member, svc), = self.grpc_members(1)
        up = self.start_upstream()
        # More members without HTTP/2 than a call has attempts: finding them out, and passing
        # them over after, costs a call none of its five.
        h1members = [self.start_sidecar(up.port, "--http2", "off") for _ in range(6)]
        h1member = h1members[0]
        dest = ",".join(f"127.0.0.1:{m.port}" for m in [h2member] + h1members)
        caller = self.start_outbound_sidecar("--route", f"svc=static!{dest}", "--workers", "1")
        echo = self.outbound_channel(caller, "svc").unary_unary("/test.Svc/Echo")
        self.assertEqual([echo(b"z%d" % i, timeout=10) for i in range(40)],
                         [b"z%d" % i for i in range(40)])
        self.assertEqual(self.metric(h2member, "sidecar_grpc_requests_total", grpc_status="0"), 40)
        for m in h1members:
            self.assertEqual(self.metric(m, "sidecar_requests_total", method="POST", code="2xx"), 0)
        # The member is not failed for it: plain HTTP calls still go to it.
        only_h1 = self.start_outbound_sidecar(
            "--route", f"svc=static!127.0.0.1:{h1member.port}", "--workers", "1")
        with self.assertRaises(grpc.RpcError) as e:
            self.outbound_channel(only_h1, "svc").unary_unary("/test.Svc/Echo")(b"x", timeout=10)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
        code, status, _, err = self.curl(f"http://127.0.0.1:{only_h1.outbound}/headers",
                                         args=["--http2-prior-knowledge", "-H", "Host: svc"])
        self.assertEqual((code, status), (0, 200), err)

    # --- tracing ---------------------------------------------------------------------------------

    def collector(self):
        from zipkin_collector import Collector
        c = Collector()
        self.addCleanup(c.assert_valid, self)
        self.addCleanup(c.close)
        return c

    def test_http2_streams_take_part_in_traces(self):
        col = self.collector()
        up = self.start_upstream()
        sc = self.start_sidecar(up.port, "--zipkin-url", col.url, "--trace-sample-rate", "0")
        trace_id, span_id = "463ac35c9f6413ad48485a3953bb6124", "a2fb4a1d1a96d312"
        code, status, body, err = self.curl(
            f"https://127.0.0.1:{sc.port}/headers",
            args=["--http2", "-H", f"b3: {trace_id}-{span_id}-1"])
        self.assertEqual((code, status), (0, 200), err)
        seen = {k.lower(): v for k, v in json.loads(body)}
        self.assertEqual(seen["x-b3-traceid"], trace_id)
        self.assertNotIn("b3", seen, "the caller's single header is replaced by ours")
        wait_for(lambda: col.where(kind="SERVER"), what="the stream's server span")
        span = col.where(kind="SERVER")[0]
        self.assertEqual((span["traceId"], span["id"], span.get("shared")),
                         (trace_id, span_id, True))
        self.assertEqual(seen["x-b3-parentspanid"], span_id)
        self.assertEqual(span["tags"]["http.protocol"], "h2")

    def test_outbound_http2_calls_get_a_client_span(self):
        col = self.collector()
        members = self.grpc_members(1)
        caller = self.start_outbound_sidecar("--route", f"svc=static!127.0.0.1:{members[0][0].port}",
                                             "--zipkin-url", col.url, "--trace-sample-rate", "1")
        ch = self.outbound_channel(caller, "svc")
        meta = ch.unary_unary("/test.Svc/Meta")(b"", timeout=10).decode()
        wait_for(lambda: col.where(kind="CLIENT"), what="the call's client span")
        span = col.where(kind="CLIENT")[0]
        self.assertIn(f"x-b3-traceid={span['traceId']}", meta)
        self.assertEqual(span["tags"]["sidecar.route"], "svc")
        self.assertEqual(span["remoteEndpoint"]["port"], members[0][0].port)

    # --- abuse -----------------------------------------------------------------------------------

    def test_ping_flood_ends_the_connection_and_the_sidecar_carries_on(self):
        ph = self.start_pinghelp()
        sc = self.start_sidecar(ph.port)
        s, conn = self.h2_socket(sc)
        for i in range(3000):
            conn.ping(i.to_bytes(8, "big"))
        try:
            s.sendall(conn.data_to_send())
        except (ConnectionError, ssl.SSLError):
            pass
        events = self.read_events(s, conn, lambda ev: any(
            isinstance(e, h2.events.ConnectionTerminated) or e == "closed" for e in ev))
        gone = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
        self.assertTrue(gone or "closed" in events, events[-5:])
        self.assertSettles(lambda: self.metric(sc, "sidecar_http2_floods_total"), 1)
        code, status, body, _ = self.curl(f"https://127.0.0.1:{sc.port}/ping", args=["--http2"])
        self.assertEqual(body, b"pong")

    def test_half_a_tls_record_costs_no_cpu_while_the_rest_is_awaited(self):
        # With OpenSSL's read-ahead, part of a record is "pending" yet unreadable: a reader that
        # waits on SSL_has_pending() then would spin until the rest came (or forever).
        ph = self.start_pinghelp()
        sc = self.start_sidecar(ph.port, "--workers", "1")
        for alpn, plaintext in (("h2", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\0" * 4000),
                                ("http/1.1", b"GET /ping HTTP/1.1\r\nHost: localhost\r\n"
                                             + b"x-pad: " + b"a" * 4000 + b"\r\n\r\n")):
            with self.subTest(alpn=alpn):
                s = half_a_record(sc.port, self.certs, alpn, plaintext)
                self.addCleanup(s.close)
                time.sleep(0.3)
                before = cpu_seconds(sc.pid)
                time.sleep(2)
                spent = cpu_seconds(sc.pid) - before
                self.assertLess(spent, 0.5, f"{spent:.2f} s of CPU in 2 s, waiting for a record")
        code, status, body, _ = self.curl(f"https://127.0.0.1:{sc.port}/ping", args=["--http2"])
        self.assertEqual(body, b"pong")

    def test_pings_do_not_keep_an_idle_connection(self):
        # --idle-timeout counts from the last stream's close: a caller that only pings (a
        # keepalive, or a way to hold a connection slot) is told GOAWAY when it runs out.
        ph = self.start_pinghelp()
        sc = self.start_sidecar(ph.port, "--idle-timeout", "2s")
        s, conn = self.h2_socket(sc)
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "GET"), (":scheme", "https"), (":path", "/ping"),
                                (":authority", "localhost")], end_stream=True)
        s.sendall(conn.data_to_send())
        events = self.read_events(s, conn, lambda ev: any(
            isinstance(e, h2.events.StreamEnded) for e in ev))
        self.assertTrue(any(isinstance(e, h2.events.StreamEnded) for e in events), events[-5:])
        start = time.monotonic()
        events = []
        while time.monotonic() - start < 8 and not any(
                isinstance(e, h2.events.ConnectionTerminated) or e == "closed" for e in events):
            conn.ping(b"12345678")
            try:
                s.sendall(conn.data_to_send())
            except (ConnectionError, ssl.SSLError):
                break
            events += self.read_events(s, conn, lambda ev: any(
                isinstance(e, (h2.events.PingAckReceived, h2.events.ConnectionTerminated))
                or e == "closed" for e in ev), timeout=2)
            time.sleep(0.4)
        elapsed = time.monotonic() - start
        s.close()
        gone = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
        self.assertTrue(gone, events[-5:])
        self.assertEqual(gone[0].error_code, h2.errors.ErrorCodes.NO_ERROR)
        self.assertLess(elapsed, 5, "the pings kept the connection past --idle-timeout")
        self.assertTrue(any(isinstance(e, h2.events.PingAckReceived) for e in events))

    def test_rapid_reset_is_bounded(self):
        ph = self.start_pinghelp()
        sc = self.start_sidecar(ph.port)
        s, conn = self.h2_socket(sc)
        sent = 0
        try:
            for i in range(4000):
                sid = conn.get_next_available_stream_id()
                conn.send_headers(sid, [(":method", "GET"), (":scheme", "https"),
                                        (":path", "/ping"), (":authority", "localhost")])
                conn.reset_stream(sid)
                sent += 1
                if i % 100 == 99:
                    s.sendall(conn.data_to_send())
            s.sendall(conn.data_to_send())
        except (ConnectionError, ssl.SSLError, h2.exceptions.ProtocolError):
            pass
        events = self.read_events(s, conn, lambda ev: any(
            isinstance(e, h2.events.ConnectionTerminated) or e == "closed" for e in ev))
        self.assertTrue(any(isinstance(e, h2.events.ConnectionTerminated) or e == "closed"
                            for e in events), f"{sent} streams reset and the connection goes on")
        code, status, body, _ = self.curl(f"https://127.0.0.1:{sc.port}/ping", args=["--http2"])
        self.assertEqual(body, b"pong")

    def test_continuation_flood_ends_the_connection(self):
        ph = self.start_pinghelp()
        sc = self.start_sidecar(ph.port)
        s, _ = self.h2_socket(sc)
        # HEADERS without END_HEADERS, then CONTINUATION frames that never end the block.
        block = b"\x82\x87\x84"  # :method GET, :scheme https, :path /
        frames = len(block).to_bytes(3, "big") + b"\x01\x01" + (1).to_bytes(4, "big") + block
        cont = (16).to_bytes(3, "big") + b"\x09\x00" + (1).to_bytes(4, "big") + b"\x40\x01a\x01b" * 2 + b"\x40\x01c\x01d\x00\x00"
        try:
            s.sendall(frames + cont * 200)
        except (ConnectionError, ssl.SSLError):
            pass
        s.settimeout(5)
        got = b""
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    break
                got += d
        except (ConnectionError, ssl.SSLError, socket.timeout):
            pass
        self.assertIn(b"\x07", got[:4096], "a GOAWAY frame (type 7) before the close")
        code, status, body, _ = self.curl(f"https://127.0.0.1:{sc.port}/ping", args=["--http2"])
        self.assertEqual(body, b"pong")

    def test_a_slow_reader_does_not_grow_memory(self):
        up = self.start_upstream()
        sc = self.start_sidecar(up.port, "--workers", "1")
        s, conn = self.h2_socket(sc)
        conn.send_headers(1, [(":method", "GET"), (":scheme", "https"),
                              (":path", "/download?bytes=200000000"), (":authority", "localhost")],
                          end_stream=True)
        s.sendall(conn.data_to_send())
        time.sleep(2)  # read nothing: the window (64 KiB) and our pipe bound what is held
        rss = sc.rss_kib()
        time.sleep(2)
        self.assertLess(sc.rss_kib() - rss, 4096)
        self.assertGreaterEqual(self.metric(sc, "sidecar_http2_flow_control_stalls_total"), 1)
        s.close()


if __name__ == "__main__":
    unittest.main()
