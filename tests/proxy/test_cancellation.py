"""Cancellation at each phase of a call, over the in-memory channel.

Both session state machines and both drivers are the real ones; the worker
service runs in this event loop, so each test sees the remote side directly.
After every phase the connection and the service must hold no call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

import distaff
from distaff.proxy.call import RemoteCall
from distaff.proxy.connection import WorkerConnection
from distaff.runtime.worker.proxies import ProxyRegistry
from distaff.runtime.worker.service import WorkerService
from distaff.serialization import session as s
from distaff.serialization import wire

from ..memory import MemoryWorker, _ServerEnd, memory_worker

EVENTS: list[str] = []
GATE = asyncio.Event()


async def waits_for_gate(tag: str) -> str:
    EVENTS.append(f"{tag}:started")
    try:
        await GATE.wait()
        return tag
    finally:
        EVENTS.append(f"{tag}:finally")


async def counts(n: int) -> AsyncGenerator[int, None]:
    try:
        for i in range(n):
            yield i
    finally:
        EVENTS.append("counts:finally")


def task(body: object, *args: object, generator: bool = False) -> distaff.Task:
    return distaff.Task(callable=body, args=args, generator=generator)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def fresh_events() -> None:
    global GATE  # an Event binds to the loop that first waits on it: one per test
    EVENTS.clear()
    GATE = asyncio.Event()


async def until(condition: object, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0)


async def settled(worker: MemoryWorker, connection: WorkerConnection) -> None:
    """The call table is empty at both ends."""
    await until(lambda: worker.service.running == 0)
    await until(lambda: connection.statistics().in_flight == 0)


async def one_call(worker: MemoryWorker, value: str) -> WorkerConnection:
    """A connection that ran one call to the end and is idle again."""
    connection = worker.connect()
    GATE.set()
    call = await connection.dispatch(task(waits_for_gate, value))
    assert await anext(call) == value
    await settled(worker, connection)
    return connection


async def test_a_call_runs_and_returns_over_the_memory_channel() -> None:
    async with memory_worker() as worker:
        connection = await one_call(worker, "a")
        await connection.aclose()


async def test_cancel_before_the_ack_cancels_the_remote_call() -> None:
    async with memory_worker() as worker:
        connection = worker.connect()
        dispatching = asyncio.create_task(connection.dispatch(task(waits_for_gate, "b")))
        await until(lambda: "b:started" in EVENTS)
        dispatching.cancel()
        with pytest.raises(asyncio.CancelledError):
            await dispatching
        await until(lambda: "b:finally" in EVENTS)
        await settled(worker, connection)
        assert connection.statistics().failed == 1
        await connection.aclose()


async def test_cancel_while_reading_the_result_cancels_the_remote_call() -> None:
    async with memory_worker() as worker:
        connection = worker.connect()
        call = await connection.dispatch(task(waits_for_gate, "c"))
        reading = asyncio.create_task(anext(call))
        await until(lambda: worker.service.running == 1 and not call.idle)
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading
        await until(lambda: "c:finally" in EVENTS)
        await settled(worker, connection)
        await connection.aclose()


async def test_closing_a_stream_mid_way_runs_its_finally_remotely() -> None:
    async with memory_worker() as worker:
        connection = worker.connect()
        call = await connection.dispatch(task(counts, 10, generator=True))
        assert [await anext(call), await anext(call)] == [0, 1]
        await call.aclose()
        await call.aclose()  # idempotent
        assert "counts:finally" in EVENTS
        await settled(worker, connection)
        await connection.aclose()


async def test_closing_the_connection_mid_call_loses_the_call_and_cancels_it_remotely() -> None:
    async with memory_worker() as worker:
        connection = worker.connect()
        call = await connection.dispatch(task(waits_for_gate, "d"))
        await until(lambda: "d:started" in EVENTS)
        await connection.aclose()
        with pytest.raises(distaff.RpcError):
            await anext(call)
        await until(lambda: "d:finally" in EVENTS)
        await until(lambda: worker.service.running == 0)


async def test_a_stream_closed_by_its_pool_says_so_and_closes_quietly() -> None:
    async with memory_worker() as worker:
        connection = worker.connect()
        call: RemoteCall = await connection.dispatch(task(counts, 10, generator=True))
        assert await anext(call) == 0

        assert connection.close_suspended_streams("the pool exited") == 1

        await until(lambda: "counts:finally" in EVENTS)
        with pytest.raises(distaff.RpcError, match="the pool exited"):
            await anext(call)
        await call.aclose()
        await settled(worker, connection)
        await connection.aclose()


async def test_a_draining_worker_refuses_new_calls_as_retry_safe() -> None:
    async with memory_worker() as worker:
        connection = worker.connect()
        GATE.set()
        await anext(await connection.dispatch(task(waits_for_gate, "e")))
        worker.service.refuse_new_calls()
        await until(lambda: connection.draining)

        with pytest.raises(distaff.TransientRpcError, match="draining"):
            await connection.dispatch(task(waits_for_gate, "f"))
        assert "f:started" not in EVENTS
        await connection.aclose()


async def test_closing_an_idle_connection_lets_the_worker_end_the_session_with_ok() -> None:
    async with memory_worker() as worker:
        connection = await one_call(worker, "e")

        await connection.aclose()

        [session] = worker.sessions
        assert session.done()
        assert not session.cancelled()  # half-closed, then ended by the worker
        assert session.exception() is None


class _FrozenWorkerEnd:
    """A stream whose worker never answers again (a frozen process): a fault
    the in-memory worker cannot show, so it is faked here."""

    def __init__(self) -> None:
        self.half_closed = False
        self.cancelled = asyncio.Event()

    async def read(self) -> None:
        await self.cancelled.wait()
        raise distaff.RpcError("CANCELLED", "closed")

    async def write(self, envelope: object) -> None:
        pass

    async def done_writing(self) -> None:
        self.half_closed = True

    def close(self) -> None:
        self.cancelled.set()


async def test_closing_an_idle_connection_to_a_frozen_worker_cancels_after_a_moment() -> None:
    end = _FrozenWorkerEnd()
    connection = WorkerConnection("frozen:0", transport=lambda: end)
    connection._live_driver()  # the session opens, as at a first call

    async with asyncio.timeout(5):  # a quarter of a second of patience, then cancel
        await connection.aclose()

    assert end.half_closed
    assert end.cancelled.is_set()


async def test_a_call_cancelled_before_its_first_step_is_forgotten_by_the_worker() -> None:
    # Start and Cancel reach the worker in two envelopes read in one turn: on
    # 3.11 the call's task is cancelled before it ran a line (only its done
    # callback is left to forget it); on 3.12+ it started eagerly and ends
    # in its own finally. Either way the worker holds nothing afterwards.
    caller = s.CallerSession()
    (hello,) = caller.data_to_send()
    caller.ready = True  # the worker's hello is not read here: the frames are what matter
    call = caller.open_call(task(waits_for_gate, "e").start_fields())
    (start,) = caller.data_to_send()
    caller.cancel(call)
    (cancel,) = caller.data_to_send()
    incoming: asyncio.Queue[wire.Envelope | None] = asyncio.Queue()
    for envelope in (hello, start, cancel, None):
        incoming.put_nowait(envelope)
    outgoing: asyncio.Queue[wire.Envelope | None] = asyncio.Queue()
    service = WorkerService(ProxyRegistry(), on_stop=lambda: None, worker="memory")

    async with asyncio.timeout(10):
        await service.serve(_ServerEnd(incoming, outgoing))

    assert service.running == 0
    assert service.sessions == 0
    assert EVENTS in ([], ["e:started", "e:finally"])
