"""WorkerProxy: follows discovery, owns connections, runs the dispatch loop."""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import cloudpickle

from .._exceptions import NoWorkersAvailable, TransientRpcError
from ..balancers.base import DelegatingLoadBalancerLike, LoadBalancerLike
from ..balancers.roundrobin import RoundRobinLoadBalancer
from ..runtime.discovery.base import DiscoveryEventType, DiscoverySubscriberLike
from ..serialization.metadata import WorkerMetadata
from .admission import Admission, subscription
from .call import RemoteCall
from .connection import WorkerConnection
from .context import LoadBalancerContext
from .credentials import WorkerCredentials

if TYPE_CHECKING:
    from ..runtime.task import Task

BalancerSpec = LoadBalancerLike | Callable[[], LoadBalancerLike]


class WorkerProxy:
    """Routes tasks to the workers a discovery subscription reports.

    The proxy is the only owner of its pool's connections and membership: a
    supervisor task follows ``discovery`` and admits the workers that carry
    all ``tags`` and match the proxy's security (and at most ``lease`` of
    them); ``dispatch`` asks the balancer for candidates and retries or evicts
    as the balancer protocol says. It pickles as its configuration only (no
    connections, no credentials) so it can ship with tasks; the restored copy
    starts lazily on first dispatch.

    Args:
        discovery: the subscription to follow.
        loadbalancer: a balancer, or a factory for one (round robin by default).
        tags: labels a worker must all carry to be admitted.
        lease: the most workers to admit (None: no cap).
        lazy: start on first dispatch instead of requiring ``start()``.
        wait: seconds a dispatch waits for a first worker before
            ``NoWorkersAvailable``.
        credentials: TLS material; a proxy with credentials admits only
            ``secure`` workers and dials them over TLS, one without admits
            only plaintext workers. Credentials are never pickled: a proxy
            restored on a worker uses that worker's own.
        secure: admit TLS workers; defaults to ``credentials is not None``.
    """

    def __init__(
        self,
        discovery: DiscoverySubscriberLike,
        *,
        loadbalancer: BalancerSpec = RoundRobinLoadBalancer,
        tags: frozenset[str] = frozenset(),
        lease: int | None = None,
        lazy: bool = True,
        wait: float = 10.0,
        credentials: WorkerCredentials | None = None,
        secure: bool | None = None,
        id: str | None = None,
    ) -> None:
        self.id = id or uuid.uuid4().hex
        self._discovery = discovery
        self._balancer_spec = loadbalancer
        self._balancer: Any = (
            loadbalancer()  # type: ignore[operator]
            if isinstance(loadbalancer, type) or not _is_balancer(loadbalancer)
            else loadbalancer
        )
        self.tags = frozenset(tags)
        self.lease = lease
        self.lazy = lazy
        self.wait = wait
        self.secure = credentials is not None if secure is None else secure
        self.credentials = credentials
        self._context = LoadBalancerContext()
        self._admission = Admission()
        self.last_used = time.monotonic()  # of the latest dispatch
        self._delegating = True
        self._started = False
        self._supervisor: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._changed = asyncio.Event()
        self._pickled: bytes | None = None
        self._supervisor_error: BaseException | None = None

    # pickling: configuration only, cached

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _restore_proxy,
            (
                self.id,
                self._discovery,
                self._balancer_spec,
                self.tags,
                self.lease,
                self.wait,
                self.secure,
            ),
        )

    def serialized(self) -> tuple[str, bytes]:
        """Return ``(id, pickled bytes)``, pickling once per proxy."""
        if self._pickled is None:
            self._pickled = cloudpickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)
        return self.id, self._pickled

    # lifecycle

    @property
    def started(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._started

    @property
    def workers(self) -> list[WorkerMetadata]:
        """The admitted workers, in admission order."""
        return list(self._context.workers)

    def in_flight(self) -> int:
        """Calls dispatched through this proxy that have not finished yet."""
        return sum(c.statistics().in_flight for c in self._context.workers.values())

    async def start(self) -> None:
        """Check the balancer, subscribe to discovery; idempotent."""
        if self._started:
            return
        self._delegating = isinstance(self._balancer, DelegatingLoadBalancerLike)
        if not self._delegating:
            warnings.warn(
                f"{type(self._balancer).__qualname__} implements the deprecated "
                "DispatchingLoadBalancerLike protocol; implement "
                "DelegatingLoadBalancerLike (delegate(*, context)) instead",
                DeprecationWarning,
                stacklevel=2,
            )
        self._changed = asyncio.Event()
        self._supervisor = asyncio.ensure_future(self._supervise())
        self._started = True

    async def stop(self) -> None:
        """Unsubscribe and close every connection; idempotent."""
        if not self._started:
            return
        self._started = False
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
        # Swap the membership out before awaiting anything, so a dispatch that
        # restarts the proxy meanwhile builds a fresh one instead of losing
        # its connections to this close.
        connections = list(self._context.workers.values())
        self._context = LoadBalancerContext()
        if supervisor is not None:
            await asyncio.gather(supervisor, return_exceptions=True)
        # evicted connections are still closing: cancelling an aclose would leak them
        await asyncio.gather(*self._background, return_exceptions=True)
        await asyncio.gather(*(c.aclose() for c in connections), return_exceptions=True)

    async def __aenter__(self) -> WorkerProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_for(
        self, predicate: Callable[[list[WorkerMetadata]], bool], timeout: float
    ) -> None:
        """Wait until ``predicate(self.workers)`` holds, or raise TimeoutError."""
        async with asyncio.timeout(timeout):
            while not predicate(self.workers):
                if self._supervisor_error is not None:
                    raise self._supervisor_error
                self._changed.clear()
                await self._changed.wait()

    # membership

    def _admits(self, metadata: WorkerMetadata) -> bool:
        return (
            self.tags <= metadata.tags
            and metadata.secure == self.secure
            and self._admission.admit(metadata)
        )

    async def _supervise(self) -> None:
        try:
            async for event in subscription(self._discovery, self.credentials):
                self._apply(event.type, event.metadata)
                self._changed.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # surfaces in dispatch instead of dying silently
            self._supervisor_error = exc
            self._changed.set()

    def _apply(self, kind: DiscoveryEventType, metadata: WorkerMetadata) -> None:
        known = any(m.uid == metadata.uid for m in self._context.workers)
        if kind is DiscoveryEventType.WORKER_DROPPED or (known and not self._admits(metadata)):
            self._evict(metadata)
        elif known:
            self._context.update_worker(metadata)
        elif self._admits(metadata) and (
            self.lease is None or len(self._context.workers) < self.lease
        ):
            self._context.add_worker(metadata, self._connect(metadata))

    def _connect(self, metadata: WorkerMetadata) -> WorkerConnection:
        if self.credentials is None:
            return WorkerConnection(metadata.address)
        return WorkerConnection(
            metadata.address,
            credentials=self.credentials.channel_credentials(),
            options=self.credentials.channel_options(),
        )

    def _evict(self, metadata: WorkerMetadata) -> None:
        self._admission.forget(metadata)
        connection = self._context.remove_worker(metadata)
        if connection is not None:
            # calls already running there finish; only new ones go elsewhere
            task = asyncio.ensure_future(connection.aclose_when_idle())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    # dispatch

    async def dispatch(self, task: Task, *, timeout: float | None = None) -> AsyncIterator[Any]:
        """Run ``task`` on a worker; return its result stream once accepted.

        Raises:
            NoWorkersAvailable: no worker appeared within ``wait`` seconds, or
                every candidate failed.
            RuntimeError: the proxy is not started and not lazy, or the
                balancer broke its protocol.
        """
        self.last_used = time.monotonic()
        if not self._started:
            if not self.lazy:
                raise RuntimeError("WorkerProxy is not started; call start() or use lazy=True")
            await self.start()
        if not self._context.workers:
            await self._await_first_worker()
        if self._delegating:
            return await self._delegate_dispatch(task, timeout)
        stream: AsyncIterator[Any] = await self._balancer.dispatch(
            task, context=self._context, timeout=timeout
        )
        return stream

    async def _await_first_worker(self) -> None:
        try:
            await self.wait_for(bool, self.wait)
        except TimeoutError:
            raise NoWorkersAvailable(
                f"no worker joined the pool within {self.wait} s"
                + (f" (tags {sorted(self.tags)})" if self.tags else "")
                + self._admission.explain()
            ) from None

    async def _delegate_dispatch(self, task: Task, timeout: float | None) -> AsyncIterator[Any]:
        candidates = self._balancer.delegate(context=self._context)
        try:
            try:
                metadata, connection = await anext(candidates)
            except StopAsyncIteration:
                raise NoWorkersAvailable(
                    "the load balancer offered no worker" + self._admission.explain()
                ) from None
            while True:
                try:
                    stream = await connection.dispatch(task, timeout=timeout)
                    break
                except TransientRpcError as exc:
                    failure: Exception = exc
                except Exception as exc:
                    self._evict(metadata)
                    failure = exc
                try:
                    metadata, connection = await candidates.athrow(failure)
                except StopAsyncIteration:
                    raise NoWorkersAvailable(
                        f"every worker failed; the last error: {failure}"
                    ) from failure
            return await self._hand_over(candidates, metadata, stream)
        finally:
            await candidates.aclose()

    async def _hand_over(
        self, candidates: Any, metadata: WorkerMetadata, stream: RemoteCall
    ) -> RemoteCall:
        """Tell the balancer who won; close the stream if we never hand it out."""
        handed = False
        try:
            with contextlib.suppress(StopAsyncIteration):
                await candidates.asend(metadata)
                raise RuntimeError(
                    "load balancer protocol violation: delegate() yielded a candidate "
                    "after asend() reported success; it must return"
                )
            handed = True
            return stream
        finally:
            if not handed:
                await stream.aclose()

    def __repr__(self) -> str:
        return f"WorkerProxy(id={self.id!r}, workers={len(self._context.workers)})"


def _is_balancer(obj: object) -> bool:
    return hasattr(obj, "delegate") or hasattr(obj, "dispatch")


def _restore_proxy(
    id: str,
    discovery: DiscoverySubscriberLike,
    loadbalancer: BalancerSpec,
    tags: frozenset[str],
    lease: int | None,
    wait: float,
    secure: bool,
) -> WorkerProxy:
    return WorkerProxy(
        discovery,
        loadbalancer=loadbalancer,
        tags=tags,
        lease=lease,
        lazy=True,
        wait=wait,
        secure=secure,
        id=id,
    )
