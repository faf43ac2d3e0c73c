"""PinnedLoadBalancer: offers one worker only (an actor's)."""

from __future__ import annotations

import contextlib
import weakref
from typing import Any

from ..serialization.metadata import WorkerMetadata
from ._choosing import OfferLoop
from .base import LoadBalancerContextView, WorkerConnectionLike

Candidate = tuple[WorkerMetadata, WorkerConnectionLike]


class PinnedLoadBalancer(OfferLoop):
    """Offers the worker ``uid`` and nobody else.

    If that worker is not in the context, or its one attempt fails, the
    balancer returns: the proxy raises ``NoWorkersAvailable`` and the call
    goes nowhere else. Finding the worker is O(1) per call while the context
    is unchanged (a context with a ``version`` counter, as the proxy's has).
    Pickles as its uid.
    """

    __slots__ = ("_found", "uid")

    def __init__(self, uid: str) -> None:
        self.uid = uid
        # (context version, the context, the worker's entry in it): the last lookup
        self._found: tuple[int, weakref.ref[Any], Candidate | None] | None = None

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.uid,))

    def _find(self, context: LoadBalancerContextView) -> Candidate | None:
        version = getattr(context, "version", None)
        found = self._found
        if found is not None and found[0] == version and found[1]() is context:
            return found[2]
        candidate = next(((m, c) for m, c in context.workers.items() if m.uid == self.uid), None)
        if version is not None:
            with contextlib.suppress(TypeError):  # not weakly referenceable: no cache
                self._found = (version, weakref.ref(context), candidate)
        return candidate

    def choose(self, context: LoadBalancerContextView, tried: set[str]) -> Candidate | None:
        """The pinned worker if it is in ``context`` and untried; nobody else, ever."""
        if self.uid in tried:  # its one attempt failed: the call goes nowhere else
            return None
        return self._find(context)

    def __repr__(self) -> str:
        return f"PinnedLoadBalancer({self.uid!r})"
