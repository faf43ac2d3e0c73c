"""Idle sessions end, so that an idle pool sends no keepalive pings; calls never notice.

Each test runs a real pool with ``DISTAFF_SESSION_IDLE`` short and reads the
worker's ``distaff_worker_sessions`` gauge over HTTP, as an operator would.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable

import pytest

import distaff
from distaff.proxy.connection import SESSION_IDLE, session_idle_from_env
from tests.integration import actor_classes as ac
from tests.integration import output_routines as r
from tests.integration import routines
from tests.integration.test_metrics import metrics_port, scrape

IDLE = 0.4  # seconds a session may stay without calls in these tests
ROOT = pathlib.Path(__file__).resolve().parents[2]


async def sessions(port: int) -> float:
    return (await scrape(port))[("distaff_worker_sessions", ())]


async def until(port: int, want: float, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while await sessions(port) != want:
            await asyncio.sleep(0.05)


async def never_below(port: int, want: float, seconds: float) -> None:
    """Watch the gauge for ``seconds`` (several idle periods); fail if it drops below."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert await sessions(port) >= want
        await asyncio.sleep(0.05)


@pytest.fixture
async def pool(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[distaff.WorkerPool]:
    monkeypatch.setenv("DISTAFF_SESSION_IDLE", str(IDLE))
    async with distaff.WorkerPool(spawn=1, metrics=True) as pool:
        yield pool


async def test_an_idle_session_ends_and_the_next_call_opens_another(
    pool: distaff.WorkerPool,
) -> None:
    port = metrics_port(pool)
    assert await routines.echo(1) == 1
    assert await sessions(port) == 1

    await until(port, 0)

    assert await routines.echo(2) == 2
    assert await sessions(port) == 1
    assert [n async for n in routines.countdown(3)] == [3, 2, 1]


async def test_a_call_longer_than_the_idle_time_keeps_its_session(
    pool: distaff.WorkerPool,
) -> None:
    port = metrics_port(pool)
    call = asyncio.ensure_future(r.snooze(4 * IDLE))
    await until(port, 1)
    await never_below(port, 1, 3 * IDLE)
    await call
    await until(port, 0)


async def test_a_suspended_stream_keeps_its_session(pool: distaff.WorkerPool) -> None:
    port = metrics_port(pool)
    stream = routines.echo_sent()
    assert await anext(stream) is None
    await never_below(port, 1, 4 * IDLE)

    assert await stream.asend("still there") == "still there"
    await stream.aclose()
    await until(port, 0)


async def test_an_actor_keeps_its_session_until_closed(pool: distaff.WorkerPool) -> None:
    port = metrics_port(pool)
    counter = await ac.Counter.spawn(10)
    await never_below(port, 1, 4 * IDLE)

    # the actor lived on: it lives as long as the session that spawned it
    assert await counter.add(5) == 15
    await counter.close()
    await until(port, 0)


async def test_many_calls_share_one_session_while_busy(pool: distaff.WorkerPool) -> None:
    port = metrics_port(pool)
    deadline = time.monotonic() + 3 * IDLE
    calls = 0
    while time.monotonic() < deadline:  # back to back: never idle for IDLE
        assert await routines.echo(calls) == calls
        calls += 1
        if calls % 50 == 0:
            assert await sessions(port) == 1
    assert calls > 50


ENDS_QUIETLY = """
    import asyncio, distaff
    from tests.integration import routines
    from tests.integration.test_idle_sessions import until
    from tests.integration.test_metrics import metrics_port

    async def main() -> None:
        async with distaff.WorkerPool(spawn=1, metrics=True) as pool:
            await routines.echo(1)
            await until(metrics_port(pool), 0)
            print(await routines.echo(2))

    asyncio.run(main())
"""


def test_an_idle_session_ends_with_nothing_printed_at_either_end() -> None:
    # the caller and its worker share the script's stderr: a stream or a
    # write that ended badly would show there (gRPC's or asyncio's complaint)
    script = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(ENDS_QUIETLY)],
        cwd=ROOT,
        env=dict(os.environ, DISTAFF_SESSION_IDLE=str(IDLE)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (script.returncode, script.stdout, script.stderr) == (0, "2\n", "")


def _env(monkeypatch: pytest.MonkeyPatch, value: str | None) -> Callable[[], float | None]:
    if value is None:
        monkeypatch.delenv("DISTAFF_SESSION_IDLE", raising=False)
    else:
        monkeypatch.setenv("DISTAFF_SESSION_IDLE", value)
    return session_idle_from_env


def test_the_idle_time_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _env(monkeypatch, None)() == SESSION_IDLE
    assert _env(monkeypatch, "2.5")() == 2.5
    assert _env(monkeypatch, "0")() is None  # never end idle sessions


@pytest.mark.parametrize("value", ["soon", "-1", "inf", "nan"])
def test_a_bad_idle_time_is_named(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    with pytest.raises(ValueError, match=f"DISTAFF_SESSION_IDLE must be .*{value!r}"):
        _env(monkeypatch, value)()


async def test_with_idle_sessions_kept_a_session_stays(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTAFF_SESSION_IDLE", "0")
    async with distaff.WorkerPool(spawn=1, metrics=True) as pool:
        port = metrics_port(pool)
        await routines.echo(1)
        await never_below(port, 1, 1.0)
