"""The Session stream's two ends as pure state machines (no I/O, no asyncio).

``CallerSession`` and ``WorkerSession`` own the call table and the frame
schema; the gRPC code around them only moves envelopes. What h11 and h2 are
to httpcore, these are to the worker connection and the worker service.
"""

from __future__ import annotations

from .caller import (
    FINAL,
    Accepted,
    CallerSession,
    Done,
    Draining,
    Event,
    Failed,
    Item,
    Lost,
    Output,
    Phase,
    ProtocolError,
    Ready,
    Refused,
    Result,
    StartFields,
)
from .worker import CancelRequested, Started, Stepped, WorkerEvent, WorkerSession

__all__ = [
    "FINAL",
    "Accepted",
    "CallerSession",
    "CancelRequested",
    "Done",
    "Draining",
    "Event",
    "Failed",
    "Item",
    "Lost",
    "Output",
    "Phase",
    "ProtocolError",
    "Ready",
    "Refused",
    "Result",
    "StartFields",
    "Started",
    "Stepped",
    "WorkerEvent",
    "WorkerSession",
]
