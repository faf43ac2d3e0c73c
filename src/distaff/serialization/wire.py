"""The wire: generated protobuf types, the protocol version, the write pump."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable

from .._exceptions import SerializationError
from ._generated import distaff_pb2 as pb

PROTOCOL_VERSION = 3

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
Output = pb.Output
OutputKind = pb.OutputKind
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
    "Output",
    "OutputKind",
    "Pump",
    "Start",
    "Step",
    "StepKind",
    "StopReply",
    "StopRequest",
    "split_oversized",
]


def split_oversized(envelope: pb.Envelope) -> list[pb.Envelope]:
    """``[envelope]``, or one envelope per frame if together they exceed the limit."""
    if len(envelope.frames) > 1 and envelope.ByteSize() > MAX_MESSAGE_BYTES:
        singles = []
        for frame in envelope.frames:
            single = pb.Envelope()
            single.frames.append(frame)
            singles.append(single)
        return singles
    return [envelope]


class Pump:
    """Owns a stream's write side: writes what a session has queued.

    Producers change the session without awaiting (so a ``finally`` block in
    a cancelled task can still queue a cancel) and call ``wake``; the pump
    then writes everything that piled up since its last write.

    Args:
        take: returns the envelopes ready to write (a session's ``data_to_send``).
        write: writes one envelope to the stream.
    """

    __slots__ = ("_closed", "_take", "_wake", "_write")

    def __init__(
        self,
        take: Callable[[], list[pb.Envelope]],
        write: Callable[[pb.Envelope], Awaitable[object]],
    ) -> None:
        self._take = take
        self._write = write
        self._wake = asyncio.Event()
        self._closed = False

    def wake(self) -> None:
        """Say there may be something to write."""
        self._wake.set()

    def close(self) -> None:
        """Let ``run`` write what is queued, then return."""
        self._closed = True
        self._wake.set()

    async def run(self) -> None:
        """Write until closed and drained; the owner cancels or closes it."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            for envelope in self._take():
                await self._write(envelope)
            if self._closed and not self._wake.is_set():
                return
