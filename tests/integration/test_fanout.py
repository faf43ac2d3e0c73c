"""distaff.map and distaff.as_completed on real pools."""

from __future__ import annotations

import asyncio
import pathlib
import sys
import traceback
from collections.abc import AsyncGenerator, Iterator

import pytest

import distaff

from ..waiting import wait_until
from . import fanout_routines as f


@pytest.fixture
async def pool() -> AsyncGenerator[distaff.WorkerPool, None]:
    async with distaff.WorkerPool(spawn=2) as pool:
        yield pool


def other_tasks() -> set[str]:
    """The calls a fan-out started that are still tasks (connections' own tasks aside)."""
    names = {"_one_by_one", "_chunked", "_coroutine_routine.<locals>.call"}
    coroutines = (task.get_coro() for task in asyncio.all_tasks())
    return {name for c in coroutines if (name := getattr(c, "__qualname__", "")) in names}


async def test_map_yields_results_in_input_order(pool: distaff.WorkerPool) -> None:
    one_by_one = [x async for x in distaff.map(f.square, range(200), chunksize=1)]
    sized = [x async for x in distaff.map(f.square, range(5000))]

    assert one_by_one == [x * x for x in range(200)]
    assert sized == [x * x for x in range(5000)]


async def test_map_zips_several_iterables_to_the_shortest(pool: distaff.WorkerPool) -> None:
    sums = [x async for x in distaff.map(f.add, range(10), range(100, 105))]

    assert sums == [100, 102, 104, 106, 108]


async def test_unordered_map_yields_as_calls_complete(pool: distaff.WorkerPool) -> None:
    delays = [1.5, 0.0]

    results = [
        x
        async for x in distaff.map(
            f.slow_square, [1, 2], delays, ordered=False, chunksize=1, concurrency=2
        )
    ]

    assert results == [4, 1]


async def test_ten_thousand_items_never_exceed_the_concurrency(pool: distaff.WorkerPool) -> None:
    pulled = 0
    in_flight: list[int] = []
    reports: list[tuple[int, int | None]] = []

    def items() -> Iterator[int]:
        nonlocal pulled
        for i in range(10_000):
            pulled += 1
            yield i

    def on_progress(done: int, total: int | None) -> None:
        reports.append((done, total))
        in_flight.append(pool.proxy.in_flight())

    results = distaff.map(f.square, items(), concurrency=20, chunksize=1, progress=on_progress)
    first = await anext(results)
    pulled_at_first = pulled
    rest = [x async for x in results]

    assert [first, *rest] == [x * x for x in range(10_000)]
    assert pulled_at_first <= 21  # lazy: at most the window (and the next one) read
    assert max(in_flight) <= 20
    assert [done for done, _ in reports] == list(range(1, 10_001))
    assert {total for _, total in reports} == {None}  # a generator has no length


async def test_an_exception_stops_the_map_and_cancels_calls_in_flight(
    pool: distaff.WorkerPool, tmp_path: pathlib.Path
) -> None:
    results = distaff.map(
        f.fail_or_hang,
        range(6),
        [0] * 6,
        [str(tmp_path)] * 6,
        [5] * 6,
        concurrency=6,
        chunksize=1,
    )

    with pytest.raises(ValueError, match="item 0 is bad") as caught:
        async for _ in results:
            pass

    await wait_until(lambda: len(list(tmp_path.glob("*.finished"))) == 5)
    assert other_tasks() == set()
    lines = traceback.format_exception(caught.value)
    assert any('raise ValueError(f"item {x} is bad")' in line for line in lines)


async def test_chunks_run_every_item_once_in_order(pool: distaff.WorkerPool) -> None:
    plain = [x async for x in distaff.map(f.square_plain, range(100), chunksize=7)]
    unordered = [x async for x in distaff.map(f.square, range(100), chunksize=9, ordered=False)]

    assert [value for value, _ in plain] == [x * x for x in range(100)]
    assert sorted(unordered) == [x * x for x in range(100)]


async def test_chunks_work_for_methods_and_routines_shipped_by_value(
    pool: distaff.WorkerPool,
) -> None:
    offset = 1000
    local = distaff.routine(lambda x: x + offset)  # a local: travels by value, like __main__

    scaled = [x async for x in distaff.map(f.Scaler(3).scale, range(20), chunksize=6)]
    shifted = [x async for x in distaff.map(local, range(50), chunksize=8)]
    sized = [x async for x in distaff.map(local, range(3000))]

    assert scaled == [3 * x for x in range(20)]
    assert shifted == [x + 1000 for x in range(50)]
    assert sized == [x + 1000 for x in range(3000)]


async def test_progress_counts_chunked_completions_against_the_input_length(
    pool: distaff.WorkerPool,
) -> None:
    reports: list[tuple[int, int | None]] = []

    results = [
        x
        async for x in distaff.map(
            f.square, range(1000), chunksize=64, progress=lambda d, t: reports.append((d, t))
        )
    ]

    assert len(results) == 1000
    done = [d for d, _ in reports]
    assert done == sorted(done)
    assert done[-1] == 1000
    assert len(reports) == 16  # one per call of 64 (the last has 40)
    assert {t for _, t in reports} == {1000}


async def test_progress_true_without_tqdm_or_rich_prints_a_line_on_stderr(
    pool: distaff.WorkerPool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # None in sys.modules makes the import fail, as if they were not installed
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    monkeypatch.setitem(sys.modules, "rich", None)
    monkeypatch.setitem(sys.modules, "rich.progress", None)

    results = [x async for x in distaff.map(f.square, range(300), progress=True)]

    assert len(results) == 300
    assert "square: 300/300 done" in capsys.readouterr().err


async def test_progress_true_shows_a_tqdm_bar_when_tqdm_is_installed(
    pool: distaff.WorkerPool, capsys: pytest.CaptureFixture[str]
) -> None:
    tqdm = pytest.importorskip("tqdm")  # in the test extra; a bare install falls back

    results = [x async for x in distaff.map(f.square, range(300), progress=True)]
    wrapped = [await r for r in tqdm.tqdm(distaff.as_completed(f.square(i) for i in range(3)))]

    assert len(results) == 300
    assert sorted(wrapped) == [0, 1, 4]
    err = capsys.readouterr().err
    assert "300/300" in err
    assert "3/3" in err  # tqdm took the total from len()


async def test_leaving_early_cancels_the_calls_in_flight(pool: distaff.WorkerPool) -> None:

    async with distaff.map(f.slow_square, range(100), [0.5] * 100, chunksize=1) as results:
        first = await anext(results)

    assert first == 0
    assert other_tasks() == set()
    assert pool.proxy.in_flight() == 0


async def test_a_loop_left_early_without_closing_cancels_once_dropped(
    pool: distaff.WorkerPool,
) -> None:
    seconds = [0.0] + [60.0] * 99  # the rest would run for a minute
    first = None
    async for value in distaff.map(f.slow_square, range(100), seconds, chunksize=1):
        first = value
        break  # no aclose, no async with: the dropped iterator closes itself

    assert first == 0
    await wait_until(lambda: pool.proxy.in_flight() == 0)


async def test_map_refuses_generator_routines_and_bad_sizes() -> None:
    with pytest.raises(TypeError, match="async generator"):
        distaff.map(f.numbers, [1, 2])
    with pytest.raises(ValueError, match="concurrency"):
        distaff.map(f.square, [1], concurrency=0)
    with pytest.raises(ValueError, match="chunksize"):
        distaff.map(f.square, [1], chunksize=0)

    async def local(x: int) -> int:
        return x

    with pytest.raises(TypeError, match=r"chunksize needs a @distaff\.routine"):
        distaff.map(local, [1], chunksize=4)


async def test_as_completed_has_a_length_and_yields_in_completion_order(
    pool: distaff.WorkerPool,
) -> None:
    reports: list[tuple[int, int | None]] = []
    calls = distaff.as_completed(
        [f.slow_square(1, 1.5), f.slow_square(2, 0.0)], progress=lambda d, t: reports.append((d, t))
    )

    assert len(calls) == 2
    assert [x async for x in calls] == [4, 1]
    assert reports == [(1, 2), (2, 2)]


async def test_as_completed_also_iterates_awaitables_like_asyncio(
    pool: distaff.WorkerPool,
) -> None:
    results = [await next_done for next_done in distaff.as_completed(f.square(i) for i in range(5))]

    assert sorted(results) == [0, 1, 4, 9, 16]


async def test_as_completed_closing_cancels_what_still_runs(pool: distaff.WorkerPool) -> None:

    async with distaff.as_completed([f.slow_square(i, 0.1 * i + 5) for i in range(3)]) as calls:
        pass
    async with distaff.as_completed([f.square(2), f.slow_square(1, 60)]) as calls:
        first = await anext(aiter(calls))

    assert first == 4
    assert other_tasks() == set()
