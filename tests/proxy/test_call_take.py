"""RemoteCall.take(): a call's outcome read without waiting, as receive() would give it.

Over the in-memory channel (both session state machines and drivers real,
only the byte pipe replaced), so each test controls when the worker answers.
"""

from __future__ import annotations

import asyncio

import pytest

import distaff
from distaff.proxy.call import NOT_YET

from ..memory import memory_worker


async def returns(value: object) -> object:
    return value


async def fails(message: str) -> None:
    raise LookupError(message)


GATE = (
    asyncio.Event()
)  # the worker runs in this process: a global reaches it, an argument is a copy


async def waits(value: object) -> object:
    await GATE.wait()
    return value


def task(body: object, *args: object) -> distaff.Task:
    return distaff.Task(callable=body, args=args)  # type: ignore[arg-type]


async def until(condition: object, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0)


async def test_take_reads_a_call_answered_at_once_and_then_has_nothing() -> None:
    async with memory_worker() as worker:
        connection = worker.connect()
        call = await connection.dispatch(task(returns, {"a": [1, 2]}))

        assert call.take() == {"a": [1, 2]}
        assert call.take() is NOT_YET
        with pytest.raises(StopAsyncIteration):  # receive() agrees: the call has ended
            await call.receive()
        call.discard()
        await connection.aclose()


async def test_take_raises_the_routines_error_as_receive_would() -> None:
    async with memory_worker() as worker:
        connection = worker.connect()
        call = await connection.dispatch(task(fails, "no such key"))

        with pytest.raises(LookupError, match="no such key"):
            call.take()
        call.discard()
        await connection.aclose()


async def test_take_says_not_yet_while_the_call_runs_and_leaves_it_to_receive() -> None:
    global GATE  # an Event binds to the loop that first waits on it
    GATE = asyncio.Event()
    async with memory_worker() as worker:
        connection = worker.connect()
        call = await connection.dispatch(task(waits, "late"))  # acknowledged, still running

        assert call.take() is NOT_YET
        assert call.take() is NOT_YET  # taking nothing changes nothing
        GATE.set()
        assert await call.receive() == "late"
        call.discard()
        await until(lambda: worker.service.running == 0)
        await connection.aclose()
