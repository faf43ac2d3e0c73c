"""Turns: how calls enter one actor (pure asyncio, no worker)."""

from __future__ import annotations

import asyncio

import pytest

from distaff import ActorDiedError
from distaff.runtime.worker.actors import Turns


async def settle() -> None:
    """Let every runnable task take its next step (a few loop passes, no timing)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_one_turn_at_a_time_in_arrival_order() -> None:
    turns = Turns(1)
    order: list[int] = []
    gate = asyncio.Event()

    async def call(i: int) -> None:
        slot = await turns.enter(f"chain{i}")
        order.append(i)
        await gate.wait()
        turns.leave(f"chain{i}", slot)

    async with asyncio.TaskGroup() as group:
        for i in range(5):
            group.create_task(call(i))
        await settle()
        assert order == [0]
        gate.set()

    assert order == [0, 1, 2, 3, 4]


async def test_a_chain_already_inside_enters_at_once() -> None:
    turns = Turns(1)
    outer = await turns.enter("a")

    inner = await asyncio.wait_for(turns.enter("a"), 1.0)  # would deadlock without reentry

    assert (outer, inner) == (True, False)
    turns.leave("a", inner)
    turns.leave("a", outer)
    assert await asyncio.wait_for(turns.enter("b"), 1.0)


async def test_kill_fails_waiting_and_later_entries() -> None:
    turns = Turns(1)
    await turns.enter("a")
    waiting = asyncio.ensure_future(turns.enter("b"))
    await settle()

    turns.kill(ActorDiedError("x", ActorDiedError.CLOSED, "closed by a handle"))

    with pytest.raises(ActorDiedError, match="closed"):
        await waiting
    with pytest.raises(ActorDiedError, match="closed"):
        await turns.enter("c")


async def test_a_cancelled_waiter_passes_its_turn_on() -> None:
    turns = Turns(1)
    slot = await turns.enter("a")
    cancelled = asyncio.ensure_future(turns.enter("b"))
    after = asyncio.ensure_future(turns.enter("c"))
    await settle()

    turns.leave("a", slot)  # hands the slot to "b" ...
    cancelled.cancel()  # ... which is cancelled before it runs
    await settle()

    assert after.done()
    assert after.result() is True
    with pytest.raises(asyncio.CancelledError):
        await cancelled


async def test_no_limit_admits_everyone_without_slots() -> None:
    turns = Turns(None)

    slots = [await asyncio.wait_for(turns.enter(f"c{i}"), 1.0) for i in range(10)]

    assert slots == [False] * 10
