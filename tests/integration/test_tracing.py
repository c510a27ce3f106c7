"""Zipkin tracing (docs/tracing.md): B3 read, replaced and continued through real sidecars, spans
posted to a collector that checks every one against a schema of Zipkin's v2 span
(zipkin_collector.py), and a collector that is down, slow or failing costing requests nothing."""
import json
import re
import socket
import time
import unittest

from harness import SidecarTestCase, wait_for
from zipkin_collector import Collector, schema_errors

HEX16 = re.compile(r"^[0-9a-f]{16}$")


def check_span(test, s):
    """What we promise of a span beyond Zipkin's v2 schema, which the collector checks."""
    test.assertIn(s["kind"], ("SERVER", "CLIENT"))
    test.assertIsInstance(s["name"], str)
    test.assertGreater(s["timestamp"], 1_600_000_000_000_000)  # microseconds since the epoch
    test.assertGreaterEqual(s["duration"], 1)
    test.assertIsInstance(s["localEndpoint"]["serviceName"], str)


class TracingTest(SidecarTestCase):

    def collector(self, status=202, delay=0.0):
        c = Collector(status, delay)
        self.addCleanup(c.assert_valid, self)
        self.addCleanup(c.close)
        return c

    def headers_seen(self, body):
        return {k.lower(): v for k, v in json.loads(body)}

    def test_a_callers_b3_is_joined_and_the_local_service_gets_a_child(self):
        c = self.collector()
        up = self.start_upstream()
        sc = self.start_sidecar(up.port, "--zipkin-url", c.url, "--trace-sample-rate", "0",
                                "--service-name", "backend")
        trace, span = "463ac35c9f6413ad48485a3953bb6124", "a2fb4a1d1a96d312"
        code, status, body, err = self.curl(
            f"https://localhost:{sc.port}/headers?secret=1",
            args=["-H", f"X-B3-TraceId: {trace}", "-H", f"X-B3-SpanId: {span.upper()}",
                  "-H", "X-B3-Sampled: 1"])
        self.assertEqual((code, status), (0, 200), err)
        seen = self.headers_seen(body)
        self.assertEqual(seen["x-b3-traceid"], trace)
        self.assertEqual(seen["x-b3-parentspanid"], span)  # our span is the parent
        self.assertRegex(seen["x-b3-spanid"], HEX16)
        self.assertNotEqual(seen["x-b3-spanid"], span)
        self.assertEqual(seen["x-b3-sampled"], "1")
        wait_for(lambda: c.where(id=span), timeout=10, what="the server span posted")
        s = c.where(id=span)[0]
        check_span(self, s)
        self.assertEqual((s["traceId"], s["kind"], s["name"], s.get("shared")),
                         (trace, "SERVER", "get", True))
        self.assertNotIn("parentId", s)  # the caller's span had none
        self.assertEqual(s["localEndpoint"]["serviceName"], "backend")
        self.assertEqual(s["remoteEndpoint"]["ipv4"], "127.0.0.1")
        self.assertEqual(s["tags"]["http.path"], "/headers")  # never the query
        self.assertEqual(s["tags"]["http.status_code"], "200")
        self.assertIn("peer.identity", s["tags"])
        self.assertEqual(c.posts[0][:2], ("/api/v2/spans", "application/json"))

    def test_the_single_header_form_is_read_and_replaced_by_the_multi_header_form(self):
        c = self.collector()
        up = self.start_upstream()
        sc = self.start_sidecar(up.port, "--zipkin-url", c.url, "--trace-sample-rate", "0")
        code, status, body, err = self.curl(
            f"https://localhost:{sc.port}/headers",
            args=["-H", "b3: 80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d-05e3ac9a4f6e3b90"])
        self.assertEqual((code, status), (0, 200), err)
        seen = self.headers_seen(body)
        self.assertNotIn("b3", seen)
        self.assertEqual(seen["x-b3-traceid"], "80f198ee56343ba864fe8b2a57d3eff7")
        self.assertEqual(seen["x-b3-parentspanid"], "e457b5a2e4d86bd1")
        self.assertEqual(seen["x-b3-flags"], "1")  # debug goes on
        wait_for(lambda: c.where(id="e457b5a2e4d86bd1"), timeout=10, what="the debug span")
        s = c.where(id="e457b5a2e4d86bd1")[0]
        check_span(self, s)
        self.assertEqual((s["parentId"], s.get("debug")), ("05e3ac9a4f6e3b90", True))

    def test_malformed_b3_is_dropped_counted_and_never_forwarded(self):
        c = self.collector()
        up = self.start_upstream()
        sc = self.start_sidecar(up.port, "--zipkin-url", c.url, "--trace-sample-rate", "1")
        code, status, body, err = self.curl(
            f"https://localhost:{sc.port}/headers",
            args=["-H", "X-B3-TraceId: not-hex-at-all!!", "-H", "X-B3-SpanId: a2fb4a1d1a96d312"])
        self.assertEqual((code, status), (0, 200), err)
        seen = self.headers_seen(body)
        self.assertNotEqual(seen["x-b3-traceid"], "not-hex-at-all!!")
        self.assertRegex(seen["x-b3-traceid"], HEX16)  # a new trace, sampled at rate 1
        self.assertEqual(seen["x-b3-sampled"], "1")
        self.assertEqual(self.metric(sc, "sidecar_trace_b3_malformed_total"), 1)
        wait_for(lambda: c.where(traceId=seen["x-b3-traceid"]), timeout=10, what="the new trace")

    def test_with_tracing_off_b3_passes_untouched(self):
        up = self.start_upstream()
        sc = self.start_sidecar(up.port)
        code, status, body, err = self.curl(
            f"https://localhost:{sc.port}/headers",
            args=["-H", "X-B3-TraceId: anything", "-H", "b3: 1"])
        self.assertEqual((code, status), (0, 200), err)
        seen = self.headers_seen(body)
        self.assertEqual((seen["x-b3-traceid"], seen["b3"]), ("anything", "1"))
        self.assertNotIn("x-b3-spanid", seen)

    def test_a_call_across_two_sidecars_is_one_trace_with_its_parents_in_line(self):
        c = self.collector()
        up = self.start_upstream()
        callee = self.start_sidecar(up.port, "--zipkin-url", c.url, "--service-name", "callee",
                                    "--trace-sample-rate", "0")
        caller = self.start_outbound_sidecar(
            "--route", f"backend=static!127.0.0.1:{callee.port}", "--zipkin-url", c.url,
            "--service-name", "caller", "--trace-sample-rate", "0")
        trace, local_span = "48485a3953bb6124", "1111111111111111"
        status, body, _ = self.outbound_call(
            caller.outbound, "backend", "/headers",
            headers={"X-B3-TraceId": trace, "X-B3-SpanId": local_span, "X-B3-Sampled": "1"})
        self.assertEqual(status, 200, body)
        seen = self.headers_seen(body)
        wait_for(lambda: len(c.where(traceId=trace)) >= 2, timeout=10, what="both spans posted")
        client = c.where(traceId=trace, kind="CLIENT")[0]
        server = c.where(traceId=trace, kind="SERVER")[0]
        for s in (client, server):
            check_span(self, s)
        # The local service's span -> the caller sidecar's CLIENT span, shared with the callee
        # sidecar's SERVER span -> the callee's local service.
        self.assertEqual(client["parentId"], local_span)
        self.assertEqual(client["localEndpoint"]["serviceName"], "caller")
        self.assertEqual(client["tags"]["sidecar.route"], "backend")
        self.assertEqual(client["remoteEndpoint"]["port"], callee.port)
        self.assertEqual((server["id"], server.get("shared")), (client["id"], True))
        self.assertEqual(server["localEndpoint"]["serviceName"], "callee")
        self.assertEqual(seen["x-b3-traceid"], trace)
        self.assertEqual(seen["x-b3-parentspanid"], client["id"])

    def test_a_finagle_callers_deadline_bounds_the_outbound_call_and_goes_on(self):
        up = self.start_upstream()
        callee = self.start_sidecar(up.port)
        caller = self.start_outbound_sidecar("--route", f"backend=static!127.0.0.1:{callee.port}")
        deadline = "Finagle-Ctx-com.twitter.finagle.Deadline"

        def finagle_deadline(seconds_from_now):
            now = time.time_ns()
            return f"{now} {now + int(seconds_from_now * 1e9)}"

        value = finagle_deadline(30)
        status, body, _ = self.outbound_call(caller.outbound, "backend", "/headers",
                                             headers={deadline: value, "Dtab-Local": "/s=>/t"})
        self.assertEqual(status, 200, body)
        seen = self.headers_seen(body)
        self.assertEqual(seen[deadline.lower()], value)  # passed on as it came
        self.assertEqual(seen["dtab-local"], "/s=>/t")
        # 300 ms left: a slow member is given no more (--outbound-timeout is 30 s).
        started = time.monotonic()
        status, body, _ = self.outbound_call(caller.outbound, "backend", "/slow?ms=3000",
                                             headers={deadline: finagle_deadline(0.3)})
        took = time.monotonic() - started
        self.assertEqual(status, 504, body)
        self.assertLess(took, 2.0)
        # Past already: answered at once, never sent.
        status, body, _ = self.outbound_call(caller.outbound, "backend", "/slow?ms=3000",
                                             headers={deadline: finagle_deadline(-1)})
        self.assertEqual(status, 504)
        self.assertIn(b"deadline has passed", body)
        # A value that cannot be read is ignored, as Finagle ignores it.
        status, body, _ = self.outbound_call(caller.outbound, "backend", "/",
                                             headers={deadline: "soon"})
        self.assertEqual(status, 200, body)

    def test_the_collectors_schema_refuses_what_is_not_a_v2_span(self):
        good = {"traceId": "463ac35c9f6413ad48485a3953bb6124", "id": "a2fb4a1d1a96d312",
                "parentId": "0020000000000001", "kind": "SERVER", "name": "get",
                "timestamp": 1_700_000_000_000_000, "duration": 1, "shared": True,
                "localEndpoint": {"serviceName": "backend"},
                "remoteEndpoint": {"ipv4": "127.0.0.1", "port": 8080},
                "tags": {"http.status_code": "200"},
                "annotations": [{"timestamp": 1_700_000_000_000_001, "value": "wr"}]}
        self.assertEqual(schema_errors(json.dumps([good])), [])
        for change in ({"traceId": "463ac35c9f6413ad4"}, {"id": "A2FB4A1D1A96D312"},
                       {"parentId": "0"}, {"kind": "LOCAL"}, {"timestamp": 1.5},
                       {"duration": 0}, {"shared": "true"}, {"tags": {"n": 200}},
                       {"remoteEndpoint": {"ipv4": "127.0.0"}}, {"annotations": [{"value": "x"}]},
                       {"traceID": "463ac35c9f6413ad"}):
            with self.subTest(change=change):
                self.assertNotEqual(schema_errors(json.dumps([{**good, **change}])), [])
        self.assertNotEqual(schema_errors(b'{"traceId": "463ac35c9f6413ad"}'), [])  # not a list
        self.assertNotEqual(schema_errors(b"[{"), [])

    def test_a_collector_down_slow_or_failing_costs_requests_nothing_and_is_counted(self):
        failing = self.collector(status=500)
        slow = self.collector(delay=5)  # longer than the reporter's 2 s for a post
        up = self.start_upstream()
        # A port bound and not listening: refused, and no other process can take it meanwhile
        # (port 1 was once served by a stray benchmark's upstream).
        down = socket.socket()
        self.addCleanup(down.close)
        down.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{down.getsockname()[1]}/api/v2/spans"
        for url in (failing.url, slow.url, refused):
            with self.subTest(url=url):
                sc = self.start_sidecar(up.port, "--zipkin-url", url, "--trace-sample-rate", "1")
                started = time.monotonic()
                for _ in range(20):
                    code, status, _, err = self.curl(f"https://localhost:{sc.port}/")
                    self.assertEqual((code, status), (0, 200), err)
                self.assertLess(time.monotonic() - started, 20)
                wait_for(lambda: self.metric(sc, "sidecar_trace_post_failures_total") >= 1,
                         timeout=10, what="a failed post counted")
                self.assertGreaterEqual(
                    self.metric(sc, "sidecar_trace_spans_total", result="dropped_post_failed"), 1)
                self.assertEqual(
                    self.metric(sc, "sidecar_trace_spans_total", result="reported"), 0)


if __name__ == "__main__":
    unittest.main()
