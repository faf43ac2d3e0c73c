"""The worker's service: runs the calls multiplexed on each caller's session.

A :class:`WorkerSession` decides what every frame means; this driver runs
the calls it starts, reports what they did back into it, and pumps its
envelopes out. The transport is anything with ``read``/``write`` (the gRPC
servicer context, or an in-memory pipe in tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import grpc
import grpc.aio

from ..._exceptions import RpcError, SerializationError, StatusCode
from ...serialization import session as s
from ...serialization.exceptions import decode_exception, encode_exception
from ...serialization.task import Task
from ...serialization.tasks import decode_arguments, decode_routine, dumps, loads
from ...serialization.wire import (
    Message,
    Output,
    Pump,
    Start,
    StepKind,
    StopReply,
    StopRequest,
    unpack,
)
from .. import contextvar
from ..context import current_proxy_var, current_task_var
from ..routine import enter_task_deadlines
from .actors import ActorScope, actor_scope_var
from .execute import invoke
from .instruments import Instruments
from .output import CallOutput, OutputSlot
from .proxies import ProxyRegistry

log = logging.getLogger(__name__)


class ServerTransport(Protocol):
    """The worker's end of one Session stream."""

    async def read(self) -> Message | None:
        """The next envelope (with its blobs), or None when the caller finished sending."""
        ...

    async def write(self, envelope: Message) -> None:
        """Send one envelope (with its blobs)."""
        ...


class _GrpcServerTransport:
    __slots__ = ("_context",)

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self._context = context

    async def read(self) -> Message | None:
        envelope = await self._context.read()
        return None if envelope is grpc.aio.EOF else envelope

    async def write(self, envelope: Message) -> None:
        await self._context.write(envelope)


class _Call(OutputSlot):
    """A call running here: its task, for generators its steps, and where its output goes.

    The call is its own output slot: a call that prints nothing costs no sink.
    """

    __slots__ = (
        "forwarding",
        "id",
        "instruments",
        "on_done",
        "routine",
        "seen",
        "served",
        "steps",
        "stopped",
        "task",
    )

    def __init__(
        self, call_id: int, generator: bool, served: _Served, instruments: Instruments
    ) -> None:
        super().__init__()
        self.id = call_id
        self.served = served
        self.instruments = instruments
        self.task: asyncio.Task[None] | None = None
        # the task's done callback: only for a task that never ran its end
        self.on_done: Callable[[asyncio.Task[None]], None] | None = None
        self.seen: contextvar.Snapshot = {}  # ContextVar values as last reported
        self.steps: asyncio.Queue[s.Stepped] | None = asyncio.Queue() if generator else None
        self.stopped = False  # cancelled by the worker stopping, not by the caller
        self.forwarding = False  # its output goes to its caller
        self.routine = "unknown"  # its qualified name, once decoded

    def open_sink(self) -> CallOutput:
        """The call's sink: its frames go out on the call's own stream."""
        return self.instruments.open_output(self.routine, self._send_output, self.served.loop)

    def _send_output(self, outputs: list[Output]) -> None:
        served = self.served
        for output in outputs:
            served.session.output(self.id, output)
        served.pump.wake()

    def flush_output(self) -> None:
        """Send the call's last output: before its final frame, which ends the stream."""
        if not self.forwarding:
            return
        monitor = self.instruments.monitor
        if monitor is not None and monitor.suspect is not None:
            monitor.closing(self.task, self)  # a call that blocked until its end says so first
        self.close()


def _changes(call: _Call) -> bytes:
    """The ContextVar values the call changed since it last reported them."""
    blob, call.seen = contextvar.changes(call.seen)
    return blob


if sys.version_info >= (3, 12):

    def _start_task(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]
    ) -> asyncio.Task[None]:
        """Run a call's first step now, in the reader's turn, as its own task.

        A call that needs no await (most short ones) is over before this
        returns, so its answer leaves in the turn that read its Start, with
        no loop turn spent scheduling it; one that awaits goes on as a task.
        """
        return asyncio.eager_task_factory(loop, coro)

else:

    def _start_task(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]
    ) -> asyncio.Task[None]:
        """Schedule a call's task (Python 3.11 has no eager start)."""
        return loop.create_task(coro)


class _Served:
    """One session being served: its state machine, pump and calls."""

    __slots__ = (
        "_load",
        "actors",
        "calls",
        "ended",
        "error",
        "handling",
        "loop",
        "pump",
        "reported",
        "session",
        "unacked",
    )

    def __init__(self, session: s.WorkerSession, transport: ServerTransport, load: Any) -> None:
        self.session = session
        self.loop = asyncio.get_running_loop()
        self.unacked: list[tuple[int, asyncio.Task[None]]] = []  # started since the last ack pass
        self.reported = 0.0
        self.pump = Pump(self._take, transport.write)
        self._load = load
        self.calls: dict[int, _Call] = {}
        self.ended = asyncio.Event()  # the caller finished sending, or we finish
        self.error: s.ProtocolError | None = None
        # the reader is handing an envelope's frames out: a call that ends in
        # its first step (eagerly started) leaves its answer for the reader's
        # wake, so the answers of the calls one envelope started share a write
        self.handling = False
        self.actors = ActorScope(session.worker)  # actors spawned over this session

    def _take(self) -> list[Message]:
        envelopes = self.session.data_to_send()
        if envelopes:
            now = time.monotonic()
            if now - self.reported >= _LOAD_EVERY:  # piggyback: no message of its own
                self.reported = now
                envelope, _ = unpack(envelopes[-1])
                self._load(envelope.load)
        return envelopes


# how often a session's outgoing envelopes carry the worker's load
_LOAD_EVERY = 0.05


class WorkerService:
    """Serves sessions; tracks in-flight calls so it can drain them.

    Args:
        proxies: where shipped proxies are restored and kept for reuse.
        on_stop: called when a Stop request has been answered.
        worker: this worker's uid (sent in the session hello).
    """

    def __init__(
        self,
        proxies: ProxyRegistry,
        on_stop: Callable[[], None],
        worker: str = "",
        *,
        max_concurrency: int | None = None,
    ) -> None:
        self._proxies = proxies
        self.max_concurrency = max_concurrency
        self.loop_lag = 0.0  # moving average of how late a call's first callback runs
        self._on_stop = on_stop
        self.worker = worker
        self.address = ""  # set once the server is bound; named in errors
        self._draining = False
        self._routines: dict[bytes, Callable[..., Any]] = {}
        self._served: set[_Served] = set()
        self._no_sessions = asyncio.Event()
        self._no_sessions.set()
        self._running: dict[asyncio.Task[None], _Call] = {}  # each call's task
        self._idle = asyncio.Event()
        self._idle.set()
        self.instruments = Instruments(worker)
        self.on_busy: Callable[[], None] = _nothing  # called when a call starts on an idle worker

    @property
    def running(self) -> int:
        """Calls running now, over all sessions."""
        return len(self._running)

    def output_of(self, task: asyncio.Task[Any]) -> OutputSlot | None:
        """Where the output of the call that ``task`` runs goes, while it runs and forwards it."""
        call = self._running.get(task)
        return call if call is not None and call.forwarding and not call.closed else None

    @property
    def sessions(self) -> int:
        """Caller sessions open now."""
        return len(self._served)

    async def session(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        """The gRPC handler of ``Session``: serve one caller's stream."""
        try:
            await self.serve(_GrpcServerTransport(context))
        except s.ProtocolError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except asyncio.CancelledError:
            # gRPC cancelled the RPC (the caller went away, or the server is
            # stopping) and the TaskGroup cancelled its calls; a servicer that
            # raises CancelledError only makes gRPC print a traceback
            return

    async def serve(self, transport: ServerTransport) -> None:
        """Serve one session until the caller stops sending and its calls end.

        Raises:
            ProtocolError: the caller broke the protocol (bad hello, replay).
        """
        session = s.WorkerSession(self.worker, draining=self._draining)
        served = _Served(session, transport, self._report_load)
        self._served.add(served)
        self._no_sessions.clear()
        try:
            async with asyncio.TaskGroup() as group:
                pump = group.create_task(served.pump.run())
                reader = group.create_task(self._read(transport, served))
                await served.ended.wait()
                reader.cancel()
                if served.error is not None:
                    raise served.error
                # let the calls still running finish, then flush and end the RPC
                while served.calls:
                    await asyncio.wait([c.task for c in served.calls.values() if c.task])
                served.pump.close()
                await pump
        except BaseExceptionGroup as group_error:  # a bug in the reader or pump: surface it
            raise group_error.exceptions[0] from group_error
        finally:
            await _cancel_calls(served)
            served.actors.close()
            self._served.discard(served)
            if not self._served:
                self._no_sessions.set()

    async def _read(self, transport: ServerTransport, served: _Served) -> None:
        # the calls' tasks start from this task's context: what is the same
        # for every call of the session is set once, here
        actor_scope_var.set(served.actors)
        try:
            while (envelope := await transport.read()) is not None:
                rejected = served.session.rejected
                served.handling = True
                try:
                    for event in served.session.receive(envelope):
                        self._handle(event, served)
                finally:
                    served.handling = False
                if served.unacked:
                    # after the first step of every call this envelope started
                    loop = served.loop
                    loop.call_soon(self._ack_unless_done, served, loop.time())
                if served.session.rejected != rejected:
                    self.instruments.refused(served.session.rejected - rejected)
                if served.session.has_data():
                    # one call on the session (it may have answered already): now
                    served.pump.wake(eager=len(served.calls) == 1)
        except s.ProtocolError as exc:
            served.error = exc
        finally:
            served.ended.set()

    def _report_load(self, load: Any) -> None:
        load.running = len(self._running)
        load.capacity = self.max_concurrency or 0
        load.loop_lag = self.loop_lag

    def _handle(self, event: s.WorkerEvent, served: _Served) -> None:
        if isinstance(event, s.Started):
            limit = self.max_concurrency
            if limit is not None and len(self._running) >= limit:
                # refused before anything is unpickled: the caller tries elsewhere
                served.session.refuse(
                    event.call, f"busy: {limit} calls running (max_concurrency={limit})", busy=True
                )
                self.instruments.refused(1, busy=True)
                return
            self._start(event.call, event.start, event.arguments, served)
            return
        call = served.calls.get(event.call)
        if call is None:
            return
        if isinstance(event, s.Stepped):
            if call.steps is not None:
                call.steps.put_nowait(event)
        elif call.task is not None:  # CancelRequested: the caller wants nothing more
            served.session.forget(event.call)
            call.task.cancel()

    def _start(self, call_id: int, start: Start, arguments: Any, served: _Served) -> None:
        call = served.calls[call_id] = _Call(call_id, start.generator, served, self.instruments)
        # before the first step, which may run (and block the loop) right here
        if not self._running:
            self.on_busy()
        self._idle.clear()
        # owned by the session: ``serve`` waits for or cancels it before it
        # returns; an eager one counted itself running in its first line
        task = _start_task(served.loop, self._run(call_id, start, arguments, call, served))
        if task.done():  # over in its eager first step (3.12+): it forgot itself
            return
        call.task = task
        self._running[task] = call  # the next Start's limit check sees it
        # a task that runs to its end forgets itself there and takes this back:
        # it fires only for one cancelled before it started (or a bug in _run)
        call.on_done = functools.partial(self._done, call_id, served)
        task.add_done_callback(call.on_done)
        # The ack goes out after the call's first step: a call that finished in
        # that step needs none (its result frame implies it), which makes a
        # short coroutine one frame and one write each way.
        served.unacked.append((call_id, task))

    def _ack_unless_done(self, served: _Served, queued: float) -> None:
        lag = served.loop.time() - queued
        self.loop_lag += (lag - self.loop_lag) * 0.1
        unacked, served.unacked = served.unacked, []
        acked = False
        for call_id, task in unacked:
            if not task.done():
                served.session.ack(call_id)
                acked = True
        if acked:
            served.pump.wake()

    def _done(self, call_id: int, served: _Served, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:  # a bug in _run
            log.error("the runner of call %d failed", call_id, exc_info=task.exception())
        self._forget(task, call_id, served)

    def _forget(self, task: asyncio.Task[None], call_id: int, served: _Served) -> None:
        """The call has ended: take it off the books (from its last step, or its done callback)."""
        call = self._running.pop(task, None)
        if call is not None:
            # the task's context holds the call (its output slot): a cycle otherwise
            call.task = None
        served.calls.pop(call_id, None)
        served.session.forget(call_id)  # no-op unless it ended without a final frame
        if not self._running:
            self._idle.set()

    def _decode(self, start: Start, arguments: Any) -> Task:
        # the proxy first: it arrives once per session, so it must be kept even
        # when this call's routine or arguments fail to decode
        proxy = self._proxies.restore(start.proxy_id, start.proxy) if start.proxy_id else None
        body = self._routines.get(start.routine)
        if body is None:
            try:
                body = decode_routine(start.routine)
            except ImportError as exc:
                self._explain_import_error(exc, start)
                raise
            if len(self._routines) >= 4096:  # routines are few; bound it anyway
                self._routines.clear()
            self._routines[start.routine] = body
        args, kwargs = decode_arguments(arguments)
        return Task.from_start(start, callable=body, args=args, kwargs=kwargs, proxy=proxy)

    def _explain_import_error(self, exc: ImportError, start: Start) -> None:
        where = f"worker {self.address or self.worker} (pid {os.getpid()})"
        log.warning("%s cannot load a routine: %s", where, exc)
        exc.add_note(
            f"raised on {where} while loading the routine: make its module importable "
            "there (install it, run `distaff worker` from the project directory, or "
            "pass `distaff worker --path DIR`)"
        )

    async def _run(
        self, call_id: int, start: Start, arguments: Any, call: _Call, served: _Served
    ) -> None:
        running = call.task  # ``_start`` put it on the books
        if running is None:
            # started eagerly (3.12+), before ``_start`` saw its task: running
            # from the first line, as this step may block the loop while
            # /metrics and load reports count the calls
            running = asyncio.current_task(served.loop)
            assert running is not None
            self._running[running] = call  # ``_forget`` takes it out
            call.task = running  # the monitor asks at its end
        session = served.session
        started = self.instruments.started()
        outcome = "error"
        try:
            task = self._decode(start, arguments)
            call.routine = getattr(task.callable, "__qualname__", "routine")
            current_task_var.set(task)
            current_proxy_var.set(task.proxy)
            enter_task_deadlines(task)
            call.seen = contextvar.apply(task.context)
            if task.output:
                call.forwarding = True
                self.instruments.capture_output(call, served.loop)
            with self.instruments.span(task, call.routine):
                if call.steps is not None:
                    async with asyncio.timeout(task.timeout):
                        await self._drive(call_id, task, call, served)
                    outcome = "ok"
                    return
                if task.timeout is None:
                    result = await invoke(task)
                else:
                    async with asyncio.timeout(task.timeout):
                        result = await invoke(task)
                payload = dumps(result, what="the result", of=task.callable)
            call.flush_output()
            session.result(call_id, payload, _changes(call))
            outcome = "ok"
        except asyncio.CancelledError:
            outcome = "cancelled"
            call.flush_output()
            if call.stopped:  # not the caller's doing: tell it why
                session.error(call_id, encode_exception(self._stopped_error()))
            raise
        except BaseException as exc:  # the caller gets every failure, typed
            outcome = "timeout" if isinstance(exc, TimeoutError) else "error"
            call.flush_output()
            try:
                context = _changes(call)
            except SerializationError:  # the failure at hand matters more
                context = b""
            session.error(call_id, encode_exception(exc), context)
        finally:
            # the only call on its session: its answer goes out in this turn
            served.pump.wake(eager=len(served.calls) == 1 and not served.handling)
            self.instruments.ended(call.routine, outcome, started)
            # last: if anything above raised, the done callback logs it
            if call.on_done is not None:
                running.remove_done_callback(call.on_done)
            self._forget(running, call_id, served)

    def _stopped_error(self) -> RpcError:
        return RpcError(
            StatusCode.CANCELLED,
            "the worker stopped before the call finished (its drain grace ran out)",
            self.address or None,
        )

    async def _drive(self, call_id: int, task: Task, call: _Call, served: _Served) -> None:
        """Step the generator as the caller asks.

        With a window, the caller only pulls: the generator runs ahead while
        it has credit, and the caller grants more as it consumes; a close or
        any other step is still seen between two items.
        """
        session, pump = served.session, served.pump
        steps = call.steps
        assert steps is not None
        agen = task.callable(*task.args, **task.kwargs)
        credit = task.window
        try:
            while True:
                if credit > 0 and steps.empty():
                    kind, payload = StepKind.STEP_NEXT, b""
                else:
                    step = (await steps.get()).step
                    if step.kind == StepKind.STEP_CREDIT:
                        credit += step.credit
                        continue
                    kind, payload = step.kind, step.payload
                try:
                    value = await self._step(agen, kind, payload)
                except StopAsyncIteration:
                    call.flush_output()
                    session.done(call_id, _changes(call))
                    return
                session.item(
                    call_id, dumps(value, what="a value yielded", of=task.callable), _changes(call)
                )
                pump.wake()
                self.instruments.item(call.routine)
                credit = max(credit - 1, 0)
        finally:
            with contextlib.suppress(RuntimeError, StopAsyncIteration):
                await agen.aclose()

    @staticmethod
    async def _step(agen: Any, kind: int, payload: bytes) -> Any:
        if kind == StepKind.STEP_NEXT:
            return await agen.asend(None)
        if kind == StepKind.STEP_SEND:
            return await agen.asend(loads(payload, what="the sent value"))
        if kind == StepKind.STEP_THROW:
            return await agen.athrow(decode_exception(payload))
        await agen.aclose()
        raise StopAsyncIteration

    async def stop(self, request: StopRequest, context: grpc.aio.ServicerContext) -> StopReply:
        """The gRPC handler of ``Stop``: drain within the grace, then stop."""
        cancelled = await self.drain(request.grace)
        context.add_done_callback(lambda _: self._on_stop())
        return StopReply(cancelled=cancelled)

    def refuse_new_calls(self, *, tell: bool = True) -> None:
        """Start draining: every session is told at once (a Drain frame).

        Callers then move new calls elsewhere before discovery says anything;
        a Start already on its way is refused, which is safe to retry. Not
        ``tell``: no Drain frame (a caller told ends its session once its
        calls are done; a worker stopping with its whole pool keeps them).
        """
        if not self._draining:
            log.info("draining: refusing new calls, %d running", self.running)
        self._draining = True
        for served in self._served:
            served.session.drain(tell=tell)
            served.pump.wake()

    async def drain(self, grace: float) -> int:
        """Refuse new calls; wait up to ``grace`` s; cancel the rest; return how many."""
        self.refuse_new_calls()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._idle.wait()
        leftover = [c for served in self._served for c in served.calls.values() if c.task]
        for call in leftover:
            call.stopped = True
            if call.task is not None:
                call.task.cancel()
        if leftover:
            await asyncio.wait([c.task for c in leftover if c.task])
        return len(leftover)

    async def finish(self, patience: float) -> None:
        """End every session cleanly once its final frames are written.

        Call after ``drain``: no call runs any more. Each caller, told of the
        drain, half-closes its stream once its calls are done; a Start that
        crossed the Drain frame on the wire is still read and refused (safe
        to retry) until then. A session whose caller stays silent for
        ``patience`` seconds is ended anyway. Each ends with an OK status
        after its last frames are written, so no stream is cut mid-call.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(patience):
                await self._no_sessions.wait()
        for served in self._served:
            served.ended.set()
        await self._no_sessions.wait()


def _nothing() -> None:
    pass


async def _cancel_calls(served: _Served) -> None:
    """Cancel the session's calls still running and wait for them to end."""
    running = [c.task for c in served.calls.values() if c.task is not None and not c.task.done()]
    for task in running:
        task.cancel()
    if running:
        await asyncio.wait(running)
