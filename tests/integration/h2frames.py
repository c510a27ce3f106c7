"""Hand-built HTTP/2 frames (RFC 9113 section 4.1) and a raw client connection that sends them
as bytes and reads back what the server answers, frame by frame: what h2spec does, for the
malformed frames a conforming client library (python3-h2) refuses to send.

HPACK blocks come from python3-hpack's Encoder (or are written byte by byte where the block
itself is the malformed part); the server's blocks are decoded with one Decoder per connection,
in the order they arrive, as HPACK requires."""
import socket
import ssl
import struct
import sys
import time

sys.path.append("/usr/lib/python3/dist-packages")  # Debian's hpack beside pyenv's Python
import hpack  # noqa: E402

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
TYPE_NAMES = {DATA: "DATA", HEADERS: "HEADERS", PRIORITY: "PRIORITY", RST_STREAM: "RST_STREAM",
              SETTINGS: "SETTINGS", PUSH_PROMISE: "PUSH_PROMISE", PING: "PING", GOAWAY: "GOAWAY",
              WINDOW_UPDATE: "WINDOW_UPDATE", CONTINUATION: "CONTINUATION"}

# Flags.
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# Error codes (RFC 9113 7).
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED, \
    FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, CONNECT_ERROR, \
    ENHANCE_YOUR_CALM, INADEQUATE_SECURITY, HTTP_1_1_REQUIRED = range(14)
ERROR_NAMES = {v: k for k, v in dict(
    NO_ERROR=0, PROTOCOL_ERROR=1, INTERNAL_ERROR=2, FLOW_CONTROL_ERROR=3, SETTINGS_TIMEOUT=4,
    STREAM_CLOSED=5, FRAME_SIZE_ERROR=6, REFUSED_STREAM=7, CANCEL=8, COMPRESSION_ERROR=9,
    CONNECT_ERROR=10, ENHANCE_YOUR_CALM=11, INADEQUATE_SECURITY=12,
    HTTP_1_1_REQUIRED=13).items()}

# Settings (RFC 9113 6.5.2).
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, \
    MAX_HEADER_LIST_SIZE = range(1, 7)


def frame(ftype, flags, stream, payload=b"", length=None):
    """One frame; length: what the header says, if not the payload's own length."""
    n = len(payload) if length is None else length
    return struct.pack(">I", n)[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def settings(*pairs, ack=False, stream=0):
    return frame(SETTINGS, ACK if ack else 0, stream,
                 b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def ping(payload=b"\0" * 8, ack=False, stream=0):
    return frame(PING, ACK if ack else 0, stream, payload)


def window_update(stream, increment):
    return frame(WINDOW_UPDATE, 0, stream, struct.pack(">I", increment))


def rst_stream(stream, code):
    return frame(RST_STREAM, 0, stream, struct.pack(">I", code))


def goaway(last_stream, code, stream=0):
    return frame(GOAWAY, 0, stream, struct.pack(">II", last_stream, code))


def priority(stream, depends_on, weight=15, exclusive=False):
    dep = depends_on | (0x80000000 if exclusive else 0)
    return frame(PRIORITY, 0, stream, struct.pack(">IB", dep, weight))


def data(stream, payload, end_stream=False):
    return frame(DATA, END_STREAM if end_stream else 0, stream, payload)


def request_fields(path="/", method="GET", authority="localhost", extra=()):
    return [(":method", method), (":scheme", "https"), (":path", path),
            (":authority", authority), *extra]


class Encoder:
    """HPACK encoding for one connection (its dynamic table is the server's decoder's)."""

    def __init__(self):
        self.enc = hpack.Encoder()

    def block(self, fields, huffman=True):
        # hpack lower-cases nothing and validates nothing: what we give is what goes.
        return self.enc.encode([(n.encode() if isinstance(n, str) else n,
                                 v.encode() if isinstance(v, str) else v) for n, v in fields],
                               huffman=huffman)


def headers(stream, block, end_stream=False, end_headers=True, priority_of=None):
    flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
    if priority_of is not None:
        flags |= PRIORITY_FLAG
        block = struct.pack(">IB", priority_of, 15) + block
    return frame(HEADERS, flags, stream, block)


def continuation(stream, block, end_headers=True):
    return frame(CONTINUATION, END_HEADERS if end_headers else 0, stream, block)


class Frame:
    def __init__(self, ftype, flags, stream, payload):
        self.type, self.flags, self.stream, self.payload = ftype, flags, stream, payload
        self.fields = None  # HEADERS: the decoded block (when END_HEADERS)

    @property
    def error_code(self):
        if self.type == RST_STREAM:
            return struct.unpack(">I", self.payload[:4])[0]
        if self.type == GOAWAY:
            return struct.unpack(">I", self.payload[4:8])[0]
        return None

    @property
    def last_stream(self):
        return struct.unpack(">I", self.payload[:4])[0] & 0x7FFFFFFF

    def __repr__(self):
        name = TYPE_NAMES.get(self.type, f"type{self.type}")
        extra = ""
        if self.error_code is not None:
            extra = " " + ERROR_NAMES.get(self.error_code, str(self.error_code))
            if self.type == GOAWAY:
                extra += f" last={self.last_stream} {self.payload[8:]!r}"
        elif self.fields is not None:
            extra = f" {self.fields}"
        elif self.type in (SETTINGS, PING, WINDOW_UPDATE):
            extra = f" {self.payload.hex()}"
        elif self.type == DATA:
            extra = f" {len(self.payload)}B"
        return f"<{name} s={self.stream} f=0x{self.flags:02x}{extra}>"


CLOSED = "closed"


class RawConnection:
    """A TLS connection (ALPN h2) on which the test writes bytes and reads frames."""

    def __init__(self, port, certs, cert="client", timeout=5):
        ctx = ssl.create_default_context(cafile=certs.path("ca.pem"))
        ctx.load_cert_chain(certs.path(f"{cert}.pem"), certs.path(f"{cert}.key"))
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        if self.sock.selected_alpn_protocol() != "h2":
            raise AssertionError(f"ALPN chose {self.sock.selected_alpn_protocol()!r}")
        self.buf = b""
        self.frames = []  # every frame read so far, and CLOSED at the end
        self.cursor = 0  # next_frame looks from here on
        self.closed = False
        self.decoder = hpack.Decoder()
        self.encoder = Encoder()
        self.server_settings = {}
        self._header_block = None  # (stream, bytes) while a block spans CONTINUATIONs

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, *chunks):
        """Writes bytes; a connection the server already closed is not an error here (what it
        said before closing is read by the expect_* calls)."""
        try:
            self.sock.sendall(b"".join(chunks))
            return True
        except (ConnectionError, ssl.SSLError, socket.timeout, OSError):
            return False

    def handshake(self, *our_settings, ack_server=True):
        """Preface and our SETTINGS; waits for the server's SETTINGS and acknowledges them
        (after which the server holds us to them)."""
        self.send(PREFACE + settings(*our_settings))
        f = self.next_frame(lambda f: f.type == SETTINGS and not f.flags & ACK)
        if f is None or f == CLOSED:
            raise AssertionError(f"no SETTINGS from the server: {self.frames}")
        for i in range(0, len(f.payload), 6):
            k, v = struct.unpack(">HI", f.payload[i:i + 6])
            self.server_settings[k] = v
        if ack_server:
            self.send(settings(ack=True))
        # Our own SETTINGS acknowledged: everything before has been read by the server.
        self.next_frame(lambda f: f.type == SETTINGS and f.flags & ACK)
        return self

    def block(self, fields, huffman=True):
        return self.encoder.block(fields, huffman)

    def _read(self, deadline):
        self.sock.settimeout(max(0.01, min(0.5, deadline - time.monotonic())))
        try:
            got = self.sock.recv(65536)
        except socket.timeout:
            return True
        except (ConnectionError, ssl.SSLError, OSError):
            got = b""
        if not got:
            self.closed = True
            self.frames.append(CLOSED)
            return False
        self.buf += got
        while len(self.buf) >= 9:
            n = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + n:
                break
            f = Frame(self.buf[3], self.buf[4], int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF,
                      self.buf[9:9 + n])
            self.buf = self.buf[9 + n:]
            self._decode(f)
            self.frames.append(f)
        return True

    def _decode(self, f):
        if f.type == HEADERS:
            p = f.payload
            if f.flags & PADDED:
                p = p[1:len(p) - p[0]]
            if f.flags & PRIORITY_FLAG:
                p = p[5:]
            self._header_block = (f.stream, p)
        elif f.type == CONTINUATION and self._header_block:
            self._header_block = (self._header_block[0], self._header_block[1] + f.payload)
        else:
            return
        if f.flags & END_HEADERS:
            f.fields = [(n.decode() if isinstance(n, bytes) else n,
                         v.decode() if isinstance(v, bytes) else v)
                        for n, v in self.decoder.decode(self._header_block[1])]
            self._header_block = None

    def next_frame(self, match, timeout=5):
        """The first frame (of those read and not yet matched, then new ones) for which match is
        true, CLOSED if the connection ends first, None on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            while self.cursor < len(self.frames):
                f = self.frames[self.cursor]
                if f == CLOSED:
                    return CLOSED
                self.cursor += 1
                if match(f):
                    return f
            if self.closed or time.monotonic() >= deadline:
                return None
            self._read(deadline)

    def read_until(self, done, timeout=5):
        """Reads until done(frames so far) or the connection ends or timeout; returns frames."""
        deadline = time.monotonic() + timeout
        while not done(self.frames) and not self.closed and time.monotonic() < deadline:
            self._read(deadline)
        return self.frames

    def wait_closed(self, timeout=5):
        """True once the server closed the connection (EOF) within timeout."""
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            self._read(deadline)
        return self.closed

    def error_signal(self, stream=None, timeout=5):
        """The first RST_STREAM (on stream, if given) or GOAWAY the server sends, or CLOSED, or
        the final response HEADERS on stream (an answer instead of an error), or None."""
        def match(f):
            if f.type == GOAWAY:
                return True
            if f.type == RST_STREAM and (stream is None or f.stream == stream):
                return True
            return (f.type == HEADERS and stream is not None and f.stream == stream
                    and f.fields is not None
                    and not dict(f.fields).get(":status", "2").startswith("1"))
        return self.next_frame(match, timeout)

    def response(self, stream, timeout=5):
        """(status, body bytes, frames) of stream's answer, read until END_STREAM, a reset or
        the close."""
        def done(frames):
            return any(f == CLOSED or (f.stream == stream and (f.flags & END_STREAM and f.type in (
                DATA, HEADERS) or f.type == RST_STREAM)) or f.type == GOAWAY for f in frames)
        frames = self.read_until(done, timeout)
        status, body = None, b""
        for f in frames:
            if f == CLOSED or f.stream != stream:
                continue
            if f.type == HEADERS and f.fields and status is None:
                status = int(dict(f.fields).get(":status", 0))
            elif f.type == DATA:
                body += f.payload
        return status, body, frames
