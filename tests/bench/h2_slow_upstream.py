#!/usr/bin/env python3
"""A local service that takes HTTP/1.1 requests and never answers them, for tests/bench/h2.sh's
memory per open stream: each stream a proxy forwards stays open, holding its upstream connection.
  h2_slow_upstream.py PORT
Reads each connection's bytes and drops them; closes when the proxy does. Not part of the product."""
import asyncio
import sys


async def serve(reader, writer):
    try:
        while await reader.read(65536):
            pass
    except (ConnectionError, OSError):
        pass
    writer.close()


async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    async with server:
        await server.serve_forever()


asyncio.run(main())
