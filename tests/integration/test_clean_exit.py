"""Leaving a pool is quiet and prompt: nothing on stderr, no stream holding the exit."""

from __future__ import annotations

import asyncio
import pathlib
import subprocess
import sys
import textwrap

import pytest

import distaff

from . import routines as r

ROOT = pathlib.Path(__file__).resolve().parents[2]


def run_script(source: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


BIG_POOL = """
    import asyncio, distaff

    @distaff.routine
    async def one() -> int:
        return 1

    async def main() -> None:
        async with distaff.WorkerPool(spawn=32):
            assert sum(await asyncio.gather(*(one() for _ in range(64)))) == 64

    asyncio.run(main())
"""


@pytest.mark.slow  # 32 workers twice: the full suite runs it, make test-fast does not
@pytest.mark.parametrize("attempt", range(2))
def test_the_demo_and_a_32_worker_pool_leave_stderr_empty(attempt: int) -> None:
    demo = subprocess.run(
        [sys.executable, "examples/demo.py"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    big = run_script(BIG_POOL)

    assert (demo.returncode, demo.stderr) == (0, "")
    assert (big.returncode, big.stderr) == (0, "")


OPEN_STREAMS = """
    import asyncio, pathlib, sys, time, distaff

    @distaff.routine
    async def step_by_step(marker: str):
        try:
            for i in range(100):
                yield i
        finally:
            pathlib.Path(marker).touch()

    @distaff.routine(window=4)
    async def read_ahead(n: int):
        for i in range(n):
            yield i

    async def main() -> None:
        async with distaff.WorkerPool(spawn=1, grace=10):
            left_open = step_by_step(sys.argv[1])
            ahead = read_ahead(1000)
            assert (await anext(left_open), await anext(ahead)) == (0, 0)
            began = time.monotonic()
        print(f"{time.monotonic() - began:.3f}")

    asyncio.run(main())
"""


def test_streams_left_open_are_closed_promptly_and_quietly_when_the_pool_exits(
    tmp_path: pathlib.Path,
) -> None:
    marker = tmp_path / "closed"

    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(OPEN_STREAMS), str(marker)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert (result.returncode, result.stderr) == (0, "")
    assert float(result.stdout) < 2.0  # not the 10 s grace
    assert marker.exists()  # the generator's finally ran on the worker


async def test_a_stream_used_after_its_pool_exited_says_so() -> None:
    async with distaff.WorkerPool(spawn=1):
        stream = r.countdown(5)
        assert await anext(stream) == 5

    with pytest.raises(distaff.RpcError, match="closed when its WorkerPool exited"):
        await anext(stream)
    await stream.aclose()  # quiet


async def test_a_misused_read_ahead_stream_names_the_misuse_and_keeps_its_items() -> None:
    async with distaff.WorkerPool(spawn=1):
        stream = r.numbers(10)
        assert await anext(stream) == 0

        with pytest.raises(TypeError, match=r"asend\(\) with a value.*window=64"):
            await stream.asend(7)
        with pytest.raises(TypeError, match=r"athrow\(\).*window=64"):
            await stream.athrow(ValueError("x"))

        assert [i async for i in stream] == list(range(1, 10))


async def test_remote_generators_start_and_finish_like_local_ones() -> None:
    async def local(n: int):  # type: ignore[no-untyped-def]
        while n:
            yield n
            n -= 1

    async with distaff.WorkerPool(spawn=1):
        for make in (local, r.countdown):
            fresh = make(3)
            with pytest.raises(TypeError, match="just-started"):
                await fresh.asend(1)
            thrown = make(3)
            with pytest.raises(KeyError):
                await thrown.athrow(KeyError("k"))
            with pytest.raises(StopAsyncIteration):
                await anext(thrown)  # a generator that raised is finished
            done = make(1)
            assert [i async for i in done] == [1]
            with pytest.raises(StopAsyncIteration):
                await anext(done)
            assert await done.athrow(ValueError("v")) is None  # finished: ignored
            await done.aclose()
        await asyncio.sleep(0)
