"""The chunk-size rule of distaff.map, without I/O."""

from __future__ import annotations

from distaff.runtime.sizing import MAX_CHUNK, TARGET_SECONDS, ChunkSizer


def test_first_calls_carry_one_item() -> None:
    sizer = ChunkSizer(None, workers=2, total=None)

    assert [sizer.next_size() for _ in range(3)] == [1, 1, 1]


def test_size_aims_at_the_target_worker_time_per_call() -> None:
    sizer = ChunkSizer(None, workers=2, total=None)

    sizer.observe(1, TARGET_SECONDS / 50)  # 50 items would take the target time

    assert sizer.next_size() == 50


def test_size_is_capped_for_trivial_items() -> None:
    sizer = ChunkSizer(None, workers=2, total=None)

    sizer.observe(100, 0.0)

    assert sizer.next_size() == MAX_CHUNK


def test_known_length_keeps_the_last_items_spread_over_the_workers() -> None:
    sizer = ChunkSizer(None, workers=2, total=1000)
    sizer.observe(10, 0.0)

    sizes = []
    while sum(sizes) < 1000:
        sizes.append(sizer.next_size())

    assert sizes[0] == 250  # 1000 / (2 workers * 2)
    assert sizes[-1] < sizes[0]


def test_a_fixed_size_is_used_as_given() -> None:
    sizer = ChunkSizer(7, workers=2, total=10)

    sizer.observe(7, 100.0)

    assert [sizer.next_size() for _ in range(2)] == [7, 7]


def test_a_fixed_cost_seen_on_single_items_stops_mattering_once_calls_grow() -> None:
    sizer = ChunkSizer(None, workers=2, total=None)
    for _ in range(32):
        sizer.observe(1, 100e-6)  # a thread hop dominates one-item calls

    sizes = []
    for _ in range(4):
        size = sizer.next_size()
        sizes.append(size)
        sizer.observe(size, 100e-6 + size * 1e-7)

    assert sizes[0] >= 150  # ~200 items of 100 µs: the target of 20 ms
    assert sizes[-1] == MAX_CHUNK
