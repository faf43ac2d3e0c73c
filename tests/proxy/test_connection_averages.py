"""A connection's latency averages: the peak-weighted moving averages of its calls.

No worker is needed: the samples are fed to the connection as its calls
would leave them, with their times given, and the averages are compared
with the peak-weighted moving average computed here step by step.
"""

from __future__ import annotations

import math
import random

import pytest

from distaff.proxy import connection as conn
from distaff.proxy.connection import WorkerConnection


def reference(samples: list[tuple[float, float, int, bool]]) -> tuple[float, float]:
    """The averages after ``(when, seconds, ahead, failed)`` samples, one at a time."""
    latency = service = then = 0.0
    for now, seconds, ahead, failed in samples:
        if failed:
            seconds = max(seconds, conn._FAILURE_PENALTY)
        share = seconds if failed else seconds / (ahead + 1)
        weight = math.exp(-(now - then) / conn._LATENCY_DECAY)
        latency = seconds if seconds > latency else latency * weight + seconds * (1 - weight)
        service = share if share > service else service * weight + share * (1 - weight)
        then = now
    return latency, service


def make_samples(count: int, seed: int) -> list[tuple[float, float, int, bool]]:
    rng = random.Random(seed)
    now, samples = 1000.0, []
    for _ in range(count):
        now += rng.uniform(0.0, 0.5)
        samples.append((now, rng.uniform(0.0, 0.3), rng.randrange(4), rng.random() < 0.05))
    return samples


@pytest.mark.parametrize("count", [1, 5, 700])
async def test_the_averages_are_those_of_every_sample_in_order(count: int) -> None:
    # Arrange
    connection = WorkerConnection("127.0.0.1:1")
    samples = make_samples(count, seed=count)

    # Act
    for now, seconds, ahead, failed in samples:
        connection._observe(seconds, ahead, failed, now)

    # Assert
    latency, service = reference(samples)
    assert connection.latency == pytest.approx(latency, rel=1e-12)
    assert connection.service_time == pytest.approx(service, rel=1e-12)
    stats = connection.statistics()
    assert (stats.latency, stats.service_time) == (connection.latency, connection.service_time)
    await connection.aclose()


async def test_a_higher_sample_counts_at_once_and_a_lower_one_decays_in() -> None:
    # Arrange
    connection = WorkerConnection("127.0.0.1:1")

    # Act, Assert: the peak takes over at once
    connection._observe(0.1, 0, False, 10.0)
    connection._observe(0.4, 0, False, 10.1)
    assert connection.latency == 0.4

    # a lower sample right after moves the average a little; long after, nearly all the way
    connection._observe(0.0, 0, False, 10.1 + 0.01)
    assert 0.39 < connection.latency < 0.4
    connection._observe(0.0, 0, False, 10.1 + 60.0)
    assert connection.latency < 0.01
    await connection.aclose()
