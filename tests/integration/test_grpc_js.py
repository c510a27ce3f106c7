"""gRPC through the sidecar with Node's @grpc/grpc-js (npm) on both ends (docs/http2.md): a
grpc-js client (js/grpc_client.js) calling a grpc-js server (js/grpc_server.js) that serves
js/grpc_echo.proto's echo service, one method of each gRPC kind.

- Inbound: the client over mTLS (ALPN h2) to --listen, the server as the local service over h2c
  (--upstream-protocol h2c, and auto for the error case): unary, client, server and bidirectional
  streaming, 3 MiB messages both ways, deadlines, a cancellation mid-stream, the server's own
  status, message and trailing metadata; Python grpcio against the grpc-js server and the
  grpc-js client against a grpcio server, through the same kind of sidecar.
- Outbound: the client over h2c to --outbound-listen, routed by its :authority
  (grpc.default_authority) to a member found in ZooKeeper (announced once the grpc-js server
  answered the sidecar's grpc.health.v1 check), over mTLS to the member's sidecar; a route with
  no member is UNAVAILABLE.

A burst of calls on a new connection to a peer that allows fewer than 100 streams at once is
refused past the limit and answered UNAVAILABLE, on both legs: kept as expected failures (see
their comments) beside the same burst on an open connection, which waits and passes.

One set of processes per class. npm installs the pinned packages into a temporary directory at
the start; skipped when node, npm or the npm registry is missing."""
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import unittest
from concurrent import futures

from harness import SidecarTestCase, npm_work_dir, wait_for
from protowire import read_fields, varint

sys.path.append("/usr/lib/python3/dist-packages")  # Debian's grpcio beside pyenv's Python
try:
    import grpc  # noqa: E402
except ImportError:  # only the grpcio cases need it
    grpc = None

# Verified with node v20.20 (nodesource's nodejs) and npm 11: grpc-js's and proto-loader's
# releases of the time. proto-loader brings protobufjs 7.
NPM_PACKAGES = ["@grpc/grpc-js@1.14.7", "@grpc/proto-loader@0.8.1"]

_npm = {}


def module_npm_dir():
    """The npm work dir (NPM_PACKAGES, the scripts and the proto), made once for the module; or
    None and a reason to skip."""
    if "dir" not in _npm:
        _npm["dir"], _npm["reason"] = npm_work_dir(NPM_PACKAGES, "grpc_*", "@grpc/grpc-js")
    return _npm["dir"], _npm["reason"]


def tearDownModule():
    if _npm.get("dir"):
        shutil.rmtree(_npm["dir"], ignore_errors=True)


def sha(data):
    return hashlib.sha256(data).hexdigest()


# Msg (js/grpc_echo.proto) by hand for grpcio, which has no protoc plugin here: field 1 (data)
# and 2 (count) are all the grpcio cases use.
def msg(data=b"", count=0):
    out = b"\x0a" + varint(len(data)) + data if data else b""
    return out + (b"\x10" + varint(count) if count else b"")


def msg_data(raw):
    """Field 1 of a Msg (the others skipped)."""
    return read_fields(raw).get(1, b"")


def class_fixture(tmp, certs):
    """The harness's process helpers (spawn_serving, start_sidecar...) for processes that live as
    long as a test class: a SidecarTestCase that is never run (made here, out of the module's
    namespace, so that unittest does not collect it), its .procs stopped by the class."""
    class Fixture(SidecarTestCase):
        def runTest(self):  # noqa: N802 - unittest's name
            pass

    fx = Fixture()
    fx.tmp, fx.certs, fx.procs = tmp, certs, []
    return fx


class GrpcJsCase(SidecarTestCase):
    """Starts the class's processes through a class_fixture (self.fx) and stops them at its end;
    a failing test prints their output."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.js, reason = module_npm_dir()
        if cls.js is None:
            shutil.rmtree(cls.tmp, ignore_errors=True)
            raise unittest.SkipTest(reason)
        cls.fx = class_fixture(cls.tmp, cls.certs)
        cls.addClassCleanup(cls._stop_fixture)
        cls.start_processes()

    @classmethod
    def _stop_fixture(cls):
        for p in reversed(cls.fx.procs):
            p.stop(timeout=5)

    @classmethod
    def start_processes(cls):
        raise NotImplementedError

    def tearDown(self):
        result = self._outcome.result
        if any(t is self for t, _ in result.errors + result.failures):
            for p in self.fx.procs:
                sys.stderr.write(f"--- {p.name} output ---\n{p.output()[-4000:]}\n")
        super().tearDown()

    @classmethod
    def start_js_server(cls, **options):
        """A grpc-js server for the class; options: grpc.Server's."""
        p = cls.fx.spawn_serving("grpc-js-server", lambda ports: (
            ["node", os.path.join(cls.js, "grpc_server.js"), str(ports[0]), json.dumps(options)],
            None), 1)
        p.port = p.ports[0]
        return p

    def js_calls(self, target, steps, tls=True, authority=None):
        """The steps (js/grpc_client.js's STEP) on one grpc-js channel: one result each."""
        config = {"target": f"127.0.0.1:{target}", "steps": steps}
        if tls:
            config["certs"] = self.certs.dir
        if authority:
            config["authority"] = authority
        r = subprocess.run(["node", os.path.join(self.js, "grpc_client.js"), json.dumps(config)],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        results = json.loads(r.stdout.strip().splitlines()[-1])
        self.assertEqual(len(results), len(steps))
        return results

    def assertOk(self, result):
        self.assertEqual((result["code"], result["details"]), (0, ""), result)

    @staticmethod
    def texts(result):
        return [r["text"] for r in result["replies"]]

    def server_events(self, server, **match):
        events = []
        for line in server.output().splitlines():
            if line.startswith("{"):
                event = json.loads(line)
                if all(event.get(k) == v for k, v in match.items()):
                    events.append(event)
        return events


class GrpcJsInboundTest(GrpcJsCase):
    """grpc-js client -> sidecar --listen (mTLS, h2) -> grpc-js server (h2c)."""

    @classmethod
    def start_processes(cls):
        cls.server = cls.start_js_server()
        cls.sc = cls.fx.start_sidecar(cls.server.port, "--upstream-protocol", "h2c")
        cls.auto = cls.fx.start_sidecar(cls.server.port, "--upstream-protocol", "auto")
        # A service allowing 2 streams at once, behind two sidecars with one h2c connection each:
        # one whose connection is opened by a burst, one whose connection is open before.
        cls.narrow = cls.start_js_server(**{"grpc.max_concurrent_streams": 2})
        narrow = [cls.narrow.port, "--upstream-protocol", "h2c", "--workers", "1",
                  "--upstream-h2-connections", "1"]
        cls.narrow_cold = cls.fx.start_sidecar(*narrow)
        cls.narrow_warm = cls.fx.start_sidecar(*narrow)

    def grpc_count(self, status, sc=None):
        return self.metric(sc or self.sc, "sidecar_grpc_requests_total", grpc_status=str(status))

    def test_unary_and_every_streaming_kind(self):
        ok_before = self.grpc_count(0)
        unary, client_stream, server_stream, bidi = self.js_calls(self.sc.port, [
            {"call": "Unary", "msg": {"data": "hello", "tag": "kinds"}},
            {"call": "ClientStream", "msgs": [{"data": "ab"}, {"data": "cde"}, {"data": ""}]},
            {"call": "ServerStream", "msg": {"count": 5, "delay_ms": 150}},
            {"call": "Bidi", "msgs": [{"data": "a"}, {"data": "bc"}, {"data": "def"}]},
        ])
        for result in (unary, client_stream, server_stream, bidi):
            self.assertOk(result)
        self.assertEqual(self.texts(unary), ["hello"])
        # The server was told who called: the client's certificate, by the sidecar.
        started = self.server_events(self.server, event="started", tag="kinds")
        self.assertIn("URI=spiffe://dev.local/caller", started[0]["xfcc"], started)
        self.assertEqual([(r["text"], r["count"]) for r in client_stream["replies"]],
                         [("abcde", 3)])
        self.assertEqual(self.texts(server_stream), ["0", "1", "2", "3", "4"])
        # Each reply came as the server wrote it (150 ms apart), not all at the end.
        at = [r["at_ms"] for r in server_stream["replies"]]
        self.assertGreater(at[-1] - at[0], 400, at)
        # Ping-pong: each message was written only after the answer to the one before.
        self.assertEqual(self.texts(bidi), ["A", "BC", "DEF"])
        self.assertSettles(lambda: self.grpc_count(0) - ok_before, 4)

    def test_3_mib_messages_each_way(self):
        size = 3 << 20
        unary, bidi, client_stream = self.js_calls(self.sc.port, [
            {"call": "Unary", "msg": {"data": {"size": size}}},
            {"call": "Bidi", "msgs": [{"data": {"size": size, "fill": "q"}},
                                      {"data": {"size": size, "fill": "r"}}]},
            {"call": "ClientStream", "msgs": [{"data": {"size": size, "fill": "s"}}] * 2},
        ])
        for result in (unary, bidi, client_stream):
            self.assertOk(result)
        self.assertEqual([(r["len"], r["sha256"]) for r in unary["replies"]],
                         [(size, unary["sent"][0]["sha256"])])
        self.assertEqual([(r["len"], r["sha256"]) for r in bidi["replies"]],
                         [(size, sha(b"Q" * size)), (size, sha(b"R" * size))])
        self.assertEqual([(r["len"], r["sha256"], r["count"]) for r in client_stream["replies"]],
                         [(2 * size, sha(b"s" * (2 * size)), 2)])

    def test_many_calls_at_once_on_one_channel(self):
        size = 1 << 20
        calls = ([{"call": "Unary", "msg": {"data": f"call {i}"}} for i in range(200)]
                 + [{"call": "Bidi", "msgs": [{"data": f"b{i}"}] * 3} for i in range(20)]
                 + [{"call": "ServerStream", "msg": {"count": 20, "data": {"size": size,
                                                                           "fill": "w"}}}]
                 + [{"call": "ClientStream", "msgs": [{"data": {"size": size, "fill": "v"}}] * 8}])
        results, = self.js_calls(self.sc.port, [{"parallel": calls}])
        for result in results:
            self.assertOk(result)
        self.assertEqual([self.texts(r) for r in results[:200]],
                         [[f"call {i}"] for i in range(200)])
        self.assertEqual([self.texts(r) for r in results[200:220]],
                         [[f"B{i}"] * 3 for i in range(20)])
        self.assertEqual([(r["len"], r["sha256"]) for r in results[220]["replies"]],
                         [(size, sha(b"w" * size))] * 20)  # 20 MiB back on one stream
        self.assertEqual([(r["len"], r["sha256"]) for r in results[221]["replies"]],
                         [(8 * size, sha(b"v" * (8 * size)))])

    def test_an_answer_before_the_request_ends(self):
        """A client-streaming call the server answers after its second message, while the client
        goes on sending 12 MiB: the answer comes at once, the rest is not waited for."""
        msgs = [{"data": "a"}, {"fail_code": 9, "fail_message": "enough", "tag": "early"}]
        msgs += [{"data": {"size": 64 << 10, "fill": "z"}}] * 200
        early, after = self.js_calls(self.sc.port, [
            {"call": "ClientStream", "msgs": msgs, "deadline_ms": 20000},
            {"call": "Unary", "msg": {"data": "after"}}])
        self.assertEqual((early["code"], early["details"]), (9, "enough"), early)
        self.assertLess(early["elapsed_ms"], 5000, early)
        self.assertOk(after)
        self.assertSettles(lambda: self.metric(self.sc, "sidecar_http2_streams_open"), 0)

    # On a new h2c connection the sidecar sends streams before the local service's SETTINGS
    # came (nghttp2 assumes 100 until then), past the service's own
    # SETTINGS_MAX_CONCURRENT_STREAMS (here 2); the service refuses the excess with RST_STREAM
    # REFUSED_STREAM. A refused stream was never processed (RFC 9113 8.7): the sidecar sends it
    # again, and now it waits for room, as on a connection already open.
    def test_a_burst_on_a_new_connection_to_a_service_allowing_2_streams(self):
        results, = self.js_calls(self.narrow_cold.port, [{"parallel": self.burst()}])
        self.assertEqual([(r["code"], r["details"]) for r in results], [(0, "")] * 50)
        self.assertGreater(self.metric(self.narrow_cold, "sidecar_upstream_h2_streams_resent_total"), 0)

    def test_a_burst_on_an_open_connection_to_a_service_allowing_2_streams_waits(self):
        warm, results = self.js_calls(self.narrow_warm.port, [
            {"call": "Unary", "msg": {"data": "open it"}}, {"parallel": self.burst()}])
        self.assertOk(warm)
        self.assertEqual([(r["code"], r["details"]) for r in results], [(0, "")] * 50)
        self.assertEqual([self.texts(r) for r in results], [[f"burst {i}"] for i in range(50)])

    @staticmethod
    def burst():
        return [{"call": "Unary", "msg": {"data": f"burst {i}", "delay_ms": 50}} for i in range(50)]

    def test_a_deadline_shorter_than_the_method(self):
        def accounted():
            return (self.grpc_count(4)
                    + self.metric(self.sc, "sidecar_http2_resets_received_total"))

        before = accounted()
        results = self.js_calls(self.sc.port, [
            {"call": "Unary", "msg": {"delay_ms": 5000, "tag": "deadline"}, "deadline_ms": 500}])
        self.assertEqual(results[0]["code"], 4, results)  # DEADLINE_EXCEEDED
        self.assertLess(results[0]["elapsed_ms"], 2000, results)
        # grpc-js gives up at the deadline itself and resets the stream: that is what the
        # sidecar, whose own timer (checked every 100 ms) comes later, sees and counts
        # (sidecar_grpc_requests_total counts answered calls only: docs/metrics.md). Should the
        # service's own DEADLINE_EXCEEDED come first, it is relayed and counted as status 4.
        wait_for(lambda: accounted() >= before + 1, what="the abandoned call counted")
        # A caller whose event loop is held past its deadline cannot give up itself: the answer
        # comes from the far side (the local service's grpc-js enforces the grpc-timeout the
        # sidecar passed on, or the sidecar does), and the sidecar counts what it relayed.
        # (A first call opens the connection: the slow one's head goes out at once.)
        before = self.grpc_count(4)
        warm, results = self.js_calls(self.sc.port, [
            {"call": "Unary", "msg": {"data": "warm"}},
            {"call": "Unary", "msg": {"delay_ms": 5000, "tag": "deadline-busy"},
             "deadline_ms": 500, "busy_ms": 1500}])
        self.assertOk(warm)
        self.assertEqual(results["code"], 4, results)
        self.assertLess(results["elapsed_ms"], 3000, results)
        self.assertSettles(lambda: self.grpc_count(4) - before, 1)
        # Nothing left open, and the next call goes through.
        self.assertSettles(lambda: self.metric(self.sc, "sidecar_http2_streams_open"), 0)
        self.assertOk(self.js_calls(self.sc.port, [{"call": "Unary", "msg": {"data": "x"}}])[0])

    def test_a_cancellation_mid_server_stream_reaches_the_server(self):
        resets = self.metric(self.sc, "sidecar_http2_resets_received_total")
        cancelled, after = self.js_calls(self.sc.port, [
            {"call": "ServerStream", "msg": {"count": 1000, "delay_ms": 20, "tag": "cancel-me"},
             "cancel_after": 3},
            {"call": "Unary", "msg": {"data": "still here"}},
        ])
        self.assertEqual(cancelled["code"], 1, cancelled)  # CANCELLED, by the client itself
        self.assertEqual(self.texts(cancelled)[:3], ["0", "1", "2"])
        # The server saw the call cancelled and stopped writing, long before its 1000 replies.
        events = wait_for(lambda: self.server_events(self.server, event="cancelled",
                                                     tag="cancel-me"),
                          what="the server's call cancelled")
        self.assertEqual(len(events), 1, events)
        self.assertLess(events[0]["sent"], 100, events)
        self.assertEqual(self.server_events(self.server, event="ended", tag="cancel-me"), [])
        self.assertGreaterEqual(self.metric(self.sc, "sidecar_http2_resets_received_total"),
                                resets + 1)
        # The same channel's next call is answered; no stream is left open.
        self.assertOk(after)
        self.assertEqual(self.texts(after), ["still here"])
        self.assertSettles(lambda: self.metric(self.sc, "sidecar_http2_streams_open"), 0)

    def test_the_servers_status_message_and_trailers_reach_the_client_unchanged(self):
        message = "no such thing: échec ✓ 100% done\tnow"
        for sc in (self.sc, self.auto):  # h2c, and auto (gRPC over h2c)
            before = self.grpc_count(5, sc)
            result, = self.js_calls(sc.port, [
                {"call": "Unary", "msg": {"fail_code": 5, "fail_message": message}}])
            self.assertEqual((result["code"], result["details"]), (5, message), result)  # NOT_FOUND
            self.assertEqual(result["trailers"].get("x-echo-reason"), "asked-to-fail", result)
            self.assertEqual(base64.b64decode(result["trailers"].get("x-echo-detail-bin", "")),
                             bytes([0, 1, 2, 0xFE, 0xFF]), result)
            self.assertSettles(lambda: self.grpc_count(5, sc) - before, 1)

    @unittest.skipIf(grpc is None, "python3-grpcio is not installed")
    def test_a_grpcio_client_calls_the_grpc_js_server(self):
        with grpc.secure_channel(f"127.0.0.1:{self.sc.port}", self.grpc_credentials(),
                                 options=[("grpc.ssl_target_name_override", "localhost")]) as ch:
            self.assertEqual(msg_data(ch.unary_unary("/grpcjs.test.Echo/Unary")(
                msg(b"from python"), timeout=10)), b"from python")
            self.assertEqual([msg_data(m) for m in ch.unary_stream(
                "/grpcjs.test.Echo/ServerStream")(msg(count=3), timeout=10)], [b"0", b"1", b"2"])
            self.assertEqual(msg_data(ch.stream_unary("/grpcjs.test.Echo/ClientStream")(
                iter([msg(b"ab"), msg(b"c")]), timeout=10)), b"abc")
            self.assertEqual([msg_data(m) for m in ch.stream_stream("/grpcjs.test.Echo/Bidi")(
                iter([msg(b"a"), msg(b"bc")]), timeout=10)], [b"A", b"BC"])

    @unittest.skipIf(grpc is None, "python3-grpcio is not installed")
    def test_the_grpc_js_client_calls_a_grpcio_server(self):
        def unary(req, ctx):
            return req

        def bidi(it, ctx):
            for m in it:
                yield msg(msg_data(m).upper())

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("grpcjs.test.Echo", {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi)}),))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self.addCleanup(server.stop, 0)
        sc = self.start_sidecar(port, "--upstream-protocol", "h2c")
        unary_result, bidi_result = self.js_calls(sc.port, [
            {"call": "Unary", "msg": {"data": "to python"}},
            {"call": "Bidi", "msgs": [{"data": "x"}, {"data": "yz"}]}])
        self.assertOk(unary_result)
        self.assertEqual(self.texts(unary_result), ["to python"])
        self.assertOk(bidi_result)
        self.assertEqual(self.texts(bidi_result), ["X", "YZ"])


class GrpcJsOutboundTest(GrpcJsCase):
    """grpc-js client -> the caller's --outbound-listen (h2c) -> a member sidecar found in
    ZooKeeper (mTLS, h2) -> grpc-js server (h2c)."""

    @classmethod
    def start_processes(cls):
        fx = cls.fx
        cls.zk = fx.start_zookeeper()
        cls.server = cls.start_js_server()
        # Announced once grpc.health.v1.Health/Check on the grpc-js server says SERVING.
        cls.member = fx.start_member(cls.zk, "/svc/echo", cls.server.port,
                                     "--upstream-protocol", "h2c", "--health-check", "grpc")
        zk = f"127.0.0.1:{cls.zk.port}"
        # A member (static) whose sidecar allows 2 streams at once.
        cls.narrow = fx.start_sidecar(cls.server.port, "--upstream-protocol", "h2c",
                                      "--http2-max-concurrent-streams", "2")
        cls.caller = fx.start_outbound_sidecar("--zk", zk, "--route", "echo=/svc/echo",
                                               "--route", "nobody=/svc/nobody", "--route",
                                               f"narrow=static!127.0.0.1:{cls.narrow.port}",
                                               "--workers", "1",
                                               upstream_port=cls.server.port)  # not called
        wait_for(lambda: "event=route_members route=echo members=1" in cls.caller.output(),
                 timeout=20, what="the caller's route to the member")

    def test_unary_and_bidi_by_name(self):
        calls = self.metric_sum(self.caller, "sidecar_outbound_requests_total", route="echo")
        served = self.metric(self.member, "sidecar_grpc_requests_total", grpc_status="0")
        size = 3 << 20
        unary, bidi, server_stream, client_stream, big, failed = self.js_calls(
            self.caller.outbound, [
                {"call": "Unary", "msg": {"data": "by name", "tag": "by-name"}},
                {"call": "Bidi", "msgs": [{"data": "p"}, {"data": "qr"}, {"data": "stu"}]},
                {"call": "ServerStream", "msg": {"count": 3}},
                {"call": "ClientStream", "msgs": [{"data": "ab"}, {"data": "c"}]},
                {"call": "Unary", "msg": {"data": {"size": size}}},
                {"call": "Unary", "msg": {"fail_code": 5, "fail_message": "not here ✓"}},
            ], tls=False, authority="echo")
        for result in (unary, bidi, server_stream, client_stream, big):
            self.assertOk(result)
        self.assertEqual(self.texts(unary), ["by name"])
        # The member's sidecar saw the caller's sidecar's certificate (its --tls-cert).
        started = self.server_events(self.server, event="started", tag="by-name")
        self.assertIn("URI=spiffe://dev.local/pinghelp", started[0]["xfcc"], started)
        self.assertEqual(self.texts(bidi), ["P", "QR", "STU"])  # ping-pong, as inbound
        self.assertEqual(self.texts(server_stream), ["0", "1", "2"])
        self.assertEqual(self.texts(client_stream), ["abc"])
        self.assertEqual([(r["len"], r["sha256"]) for r in big["replies"]],
                         [(size, big["sent"][0]["sha256"])])
        self.assertEqual((failed["code"], failed["details"]), (5, "not here ✓"), failed)
        self.assertEqual(failed["trailers"].get("x-echo-reason"), "asked-to-fail", failed)
        self.assertSettles(lambda: self.metric_sum(self.caller, "sidecar_outbound_requests_total",
                                                   route="echo") - calls, 6)
        self.assertSettles(lambda: self.metric(self.member, "sidecar_grpc_requests_total",
                                               grpc_status="0") - served, 5)

    def test_a_cancellation_and_a_deadline_cross_both_sidecars(self):
        cancelled, late, after = self.js_calls(self.caller.outbound, [
            {"call": "ServerStream", "msg": {"count": 1000, "delay_ms": 20, "tag": "out-cancel"},
             "cancel_after": 3},
            {"call": "Unary", "msg": {"delay_ms": 5000}, "deadline_ms": 500},
            {"call": "Unary", "msg": {"data": "next"}},
        ], tls=False, authority="echo")
        self.assertEqual(cancelled["code"], 1, cancelled)  # CANCELLED
        events = wait_for(lambda: self.server_events(self.server, event="cancelled",
                                                     tag="out-cancel"),
                          what="the server's call cancelled through two sidecars")
        self.assertLess(events[0]["sent"], 100, events)
        self.assertEqual(self.server_events(self.server, event="ended", tag="out-cancel"), [])
        self.assertEqual(late["code"], 4, late)  # DEADLINE_EXCEEDED
        self.assertLess(late["elapsed_ms"], 2000, late)
        self.assertOk(after)
        self.assertEqual(self.texts(after), ["next"])
        self.assertSettles(lambda: self.metric(self.member, "sidecar_http2_streams_open"), 0)

    # The outbound side of the same: a member whose sidecar allows 2 streams
    # (--http2-max-concurrent-streams 2) refuses the excess of a burst on a new connection
    # (nghttp2 refuses it before our SETTINGS are acknowledged); the caller sends each refused
    # stream to the same member again (no other member to try), and counts it as a retry.
    def test_a_burst_on_a_new_connection_to_a_member_allowing_2_streams(self):
        results, = self.js_calls(self.caller.outbound, [{"parallel": [
            {"call": "Unary", "msg": {"data": f"burst {i}", "delay_ms": 50}} for i in range(50)]}],
            tls=False, authority="narrow")
        self.assertEqual([(r["code"], r["details"]) for r in results], [(0, "")] * 50)
        self.assertGreater(self.metric_sum(self.caller, "sidecar_outbound_retries_total", route="narrow"), 0)

    def test_a_route_with_no_member_is_unavailable(self):
        nobody, nothing = self.js_calls(self.caller.outbound, [
            {"call": "Unary", "msg": {"data": "x"}}], tls=False, authority="nobody") + \
            self.js_calls(self.caller.outbound, [
                {"call": "Unary", "msg": {"data": "x"}}], tls=False, authority="nothing")
        # The sidecar's own answers (it names the service), not the client's failure to connect.
        self.assertEqual(nobody["code"], 14, nobody)  # UNAVAILABLE
        self.assertIn("nobody", nobody["details"])
        self.assertEqual(nothing["code"], 12, nothing)  # UNIMPLEMENTED: no such route (404)
        self.assertIn("no route", nothing["details"])
        # The route with a member still answers.
        self.assertOk(self.js_calls(self.caller.outbound, [{"call": "Unary", "msg": {"data": "y"}}],
                                    tls=False, authority="echo")[0])


if __name__ == "__main__":
    unittest.main()
