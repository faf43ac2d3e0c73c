"""Why an actor died, in every order of events: real workers, signals and discovery.

A drain (SIGTERM) must read "drained" whether the caller heard the worker's
Drain frame before its call, during it, or only saw the worker leave
discovery; a SIGKILL reads "worker lost". A fresh copy of a handle (which
has seen nothing itself) must say the same as the handle that saw it.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import pickle
import signal
import uuid
from typing import Any

import pytest

import distaff
import distaff.runtime.actors as actors_module

from ..waiting import wait_until
from . import actor_classes as ac

DRAINED = distaff.ActorDiedError.DRAINED
LOST = distaff.ActorDiedError.WORKER_LOST


def fresh(handle: distaff.ActorHandle[Any]) -> distaff.ActorHandle[Any]:
    """A copy of ``handle`` that has seen nothing (as a routine elsewhere would get)."""
    copy: distaff.ActorHandle[Any] = pickle.loads(pickle.dumps(handle))
    return copy


async def reason(call: Any) -> str:
    """The reason of the ActorDiedError that awaiting ``call`` raises, within 10 s."""
    async with asyncio.timeout(10):
        with pytest.raises(distaff.ActorDiedError) as died:
            await call
    return died.value.reason


def exited(pid: int) -> bool:
    """True once process ``pid`` has exited (a zombie counts)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except OSError:  # gone; reading a process being reaped can fail with ESRCH
        return True


def listed(proxy: distaff.WorkerProxy, uid: str) -> bool:
    return any(m.uid == uid for m in proxy.workers)


def draining(proxy: distaff.WorkerProxy, uid: str) -> bool:
    """Whether the proxy's connection to ``uid`` heard the worker's Drain frame."""
    return any(
        m.uid == uid and getattr(c, "draining", False) for m, c in proxy.context.workers.items()
    )


def discovery() -> distaff.LocalDiscovery:
    return distaff.LocalDiscovery(f"deaths-{uuid.uuid4().hex}")


async def hold(counter: Any, tmp_path: pathlib.Path) -> tuple[asyncio.Future[Any], pathlib.Path]:
    """Start a call that runs until the returned gate file exists; wait until it runs."""
    marks, gate = str(tmp_path / "marks"), tmp_path / "gate"
    held = asyncio.ensure_future(counter.mark_then_hold(marks, "held", str(gate)))
    await wait_until(lambda: ac.read_lines(marks) == ["held"])
    return held, gate


async def test_drain_heard_before_the_call_while_the_worker_is_still_listed(
    tmp_path: pathlib.Path,
) -> None:
    # discovery that never reports a departure: the Drain frame is all the caller learns
    slow = ac.DropBlindDiscovery(discovery())
    async with distaff.WorkerPool(spawn=1, discovery=slow, grace=30) as pool:
        counter = await ac.Counter.spawn(0)
        victim = await counter.pid()
        held, gate = await hold(counter, tmp_path)

        os.kill(victim, signal.SIGTERM)
        await wait_until(lambda: draining(pool.proxy, counter.worker))

        assert listed(pool.proxy, counter.worker)
        assert await reason(counter.get()) == DRAINED
        assert not held.done()  # the held call still runs
        gate.touch()
        async with asyncio.timeout(20):
            assert await held == "held"
        await wait_until(lambda: exited(victim), 20)
        assert listed(pool.proxy, counter.worker)  # still: only the session knows
        assert await reason(fresh(counter).get()) == DRAINED


async def test_drain_during_the_call_that_outlives_the_grace(tmp_path: pathlib.Path) -> None:
    async with distaff.WorkerPool(spawn=2, grace=1.0) as pool:
        counter = await ac.Counter.spawn(0)
        victim = await counter.pid()
        held, _ = await hold(counter, tmp_path)  # its gate never opens

        os.kill(victim, signal.SIGTERM)

        assert await reason(held) == DRAINED
        assert await reason(counter.get()) == DRAINED
        await pool.proxy.wait_for(lambda ws: all(m.uid != counter.worker for m in ws), 10)
        assert await reason(fresh(counter).get()) == DRAINED


async def test_drain_seen_only_as_a_departure_by_a_pool_that_never_called_the_worker(
    tmp_path: pathlib.Path,
) -> None:
    shared = discovery()
    async with distaff.WorkerPool(spawn=2, discovery=shared, grace=30):
        counter = await ac.Counter.spawn(0)
        victim = await counter.pid()
        held, gate = await hold(counter, tmp_path)  # keeps the draining worker alive
        async with distaff.WorkerPool(discovery=shared) as other:
            await other.proxy.wait_for(lambda ws: listed(other.proxy, counter.worker), 10)
            stranger = fresh(counter)

            os.kill(victim, signal.SIGTERM)
            await other.proxy.wait_for(lambda ws: not listed(other.proxy, counter.worker), 10)

            assert await reason(stranger.get()) == DRAINED
            assert not draining(other.proxy, counter.worker)  # it never heard the Drain frame
        gate.touch()
        async with asyncio.timeout(20):
            assert await held == "held"


async def test_sigkill_reads_worker_lost_for_every_handle_in_every_pool() -> None:
    shared = discovery()
    async with distaff.WorkerPool(spawn=2, discovery=shared) as pool:
        counter = await ac.Counter.spawn(0)
        victim = await counter.pid()
        async with distaff.WorkerPool(discovery=shared) as other:
            await other.proxy.wait_for(lambda ws: listed(other.proxy, counter.worker), 10)
            stranger = fresh(counter)

            os.kill(victim, signal.SIGKILL)
            await other.proxy.wait_for(lambda ws: not listed(other.proxy, counter.worker), 10)

            assert await reason(stranger.get()) == LOST
        await pool.proxy.wait_for(lambda ws: not listed(pool.proxy, counter.worker), 10)
        assert await reason(counter.get()) == LOST
        assert await reason(fresh(counter).get()) == LOST


async def test_a_closed_actor_reads_closed_for_a_fresh_handle_too() -> None:
    async with distaff.WorkerPool(spawn=1):
        counter = await ac.Counter.spawn(0)

        await counter.close()

        assert await reason(counter.get()) == distaff.ActorDiedError.CLOSED
        assert await reason(fresh(counter).get()) == distaff.ActorDiedError.CLOSED


async def test_a_handle_to_an_actor_whose_constructor_failed_reads_constructor_failed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # spawn makes the actor's id and never shows it when the constructor fails;
    # fixing the id is the only way to hold a handle to such an actor
    actor_id = f"doomed-{uuid.uuid4().hex}"
    monkeypatch.setattr(actors_module, "new_task_id", lambda: actor_id)
    async with distaff.WorkerPool(spawn=1) as pool:
        with pytest.raises(ValueError, match="constructor refused"):
            await ac.Counter.spawn(0, fail=True)
        [worker] = pool.proxy.workers

        handle = distaff.ActorHandle(actor_id, worker.uid, ac.Counter)

        assert await reason(handle.get()) == distaff.ActorDiedError.CONSTRUCTOR_FAILED
