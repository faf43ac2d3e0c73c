"""LatencyAwareLoadBalancer: send each call where it should end soonest."""

from __future__ import annotations

from ._choosing import ChoosingBalancer
from .base import WorkerConnectionLike


class LatencyAwareLoadBalancer(ChoosingBalancer):
    """Offers the worker with the shortest expected wait: time per call times (in flight + 1).

    The time per call is each connection's ``service_time``: a peak-weighted
    moving average of completion times, each divided by the calls this
    caller already had on the worker when it was sent, plus one (so a queue
    is not counted twice, in the times and again in the count). A slow call
    counts at once, a fast one pulls the average down gradually, and a
    failed or refused attempt counts as a slow call. A worker never measured
    costs nothing, so new workers are tried at once. Pools of up to
    ``exact_up_to`` workers are scanned exactly; larger ones compare two
    workers drawn at random (power of two choices), which is O(1) per call.

    Args:
        exact_up_to: the largest pool scanned exactly (default 16).
    """

    def score(self, connection: WorkerConnectionLike) -> float:
        """Expected wait for one more call there."""
        return connection.service_time * (connection.in_flight + 1)
