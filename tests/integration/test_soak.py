"""Load and chaos: many calls in flight, workers killed and restarted under load.

The short runs are part of ``make test``; the long ones are marked ``soak``
(``make soak``) and print their figures.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pathlib
import random
import re
import signal
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import distaff

from . import fault_routines as fr
from .durable import DurableWorker, durable_workers, start_worker


@dataclasses.dataclass
class Tally:
    """What became of a batch of calls."""

    ok: int = 0
    failed: Counter[str] = dataclasses.field(default_factory=Counter)
    wrong: list[tuple[int, object]] = dataclasses.field(default_factory=list)
    tokens: set[str] = dataclasses.field(default_factory=set)
    reasons: Counter[str] = dataclasses.field(default_factory=Counter)  # digits as N
    done: int = 0

    @property
    def failures(self) -> int:
        return sum(self.failed.values())


async def run_calls(
    count: int,
    in_flight: int,
    call: Callable[[int], Awaitable[Any]],
    *,
    tolerate: tuple[type[BaseException], ...] = (),
    tally: Tally | None = None,
) -> Tally:
    """Make ``count`` calls, ``in_flight`` at a time; tally every outcome.

    Each of ``in_flight`` loops takes the next index: no task per call, so the
    caller's memory reflects distaff, not the test.
    """
    tally = Tally() if tally is None else tally
    indices = iter(range(count))

    async def loop() -> None:
        for i in indices:
            try:
                result = await call(i)
            except tolerate as exc:
                tally.failed[type(exc).__name__] += 1
                tally.reasons[re.sub(r"\d+", "N", str(exc))] += 1
            else:
                if result[0] == i and result[1] not in tally.tokens:
                    tally.ok += 1
                    tally.tokens.add(result[1])
                else:
                    tally.wrong.append((i, result))
            finally:
                tally.done += 1

    async with asyncio.TaskGroup() as group:
        for _ in range(in_flight):
            group.create_task(loop())
    return tally


async def executions(pool: distaff.WorkerPool) -> int:
    """Total ``token`` executions over the pool's workers, asked of each directly."""
    counts = [await fr.call_at(m.address, fr.executed) for m in pool.proxy.workers]
    return sum(counts)


def rss_figures(pool: distaff.WorkerPool) -> dict[str, float]:
    return {"caller": fr.rss_mib(os.getpid())} | {
        f"worker {pid}": fr.rss_mib(pid) for pid in pool.pids
    }


async def load(count: int, in_flight: int) -> tuple[Tally, int, dict[str, float], dict[str, float]]:
    """Run ``count`` token calls on a two-worker pool; return tally, executions, RSS."""
    async with distaff.WorkerPool(spawn=2) as pool:
        await run_calls(1000, in_flight, lambda i: fr.echo((i, f"warm-{i}")))  # warm up
        before = rss_figures(pool)
        async with asyncio.timeout(count / 200 + 30):  # a hang fails, it does not stall
            tally = await run_calls(count, in_flight, fr.token)
        after = rss_figures(pool)
        return tally, await executions(pool), before, after


async def test_five_thousand_calls_with_five_hundred_in_flight_lose_and_repeat_nothing() -> None:
    tally, executed, _, _ = await load(5_000, 500)

    assert (tally.ok, tally.failures, tally.wrong) == (5_000, 0, [])
    assert executed == 5_000  # each call ran exactly once


@pytest.mark.soak
@pytest.mark.timeout(1800)
async def test_soak_hundred_thousand_calls_lose_nothing_and_hold_memory(
    capsys: pytest.CaptureFixture[str],
) -> None:
    tally, executed, before, after = await load(100_000, 500)

    with capsys.disabled():
        print(f"\nsoak: {tally.ok} ok, {tally.failures} failed, {len(tally.wrong)} wrong")
        for name in before:
            print(f"  RSS {name}: {before[name]:.1f} MiB -> {after[name]:.1f} MiB")
    assert (tally.ok, tally.failures, tally.wrong) == (100_000, 0, [])
    assert executed == 100_000
    assert all(after[name] < before[name] + 200 for name in before)


# chaos

CHAOS_IN_FLIGHT = 100


class Chaos:
    """Durable workers in one namespace; SIGKILLs them and starts replacements."""

    def __init__(self, ns: str, workers: list[DurableWorker]) -> None:
        self.ns = ns
        self.workers = workers  # every one started, for the final kill by PID
        self.live: list[DurableWorker] = []
        self.killed_at: list[int] = []  # calls done when each kill happened

    async def start(self) -> None:
        worker = await start_worker("--discovery", "local", "--namespace", self.ns)
        self.workers.append(worker)
        self.live.append(worker)

    async def ready(self, tally: Tally, due: int) -> None:
        """Wait until ``due`` calls are done and a victim would leave a survivor."""
        await fr.wait_until(lambda: tally.done >= due and len(self.live) > 1, timeout=120)

    def kill(self, progress: int) -> None:
        victim = self.live.pop(random.randrange(len(self.live)))
        os.kill(victim.pid, signal.SIGKILL)
        self.killed_at.append(progress)


async def chaos(
    count: int, kills: int, log: pathlib.Path, seconds: float = 0.02, workers: int = 3
) -> tuple[Tally, Chaos]:
    """``count`` calls over durable workers; ``kills`` times one dies, a new one starts.

    Each call sleeps ``seconds`` on its worker and logs its index under ``log``.
    """
    tally = Tally()
    async with durable_workers() as started:
        monkey = Chaos(fr.namespace(), started)
        for _ in range(workers):
            await monkey.start()
        async with distaff.WorkerPool(discovery=distaff.LocalDiscovery(monkey.ns)) as pool:
            await pool.proxy.wait_for(lambda ws: len(ws) == workers, timeout=30)

            async def havoc(restarts: asyncio.TaskGroup) -> None:
                for k in range(1, kills + 1):
                    await monkey.ready(tally, due=k * count // (kills + 1))
                    monkey.kill(tally.done)
                    restarts.create_task(monkey.start())  # not awaited: calls go on meanwhile

            async with asyncio.timeout(count / 50 + 60), asyncio.TaskGroup() as group:
                group.create_task(havoc(group))
                group.create_task(
                    run_calls(
                        count,
                        CHAOS_IN_FLIGHT,
                        lambda i: fr.logged_token(i, str(log), seconds),
                        tolerate=(distaff.RpcError, distaff.NoWorkersAvailable),
                        tally=tally,
                    )
                )
            # the pool ends up on exactly the live workers, replacements included
            live = {w.pid for w in monkey.live}
            await pool.proxy.wait_for(lambda ws: {m.pid for m in ws} == live, timeout=30)
    return tally, monkey


def logged_runs(log: pathlib.Path) -> Counter[int]:
    """How many times each call index ran, over every worker (killed ones too)."""
    return Counter(int(line) for path in log.iterdir() for line in path.read_text().split())


def assert_only_in_flight_calls_were_lost(tally: Tally, count: int, monkey: Chaos) -> None:
    """No wrong result; failures only for calls running on a worker as it died."""
    assert all(progress < count for progress in monkey.killed_at)  # killed under load
    assert tally.wrong == []
    assert tally.ok + tally.failures == count
    assert tally.failures <= len(monkey.killed_at) * CHAOS_IN_FLIGHT
    assert set(tally.failed) <= {"WorkerLostError"}


def report(name: str, tally: Tally, monkey: Chaos, ran: Counter[int]) -> str:
    twice = sum(1 for n in ran.values() if n > 1)
    return (
        f"{name}: {tally.ok} ok, {tally.failures} failed {dict(tally.failed)}, "
        f"{len(tally.wrong)} wrong, {twice} ran more than once; "
        f"killed at calls {monkey.killed_at}"
        + "".join(f"\n  {n} x {reason}" for reason, n in tally.reasons.most_common())
    )


@pytest.mark.slow
async def test_chaos_calls_return_right_results_or_clear_errors_while_workers_die(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    tally, monkey = await chaos(2_000, kills=2, log=tmp_path)

    with capsys.disabled():
        print("\n" + report("chaos-short", tally, monkey, logged_runs(tmp_path)))
    assert len(monkey.killed_at) == 2
    assert_only_in_flight_calls_were_lost(tally, 2_000, monkey)


@pytest.mark.soak
@pytest.mark.timeout(1800)
async def test_soak_chaos_over_twenty_thousand_calls(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    tally, monkey = await chaos(20_000, kills=10, log=tmp_path)

    with capsys.disabled():
        print("\n" + report("chaos-soak", tally, monkey, logged_runs(tmp_path)))
    assert len(monkey.killed_at) == 10
    assert_only_in_flight_calls_were_lost(tally, 20_000, monkey)
