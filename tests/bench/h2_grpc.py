#!/usr/bin/python3
"""The gRPC pieces of tests/bench/h2.sh, on Debian's python3-grpcio (hence /usr/bin/python3).

  h2_grpc.py serve PORT                 an h2c gRPC service: /bench.Echo/Call answers every
                                        request with its own bytes (grpc.aio, one thread)
  h2_grpc.py check PORT CERT KEY CA     one call through a peer over mTLS; prints "ok" and exits 0
                                        when the answer is the request and grpc-status is OK

No .proto: the generic handler passes bytes through unchanged. Not part of the product."""
import asyncio
import sys

import grpc

METHOD = "/bench.Echo/Call"


async def serve(port):
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "bench.Echo", {"Call": grpc.unary_unary_rpc_method_handler(lambda req, ctx: req)})])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def check(port, cert, key, ca):
    creds = grpc.ssl_channel_credentials(open(ca, "rb").read(), open(key, "rb").read(),
                                         open(cert, "rb").read())
    with grpc.secure_channel(f"127.0.0.1:{port}", creds,
                             options=[("grpc.ssl_target_name_override", "localhost")]) as ch:
        answer = ch.unary_unary(METHOD)(b"\x08\x01", timeout=10)
    if answer != b"\x08\x01":
        sys.exit(f"h2_grpc: wrong answer {answer!r}")
    print("ok")


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        asyncio.run(serve(int(sys.argv[2])))
    else:
        try:
            check(*sys.argv[2:6])
        except grpc.RpcError as e:
            sys.exit(f"h2_grpc: {e.code()} {e.details()}")
