"""The wire: generated protobuf types, the protocol version, the write pump."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import os
from collections.abc import Callable, Coroutine
from typing import Any

from .._exceptions import SerializationError
from ._generated import distaff_pb2 as pb

PROTOCOL_VERSION = 4

# Payloads this large travel as Envelope.blobs, outside the message object:
# each is copied once into the outgoing bytes and read back as a slice of
# the incoming ones, instead of into and out of a protobuf message on each
# side (four copies of every large argument and result, each a few hundred
# microseconds per MiB when the caches are cold). It is also the size from
# which the C pickler hands a bytes or str over whole instead of copying it
# into its output (pickle's FRAME_SIZE_TARGET): see Pieces.
DETACH_BYTES = 64 * 1024

# The largest gRPC message either side sends or accepts. Calls, results and
# yielded values are checked against it before they are sent, so one oversized
# value fails alone instead of breaking the stream that all calls share.
MAX_MESSAGE_BYTES = int(os.environ.get("DISTAFF_MAX_MESSAGE_BYTES", 256 * 1024 * 1024))
# room for the frame around a payload
_FRAME_OVERHEAD = 4096


def check_size(size: int, what: str) -> None:
    """Raise SerializationError if a payload of ``size`` bytes cannot be sent."""
    if size + _FRAME_OVERHEAD > MAX_MESSAGE_BYTES:
        raise SerializationError(
            f"{what} is {size:,} bytes, over distaff's message limit of "
            f"{MAX_MESSAGE_BYTES:,} bytes; send a reference (a path, a key) instead, or "
            "raise the limit by setting DISTAFF_MAX_MESSAGE_BYTES for callers and workers"
        )


class Pieces:
    """A large payload kept as the pieces a pickler wrote, until one join.

    Pickling to a file, the C pickler writes a ``bytes`` or ``str`` of
    ``DETACH_BYTES`` or more as a piece of its own (the object itself, or
    its UTF-8 encoding) instead of copying it into its output. Kept apart,
    such a payload is copied once, into the outgoing message, rather than
    twice. Only immutable pieces are kept: a value changed after its call
    was queued cannot change what is sent.

    ``len`` is the size of the joined payload; ``bytes`` joins it.
    """

    __slots__ = ("parts", "size")

    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts
        self.size = sum(len(part) for part in parts)

    def __len__(self) -> int:
        return self.size

    def __bytes__(self) -> bytes:
        return b"".join(self.parts)


# A pickled argument tuple, result or value: whole, or in pieces (large only).
Payload = bytes | Pieces

Envelope = pb.Envelope
Frame = pb.Frame
Output = pb.Output
OutputKind = pb.OutputKind
Start = pb.Start
Step = pb.Step
StepKind = pb.StepKind
StopRequest = pb.StopRequest
StopReply = pb.StopReply

# What travels on a Session stream: an envelope, or an envelope with the
# blobs its frames refer to (index + 1). Received blobs are memoryviews.
Message = pb.Envelope | tuple[pb.Envelope, list[Any]]

__all__ = [
    "DETACH_BYTES",
    "MAX_MESSAGE_BYTES",
    "PROTOCOL_VERSION",
    "Envelope",
    "Frame",
    "Message",
    "Output",
    "OutputKind",
    "Payload",
    "Pieces",
    "Pump",
    "Start",
    "Step",
    "StepKind",
    "StopReply",
    "StopRequest",
    "decode",
    "encode",
    "split_oversized",
    "unpack",
]

_BLOB_TAG = 0x7A  # field 15 (blobs), length-delimited
_BLOB_TAG_BYTE = bytes([_BLOB_TAG])


class DecodeError(ValueError):
    """A received message is not a well-formed envelope."""


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode(message: Message) -> bytes:
    """Serialize what a session sends: its blobs first, then the envelope."""
    if type(message) is not tuple:
        return message.SerializeToString()  # type: ignore[union-attr]
    envelope, blobs = message
    parts: list[Any] = []
    for blob in blobs:
        parts.append(_BLOB_TAG_BYTE + _varint(len(blob)))
        if type(blob) is Pieces:
            parts.extend(blob.parts)
        else:
            parts.append(blob)
    parts.append(envelope.SerializeToString())
    return b"".join(parts)


def decode(data: bytes) -> Message:
    """Parse a received message; leading blobs become slices of ``data``, not copies.

    Raises:
        DecodeError: a blob runs past the end of the message.
        google.protobuf.message.DecodeError: the envelope is malformed.
    """
    if not data or data[0] != _BLOB_TAG:
        return pb.Envelope.FromString(data)
    view = memoryview(data)
    blobs: list[Any] = []
    position, end = 0, len(data)
    while position < end and data[position] == _BLOB_TAG:
        size = shift = 0
        position += 1
        while True:
            if position >= end or shift > 63:
                raise DecodeError("a truncated blob length")
            byte = data[position]
            position += 1
            size |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        stop = position + size
        if stop > end:
            raise DecodeError(f"a blob of {size:,} bytes runs past the end of its message")
        blobs.append(view[position:stop])
        position = stop
    # upb parses any buffer, not only bytes
    return pb.Envelope.FromString(view[position:]), blobs  # type: ignore[arg-type]


def unpack(message: Message) -> tuple[pb.Envelope, Any]:
    """``(envelope, blobs)`` of a message; no blobs is an empty tuple."""
    if type(message) is tuple:
        return message
    return message, ()  # type: ignore[return-value]


def split_oversized(envelope: pb.Envelope, blobs: list[Any] | None = None) -> list[Message]:
    """``[envelope]`` (with its blobs), or one per frame if together they exceed the limit."""
    size = envelope.ByteSize()
    if blobs:
        size += sum(len(b) for b in blobs)
    if len(envelope.frames) > 1 and size > MAX_MESSAGE_BYTES:
        singles: list[Message] = []
        for frame in envelope.frames:
            single = pb.Envelope()
            single.frames.append(frame)
            copy = single.frames[0]
            kind = copy.WhichOneof("kind")
            # a frame's blob goes with it, renumbered as its envelope's only one
            if kind == "start" and copy.start.arguments_blob and blobs:
                singles.append((single, [blobs[copy.start.arguments_blob - 1]]))
                copy.start.arguments_blob = 1
            elif kind == "value" and copy.value.blob and blobs:
                singles.append((single, [blobs[copy.value.blob - 1]]))
                copy.value.blob = 1
            else:
                singles.append(single)
        return singles
    if blobs:
        return [(envelope, blobs)]
    return [envelope]


class Pump:
    """Owns a stream's write side: writes what a session has queued.

    Producers change the session without awaiting (so a ``finally`` block in
    a cancelled task can still queue a cancel) and call ``wake``. By default
    the pump writes at the loop's next turn, so everything queued in this
    turn goes out in one envelope (many calls in flight share writes). A
    producer that knows nothing else is coming (a lone call on its stream)
    says ``wake(eager=True)``: an idle pump then starts the write inside
    ``wake``, in the producer's turn, saving a turn of latency. Only one
    write is in flight at a time; its completion is followed by callbacks,
    and whatever piled up meanwhile goes out next, in one envelope. The write
    never runs inside a producer's task as an await, so cancelling a
    producer never cancels a write (which would cancel the whole stream).

    ``run`` waits until the pump is closed and drained, and raises the error
    of a write that failed; cancelling ``run`` abandons the write in flight.

    Args:
        take: returns the envelopes ready to write (a session's ``data_to_send``).
        write: writes one envelope to the stream.
    """

    __slots__ = (
        "_closed",
        "_context",
        "_done",
        "_error",
        "_flushing",
        "_loop",
        "_pending",
        "_scheduled",
        "_take",
        "_waiting",
        "_wake",
        "_write",
        "_writing",
    )

    def __init__(
        self,
        take: Callable[[], list[Message]],
        write: Callable[[Message], Coroutine[Any, Any, object]],
    ) -> None:
        self._take = take
        self._write = write
        self._wake = False  # woken from inside take(): look again
        self._closed = False
        self._flushing = False  # in _flush (a wake from inside take() waits its turn)
        self._scheduled = False  # a flush is due at the loop's next turn
        self._loop = asyncio.get_running_loop()
        self._writing: Coroutine[Any, Any, object] | None = None  # the write in flight
        self._waiting: asyncio.Future[Any] | None = None  # what that write awaits
        self._pending: collections.deque[Message] = collections.deque()
        self._error: BaseException | None = None
        self._done: asyncio.Future[None] | None = None
        # the write's later steps run in callbacks, all in one context of their own
        self._context = contextvars.Context()

    def wake(self, *, eager: bool = False) -> None:
        """Say there may be something to write (on the loop's thread only).

        ``eager``: if idle, start writing now rather than at the next turn.
        """
        if self._flushing:
            self._wake = True
        elif self._writing is not None or self._error is not None:
            return  # the write in flight takes what is queued when it ends
        elif eager:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._due, context=self._context)

    def close(self) -> None:
        """Let ``run`` write what is queued, then return."""
        self._closed = True
        self.wake(eager=True)

    def _due(self) -> None:
        self._scheduled = False
        self._flush()  # a no-op if a write went out meanwhile

    async def run(self) -> None:
        """Wait until closed and drained; raise a failed write's error."""
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        self._settle()
        try:
            await self._done
        except asyncio.CancelledError:
            self._abandon()
            raise

    def _settle(self) -> None:
        done = self._done
        if done is None or done.done():
            return
        if isinstance(self._error, asyncio.CancelledError):
            done.cancel()
        elif self._error is not None:
            done.set_exception(self._error)
        elif self._closed and self._writing is None and not self._pending:
            done.set_result(None)  # (a flush still due finds nothing: take() was empty)

    def _abandon(self) -> None:
        writing, self._writing = self._writing, None
        waiting, self._waiting = self._waiting, None
        self._error = self._error or asyncio.CancelledError()
        if waiting is not None:
            # as Task.cancel() does: the future the write awaits is cancelled
            # too, or gRPC would later fail it with an exception nobody reads
            # ("Future exception was never retrieved" at exit)
            waiting.cancel()
        if writing is not None:
            with contextlib.suppress(BaseException):
                writing.throw(asyncio.CancelledError())

    def _flush(self) -> None:
        """Start the next write, if any; loop while writes finish at once."""
        self._flushing = True
        try:
            while self._writing is None and self._error is None:
                self._wake = False
                if not self._pending:
                    self._pending.extend(self._take())
                    if not self._pending:
                        if self._wake:  # woken from inside take()
                            continue
                        break
                self._writing = self._write(self._pending.popleft())
                self._step(None)
        finally:
            self._flushing = False
        self._settle()

    def _step(self, error: BaseException | None) -> None:
        writing = self._writing
        assert writing is not None
        try:
            yielded = writing.send(None) if error is None else writing.throw(error)
        except StopIteration:
            self._writing = None
            return
        except BaseException as exc:  # the stream broke: run() reports it
            self._writing = None
            self._error = exc
            return
        blocking = getattr(yielded, "_asyncio_future_blocking", None)
        if blocking:  # an asyncio future, as a Task would see it
            yielded._asyncio_future_blocking = False
            self._waiting = yielded
            yielded.add_done_callback(self._resume, context=self._context)
        else:  # a bare yield: go on at the next turn
            self._loop.call_soon(self._resume, None, context=self._context)

    def _resume(self, future: asyncio.Future[Any] | None) -> None:
        if self._writing is None:  # abandoned meanwhile
            return
        self._waiting = None
        error: BaseException | None = None
        if future is not None:
            error = asyncio.CancelledError() if future.cancelled() else future.exception()
        self._step(error)
        if self._writing is None:
            self._flush()
