"""RoundRobinLoadBalancer: each call starts at the next worker in turn."""

from __future__ import annotations

import threading
import weakref
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
        self._positions: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
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
            workers = self._snapshots.get(context)
            start = self._positions.get(context, 0)
            for step in range(len(workers)):
                index = (start + step) % len(workers)
                metadata, connection = workers[index]
                if metadata.uid not in tried:
                    self._positions[context] = index + 1
                    return metadata, connection
            return None
