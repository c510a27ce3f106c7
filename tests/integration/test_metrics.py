"""Metrics and the admin interface, checked by promtool and by a real Prometheus server that finds
the sidecar through its ZooKeeper serverset."""
import json
import os
import re
import signal
import subprocess
import time
import unittest
import urllib.parse
import urllib.request

from harness import SLOW, SOURCE, SidecarTestCase, free_port, wait_for

PATH = "/discovery/test/pinghelp"


def promtool(*args, stdin=None):
    return subprocess.run(["promtool", *args], input=stdin, capture_output=True, text=True, timeout=60)


class MetricsTest(SidecarTestCase):

    def test_promtool_accepts_both_binaries_metrics_and_the_rules(self):
        ph = self.start_pinghelp()
        sc = self.start_sidecar(ph.port)
        self.curl(f"https://localhost:{sc.port}/ping")
        _, text = self.admin_get(sc, "/metrics")
        r = promtool("check", "metrics", stdin=text)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        for family in re.findall(r"^# TYPE (\S+) ", text, re.M):
            self.assertRegex(text, rf"# HELP {family} \S", family)
        with urllib.request.urlopen(f"http://127.0.0.1:{ph.port}/metrics", timeout=10) as resp:
            ph_text = resp.read().decode()
        r = promtool("check", "metrics", stdin=ph_text)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn('pinghelp_requests_total{method="ping",code="2xx"} 1', ph_text.replace('code="2xx",method="ping"', 'method="ping",code="2xx"'))
        r = promtool("check", "rules", os.path.join(SOURCE, "deploy/prometheus/alerts.yml"))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_counters_show_exactly_what_happened(self):
        ph = self.start_pinghelp()
        sc = self.start_sidecar(ph.port, "--allow-identity", "spiffe://dev.local/caller")
        url = f"https://localhost:{sc.port}"
        for _ in range(3):
            self.assertEqual(self.curl(f"{url}/ping")[1], 200)
        self.assertEqual(self.curl(f"{url}/nope")[1], 404)
        self.assertEqual(self.curl(f"{url}/ping", cert="intruder")[1], 403)
        self.assertEqual(self.curl(f"{url}/help", args=["-X", "POST", "-d", "x"])[1], 405)
        self.assertNotEqual(self.curl(f"{url}/ping", cert="stranger")[0], 0)
        ph.stop()
        self.assertEqual(self.curl(f"{url}/ping")[1], 502)

        # A forwarded request is counted once its answer is written, and a connection stops
        # being open once the sidecar has seen curl's close: both may lag curl a moment.
        self.assertSettles(lambda: self.metric_sum(sc, "sidecar_requests_total"), 7)
        self.assertSettles(lambda: self.metric(sc, "sidecar_inbound_connections_open"), 0)
        self.assertEqual(self.metric(sc, "sidecar_requests_total", method="GET", code="2xx"), 3)
        self.assertEqual(self.metric(sc, "sidecar_requests_total", method="GET", code="4xx"), 2)
        self.assertEqual(self.metric(sc, "sidecar_requests_total", method="POST", code="4xx"), 1)
        self.assertEqual(self.metric(sc, "sidecar_requests_total", method="GET", code="5xx"), 1)
        self.assertEqual(self.metric_sum(sc, "sidecar_requests_total"), 7)
        self.assertEqual(self.metric(sc, "sidecar_local_replies_total", status="403"), 1)
        self.assertEqual(self.metric(sc, "sidecar_local_replies_total", status="502"), 1)
        self.assertEqual(self.metric(sc, "sidecar_identity_refused_total"), 1)
        self.assertEqual(self.metric(sc, "sidecar_tls_handshakes_total", result="unknown_ca"), 1)
        self.assertEqual(self.metric(sc, "sidecar_tls_handshakes_total", result="ok"), 7)
        self.assertEqual(self.metric(sc, "sidecar_request_duration_seconds_count"), 7)
        self.assertEqual(self.metric(sc, "sidecar_upstream_duration_seconds_count"), 5)
        self.assertEqual(self.metric(sc, "sidecar_requests_pending"), 0)
        self.assertEqual(self.metric(sc, "sidecar_inbound_connections_open"), 0)
        self.assertGreater(self.metric(sc, "process_resident_memory_bytes"), 1e6)

    def test_metrics_json_and_server_info(self):
        ph = self.start_pinghelp()
        sc = self.start_sidecar(ph.port)
        for _ in range(4):
            self.curl(f"https://localhost:{sc.port}/ping")
        # The last request is counted once its answer is written, a moment after curl has it.
        self.assertSettles(lambda: json.loads(self.admin_get(sc, "/admin/metrics.json")[1])
                           ["srv/http/request_latency_ms.count"], 4)
        status, body = self.admin_get(sc, "/admin/metrics.json")
        self.assertEqual(status, 200)
        m = json.loads(body)
        self.assertEqual(m["srv/http/requests"], 4)
        self.assertEqual(m["srv/http/success"], 4)
        self.assertEqual(m["srv/http/failures"], 0)
        self.assertEqual(m["srv/http/pending"], 0)
        for suffix in ("count", "sum", "min", "max", "avg", "p50", "p90", "p95", "p99", "p9990", "p9999"):
            self.assertIn(f"srv/http/request_latency_ms.{suffix}", m)
        self.assertEqual(m["srv/http/request_latency_ms.count"], 4)
        self.assertLessEqual(m["srv/http/request_latency_ms.min"], m["srv/http/request_latency_ms.p50"])
        self.assertLessEqual(m["srv/http/request_latency_ms.p50"], m["srv/http/request_latency_ms.max"])
        # As twitter-server writes them: counters as integers, never 4E0 or 4.0.
        self.assertIn('"srv/http/requests":4', body)
        self.assertNotRegex(body, r"\d[eE][+-]?\d")
        self.assertTrue(all(isinstance(v, int) for k, v in m.items()
                            if k.endswith(("/requests", "/success", "/failures", "/connects"))))
        status, pretty = self.admin_get(sc, "/admin/metrics.json?pretty=true")
        lines = pretty.strip().splitlines()
        self.assertEqual((lines[0], lines[-1]), ("{", "}"))
        names = [l.split('"')[1] for l in lines[1:-1]]
        self.assertEqual(names, sorted(names))
        self.assertEqual(set(json.loads(pretty)), set(m))
        status, only = self.admin_get(sc, "/admin/metrics.json?filter=srv/http/(requests|success)")
        self.assertEqual(json.loads(only), {"srv/http/requests": 4, "srv/http/success": 4})
        self.assertEqual(self.admin_get(sc, "/admin/metrics.json?filter=(")[0], 400)
        status, body = self.admin_get(sc, "/admin/server_info")
        info = json.loads(body)
        self.assertEqual(set(info), {"name", "version", "build", "start_time", "uptime"})
        # twitter-server: start_time as Java's Date.toString, uptime in milliseconds.
        time.strptime(info["start_time"], "%a %b %d %H:%M:%S UTC %Y")
        self.assertIsInstance(info["uptime"], int)
        self.assertGreater(info["uptime"], 0)
        self.assertEqual(self.admin_post(sc, "/admin/metrics.json")[0], 405)

    def test_access_log_has_one_parseable_line_per_request(self):
        ph = self.start_pinghelp()
        log = os.path.join(self.tmp, "access.log")
        sc = self.start_sidecar(ph.port, "--access-log", log)
        self.curl(f"https://localhost:{sc.port}/ping")
        self.curl(f"https://localhost:{sc.port}/help/ping?x=%22q")
        self.curl(f"https://localhost:{sc.port}/nope", args=["-X", "DELETE"])
        pattern = re.compile(r'^ts=\S+ identity=("(?:[^"\\]|\\.)*"|-) method=(\S+) path="((?:[^"\\]|\\.)*)" '
                             r'status=(\d+) req_bytes=(\d+) resp_bytes=(\d+) duration_us=(\d+) upstream_us=(-?\d+)$')
        lines = wait_for(lambda: (open(log).read().splitlines() if os.path.exists(log) else [None])
                         if len(open(log).read().splitlines() if os.path.exists(log) else []) >= 3 else None,
                         what="three access log lines")
        self.assertEqual(len(lines), 3)
        # Each worker writes its own batches, so lines of different workers may come out of
        # order; their time stamps put them back in the order the requests were answered.
        lines.sort(key=lambda l: l.split(" ", 1)[0])
        parsed = [pattern.match(l) for l in lines]
        self.assertTrue(all(parsed), lines)
        self.assertEqual([(p[1], p[2], p[3], p[4]) for p in parsed],
                         [('"spiffe://dev.local/caller"', "GET", "/ping", "200"),
                          ('"spiffe://dev.local/caller"', "GET", "/help/ping?x=%22q", "200"),
                          ('"spiffe://dev.local/caller"', "DELETE", "/nope", "404")])
        self.assertEqual(parsed[0][6], "4")

    def test_dashboard_and_rules_use_only_metrics_that_exist(self):
        ph = self.start_pinghelp()
        # With an outbound port and a route: the outbound families exist only then.
        sc = self.start_sidecar(ph.port, "--outbound-listen", f"127.0.0.1:{free_port()}",
                                "--route", "pinghelp=static!127.0.0.1:1")
        _, text = self.admin_get(sc, "/metrics")
        exposed = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
        with open(os.path.join(SOURCE, "deploy/grafana/sidecar-dashboard.json")) as f:
            dashboard = json.load(f)
        exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
        with open(os.path.join(SOURCE, "deploy/prometheus/alerts.yml")) as f:
            exprs.append(f.read())
        for expr in exprs:
            for name in re.findall(r"\b((?:sidecar|process)_[a-z_]+)", expr):
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                self.assertIn(base, exposed, f"{name} in {expr[:80]}")

    def test_a_real_prometheus_discovers_the_sidecar_through_zookeeper_and_scrapes_it(self):
        zk = self.start_zookeeper()
        ph = self.start_pinghelp()
        sc = self.start_sidecar(ph.port, "--zk", f"127.0.0.1:{zk.port}", "--zk-path", PATH,
                                "--advertise-host", "127.0.0.1", "--health-interval", "200ms")
        wait_for(lambda: self.admin_get(sc, "/ready")[0] == 200, timeout=20 * SLOW, what="announced")
        self.curl(f"https://localhost:{sc.port}/ping")

        with open(os.path.join(SOURCE, "deploy/prometheus/prometheus.yml")) as f:
            config = f.read()
        config = (config.replace("127.0.0.1:2181", f"127.0.0.1:{zk.port}")
                        .replace("/discovery/prod/pinghelp", PATH)
                        .replace("scrape_interval: 15s", "scrape_interval: 1s")
                        .replace("alerts.yml", os.path.join(SOURCE, "deploy/prometheus/alerts.yml")))
        cfg = os.path.join(self.tmp, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write(config)
        r = promtool("check", "config", cfg)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        prom = self.spawn_serving("prometheus", lambda ports: (
            ["prometheus", f"--config.file={cfg}",
             f"--storage.tsdb.path={os.path.join(self.tmp, f'tsdb-{ports[0]}')}",
             f"--web.listen-address=127.0.0.1:{ports[0]}"], None), 1, timeout=60 * SLOW)
        port = prom.ports[0]

        def query(q):
            url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    return json.loads(resp.read())["data"]["result"]
            except OSError:
                return []

        up = wait_for(lambda: [r for r in query('up{job="sidecar"}') if r["value"][1] == "1"],
                      timeout=60, interval=0.5, what="sidecar up in Prometheus")
        self.assertEqual(up[0]["metric"]["instance"], f"127.0.0.1:{sc.admin}")
        self.assertEqual(up[0]["metric"]["serverset"], PATH)
        # A member announced on IPv6: its admin address is scraped as [::1]:port.
        admin6 = free_port()
        self.start_sidecar(ph.port, "--zk", f"127.0.0.1:{zk.port}", "--zk-path", PATH,
                           "--advertise-host", "::1", "--health-interval", "200ms",
                           "--listen", f"[::1]:{free_port()}", "--admin-listen", f"[::1]:{admin6}",
                           wait=False)
        wait_for(lambda: [r for r in query('up{job="sidecar"}')
                          if r["metric"]["instance"] == f"[::1]:{admin6}" and r["value"][1] == "1"],
                 timeout=60, interval=0.5, what="the IPv6 member up in Prometheus as [::1]:port")
        wait_for(lambda: query('sidecar_requests_total{code="2xx",method="GET"} >= 1'),
                 timeout=30, interval=0.5, what="a sidecar_ series")


if __name__ == "__main__":
    unittest.main()
