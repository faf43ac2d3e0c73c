"""LatencyAwareLoadBalancer: best of two by expected wait (latency x queue)."""

from __future__ import annotations

from typing import Any

from ._choosing import ChoosingBalancer
from .base import WorkerConnectionLike


class LatencyAwareLoadBalancer(ChoosingBalancer):
    """Compares two random workers by peak-EWMA latency times (in flight + 1).

    The latency is each connection's peak-weighted moving average of call
    completion times: a slow call counts at once, a fast one pulls it down
    gradually, and a failed or refused attempt counts as a slow call. A
    worker never measured costs nothing, so new workers are tried at once.
    Power of two choices at every pool size: O(1) per call.
    """

    exact_up_to = 2

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), ())

    def score(self, connection: WorkerConnectionLike) -> float:
        """Expected wait for one more call there."""
        return connection.latency * (connection.in_flight + 1)

    def __repr__(self) -> str:
        return "LatencyAwareLoadBalancer()"
