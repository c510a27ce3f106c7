#!/usr/bin/env python3
"""Discovery at fleet scale (issue 28): a real 3-server ZooKeeper ensemble on loopback, one writer
keeping N Finagle members over several sessions and churning them at R changes a second, and P
watching sidecars with M zk2! routes each to that serverset (K = P x M watches) plus a static route
that a load generator calls throughout. Prints, per (N, R, K), how long a change takes to reach
every watcher, what ZooKeeper serves per change and watcher, the sidecars' CPU per change, their
memory per member, and the static route's latency with and without churn.
See tests/bench/README.md, "The fleet simulation"."""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from datetime import datetime

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "../.."))
PATH = "/fleet/svc"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--members", "-N", type=int, default=10000)
    p.add_argument("--rate", "-R", type=float, default=10, help="changes per second")
    p.add_argument("--sidecars", "-P", type=int, default=2)
    p.add_argument("--routes", "-M", type=int, default=3, help="zk2! routes per sidecar")
    p.add_argument("--sessions", type=int, default=10, help="the writer's ZooKeeper sessions")
    p.add_argument("--seconds", type=float, default=20, help="churn time (half up, half down)")
    p.add_argument("--load-rate", type=int, default=500, help="requests/s on the static route")
    p.add_argument("--aperture", type=int, default=0,
                   help="run the sidecars with --aperture true --aperture-size this (0: off)")
    p.add_argument("--smoke", action="store_true", help="small and short: checks it all runs")
    p.add_argument("--json", help="write the figures here too")
    a = p.parse_args()
    if a.smoke:
        a.members, a.rate, a.sidecars, a.routes, a.sessions, a.seconds = 200, 20, 2, 3, 3, 3
        a.load_rate = 100
    return a


ARGS = parse_args()
os.environ.setdefault("SIDECAR_BIN", os.path.join(ARGS.build, "sidecar", "sidecar"))
os.environ.setdefault("PINGHELP_BIN", os.path.join(ARGS.build, "sidecar", "pinghelp"))
os.environ.setdefault("ZKCTL_BIN", os.path.join(ARGS.build, "tests", "zkctl"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import harness  # noqa: E402  (reads the binaries' paths from the environment at import)

WRITER = os.environ.get("FLEET_WRITER_BIN", os.path.join(ARGS.build, "tests", "bench", "fleet-writer"))
LOADGEN = os.path.join(ARGS.build, "tests", "bench", "loadgen")
MEMBERS_LINE = re.compile(
    r"^(\S+) info event=route_members route=(\S+) members=(\d+)(?:.* listed=(\d+))?")


def percentile(values, q):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def cpu_ticks(pid):
    """(main thread, whole process) CPU seconds: the main thread is the control thread, where the
    resolvers run; the others are the workers and the ZooKeeper client's threads."""
    def read(path):
        with open(path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return read(f"/proc/{pid}/task/{pid}/stat"), read(f"/proc/{pid}/stat")


def mntr(port):
    """ZooKeeper's mntr four-letter word as a dict of numbers."""
    import socket
    out = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"mntr")
        while chunk := s.recv(65536):
            out += chunk
    figures = {}
    for line in out.decode().splitlines():
        key, _, value = line.partition("\t")
        try:
            figures[key] = float(value)
        except ValueError:
            pass
    return figures


def zk_bytes_to(pids, zk_ports):
    """Bytes the ZooKeeper servers sent on the TCP connections of these processes (tcp_info's
    bytes_received, from ss), by process."""
    out = subprocess.run(["ss", "-tinpH", "state", "established"], capture_output=True,
                         text=True).stdout
    totals = {pid: 0 for pid in pids}
    current = None
    for line in out.splitlines():
        if not line.startswith((" ", "\t")):
            current = None
            fields = line.split()
            if len(fields) >= 4 and int(fields[3].rsplit(":", 1)[1]) in zk_ports:
                m = re.search(r"pid=(\d+)", line)
                if m and int(m.group(1)) in totals:
                    current = int(m.group(1))
        elif current is not None:
            m = re.search(r"bytes_received:(\d+)", line)
            if m:
                totals[current] += int(m.group(1))
    return totals


class Fleet(harness.SidecarTestCase):
    def runTest(self):  # unittest wants one; the simulation is driven from main()
        pass

    def start(self):
        self.setUpClass()
        self.setUp()
        self.zks = self.start_ensemble(3)
        self.hosts = ",".join(f"127.0.0.1:{z.port}" for z in self.zks)
        self.writer = subprocess.Popen([WRITER, self.hosts, PATH, str(ARGS.sessions)],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        harness._live.append(self.writer)
        # The unrelated route's member: pinghelp behind a sidecar (mTLS in).
        ph = self.start_pinghelp()
        self.member = self.start_sidecar(ph.port, "--workers", "1")
        routes = ["--aperture", "true", "--aperture-size", str(ARGS.aperture)] if ARGS.aperture else []
        for i in range(ARGS.routes):
            routes += ["--route", f"f{i}=zk2!{self.hosts}!{PATH}"]
        self.sidecars = [self.start_outbound_sidecar(
            "--workers", "1", "--route", f"static=static!127.0.0.1:{self.member.port}", *routes)
            for _ in range(ARGS.sidecars)]

    def command(self, line):
        self.writer.stdin.write(line + "\n")
        self.writer.stdin.flush()
        answer = self.writer.stdout.readline().split()
        if not answer or answer[0] == "error":
            raise RuntimeError(f"fleet-writer: {line}: {answer}")
        return answer

    def publications(self, sidecar):
        """Every route_members line: (wall time, route, members)."""
        out = []
        for line in sidecar.output().splitlines():
            m = MEMBERS_LINE.match(line)
            if m and m.group(2).startswith("f"):
                t = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
                # With --aperture, members= is the window: the count listed says which changes.
                out.append((t, f"{sidecar.pid}/{m.group(2)}", int(m.group(4) or m.group(3))))
        return out

    def watchers(self):
        return [f"{s.pid}/f{i}" for s in self.sidecars for i in range(ARGS.routes)]

    def converged(self, count):
        last = {}
        for s in self.sidecars:
            for t, w, n in self.publications(s):
                last[w] = n
        return all(last.get(w) == count for w in self.watchers())

    def loadgen(self, seconds):
        return subprocess.Popen(
            [LOADGEN, "--target", f"127.0.0.1:{self.sidecars[0].outbound}", "--host", "static", "-c", "8",
             "-R", str(ARGS.load_rate), "-d", str(seconds)], stdout=subprocess.PIPE, text=True)

    def snapshot(self):
        pids = [s.pid for s in self.sidecars]
        return {"t": time.monotonic(), "cpu": {p: cpu_ticks(p) for p in pids},
                "zk": [mntr(z.port) for z in self.zks],
                "bytes": zk_bytes_to(pids, {z.port for z in self.zks})}

    def churn(self):
        """Up (creates) for half the time, then down (deletes) as many, once every watcher has the
        up half's count: the member count moves one way in each half, so the count a watcher
        publishes says which changes it has (a listing is a snapshot at one point of ZooKeeper's
        order). Returns the changes and the time spent waiting between the halves."""
        per_half = max(1, int(ARGS.rate * ARGS.seconds / 2))
        changes = []
        for kind, after in (("create", ARGS.members + per_half), ("delete", ARGS.members)):
            start = time.monotonic()
            for i in range(per_half):
                due = start + i / ARGS.rate
                time.sleep(max(0.0, due - time.monotonic()))
                a = self.command(kind)
                changes.append((kind, float(a[1]), float(a[2]), a[3]))
            harness.wait_for(lambda: self.converged(after), timeout=60, interval=0.1,
                             what=f"every watcher at {after} members")
        return changes, per_half


def attribute(changes, per_half, publications, base):
    """For each change, when each watcher first published a count that includes it."""
    by_watcher = {}
    for t, w, n in sorted(publications):
        by_watcher.setdefault(w, []).append((t, n))
    worst = []   # per change: the last watcher's delay
    every = []   # per change and watcher
    for j, (kind, t0, _, _) in enumerate(changes):
        if kind == "create":
            want = lambda n, j=j: n >= base + j + 1
        else:
            k = j - per_half
            want = lambda n, k=k: n <= base + per_half - k - 1
        delays = []
        for w, pubs in by_watcher.items():
            at = next((t for t, n in pubs if t >= t0 - 0.002 and want(n)), None)
            delays.append(float("inf") if at is None else max(0.0, at - t0))
        worst.append(max(delays))
        every.extend(delays)
    return worst, every


def main():
    f = Fleet()
    try:
        return run(f)
    finally:
        writer = getattr(f, "writer", None)
        if writer and writer.poll() is None:
            writer.kill()
        for p in getattr(f, "procs", []):
            p.stop(timeout=5)
        if hasattr(Fleet, "tmp"):
            f.tearDownClass()


def run(f):
    t_start = time.monotonic()
    f.start()
    K = ARGS.sidecars * ARGS.routes
    harness.wait_for(lambda: f.converged(0), timeout=60, what="every route resolved, empty")
    rss0 = [s.rss_kib() for s in f.sidecars]
    filled = f.command(f"fill {ARGS.members}")
    t_filled = time.time()
    harness.wait_for(lambda: f.converged(ARGS.members), timeout=120,
                     what=f"every watcher at {ARGS.members} members")
    first = max(t for s in f.sidecars for t, _, n in f.publications(s) if n == ARGS.members)
    time.sleep(1)
    rss1 = [s.rss_kib() for s in f.sidecars]

    quiet_s = max(2.0, ARGS.seconds / 2)
    lg = f.loadgen(quiet_s)
    a = f.snapshot()
    quiet = json.loads(lg.communicate()[0])
    b = f.snapshot()

    churn_s = ARGS.seconds
    lg = f.loadgen(churn_s)
    c = f.snapshot()
    changes, per_half = f.churn()
    d = f.snapshot()
    during = json.loads(lg.communicate()[0])
    harness.wait_for(lambda: f.converged(ARGS.members), timeout=30,
                     what="every watcher back at N after the churn")

    t_end = time.time()
    # The members each watch balances over now (with --aperture, its window).
    balanced = []
    for s in f.sidecars:
        for route in json.loads(f.admin_get(s, "/admin/clients")[1])["clients"]:
            if route["route"].startswith("f"):
                balanced.append(len(route["members"]))
    pubs = [p for s in f.sidecars for p in f.publications(s)]
    worst, every = attribute(changes, per_half, pubs, ARGS.members)
    n_changes = len(changes)
    # Member sets handed to the workers from the first change until every watcher caught up.
    handed = sum(1 for t, _, _ in pubs if changes[0][1] <= t <= t_end) / n_changes / K

    def zk_delta(key, x, y):
        return sum(yy.get(key, 0) - xx.get(key, 0) for xx, yy in zip(x["zk"], y["zk"]))

    quiet_len, churn_len = b["t"] - a["t"], d["t"] - c["t"]
    scale = churn_len / quiet_len

    def per_change(key_fn):
        return (key_fn(c, d) - key_fn(a, b) * scale) / n_changes

    pids = [s.pid for s in f.sidecars]
    cpu_main = per_change(lambda x, y: sum(y["cpu"][p][0] - x["cpu"][p][0] for p in pids))
    cpu_all = per_change(lambda x, y: sum(y["cpu"][p][1] - x["cpu"][p][1] for p in pids))
    zk_bytes = per_change(lambda x, y: sum(y["bytes"][p] - x["bytes"][p] for p in pids))
    zk_sent = per_change(lambda x, y: zk_delta("zk_packets_sent", x, y))
    zk_recv = per_change(lambda x, y: zk_delta("zk_packets_received", x, y))
    mem = statistics.mean(r1 - r0 for r0, r1 in zip(rss0, rss1)) * 1024 / ARGS.members

    ms = lambda v: f"{v * 1000:,.0f}" if v != float("inf") else "never"
    figures = {
        "members": ARGS.members, "rate": ARGS.rate, "sidecars": ARGS.sidecars,
        "routes_per_sidecar": ARGS.routes, "watches": K, "changes": n_changes,
        "fill_s": float(filled[2]), "first_set_s": first - t_filled,
        "change_to_all_p50_ms": percentile(worst, 50) * 1000,
        "change_to_all_p99_ms": percentile(worst, 99) * 1000,
        "change_to_all_max_ms": max(worst) * 1000,
        "change_to_one_p50_ms": percentile(every, 50) * 1000,
        "change_to_one_p99_ms": percentile(every, 99) * 1000,
        "zk_bytes_per_change_per_watch": zk_bytes / K,
        "zk_requests_per_change_per_watch": zk_recv / K,
        "zk_packets_sent_per_change_per_watch": zk_sent / K,
        "zk_bytes_per_s_per_watch": zk_bytes * ARGS.rate / K,
        "sets_per_change_per_watch": handed,
        "cpu_us_per_change_per_watch": cpu_all * 1e6 / K,
        "cpu_control_us_per_change_per_watch": cpu_main * 1e6 / K,
        "rss_bytes_per_member_per_sidecar": mem,
        "rss_bytes_per_member_per_watch": mem / ARGS.routes,
        "static_p50_us_quiet": quiet["p50_us"], "static_p99_us_quiet": quiet["p99_us"],
        "static_p50_us_churn": during["p50_us"], "static_p99_us_churn": during["p99_us"],
        "static_errors": quiet["errors"] + during["errors"],
        "aperture": ARGS.aperture, "balanced_min": min(balanced), "balanced_max": max(balanced),
        "seconds": time.monotonic() - t_start,
    }
    print(f"## fleet: N={ARGS.members} R={ARGS.rate:g}/s K={K} ({ARGS.sidecars} sidecars x "
          f"{ARGS.routes} routes), {n_changes} changes, writer over {ARGS.sessions} sessions\n")
    print("| figure | value |\n| --- | ---: |")
    rows = [
        ("first complete set after the fill (s)", f"{figures['first_set_s']:.2f}"),
        ("change to every watcher, p50 / p99 / max (ms)",
         f"{ms(percentile(worst, 50))} / {ms(percentile(worst, 99))} / {ms(max(worst))}"),
        ("change to one watcher, p50 / p99 (ms)",
         f"{ms(percentile(every, 50))} / {ms(percentile(every, 99))}"),
        ("ZooKeeper bytes to the sidecars per change per watch", f"{zk_bytes / K:,.0f}"),
        ("ZooKeeper bytes/s per watch during churn", f"{zk_bytes * ARGS.rate / K:,.0f}"),
        ("ZooKeeper requests per change per watch (mntr)", f"{zk_recv / K:.2f}"),
        ("member sets handed to the workers per change per watch", f"{handed:.2f}"),
        ("sidecar CPU per change per watch, all threads (µs)", f"{cpu_all * 1e6 / K:,.0f}"),
        ("  of which the control thread (µs)", f"{cpu_main * 1e6 / K:,.0f}"),
        ("members each watch balances over (min / max)", f"{min(balanced):,} / {max(balanced):,}"),
        ("RSS per member per sidecar (bytes)", f"{mem:,.0f}"),
        ("RSS per member per watch (bytes)", f"{mem / ARGS.routes:,.0f}"),
        ("static route p50 / p99, quiet (µs)", f"{quiet['p50_us']:,} / {quiet['p99_us']:,}"),
        ("static route p50 / p99, churn (µs)", f"{during['p50_us']:,} / {during['p99_us']:,}"),
    ]
    for name, value in rows:
        print(f"| {name} | {value} |")
    if ARGS.json:
        with open(ARGS.json, "w") as out:
            json.dump(figures, out, indent=1)
    ok = max(worst) != float("inf") and quiet["requests"] > 0 and during["requests"] > 0
    if not ok:
        print("FAILED: a watcher never routed a change, or the static route answered nothing",
              file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
