#!/usr/bin/env python3
"""Soak with faults. Starts ZooKeeper, pinghelp and the sidecar (announcing), drives mixed load
with the benchmark's load generator (keep-alive GETs, new connections, request bodies), kills and
restarts the local service and ZooKeeper on a schedule, and then checks:
- the sidecar never died, and exits 0 on SIGTERM at the end;
- every answer of 500 or above fell inside a window when the local service was down;
- resident memory grew less than 5 % between the end of warm-up (5 s after the first fault) and
  the end of the load;
- open descriptors came back to the baseline (plus pooled upstream connections);
- exactly one member is announced in ZooKeeper at the end.
"""
import argparse
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))


sys.path.insert(0, os.path.join(ROOT, "tests/integration"))
from harness import PortTaken, free_port, reserve_port, status_kib, wait_serving  # noqa: E402


class Watched:
    """What harness.wait_serving needs to know of a child: its pid, whether it ended, its log."""

    def __init__(self, name, popen, logpath):
        self.name, self.popen, self.logpath = name, popen, logpath

    @property
    def pid(self):
        return self.popen.pid

    @property
    def returncode(self):
        return self.popen.returncode

    def poll(self):
        return self.popen.poll()

    def output(self):
        with open(self.logpath, "rb") as f:
            return f.read().decode(errors="replace")


def metric(admin, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{}"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Soak:
    def __init__(self, args):
        self.args = args
        self.build = os.path.abspath(args.build)
        self.tmp = tempfile.mkdtemp(prefix="sidecar-soak-")
        self.procs = {}
        self.failures = []
        self.down = []  # (start, end) of local-service outages, wall-clock seconds

    def path(self, *p):
        return os.path.join(self.tmp, *p)

    def spawn(self, name, cmd, **kw):
        log = open(self.path(f"{name}.log"), "ab")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.tmp, **kw)
        self.procs[name] = p
        return p

    def check(self, ok, what):
        print(("ok    " if ok else "FAIL  ") + what, flush=True)
        if not ok:
            self.failures.append(what)

    def serving(self, name, ports, timeout=60):
        """Waits until the child itself listens on ports (not another process that took one)."""
        wait_serving(Watched(name, self.procs[name], self.path(f"{name}.log")), ports, timeout)

    def first_start(self, name, start, ports_attr, timeout=60):
        """start() with fresh ports in self.<ports_attr> (a list of attribute names): a port taken
        between free_port() and the child's bind gives new ports and another start."""
        for attempt in range(5):
            for attr in ports_attr:
                setattr(self, attr, free_port())
            start()
            try:
                self.serving(name, [getattr(self, a) for a in ports_attr], timeout)
                return
            except PortTaken as e:
                self.kill(name)
                if attempt == 4:
                    raise
                print(f"  {e}; starting {name} again on new ports", flush=True)

    def kill(self, name):
        p = self.procs[name]
        if name == "zookeeper":
            os.killpg(p.pid, signal.SIGKILL)
        else:
            p.kill()
        p.wait()

    def start_zk(self):
        self.spawn("zookeeper", [os.path.join(ROOT, "deploy/zookeeper.sh"), self.path("zk"), str(self.zk_port)],
                   start_new_session=True)

    def zk_ok(self):
        r = subprocess.run([self.zkctl, f"127.0.0.1:{self.zk_port}", "ls", "/"], capture_output=True, timeout=30)
        return r.returncode == 0

    def members(self):
        r = subprocess.run([self.zkctl, f"127.0.0.1:{self.zk_port}", "ls", "/soak/pinghelp"],
                           capture_output=True, text=True, timeout=30)
        return [m for m in r.stdout.split() if m.startswith("member_")] if r.returncode == 0 else []

    def start_app(self):
        self.spawn("pinghelp", [os.path.join(self.build, "sidecar/pinghelp"), "--listen", f"127.0.0.1:{self.app_port}"])

    def start_sidecar(self):
        c = lambda n: self.path("certs", n)
        self.spawn("sidecar", [
            os.path.join(self.build, "sidecar/sidecar"), "--listen", f"127.0.0.1:{self.tls_port}",
            "--admin-listen", f"127.0.0.1:{self.admin}", "--upstream", f"127.0.0.1:{self.app_port}",
            "--tls-cert", c("server.pem"), "--tls-key", c("server.key"), "--tls-client-ca", c("ca.pem"),
            "--workers", "2", "--zk", f"127.0.0.1:{self.zk_port}", "--zk-path", "/soak/pinghelp",
            "--advertise-host", "127.0.0.1", "--health-interval", "250ms", "--access-log",
            self.path("access.log"), "--log-level", "warn"])

    def run(self):
        a = self.args
        self.zkctl = os.path.join(self.build, "tests/zkctl")
        subprocess.run([os.path.join(ROOT, "deploy/make-certs.sh"), self.path("certs")], check=True,
                       capture_output=True)
        c = lambda n: self.path("certs", n)
        self.first_start("zookeeper", self.start_zk, ["zk_port"], timeout=90)
        deadline = time.monotonic() + 90
        while not self.zk_ok():
            if time.monotonic() > deadline:
                raise TimeoutError("ZooKeeper did not start")
            time.sleep(0.3)
        self.first_start("pinghelp", self.start_app, ["app_port"])
        self.first_start("sidecar", self.start_sidecar, ["tls_port", "admin"])
        sidecar = self.procs["sidecar"]
        deadline = time.monotonic() + 30
        while len(self.members()) != 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        self.check(len(self.members()) == 1, "announced once before the load")
        base_fds = len(os.listdir(f"/proc/{sidecar.pid}/fd"))

        lg = os.path.join(self.build, "tests/bench/loadgen")
        common = ["--target", f"127.0.0.1:{self.tls_port}", "--tls", "--cert", c("client.pem"),
                  "--key", c("client.key"), "--ca", c("ca.pem"), "--seconds", str(a.seconds)]
        loads = {
            "keepalive": [lg, *common, "--connections", "8", "--rate", "400"],
            "handshakes": [lg, *common, "--connections", "2", "--rate", "20", "--new-connection"],
            "bodies": [lg, *common, "--connections", "2", "--rate", "20", "--method", "POST",
                       "--body-size", "65536"],
        }
        lgs = {k: subprocess.Popen(v, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   preexec_fn=raise_fd_limit) for k, v in loads.items()}
        start = time.monotonic()
        app_every = min(30.0, a.seconds / 3)
        zk_every = min(90.0, a.seconds / 2)
        # Warm-up ends 5 s after the first fault: bounded caches (the upstream pool, relay buffers,
        # allocator arenas) reach their size in the first burst of reconnections.
        warmup = app_every + 5.0
        next_app, next_zk = app_every, zk_every
        rss_warm = None
        rss = []
        while time.monotonic() - start < a.seconds:
            t = time.monotonic() - start
            if sidecar.poll() is not None:
                break
            rss.append(status_kib(sidecar.pid, "VmRSS"))
            if rss_warm is None and t >= warmup:
                rss_warm = rss[-1]
            if t >= next_app and t < a.seconds - 3:
                next_app += app_every
                began = time.time()
                self.kill("pinghelp")
                hold = reserve_port(self.app_port)  # refused while down, and no one else's
                time.sleep(1.0)
                if hold:
                    hold.close()
                self.start_app()
                self.serving("pinghelp", [self.app_port])
                self.down.append((began, time.time()))
                print(f"  {t:6.1f}s local service restarted", flush=True)
            if t >= next_zk and t < a.seconds - 3:
                next_zk += zk_every
                self.kill("zookeeper")
                hold = reserve_port(self.zk_port)
                time.sleep(2.0)
                if hold:
                    hold.close()
                self.start_zk()
                print(f"  {t:6.1f}s ZooKeeper restarted", flush=True)
            time.sleep(0.5)
        rss_end = status_kib(sidecar.pid, "VmRSS") if sidecar.poll() is None else 0
        results = {}
        for k, p in lgs.items():
            out, err = p.communicate(timeout=a.seconds + 120)
            try:
                results[k] = json.loads(out.strip().splitlines()[-1])
            except (ValueError, IndexError):
                results[k] = {"requests": 0, "errors": -1, "stderr": err[-500:]}
            print(f"  load {k}: {results[k]}", flush=True)

        self.check(sidecar.poll() is None, "the sidecar is alive after the load")
        self.check(all(r["requests"] > 0 for r in results.values()), "every load got answers")
        bad = self.errors_outside_outages()
        self.check(not bad, f"no 5xx outside local-service outages ({len(bad)} found: {bad[:3]})")
        if rss_warm and os.environ.get("SIDECAR_SANITIZED"):
            print(f"  (sanitized build: memory not judged; {rss_warm} -> {rss_end} KiB)")
        elif rss_warm:
            growth = (rss_end - rss_warm) / rss_warm
            self.check(growth < 0.05, f"resident memory growth after warm-up {growth*100:.1f}% < 5% "
                                      f"({rss_warm} -> {rss_end} KiB, peak {max(rss)} KiB)")
        time.sleep(2)
        if sidecar.poll() is None:
            pooled = metric(self.admin, "sidecar_upstream_pool_idle")
            fds = len(os.listdir(f"/proc/{sidecar.pid}/fd"))
            self.check(fds <= base_fds + pooled + 2,
                       f"descriptors back to baseline: {fds} <= {base_fds} + {pooled:.0f} pooled + 2")
        deadline = time.monotonic() + 60
        while len(self.members()) != 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        self.check(len(self.members()) == 1, f"exactly one member at the end: {self.members()}")
        if sidecar.poll() is None:
            sidecar.send_signal(signal.SIGTERM)
            try:
                code = sidecar.wait(timeout=60)
            except subprocess.TimeoutExpired:
                code = None
            self.check(code == 0, f"exit code on SIGTERM is 0 (got {code})")
            self.check(self.members() == [], "the member is gone after SIGTERM")

    def errors_outside_outages(self):
        bad = []
        pattern = re.compile(r"^ts=(\S+) .*status=(\d+)")
        with open(self.path("access.log")) as f:
            for line in f:
                m = pattern.match(line)
                if not m or int(m.group(2)) < 500:
                    continue
                when = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
                # A request that started before the kill may end with a 502 just after it; the
                # pool's stale connections are found within a moment of the restart.
                if not any(s - 0.5 <= when <= e + 2.0 for s, e in self.down):
                    bad.append(line.strip()[:160])
        return bad

    def stop(self):
        for name, p in self.procs.items():
            if p.poll() is None:
                try:
                    if name == "zookeeper":
                        os.killpg(p.pid, signal.SIGKILL)
                    else:
                        p.kill()
                except ProcessLookupError:
                    pass
                p.wait()
        if self.failures:
            for name in ("sidecar", "pinghelp", "zookeeper"):
                log = self.path(f"{name}.log")
                if os.path.exists(log):
                    sys.stderr.write(f"--- {name}.log (tail) ---\n{open(log, errors='replace').read()[-3000:]}\n")
        shutil.rmtree(self.tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    args = ap.parse_args()
    soak = Soak(args)
    try:
        soak.run()
    finally:
        soak.stop()
    if soak.failures:
        print(f"soak failed: {len(soak.failures)} check(s)", file=sys.stderr)
        sys.exit(1)
    print("soak passed")


if __name__ == "__main__":
    main()
