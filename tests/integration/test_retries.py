"""Opt-in retries: lost workers and listed exceptions, within the deadline."""

from __future__ import annotations

import pathlib
import time

import pytest

import distaff
from distaff.runtime.retry import RetryPolicy, lost_mid_call

from . import fanout_routines as f


def attempts(log: pathlib.Path) -> list[tuple[int, int]]:
    """(attempt, pid) of every run logged under ``log``."""
    return sorted(tuple(map(int, p.name.split("-"))) for p in log.iterdir())  # type: ignore[misc]


async def test_a_listed_exception_is_retried_and_attempts_count_from_zero() -> None:
    async with distaff.WorkerPool(spawn=2):
        assert await f.flaky(0) == 0
        assert await f.flaky(2) == 2
        with pytest.raises(ConnectionError, match="attempt 3 failed"):
            await f.flaky(5)  # retries=3: attempts 0..3


async def test_retries_stop_at_the_call_deadline() -> None:
    async with distaff.WorkerPool(spawn=1):
        started = time.monotonic()

        with pytest.raises((ConnectionError, TimeoutError)):
            await f.always_flaky()  # timeout=1.0, retries=5, 0.2 s per attempt

        assert time.monotonic() - started < 2.0


async def test_a_call_whose_worker_is_killed_runs_again_on_the_other_worker(
    tmp_path: pathlib.Path,
) -> None:
    async with distaff.WorkerPool(spawn=2) as pool:
        pids = set(pool.pids)

        attempt, pid = await f.die_on_first_attempt(str(tmp_path))

        (first_attempt, victim), (second_attempt, survivor) = attempts(tmp_path)
        assert (first_attempt, second_attempt) == (0, 1)
        assert (attempt, pid) == (1, survivor)
        assert {victim, survivor} == pids


async def test_a_generator_is_retried_until_its_first_item_only(tmp_path: pathlib.Path) -> None:
    before, after = tmp_path / "before", tmp_path / "after"
    before.mkdir()
    after.mkdir()
    async with distaff.WorkerPool(spawn=2):
        items = [item async for item in f.stream_dying_first(str(before))]

        assert [attempt for attempt, _ in items] == [1, 1]
        assert [a for a, _ in attempts(before)] == [0, 1]

        with pytest.raises(distaff.WorkerLostError, match="may have run"):
            async for _ in f.stream_dying_after_first(str(after)):
                pass
        assert len(list(after.iterdir())) == 1


def test_lost_connection_predicate() -> None:
    assert lost_mid_call(distaff.WorkerLostError("UNAVAILABLE", "lost while the call ran"))
    assert lost_mid_call(distaff.RpcError("CANCELLED", "the worker stopped before the call"))
    assert not lost_mid_call(distaff.RpcError("CANCELLED", "this caller closed the connection"))
    assert not lost_mid_call(distaff.TransientRpcError("UNAVAILABLE", "refused"))
    assert not lost_mid_call(ValueError("connection lost mid-call"))


def test_retry_options_are_checked() -> None:
    with pytest.raises(ValueError, match="retries"):
        RetryPolicy(retries=-1)
    with pytest.raises(TypeError, match="retry_on"):
        RetryPolicy(retries=1, retry_on=(KeyboardInterrupt,))
    with pytest.raises(ValueError, match="backoff"):
        RetryPolicy(retries=1, backoff=-1)
    assert 0 <= RetryPolicy(retries=1, backoff=0.5).pause(3) <= 4.0
    assert RetryPolicy(retries=1, backoff=lambda k: 0.25 * k).pause(2) == 0.5
