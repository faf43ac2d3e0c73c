"""RoundRobinLoadBalancer: each call starts at the next worker in turn."""

from __future__ import annotations

import threading
from typing import Any

from ..serialization.metadata import WorkerMetadata
from ._choosing import OfferLoop, Snapshots
from .base import LoadBalancerContextView, WorkerConnectionLike


class RoundRobinLoadBalancer(OfferLoop):
    """Cycles through a context's workers, one candidate at a time.

    Each context has its own position. A call's candidates start at the
    current position; the position advances past every candidate offered, won
    or failed, so concurrent calls spread over the workers. A call gives up
    (returns) after offering every worker once without success, even when
    workers are evicted meanwhile. Pickles without state: a restored balancer
    starts every context at position zero.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshots = Snapshots()

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), ())

    def choose(
        self, context: LoadBalancerContextView, tried: set[str]
    ) -> tuple[WorkerMetadata, WorkerConnectionLike] | None:
        """Return the first untried worker from this context's position, advancing past it.

        Returns None, leaving the position alone, when every worker was tried.
        """
        with self._lock:
            snapshot = self._snapshots.entry(context)
            workers = snapshot.items
            count = len(workers)
            start = snapshot.position
            for step in range(count):
                index = (start + step) % count
                metadata, connection = workers[index]
                if metadata.uid not in tried:
                    snapshot.position = index + 1
                    return metadata, connection
            return None
