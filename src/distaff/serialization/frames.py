"""A session's envelopes over a plain byte stream (a Unix socket on one host).

The same envelopes that travel as gRPC messages on the network travel here
as frames: a 5-byte header (kind, u8; payload length, u32 big-endian) and
the payload. Three kinds:

- ``MESSAGE``: one envelope, exactly as gRPC would carry it (``wire.encode``).
- ``END``: the sender will send nothing more (gRPC's half-close, or the
  worker's OK status). A stream that ends without it was cut: the peer died
  or abandoned it.
- ``STATUS``: the worker ends the session with an error; the payload is the
  status code's name, a newline and the details (gRPC's status and details).

:class:`FramedStream` is the asyncio protocol for both ends: it reads whole
frames straight into their buffers (a large payload is received into one
buffer of its size, without copies) and writes with the transport's flow
control.
"""

from __future__ import annotations

import asyncio
import collections
import struct
from typing import Any

from .._exceptions import RpcError, StatusCode, TransientRpcError
from .wire import Message, decode, encode

MESSAGE, END, STATUS = 0, 1, 2
_HEADER = struct.Struct(">BI")
_HEADER_SIZE = _HEADER.size
# frames up to this size are received into the shared buffer, larger ones
# into a buffer of their own
_SMALL = 64 * 1024
_BUFFER = 256 * 1024
# stop reading while this much arrived that nobody has read yet
_READ_AHEAD = 16 * 1024 * 1024
# a payload this small is written with its header in one piece
_JOIN_BELOW = 16 * 1024
# each side bounds what it sends (``MAX_MESSAGE_BYTES``, which may differ
# between the two); a receiver refuses only what no sender can mean: more than
# protobuf's 2 GiB
_LIMIT = (1 << 31) - 1


class FramedStream(asyncio.BufferedProtocol):
    """One session's frames over a stream transport.

    Args:
        peer: who is at the other end, named in errors.
    """

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray(_BUFFER)
        self._start = 0  # the first byte not parsed yet
        self._end = 0  # the end of what arrived
        self._large: bytearray | None = None  # a large frame's payload, filling
        self._large_kind = 0
        self._large_got = 0
        self._frames: collections.deque[tuple[int, Any]] = collections.deque()
        self._queued = 0  # payload bytes received and not read yet
        self._paused = False  # reading paused: too much unread
        self._waiter: asyncio.Future[None] | None = None  # read() waits for a frame
        self._closed: BaseException | None = None  # why no frame can come any more
        self._writable: asyncio.Future[None] | None = None  # write() waits for room
        self._blocked = False  # the transport asked us to stop writing
        self._ended = False  # END sent
        self.peer_ended = False  # END (or STATUS) received: the peer meant to stop
        self.received = 0  # frames received so far

    # asyncio.BufferedProtocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not subclasses

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._large is not None:
            return memoryview(self._large)[self._large_got :]
        if self._end == len(self._buffer):
            self._compact()
        return memoryview(self._buffer)[self._end :]

    def _compact(self) -> None:
        start, end = self._start, self._end
        if start:
            self._buffer[: end - start] = self._buffer[start:end]
            self._start, self._end = 0, end - start

    def buffer_updated(self, nbytes: int) -> None:
        if self._large is not None:
            self._large_got += nbytes
            if self._large_got == len(self._large):
                payload, self._large = self._large, None
                self._arrived(self._large_kind, payload)
            return
        self._end += nbytes
        buffer = self._buffer
        while self._end - self._start >= _HEADER_SIZE:
            kind, size = _HEADER.unpack_from(buffer, self._start)
            if size > _LIMIT or kind > STATUS:
                self._broken(f"a malformed frame (kind {kind}, {size:,} bytes)")
                return
            body = self._start + _HEADER_SIZE
            if self._end - body >= size:
                self._start = body + size
                # one copy, out of the shared buffer (slicing the bytearray
                # itself would copy it twice)
                self._arrived(kind, bytes(memoryview(buffer)[body : self._start]))
                continue
            if size > _SMALL:  # the rest of it is received in place
                large = bytearray(size)
                have = self._end - body
                large[:have] = memoryview(buffer)[body : self._end]
                self._large, self._large_kind, self._large_got = large, kind, have
                self._start = self._end = 0
                return
            break
        if self._start == self._end:
            self._start = self._end = 0
        elif len(buffer) - self._start < _SMALL + _HEADER_SIZE:
            self._compact()  # room for the frame that is arriving

    def eof_received(self) -> bool:
        self._lost(None)
        return True  # keep the write side open: the peer may still be reading

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(exc)
        self._blocked = False
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    def pause_writing(self) -> None:
        self._blocked = True

    def resume_writing(self) -> None:
        self._blocked = False
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    # receiving

    def _arrived(self, kind: int, payload: Any) -> None:
        if self._closed is not None:
            return
        self.received += 1
        if kind != MESSAGE:
            self.peer_ended = True
        self._frames.append((kind, payload))
        self._queued += len(payload)
        if self._queued > _READ_AHEAD and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _lost(self, exc: BaseException | None) -> None:
        if self._closed is None:
            self._closed = exc or ConnectionResetError("the connection was closed")
        self._wake()

    def _broken(self, what: str) -> None:
        """The peer sent garbage: the reader learns it; nothing more is read.

        The connection stays open for the reader's side to answer (a worker
        ends the session with a STATUS naming what was wrong) and close.
        """
        self._frames.append((STATUS, f"INTERNAL\n{what} from {self.peer}".encode()))
        self._closed = ConnectionAbortedError(what)
        self._wake()
        if self.transport is not None:
            self.transport.pause_reading()

    async def read(self) -> Message | None:
        """The next envelope, or None once the peer ended its side (``END``).

        Raises:
            RpcError: the peer ended the session with an error (``STATUS``),
                sent a malformed frame, or the stream was cut (UNAVAILABLE).
        """
        while not self._frames:
            if self._closed is not None:
                raise TransientRpcError(
                    StatusCode.UNAVAILABLE, f"the connection was cut ({self._closed})", self.peer
                )
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        kind, payload = self._frames[0]
        if kind == MESSAGE:
            self._frames.popleft()
            self._queued -= len(payload)
            if self._paused and self._queued <= _READ_AHEAD // 2 and self.transport is not None:
                self._paused = False
                self.transport.resume_reading()
            try:
                return decode(payload)
            except Exception as exc:  # a malformed envelope: nothing on it can be trusted
                self._frames.clear()
                self._frames.append((STATUS, f"INTERNAL\na malformed envelope: {exc}".encode()))
                raise RpcError(
                    StatusCode.INTERNAL, f"a malformed envelope: {exc}", self.peer
                ) from exc
        if kind == END:  # stays at the head: every later read says the same
            return None
        code, _, details = bytes(payload).decode("utf-8", "replace").partition("\n")
        status = StatusCode.from_name(code)
        cls = TransientRpcError if status.transient else RpcError
        raise cls(status, details, self.peer)

    # sending

    async def write(self, message: Message) -> None:
        """Send one envelope; wait only while the transport's buffer is full.

        Raises:
            RpcError: the connection is gone (CANCELLED, as a write on an
                ended gRPC call).
        """
        transport = self.transport
        if transport is None or transport.is_closing() or self._ended:
            raise RpcError(StatusCode.CANCELLED, "the connection is closed", self.peer)
        self._send(transport, MESSAGE, encode(message))
        if self._blocked:
            self._writable = asyncio.get_running_loop().create_future()
            await self._writable

    @staticmethod
    def _send(transport: asyncio.Transport, kind: int, payload: bytes) -> None:
        if len(payload) < _JOIN_BELOW:
            transport.write(_HEADER.pack(kind, len(payload)) + payload)
        else:
            transport.write(_HEADER.pack(kind, len(payload)))
            transport.write(payload)

    def end(self) -> None:
        """Send ``END``: this side sends nothing more (it still reads)."""
        transport = self.transport
        if transport is not None and not transport.is_closing() and not self._ended:
            self._ended = True
            self._send(transport, END, b"")

    def fail(self, code: StatusCode, details: str) -> None:
        """Send ``STATUS`` (the session ended with an error) and close."""
        transport = self.transport
        if transport is not None and not transport.is_closing() and not self._ended:
            self._ended = True
            self._send(transport, STATUS, f"{code.name}\n{details}".encode())
            transport.close()

    def close(self) -> None:
        """Close once what was written has been sent."""
        if self.transport is not None:
            self.transport.close()

    def abort(self, why: str = "abandoned") -> None:
        """Drop the connection now; the peer sees it cut, a reader here ``why``."""
        self._lost(ConnectionAbortedError(why))
        if self.transport is not None:
            self.transport.abort()
