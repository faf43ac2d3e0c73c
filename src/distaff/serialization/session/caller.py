"""CallerSession: the caller's end of one Session stream, without I/O.

It owns the call table and the frames of one multiplexed stream. The driver
(``proxy/connection.py``) feeds it what the worker sent (``receive``) and
what happened to the stream (``lose``), takes whole envelopes to write
(``data_to_send``), and acts on the events it returns. Nothing here awaits,
so every interleaving can be tested without processes.

A call's phase says whether it may be sent elsewhere after a failure:

* ``QUEUED``: its Start frame is built and waiting; it was never handed to
  the transport. Losing the session now is safe to retry.
* ``WRITTEN``: the Start frame went to the transport: the worker may run it.
  From here on it is never sent again.
* ``ACCEPTED``: the worker acknowledged it (or already answered).

A call's first word from the worker is an ``Accepted`` event when it is an
acknowledgement (or output), and its answer itself (``Item``, ``Result``,
``Done``, ``Failed``) when the worker answered at once: an answer says the
call was taken, so no event is made to say it twice.

Every call ends in exactly one final event: ``Result``, ``Done``,
``Failed``, ``Refused`` (never ran), ``Lost`` or by the caller's ``cancel``.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import types
from collections.abc import Mapping
from typing import Any

from ..wire import (
    DETACH_BYTES,
    PROTOCOL_VERSION,
    Envelope,
    Message,
    Payload,
    split_oversized,
    unpack,
)
from ..wire import Output as OutputFrame


class Phase(enum.Enum):
    """Where a call stands; decides whether it may be retried elsewhere."""

    QUEUED = "queued"
    WRITTEN = "written"
    ACCEPTED = "accepted"

    @property
    def may_have_run(self) -> bool:
        """True once the Start frame may have reached the worker."""
        return self is not Phase.QUEUED


# The phases as module globals: ``Phase.QUEUED`` goes through EnumType's
# ``__getattr__`` hook on 3.11 (about 800 instructions, several per call).
_QUEUED, _WRITTEN, _ACCEPTED = Phase.QUEUED, Phase.WRITTEN, Phase.ACCEPTED


@dataclasses.dataclass(slots=True)
class StartFields:
    """What a Start frame carries, every blob already encoded.

    Building the frame from this cannot fail, so a frame is queued whole or
    not at all.
    """

    task_id: str
    routine: bytes
    arguments: Payload
    caller: str = ""
    proxy_id: str = ""
    proxy: bytes = b""
    timeout: float = 0.0
    dispatch_timeout: float = 0.0
    generator: bool = False
    window: int = 0
    attempt: int = 0
    context: bytes = b""
    chain: str = ""
    output: bool = False
    traceparent: str = ""


# Events: what the driver learns from the session. ``owner`` is whatever the
# driver passed to ``open_call`` (its per-call waiter), handed back untouched.
# They are made per frame, so they are plain slotted classes: treat them as
# read-only (a frozen dataclass would set each field through a slow path).


@dataclasses.dataclass(slots=True)
class Ready:
    """The worker answered the hello; queued calls go out now."""

    worker: str


@dataclasses.dataclass(slots=True)
class Draining:
    """The worker refuses new calls from now on; open calls still finish."""


@dataclasses.dataclass(slots=True)
class Accepted:
    """The worker acknowledged the call before answering it (an answer implies it)."""

    call: int
    owner: Any


@dataclasses.dataclass(slots=True)
class Item:
    """A generator call yielded a value."""

    call: int
    owner: Any
    payload: bytes
    context: bytes = b""  # ContextVar values the routine changed, pickled


@dataclasses.dataclass(slots=True)
class Output:
    """The call printed or logged something (not final; the call goes on)."""

    call: int
    owner: Any
    output: OutputFrame


@dataclasses.dataclass(slots=True)
class Result:
    """Final: a coroutine call returned a value."""

    call: int
    owner: Any
    payload: bytes
    context: bytes = b""


@dataclasses.dataclass(slots=True)
class Done:
    """Final: a generator call finished."""

    call: int
    owner: Any
    context: bytes = b""


@dataclasses.dataclass(slots=True)
class Failed:
    """Final: the routine raised; ``payload`` is the encoded exception."""

    call: int
    owner: Any
    payload: bytes
    context: bytes = b""


@dataclasses.dataclass(slots=True)
class Refused:
    """Final: the worker refused the call; it never ran (safe to retry)."""

    call: int
    owner: Any
    reason: str
    busy: bool = False  # at its concurrency limit, rather than draining


@dataclasses.dataclass(slots=True)
class Lost:
    """Final: the session ended before the call did."""

    call: int
    owner: Any
    may_have_run: bool


Event = Ready | Draining | Accepted | Item | Output | Result | Done | Failed | Refused | Lost
FINAL = (Result, Done, Failed, Refused, Lost)


class _Call:
    __slots__ = ("generator", "owner", "phase")

    def __init__(self, owner: Any, generator: bool) -> None:
        self.owner = owner
        self.generator = generator
        self.phase = _QUEUED


class ProtocolError(Exception):
    """The peer sent something the protocol does not allow."""


def take_blob(blobs: Any, index: int) -> Any:
    """The blob a frame refers to (``index`` is 1-based), or raise ProtocolError."""
    if not 0 < index <= len(blobs):
        raise ProtocolError(f"a frame refers to blob {index} of {len(blobs)}")
    return blobs[index - 1]


class CallerSession:
    """The caller's state machine for one Session stream."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._calls: dict[int, _Call] = {}
        # the calls that have not ended, by id: a live read-only view (the
        # driver asks its length several times per call; no property frame)
        self.calls: Mapping[int, object] = types.MappingProxyType(self._calls)
        self._pending = Envelope()
        self._blobs: list[Payload] = []  # the large payloads _pending refers to
        self._queued: list[int] = []  # calls whose Start sits in _pending
        self._hello: Envelope | None = Envelope()
        self._hello.frames.add().hello.protocol = PROTOCOL_VERSION
        self._proxies: set[str] = set()  # proxies this worker already has
        self.ready = False
        self.draining = False
        self.closed = False
        self.worker = ""

    # state the driver may read

    def phase(self, call: int) -> Phase | None:
        """The call's phase, or None once it has ended."""
        state = self._calls.get(call)
        return state.phase if state is not None else None

    def owners(self) -> list[Any]:
        """The owners of the calls that have not ended."""
        return [state.owner for state in self._calls.values()]

    @property
    def accepts_calls(self) -> bool:
        """False once the session ended or the worker announced a drain."""
        return not self.closed and not self.draining

    def has_data(self) -> bool:
        """True when ``data_to_send`` would return something."""
        if self.closed:
            return False
        if self._hello is not None:
            return True
        return self.ready and len(self._pending.frames) > 0

    # caller actions

    def open_call(self, fields: StartFields, owner: Any = None) -> int:
        """Queue a call's Start frame, whole; return the call id.

        Raises:
            ProtocolError: the session has ended or the worker is draining.
        """
        if self.closed or self.draining:  # not accepts_calls: a property costs a frame
            raise ProtocolError("the session no longer accepts calls")
        call = next(self._ids)
        frame = self._pending.frames.add()
        frame.call = call
        start = frame.start
        start.task_id = fields.task_id
        start.routine = fields.routine
        arguments = fields.arguments
        if isinstance(arguments, bytes) and len(arguments) < DETACH_BYTES:
            start.arguments = arguments
        else:
            self._blobs.append(arguments)
            start.arguments_blob = len(self._blobs)
        if fields.caller:
            start.caller = fields.caller
        if fields.proxy_id:
            start.proxy_id = fields.proxy_id
            if fields.proxy_id not in self._proxies:
                start.proxy = fields.proxy
                self._proxies.add(fields.proxy_id)
        if fields.timeout:
            start.timeout = fields.timeout
        if fields.dispatch_timeout:
            start.dispatch_timeout = fields.dispatch_timeout
        if fields.generator:
            start.generator = True
        if fields.window:
            start.window = fields.window
        if fields.attempt:
            start.attempt = fields.attempt
        if fields.context:
            start.context = fields.context
        if fields.chain:
            start.chain = fields.chain
        if fields.output:
            start.output = True
        if fields.traceparent:
            start.traceparent = fields.traceparent
        self._calls[call] = _Call(owner, fields.generator)
        self._queued.append(call)
        return call

    def step(self, call: int, kind: int, payload: bytes = b"", credit: int = 0) -> None:
        """Queue one step of a generator call (next, send, throw, close, credit)."""
        if call not in self._calls or self.closed:
            return
        frame = self._pending.frames.add()
        frame.call = call
        step = frame.step
        step.kind = kind  # type: ignore[assignment]
        if payload:
            step.payload = payload
        if credit:
            step.credit = credit

    def cancel(self, call: int) -> bool:
        """End a call at the caller's wish; return True if it was open.

        A call still queued is taken back (it never reaches the worker); one
        already written gets a Cancel frame.
        """
        state = self._calls.pop(call, None)
        if state is None:
            return False
        if state.phase is _QUEUED:
            self._unqueue(call)
        elif not self.closed:
            frame = self._pending.frames.add()
            frame.call = call
            frame.cancel.SetInParent()
        return True

    def _unqueue(self, call: int) -> None:
        self._queued.remove(call)
        frames = self._pending.frames
        for index, frame in enumerate(frames):
            if frame.call == call and frame.HasField("start"):
                if frame.start.arguments_blob:  # keep the other blobs' numbers
                    self._blobs[frame.start.arguments_blob - 1] = b""
                del frames[index]
                # a proxy blob must travel with the next call that names it
                if frame.start.proxy:
                    self._proxies.discard(frame.start.proxy_id)
                return

    def data_to_send(self) -> list[Message]:
        """Take what is ready to write, as whole envelopes (with their blobs).

        Before the worker's hello only our hello goes out: no call can reach a
        worker that has not answered. Starts handed out here become WRITTEN.
        """
        if self.closed:
            return []
        if self._hello is not None:
            hello, self._hello = self._hello, None
            return [hello]
        if not self.ready or not self._pending.frames:
            return []
        envelope, self._pending = self._pending, Envelope()
        for call in self._queued:
            state = self._calls.get(call)
            if state is not None:
                state.phase = _WRITTEN
        self._queued = []
        if self._blobs:
            blobs, self._blobs = self._blobs, []
            return split_oversized(envelope, blobs)
        return split_oversized(envelope)

    # what the worker sent, and what happened to the stream

    def receive(self, message: Message) -> list[Event]:
        """Apply an envelope (with its blobs) from the worker; return the events it caused.

        Raises:
            ProtocolError: a frame the protocol does not allow here.
        """
        envelope, blobs = unpack(message)
        events: list[Event] = []
        for frame in envelope.frames:
            kind = frame.WhichOneof("kind")
            if kind == "hello":
                if self.ready:
                    raise ProtocolError("a second hello")
                self.ready = True
                self.worker = frame.hello.peer
                events.append(Ready(self.worker))
                continue
            if kind == "drain":
                self.draining = True
                events.append(Draining())
                # what it has not been sent yet it would refuse: refuse it here
                for queued in list(self._queued):
                    owner = self._calls.pop(queued).owner
                    self._unqueue(queued)
                    events.append(Refused(queued, owner, "the worker is draining"))
                continue
            if not self.ready:
                raise ProtocolError(f"a {kind!r} frame before the hello")
            call = frame.call
            state = self._calls.get(call)
            if state is None:
                continue  # a call we cancelled: its late frames mean nothing
            if kind == "reject":
                if state.phase is not _WRITTEN:
                    raise ProtocolError(f"a reject for call {call} after it was accepted")
                del self._calls[call]
                reject = frame.reject
                events.append(Refused(call, state.owner, reject.reason or "refused", reject.busy))
                continue
            if state.phase is _QUEUED:
                raise ProtocolError(f"a {kind!r} frame for call {call}, never sent")
            if state.phase is _WRITTEN:
                state.phase = _ACCEPTED
                if kind == "ack" or kind == "output":  # an answer says so by itself
                    events.append(Accepted(call, state.owner))
            if kind == "ack":
                continue
            if kind == "output":
                events.append(Output(call, state.owner, frame.output))
                continue
            if kind == "value":
                value = frame.value
                payload = value.payload if not value.blob else take_blob(blobs, value.blob)
                if state.generator:
                    events.append(Item(call, state.owner, payload, value.context))
                    continue
                del self._calls[call]
                events.append(Result(call, state.owner, payload, value.context))
            elif kind == "done":
                del self._calls[call]
                events.append(Done(call, state.owner, frame.done.context))
            elif kind == "error":
                del self._calls[call]
                error = frame.error
                events.append(Failed(call, state.owner, error.payload, error.context))
            else:
                raise ProtocolError(f"a {kind!r} frame from a worker")
        return events

    def lose(self) -> list[Lost]:
        """The stream ended (or broke): end every open call; return their events."""
        self.closed = True
        self._pending = Envelope()
        self._queued = []
        lost = [
            Lost(call, state.owner, state.phase.may_have_run) for call, state in self._calls.items()
        ]
        self._calls.clear()
        return lost
