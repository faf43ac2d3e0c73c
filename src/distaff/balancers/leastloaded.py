"""LeastLoadedLoadBalancer: send each call where the fewest calls are running."""

from __future__ import annotations

from ._choosing import ChoosingBalancer
from .base import WorkerConnectionLike


class LeastLoadedLoadBalancer(ChoosingBalancer):
    """Offers the worker with the fewest calls in flight, ties broken at random.

    A worker's load is this caller's calls on it (counted at the hand-off to
    the proxy, so a burst of calls in one tick spreads evenly) plus, while
    the worker's own report is fresh (under a second old), the calls other
    callers and nested calls have there; a worker that says it is full comes
    last. Pools of up to ``exact_up_to`` workers are scanned exactly; larger
    ones compare two workers drawn at random (power of two choices), which
    is O(1) per call.

    Args:
        exact_up_to: the largest pool scanned exactly (default 16).
    """

    def score(self, connection: WorkerConnectionLike) -> float:
        """The worker's load, as best known."""
        return connection.load
