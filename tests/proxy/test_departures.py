"""Departures: why workers left a proxy's pool, bounded, read when asked."""

from __future__ import annotations

import pytest

from distaff.proxy.departures import Departures


class Connection:
    """Stands in for a WorkerConnection: Departures reads only ``draining``."""

    def __init__(self, draining: bool = False) -> None:
        self.draining = draining


def test_a_worker_that_withdrew_drained_and_one_found_gone_was_lost() -> None:
    departures = Departures()

    departures.left("a", withdrawn=True, connection=None)
    departures.left("b", withdrawn=False, connection=Connection())

    assert departures.get("a").drained  # type: ignore[union-attr]
    assert not departures.get("b").drained  # type: ignore[union-attr]
    assert departures.get("c") is None


def test_a_drain_announced_after_the_worker_left_still_counts() -> None:
    departures = Departures()
    connection = Connection()
    departures.left("a", withdrawn=False, connection=connection)

    connection.draining = True  # the Drain frame came after discovery's drop

    assert departures.get("a").drained  # type: ignore[union-attr]


def test_a_second_record_adds_to_the_first() -> None:
    departures = Departures()
    departures.left("a", withdrawn=False, connection=Connection(draining=True))

    departures.left("a", withdrawn=False, connection=None)  # evicted, then dropped

    assert departures.get("a").drained  # type: ignore[union-attr]
    assert len(departures) == 1


def test_a_worker_that_came_back_is_forgotten() -> None:
    departures = Departures()
    departures.left("a", withdrawn=False, connection=None)

    departures.returned("a")

    assert departures.get("a") is None


def test_memory_is_bounded_and_forgets_the_oldest_first() -> None:
    departures = Departures(limit=3)

    for uid in "abcde":
        departures.left(uid, withdrawn=True, connection=None)

    assert len(departures) == 3
    assert [departures.get(uid) is not None for uid in "abcde"] == [False, False, True, True, True]


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="limit must be >= 1"):
        Departures(limit=0)
