"""The load-balancer protocols: balancers choose workers, the proxy dispatches.

A delegating balancer's ``delegate(context=...)`` is an async generator of
``(WorkerMetadata, WorkerConnectionLike)`` candidates that the proxy drives:

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

import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

# typing_extensions' Protocol fixes a protocol's members when the class is
# made; typing's (3.11) would count @deprecated's __deprecated__ as one, and
# no balancer would match DispatchingLoadBalancerLike
from typing_extensions import Protocol, deprecated, runtime_checkable

from ..serialization.metadata import WorkerMetadata

if TYPE_CHECKING:
    from ..serialization.task import Task


@dataclasses.dataclass(frozen=True)
class ConnectionStatistics:
    """What a connection tells a balancer about its load (a snapshot).

    Attributes:
        in_flight: this caller's calls on the worker, counted from the moment
            a balancer hands the worker to the proxy.
        completed: calls that ended well.
        failed: calls that failed, were refused or were cancelled.
        latency: peak-weighted moving average of call completion time (s);
            0.0 until a call completed. Failures count as slow.
        reported_running: calls the worker said it runs over all its callers,
            or None when its last report is older than a second.
        reported_capacity: the worker's max_concurrency (0: unbounded), or None.
        service_time: peak-weighted moving average of completion time per
            call queued: each call's time divided by (this caller's calls
            already on the worker when it was sent + 1); 0.0 until known.
    """

    in_flight: int
    completed: int
    failed: int
    latency: float = 0.0
    reported_running: int | None = None
    reported_capacity: int | None = None
    service_time: float = 0.0


@runtime_checkable
class WorkerConnectionLike(Protocol):
    """What a balancer may use of a worker's connection.

    Balancers read it; only the proxy dispatches on it (a deprecated
    dispatching balancer calls ``dispatch`` itself).
    """

    target: str

    @property
    def in_flight(self) -> int:
        """This caller's calls on the worker (updated at the hand-off, before any await)."""
        ...

    @property
    def load(self) -> float:
        """Calls on the worker from every caller, as best known: this caller's
        own now, plus the others' from the worker's last fresh report; ``inf``
        while the worker said it is full."""
        ...

    @property
    def latency(self) -> float:
        """Peak-weighted moving average of completion time (s); 0.0 if unknown."""
        ...

    @property
    def service_time(self) -> float:
        """Like ``latency``, each call's time divided by (calls queued ahead + 1)."""
        ...

    def statistics(self) -> ConnectionStatistics:
        """A snapshot of the counters above."""
        ...

    async def dispatch(self, task: Task, *, timeout: float | None = None) -> AsyncIterator[Any]:
        """Send ``task``; return its result stream once the worker took it."""
        ...


@runtime_checkable
class LoadBalancerContextView(Protocol):
    """What a balancer may see of a pool: its workers, read-only."""

    @property
    def workers(self) -> Mapping[WorkerMetadata, WorkerConnectionLike]:
        """The pool's workers and their connections (a read-only mapping)."""
        ...


@runtime_checkable
class LoadBalancerContextLike(LoadBalancerContextView, Protocol):
    """A context the proxy can change; balancers only ever get the view."""

    def add_worker(self, metadata: WorkerMetadata, connection: WorkerConnectionLike) -> None:
        """Admit a worker."""
        ...

    def update_worker(self, metadata: WorkerMetadata) -> None:
        """Replace a worker's metadata (same uid), keeping its connection."""
        ...

    def remove_worker(self, metadata: WorkerMetadata) -> WorkerConnectionLike | None:
        """Evict a worker; return its connection, if it was there."""
        ...


@runtime_checkable
class DelegatingLoadBalancerLike(Protocol):
    """A balancer that chooses candidates and leaves dispatch to the proxy."""

    def delegate(
        self, *, context: LoadBalancerContextView
    ) -> AsyncGenerator[tuple[WorkerMetadata, WorkerConnectionLike], WorkerMetadata | None]:
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
