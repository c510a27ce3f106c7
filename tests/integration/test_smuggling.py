"""Request smuggling and malformed HTTP: each request is either refused with 400 before anything
reaches the local service, or forwarded in exactly one reading. A strict recording upstream
(recorder.py) shows what the local service actually received."""
import re
import socket
import ssl
import time
import unittest

from harness import SLOW, SidecarTestCase
from recorder import Recorder

H = b"Host: svc\r\n"
# How long a caller waits for the close that must follow an answer (an error answer, HTTP/1.0
# without keep-alive). Waiting for a close that does not come costs this long; one that comes
# ends the wait at once. Sanitized builds close later.
CLOSING = 5.0 * SLOW


class Exchange:
    """What came back on one caller connection."""

    def __init__(self, responses, closed):
        self.responses, self.closed = responses, closed

    @property
    def statuses(self):
        return [s for s, _, _ in self.responses]


def read_responses(sock, count, timeout=5.0, close_wait=0.3):
    """Reads up to count final responses (1xx included in the list); stops early on close, or on
    timeout seconds of silence (then closed is False: a connection that stalls is not closed).
    After the last one it waits close_wait seconds for the connection to close."""
    sock.settimeout(timeout)
    buf, out = b"", []
    while len([r for r in out if r[0] >= 200]) < count:
        while b"\r\n\r\n" not in buf:
            data = _recv(sock)
            if not data:
                return Exchange(out, data is not None)
            buf += data
        head, _, buf = buf.partition(b"\r\n\r\n")
        status = int(head.split(b" ")[1])
        headers = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            headers[name.decode().lower()] = value.strip().decode()
        body = b""
        if status >= 200:
            length = int(headers.get("content-length", "0"))
            while len(buf) < length:
                data = _recv(sock)
                if not data:
                    return Exchange(out + [(status, headers, buf)], data is not None)
                buf += data
            body, buf = buf[:length], buf[length:]
        out.append((status, headers, body))
    sock.settimeout(close_wait)
    return Exchange(out, _recv(sock) == b"")


def _recv(sock):
    """The next bytes; b"" once the peer closed or reset (or a TLS error after its close); None
    when nothing came for the socket's timeout."""
    try:
        return sock.recv(65536)
    except socket.timeout:  # before OSError: a timeout is an OSError too, but nothing closed
        return None
    except OSError:  # ConnectionResetError, ssl.SSLError (SSLEOFError after a bare close) alike
        return b""


def send_all_or_refused(sock, raw):
    """Writes raw; a peer that refuses a request may close before it has read it all (a 200 KB
    chunk extension is refused once about 84 KiB of it are buffered). That is its right: the write breaking off is not an
    error, and whatever it answered is still read afterwards. True if every byte was written."""
    try:
        sock.sendall(raw)
        return True
    except (ssl.SSLError, ConnectionError):  # EOF in TLS, EPIPE, ECONNRESET, ECONNABORTED
        return False


class SmugglingTest(SidecarTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.recorder = Recorder()

    @classmethod
    def tearDownClass(cls):
        cls.recorder.close()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.recorder.clear()
        self.sc = self.start_sidecar(self.recorder.port, "--workers", "1")

    def send(self, raw, count=1, shut_write=False, close_wait=0.3):
        """Writes raw on a new connection and reads count answers. Any write may be cut off by
        a sidecar that refuses early; what it answered is read all the same."""
        with self.tls_socket(self.sc.port) as s:
            if send_all_or_refused(s, raw) and shut_write:
                try:
                    socket.socket.shutdown(s, socket.SHUT_WR)
                except OSError:  # the sidecar closed first: its answer is still to be read
                    pass
            return read_responses(s, count, close_wait=close_wait)

    def received(self, settle=0.3):
        time.sleep(settle)
        requests, errors = self.recorder.snapshot()
        self.assertEqual(errors, [], "the local service got something ambiguous")
        return requests

    def assertRefused(self, raw, status=400):
        before = self.metric(self.sc, "sidecar_local_replies_total", status=str(status))
        ex = self.send(raw, close_wait=CLOSING)
        self.assertEqual(ex.statuses, [status], f"for {raw!r}")
        self.assertTrue(ex.closed, "an error answer closes the connection")
        self.assertEqual(self.received(), [], f"{raw!r} must not reach the local service")
        self.assertEqual(self.metric(self.sc, "sidecar_local_replies_total", status=str(status)),
                         before + 1, "every refusal is counted")

    # --- framing -----------------------------------------------------------------------------

    def test_length_and_chunked_together(self):
        self.assertRefused(b"POST /a HTTP/1.1\r\n" + H +
                           b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        self.assertRefused(b"POST /a HTTP/1.1\r\n" + H +
                           b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n")

    def test_duplicate_or_differing_content_length(self):
        for lengths in (b"Content-Length: 3\r\nContent-Length: 3\r\n",
                        b"Content-Length: 3\r\nContent-Length: 4\r\n",
                        b"Content-Length: 3, 3\r\n", b"Content-Length: 3,4\r\n"):
            self.assertRefused(b"POST /a HTTP/1.1\r\n" + H + lengths + b"\r\nabcd")

    def test_malformed_content_length(self):
        for value in (b"+3", b"-1", b"0x3", b"3 3", b"", b"99999999999999999999999"):
            self.assertRefused(b"POST /a HTTP/1.1\r\n" + H + b"Content-Length: " + value +
                               b"\r\n\r\nabc")

    def test_transfer_encoding_other_than_chunked(self):
        for coding in (b"gzip", b"gzip, chunked", b"chunked, gzip", b"xchunked", b"chunked;q=1",
                       b"identity"):
            self.assertRefused(b"POST /a HTTP/1.1\r\n" + H + b"Transfer-Encoding: " + coding +
                               b"\r\n\r\n0\r\n\r\n")
        self.assertRefused(b"POST /a HTTP/1.1\r\n" + H +
                           b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")

    def test_transfer_encoding_in_http10(self):
        self.assertRefused(b"POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")

    def test_chunked_body_is_forwarded_reframed(self):
        ex = self.send(b"POST /c HTTP/1.1\r\n" + H + b"Transfer-Encoding: Chunked\r\n\r\n"
                       b"3;name=value\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n")
        self.assertEqual(ex.statuses, [200])
        [req] = self.received()
        self.assertEqual(req["body"], b"abcde")

    def test_invalid_chunk_sizes(self):
        for size in (b"zz", b"-1", b"0x5", b"ffffffffffffffffff", b" 5", b""):
            ex = self.send(b"POST /c HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n" +
                           size + b"\r\nabcde\r\n0\r\n\r\n", close_wait=CLOSING)
            self.assertIn(ex.statuses, ([400], []), f"chunk size {size!r}")
            self.assertTrue(ex.closed)
            requests = self.received()
            self.assertEqual(requests, [], f"chunk size {size!r}: no complete request upstream")

    def test_chunk_extension_too_long(self):
        ex = self.send(b"POST /c HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
                       b"5;" + b"e" * 200000 + b"\r\nabcde\r\n0\r\n\r\n", close_wait=CLOSING)
        self.assertIn(ex.statuses, ([400], [413], []))
        self.assertTrue(ex.closed)
        self.assertEqual(self.received(), [])

    # --- the head ----------------------------------------------------------------------------

    def test_obsolete_line_folding(self):
        self.assertRefused(b"GET /a HTTP/1.1\r\n" + H + b"X-A: one\r\n two\r\n\r\n")
        self.assertRefused(b"GET /a HTTP/1.1\r\n" + H + b"X-A: one\r\n\ttwo\r\n\r\n")
        self.assertRefused(b"\r\n\r\nGET /a HTTP/1.1\r\n" + H + b"X-A: one\r\n two\r\n\r\n")
        # The fold arriving in a later TLS record than the line it continues.
        with self.tls_socket(self.sc.port) as s:
            s.sendall(b"GET /a HTTP/1.1\r\n" + H + b"X-A: one\r\n")
            time.sleep(0.1)
            s.sendall(b" two\r\n\r\n")
            self.assertEqual(read_responses(s, 1).statuses, [400])
        self.assertEqual(self.received(), [])

    def test_bare_lf_and_bare_cr(self):
        self.assertRefused(b"GET /a HTTP/1.1\n" + H.replace(b"\r\n", b"\n") + b"\n")
        self.assertRefused(b"GET /a HTTP/1.1\r\n" + H + b"X-A: 1\n\r\n")
        self.assertRefused(b"GET /a HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n")

    def test_control_bytes(self):
        self.assertRefused(b"GET /a\x00b HTTP/1.1\r\n" + H + b"\r\n")
        self.assertRefused(b"GET /a\x01b HTTP/1.1\r\n" + H + b"\r\n")
        for byte in (b"\x00", b"\x01", b"\x1b", b"\x7f"):
            self.assertRefused(b"GET /a HTTP/1.1\r\n" + H + b"X-A: a" + byte + b"b\r\n\r\n")

    def test_malformed_request_lines_and_names(self):
        for raw in (b"GET /a b HTTP/1.1\r\n" + H + b"\r\n",
                    b"GET  /a HTTP/1.1\r\n" + H + b"\r\n",
                    b"GET /a HTTP/1.1\r\n" + H + b"Content-Length : 0\r\n\r\n",
                    b"GET /a HTTP/1.1\r\n" + H + b"X@A: 1\r\n\r\n",
                    b"GET /a HTTP/1.1\r\n" + H + b" X-A: 1\r\n\r\n"):
            self.assertRefused(raw)

    def test_host_missing_or_repeated(self):
        self.assertRefused(b"GET /a HTTP/1.1\r\n\r\n")
        self.assertRefused(b"GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")

    def test_host_that_is_not_host_port_is_refused(self):
        # RFC 9110 7.2: uri-host [":" port]. The local service never sees a made-up Host.
        for host in (b"a b", b"u@evil", b"", b"a/b", b"svc:80:80", b"[::1"):
            self.assertRefused(b"GET /a HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")

    def test_http09(self):
        ex = self.send(b"GET /\r\n\r\n", close_wait=CLOSING)
        self.assertIn(ex.statuses, ([400], []))
        self.assertTrue(ex.closed)
        self.assertEqual(self.received(), [])

    def test_absolute_form_becomes_origin_form(self):
        ex = self.send(b"GET http://example.com:81/p?q=1 HTTP/1.1\r\nHost: other\r\n\r\n")
        self.assertEqual(ex.statuses, [200])
        [req] = self.received()
        self.assertEqual(req["target"], "/p?q=1")
        self.assertEqual([v for n, v in req["headers"] if n.lower() == "host"], ["example.com:81"])
        self.recorder.clear()
        ex = self.send(b"GET https://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n")
        self.assertEqual(ex.statuses, [200])
        self.assertEqual(self.received()[0]["target"], "/")

    def test_odd_targets_refused(self):
        self.assertRefused(b"GET ftp://example.com/p HTTP/1.1\r\n" + H + b"\r\n")
        self.assertRefused(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        self.assertRefused(b"GET p HTTP/1.1\r\n" + H + b"\r\n")

    def test_asterisk_form_options(self):
        ex = self.send(b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n")
        self.assertEqual(ex.statuses, [200])
        self.assertEqual(self.received()[0]["target"], "*")

    # --- connection handling -----------------------------------------------------------------

    def test_expect_continue(self):
        with self.tls_socket(self.sc.port) as s:
            s.sendall(b"POST /e HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n")
            s.settimeout(5)
            self.assertTrue(s.recv(4096).startswith(b"HTTP/1.1 100 Continue\r\n\r\n"))
            s.sendall(b"hello")
            ex = read_responses(s, 1)
        self.assertEqual(ex.statuses, [200])
        [req] = self.received()
        self.assertEqual(req["body"], b"hello")
        self.assertNotIn("expect", [n.lower() for n, _ in req["headers"]])

    def test_http10_keep_alive(self):
        ex = self.send(b"GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                       b"GET /2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", count=2)
        self.assertEqual(ex.statuses, [200, 200])
        self.assertEqual(ex.responses[0][1].get("connection", "").lower(), "keep-alive")
        self.assertFalse(ex.closed)
        reqs = self.received()
        self.assertEqual([r["target"] for r in reqs], ["/1", "/2"])
        self.assertEqual([r["version"] for r in reqs], ["HTTP/1.1"] * 2)
        # HTTP/1.1 needs a Host: the local service's address stands in for the missing one.
        self.assertEqual([[v for n, v in r["headers"] if n.lower() == "host"] for r in reqs],
                         [[f"127.0.0.1:{self.recorder.port}"]] * 2)
        self.recorder.clear()
        ex = self.send(b"GET /3 HTTP/1.0\r\n\r\n", close_wait=CLOSING)
        self.assertEqual(ex.statuses, [200])
        self.assertTrue(ex.closed, "HTTP/1.0 without keep-alive closes after the answer")

    def test_pipelined_requests_answered_in_order(self):
        ex = self.send(b"GET /1 HTTP/1.1\r\n" + H + b"\r\n"
                       b"POST /2 HTTP/1.1\r\n" + H + b"Content-Length: 3\r\n\r\nabc"
                       b"POST /3 HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"
                       b"GET /4 HTTP/1.1\r\n" + H + b"\r\n", count=4)
        self.assertEqual(ex.statuses, [200] * 4)
        self.assertEqual([b for _, _, b in ex.responses], [b"seen 1", b"seen 2", b"seen 3", b"seen 4"])
        reqs = self.received()
        self.assertEqual([(r["target"], r["body"]) for r in reqs],
                         [("/1", b""), ("/2", b"abc"), ("/3", b"x"), ("/4", b"")])

    def test_client_half_close(self):
        ex = self.send(b"POST /h HTTP/1.1\r\n" + H + b"Content-Length: 2\r\n\r\nhi", shut_write=True)
        self.assertEqual(ex.statuses, [200])
        self.assertEqual(ex.responses[0][2], b"seen 1")
        self.assertEqual(self.received()[0]["body"], b"hi")

    # --- the local service's answers -----------------------------------------------------------

    def test_malformed_upstream_response_is_502(self):
        for kind in ("garbage", "two-lengths", "length-and-chunked", "bad-status", "nul-in-header",
                     "truncated-head", "bare-lf"):
            ex = self.send(b"GET /bad-response/" + kind.encode() + b" HTTP/1.1\r\n" + H + b"\r\n")
            self.assertEqual(ex.statuses, [502], kind)
        self.assertGreaterEqual(self.metric(self.sc, "sidecar_local_replies_total", status="502"), 7)


if __name__ == "__main__":
    unittest.main()
