#!/usr/bin/env python3
"""One gRPC call of pinghelp's Ping (proto/pinghelp.proto) through a sidecar's outbound port, by
service name, as a local service's gRPC client makes it (h2c, prior knowledge); prints the reply's
message. Usage: deploy/grpc-call.py HOST:PORT SERVICE. Needs Python's grpcio (Debian's
python3-grpcio); the two messages are a few bytes, written and read here by hand."""
import sys

sys.path.append("/usr/lib/python3/dist-packages")  # Debian's grpcio beside another python3


def main():
    if len(sys.argv) != 3:
        print("usage: grpc-call.py HOST:PORT SERVICE", file=sys.stderr)
        return 2
    try:
        import grpc
    except ImportError:
        print("grpc-call.py: Python's grpcio is missing (Debian: python3-grpcio)", file=sys.stderr)
        return 2
    address, service = sys.argv[1:]
    with grpc.insecure_channel(address, options=[("grpc.default_authority", service)]) as ch:
        try:
            reply = ch.unary_unary("/pinghelp.PingHelp/Ping")(b"", timeout=10)
        except grpc.RpcError as e:
            print(f"grpc-call.py: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    # PingReply: field 1 (message), length-delimited: 0x0a, a one-byte length, the text.
    if len(reply) < 2 or reply[0] != 0x0A or reply[1] != len(reply) - 2:
        print(f"grpc-call.py: not a PingReply: {reply!r}", file=sys.stderr)
        return 1
    print(reply[2:].decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
