"""Test harness: real binaries, real clients, loopback ports picked free, every process cleaned up."""
import atexit
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

SIDECAR = os.environ.get("SIDECAR_BIN", "")
PINGHELP = os.environ.get("PINGHELP_BIN", "")
ZKCTL = os.environ.get("ZKCTL_BIN", "")
SOURCE = os.environ.get("SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "../..")))
HERE = os.path.dirname(os.path.abspath(__file__))

_live = []


@atexit.register
def _kill_leftovers():
    for p in _live:
        if p.poll() is None:
            p.kill()
            p.wait()


def _port_block():
    """Ports below the kernel's ephemeral range: an outgoing connection's source port (the abuse
    tests open thousands) can then never take a port between our choice and the server's bind."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral_low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    high = max(ephemeral_low, 12000)
    low = high - 10000
    # Each process walks from its own starting point, so that concurrent suites rarely meet.
    return low, high, low + (os.getpid() * 7919) % (high - low)


_PORT_LOW, _PORT_HIGH, _port_next = _port_block()


def free_port():
    global _port_next
    for _ in range(_PORT_HIGH - _PORT_LOW):
        port = _port_next
        _port_next = _PORT_LOW + (_port_next + 1 - _PORT_LOW) % (_PORT_HIGH - _PORT_LOW)
        if port in (22181, 28080, 28443, 29990):  # the quick start's own test ports
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def wait_port(port, timeout=15.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.returncode}:\n{proc.output()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


def wait_for(predicate, timeout=10.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not met after {timeout}s")


def status_kib(pid, key):
    """A kB field of /proc/PID/status (VmRSS, VmHWM), 0 when absent."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


class Proc:
    """A child process whose output goes to a file; killed at test end if still running."""

    def __init__(self, name, args, workdir, env=None):
        self.name = name
        self.args = args
        self.logpath = os.path.join(workdir, f"{name}-{len(_live)}.log")
        self._log = open(self.logpath, "wb")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.popen = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=full_env)
        _live.append(self.popen)

    @property
    def pid(self):
        return self.popen.pid

    @property
    def returncode(self):
        return self.popen.returncode

    def poll(self):
        return self.popen.poll()

    def send(self, sig):
        self.popen.send_signal(sig)

    def wait(self, timeout=30):
        return self.popen.wait(timeout=timeout)

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()
        return self.popen.returncode

    def output(self):
        if not self._log.closed:
            self._log.flush()
        with open(self.logpath, "rb") as f:
            return f.read().decode(errors="replace")

    def rss_kib(self):
        return status_kib(self.pid, "VmRSS")

    def rss_peak_kib(self):
        return status_kib(self.pid, "VmHWM")


class Certs:
    """Certificates made by deploy/make-certs.sh, the same script the quick start uses."""

    def __init__(self, directory):
        self.dir = directory
        subprocess.run([os.path.join(SOURCE, "deploy", "make-certs.sh"), directory], check=True,
                       stdout=subprocess.DEVNULL)

    def path(self, name):
        return os.path.join(self.dir, name)


class SidecarTestCase(unittest.TestCase):
    """Starts processes for a test and stops them all at its end."""

    @classmethod
    def setUpClass(cls):
        if not SIDECAR or not PINGHELP:
            raise unittest.SkipTest("SIDECAR_BIN and PINGHELP_BIN must be set (run through ctest)")
        cls.tmp = tempfile.mkdtemp(prefix="sidecar-it-")
        cls.certs = Certs(os.path.join(cls.tmp, "certs"))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.procs = []

    def tearDown(self):
        result = self._outcome.result
        failed = any(t is self for t, _ in result.errors + result.failures)
        for p in self.procs:
            p.stop(signal.SIGKILL if p.poll() is None else signal.SIGTERM, timeout=5)
            if failed:
                sys.stderr.write(f"--- {p.name} output ---\n{p.output()[-4000:]}\n")

    def spawn(self, name, args, env=None):
        p = Proc(name, args, self.tmp, env)
        self.procs.append(p)
        return p

    def start_pinghelp(self, *extra):
        port = free_port()
        p = self.spawn("pinghelp", [PINGHELP, "--listen", f"127.0.0.1:{port}", *extra])
        wait_port(port, proc=p)
        p.port = port
        return p

    def start_upstream(self, *extra):
        port = free_port()
        p = self.spawn("upstream", [sys.executable, os.path.join(HERE, "upstream.py"),
                                    "--port", str(port), *extra])
        wait_port(port, proc=p)
        p.port = port
        return p

    def start_sidecar(self, upstream_port, *extra, env=None, wait=True):
        port, admin = free_port(), free_port()
        defaults = {"--listen": f"127.0.0.1:{port}", "--upstream": f"127.0.0.1:{upstream_port}",
                    "--admin-listen": f"127.0.0.1:{admin}", "--workers": "2",
                    "--tls-cert": self.certs.path("server.pem"),
                    "--tls-key": self.certs.path("server.key"),
                    "--tls-client-ca": self.certs.path("ca.pem")}
        args = [SIDECAR]
        for flag, value in defaults.items():
            if flag not in extra:  # a flag the test gives replaces the default
                args += [flag, value]
        args += list(extra)
        p = self.spawn("sidecar", args, env)
        p.port, p.admin = port, admin
        if wait:
            wait_port(admin, proc=p)
            wait_port(port, proc=p)
        return p

    def start_zookeeper(self, directory=None, port=None, ensemble=None, myid=None):
        """Debian's ZooKeeper via deploy/zookeeper.sh, on loopback; same directory and port to
        restart one. ensemble: list of "id=127.0.0.1:peer:election" for a quorum member."""
        port = port or free_port()
        directory = directory or tempfile.mkdtemp(prefix="zk-", dir=self.tmp)
        args = [os.path.join(SOURCE, "deploy", "zookeeper.sh"), directory, str(port)]
        if ensemble:
            args += [str(myid), *ensemble]
        p = self.spawn("zookeeper", args)
        p.port, p.dir = port, directory
        if not ensemble:
            self.wait_zookeeper(p)
        return p

    def wait_zookeeper(self, zk, timeout=60):
        def ok():
            if zk.poll() is not None:
                raise RuntimeError(f"zookeeper exited:\n{zk.output()[-3000:]}")
            return self.zkctl(zk.port, "ls", "/").returncode == 0
        wait_for(ok, timeout=timeout, interval=0.2, what=f"zookeeper on {zk.port}")

    def zkctl(self, port, *args):
        hosts = port if isinstance(port, str) else f"127.0.0.1:{port}"
        return subprocess.run([ZKCTL, hosts, *args], capture_output=True, text=True, timeout=30)

    def members(self, port, path):
        r = self.zkctl(port, "ls", path)
        if r.returncode != 0:
            return []
        return sorted(line for line in r.stdout.split() if line.startswith("member_"))

    # --- clients -------------------------------------------------------------------------------

    def curl(self, url, cert="client", args=(), timeout=60, output=None):
        """curl with the caller's certificate; returns (exit code, HTTP status, body, stderr).
        With output, the body goes to that file and is not returned."""
        body_file = output or os.path.join(self.tmp, f"body-{time.monotonic_ns()}")
        cmd = ["curl", "-sS", "--max-time", str(timeout), "--cacert", self.certs.path("ca.pem"),
               "-o", body_file, "-w", "%{http_code}"]
        if cert:
            cmd += ["--cert", self.certs.path(f"{cert}.pem"), "--key", self.certs.path(f"{cert}.key")]
        cmd += list(args) + [url]
        r = subprocess.run(cmd, capture_output=True, timeout=timeout + 10)
        body = b""
        if output is None and os.path.exists(body_file):
            with open(body_file, "rb") as f:
                body = f.read()
            os.remove(body_file)
        status = int(r.stdout.decode() or 0) if r.stdout.decode().isdigit() else 0
        return r.returncode, status, body, r.stderr.decode(errors="replace")

    def tls_socket(self, port, cert="client"):
        """A raw TLS connection (Python's ssl, OpenSSL underneath) for byte-level control."""
        ctx = ssl.create_default_context(cafile=self.certs.path("ca.pem"))
        ctx.load_cert_chain(self.certs.path(f"{cert}.pem"), self.certs.path(f"{cert}.key"))
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        return ctx.wrap_socket(raw, server_hostname="localhost")

    @staticmethod
    def read_response(sock):
        """Reads one Content-Length framed HTTP response from sock; returns (status, body)."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed after {data!r}")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed mid-body")
            body += chunk
        return int(head.split()[1]), body

    def s_client(self, port, data, cert="client", extra=()):
        """openssl s_client sending data; returns everything it printed."""
        cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-quiet", "-ign_eof",
               "-CAfile", self.certs.path("ca.pem"), *extra]
        if cert:
            cmd += ["-cert", self.certs.path(f"{cert}.pem"), "-key", self.certs.path(f"{cert}.key")]
        r = subprocess.run(cmd, input=data, capture_output=True, timeout=30)
        return r.stdout.decode(errors="replace"), r.returncode

    def admin_get(self, proc, path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{proc.admin}{path}", timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def admin_post(self, proc, path):
        req = urllib.request.Request(f"http://127.0.0.1:{proc.admin}{path}", data=b"", method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metric_sum(self, proc, name, **labels):
        """The sum of every sample of name whose labels include the given ones."""
        _, text = self.admin_get(proc, "/metrics")
        total = 0.0
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            series, _, value = line.rpartition(" ")
            parsed = _split_series(series)
            if parsed and parsed[0] == name and set(labels.items()) <= set(parsed[1]):
                total += float(value)
        return total

    def metric(self, proc, name, **labels):
        """The value of one sample on /metrics (0 when absent)."""
        _, text = self.admin_get(proc, "/metrics")
        want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            series, _, value = line.rpartition(" ")
            # prometheus-cpp writes labels in the order they were declared; compare as sets.
            if _same_series(series, want):
                return float(value)
        return 0.0


def _split_series(s):
    m = re.match(r"^([^{]+)(?:\{(.*)\})?$", s)
    if not m:
        return None
    return m.group(1), frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))


def _same_series(a, b):
    return _split_series(a) == _split_series(b)
