"""The chunk-size rule of distaff.map, without I/O."""

from __future__ import annotations

import math

from distaff.runtime.sizing import (
    BIG_CALLS_PER_WORKER,
    FLIGHT_SECONDS,
    MAX_CALL_BYTES,
    MAX_CHUNK,
    RAMP_START,
    TARGET_SECONDS,
    ChunkSizer,
)


def test_first_calls_carry_one_item() -> None:
    sizer = ChunkSizer(None, workers=2, total=None)

    assert [sizer.next_size() for _ in range(3)] == [1, 1, 1]


def test_size_aims_at_the_target_worker_time_per_call() -> None:
    sizer = ChunkSizer(None, workers=2, total=None)

    sizer.observe(1, TARGET_SECONDS / 50)  # 50 items would take the target time

    assert sizer.next_size() == 50


def test_calls_of_trivial_items_grow_by_doubling_to_the_cap() -> None:
    sizer = ChunkSizer(None, workers=2, total=None)

    sizer.observe(100, 0.0)

    sizes = [sizer.next_size() for _ in range(6)]
    assert sizes == [RAMP_START, 2048, 4096, 8192, MAX_CHUNK, MAX_CHUNK]


def test_known_length_keeps_the_last_items_spread_over_the_workers() -> None:
    sizer = ChunkSizer(None, workers=2, total=1000)
    sizer.observe(10, 10 * TARGET_SECONDS / 1000)  # 1,000 items would take the target

    sizes = []
    while sum(sizes) < 1000:
        sizes.append(sizer.next_size())

    assert sizes[0] == 250  # 1000 / (2 workers * 2)
    assert sizes[-1] < sizes[0]
    assert min(sizes[:-1]) in (124, 125)  # 1/8 of the ~1,000 the timing asks for


def test_the_tail_of_quick_items_takes_few_calls() -> None:
    sizer = ChunkSizer(None, workers=2, total=100_000)
    sizer.observe(100, 0.0)

    sizes = []
    while sum(sizes) < 100_000:
        sizes.append(sizer.next_size())

    assert len(sizes) < 25  # a short ramp, big calls, then a short tail
    assert min(sizes[5:-1]) >= MAX_CHUNK // 8


def test_big_items_make_smaller_calls() -> None:
    sizer = ChunkSizer(None, workers=2, total=None)
    sizer.observe(100, 0.0, 100 * 10_000)  # quick, but 10 kB each

    sizes = [sizer.next_size() for _ in range(4)]
    assert max(sizes) == MAX_CALL_BYTES // 10_000


def test_a_probe_per_worker_then_enough_big_calls_in_flight_for_a_few_ms() -> None:
    sizer = ChunkSizer(None, workers=2, total=None)

    probing = sizer.in_flight(32)
    sizer.next_size()
    sizer.observe(1, 1e-6)
    size = sizer.next_size()  # a big call of quick items: 1 ms of work

    assert probing == 2  # one call per worker until a timing comes back
    assert size == RAMP_START
    assert sizer.in_flight(32) == 2 * math.ceil(FLIGHT_SECONDS / (size * 1e-6))
    assert sizer.in_flight(4) == 4  # a lower concurrency stands


def test_long_big_calls_fly_a_few_per_worker() -> None:
    sizer = ChunkSizer(None, workers=2, total=None)
    sizer.observe(1, 1e-4)  # 200 items make the target of 20 ms

    assert sizer.next_size() == 200
    assert sizer.in_flight(32) == BIG_CALLS_PER_WORKER * 2


def test_a_fixed_size_flies_as_many_calls_as_make_a_few_ms() -> None:
    sizer = ChunkSizer(4096, workers=2, total=None)
    sizer.observe(4096, 4096 * 1e-7)  # 0.4 ms per call

    assert sizer.next_size() == 4096
    assert sizer.in_flight(32) == 2 * math.ceil(FLIGHT_SECONDS / (4096 * 1e-7))


def test_slow_items_keep_the_full_concurrency() -> None:
    sizer = ChunkSizer(None, workers=2, total=None)
    sizer.observe(1, 0.5)  # half a second per item: one item per call

    assert sizer.next_size() == 1
    assert sizer.in_flight(32) == 32


def test_a_fixed_size_is_used_as_given() -> None:
    sizer = ChunkSizer(7, workers=2, total=10)

    sizer.observe(7, 100.0)

    assert [sizer.next_size() for _ in range(2)] == [7, 7]


def test_a_fixed_cost_seen_on_single_items_stops_mattering_once_calls_grow() -> None:
    sizer = ChunkSizer(None, workers=2, total=None)
    for _ in range(32):
        sizer.observe(1, 100e-6)  # a thread hop dominates one-item calls

    sizes = []
    for _ in range(8):
        size = sizer.next_size()
        sizes.append(size)
        sizer.observe(size, 100e-6 + size * 1e-7)

    assert sizes[0] >= 150  # ~200 items of 100 µs: the target of 20 ms
    assert sizes[-1] == MAX_CHUNK


def test_a_fixed_size_of_slow_items_keeps_the_full_concurrency() -> None:
    sizer = ChunkSizer(100, workers=2, total=None)
    before = sizer.in_flight(32)

    sizer.observe(100, 100 * 0.05)  # 50 ms per item: waiting on I/O, say

    assert before == BIG_CALLS_PER_WORKER * 2  # assumed quick until measured
    assert not sizer.quick
    assert sizer.in_flight(32) == 32
