"""A Zipkin collector for the tests: takes POST /api/v2/spans, keeps the spans and checks every one
against a JSON schema of Zipkin's v2 Span (SPAN_SCHEMA) with jsonschema (Debian's
python3-jsonschema). What fails the schema is kept in .invalid; a test asserts it stays empty.

No package in the npm registry or Debian ships Zipkin's own OpenAPI document (zipkin2-api.yaml),
so the schema below is ours, written from the facts of Zipkin's v2 model (docs/tracing.md says
so): the fields, their types, ids as lower-case hex of 16 (or 32 for a trace id) digits, the kind
enum, timestamps and durations as integers of microseconds, endpoints, string tags, annotations.
Where the model leaves something open the schema is as strict as what we promise: no fields
beyond the model's, ids anchored (the document's patterns are not), a duration of at least 1."""
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _import_jsonschema():
    """Debian's python3-jsonschema lives in Debian's dist-packages, which another python3 on PATH
    (pyenv, a venv) does not search: look there last, as test_thrift.py does for thrift."""
    try:
        import jsonschema
    except ImportError:
        sys.path.append("/usr/lib/python3/dist-packages")
        import jsonschema
    return jsonschema


jsonschema = _import_jsonschema()

_HEX16 = {"type": "string", "pattern": "^[0-9a-f]{16}$"}
_ENDPOINT = {
    "type": "object",
    "properties": {
        "serviceName": {"type": "string"},
        "ipv4": {"type": "string", "format": "ipv4"},
        "ipv6": {"type": "string", "format": "ipv6"},
        "port": {"type": "integer", "minimum": 0, "maximum": 65535},
    },
    "additionalProperties": False,
}
SPAN_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Zipkin v2 Span (POST /api/v2/spans takes an array of them)",
    "type": "object",
    "required": ["traceId", "id"],
    "properties": {
        "traceId": {"type": "string", "pattern": "^([0-9a-f]{16}|[0-9a-f]{32})$"},
        "id": _HEX16,
        "parentId": _HEX16,
        "name": {"type": "string"},
        "kind": {"enum": ["CLIENT", "SERVER", "PRODUCER", "CONSUMER"]},
        "timestamp": {"type": "integer", "minimum": 1},  # microseconds since the epoch
        "duration": {"type": "integer", "minimum": 1},  # microseconds
        "debug": {"type": "boolean"},
        "shared": {"type": "boolean"},
        "localEndpoint": _ENDPOINT,
        "remoteEndpoint": _ENDPOINT,
        "annotations": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["timestamp", "value"],
                "properties": {"timestamp": {"type": "integer", "minimum": 1},
                               "value": {"type": "string"}},
                "additionalProperties": False,
            },
        },
        "tags": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "additionalProperties": False,
}
LIST_OF_SPANS_SCHEMA = {"$schema": SPAN_SCHEMA["$schema"], "type": "array", "items": SPAN_SCHEMA}

_VALIDATOR = jsonschema.Draft202012Validator(LIST_OF_SPANS_SCHEMA,
                                             format_checker=jsonschema.FormatChecker())


def schema_errors(body):
    """What is wrong with a POST body as a Zipkin v2 list of spans: a list of messages."""
    try:
        spans = json.loads(body)
    except ValueError as e:
        return [f"not JSON: {e}"]
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in _VALIDATOR.iter_errors(spans)]


class Collector:
    """A Zipkin collector: takes POST /api/v2/spans, keeps the spans, answers `status` (after
    `delay` seconds). Every post is checked against the schema: what fails is in .invalid as
    (message, body)."""

    def __init__(self, status=202, delay=0.0):
        self.spans, self.posts, self.invalid = [], [], []
        self.status, self.delay = status, delay
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                errors = schema_errors(body)
                with collector.lock:
                    collector.posts.append((self.path, self.headers.get("Content-Type"), body))
                    collector.invalid += [(e, body[:2000]) for e in errors]
                    if collector.status // 100 == 2 and not errors:
                        collector.spans.extend(json.loads(body))
                if collector.delay:
                    threading.Event().wait(collector.delay)
                self.send_response(collector.status if not errors else 400)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/api/v2/spans"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def where(self, **fields):
        with self.lock:
            return [s for s in self.spans if all(s.get(k) == v for k, v in fields.items())]

    def assert_valid(self, test):
        """Every span posted so far passed the schema."""
        with self.lock:
            invalid = list(self.invalid)
        test.assertEqual(invalid, [], "spans posted that are not Zipkin v2 spans")


if __name__ == "__main__":  # checks files of posted spans: python3 zipkin_collector.py FILE...
    bad = 0
    for path in sys.argv[1:]:
        with open(path, "rb") as f:
            for e in schema_errors(f.read()):
                print(f"{os.path.basename(path)}: {e}")
                bad += 1
    sys.exit(1 if bad else 0)
