"""pinghelp over Thrift (--thrift-listen): the real binary called by clients no one here wrote,
Apache Thrift's Python library (python3-thrift) and, when node and the npm registry are there,
Node's (the npm `thrift` package), with code generated now from proto/pinghelp.thrift. The same
answers as HTTP /help, the declared exception, bytes that are not a Thrift call closing only
their own connection, two clients at once, the idle timeout, SIGTERM, and bad flag values."""
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

from harness import PINGHELP, SLOW, SOURCE, SidecarTestCase

IDL = os.path.join(SOURCE, "proto", "pinghelp.thrift")
MAX_FRAME = 16_384_000  # Apache Thrift's default, in every language
PROBE = "__can__finagle__trace__v3__"
NPM_THRIFT = "thrift@0.17.0"  # the same release as Debian's compiler and libthrift

# The Node client: prints what it got as one JSON line.
NODE_CLIENT = r"""
const thrift = require('thrift');
const PingHelp = require('./PingHelp');
const types = require('./pinghelp_types');
const conn = thrift.createConnection('127.0.0.1', Number(process.argv[2]), {
  transport: thrift.TFramedTransport, protocol: thrift.TBinaryProtocol, connect_timeout: 5000});
conn.on('error', (e) => { console.error('connection error: ' + e); process.exit(1); });
const client = thrift.createClient(PingHelp, conn);
(async () => {
  const out = {ping: await client.ping(), help: await client.help(),
               helpFor: await client.helpFor('ping')};
  try {
    await client.helpFor('nope');
    out.unknown = null;
  } catch (e) {
    out.unknown = {isUnknownMethod: e instanceof types.UnknownMethod, name: e.name};
  }
  conn.end();
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(String(e)); process.exit(1); });
"""


def node_client(test, script):
    """Node and a work directory holding the npm `thrift` package, the code generated from the
    IDL and client.js (script); skips test when node, npm or the registry is missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        test.skipTest("node and npm are not installed: the Node client is not tried")
    work = tempfile.mkdtemp(prefix="thrift-node-", dir=test.tmp)
    r = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--no-save", "--silent",
                        NPM_THRIFT], cwd=work, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        test.skipTest(f"npm install {NPM_THRIFT} failed (no registry?): {r.stderr[-500:]}")
    subprocess.run(["thrift", "--gen", "js:node", "-out", work, IDL], check=True)
    with open(os.path.join(work, "client.js"), "w") as f:
        f.write(script)
    return node, work


def plain_client(test, port):
    """Apache Thrift's Python client for PingHelp (test.PingHelp), plain framed binary, as a local
    service's would be; closed at the end of the test."""
    from thrift.protocol import TBinaryProtocol
    from thrift.transport import TSocket, TTransport
    sock = TSocket.TSocket("127.0.0.1", port)
    sock.setTimeout(10_000)
    transport = TTransport.TFramedTransport(sock)
    transport.open()
    test.addCleanup(transport.close)
    return test.PingHelp.Client(TBinaryProtocol.TBinaryProtocol(transport))


def raw_connection(test, port):
    """A plain TCP connection for hand-made frames; closed at the end of the test."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    test.addCleanup(s.close)
    return s


def import_python_thrift():
    """Apache Thrift's Python library. Debian's python3-thrift lives in Debian's dist-packages,
    which another python3 on PATH (pyenv, a venv) does not search: look there last."""
    try:
        import thrift  # noqa: F401
    except ImportError:
        debian = "/usr/lib/python3/dist-packages"
        if not os.path.isdir(os.path.join(debian, "thrift")):
            return False
        sys.path.append(debian)
        try:
            import thrift  # noqa: F401,F811
        except ImportError:
            return False
    return True


def frame(payload):
    return struct.pack(">i", len(payload)) + payload


def call(name, seqid, args=b"\x00"):
    """A strict binary CALL message: version word, name, seqid, then the argument struct (by
    default an empty one: just the field stop)."""
    name = name.encode()
    return struct.pack(">Ii", 0x80010001, len(name)) + name + struct.pack(">i", seqid) + args


def read_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def read_reply(sock):
    """One framed reply: (message type, name, seqid, the rest of the message)."""
    (length,) = struct.unpack(">i", read_exact(sock, 4))
    body = read_exact(sock, length)
    version, name_len = struct.unpack(">Ii", body[:8])
    if version & 0xFFFF0000 != 0x80010000:
        raise AssertionError(f"not a strict binary reply: {body[:16]!r}")
    name = body[8:8 + name_len].decode()
    (seqid,) = struct.unpack(">i", body[8 + name_len:12 + name_len])
    return version & 0xFF, name, seqid, body[12 + name_len:]


def require_thrift():
    """The thrift compiler's path; skips the test class when it or the Python library is missing."""
    compiler = shutil.which("thrift")
    if not compiler:
        raise unittest.SkipTest("the thrift compiler is not installed (Debian: thrift-compiler, "
                                "deploy/install-deps.sh build)")
    if not import_python_thrift():
        raise unittest.SkipTest("Apache Thrift's Python library is not installed (Debian: "
                                "python3-thrift, deploy/install-deps.sh test)")
    return compiler


def generate_python(compiler, tmp):
    """pinghelp.thrift's Python code, generated into tmp: (PingHelp, ttypes)."""
    gen = os.path.join(tmp, "gen-py")
    os.makedirs(gen, exist_ok=True)
    subprocess.run([compiler, "--gen", "py", "-out", gen, IDL], check=True)
    sys.path.insert(0, gen)
    from pinghelp import PingHelp, ttypes
    return PingHelp, ttypes


class ThriftTest(SidecarTestCase):

    @classmethod
    def setUpClass(cls):
        if not PINGHELP:
            raise unittest.SkipTest("PINGHELP_BIN must be set (run through ctest)")
        compiler = require_thrift()
        super().setUpClass()
        cls.PingHelp, cls.ttypes = generate_python(compiler, cls.tmp)

    def start(self, *extra):
        p = self.spawn_serving("pinghelp", lambda ports: (
            [PINGHELP, "--listen", f"127.0.0.1:{ports[0]}", "--thrift-listen",
             f"127.0.0.1:{ports[1]}", *extra], None), 2)
        p.http, p.thrift = p.ports
        return p

    def client(self, port):
        return plain_client(self, port)

    def raw(self, port):
        return raw_connection(self, port)

    def http_help(self, p):
        with urllib.request.urlopen(f"http://127.0.0.1:{p.http}/help", timeout=10) as r:
            return json.loads(r.read())

    def assertClosedByServer(self, sock, within):
        sock.settimeout(within)
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return
        except socket.timeout:
            self.fail(f"the connection is still open after {within}s")
        self.assertEqual(data, b"", "expected the connection closed, got bytes")

    def as_dict(self, m):
        out = {"name": m.name, "method": m.method, "path": m.path, "description": m.description}
        if m.response is not None:
            out["response"] = dict(m.response)
        return out

    @staticmethod
    def expected(http_method):
        """A GET /help method as the Thrift struct carries it: the four strings, and the
        response object's values as strings (other JSON as its compact text)."""
        out = {k: http_method[k] for k in ("name", "method", "path", "description")}
        if isinstance(http_method.get("response"), dict):
            out["response"] = {k: v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
                               for k, v in http_method["response"].items()}
        return out

    # --- the interface --------------------------------------------------------------------------

    def test_ping_help_and_help_for_answer_as_http_help_does(self):
        p = self.start()
        c = self.client(p.thrift)
        self.assertEqual(c.ping(), "pong")
        http_methods = self.http_help(p)["methods"]
        self.assertGreaterEqual(len(http_methods), 2)
        want = [self.expected(m) for m in http_methods]
        self.assertEqual([self.as_dict(m) for m in c.help()], want)
        for m in want:
            self.assertEqual(self.as_dict(c.helpFor(m["name"])), m)
        with self.assertRaises(self.ttypes.UnknownMethod) as caught:
            c.helpFor("nope")
        self.assertEqual(caught.exception.name, "nope")
        self.assertEqual(c.ping(), "pong", "the connection serves on after the exception")

    def test_finagle_probe_gets_unknown_method_and_the_connection_goes_on(self):
        p = self.start()
        s = self.raw(p.thrift)
        probe = frame(call(PROBE, 0))
        self.assertEqual(len(probe), 44)
        s.sendall(probe)
        kind, name, seqid, rest = read_reply(s)
        self.assertEqual((kind, name, seqid), (3, PROBE, 0))  # 3: EXCEPTION
        # TApplicationException: field 1 message (string), field 2 type (i32) = 1 UNKNOWN_METHOD.
        self.assertIn(b"\x08\x00\x02\x00\x00\x00\x01", rest)
        s.sendall(frame(call("ping", -7)))  # a negative seqid is echoed as it is
        kind, name, seqid, rest = read_reply(s)
        self.assertEqual((kind, name, seqid), (2, "ping", -7))  # 2: REPLY
        self.assertEqual(rest, b"\x0b\x00\x00\x00\x00\x00\x04pong\x00")

    def test_node_client(self):
        node, work = node_client(self, NODE_CLIENT)
        p = self.start()
        r = subprocess.run([node, "client.js", str(p.thrift)], cwd=work, capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        got = json.loads(r.stdout)
        want = [self.expected(m) for m in self.http_help(p)["methods"]]
        self.assertEqual(got["ping"], "pong")
        self.assertEqual(got["help"], want)
        self.assertEqual(got["helpFor"], next(m for m in want if m["name"] == "ping"))
        self.assertEqual(got["unknown"], {"isUnknownMethod": True, "name": "nope"})

    # --- what is not a call ---------------------------------------------------------------------

    def test_bytes_that_are_not_a_thrift_call_close_only_their_connection(self):
        p = self.start()
        kept = self.client(p.thrift)
        self.assertEqual(kept.ping(), "pong")
        cases = {
            "HTTP (its first bytes read as a 1.2 GB frame)": b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n",
            "a huge frame length": struct.pack(">I", 0x7FFFFFFF) + b"\x80\x01",
            "one byte over the frame limit": struct.pack(">i", MAX_FRAME + 1),
            "a negative frame length": struct.pack(">i", -1),
            "a frame of text": frame(b"hello, are you Thrift?"),
            "an unversioned (non-strict) message": frame(b"\x00\x00\x00\x04ping\x01\x00\x00\x00\x01\x00"),
            "a compact-protocol call": frame(b"\x82\x21\x01\x04ping\x00"),
        }
        for what, data in cases.items():
            with self.subTest(what):
                s = self.raw(p.thrift)
                s.sendall(data)
                self.assertClosedByServer(s, 5 * SLOW)
        self.assertEqual(kept.ping(), "pong", "a connection opened before still serves")
        self.assertEqual(self.client(p.thrift).ping(), "pong", "and a new one too")
        self.assertIsNone(p.poll())
        self.assertIn("event=thrift_library", p.output())

    def test_a_frame_cut_short_waits_for_the_rest_and_then_answers(self):
        p = self.start()
        s = self.raw(p.thrift)
        data = frame(call("ping", 5))
        s.sendall(data[:6])
        time.sleep(0.3)
        s.sendall(data[6:])
        self.assertEqual(read_reply(s)[:3], (2, "ping", 5))

    def test_idle_connections_are_closed_after_the_idle_timeout(self):
        p = self.start("--idle-timeout", "300ms")
        s = self.raw(p.thrift)
        s.sendall(frame(call("ping", 1)))
        self.assertEqual(read_reply(s)[:3], (2, "ping", 1))
        started = time.monotonic()
        self.assertClosedByServer(s, 10 * SLOW)
        self.assertGreaterEqual(time.monotonic() - started, 0.2)

    # --- concurrency and lifecycle --------------------------------------------------------------

    def test_two_clients_at_once(self):
        p = self.start()
        clients = [self.client(p.thrift), self.client(p.thrift)]
        # Both connected: interleave calls one by one, then hammer both from two threads.
        self.assertEqual(clients[0].ping(), "pong")
        self.assertEqual(clients[1].helpFor("ping").path, "/ping")
        self.assertEqual(clients[0].helpFor("help").name, "help")
        errors, start = [], threading.Barrier(2)

        def run(c, n):
            try:
                start.wait(timeout=10)
                for i in range(200):
                    if i % 2:
                        assert c.ping() == "pong"
                    else:
                        assert [m.name for m in c.help()] == ["help", "ping"]
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(f"client {n}: {e!r}")

        threads = [threading.Thread(target=run, args=(c, n)) for n, c in enumerate(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60 * SLOW)
        self.assertEqual(errors, [])

    def test_sigterm_stops_both_sides_and_closes_thrift_connections(self):
        p = self.start()
        c = self.client(p.thrift)
        self.assertEqual(c.ping(), "pong")
        # Apache Thrift's listener sets TCP_DEFER_ACCEPT: a connection is only accepted (and
        # only then closed at exit) once it has sent something.
        idle = self.raw(p.thrift)
        idle.sendall(frame(call("ping", 1)))
        self.assertEqual(read_reply(idle)[:3], (2, "ping", 1))
        p.send(signal.SIGTERM)
        self.assertEqual(p.wait(timeout=10 * SLOW), 0)
        self.assertClosedByServer(idle, 5)
        self.assertIn("event=stopped service=pinghelp", p.output())

    def test_bad_flag_values_name_the_flag_and_exit_2(self):
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            in_use = busy.getsockname()[1]
            for value in ("nothing", "localhost:9090", "127.0.0.1:99999",
                          f"127.0.0.1:{in_use}"):
                with self.subTest(value):
                    r = subprocess.run([PINGHELP, "--listen", "127.0.0.1:0", "--thrift-listen",
                                        value], capture_output=True, text=True, timeout=30)
                    self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
                    lines = r.stderr.strip().splitlines()
                    self.assertEqual(len(lines), 1, r.stderr)
                    self.assertIn("--thrift-listen", lines[0])
                    self.assertIn(value, lines[0])
                    self.assertNotIn("event=started", r.stdout)


if __name__ == "__main__":
    unittest.main()
