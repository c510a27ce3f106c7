"""Test harness: real binaries, real clients, loopback ports picked free, every process cleaned up."""
import atexit
import glob
import http.client
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
# ASan and TSan builds (tests/run.sh sets this) start and answer several times slower: waits for a
# process to come up scale with it. Waits that bound how fast something must happen do not.
SANITIZED = bool(os.environ.get("SIDECAR_SANITIZED"))
SLOW = 4 if SANITIZED else 1

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


class _Reserved(socket.socket):
    """A socket that can carry .port."""


def reserve_port(port=None):
    """A socket bound to port (a fresh one if None) that does not listen: a caller connecting to it
    is refused, as from a port nobody uses, and free_port() in any process passes it by. For a
    port that is named now and served later, or that must stay unserved; close it (it is a
    socket, usable with `with`) right before the process that serves the port starts. Best effort
    for a given port: None if it cannot be bound (something still holds it)."""
    for _ in range(100):
        want = port or free_port()
        s = _Reserved()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the last server's TIME_WAITs
        try:
            s.bind(("127.0.0.1", want))
        except OSError:
            s.close()
            if port:
                return None
            continue
        s.port = want
        return s
    raise RuntimeError("no port to reserve")


class PortTaken(RuntimeError):
    """A child could not have its port: another process bound it between free_port() and the
    child's bind."""


def _listening_inodes(port):
    """The inodes of every socket in LISTEN state on port, any local address."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(fields[9])
        except (OSError, StopIteration):
            pass
    return inodes


def _socket_inodes(pid):
    out = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def _bindable(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT is not a holder
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


_IN_USE = re.compile(r"(?i)address already in use|EADDRINUSE|address in use")


def wait_serving(proc, ports, timeout=None):
    """Waits until proc itself listens on every port in ports. A bare connect (wait_port) can
    reach another process that took the port first, and the sidecar's SO_REUSEPORT listener even
    binds beside it and shares the connections. Raises PortTaken when another process listens on
    one of them, or when proc exited saying its address is in use; RuntimeError when it exited
    otherwise; TimeoutError."""
    timeout = timeout or 15.0 * SLOW
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            out = proc.output()
            # ZooKeeper, logging at WARN through a logger Debian leaves out, exits 1 without a
            # word: a port that cannot be bound now tells the same.
            busy = [port for port in ports if not _bindable(port)]
            if _IN_USE.search(out) or busy:
                raise PortTaken(f"{proc.name} could not bind one of {ports} (busy now: {busy}):\n"
                                f"{out[-2000:]}")
            raise RuntimeError(f"{proc.name} exited with {proc.returncode}:\n{out[-4000:]}")
        tables = {port: _listening_inodes(port) for port in ports}
        mine = _socket_inodes(proc.pid)  # read after the tables: a listener in them is in here too
        foreign = {port: inodes - mine for port, inodes in tables.items() if inodes - mine}
        if foreign:
            raise PortTaken(f"{proc.name}: another process listens on {sorted(foreign)}")
        if all(tables.values()):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{proc.name} does not listen on {ports} after {timeout}s")
        time.sleep(0.05)


def wait_port(port, timeout=None, proc=None):
    timeout = timeout or 15.0 * SLOW
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


def tcp_connections(local_port=None, remote_port=None, state="01"):
    """How many TCP sockets on loopback are in state (01 ESTABLISHED, 08 CLOSE_WAIT; see
    include/net/tcp_states.h) with the given local and/or remote port."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] != state:
                        continue
                    local = int(fields[1].rsplit(":", 1)[1], 16)
                    remote = int(fields[2].rsplit(":", 1)[1], 16)
                    if local_port not in (None, local) or remote_port not in (None, remote):
                        continue
                    n += 1
        except (OSError, StopIteration):
            pass
    return n


def status_kib(pid, key):
    """A kB field of /proc/PID/status (VmRSS, VmHWM), 0 when absent."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def npm_work_dir(packages, scripts, what):
    """A new temporary directory with the npm packages installed (pinned versions) and the files
    of js/ that match the glob scripts copied in: (its path, None), or (None, a reason to skip)
    when node, npm or the npm registry is missing. The caller removes it."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        return None, f"node and npm are not installed: {what} is not tried"
    work = tempfile.mkdtemp(prefix="npm-")
    r = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--no-save", "--silent",
                        *packages], cwd=work, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        return None, f"npm install of {what} failed (no registry?): {r.stderr[-500:]}"
    for name in glob.glob(os.path.join(HERE, "js", scripts)):
        shutil.copy(name, work)
    return work, None


def cpu_seconds(pid):
    """The process's user and system CPU so far, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def half_a_record(port, certs, alpn, plaintext):
    """A client-certificate TLS connection to port that sends only the first half of the one TLS
    record holding plaintext, and waits: the server's OpenSSL holds part of a record. Returns the
    raw socket (the caller closes it)."""
    ctx = ssl.create_default_context(cafile=certs.path("ca.pem"))
    ctx.load_cert_chain(certs.path("client.pem"), certs.path("client.key"))
    if alpn:
        ctx.set_alpn_protocols([alpn])
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            raw.sendall(outgoing.read())
            data = raw.recv(65536)
            if not data:
                raise ConnectionError("closed during the handshake")
            incoming.write(data)
    raw.sendall(outgoing.read())
    tls.write(plaintext)
    record = outgoing.read()
    raw.sendall(record[:len(record) // 2])
    return raw


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

    def assertSettles(self, read, expected, msg=None, timeout=10.0):
        """read() comes to equal expected within timeout, and the last value is asserted. For
        what the sidecar updates after the caller already has its answer: a request's counters and
        access-log line follow the last write of the response, the open-connection gauge follows
        the caller's close."""
        last = []

        def settled():
            last[:] = [read()]
            return last[0] == expected

        try:
            wait_for(settled, timeout=timeout, what=msg or "value")
        except TimeoutError:
            pass
        self.assertEqual(last[0], expected, msg)

    def spawn_serving(self, name, build, count, timeout=None, attempts=5):
        """Spawns a process that listens on count ports of its own: build(ports) gives its
        (args, env). A port can be taken between free_port() and the child's bind (another suite,
        another checkout's tests); then the child goes and the start is repeated on new ports,
        a bounded number of times. Returns the process with .ports once it listens on them."""
        for attempt in range(attempts):
            ports = [free_port() for _ in range(count)]
            args, env = build(ports)
            p = self.spawn(name, args, env)
            p.ports = ports
            try:
                wait_serving(p, ports, timeout)
                return p
            except PortTaken as e:
                p.stop(signal.SIGKILL, timeout=10)
                if attempt == attempts - 1:
                    raise
                sys.stderr.write(f"[harness] {e}; starting {name} again on new ports\n")

    def start_pinghelp(self, *extra):
        p = self.spawn_serving("pinghelp", lambda ports: (
            [PINGHELP, "--listen", f"127.0.0.1:{ports[0]}", *extra], None), 1)
        p.port = p.ports[0]
        return p

    def start_upstream(self, *extra):
        p = self.spawn_serving("upstream", lambda ports: (
            [sys.executable, os.path.join(HERE, "upstream.py"), "--port", str(ports[0]), *extra],
            None), 1)
        p.port = p.ports[0]
        return p

    def start_sidecar(self, upstream_port, *extra, env=None, wait=True, grace="2s"):
        """grace: --deregister-grace unless the test gives it; the default's 22 s (for Finagle
        callers, which no test but the one about it has) would make every stop of an announced
        sidecar that long. None: the sidecar's own default."""
        def build(ports):
            defaults = {"--listen": f"127.0.0.1:{ports[0]}",
                        "--upstream": f"127.0.0.1:{upstream_port}",
                        "--admin-listen": f"127.0.0.1:{ports[1]}", "--workers": "2",
                        "--tls-cert": self.certs.path("server.pem"),
                        "--tls-key": self.certs.path("server.key"),
                        "--tls-client-ca": self.certs.path("ca.pem")}
            if grace is not None and "SIDECAR_DEREGISTER_GRACE" not in (env or {}):
                defaults["--deregister-grace"] = grace
            args = [SIDECAR]
            for flag, value in defaults.items():
                if flag not in extra:  # a flag the test gives replaces the default
                    args += [flag, value]
            return args + list(extra), env

        if wait and "--listen" not in extra and "--admin-listen" not in extra:
            p = self.spawn_serving("sidecar", build, 2)
        else:  # the test names a port, or starts it not waiting: no new ports to try
            ports = [free_port(), free_port()]
            p = self.spawn("sidecar", build(ports)[0], env)
            p.ports = ports
            if wait:
                wait_port(ports[1], proc=p)
                wait_port(ports[0], proc=p)
        p.port, p.admin = p.ports
        return p

    def start_zookeeper(self, directory=None, port=None, ensemble=None, myid=None):
        """Debian's ZooKeeper via deploy/zookeeper.sh, on loopback; same directory and port to
        restart one. ensemble: list of "id=127.0.0.1:peer:election" for a quorum member (the
        caller waits and handles ports taken; start_ensemble does both)."""
        directory = directory or tempfile.mkdtemp(prefix="zk-", dir=self.tmp)

        def build(ports):
            args = [os.path.join(SOURCE, "deploy", "zookeeper.sh"), directory, str(ports[0])]
            if ensemble:
                args += [str(myid), *ensemble]
            return args, None

        if port is None and not ensemble:
            p = self.spawn_serving("zookeeper", build, 1, timeout=60 * SLOW)
        else:
            p = self.spawn("zookeeper", build([port])[0])
            p.ports = [port]
            if not ensemble:
                wait_serving(p, [port], timeout=60 * SLOW)  # a taken port is an error here
        p.port, p.dir = p.ports[0], directory
        if not ensemble:
            self.wait_zookeeper(p)
        return p

    def start_ensemble(self, n=3, attempts=4):
        """n ZooKeeper servers in one quorum, every one answering. Returns them, each with .port,
        .dir, .peer and .election. A taken port (client, peer or election) starts the whole
        ensemble again on new ports."""
        for attempt in range(attempts):
            ports = [(free_port(), free_port(), free_port()) for _ in range(n)]
            spec = [f"{i + 1}=127.0.0.1:{p[1]}:{p[2]}" for i, p in enumerate(ports)]
            servers = [self.start_zookeeper(port=p[0], ensemble=spec, myid=i + 1)
                       for i, p in enumerate(ports)]
            try:
                for s, p in zip(servers, ports):
                    s.peer, s.election = p[1], p[2]
                    # The client and election ports are bound at start; the peer port only by
                    # the leader, once elected (checked below).
                    wait_serving(s, [p[0], p[2]], timeout=60 * SLOW)
                for s in servers:
                    self.wait_zookeeper(s, timeout=90 * SLOW)
                for s in servers:
                    foreign = _listening_inodes(s.peer) - set().union(
                        *(_socket_inodes(x.pid) for x in servers))
                    if foreign:
                        raise PortTaken(f"another process listens on peer port {s.peer}")
                return servers
            except PortTaken as e:
                for s in servers:
                    s.stop(signal.SIGKILL, timeout=10)
                if attempt == attempts - 1:
                    raise
                sys.stderr.write(f"[harness] {e}; starting the ensemble again on new ports\n")

    def wait_zookeeper(self, zk, timeout=None):
        timeout = timeout or 60 * SLOW

        def ok():
            if zk.poll() is not None:
                out = zk.output()
                if _IN_USE.search(out):  # an ensemble member's election port, say
                    raise PortTaken(f"zookeeper on {zk.port} could not bind:\n{out[-2000:]}")
                raise RuntimeError(f"zookeeper exited:\n{out[-3000:]}")
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
        if not any(a.startswith("--http") for a in args):
            # curl offers h2 by ALPN and --listen takes it: a test of HTTP/2 says so; the others
            # test HTTP/1.1.
            cmd.append("--http1.1")
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
    def read_response(sock, method="GET"):
        """Reads one HTTP response from sock, framed as RFC 9112 says: no body after HEAD, 1xx,
        204 and 304, else Content-Length (none: empty). Returns (status, body)."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed after {data!r}")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        if method == "HEAD" or status in (204, 304) or status < 200:
            return status, body
        found = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        length = int(found.group(1)) if found else 0
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed mid-body")
            body += chunk
        return status, body

    def s_client(self, port, data, cert="client", extra=()):
        """openssl s_client sending data; returns everything it printed."""
        cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-quiet", "-ign_eof",
               "-CAfile", self.certs.path("ca.pem"), *extra]
        if cert:
            cmd += ["-cert", self.certs.path(f"{cert}.pem"), "-key", self.certs.path(f"{cert}.key")]
        r = subprocess.run(cmd, input=data, capture_output=True, timeout=30)
        return r.stdout.decode(errors="replace"), r.returncode

    # --- the outbound mesh ----------------------------------------------------------------------

    def sidecar_defaults(self, ports, upstream_port):
        """The flags every test sidecar gets unless the test gives them (as start_sidecar's)."""
        return {"--listen": f"127.0.0.1:{ports[0]}", "--upstream": f"127.0.0.1:{upstream_port}",
                "--admin-listen": f"127.0.0.1:{ports[1]}", "--workers": "2",
                "--tls-cert": self.certs.path("server.pem"),
                "--tls-key": self.certs.path("server.key"),
                "--tls-client-ca": self.certs.path("ca.pem")}

    def start_outbound_sidecar(self, *extra, upstream_port=None, env=None):
        """A caller's sidecar with an outbound listener (.outbound) beside its inbound one (.port)
        and its admin (.admin). Its local service is not needed: without upstream_port its
        upstream is a port held refused for the test."""
        if upstream_port is None:
            held = reserve_port()
            self.addCleanup(held.close)
            upstream_port = held.port

        def build(ports):
            args = [SIDECAR]
            defaults = self.sidecar_defaults(ports, upstream_port)
            defaults["--outbound-listen"] = f"127.0.0.1:{ports[2]}"
            for flag, value in defaults.items():
                if flag not in extra:
                    args += [flag, value]
            return args + list(extra), env

        p = self.spawn_serving("caller", build, 3)
        p.port, p.admin, p.outbound = p.ports
        return p

    def start_member(self, zk, path, service_port, *extra, cert=None, wait=True, grace="2s",
                     advertise="127.0.0.1"):
        """A member of the serverset path: a sidecar in front of the local service on
        service_port, announced in zk (a process with .port, or "host:port") as advertise (an
        address or a host name) and, with wait, ready (announced). cert: a Certs whose
        server.pem/server.key it presents instead. grace: as start_sidecar's."""
        hosts = zk if isinstance(zk, str) else f"127.0.0.1:{zk.port}"
        flags = ["--zk", hosts, "--zk-path", path, "--advertise-host", advertise,
                 "--health-interval", "100ms", "--rise", "1"]
        if cert is not None:
            flags += ["--tls-cert", cert.path("server.pem"), "--tls-key", cert.path("server.key")]
        sc = self.start_sidecar(service_port, *flags, *extra, grace=grace)
        if wait:
            wait_for(lambda: self.admin_get(sc, "/ready")[0] == 200, timeout=20 * SLOW,
                     what=f"member on {sc.port} announced")
        return sc

    def outbound_call(self, port, host, path="/", method="GET", body=None, headers=None,
                      timeout=30):
        """One plain HTTP/1.1 request to an outbound listener naming the service host; returns
        (status, body bytes, headers as a list of pairs)."""
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers={"Host": host, **(headers or {})})
            r = conn.getresponse()
            return r.status, r.read(), r.getheaders()
        finally:
            conn.close()

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

    def grpc_credentials(self, cert="client"):
        """grpcio's channel credentials from the test certificates (grpcio imported here: only
        the suites that use it need it)."""
        import grpc  # noqa: PLC0415 - optional, as above

        def read(name):
            with open(self.certs.path(name), "rb") as f:
                return f.read()
        return grpc.ssl_channel_credentials(root_certificates=read("ca.pem"),
                                            private_key=read(f"{cert}.key"),
                                            certificate_chain=read(f"{cert}.pem"))

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
