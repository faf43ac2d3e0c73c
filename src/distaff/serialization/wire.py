"""The wire: generated protobuf types, the protocol version, frame batching."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ._generated import distaff_pb2 as pb

PROTOCOL_VERSION = 1

Envelope = pb.Envelope
Frame = pb.Frame
Start = pb.Start
Step = pb.Step
StepKind = pb.StepKind
StopRequest = pb.StopRequest
StopReply = pb.StopReply

__all__ = [
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
                await write(envelope)
            if self._closed and not self._envelope.frames:
                return
