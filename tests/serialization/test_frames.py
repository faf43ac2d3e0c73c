"""FramedStream on a real socket pair: frames cut anywhere arrive whole; ends are told apart."""

from __future__ import annotations

import asyncio
import random
import socket
import struct

import pytest

from distaff import RpcError, TransientRpcError
from distaff.serialization import frames
from distaff.serialization.wire import Envelope, decode, encode


def envelope(call: int, blob: bytes = b"") -> object:
    message = Envelope()
    frame = message.frames.add()
    frame.call = call
    return (message, [blob]) if blob else message


def framed(kind: int, payload: bytes) -> bytes:
    return struct.pack(">BI", kind, len(payload)) + payload


async def stream_pair() -> tuple[frames.FramedStream, socket.socket]:
    """A FramedStream on one end of a socket pair; the raw other end."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    loop = asyncio.get_running_loop()
    _, stream = await loop.create_unix_connection(lambda: frames.FramedStream("peer"), sock=ours)
    theirs.setblocking(False)
    return stream, theirs


async def closed(stream: frames.FramedStream, theirs: socket.socket) -> None:
    stream.abort()
    theirs.close()
    await asyncio.sleep(0)  # the transport closes its socket in the next turn


def same(a: object, b: object) -> bool:
    return encode(a) == encode(b)  # type: ignore[arg-type]


@pytest.mark.parametrize("piece", [1, 3, 5, 4096, None])
async def test_frames_cut_into_any_pieces_arrive_whole_and_in_order(piece: int | None) -> None:
    rng = random.Random(piece)
    sent = [envelope(1), envelope(2, rng.randbytes(200_000)), envelope(3, b"x" * 70_000)]
    sent += [envelope(n, rng.randbytes(rng.randrange(1, 3000))) for n in range(4, 40)]
    data = b"".join(framed(frames.MESSAGE, encode(m)) for m in sent) + framed(frames.END, b"")
    stream, theirs = await stream_pair()
    loop = asyncio.get_running_loop()

    async def feed() -> None:
        step = piece or len(data)
        for at in range(0, len(data), step):
            await loop.sock_sendall(theirs, data[at : at + step])

    feeding = asyncio.create_task(feed())
    received = []
    async with asyncio.timeout(30):
        while (message := await stream.read()) is not None:
            received.append(message)
    await feeding
    assert len(received) == len(sent)
    assert all(same(a, b) for a, b in zip(received, sent, strict=True))
    assert await stream.read() is None  # END stays said
    await closed(stream, theirs)


async def test_a_cut_without_end_is_unavailable_and_a_status_is_the_workers_error() -> None:
    stream, theirs = await stream_pair()
    theirs.close()
    with pytest.raises(TransientRpcError, match="UNAVAILABLE: the connection was cut"):
        await stream.read()
    await closed(stream, theirs)

    stream, theirs = await stream_pair()
    await asyncio.get_running_loop().sock_sendall(
        theirs, framed(frames.STATUS, b"FAILED_PRECONDITION\nreplayed call 7")
    )
    with pytest.raises(RpcError, match="FAILED_PRECONDITION: replayed call 7") as caught:
        await stream.read()
    assert not isinstance(caught.value, TransientRpcError)
    await closed(stream, theirs)


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (struct.pack(">BI", 7, 1) + b"x", "malformed frame \\(kind 7"),
        (struct.pack(">BI", 0, 0xFFFFFFFF), "malformed frame \\(kind 0, 4,294,967,295 bytes"),
        (framed(frames.MESSAGE, b"\x7a\xff"), "malformed envelope"),
    ],
)
async def test_garbage_is_an_internal_error_that_names_it(data: bytes, named: str) -> None:
    stream, theirs = await stream_pair()
    await asyncio.get_running_loop().sock_sendall(theirs, data + framed(frames.END, b""))
    with pytest.raises(RpcError, match=f"INTERNAL: .*{named}"):
        await stream.read()
    with pytest.raises(RpcError, match="INTERNAL"):  # and nothing after it is believed
        await stream.read()
    await closed(stream, theirs)


async def test_writes_are_framed_and_wait_only_while_the_peer_does_not_read() -> None:
    stream, theirs = await stream_pair()
    loop = asyncio.get_running_loop()
    big = envelope(1, bytes(8 * 1024 * 1024))
    writes = asyncio.create_task(stream.write(big))
    received = bytearray()
    expected = len(framed(frames.MESSAGE, encode(big)))  # type: ignore[arg-type]
    async with asyncio.timeout(30):
        await asyncio.sleep(0)
        assert not writes.done()  # 8 MiB do not fit in the socket: the write waits
        while len(received) < expected:
            received += await loop.sock_recv(theirs, 1 << 20)
        await writes
    kind, size = struct.unpack(">BI", received[:5])
    assert (kind, size) == (frames.MESSAGE, expected - 5)
    assert same(decode(bytes(received[5:])), big)

    stream.end()
    async with asyncio.timeout(10):
        assert await loop.sock_recv(theirs, 16) == framed(frames.END, b"")
    with pytest.raises(RpcError, match="CANCELLED"):  # nothing after END
        await stream.write(envelope(2))
    await closed(stream, theirs)
