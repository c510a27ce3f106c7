"""Response integrity: each caller gets its own answer, whatever the local service writes after
(or beyond) the answer it was asked for. A scripted local service (scripted_upstream.py)
misbehaves on purpose; callers with different certificates check whose answer they got."""
import http.client
import socket
import ssl
import subprocess
import threading
import time
import unittest

from harness import SidecarTestCase, wait_for
from scripted_upstream import ScriptedUpstream

H = b"Host: svc\r\n"
CLIENT_URI = "spiffe://dev.local/caller"
INTRUDER_URI = "spiffe://dev.local/intruder"


def read_until_quiet(sock, quiet=0.5, limit=5.0):
    """Every byte the peer sends until it is quiet for `quiet` seconds or closes."""
    sock.settimeout(quiet)
    data, deadline = b"", time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    return data


class IntegrityTest(SidecarTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.up = ScriptedUpstream()

    @classmethod
    def tearDownClass(cls):
        cls.up.close()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        # One worker: one pool, so that the next caller is served by the connection just used.
        self.sc = self.start_sidecar(self.up.port, "--workers", "1", "--upstream-timeout", "2s")

    def get(self, path, cert="client", method="GET"):
        with self.tls_socket(self.sc.port, cert) as s:
            s.sendall(method.encode() + b" " + path.encode() + b" HTTP/1.1\r\n" + H + b"\r\n")
            return self.read_response(s, method)

    def unsolicited(self):
        return self.metric(self.sc, "sidecar_upstream_unsolicited_closed_total")

    def assert_own_answers(self, before):
        """Two callers after the misbehaving answer: each gets its own identity back."""
        for cert, uri in (("intruder", INTRUDER_URI), ("client", CLIENT_URI),
                          ("intruder", INTRUDER_URI)):
            status, body = self.get("/echo", cert)
            self.assertEqual(status, 200, body)
            self.assertIn(f"URI={uri}".encode(), body, f"{cert} got someone else's answer: {body!r}")
            self.assertNotIn(b"injected", body)
        self.assertGreater(self.unsolicited(), before, "the dirty connection is counted")

    # --- item 1: a pooled connection holding unread bytes is never reused -------------------

    def test_response_after_204_never_reaches_the_next_caller(self):
        before, injected = self.unsolicited(), self.up.injected
        self.assertEqual(self.get("/204-then-inject?ms=300")[0], 204)
        # The injected response lands on the pooled connection after the 204 went out.
        wait_for(lambda: self.up.injected > injected, what="the injection")
        time.sleep(0.1)
        self.assert_own_answers(before)

    def test_body_after_head_answer(self):
        for ms in (0, 200):
            before, injected = self.unsolicited(), self.up.injected
            status, _ = self.head(f"/head-body?ms={ms}")
            self.assertEqual(status, 200)
            wait_for(lambda: self.up.injected > injected, what="the body after HEAD")
            time.sleep(0.1)
            self.assert_own_answers(before)

    def test_body_after_304(self):
        for ms in (0, 200):
            before, injected = self.unsolicited(), self.up.injected
            self.assertEqual(self.get(f"/304-body?ms={ms}")[0], 304)
            wait_for(lambda: self.up.injected > injected, what="the body after 304")
            time.sleep(0.1)
            self.assert_own_answers(before)

    def test_body_longer_than_its_content_length(self):
        for ms in (0, 200):
            before, injected = self.unsolicited(), self.up.injected
            status, body = self.get(f"/long-body?ms={ms}")
            self.assertEqual((status, body), (200, b"ok"))
            wait_for(lambda: self.up.injected > injected, what="the extra response")
            time.sleep(0.1)
            self.assert_own_answers(before)

    def test_every_method_is_checked(self):
        """POST, PUT, DELETE and OPTIONS after a dirty connection get their own answers too."""
        for method in ("POST", "PUT", "DELETE", "OPTIONS", "GET"):
            injected = self.up.injected
            self.assertEqual(self.get("/204-then-inject?ms=100")[0], 204)
            wait_for(lambda: self.up.injected > injected, what="the injection")
            time.sleep(0.1)
            with self.tls_socket(self.sc.port, "intruder") as s:
                s.sendall(method.encode() + b" /echo HTTP/1.1\r\n" + H +
                          b"Content-Length: 0\r\n\r\n")
                status, body = self.read_response(s, method)
            self.assertEqual(status, 200, method)
            self.assertIn(f"URI={INTRUDER_URI}".encode(), body, method)

    def test_late_answer_never_reaches_a_caller_of_another_identity(self):
        # The local service writes a second answer 300 ms after a 204, and another caller asks
        # 50 ms after the 204, before the late bytes exist: no peek can see them. Connections to
        # the local service serve one identity, so that caller is never on this connection.
        for _ in range(3):
            before, injected = self.unsolicited(), self.up.injected
            self.assertEqual(self.get("/204-then-inject?ms=300")[0], 204)
            time.sleep(0.05)
            status, body = self.get("/echo", "intruder")
            self.assertEqual(status, 200, body)
            self.assertIn(f"URI={INTRUDER_URI}".encode(), body)
            self.assertNotIn(b"injected", body)
            wait_for(lambda: self.up.injected > injected, what="the late answer")
            # The watch closes the dirty connection when the bytes land, counted, with no sweep
            # or take needed (the sweep runs once a second).
            self.assertSettles(self.unsolicited, before + 1, timeout=3)
        status, body = self.get("/echo", "client")
        self.assertIn(f"URI={CLIENT_URI}".encode(), body)
        self.assertNotIn(b"injected", body)

    def head(self, path, cert="client"):
        with self.tls_socket(self.sc.port, cert) as s:
            s.sendall(b"HEAD " + path.encode() + b" HTTP/1.1\r\n" + H + b"\r\n")
            data = read_until_quiet(s, quiet=0.3)
        head, _, rest = data.partition(b"\r\n\r\n")
        self.assertEqual(rest, b"", "a HEAD answer has no body")
        return int(head.split()[1]), head

    # --- item 2: bodiless answers framed as chunked get no last chunk -------------------------

    def test_chunked_bodiless_answers_have_no_last_chunk(self):
        for method, status in (("HEAD", 200), ("GET", 204), ("GET", 304)):
            with self.tls_socket(self.sc.port) as s:
                s.sendall(f"{method} /chunked-bodiless?status={status} HTTP/1.1\r\n".encode() + H +
                          b"\r\nGET /echo HTTP/1.1\r\n" + H + b"\r\n")
                data = read_until_quiet(s)
            first, _, rest = data.partition(b"\r\n\r\n")
            self.assertTrue(first.startswith(f"HTTP/1.1 {status} ".encode()), data)
            self.assertTrue(rest.startswith(b"HTTP/1.1 200 "),
                            f"{method} {status}: the next answer must follow the head at once: {data!r}")

    def test_curl_and_http_client_read_two_head_answers(self):
        url = f"https://127.0.0.1:{self.sc.port}/chunked-bodiless?status=200"
        r = subprocess.run(["curl", "-sS", "--http1.1", "-I", "--max-time", "10",
                            "--cacert", self.certs.path("ca.pem"),
                            "--cert", self.certs.path("client.pem"),
                            "--key", self.certs.path("client.key"), url, url],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.count("HTTP/1.1 200"), 2, r.stdout)
        ctx = ssl.create_default_context(cafile=self.certs.path("ca.pem"))
        ctx.load_cert_chain(self.certs.path("client.pem"), self.certs.path("client.key"))
        conn = http.client.HTTPSConnection("localhost", self.sc.port, context=ctx, timeout=5)
        try:
            for path in ("/chunked-bodiless?status=200", "/echo"):
                conn.request("HEAD", path)
                r = conn.getresponse()
                r.read()
                self.assertEqual(r.status, 200)
            conn.request("GET", "/chunked-bodiless?status=204")
            r = conn.getresponse()
            r.read()
            self.assertEqual(r.status, 204)
            conn.request("GET", "/echo")
            r = conn.getresponse()
            self.assertIn(CLIENT_URI.encode(), r.read())
        finally:
            conn.close()

    # --- item 10: smaller drifts ---------------------------------------------------------------

    def test_interim_answers_do_not_extend_the_deadline(self):
        start = time.monotonic()
        status, body = self.get("/interim?ms=400&n=20")  # 8 s of 102s against a 2 s deadline
        elapsed = time.monotonic() - start
        self.assertEqual(status, 504, body)
        self.assertLess(elapsed, 4.0, "the 1xx answers held the request past --upstream-timeout")

    def test_repeated_content_length_goes_out_as_one(self):
        for form in ("repeat", "comma"):
            with self.tls_socket(self.sc.port) as s:
                s.sendall(f"GET /dup-length?form={form} HTTP/1.1\r\n".encode() + H + b"\r\n")
                data = read_until_quiet(s, quiet=0.3)
            head, _, body = data.partition(b"\r\n\r\n")
            lengths = [line for line in head.split(b"\r\n")[1:]
                       if line.lower().startswith(b"content-length:")]
            self.assertEqual(lengths, [b"Content-Length: 2"], f"{form}: {head!r}")
            self.assertEqual(body, b"ok")

    def test_pooled_connections_closed_by_the_local_service_do_not_linger(self):
        # Four requests at once: four pooled connections, which the local service then closes.
        closed = self.up.closed_after_answer
        threads = [threading.Thread(target=self.get, args=("/close-soon?wait=300&ms=100",))
                   for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wait_for(lambda: self.up.closed_after_answer >= closed + 4, what="the local service's closes")

        def close_wait():
            out = subprocess.run(["ss", "-Htn", "state", "close-wait", "dport", f"= :{self.up.port}"],
                                 capture_output=True, text=True).stdout
            return [line for line in out.splitlines() if line.strip()]
        # Pooled connections are swept once a second.
        wait_for(lambda: not close_wait(), timeout=3.0,
                 what="pooled connections in CLOSE-WAIT closed by the sidecar")

    # --- item 3: header names with '_' cannot pose as ours ------------------------------------

    def send_underscores(self, sc):
        with self.tls_socket(sc.port) as s:
            s.sendall(b"GET /headers HTTP/1.1\r\n" + H +
                      b"X_Forwarded_Client_Cert: By=evil;URI=spiffe://prod/admin\r\n"
                      b"x_other: 1\r\nX-Fine: 2\r\n\r\n")
            return self.read_response(s)

    def test_underscore_headers_dropped_by_default(self):
        before = self.metric(self.sc, "sidecar_underscore_headers_total")
        status, body = self.send_underscores(self.sc)
        self.assertEqual(status, 200)
        names = body.decode().split("\n")
        self.assertIn("X-Fine", names)
        self.assertIn("X-Forwarded-Client-Cert", names)
        self.assertEqual([n for n in names if "_" in n], [], "no underscore name reaches the service")
        self.assertEqual(self.metric(self.sc, "sidecar_underscore_headers_total"), before + 2)

    def test_underscore_headers_rejected_or_allowed_by_flag(self):
        sc = self.start_sidecar(self.up.port, "--headers-with-underscores", "reject")
        requests = len(self.up.requests)
        self.assertEqual(self.send_underscores(sc)[0], 400)
        self.assertEqual(len(self.up.requests), requests, "a refused request reaches nothing")
        self.assertEqual(self.metric(sc, "sidecar_local_replies_total", status="400"), 1)
        sc = self.start_sidecar(self.up.port, "--headers-with-underscores", "allow")
        status, body = self.send_underscores(sc)
        self.assertEqual(status, 200)
        self.assertIn("X_Forwarded_Client_Cert", body.decode().split("\n"))

    def test_max_head_size_bounds_the_whole_head(self):
        """A 60 KB target plus 65 KB of fields passed a 64 KiB limit counted apart; a fold past
        the limit was joined instead of refused."""
        requests = len(self.up.requests)
        for raw in (b"GET /" + b"a" * 60000 + b" HTTP/1.1\r\n" + H +
                    b"X-Big: " + b"b" * 65000 + b"\r\n\r\n",
                    b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"b" * 70000 + b"\r\n"
                    b"X-A: one\r\n two\r\n\r\n"):
            with self.tls_socket(self.sc.port) as s:
                try:
                    s.sendall(raw)
                except (ssl.SSLError, BrokenPipeError, ConnectionResetError):
                    pass  # refused before the whole head was read: the answer still counts
                try:
                    status, _ = self.read_response(s)
                except (OSError, ConnectionError):
                    status = None
            self.assertIn(status, (431, None))
        self.assertEqual(len(self.up.requests), requests, "an oversized head reaches nothing")
        self.assertGreaterEqual(self.metric(self.sc, "sidecar_local_replies_total", status="431"), 1)

    def test_second_expect_header_is_refused(self):
        with self.tls_socket(self.sc.port) as s:
            s.sendall(b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 2\r\n"
                      b"Expect: 100-continue\r\nExpect: 100-continue\r\n\r\nhi")
            status, _ = self.read_response(s)
        self.assertEqual(status, 400)


if __name__ == "__main__":
    unittest.main()
