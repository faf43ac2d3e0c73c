"""The baseline servers: raw grpc.aio and raw asyncio TCP, loopback only.

Run as ``python -m bench.servers grpc|tcp``. The server binds 127.0.0.1 on a
free port, prints ``PORT <n>`` on stdout once it serves, and exits on SIGTERM
or when its stdin closes (its parent is gone), like a distaff worker.

grpc: service ``bench.Echo`` with a generic handler and identity serializers
(bytes in, bytes out, no protobuf): ``Echo`` (unary, returns the request) and
``Stream`` (unary request holding a count n as ASCII; streams n messages, each
a small int as 4 little-endian bytes) and ``Chat`` (a bidirectional stream
that echoes each message: a call per message on one long-lived stream, the
shape of distaff's session).

tcp: frames of ``op u8, id u64, length u32`` (big-endian) + payload. ``ECHO``
frames come back as they are (same id); a ``STREAM`` frame holding n as ASCII
is answered by n ``ITEM`` frames (4 little-endian bytes) and one ``END``. One
connection carries any number of requests, told apart by id.
"""

from __future__ import annotations

import asyncio
import os
import signal
import struct
import sys
from typing import Any

HOST = "127.0.0.1"
GRPC_SERVICE = "bench.Echo"
GRPC_ECHO = f"/{GRPC_SERVICE}/Echo"
GRPC_STREAM = f"/{GRPC_SERVICE}/Stream"
GRPC_CHAT = f"/{GRPC_SERVICE}/Chat"
GRPC_OPTIONS = (
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.so_reuseport", 0),
)

HEADER = struct.Struct("!BQI")
OP_ECHO, OP_STREAM, OP_ITEM, OP_END = 1, 2, 3, 4


def item_bytes(i: int) -> bytes:
    """A small int as one stream message."""
    return i.to_bytes(4, "little")


async def _until_stopped() -> None:
    """Return on SIGTERM/SIGINT or when stdin reaches end-of-file."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def on_stdin() -> None:
        if not os.read(0, 4096):
            loop.remove_reader(0)
            stop.set()

    loop.add_reader(0, on_stdin)
    await stop.wait()


def _announce(port: int) -> None:
    sys.stdout.write(f"PORT {port}\n")
    sys.stdout.flush()


async def serve_grpc() -> None:
    """Serve the grpc.aio echo and stream methods until stopped."""
    import grpc
    import grpc.aio

    async def echo(request: bytes, context: object) -> bytes:
        return request

    async def stream(request: bytes, context: object):  # type: ignore[no-untyped-def]
        for i in range(int(request)):
            yield item_bytes(i)

    async def chat(requests: object, context: Any) -> None:
        while (message := await context.read()) is not grpc.aio.EOF:
            await context.write(message)

    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
    }
    server = grpc.aio.server(options=GRPC_OPTIONS)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(GRPC_SERVICE, handlers),))
    port = server.add_insecure_port(f"{HOST}:0")
    await server.start()
    try:
        _announce(port)
        await _until_stopped()
    finally:
        await server.stop(0)


async def _tcp_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            op, request_id, length = HEADER.unpack(await reader.readexactly(HEADER.size))
            payload = await reader.readexactly(length) if length else b""
            if op == OP_ECHO:
                writer.write(HEADER.pack(OP_ECHO, request_id, length))
                if length:
                    writer.write(payload)
                    await writer.drain()
            elif op == OP_STREAM:
                for i in range(int(payload)):
                    writer.write(HEADER.pack(OP_ITEM, request_id, 4) + item_bytes(i))
                    if i % 256 == 255:
                        await writer.drain()
                writer.write(HEADER.pack(OP_END, request_id, 0))
                await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve_tcp() -> None:
    """Serve the length-prefixed echo/stream protocol until stopped."""
    server = await asyncio.start_server(_tcp_connection, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        _announce(port)
        await _until_stopped()
    finally:
        server.close()


def main() -> None:
    kind = sys.argv[1] if len(sys.argv) > 1 else ""
    if kind == "grpc":
        asyncio.run(serve_grpc())
    elif kind == "tcp":
        asyncio.run(serve_tcp())
    else:
        sys.exit("usage: python -m bench.servers grpc|tcp")


if __name__ == "__main__":
    main()
