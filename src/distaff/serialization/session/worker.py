"""WorkerSession: the worker's end of one Session stream, without I/O.

The driver (``runtime/worker/service.py``) feeds it the caller's envelopes
and gets events back (start this call, step it, cancel it); it reports what
each call did through the methods below, which queue whole frames. The
session guarantees the wire's rules: the hello comes first, a call id starts
at most once, every started call gets exactly one final frame, and nothing
follows it.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from ..wire import (
    DETACH_BYTES,
    PROTOCOL_VERSION,
    Envelope,
    Frame,
    Message,
    Output,
    Payload,
    Start,
    Step,
    split_oversized,
    unpack,
)
from .caller import ProtocolError, take_blob


class _State(enum.Enum):
    RUNNING = "running"
    ACKED = "acked"


# module globals: ``_State.RUNNING`` goes through EnumType's ``__getattr__`` on 3.11
_RUNNING, _ACKED = _State.RUNNING, _State.ACKED


@dataclasses.dataclass(slots=True)
class Started:
    """Run this call."""

    call: int
    start: Start
    arguments: Any  # the pickled arguments: bytes, or a slice of the received message


@dataclasses.dataclass(slots=True)
class Stepped:
    """The caller stepped a running generator call."""

    call: int
    step: Step


@dataclasses.dataclass(slots=True)
class CancelRequested:
    """The caller gave up on a running call."""

    call: int


WorkerEvent = Started | Stepped | CancelRequested


class WorkerSession:
    """The worker's state machine for one Session stream.

    Args:
        worker: this worker's uid, sent in the hello.
        draining: refuse every call from the start.
    """

    def __init__(self, worker: str = "", *, draining: bool = False) -> None:
        self.worker = worker
        self.draining = draining
        self._greeted = False
        self._calls: dict[int, _State] = {}
        self._highest = 0  # call ids only grow: one at or below it is a replay
        self._pending = Envelope()
        self._blobs: list[Payload] = []  # the large payloads _pending refers to
        self.rejected = 0  # calls refused without starting

    @property
    def open_calls(self) -> int:
        """Calls started and not yet ended."""
        return len(self._calls)

    def is_open(self, call: int) -> bool:
        """True while ``call`` runs (its final frame is not queued yet)."""
        return call in self._calls

    def has_data(self) -> bool:
        """True when ``data_to_send`` would return something."""
        return len(self._pending.frames) > 0

    def receive(self, message: Message) -> list[WorkerEvent]:
        """Apply an envelope (with its blobs) from the caller; return what to do.

        Raises:
            ProtocolError: a bad hello (the message says what to install), or
                a frame the protocol does not allow.
        """
        envelope, blobs = unpack(message)
        frames = envelope.frames
        events: list[WorkerEvent] = []
        first = 0
        if not self._greeted:
            hello = frames[0].hello if frames and frames[0].HasField("hello") else None
            if hello is None or hello.protocol != PROTOCOL_VERSION:
                got = hello.protocol if hello is not None else "no hello"
                raise ProtocolError(
                    f"distaff wire protocol mismatch: worker speaks {PROTOCOL_VERSION}, "
                    f"caller sent {got}; install matching distaff versions"
                )
            self._greeted = True
            reply = self._pending.frames.add()
            reply.hello.protocol = PROTOCOL_VERSION
            reply.hello.peer = self.worker
            if self.draining:
                self._pending.frames.add().drain.SetInParent()
            first = 1
        for index in range(first, len(frames)):
            frame = frames[index]
            kind = frame.WhichOneof("kind")
            call = frame.call
            if kind == "start":
                if call <= self._highest:
                    raise ProtocolError(f"call {call} started twice or out of order")
                self._highest = call
                if self.draining:
                    self._final(call).reject.reason = "the worker is draining"
                    self.rejected += 1
                    continue
                start = frame.start
                if start.arguments_blob:
                    arguments = take_blob(blobs, start.arguments_blob)
                else:
                    arguments = start.arguments
                self._calls[call] = _RUNNING
                events.append(Started(call, start, arguments))
            elif kind == "step":
                if call in self._calls:
                    events.append(Stepped(call, frame.step))
            elif kind == "cancel":
                if call in self._calls:
                    events.append(CancelRequested(call))
            else:
                raise ProtocolError(f"a {kind!r} frame from a caller")
        return events

    # what the calls did

    def ack(self, call: int) -> None:
        """Acknowledge a call still running after its first step."""
        if self._calls.get(call) is _RUNNING:
            self._calls[call] = _ACKED
            frame = self._pending.frames.add()
            frame.call = call
            frame.ack.SetInParent()

    def item(self, call: int, payload: Payload, context: bytes = b"") -> None:
        """A generator call yielded ``payload`` (``context``: ContextVar changes)."""
        if call in self._calls:
            frame = self._pending.frames.add()
            frame.call = call
            value = frame.value
            self._set_payload(value, payload)
            if context:
                value.context = context

    def output(self, call: int, output: Output) -> None:
        """The call printed or logged ``output``; dropped once the call has ended."""
        if call in self._calls:
            frame = self._pending.frames.add()
            frame.call = call
            frame.output.CopyFrom(output)

    def result(self, call: int, payload: Payload, context: bytes = b"") -> None:
        """Final: a coroutine call returned ``payload``."""
        if self._calls.pop(call, None) is not None:
            value = self._final(call).value
            self._set_payload(value, payload)
            if context:
                value.context = context

    def done(self, call: int, context: bytes = b"") -> None:
        """Final: a generator call finished."""
        if self._calls.pop(call, None) is not None:
            done = self._final(call).done
            done.SetInParent()
            if context:
                done.context = context

    def error(self, call: int, payload: bytes, context: bytes = b"") -> None:
        """Final: the call raised; ``payload`` is the encoded exception."""
        if self._calls.pop(call, None) is not None:
            error = self._final(call).error
            error.payload = payload
            if context:
                error.context = context

    def refuse(self, call: int, reason: str, *, busy: bool = False) -> None:
        """Final: refuse a call just started, before running any of it (safe to retry)."""
        if self._calls.get(call) is _RUNNING:
            del self._calls[call]
            reject = self._final(call).reject
            reject.reason = reason
            reject.busy = busy

    def forget(self, call: int) -> None:
        """End a call the caller cancelled: it wants no final frame."""
        self._calls.pop(call, None)

    def drain(self, *, tell: bool = True) -> None:
        """Refuse new calls from now on, and tell the caller so (unless not ``tell``)."""
        if not self.draining:
            self.draining = True
            if self._greeted and tell:
                self._pending.frames.add().drain.SetInParent()

    def _set_payload(self, value: Any, payload: Payload) -> None:
        if isinstance(payload, bytes) and len(payload) < DETACH_BYTES:
            value.payload = payload
        else:
            self._blobs.append(payload)
            value.blob = len(self._blobs)

    def _final(self, call: int) -> Frame:
        frame = self._pending.frames.add()
        frame.call = call
        return frame

    def data_to_send(self) -> list[Message]:
        """Take the queued frames as whole envelopes (with their blobs)."""
        if not self._pending.frames:
            return []
        envelope, self._pending = self._pending, Envelope()
        if self._blobs:
            blobs, self._blobs = self._blobs, []
            return split_oversized(envelope, blobs)
        return split_oversized(envelope)
