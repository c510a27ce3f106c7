"""Zipkin tracing with an independent tracer on both sides of the sidecar (docs/tracing.md): the
npm `zipkin` library (zipkin-js) with its HTTP transport, a node-fetch client wrapped by
zipkin-instrumentation-fetch and an express local service instrumented by
zipkin-instrumentation-express (tests/integration/js/). Both zipkin-js sides and the sidecars
report to one collector, which checks every span against the Zipkin v2 schema; the tests read the
trace out of what it received. Skipped when node, npm or the npm registry is missing."""
import json
import os
import shutil
import subprocess
import unittest

from harness import SidecarTestCase, npm_work_dir, wait_for
from zipkin_collector import Collector

# zipkin-js's last release, all of its packages at it; express 4 (the middleware's era) and
# node-fetch 2 (CommonJS, takes an https.Agent for the client certificate).
NPM_PACKAGES = ["zipkin@0.22.0", "zipkin-transport-http@0.22.0",
                "zipkin-instrumentation-express@0.22.0", "zipkin-instrumentation-fetch@0.22.0",
                "express@4.22.1", "node-fetch@2.7.0"]


def one(spans, what):
    if len(spans) != 1:
        raise AssertionError(f"{what}: {len(spans)} spans, not one: {spans}")
    return spans[0]


class ZipkinJsTest(SidecarTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.js, reason = npm_work_dir(NPM_PACKAGES, "*.js", "zipkin-js")
        if cls.js is None:
            shutil.rmtree(cls.tmp, ignore_errors=True)
            raise unittest.SkipTest(reason)
        cls.addClassCleanup(shutil.rmtree, cls.js, True)

    def collector(self):
        c = Collector()
        self.addCleanup(c.assert_valid, self)
        self.addCleanup(c.close)
        return c

    def start_js_service(self, name, c):
        """An express app instrumented with zipkin-js, reporting to c, as the local service."""
        p = self.spawn_serving(name, lambda ports: (
            ["node", os.path.join(self.js, "service.js"), str(ports[0]), name, c.url], None), 1)
        p.port = p.ports[0]
        return p

    def js_client(self, url, c):
        """One GET by the zipkin-js client over mTLS (its span posted to c): (status, body)."""
        r = subprocess.run(["node", os.path.join(self.js, "client.js"), url, c.url,
                            self.certs.dir], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout.strip().splitlines()[-1])
        return out["status"], out["body"]

    @staticmethod
    def span(c, service, kind, trace):
        return one([s for s in c.where(traceId=trace, kind=kind)
                    if s["localEndpoint"].get("serviceName") == service], f"{service} {kind}")

    def wait_spans(self, c, trace, n):
        wait_for(lambda: len(c.where(traceId=trace)) >= n, timeout=15,
                 what=f"{n} spans of trace {trace} posted")
        self.assertEqual(len(c.where(traceId=trace)), n, c.where(traceId=trace))

    def test_a_zipkin_js_clients_trace_goes_through_the_sidecar_into_express(self):
        c = self.collector()
        app = self.start_js_service("js-backend", c)
        # Rate 0: whatever is sampled here is so because the zipkin-js client said so.
        sc = self.start_sidecar(app.port, "--zipkin-url", c.url, "--service-name", "backend",
                                "--trace-sample-rate", "0")
        status, body = self.js_client(f"https://localhost:{sc.port}/hello", c)
        self.assertEqual(status, 200, body)
        seen = json.loads(body)["b3"]
        trace = seen["x-b3-traceid"]
        self.wait_spans(c, trace, 3)
        client = self.span(c, "js-client", "CLIENT", trace)
        ours = self.span(c, "backend", "SERVER", trace)
        app_span = self.span(c, "js-backend", "SERVER", trace)
        # zipkin-js started the trace: its CLIENT span is the root.
        self.assertNotIn("parentId", client)
        # Our SERVER span is the other side of the client's span (B3's shared span id).
        self.assertEqual((ours["id"], ours.get("shared")), (client["id"], True))
        self.assertNotIn("parentId", ours)
        self.assertIn("peer.identity", ours["tags"])  # the client's certificate was checked
        self.assertEqual(ours["tags"]["http.path"], "/hello")
        # express joined the span we gave it, a child of ours.
        self.assertEqual((seen["x-b3-parentspanid"], seen["x-b3-sampled"]), (client["id"], "1"))
        self.assertEqual(app_span["id"], seen["x-b3-spanid"])
        self.assertEqual(app_span["parentId"], ours["id"])
        self.assertNotEqual(app_span["id"], ours["id"])
        self.assertEqual(app_span["name"], "get /hello")
        # In time: the client's span starts before ours, express's starts within ours (1 ms for
        # zipkin-js's clock, which counts from Date.now()). Ends are not compared: zipkin-js ends
        # a client span at the answer's head and a server span at Node's 'finish' event, which
        # can come after the sidecar has relayed the whole answer.
        self.assertLessEqual(client["timestamp"], ours["timestamp"] + 1000)
        self.assertLessEqual(ours["timestamp"], app_span["timestamp"] + 1000)
        self.assertLessEqual(app_span["timestamp"], ours["timestamp"] + ours["duration"])

    def test_a_trace_the_sidecar_starts_is_continued_by_express(self):
        c = self.collector()
        app = self.start_js_service("js-backend", c)
        sc = self.start_sidecar(app.port, "--zipkin-url", c.url, "--service-name", "backend",
                                "--trace-sample-rate", "1")
        code, status, body, err = self.curl(f"https://localhost:{sc.port}/hello")  # no B3
        self.assertEqual((code, status), (0, 200), err)
        seen = json.loads(body)["b3"]
        trace = seen["x-b3-traceid"]
        self.assertEqual(seen["x-b3-sampled"], "1")
        self.wait_spans(c, trace, 2)
        ours = self.span(c, "backend", "SERVER", trace)
        app_span = self.span(c, "js-backend", "SERVER", trace)
        self.assertNotIn("parentId", ours)  # the trace's root
        self.assertNotIn("shared", ours)  # it joined nobody's span
        self.assertEqual(seen["x-b3-parentspanid"], ours["id"])
        self.assertEqual((app_span["id"], app_span["parentId"]), (seen["x-b3-spanid"], ours["id"]))

    def test_a_zipkin_js_trace_crosses_two_sidecars_and_a_local_service_as_one_trace(self):
        # js-client -> front sidecar -> js-front (express) -> front's outbound listener ->
        # back sidecar -> js-back (express), and back.
        c = self.collector()
        js_back = self.start_js_service("js-back", c)
        back = self.start_sidecar(js_back.port, "--zipkin-url", c.url, "--service-name", "back",
                                  "--trace-sample-rate", "0")
        js_front = self.start_js_service("js-front", c)
        front = self.start_outbound_sidecar(
            "--route", f"backend=static!127.0.0.1:{back.port}", "--zipkin-url", c.url,
            "--service-name", "front", "--trace-sample-rate", "0", upstream_port=js_front.port)
        status, body = self.js_client(
            f"https://localhost:{front.port}/call?service=backend&via={front.outbound}", c)
        self.assertEqual(status, 200, body)
        answer = json.loads(body)
        self.assertEqual((answer["status"], answer["body"]["service"]), (200, "js-back"))
        trace = answer["body"]["b3"]["x-b3-traceid"]
        self.wait_spans(c, trace, 7)
        client = self.span(c, "js-client", "CLIENT", trace)
        front_in = self.span(c, "front", "SERVER", trace)
        js_front_in = self.span(c, "js-front", "SERVER", trace)
        js_front_out = self.span(c, "js-front", "CLIENT", trace)
        front_out = self.span(c, "front", "CLIENT", trace)
        back_in = self.span(c, "back", "SERVER", trace)
        js_back_in = self.span(c, "js-back", "SERVER", trace)
        self.assertNotIn("parentId", client)
        # Each hop between processes is one span id shared by its two sides; within a process
        # each span is the child of the one before.
        self.assertEqual((front_in["id"], front_in.get("shared")), (client["id"], True))
        self.assertEqual(js_front_in["parentId"], front_in["id"])
        self.assertEqual(js_front_out["parentId"], js_front_in["id"])
        self.assertEqual(front_out["parentId"], js_front_out["id"])
        self.assertEqual(front_out["tags"]["sidecar.route"], "backend")
        self.assertEqual(front_out["remoteEndpoint"]["port"], back.port)
        self.assertEqual((back_in["id"], back_in.get("shared")), (front_out["id"], True))
        self.assertEqual(back_in["parentId"], js_front_out["id"])
        self.assertEqual(js_back_in["parentId"], back_in["id"])
        self.assertEqual(js_back_in["id"], answer["body"]["b3"]["x-b3-spanid"])
        ids = [s["id"] for s in (client, js_front_in, js_front_out, front_out, js_back_in)]
        self.assertEqual(len(set(ids)), len(ids))


if __name__ == "__main__":
    unittest.main()
