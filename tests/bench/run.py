#!/usr/bin/env python3
"""Benchmarks the sidecar against HAProxy and nginx (and a direct, no-proxy reference), all in
one run, alternating targets, and prints a Markdown table of medians with the ratios.
Run through tests/bench/run.sh; see tests/bench/README.md for how to read the output."""
import argparse
import http.client
import json
import os
import re
import resource
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "../.."))
OUTBOUND_ROUTE = "pinghelp"  # the Host the load generator sends to the outbound targets
GENERATORS = ("loadgen", "wrk")
PACED = "loadgen, wrk2 pacing"  # scenario 2 again, each connection on its own schedule
# A smoke round that counted no request is made again, each time twice as long, until this many
# seconds passed since its first try (wrk: rounds of 1, 2, 4 and 8 s; loadgen: 0.5, 1, 2, 4 s, each
# with up to its length again to connect, or 10 s when a handshake hangs): a target that answers
# nothing then fails the run, some 15 to 25 s later than it would have.
SMOKE_PATIENCE = 15
# wrk's figures, printed by its done() hook as one JSON line; the body of an upload from the
# environment (wrk.format adds the Content-Length).
WRK_SCRIPT = """local size = tonumber(os.getenv("WRK_BODY_SIZE") or "0")
if size > 0 then
  wrk.method = "POST"
  wrk.body = string.rep("x", size)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_JSON {"requests":%d,"bytes":%d,"duration_us":%d,"errors":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d}\\n', summary.requests,
    summary.bytes, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=60):
    """Until the port takes connections: returns at once when it does, so the generous timeout
    costs nothing on a quiet machine and lets a loaded one start the process."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            with open(proc.log) as f:
                raise RuntimeError(f"{' '.join(proc.args[3:5])} exited with {proc.returncode}: {f.read()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port}")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def timed_run(cmd, **kwargs):
    """subprocess.run, plus the CPU time (user + system, µs) the command used: the load generator
    shares CPU 1 with the upstream, so its cost per request says whether it was the limit."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(cmd, **kwargs)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    r.cpu_us = 1e6 * (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return r


def cpu_us(pid):
    """CPU time (user + system, µs) a process has used so far; None once it ended and was reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None
    return (int(fields[11]) + int(fields[12])) * 1e6 / os.sysconf("SC_CLK_TCK")


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="sidecar-bench-")
        self.build = args.build
        self.procs = []
        self.waits = []  # (port, process) to wait for besides the targets
        self.cpus = os.cpu_count() or 1
        self.proxy_cpu = "0"
        # HAProxy reserves two descriptors per connection; stay inside this machine's hard limit.
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        self.fd_limit = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
        self.haproxy_maxconn = (self.fd_limit - 600) // 2
        self.client_cpu = "1" if self.cpus > 1 else "0"

    def spawn(self, args, cpu, log):
        cmd = (["taskset", "-c", cpu] if shutil.which("taskset") else []) + args
        p = subprocess.Popen(cmd, stdout=open(os.path.join(self.tmp, log), "wb"),
                             stderr=subprocess.STDOUT, preexec_fn=raise_fd_limit)
        p.log = os.path.join(self.tmp, log)
        self.procs.append(p)
        return p

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def setup(self, outbound=False, thrift=False):
        certs = os.path.join(self.tmp, "certs")
        subprocess.run([os.path.join(ROOT, "deploy/make-certs.sh"), certs], check=True,
                       stdout=subprocess.DEVNULL)
        self.certs = certs
        c = lambda n: os.path.join(certs, n)
        with open(c("server-combined.pem"), "w") as f:
            f.write(open(c("server.pem")).read() + open(c("server.key")).read())
        with open(c("client-combined.pem"), "w") as f:
            f.write(open(c("client.pem")).read() + open(c("client.key")).read())

        self.upstream_port = free_port()
        up = self.spawn([os.path.join(self.build, "tests/bench/bench-upstream"), str(self.upstream_port)],
                        self.client_cpu, "upstream.log")
        wait_port(self.upstream_port, up)

        self.targets = {}
        port = free_port()
        p = self.spawn([os.path.join(self.build, "sidecar/sidecar"), "--listen", f"127.0.0.1:{port}",
                        "--upstream", f"127.0.0.1:{self.upstream_port}",
                        "--admin-listen", f"127.0.0.1:{free_port()}", "--workers", "1",
                        "--tls-cert", c("server.pem"), "--tls-key", c("server.key"),
                        "--tls-client-ca", c("ca.pem"), "--log-level", "warn",
                        "--max-body-size", "0", *self.args.sidecar_flags.split()], self.proxy_cpu, "sidecar.log")
        self.targets["sidecar"] = (port, p, True)

        port = free_port()
        cfg = os.path.join(self.tmp, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(f"""global
  nbthread 1
  maxconn {self.haproxy_maxconn}
  fd-hard-limit {self.fd_limit}
  ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
  mode http
  timeout connect 1s
  timeout client 60s
  timeout server 30s
  timeout http-keep-alive 60s
  option http-keep-alive
  http-reuse always
frontend mtls
  bind 127.0.0.1:{port} ssl crt {c("server-combined.pem")} ca-file {c("ca.pem")} verify required
  maxconn {self.haproxy_maxconn}
  option forwardfor
  http-request del-header X-Forwarded-Client-Cert
  http-request set-header X-Forwarded-Client-Cert "Hash=%[ssl_c_der,sha2(256),hex];Subject=\\"%[ssl_c_s_dn]\\""
  http-request set-header X-Forwarded-Proto https
  default_backend local
backend local
  server up 127.0.0.1:{self.upstream_port} maxconn 1000
""")
        p = self.spawn(["haproxy", "-f", cfg, "-db"], self.proxy_cpu, "haproxy.log")
        self.targets["haproxy"] = (port, p, True)

        port = free_port()
        cfg = os.path.join(self.tmp, "nginx.conf")
        t = self.tmp
        with open(cfg, "w") as f:
            f.write(f"""worker_processes 1;
daemon off;
master_process off;
pid {t}/nginx.pid;
error_log {t}/nginx-error.log warn;
worker_rlimit_nofile 19000;
events {{ worker_connections 15000; }}
http {{
  access_log off;
  client_body_temp_path {t}/nginx-body;
  proxy_temp_path {t}/nginx-proxy;
  upstream local {{ server 127.0.0.1:{self.upstream_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {c("server.pem")};
    ssl_certificate_key {c("server.key")};
    ssl_client_certificate {c("ca.pem")};
    ssl_verify_client on;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    keepalive_timeout 60s;
    keepalive_requests 100000000;
    client_max_body_size 0;
    proxy_request_buffering off;
    proxy_buffering off;
    location / {{
      proxy_pass http://local;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto https;
      proxy_set_header X-Forwarded-Client-Cert "Subject=\\"$ssl_client_s_dn\\"";
    }}
  }}
}}
""")
        p = self.spawn(["nginx", "-c", cfg, "-p", t], self.proxy_cpu, "nginx.log")
        self.targets["nginx"] = (port, p, True)
        self.targets["direct"] = (self.upstream_port, up, False)
        if outbound:
            self.setup_outbound()
        if thrift:
            self.setup_thrift()
        for port, proc in self.waits + [(port, proc) for port, proc, _ in self.targets.values()]:
            wait_port(port, proc)
        time.sleep(0.3)
        self.rest_rss = {n: rss_kib(p.pid) for n, (_, p, tls) in self.targets.items() if tls}

    def setup_wrk(self):
        """wrk has no client-certificate flag: wrk_cert.c, preloaded, loads one into its SSL_CTX."""
        if not shutil.which("wrk"):
            raise RuntimeError("wrk not found: deploy/install-deps.sh bench installs it "
                               "(or leave it out with --generators loadgen)")
        self.wrk_shim = os.path.join(self.tmp, "wrk_cert.so")
        subprocess.run([os.environ.get("CC", "cc"), "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror",
                        "-o", self.wrk_shim, os.path.join(HERE, "wrk_cert.c"), "-lssl", "-lcrypto", "-ldl"],
                       check=True)
        self.wrk_script = os.path.join(self.tmp, "bench.lua")
        with open(self.wrk_script, "w") as f:
            f.write(WRK_SCRIPT)

    def setup_thrift(self):
        """Scenario 7: ping() over keep-alive mTLS connections to pinghelp's Thrift port (pinned
        with the load generator, as the HTTP upstream is), through the sidecar's --thrift-listen
        and through HAProxy in TCP mode terminating the same mTLS; direct is plain framed Thrift
        straight to pinghelp. HAProxy does not parse Thrift: the ceiling of a pass-through."""
        c = lambda n: os.path.join(self.certs, n)
        http_port, thrift_port = free_port(), free_port()
        p = self.spawn([os.path.join(self.build, "sidecar/pinghelp"), "--listen", f"127.0.0.1:{http_port}",
                        "--thrift-listen", f"127.0.0.1:{thrift_port}", "--help-dir", os.path.join(ROOT, "proto/help")],
                       self.client_cpu, "pinghelp.log")
        self.targets["thrift:direct"] = (thrift_port, p, False)
        wait_port(thrift_port, p)

        port = free_port()
        p = self.spawn([os.path.join(self.build, "sidecar/sidecar"), "--listen", f"127.0.0.1:{free_port()}",
                        "--upstream", f"127.0.0.1:{http_port}", "--thrift-listen", f"127.0.0.1:{port}",
                        "--thrift-upstream", f"127.0.0.1:{thrift_port}",
                        "--admin-listen", f"127.0.0.1:{free_port()}", "--workers", "1",
                        "--tls-cert", c("server.pem"), "--tls-key", c("server.key"),
                        "--tls-client-ca", c("ca.pem"), "--log-level", "warn"], self.proxy_cpu, "sidecar-thrift.log")
        self.targets["thrift:sidecar"] = (port, p, True)

        port = free_port()
        cfg = os.path.join(self.tmp, "haproxy-thrift.cfg")
        with open(cfg, "w") as f:
            f.write(f"""global
  nbthread 1
  maxconn 4000
  ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
  mode tcp
  timeout connect 1s
  timeout client 60s
  timeout server 60s
frontend thrift
  bind 127.0.0.1:{port} ssl crt {c("server-combined.pem")} ca-file {c("ca.pem")} verify required
  default_backend pinghelp
backend pinghelp
  server p 127.0.0.1:{thrift_port}
""")
        p = self.spawn(["haproxy", "-f", cfg, "-db"], self.proxy_cpu, "haproxy-thrift.log")
        self.targets["thrift:haproxy"] = (port, p, True)

    def setup_outbound(self):
        """Scenario 6, the outbound mesh: the load generator speaks plain HTTP keep-alive to the
        proxy under test, which originates mTLS to two members and balances over them. The members
        are the same two for every target: nginx, one worker each, requiring a client certificate
        from the CA, answering /ping themselves (no upstream hop, so that CPU 1, which also runs
        the load generator, has room to spare). Every proxy verifies the members' certificates
        and their name (the sidecar: the SPIFFE identity; HAProxy and nginx: DNS localhost)."""
        c = lambda n: os.path.join(self.certs, n)
        t = self.tmp
        self.members = []
        for i in (1, 2):
            port = free_port()
            cfg = os.path.join(t, f"member{i}.conf")
            with open(cfg, "w") as f:
                f.write(f"""worker_processes 1;
daemon off;
master_process off;
pid {t}/member{i}.pid;
error_log {t}/member{i}-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {t}/member{i}-body;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {c("server.pem")};
    ssl_certificate_key {c("server.key")};
    ssl_client_certificate {c("ca.pem")};
    ssl_verify_client on;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:M{i}:1m;
    keepalive_timeout 60s;
    keepalive_requests 100000000;
    default_type text/plain;
    location / {{ return 200 "pong"; }}
  }}
}}
""")
            p = self.spawn(["nginx", "-c", cfg, "-p", t], self.client_cpu, f"member{i}.log")
            self.members.append(port)
            self.waits.append((port, p))  # member 2 is no target, but every proxy balances to it
            # The no-proxy reference: mTLS from the load generator straight to one member.
            if i == 1:
                self.targets["out:direct"] = (port, p, True)
        m1, m2 = (f"127.0.0.1:{p}" for p in self.members)

        port = free_port()
        p = self.spawn([os.path.join(self.build, "sidecar/sidecar"),
                        "--outbound-listen", f"127.0.0.1:{port}",
                        "--route", f"{OUTBOUND_ROUTE}=static!{m1},{m2};identity=spiffe://dev.local/pinghelp",
                        "--listen", f"127.0.0.1:{free_port()}", "--upstream", f"127.0.0.1:{self.upstream_port}",
                        "--admin-listen", f"127.0.0.1:{free_port()}", "--workers", "1",
                        "--tls-cert", c("client.pem"), "--tls-key", c("client.key"),
                        "--tls-client-ca", c("ca.pem"), "--log-level", "warn"],
                       self.proxy_cpu, "sidecar-out.log")
        self.targets["out:sidecar"] = (port, p, False)

        port = free_port()
        cfg = os.path.join(t, "haproxy-out.cfg")
        server = (f"ssl crt {c('client-combined.pem')} ca-file {c('ca.pem')} verify required "
                  f"verifyhost localhost sni str(localhost) ssl-min-ver TLSv1.2")
        with open(cfg, "w") as f:
            f.write(f"""global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout connect 1s
  timeout client 60s
  timeout server 30s
  timeout http-keep-alive 60s
  option http-keep-alive
  http-reuse always
frontend outbound
  bind 127.0.0.1:{port}
  http-request del-header X-Forwarded-Client-Cert
  default_backend members
backend members
  balance leastconn
  server m1 {m1} {server}
  server m2 {m2} {server}
""")
        p = self.spawn(["haproxy", "-f", cfg, "-db"], self.proxy_cpu, "haproxy-out.log")
        self.targets["out:haproxy"] = (port, p, False)

        port = free_port()
        cfg = os.path.join(t, "nginx-out.conf")
        with open(cfg, "w") as f:
            f.write(f"""worker_processes 1;
daemon off;
master_process off;
pid {t}/nginx-out.pid;
error_log {t}/nginx-out-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {t}/nginx-out-body;
  proxy_temp_path {t}/nginx-out-proxy;
  upstream members {{ least_conn; server {m1}; server {m2}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    keepalive_timeout 60s;
    keepalive_requests 100000000;
    location / {{
      proxy_pass https://members;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-Client-Cert "";
      proxy_request_buffering off;
      proxy_buffering off;
      proxy_ssl_certificate {c("client.pem")};
      proxy_ssl_certificate_key {c("client.key")};
      proxy_ssl_trusted_certificate {c("ca.pem")};
      proxy_ssl_verify on;
      proxy_ssl_name localhost;
      proxy_ssl_server_name on;
      proxy_ssl_protocols TLSv1.2 TLSv1.3;
      proxy_ssl_session_reuse on;
    }}
  }}
}}
""")
        p = self.spawn(["nginx", "-c", cfg, "-p", t], self.proxy_cpu, "nginx-out.log")
        self.targets["out:nginx"] = (port, p, False)

    def loadgen(self, target, *extra, timeout=120):
        port, _, tls = self.targets[target]
        args = [os.path.join(self.build, "tests/bench/loadgen"), "--target", f"127.0.0.1:{port}"]
        if target.startswith("out:"):
            args += ["--host", OUTBOUND_ROUTE]
        if tls:
            c = lambda n: os.path.join(self.certs, n)
            args += ["--tls", "--cert", c("client.pem"), "--key", c("client.key"), "--ca", c("ca.pem")]
        cmd = (["taskset", "-c", self.client_cpu] if shutil.which("taskset") else []) + args + list(extra)
        r = timed_run(cmd, capture_output=True, text=True, timeout=timeout, preexec_fn=raise_fd_limit)
        if r.returncode != 0:
            raise RuntimeError(f"loadgen {target}: {r.stderr}")
        out = json.loads(r.stdout)
        out["client_cpu_us"] = r.cpu_us / max(1, out["requests"])
        return out

    def wrk(self, target, seconds, connections, path="/ping", body_size=0):
        """One wrk round (one thread, closed loop) with loadgen's figures' names. wrk takes whole
        seconds; its latency is from a request's first write to its answer's last byte."""
        port, _, tls = self.targets[target]
        url = f"{'https' if tls else 'http'}://127.0.0.1:{port}{path}"
        args = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
                "-s", self.wrk_script]
        if target.startswith("out:"):
            args += ["-H", f"Host: {OUTBOUND_ROUTE}"]
        env = dict(os.environ, WRK_BODY_SIZE=str(body_size))
        if tls:
            env.update(LD_PRELOAD=self.wrk_shim, WRK_CERT=os.path.join(self.certs, "client.pem"),
                       WRK_KEY=os.path.join(self.certs, "client.key"))
        cmd = (["taskset", "-c", self.client_cpu] if shutil.which("taskset") else []) + args + [url]
        r = timed_run(cmd, capture_output=True, text=True, timeout=seconds + 60, env=env,
                      preexec_fn=raise_fd_limit)
        line = next((l for l in r.stdout.splitlines() if l.startswith("WRK_JSON ")), None)
        if r.returncode != 0 or line is None:
            raise RuntimeError(f"wrk {target}: exit {r.returncode}: {r.stderr[-2000:]} {r.stdout[-2000:]}")
        w = json.loads(line.removeprefix("WRK_JSON "))
        elapsed = w["duration_us"] / 1e6
        w.update(seconds=elapsed, rps=w["requests"] / elapsed, client_cpu_us=r.cpu_us / max(1, w["requests"]),
                 mbps=(w["bytes"] + w["requests"] * body_size) / elapsed / 1e6)
        return w

    def check_outbound(self):
        """One GET through each outbound proxy must come back 200 pong from a member: the load
        generator counts any answer below 500 as one, and a 404 (no route) measures nothing.
        A loaded machine may be slow to make the proxy's first mTLS connection to a member: no
        answer or a 5xx is asked again for up to a minute; a wrong answer below 500 fails at once."""
        for target in ("out:sidecar", "out:haproxy", "out:nginx"):
            port = self.targets[target][0]
            deadline = time.monotonic() + 60
            while True:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                try:
                    conn.request("GET", "/ping", headers={"Host": OUTBOUND_ROUTE})
                    r = conn.getresponse()
                    status, body = r.status, r.read()
                except OSError as e:
                    status, body = None, repr(e).encode()
                finally:
                    conn.close()
                if status == 200 and body.strip() == b"pong":
                    break
                if (status is not None and status < 500) or time.monotonic() > deadline:
                    raise RuntimeError(f"{target}: GET /ping answered {status} {body[:200]!r}")
                time.sleep(0.5)

    def hold(self, target, n, seconds):
        """Opens n idle mTLS connections, then reads the target's resident memory."""
        port, proc, _ = self.targets[target]
        c = lambda x: os.path.join(self.certs, x)
        args = [os.path.join(self.build, "tests/bench/loadgen"), "--target", f"127.0.0.1:{port}",
                "--tls", "--cert", c("client.pem"), "--key", c("client.key"), "--ca", c("ca.pem"),
                # The hold must outlast the ramp: a connection whose hold time has passed when
                # it is established closes at once, and would not be in the measurement.
                "--hold", str(n), "--seconds", str(seconds + 600)]
        before = rss_kib(proc.pid)
        lg = subprocess.Popen((["taskset", "-c", self.client_cpu] if shutil.which("taskset") else []) + args,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=raise_fd_limit)
        # loadgen prints "held N" once all N are open, maybe after up to three lines about
        # connections that failed and were made again. A slow machine gets time: 60 s, plus 50 ms
        # a connection; a target that never lets them all in ends with held 0.
        held, text, deadline = 0, b"", time.monotonic() + 60 + n / 20
        while time.monotonic() < deadline and select.select([lg.stderr], [], [], deadline - time.monotonic())[0]:
            chunk = os.read(lg.stderr.fileno(), 4096)
            text += chunk
            m = re.search(rb"^held (\d+)\n", text, re.M)
            if m or not chunk:
                held = int(m.group(1)) if m else 0
                break
        for line in text.decode(errors="replace").splitlines():
            if not line.startswith("held"):
                print(f"hold {target}: {line}", file=sys.stderr)
        time.sleep(0.5)
        during = rss_kib(proc.pid)
        lg.kill()
        lg.communicate(timeout=60)
        return {"held": held, "rss_before_kib": before, "rss_held_kib": during,
                "per_conn_kib": (during - before) / held if held else None}


class _SkipLoad(Exception):
    pass


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--smoke", action="store_true", help="a few seconds; checks every target answers")
    ap.add_argument("--sidecar-flags", default="",
                    help="more flags for the inbound sidecar, e.g. '--busy-poll-us 50'")
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--idle", type=int, default=0,
                    help="idle connections for scenario 5 (default 10000, or what the fd limit allows)")
    ap.add_argument("--out", default=os.path.join(ROOT, "build/bench-results"))
    ap.add_argument("--idle-only", action="store_true", help="scenario 5 alone")
    ap.add_argument("--only", default="1,2,3,4,5,6,7",
                    help="comma-separated scenarios to run, e.g. 1,5 (2 runs 1 first: its rate comes from 1)")
    ap.add_argument("--generators", default=",".join(GENERATORS),
                    help="load generators, comma-separated: loadgen and/or wrk (wrk where it fits: 1, 4, 6a)")
    ap.add_argument("--validate", action="store_true",
                    help="compare loadgen with wrk against a TLS target that needs no client certificate")
    args = ap.parse_args()
    args.generators = [g for g in args.generators.split(",") if g]
    if set(args.generators) - set(GENERATORS) or "loadgen" not in args.generators:
        ap.error(f"--generators: loadgen, optionally with wrk (got {','.join(args.generators)})")
    if args.validate:
        return validate(args)
    only = set(args.only.split(","))
    if args.idle_only:
        only = {"5"}
    if "2" in only:
        only.add("1")
    if args.smoke:
        args.seconds, args.repeats, args.idle = 0.5, 1, 50
    # wrk's rounds are whole seconds; in a smoke run one short round per target is enough.
    wrk_seconds = 1 if args.smoke else args.seconds
    b = Bench(args)
    if not args.idle:
        args.idle = min(10000, b.haproxy_maxconn - 100)
    results = {}  # scenario -> generator -> target column -> [runs]
    try:
        b.setup(outbound="6" in only, thrift="7" in only)
        if "wrk" in args.generators:
            b.setup_wrk()
        if not only - {"5"}:
            raise _SkipLoad()
        proxies = ["sidecar", "haproxy", "nginx"]
        everyone = proxies + ["direct"]
        gave_up = set()  # smoke: targets that stayed silent through every retry

        def run(scenario, targets, *extra, wrk=None, paced=False):
            """Each repeat: every target with loadgen, then (when wrk fits the scenario, `wrk`
            holds its arguments) every target with wrk, then (fixed rate, `paced`) with loadgen
            pacing each connection as wrk2 does; alternating, so drift hits all alike."""
            if scenario.split(" ")[0].rstrip("ab") not in only:
                return
            in_smoke = wrk.pop("smoke", False) if wrk else False
            gens = [g for g in args.generators if g == "loadgen" or (wrk is not None and (in_smoke or not args.smoke))]
            gens += [PACED] if paced else []
            for _ in range(args.repeats):
                for g in gens:
                    for t in targets:
                        column = t.split(":")[-1]  # scenarios 6 and 7 fill the same columns
                        # The target's CPU per request: what a loaded machine blurs least.
                        proc = b.targets[t][1]
                        seconds, tries, began = wrk_seconds if g == "wrk" else args.seconds, 0, time.monotonic()
                        while True:
                            tries += 1
                            before = cpu_us(proc.pid)
                            if g == "wrk":
                                r = b.wrk(t, seconds, **wrk)
                            else:
                                r = b.loadgen(t, "-d", str(seconds), *extra,
                                              *(["--pace-per-connection"] if g == PACED else []))
                            after = cpu_us(proc.pid)
                            r["target_cpu_us"] = (None if before is None or after is None
                                                  else (after - before) / max(1, r["requests"]))
                            # A smoke round is short: on a loaded machine its handshakes can take
                            # all of it, and no request is counted. Such a round is made again,
                            # twice as long each time, for up to SMOKE_PATIENCE s; then it counts
                            # as silent, and so does every later silent round of that target at
                            # once. A target whose process ended gets no second chance.
                            if r["requests"] or not args.smoke or t in gave_up:
                                break
                            if proc.poll() is not None:
                                print(f"smoke: {t} exited with {proc.returncode}", file=sys.stderr)
                                break
                            if time.monotonic() - began >= SMOKE_PATIENCE:
                                break
                            print(f"smoke: {scenario}/{g}/{t}: no answer in a {seconds} s round "
                                  f"({r['errors']} errors), again for {2 * seconds} s", file=sys.stderr)
                            seconds *= 2
                        if not r["requests"]:
                            gave_up.add(t)
                        r["tries"] = tries
                        results.setdefault(scenario, {}).setdefault(g, {}).setdefault(column, []).append(r)

        def slowest_proxy(scenario):
            return min(median([r["rps"] for r in results[scenario]["loadgen"][t]]) for t in proxies)

        s1 = "1 keep-alive GET, 32 conns"
        run(s1, everyone, "-c", "32", wrk={"connections": 32, "smoke": True})
        if "2" in only:
            rate = max(10, int(slowest_proxy(s1) / 2))
            run(f"2 fixed rate {rate}/s, 32 conns", everyone, "-c", "32", "-R", str(rate), paced=True)
        run("3a full handshakes", proxies, "-c", "16", "--new-connection")
        run("3b resumed handshakes", proxies, "-c", "16", "--new-connection", "--resume")
        run("4a upload 1 MiB", everyone, "-c", "4", "--method", "POST", "--path", "/sink",
            "--body-size", str(1 << 20), wrk={"connections": 4, "path": "/sink", "body_size": 1 << 20})
        run("4b download 1 MiB", everyone, "-c", "4", "--path", f"/bytes/{1 << 20}",
            wrk={"connections": 4, "path": f"/bytes/{1 << 20}"})
        if "6" in only:
            # The outbound mesh: plain HTTP in, mTLS out to two members, balanced.
            b.check_outbound()
            out = [f"out:{t}" for t in everyone]
            s6a = "6a outbound keep-alive GET, 32 conns"
            run(s6a, out, "-c", "32", wrk={"connections": 32})
            rate = max(10, int(slowest_proxy(s6a) / 2))
            # Without direct: its 32 fresh mTLS handshakes at the start of each run would be its
            # tail at a fixed rate, while the proxies' member connections are already pooled.
            run(f"6b outbound fixed rate {rate}/s, 32 conns", out[:-1], "-c", "32", "-R", str(rate))
        # Thrift ping() through the sidecar and HAProxy (TCP mode); nginx is not set up for it.
        run("7 Thrift ping(), 32 conns", ["thrift:sidecar", "thrift:haproxy", "thrift:direct"],
            "-c", "32", "--thrift")
    except _SkipLoad:
        pass
    finally:
        b.stop()
    # Memory on fresh processes: after load, freed memory is reused and hides the cost.
    idle, rest = {}, {}
    for _ in range(args.repeats if "5" in only else 0):
        fresh = Bench(args)
        try:
            fresh.setup()
            for t in ["sidecar", "haproxy", "nginx"]:
                rest.setdefault(t, []).append(fresh.rest_rss[t])
                idle.setdefault(t, []).append(fresh.hold(t, args.idle, 3.0))
        finally:
            fresh.stop()

    every_run = [(s, g, t, runs) for s, gs in results.items() for g, ts in gs.items() for t, runs in ts.items()]
    errors = sum(r["errors"] for *_, runs in every_run for r in runs)
    silent = [f"{s}/{g}/{t}" for s, g, t, runs in every_run if sum(r["requests"] for r in runs) == 0]
    silent += [f"idle/{t}" for t, runs in idle.items() if all(r["held"] == 0 for r in runs)]

    def fmt(v, digits=0):
        return "–" if v is None else f"{v:,.{digits}f}"

    def ratio(a, b):
        return "–" if not a or not b else f"{a / b:.2f}"

    columns = ["sidecar", "haproxy", "nginx", "direct"]

    def row(s, g, figure, vals, digits=0):
        return (f"| {s} | {g} | {figure} | " + " | ".join(fmt(vals.get(t), digits) for t in columns) +
                f" | {ratio(vals.get('sidecar'), vals.get('haproxy'))} | {ratio(vals.get('sidecar'), vals.get('nginx'))} |")

    lines = ["| scenario | generator | figure | sidecar | HAProxy | nginx | direct | sidecar/HAProxy | sidecar/nginx |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for s, gens in results.items():
        key = "mbps" if s.startswith("4") else "rps"
        unit = "MB/s" if key == "mbps" else "calls/s" if s.startswith("7") else "req/s"
        quantiles = ["p99_us"] if s.startswith(("1", "6a", "7")) else []
        if s.startswith(("2", "6b")):
            quantiles = ["p99_us", "p50_us", "p999_us"]
        for g, runs in gens.items():
            fig = lambda k: {t: median([r[k] for r in rs]) for t, rs in runs.items()}
            lines.append(row(s, g, unit, fig(key)))
            for q in quantiles:
                lines.append(row(s, g, f"{q[:-3]} µs", fig(q)))
            if s.startswith(("1", "6a", "7")):
                if g == "loadgen":  # wrk's closed-loop percentiles come corrected this way
                    lines.append(row(s, g, "p99 µs, wrk's correction", fig("p99_corrected_us")))
                    # Fairness between connections (loadgen keeps each connection's latencies):
                    # the slowest connection's own p99, and Jain's index over the requests each
                    # connection made (1 = all alike).
                    lines.append(row(s, g, "p999 µs", fig("p999_us")))
                    lines.append(row(s, g, "slowest connection's p99 µs", fig("conn_p99_max_us")))
                    lines.append(row(s, g, "fairness (Jain's index)", fig("conn_jain"), 3))
                lines.append(row(s, g, "target CPU µs/req", fig("target_cpu_us"), 1))
                lines.append(row(s, g, "client CPU µs/req", fig("client_cpu_us"), 1))
    per = {t: median([r["per_conn_kib"] for r in runs]) for t, runs in idle.items()}
    rest = {t: median(v) for t, v in rest.items()}
    if idle:
        lines.append(row(f"5 {args.idle} idle mTLS conns", "loadgen", "KiB per conn", per, 1))
        lines.append(row("5 at rest", "–", "RSS KiB", rest))
    table = "\n".join(lines)
    print(f"\nmachine: {os.cpu_count()} cores; proxies pinned to CPU {b.proxy_cpu}, load generator and "
          f"upstream (and scenario 6's two members, scenario 7's pinghelp) to CPU {b.client_cpu}; "
          f"{args.repeats} runs of {args.seconds}s each (wrk: {max(1, round(wrk_seconds))}s), medians\n")
    print(table)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"runs": results, "idle": idle, "rest_rss_kib": rest, "args": vars(args)}, f, indent=1)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(table + "\n")
    if any(s.startswith("1") for s in results) and any(s.startswith("2") for s in results):
        charts(results, args.out)
    if silent:
        print(f"\nno answer from: {', '.join(silent)}", file=sys.stderr)
        return 1
    print(f"\nerrors: {errors}; raw results and charts in {args.out}")
    return 0


def validate(args):
    """loadgen and wrk against the same plain-TLS nginx (wrk cannot present a client certificate):
    their requests/s should agree within 15%."""
    b = Bench(args)
    try:
        certs = os.path.join(b.tmp, "certs")
        subprocess.run([os.path.join(ROOT, "deploy/make-certs.sh"), certs], check=True,
                       stdout=subprocess.DEVNULL)
        up_port, port, t = free_port(), free_port(), b.tmp
        up = b.spawn([os.path.join(args.build, "tests/bench/bench-upstream"), str(up_port)], b.client_cpu, "up.log")
        wait_port(up_port, up)
        cfg = os.path.join(t, "nginx-plain.conf")
        with open(cfg, "w") as f:
            f.write(f"""worker_processes 1; daemon off; master_process off; pid {t}/n.pid;
error_log {t}/n.err warn; events {{ worker_connections 4096; }}
http {{ access_log off; client_body_temp_path {t}/b; proxy_temp_path {t}/p;
  upstream local {{ server 127.0.0.1:{up_port}; keepalive 64; }}
  server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {certs}/server.pem;
    ssl_certificate_key {certs}/server.key; ssl_protocols TLSv1.2 TLSv1.3; keepalive_requests 100000000;
    location / {{ proxy_pass http://local; proxy_http_version 1.1; proxy_set_header Connection ""; }} }} }}
""")
        ng = b.spawn(["nginx", "-c", cfg, "-p", t], b.proxy_cpu, "nginx.log")
        wait_port(port, ng)
        pin = ["taskset", "-c", b.client_cpu] if shutil.which("taskset") else []
        d = str(int(max(1, args.seconds)))
        rows = []
        for _ in range(args.repeats):
            w = subprocess.run(pin + ["wrk", "-t1", "-c32", f"-d{d}s", f"https://127.0.0.1:{port}/ping"],
                               capture_output=True, text=True, timeout=120).stdout
            wrk_rps = float(re.search(r"Requests/sec:\s+([\d.]+)", w).group(1))
            lg = json.loads(subprocess.run(pin + [os.path.join(args.build, "tests/bench/loadgen"), "--target",
                                                  f"127.0.0.1:{port}", "--tls", "-c", "32", "-d", d],
                                           capture_output=True, text=True, timeout=120).stdout)["rps"]
            rows.append((wrk_rps, lg))
        wrk_m, lg_m = median([r[0] for r in rows]), median([r[1] for r in rows])
        print(f"wrk {wrk_m:,.0f} req/s, loadgen {lg_m:,.0f} req/s, loadgen/wrk {lg_m / wrk_m:.2f} "
              f"(medians of {args.repeats}; within 15% is the goal)")
        return 0 if abs(lg_m / wrk_m - 1) <= 0.15 else 1
    finally:
        b.stop()


def charts(results, out):
    """Throughput bars and latency percentile curves, with gnuplot when it is installed."""
    if not shutil.which("gnuplot"):
        return
    targets = ["sidecar", "haproxy", "nginx", "direct"]
    s1 = next(s for s in results if s.startswith("1"))
    s2 = next(s for s in results if s.startswith("2"))
    results = {s1: results[s1]["loadgen"], s2: results[s2]["loadgen"]}
    with open(os.path.join(out, "throughput.dat"), "w") as f:
        for t in targets:
            f.write(f"{t} {median([r['rps'] for r in results[s1].get(t, [])]) or 0}\n")
    with open(os.path.join(out, "latency.dat"), "w") as f:
        f.write("q " + " ".join(targets) + "\n")
        for q, key in [(50, "p50_us"), (90, "p90_us"), (99, "p99_us"), (99.9, "p999_us")]:
            f.write(f"{q} " + " ".join(str(median([r[key] for r in results[s2].get(t, [])]) or 0)
                                      for t in targets) + "\n")
    script = f"""set terminal png size 900,500
set output '{out}/throughput.png'
set title 'Keep-alive GET, 32 connections (requests/s, higher is better)'
set style fill solid 0.6
set boxwidth 0.6
set yrange [0:*]
unset key
plot '{out}/throughput.dat' using 0:2:xtic(1) with boxes
set output '{out}/latency.png'
set title '{s2}: latency percentiles (µs, lower is better)'
set key left top
set logscale y
set xlabel 'percentile'
set xtics ('p50' 0, 'p90' 1, 'p99' 2, 'p99.9' 3)
set yrange [*:*]
plot for [i=2:5] '{out}/latency.dat' using 0:i with linespoints title columnheader(i)
"""
    subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
