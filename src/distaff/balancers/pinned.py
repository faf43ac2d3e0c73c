"""PinnedLoadBalancer: offers one worker only (an actor's)."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from ..serialization.metadata import WorkerMetadata
from .base import LoadBalancerContextView, WorkerConnectionLike


class PinnedLoadBalancer:
    """Offers the worker ``uid`` and nobody else.

    If that worker is not in the context, or its one attempt fails, the
    balancer returns: the proxy raises ``NoWorkersAvailable`` and the call
    goes nowhere else. Holds no state; pickles as its uid.
    """

    __slots__ = ("uid",)

    def __init__(self, uid: str) -> None:
        self.uid = uid

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.uid,))

    async def delegate(
        self, *, context: LoadBalancerContextView
    ) -> AsyncGenerator[tuple[WorkerMetadata, WorkerConnectionLike], WorkerMetadata | None]:
        """Yield the pinned worker once, if it is in ``context``."""
        for metadata, connection in context.workers.items():
            if metadata.uid == self.uid:
                yield metadata, connection
                return

    def __repr__(self) -> str:
        return f"PinnedLoadBalancer({self.uid!r})"
