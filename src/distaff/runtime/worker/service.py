"""The worker's gRPC service: runs the calls multiplexed on each session."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio

from ..._exceptions import RpcError
from ...serialization.exceptions import decode_exception, encode_exception
from ...serialization.tasks import decode_arguments, decode_routine, dumps, loads
from ...serialization.wire import (
    PROTOCOL_VERSION,
    Envelope,
    Frame,
    Outbox,
    Start,
    StepKind,
    StopReply,
    StopRequest,
)
from ..context import current_proxy_var, current_task_var
from ..routine import enter_task_deadlines
from ..task import Task
from .execute import invoke
from .proxies import ProxyRegistry

log = logging.getLogger(__name__)


class _Call:
    """A call running on this worker: its task and, for generators, its steps."""

    __slots__ = ("steps", "task")

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.steps: asyncio.Queue[Frame] | None = None


class WorkerService:
    """Serves sessions; tracks in-flight calls so it can drain them.

    Args:
        proxies: where shipped proxies are restored and kept for reuse.
        on_stop: called when a Stop request has been answered.
    """

    def __init__(self, proxies: ProxyRegistry, on_stop: Callable[[], None]) -> None:
        self._proxies = proxies
        self._on_stop = on_stop
        self._draining = False
        self._routines: dict[bytes, Callable[..., Any]] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    async def session(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        """Run one caller's multiplexed call stream until it ends."""
        first = await context.read()
        if first is grpc.aio.EOF:
            return
        hello = first.frames[0].hello if first.frames else None
        if hello is None or hello.protocol != PROTOCOL_VERSION:
            got = hello.protocol if hello is not None else "none"
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"distaff wire protocol mismatch: worker speaks {PROTOCOL_VERSION}, "
                f"caller sent {got}; install matching distaff versions",
            )
        outbox = Outbox()
        # the caller sends no call before this reply: a session lost before it
        # ran nothing, so the caller may safely retry elsewhere
        outbox.add().hello.protocol = PROTOCOL_VERSION
        calls: dict[int, _Call] = {}
        try:
            async with asyncio.TaskGroup() as group:
                pump = group.create_task(outbox.pump(context.write))
                self._route(first, calls, outbox, group, skip_first=True)
                while (envelope := await context.read()) is not grpc.aio.EOF:
                    self._route(envelope, calls, outbox, group)
                # the caller is done sending: let running calls finish, then flush
                while calls:
                    await asyncio.wait([c.task for c in calls.values() if c.task])
                outbox.close()
                await pump
        except asyncio.CancelledError:
            # gRPC cancelled this RPC (the caller went away, or the server is
            # stopping); the TaskGroup has cancelled its calls. The RPC is over
            # either way, and a servicer raising CancelledError only makes
            # gRPC print a traceback.
            return

    def _route(
        self,
        envelope: Envelope,
        calls: dict[int, _Call],
        outbox: Outbox,
        group: asyncio.TaskGroup,
        *,
        skip_first: bool = False,
    ) -> None:
        frames = envelope.frames[1:] if skip_first else envelope.frames
        for frame in frames:
            kind = frame.WhichOneof("kind")
            call_id = frame.call
            if kind == "start":
                self._start(call_id, frame.start, calls, outbox, group)
            elif kind == "step":
                call = calls.get(call_id)
                if call is not None and call.steps is not None:
                    call.steps.put_nowait(frame)
            elif kind == "cancel":
                call = calls.get(call_id)
                if call is not None and call.task is not None:
                    call.task.cancel()
            else:
                log.debug("ignoring unexpected %r frame from a caller", kind)

    def _start(
        self,
        call_id: int,
        start: Start,
        calls: dict[int, _Call],
        outbox: Outbox,
        group: asyncio.TaskGroup,
    ) -> None:
        if self._draining:
            frame = outbox.add()
            frame.call = call_id
            frame.reject.reason = "the worker is draining"
            return
        call = calls[call_id] = _Call()
        if start.generator:
            call.steps = asyncio.Queue()
        task = call.task = group.create_task(self._run(call_id, start, call, outbox))
        self._running.add(task)
        self._idle.clear()
        task.add_done_callback(lambda t: self._done(t, call_id, calls))
        # The ack goes out after the call's first step: a call that finished in
        # that step needs none (its result frame implies it), which makes a
        # short coroutine one frame and one write each way.
        asyncio.get_running_loop().call_soon(self._ack_unless_done, call_id, task, outbox)

    @staticmethod
    def _ack_unless_done(call_id: int, task: asyncio.Task[None], outbox: Outbox) -> None:
        if not task.done():
            frame = outbox.add()
            frame.call = call_id
            frame.ack.SetInParent()

    def _done(self, task: asyncio.Task[None], call_id: int, calls: dict[int, _Call]) -> None:
        calls.pop(call_id, None)
        self._running.discard(task)
        if not self._running:
            self._idle.set()

    def _decode(self, start: Start) -> Task:
        # the proxy first: it arrives once per session, so it must be kept even
        # when this call's routine or arguments fail to decode
        proxy = self._proxies.restore(start.proxy_id, start.proxy) if start.proxy_id else None
        body = self._routines.get(start.routine)
        if body is None:
            body = decode_routine(start.routine)
            if len(self._routines) >= 4096:  # routines are few; bound it anyway
                self._routines.clear()
            self._routines[start.routine] = body
        args, kwargs = decode_arguments(start.arguments)
        return Task(
            callable=body,
            args=args,
            kwargs=kwargs,
            id=start.task_id,
            caller=start.caller or None,
            timeout=start.timeout or None,
            dispatch_timeout=start.dispatch_timeout or None,
            generator=start.generator,
            proxy=proxy,
            attempt=start.attempt,
        )

    async def _run(self, call_id: int, start: Start, call: _Call, outbox: Outbox) -> None:
        try:
            task = self._decode(start)
            current_task_var.set(task)
            current_proxy_var.set(task.proxy)
            enter_task_deadlines(task)
            if call.steps is not None:
                async with asyncio.timeout(task.timeout):
                    await self._drive(call_id, task, call.steps, outbox, start.window)
                return
            if task.timeout is None:
                result = await invoke(task)
            else:
                async with asyncio.timeout(task.timeout):
                    result = await invoke(task)
            payload = dumps(result, what="the result", of=task.callable)
            frame = outbox.add()
            frame.call = call_id
            frame.value.payload = payload
        except asyncio.CancelledError:
            if self._draining:  # not the caller's doing: tell it why
                frame = outbox.add()
                frame.call = call_id
                frame.error.payload = encode_exception(
                    RpcError("CANCELLED", "the worker stopped before the call finished")
                )
            raise
        except BaseException as exc:  # the caller gets every failure, typed
            frame = outbox.add()
            frame.call = call_id
            frame.error.payload = encode_exception(exc)

    async def _drive(
        self, call_id: int, task: Task, steps: asyncio.Queue[Frame], outbox: Outbox, window: int
    ) -> None:
        """Step the generator as the caller asks.

        With a ``window``, the caller only pulls: the generator runs ahead while
        it has credit, and the caller grants more as it consumes; a close or
        any other step is still seen between two items.
        """
        agen = task.callable(*task.args, **task.kwargs)
        credit = window
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
                    frame = outbox.add()
                    frame.call = call_id
                    frame.done.SetInParent()
                    return
                payload = dumps(value, what="a value yielded", of=task.callable)
                frame = outbox.add()
                frame.call = call_id
                frame.value.payload = payload
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
        """Refuse new calls, drain in-flight ones within the grace, then stop."""
        cancelled = await self.drain(request.grace)
        context.add_done_callback(lambda _: self._on_stop())
        return StopReply(cancelled=cancelled)

    async def drain(self, grace: float) -> int:
        """Refuse new calls; wait up to ``grace`` s; cancel the rest; return how many."""
        self._draining = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._idle.wait()
        leftover = list(self._running)
        for task in leftover:
            task.cancel()
        if leftover:
            await asyncio.wait(leftover)
        return len(leftover)
