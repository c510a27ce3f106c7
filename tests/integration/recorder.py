"""A raw local service that parses strictly and records every request it receives.

It runs in the test's own process, on a loopback port of its own. Its parser is deliberately
strict: whatever the sidecar forwards must have exactly one reading, so anything ambiguous
(two lengths, an unknown transfer coding, a bare LF, a control byte) is recorded in `errors`
instead of `requests`, and the connection is closed. A request that breaks off before its end
(the sidecar streams bodies, so a caller's malformed chunk arrives after the head went out) is
counted in `truncated`: incomplete, but never read two ways.

Answers: "HTTP/1.1 200 OK" with the body "seen N" (N counts requests from 1), except for targets
under /bad-response/, which answer with the malformed response that the rest of the path names.
"""
import re
import socket
import threading

TOKEN = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

BAD_RESPONSES = {
    "garbage": b"this is not http\r\n\r\n",
    "two-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nokk",
    "length-and-chunked": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    "bad-status": b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok",
    "nul-in-header": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok",
    "truncated-head": b"HTTP/1.1 200 OK\r\nContent-Le",
    "bare-lf": b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
}


class Recorder:
    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.requests = []
        self.errors = []
        self.truncated = 0
        self.lock = threading.Lock()
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass

    def clear(self):
        with self.lock:
            self.requests.clear()
            self.errors.clear()
            self.truncated = 0

    def snapshot(self):
        with self.lock:
            return list(self.requests), list(self.errors)

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        reader = _Reader(conn)
        try:
            while True:
                req = self._read_request(reader)
                if req is None:
                    return
                with self.lock:
                    self.requests.append(req)
                    n = len(self.requests)
                target = req["target"]
                if target.startswith("/bad-response/"):
                    conn.sendall(BAD_RESPONSES[target.split("/")[2]])
                    conn.close()
                    return
                body = b"seen %d" % n
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        except _Truncated:
            with self.lock:
                self.truncated += 1
            conn.close()
        except _Bad as e:
            with self.lock:
                self.errors.append(str(e))
            conn.close()
        except OSError:
            conn.close()

    def _read_request(self, r):
        head = r.until(b"\r\n\r\n")
        if head is None:
            return None
        lines = head[:-4].split(b"\r\n")
        for line in lines:
            if b"\n" in line or b"\r" in line:
                raise _Bad(f"bare CR or LF in {line!r}")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or not re.match(rb"^HTTP/1\.[01]$", parts[2]):
            raise _Bad(f"request line {lines[0]!r}")
        method, target, version = (p.decode("latin-1") for p in parts)
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not TOKEN.match(name):
                raise _Bad(f"header line {line!r}")
            value = value.strip(b" \t")
            if CTL.search(value):
                raise _Bad(f"control byte in {line!r}")
            headers.append((name.decode("latin-1"), value.decode("latin-1")))
        lengths = [v for n, v in headers if n.lower() == "content-length"]
        codings = [v for n, v in headers if n.lower() == "transfer-encoding"]
        if lengths and codings:
            raise _Bad("both Content-Length and Transfer-Encoding")
        if len(lengths) > 1 or len(codings) > 1:
            raise _Bad(f"repeated framing header {lengths or codings}")
        body = b""
        if codings:
            if codings[0].lower() != "chunked":
                raise _Bad(f"transfer coding {codings[0]!r}")
            while True:
                line = r.until(b"\r\n")
                if line is None:
                    raise _Truncated()
                size = line[:-2].split(b";")[0]
                if not re.match(rb"^[0-9A-Fa-f]{1,16}$", size):
                    raise _Bad(f"chunk size {line!r}")
                size = int(size, 16)
                if size == 0:
                    trailer = r.until(b"\r\n")
                    while trailer not in (b"\r\n", None):
                        trailer = r.until(b"\r\n")
                    break
                data = r.exactly(size + 2)
                if data is None:
                    raise _Truncated()
                if data[-2:] != b"\r\n":
                    raise _Bad("chunk data")
                body += data[:-2]
        elif lengths:
            if not re.match(r"^[0-9]{1,18}$", lengths[0]):
                raise _Bad(f"Content-Length {lengths[0]!r}")
            body = r.exactly(int(lengths[0]))
            if body is None:
                raise _Truncated()
        return {"method": method, "target": target, "version": version, "headers": headers,
                "body": body}


class _Bad(Exception):
    pass


class _Truncated(Exception):
    pass


class _Reader:
    def __init__(self, conn):
        self.conn, self.buf = conn, b""

    def _fill(self):
        data = self.conn.recv(65536)
        if not data:
            return False
        self.buf += data
        return True

    def until(self, marker):
        while marker not in self.buf:
            if not self._fill():
                if self.buf:
                    raise _Truncated()
                return None
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def exactly(self, n):
        while len(self.buf) < n:
            if not self._fill():
                return None
        out, self.buf = self.buf[:n], self.buf[n:]
        return out
