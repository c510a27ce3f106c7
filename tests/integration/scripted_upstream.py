"""A raw local service that misbehaves on request, in the test's own process.

Each request is answered by the behaviour its path names; most of them break HTTP/1.1 on
purpose after (or while) answering, the way a buggy or hostile local service would:

/echo               200, body "xfcc=<X-Forwarded-Client-Cert>;conn=<connection number>"
/headers            200, body: the names of the header fields received, one per line
/204-then-inject    204, then (after ?ms=300) a second, unasked-for 200 "injected" response
/head-body          to HEAD: a head saying Content-Length: 8, then a body "injected" anyway
/304-body           304 with Content-Length: 8 and the 8 bytes of a body
/long-body          200 with Content-Length: 2, "ok", then an unasked-for 200 "injected"
/chunked-bodiless   ?status=204|304|200 with Transfer-Encoding: chunked and no body (for HEAD)
/interim            102 Processing every ?ms=500 for ?n=20 times, then 200 "late"
/dup-length         ?form=repeat: two identical Content-Length fields; ?form=comma: "2, 2"
/close-soon         after ?wait=0 ms, 200 "bye"; then closes the connection ?ms=100 later
/drop-unanswered    no answer: the connection closes once the request was read
/one-write          the head and the whole body in one send: ?form=chunked (three chunks and a
                    trailer), ?form=big (?bytes=200000 of Content-Length body), ?form=badchunk
                    (a chunk size that is not hex, then the connection stays open),
                    ?form=badlater (the same, the bad chunk 300 ms after the rest)

Every connection is counted, and `injected` counts the unasked-for responses written.
"""
import socket
import threading
import time
from urllib.parse import parse_qs, urlparse


class ScriptedUpstream:
    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.connections = 0
        self.injected = 0
        self.closed_after_answer = 0
        self.requests = []  # (connection number, method, target)
        self.conns = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.closed = True
        self.sock.close()
        for c in list(self.conns):
            try:
                c.close()
            except OSError:
                pass

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                number = self.connections
                self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn, number), daemon=True).start()

    def _serve(self, conn, number):
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                names = []
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                    names.append(name)
                headers["\0names"] = "\n".join(names)
                length = int(headers.get("content-length", "0"))
                while len(buf) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                buf = buf[length:]
                with self.lock:
                    self.requests.append((number, method, target))
                if not self._answer(conn, number, method, target, headers):
                    return
        except OSError:
            pass
        finally:
            conn.close()

    def _inject(self, conn, extra):
        conn.sendall(extra)
        with self.lock:
            self.injected += 1

    def _answer(self, conn, number, method, target, headers):
        url = urlparse(target)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        ms = int(q.get("ms", "0")) / 1000.0
        injected = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\ninjected"
        path = url.path
        if path == "/204-then-inject":
            conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
            time.sleep(ms or 0.3)
            self._inject(conn, injected)
        elif path == "/head-body":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n")
            time.sleep(ms)
            self._inject(conn, b"injected")
        elif path == "/304-body":
            conn.sendall(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 8\r\n\r\n")
            time.sleep(ms)
            self._inject(conn, b"injected")
        elif path == "/long-body":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            time.sleep(ms)
            self._inject(conn, injected)
        elif path == "/chunked-bodiless":
            status = q.get("status", "200")
            conn.sendall(f"HTTP/1.1 {status} X\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        elif path == "/interim":
            for _ in range(int(q.get("n", "20"))):
                conn.sendall(b"HTTP/1.1 102 Processing\r\n\r\n")
                time.sleep(ms or 0.5)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate")
        elif path == "/dup-length":
            fields = (b"Content-Length: 2\r\nContent-Length: 2\r\n" if q.get("form") == "repeat"
                      else b"Content-Length: 2, 2\r\n")
            conn.sendall(b"HTTP/1.1 200 OK\r\n" + fields + b"\r\nok")
        elif path == "/headers":
            body = headers["\0names"].encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        elif path == "/one-write":
            form = q.get("form", "chunked")
            if form == "chunked":
                conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nx-t: 1\r\n\r\n")
            elif form == "big":
                n = int(q.get("bytes", "200000"))
                body = bytes(i % 251 for i in range(n))
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (n, body))
            else:
                head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
                if form == "badlater":
                    conn.sendall(head)
                    time.sleep(0.3)
                    head = b""
                conn.sendall(head + b"zz\r\nbroken\r\n")
                time.sleep(ms or 5)
                return False
        elif path == "/drop-unanswered":
            return False  # read whole, then the connection closed with no answer
        elif path == "/close-soon":
            time.sleep(int(q.get("wait", "0")) / 1000.0)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbye")
            time.sleep(ms or 0.1)
            conn.close()
            with self.lock:
                self.closed_after_answer += 1
            return False
        else:
            body = f"xfcc={headers.get('x-forwarded-client-cert', '')};conn={number}".encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        return True
