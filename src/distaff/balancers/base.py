"""The load-balancer protocols: balancers choose workers, the proxy dispatches.

A delegating balancer's ``delegate(context=...)`` is an async generator of
``(WorkerMetadata, WorkerConnection)`` candidates that the proxy drives:

=====================  =============================  ===========================
proxy does             meaning                        balancer must
=====================  =============================  ===========================
``anext()``            give me a candidate            yield one, or return
``athrow(exc)``        that candidate failed          yield the next, or return
``asend(metadata)``    that candidate won             return (yielding again is
                                                      a protocol violation)
=====================  =============================  ===========================

A balancer that returns means "nobody left": the proxy raises
``NoWorkersAvailable``. Before throwing a non-transient error in, the proxy
has already evicted the worker from the context, so the balancer sees the
pool as it now is.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

# typing_extensions' Protocol fixes a protocol's members when the class is
# made; typing's (3.11) would count @deprecated's __deprecated__ as one, and
# no balancer would match DispatchingLoadBalancerLike
from typing_extensions import Protocol, deprecated, runtime_checkable

from ..serialization.metadata import WorkerMetadata

if TYPE_CHECKING:
    from ..proxy.connection import WorkerConnection
    from ..runtime.task import Task


@runtime_checkable
class LoadBalancerContextView(Protocol):
    """What a balancer may see of a pool: its workers, read-only."""

    @property
    def workers(self) -> Mapping[WorkerMetadata, WorkerConnection]:
        """The pool's workers and their connections (a read-only mapping)."""
        ...


@runtime_checkable
class LoadBalancerContextLike(LoadBalancerContextView, Protocol):
    """A context the proxy can change; balancers only ever get the view."""

    def add_worker(self, metadata: WorkerMetadata, connection: WorkerConnection) -> None:
        """Admit a worker."""
        ...

    def update_worker(self, metadata: WorkerMetadata) -> None:
        """Replace a worker's metadata (same uid), keeping its connection."""
        ...

    def remove_worker(self, metadata: WorkerMetadata) -> WorkerConnection | None:
        """Evict a worker; return its connection, if it was there."""
        ...


@runtime_checkable
class DelegatingLoadBalancerLike(Protocol):
    """A balancer that chooses candidates and leaves dispatch to the proxy."""

    def delegate(
        self, *, context: LoadBalancerContextView
    ) -> AsyncGenerator[tuple[WorkerMetadata, WorkerConnection], WorkerMetadata | None]:
        """Yield candidates for one call, in the order to try them.

        The proxy sends the winner's metadata with ``asend`` (the generator
        must then return), throws each failure in with ``athrow`` (yield the
        next candidate or return), and treats a return as "no workers left".
        """
        ...


@deprecated("DispatchingLoadBalancerLike is deprecated; implement DelegatingLoadBalancerLike")
@runtime_checkable
class DispatchingLoadBalancerLike(Protocol):
    """Deprecated: a balancer that dispatches tasks itself.

    Still honoured by the proxy, which warns once at start. Implement
    :class:`DelegatingLoadBalancerLike` instead.
    """

    async def dispatch(
        self,
        task: Task,
        *,
        context: LoadBalancerContextLike,
        timeout: float | None = None,
    ) -> AsyncIterator[Any]:
        """Run ``task`` on a worker of ``context``; return its result stream."""
        ...


LoadBalancerLike: TypeAlias = DelegatingLoadBalancerLike | DispatchingLoadBalancerLike
"""Either balancer protocol (the deprecated one goes in the next major release)."""
