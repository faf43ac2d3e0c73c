"""What the load-aware balancers share: the delegate loop and cached snapshots."""

from __future__ import annotations

import random
import weakref
from collections.abc import AsyncGenerator
from typing import Any

from ..serialization.metadata import WorkerMetadata
from .base import LoadBalancerContextView, WorkerConnectionLike

Candidate = tuple[WorkerMetadata, WorkerConnectionLike]


class Snapshot:
    """One context's workers as a list, and what a balancer keeps with it."""

    __slots__ = ("items", "position", "version")

    def __init__(self, version: int | None, items: list[Candidate], position: int = 0) -> None:
        self.version = version
        self.items = items
        self.position = position  # round robin's next start; survives a change of workers


class Snapshots:
    """Each context's workers as a list, rebuilt only when the context changes.

    A context with a ``version`` counter (``LoadBalancerContext`` has one) is
    copied once per change, so choosing stays O(1) per dispatch however large
    the pool; any other context is copied on every call. The context asked
    for last is found without a dictionary lookup: a proxy asks for the same
    one call after call.
    """

    def __init__(self) -> None:
        self._cache: weakref.WeakKeyDictionary[Any, Snapshot] = weakref.WeakKeyDictionary()
        self._last: tuple[weakref.ref[Any], Snapshot] | None = None

    def get(self, context: LoadBalancerContextView) -> list[Candidate]:
        """The context's ``(metadata, connection)`` pairs, in admission order."""
        return self.entry(context).items

    def entry(self, context: LoadBalancerContextView) -> Snapshot:
        """The context's snapshot, current with its workers."""
        version = getattr(context, "version", None)
        last = self._last
        if last is not None and last[0]() is context:
            snapshot = last[1]
        else:
            cached = self._cache.get(context)
            if cached is None:
                cached = Snapshot(None, [])
                try:
                    self._cache[context] = cached
                except TypeError:  # not weakly referenceable: no cache
                    return Snapshot(None, list(context.workers.items()))
            snapshot = cached
            self._last = (weakref.ref(context), snapshot)
        if version is None or snapshot.version != version:
            snapshot.items = list(context.workers.items())
            snapshot.version = version
        return snapshot


class OfferLoop:
    """The seed protocol's loop around a ``choose`` that picks an untried worker.

    A failure (``athrow``) moves on to the next choice, a success (``asend``)
    ends the generator, and it ends by itself once ``choose`` finds nobody
    left to try (eviction during the call included).
    """

    def choose(self, context: LoadBalancerContextView, tried: set[str]) -> Candidate | None:
        """The next worker to offer, not in ``tried`` (uids); None: nobody left."""
        raise NotImplementedError

    async def delegate(
        self, *, context: LoadBalancerContextView
    ) -> AsyncGenerator[Candidate, WorkerMetadata | None]:
        """Offer candidates until one wins or all were tried."""
        tried: set[str] = set()
        while (candidate := self.choose(context, tried)) is not None:
            tried.add(candidate[0].uid)
            try:
                winner = yield candidate
            except Exception:
                continue
            if winner is not None:
                return


class ChoosingBalancer(OfferLoop):
    """A delegating balancer that offers, each time, its best untried worker.

    Subclasses say how good a worker is (``score``, lower is better) and
    whether to scan every worker or to compare two at random.

    It holds nothing across calls but its snapshots and random state, and
    pickles as configuration (``exact_up_to``).

    Args:
        exact_up_to: the largest pool scanned exactly (default 16).
    """

    def __init__(self, *, exact_up_to: int = 16) -> None:
        if exact_up_to < 1:
            raise ValueError(f"exact_up_to must be >= 1, not {exact_up_to!r}")
        self.exact_up_to = exact_up_to
        self._snapshots = Snapshots()
        self._random = random.Random()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (type(self), self.exact_up_to))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(exact_up_to={self.exact_up_to})"

    def score(self, connection: WorkerConnectionLike) -> float:
        """How costly sending one more call to this worker looks (lower is better)."""
        raise NotImplementedError

    def choose(self, context: LoadBalancerContextView, tried: set[str]) -> Candidate | None:
        """The next candidate: exact below ``exact_up_to`` workers, else best of two."""
        workers = self._snapshots.get(context)
        if len(workers) > self.exact_up_to:
            pick = self._best_of_two(workers, tried)
            if pick is not None:
                return pick
        return self._best_of_all(workers, tried)

    def _best_of_all(self, workers: list[Candidate], tried: set[str]) -> Candidate | None:
        # Among equal scores the worker handed a call longest ago wins (its
        # call is likeliest to end first: round robin's strength with even
        # work); connections that do not say (``turn``) tie at random.
        best: Candidate | None = None
        best_key = (0.0, 0)
        ties = 0
        for candidate in workers:
            if candidate[0].uid in tried:
                continue
            key = (self.score(candidate[1]), getattr(candidate[1], "turn", 0))
            if best is None or key < best_key:
                best, best_key, ties = candidate, key, 1
            elif key == best_key:
                ties += 1  # reservoir sampling: each tie equally likely
                if self._random.randrange(ties) == 0:
                    best = candidate
        return best

    def _best_of_two(self, workers: list[Candidate], tried: set[str]) -> Candidate | None:
        picks: list[Candidate] = []
        for _ in range(8):  # a few draws; the caller scans when most were tried
            candidate = workers[self._random.randrange(len(workers))]
            if candidate[0].uid not in tried and all(candidate is not p for p in picks):
                picks.append(candidate)
                if len(picks) == 2:
                    break
        if not picks:
            return None
        return min(picks, key=lambda c: self.score(c[1]))


def _restore(cls: type[ChoosingBalancer], exact_up_to: int) -> ChoosingBalancer:
    return cls(exact_up_to=exact_up_to)
