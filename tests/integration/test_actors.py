"""Actors end to end: real worker processes, real gRPC, real discovery."""

from __future__ import annotations

import asyncio
import os
import pathlib
import pickle
import signal
import sys
import traceback
import uuid
from asyncio.subprocess import PIPE
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import distaff

from ..waiting import wait_until
from . import actor_classes as ac
from .test_core import drive as routine_script


@pytest.fixture
async def pool() -> AsyncGenerator[distaff.WorkerPool, None]:
    async with distaff.WorkerPool(spawn=2) as pool:
        yield pool


# state, construction, handles


async def test_state_persists_across_a_thousand_calls(pool: distaff.WorkerPool) -> None:
    counter = await ac.Counter.spawn(10)

    for _ in range(1000):
        await counter.add(1)

    assert await counter.get() == 1010
    assert await counter.is_ready()  # on_start ran on the worker
    assert await counter.pid() in pool.pids


async def test_method_arguments_arrive_as_given_whatever_their_names(
    pool: distaff.WorkerPool,
) -> None:
    # Arrange: keyword names that the call's own envelope uses on the worker
    counter = await ac.Counter.spawn(0)
    args = ([1, [2, {"k": (3,)}]], "two")
    kwargs = {"actor_id": "not the actor", "method": [4], "args": (), "kwargs": {}}

    # Act
    got = await counter.echo(*args, **kwargs)

    # Assert
    assert got == (args, kwargs)


async def test_a_constructor_error_comes_back_typed_and_leaves_nothing() -> None:
    async with distaff.WorkerPool(spawn=1):
        with pytest.raises(ValueError, match="constructor refused"):
            await ac.Counter.spawn(0, fail=True)

        assert await ac.live_actors() == 0


async def test_a_handle_pickles_small_and_unpickles_without_a_pool(
    pool: distaff.WorkerPool,
) -> None:
    counter = await ac.Counter.spawn(1)
    data = pickle.dumps(counter)

    # unpickled in a fresh interpreter, with no pool and no network
    code = "import pickle, sys; h = pickle.loads(sys.stdin.buffer.read()); print(h.id, h.worker)"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdin=PIPE, stdout=PIPE, stderr=PIPE
    )
    async with asyncio.timeout(60):
        out, err = await child.communicate(data)

    assert len(data) < 400
    assert (child.returncode, err) == (0, b"")
    assert out.decode().split() == [counter.id, counter.worker]


async def test_a_handle_passed_to_a_routine_on_another_worker_calls_the_same_instance(
    pool: distaff.WorkerPool,
) -> None:
    counter = await ac.Counter.spawn(0)
    home = await counter.pid()

    results = [await ac.add_through(counter, 1) for _ in range(6)]

    assert [value for value, _ in results] == [1, 2, 3, 4, 5, 6]
    assert {pid for _, pid in results} - {home}  # some ran on the other worker
    assert await counter.get() == 6


async def test_a_handle_outside_any_pool_says_so() -> None:
    async with distaff.WorkerPool(spawn=1):
        counter = await ac.Counter.spawn(0)

    with pytest.raises(RuntimeError, match="no distaff worker pool is active"):
        await counter.get()


async def test_close_fails_waiting_and_later_calls_and_is_idempotent(
    pool: distaff.WorkerPool, tmp_path: pathlib.Path
) -> None:
    marks = str(tmp_path / "marks")
    counter = await ac.Counter.spawn(0)
    running = asyncio.ensure_future(counter.mark_then_sleep(marks, "running", 1.0))
    await wait_until(lambda: ac.read_lines(marks) == ["running"])
    # issued in this order, so the worker queues "waiting" for a turn before the close
    waiting = asyncio.ensure_future(counter.mark_then_sleep(marks, "waiting", 0.0))
    closing = asyncio.ensure_future(counter.close())

    await closing
    await counter.close()

    assert await running == "running"  # a running call finishes
    with pytest.raises(distaff.ActorDiedError, match="closed") as died:
        await waiting
    assert died.value.reason == distaff.ActorDiedError.CLOSED
    with pytest.raises(distaff.ActorDiedError):
        await counter.get()
    assert ac.read_lines(marks) == ["running"]


async def test_async_with_closes_the_actor(pool: distaff.WorkerPool) -> None:
    async with await ac.Counter.spawn(3) as counter:
        assert await counter.add(1) == 4
        other = pickle.loads(pickle.dumps(counter))

    with pytest.raises(distaff.ActorDiedError, match="closed") as died:
        await other.get()  # another handle learns it from the worker
    assert died.value.reason == distaff.ActorDiedError.CLOSED


async def test_errors_keep_their_type_and_a_traceback_without_distaff_frames(
    pool: distaff.WorkerPool,
) -> None:
    counter = await ac.Counter.spawn(0)

    with pytest.raises(KeyError, match="boom") as method_error:
        await counter.fail("boom")
    with pytest.raises(ValueError, match="constructor refused") as constructor_error:
        await ac.Counter.spawn(0, fail=True)

    package = str(pathlib.Path(distaff.__file__).parent) + os.sep
    for raised, where in ((method_error, "fail"), (constructor_error, "__init__")):
        frames = traceback.extract_tb(raised.value.__traceback__)
        assert frames[-1].name == where
        assert not any(f.filename.startswith(package) for f in frames), frames


# turns and order


@pytest.mark.parametrize(("cls", "peak"), [(ac.Counter, 1), (ac.PairCounter, 2)])
async def test_concurrency_bounds_how_many_turns_run_at_once(
    pool: distaff.WorkerPool, cls: Any, peak: int
) -> None:
    counter = await cls.spawn(0)

    await asyncio.gather(*(counter.record(i, 0.05) for i in range(6)))

    assert await counter.peak() == peak
    assert await counter.log() == list(range(6))


async def test_concurrency_none_interleaves_everything(pool: distaff.WorkerPool) -> None:
    counter = await ac.ConcurrentCounter.spawn(0)

    await asyncio.gather(*(counter.record(i, 0.2) for i in range(6)))

    assert await counter.peak() == 6


calls_plan = st.tuples(
    st.sampled_from(["Counter", "PairCounter", "ConcurrentCounter"]),
    st.lists(st.sampled_from([0.0, 0.0, 0.001, 0.01]), min_size=1, max_size=30),
)


async def issue_in_order(kind: str, pauses: list[float]) -> list[Any]:
    async with distaff.WorkerPool(spawn=1):
        counter = await getattr(ac, kind).spawn(0)
        await asyncio.gather(*(counter.record(i, pause) for i, pause in enumerate(pauses)))
        log: list[Any] = await counter.log()
        return log


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls_plan)
def test_one_callers_concurrent_calls_start_in_issue_order(
    plan: tuple[str, list[float]],
) -> None:
    kind, pauses = plan

    log = asyncio.run(issue_in_order(kind, pauses))

    assert log == list(range(len(pauses)))


async def test_self_calls_and_a_to_b_to_a_finish(pool: distaff.WorkerPool) -> None:
    a = await ac.Counter.spawn(1)
    b = await ac.Counter.spawn(2)

    async with asyncio.timeout(20):
        assert await a.self_call(a, 5) == 6
        assert await a.ping_pong(b, a) == "back:1"
        assert await b.ping_pong(a, b) == "back:2"
        assert await a.through_routine(a) == 2


async def test_a_suspended_generator_holds_no_turn(pool: distaff.WorkerPool) -> None:
    counter = await ac.Counter.spawn(0)
    stream = counter.countdown(3)

    assert await anext(stream) == 3
    async with asyncio.timeout(10):
        assert await counter.add(1) == 1  # runs between two steps
    assert [item async for item in stream] == [2, 1]


async def test_a_deadline_cancels_the_call_and_the_actor_lives_on(
    pool: distaff.WorkerPool, tmp_path: pathlib.Path
) -> None:
    counter = await ac.Counter.spawn(0)

    with pytest.raises(TimeoutError), distaff.RuntimeContext(timeout=0.3):
        await counter.mark_then_sleep(str(tmp_path / "m"), "slow", 30)

    assert await counter.add(2) == 2


# generator methods: the same behaviour as a local async generator


async def drive(gen: Any, steps: list[tuple[str, Any]]) -> list[Any]:
    """Apply ``steps`` to ``gen``; record each outcome (value or exception)."""
    outcomes: list[Any] = []
    for op, arg in steps:
        try:
            if op == "next":
                outcomes.append(await gen.asend(None))
            elif op == "send":
                outcomes.append(await gen.asend(arg))
            elif op == "throw":
                outcomes.append(await gen.athrow(arg("thrown")))
            else:
                outcomes.append(await gen.aclose())
        except BaseException as error:
            outcomes.append((type(error).__name__, str(error)))
    return outcomes


PARITY_CASES = [
    [("next", None), ("send", 1), ("send", "two"), ("close", None), ("next", None)],
    [("next", None), ("throw", ValueError), ("send", 3), ("throw", KeyError), ("next", None)],
    [("send", 5)],  # a non-None first send: TypeError, as locally
    [("throw", ValueError), ("next", None)],  # thrown before the start
    [("next", None), ("close", None), ("close", None), ("throw", ValueError)],
]


@pytest.mark.parametrize("steps", PARITY_CASES)
async def test_generator_methods_behave_like_local_async_generators(
    pool: distaff.WorkerPool, steps: list[tuple[str, Any]]
) -> None:
    local = ac.Counter(0)
    remote = await ac.Counter.spawn(0)

    expected = await drive(local.echo_sent(), steps)
    got = await drive(remote.echo_sent(), steps)

    assert got == expected
    assert await remote.log() == local.started


async def test_generator_methods_pass_the_routines_parity_script(
    pool: distaff.WorkerPool,
) -> None:
    local = await routine_script(ac.Counter(0).accumulate(1))
    remote = await routine_script((await ac.Counter.spawn(0)).accumulate(1))

    assert remote == local
    assert local[-1] == "stopped"


async def test_the_same_class_locally_and_as_an_unbounded_actor_agrees(
    pool: distaff.WorkerPool,
) -> None:
    local = ac.ConcurrentCounter(5)
    remote = await ac.ConcurrentCounter.spawn(5)

    async def script(counter: Any) -> list[Any]:
        out: list[Any] = [await counter.add(2), await counter.get()]
        try:
            await counter.fail("no such key")
        except KeyError as error:
            out.append(("KeyError", str(error)))
        out.append([item async for item in counter.countdown(4)])
        out.extend(await asyncio.gather(*(counter.add(i) for i in range(5))))
        return out

    assert await script(remote) == await script(local)


# names


async def test_a_named_actor_is_found_from_the_caller_and_from_a_worker(
    pool: distaff.WorkerPool,
) -> None:
    name = f"cache-{uuid.uuid4().hex}"
    counter = await ac.Counter.spawn(41, name=name)

    found = await distaff.get_actor(name)
    assert await found.add(1) == 42
    assert await ac.find_and_get(name) == 42  # from a routine on a worker
    with pytest.raises(ValueError, match="already exists"):
        await ac.Counter.spawn(0, name=name)

    await counter.close()
    with pytest.raises(ValueError, match="no actor named"):
        await distaff.get_actor(name)


# death


async def test_sigkill_of_the_actors_worker_fails_every_pending_and_later_call_once(
    pool: distaff.WorkerPool, tmp_path: pathlib.Path
) -> None:
    marks = str(tmp_path / "marks")
    counter = await ac.Counter.spawn(0)
    victim = await counter.pid()
    pending = [
        asyncio.ensure_future(counter.mark_then_sleep(marks, f"call{i}", 3600)) for i in range(5)
    ]
    await wait_until(lambda: ac.read_lines(marks) == ["call0"])

    os.kill(victim, signal.SIGKILL)

    async with asyncio.timeout(10):
        outcomes = await asyncio.gather(*pending, return_exceptions=True)
        with pytest.raises(distaff.ActorDiedError) as later:
            await counter.get()
    assert all(isinstance(o, distaff.ActorDiedError) for o in outcomes), outcomes
    assert {o.reason for o in outcomes} == {distaff.ActorDiedError.WORKER_LOST}  # type: ignore[union-attr]
    assert later.value.reason == distaff.ActorDiedError.WORKER_LOST
    assert ac.read_lines(marks) == ["call0"]  # nothing ran again, nothing else started


async def test_sigterm_drain_finishes_in_flight_calls_and_new_spawns_go_elsewhere(
    tmp_path: pathlib.Path,
) -> None:
    marks = str(tmp_path / "marks")
    async with distaff.WorkerPool(spawn=2, grace=10) as pool:
        counter = await ac.Counter.spawn(0)
        victim = await counter.pid()
        in_flight = [
            asyncio.ensure_future(counter.mark_then_sleep(marks, f"call{i}", 0.5)) for i in range(2)
        ]
        await wait_until(lambda: ac.read_lines(marks) == ["call0"])

        os.kill(victim, signal.SIGTERM)

        async with asyncio.timeout(20):
            assert await asyncio.gather(*in_flight) == ["call0", "call1"]
            await pool.proxy.wait_for(lambda ws: all(m.pid != victim for m in ws), timeout=10)
            with pytest.raises(distaff.ActorDiedError) as later:
                await counter.get()
            assert later.value.reason == distaff.ActorDiedError.DRAINED
            spawned = [await ac.Counter.spawn(0) for _ in range(3)]
            landed = {await s.pid() for s in spawned}
            # elsewhere: the other worker, or the replacement the pool started
            assert victim not in landed
            assert landed <= set(pool.pids)


async def test_leaving_a_pool_leaves_no_actor_on_shared_workers() -> None:
    discovery = distaff.LocalDiscovery(f"actors-{uuid.uuid4().hex}")
    async with distaff.WorkerPool(spawn=2, discovery=discovery):
        async with distaff.WorkerPool(discovery=discovery):
            handles = [await ac.Counter.spawn(i) for i in range(4)]
            assert sum([await ac.live_actors() for _ in range(4)]) > 0

        async def live() -> int:
            return sum([await ac.live_actors() for _ in range(4)])

        async with asyncio.timeout(10):
            while await live():
                await asyncio.sleep(0.05)
    assert len(handles) == 4


CHILD_CALLER = """
import asyncio, sys
import distaff
from tests.integration import actor_classes as ac

async def main(discovery, name):
    async with distaff.WorkerPool(discovery=distaff.LocalDiscovery(discovery)):
        if name == "-":
            await ac.Counter.spawn(0)
            print("spawned", flush=True)
            await asyncio.sleep(3600)
        found = await distaff.get_actor(name)
        print(await found.add(1), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def run_child(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD_CALLER, *args, stdout=PIPE, stderr=PIPE
    )


async def test_an_actor_of_a_caller_that_is_killed_goes_with_it() -> None:
    discovery = f"actors-{uuid.uuid4().hex}"
    async with distaff.WorkerPool(spawn=1, discovery=distaff.LocalDiscovery(discovery)):
        child = await run_child(discovery, "-")
        try:
            assert child.stdout is not None
            async with asyncio.timeout(60):
                assert await child.stdout.readline() == b"spawned\n"
            assert await ac.live_actors() == 1

            child.kill()  # SIGKILL: the caller never closes anything itself
            await child.wait()

            async with asyncio.timeout(10):
                while await ac.live_actors():
                    await asyncio.sleep(0.05)
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()


async def test_another_caller_process_finds_a_named_actor() -> None:
    discovery = f"actors-{uuid.uuid4().hex}"
    name = f"shared-{uuid.uuid4().hex}"
    async with distaff.WorkerPool(spawn=1, discovery=distaff.LocalDiscovery(discovery)):
        counter = await ac.Counter.spawn(9, name=name)
        child = await run_child(discovery, name)
        async with asyncio.timeout(60):
            out, err = await child.communicate()

        assert (child.returncode, err) == (0, b"")
        assert out == b"10\n"
        assert await counter.get() == 10


async def test_concurrent_calls_from_a_routine_on_a_worker_start_in_issue_order() -> None:
    async with distaff.WorkerPool(spawn=2):
        counter = await ac.Counter.spawn(0)

        logs = [await ac.issue_from_worker(counter, 20) for _ in range(2)]

    assert logs[0] == list(range(20))
    assert logs[1] == list(range(20)) * 2


async def test_an_actor_spawned_from_a_routine_outlives_its_idle_proxy_copy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DISTAFF_PROXY_IDLE", "0.1")  # workers stop idle pool copies fast
    async with distaff.WorkerPool(spawn=2):
        counter = await ac.spawn_nested(7)
        # Let several idle periods pass: this checks that nothing happens, so
        # there is no event to wait for.
        await asyncio.sleep(1.0)

        assert await counter.add(1) == 8
