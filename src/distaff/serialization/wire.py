"""The wire: generated protobuf types, the protocol version, frame batching."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable

from .._exceptions import SerializationError
from ._generated import distaff_pb2 as pb

PROTOCOL_VERSION = 2

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


Envelope = pb.Envelope
Frame = pb.Frame
Start = pb.Start
Step = pb.Step
StepKind = pb.StepKind
StopRequest = pb.StopRequest
StopReply = pb.StopReply

__all__ = [
    "MAX_MESSAGE_BYTES",
    "PROTOCOL_VERSION",
    "Envelope",
    "Frame",
    "Outbox",
    "Start",
    "Step",
    "StepKind",
    "StopReply",
    "StopRequest",
]


class Outbox:
    """Frames waiting to be written, coalesced into one envelope per write.

    Producers add frames without awaiting (so a ``finally`` block in a
    cancelled task can still send a cancel frame); one pump task owns the
    stream's write side and sends everything that piled up since its last
    write as a single message.
    """

    __slots__ = ("_closed", "_envelope", "_wake")

    def __init__(self) -> None:
        self._envelope = pb.Envelope()
        self._wake = asyncio.Event()
        self._closed = False

    def add(self) -> pb.Frame:
        """Return a new frame, queued for the next write, for the caller to fill."""
        self._wake.set()
        return self._envelope.frames.add()

    def close(self) -> None:
        """Let the pump flush what is queued, then return."""
        self._closed = True
        self._wake.set()

    async def pump(self, write: Callable[[pb.Envelope], Awaitable[object]]) -> None:
        """Write queued frames until closed; the owner cancels or closes it."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._envelope.frames:
                envelope, self._envelope = self._envelope, pb.Envelope()
                if len(envelope.frames) > 1 and envelope.ByteSize() > MAX_MESSAGE_BYTES:
                    for frame in envelope.frames:  # each frame fits; together they may not
                        single = pb.Envelope()
                        single.frames.append(frame)
                        await write(single)
                else:
                    await write(envelope)
            if self._closed and not self._envelope.frames:
                return
