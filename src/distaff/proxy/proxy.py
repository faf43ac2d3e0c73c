"""WorkerProxy: follows discovery, owns connections, runs the dispatch loop."""

from __future__ import annotations

import asyncio
import enum
import logging
import pickle
import random
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any

import cloudpickle

from .._exceptions import (
    NoWorkersAvailable,
    SerializationError,
    StatusCode,
    TransientRpcError,
)
from ..balancers._choosing import OfferLoop
from ..balancers.base import (
    DelegatingLoadBalancerLike,
    LoadBalancerContextView,
    LoadBalancerLike,
)
from ..balancers.roundrobin import RoundRobinLoadBalancer
from ..serialization.metadata import WorkerMetadata
from ..serialization.task import Task
from . import observe
from .admission import Admission, subscription
from .call import RemoteCall
from .connection import WorkerConnection
from .context import LoadBalancerContext
from .credentials import WorkerCredentials
from .departures import Departure, Departures
from .discovery import DiscoverySubscriberLike, describe_subscriber
from .ipc import ipc_name
from .membership import Membership

log = logging.getLogger(__name__)
BalancerSpec = LoadBalancerLike | Callable[[], LoadBalancerLike]
_EMPTY = LoadBalancerContext()


class ProxyState(enum.Enum):
    """Where a proxy is in its life; a stopped proxy may start again."""

    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


_RUNNING = ProxyState.RUNNING  # per call: ``ProxyState.RUNNING`` costs EnumType's __getattr__ hook


class WorkerProxy:
    """Routes tasks to the workers a discovery subscription reports.

    The proxy is the only owner of its pool's connections and membership: a
    :class:`Membership` follows ``discovery`` and admits the workers that
    carry all ``tags`` and match the proxy's security (at most ``lease`` of
    them); ``dispatch`` asks the balancer for candidates and retries or evicts
    as the balancer protocol says. It pickles as its configuration only (no
    connections, no credentials) so it can ship with tasks; the restored copy
    starts lazily on first dispatch. A restart starts clean.

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
        forward_output: calls send what they print and log back to the
            caller that made them (travels with each task).
        subset: once restored on a worker, dispatch through the pool's
            balancer to at most this many workers, a random subset (None:
            all); calls pinned to one worker still reach any worker.
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
        forward_output: bool = True,
        subset: int | None = None,
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
        self.forward_output = forward_output
        self.subset = subset
        self._restored = False  # a copy shipped to a worker: it keeps to a subset
        self.last_used = time.monotonic()  # of the latest dispatch
        self._state = ProxyState.NEW
        self._admission = Admission()
        self._membership: Membership | None = None
        self._departures = Departures()  # kept across restarts
        self._stopped = asyncio.Event()
        self._delegating = True
        self._warned = False
        self._dispatching = 0  # dispatches between entry and hand-over
        self._pickled: bytes | None = None
        # ids of the actors spawned through this proxy in this process and
        # still open; an actor lives as long as the session that spawned it,
        # so while there are any, this proxy's idle sessions stay open
        self.actors: set[str] = set()

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
                self.forward_output,
                self.subset,
            ),
        )

    def serialized(self) -> tuple[str, bytes]:
        """Return ``(id, pickled bytes)``, pickling once per proxy.

        Raises:
            SerializationError: the balancer or discovery cannot be pickled.
        """
        if self._pickled is None:
            try:
                self._pickled = cloudpickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                raise SerializationError(
                    f"cannot ship the pool's proxy with the call: its balancer "
                    f"{self._balancer_spec!r} or discovery {self._discovery!r} does not "
                    f"pickle ({exc}); balancers and discovery subscribers must pickle "
                    "as configuration (hold no locks, sockets or tasks)"
                ) from exc
        return self.id, self._pickled

    # lifecycle

    @property
    def state(self) -> ProxyState:
        """The lifecycle state."""
        return self._state

    @property
    def started(self) -> bool:
        """True while running (between ``start()`` and ``stop()``)."""
        return self._state is ProxyState.RUNNING

    @property
    def context(self) -> LoadBalancerContextView:
        """The live membership, read-only (empty while not running)."""
        membership = self._membership
        return membership.context if membership is not None else _EMPTY

    @property
    def workers(self) -> list[WorkerMetadata]:
        """The admitted workers, in admission order."""
        membership = self._membership
        return list(membership.context.workers) if membership is not None else []

    def departure(self, uid: str) -> Departure | None:
        """Why worker ``uid`` left the pool, if it did recently (and has not come back)."""
        return self._departures.get(uid)

    def in_flight(self) -> int:
        """Calls dispatched through this proxy that have not finished yet."""
        membership = self._membership
        if membership is None:
            return 0
        return sum(c.statistics().in_flight for c in membership.context.workers.values())

    async def quiet(self) -> None:
        """Return once no call dispatched through this proxy is in flight."""
        membership = self._membership
        if membership is not None:
            for connection in list(membership.context.workers.values()):
                await connection.quiet()

    async def start(self) -> None:
        """Check the balancer, subscribe to discovery; idempotent."""
        if self._state is ProxyState.STOPPING:
            await self._stopped.wait()
        if self._state is ProxyState.RUNNING:
            return
        self._delegating = isinstance(self._balancer, DelegatingLoadBalancerLike)
        if not self._delegating and not self._warned:
            self._warned = True
            warnings.warn(
                f"{type(self._balancer).__qualname__} implements the deprecated "
                "DispatchingLoadBalancerLike protocol; implement "
                "DelegatingLoadBalancerLike (delegate(*, context)) instead",
                DeprecationWarning,
                stacklevel=2,
            )
        self._admission = Admission()  # a restart starts clean
        self._membership = Membership(
            subscription(self._discovery, self.credentials),
            admits=self._admits,
            lease=self.lease,
            connect=self._connect,
            forget=self._admission.forget,
            subset=self.subset if self._restored else None,
            departures=self._departures,
        )
        self._state = ProxyState.RUNNING

    async def stop(self) -> None:
        """Unsubscribe and close every connection at once; idempotent.

        Calls still running on those connections fail. The state changes
        before the first await, so a dispatch that arrives meanwhile waits
        for the stop to finish and then starts the proxy afresh.
        """
        if self._state is ProxyState.STOPPING:
            await self._stopped.wait()
            return
        if self._state is not ProxyState.RUNNING:
            return
        self._state = ProxyState.STOPPING
        self._stopped = asyncio.Event()
        membership, self._membership = self._membership, None
        try:
            if membership is not None:
                await membership.aclose()
        finally:
            self._state = ProxyState.STOPPED
            self._stopped.set()

    async def stop_if_idle(self, idle: float) -> bool:
        """Stop if nothing was dispatched for ``idle`` s and nothing is in flight.

        The check and the state change happen with no await between them, so
        a proxy in use is never stopped. Returns True if it stopped.
        """
        quiet = (
            self._state is ProxyState.RUNNING
            and self._dispatching == 0
            and self.in_flight() == 0
            and time.monotonic() - self.last_used > idle
        )
        if quiet:
            await self.stop()
        return quiet

    def close_suspended_streams(self, reason: str) -> int:
        """Close the remote generators nobody is reading; return how many."""
        membership = self._membership
        if membership is None:
            return 0
        return sum(c.close_suspended_streams(reason) for c in membership.context.workers.values())

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
                membership = self._membership
                if membership is None:
                    raise RuntimeError("the proxy is not running")
                await membership.changed.wait()

    # membership

    def _admits(self, metadata: WorkerMetadata) -> bool:
        return (
            self.tags <= metadata.tags
            and metadata.secure == self.secure
            and self._admission.admit(metadata)
        )

    def _connect(self, metadata: WorkerMetadata) -> WorkerConnection:
        if self.credentials is None:
            name = ipc_name(metadata)
            return WorkerConnection(
                metadata.address,
                keep_session=self._keeps_sessions,
                ipc=None if name is None else (name, metadata.pid),
            )
        return WorkerConnection(
            metadata.address,
            credentials=self.credentials.channel_credentials(),
            options=self.credentials.channel_options(),
            keep_session=self._keeps_sessions,
        )

    def _keeps_sessions(self) -> bool:
        return bool(self.actors)

    # dispatch

    async def dispatch(
        self,
        task: Task,
        *,
        timeout: float | None = None,
        balancer: DelegatingLoadBalancerLike | None = None,
    ) -> AsyncIterator[Any]:
        """Run ``task`` on a worker; return its result stream once accepted.

        ``timeout`` bounds reaching a worker: waiting for one to join, every
        attempt's handshake and the write of the call. Once a call is written
        it belongs to that worker (it may run) and is never sent again.
        ``balancer`` chooses for this call instead of the pool's (an actor's
        calls pin their worker this way); the task still ships this proxy.

        Raises:
            TimeoutError: no worker took the call within ``timeout``.
            SerializationError: the task (or this proxy, which travels with
                it) cannot be pickled; no worker was contacted.
            NoWorkersAvailable: no worker appeared within ``wait`` seconds, or
                every candidate failed.
            RuntimeError: the proxy is not started and not lazy, or the
                balancer broke its protocol.
        """
        self.last_used = time.monotonic()
        self._dispatching += 1
        try:
            task.start_fields()  # the caller's error, before any worker is asked
            if self._state is not _RUNNING:
                if not self.lazy:
                    raise RuntimeError("WorkerProxy is not started; call start() or use lazy=True")
                await self.start()
            membership = self._membership
            assert membership is not None
            deadline = None if timeout is None else time.monotonic() + timeout
            if not membership.context.workers:
                await self._await_first_worker(deadline)
            if balancer is not None or self._delegating:
                chooser = balancer if balancer is not None else self._balancer
                try:
                    if _offers_inline(chooser):
                        return await self._offer_round(membership, task, deadline, chooser)
                    return await self._delegate_round(membership, task, deadline, chooser)
                except _AllBusy as busy:
                    return await self._delegate_dispatch(membership, task, deadline, chooser, busy)
            stream: AsyncIterator[Any] = await self._balancer.dispatch(
                task, context=membership.preferred, timeout=timeout
            )
            return stream
        finally:
            self._dispatching -= 1

    async def _await_first_worker(self, deadline: float | None) -> None:
        wait = self.wait if deadline is None else min(self.wait, deadline - time.monotonic())
        try:
            await self.wait_for(bool, wait)
        except TimeoutError:
            if wait < self.wait:
                raise _dispatch_timeout() from None
            raise NoWorkersAvailable(self._nobody_joined()) from None

    def _nobody_joined(self) -> str:
        discovery = describe_subscriber(self._discovery)
        message = f"no worker joined the pool within {self.wait} s (discovery {discovery}"
        if self.tags:
            message += f", tags {sorted(self.tags)}"
        message += ", TLS workers only" if self.secure else ", plaintext workers only"
        message += ")"
        membership = self._membership
        if membership is not None and membership.error is not None:
            error = membership.error
            message += f"; discovery failed: {type(error).__name__}: {error}"
        return message + self._admission.explain()

    async def _delegate_dispatch(
        self,
        membership: Membership,
        task: Task,
        deadline: float | None,
        balancer: DelegatingLoadBalancerLike,
        busy: _AllBusy,
    ) -> RemoteCall:
        """After a round found every worker busy: ask again, backing off, until the deadline."""
        patience = deadline if deadline is not None else time.monotonic() + self.wait
        backoff = _BUSY_FIRST
        inline = _offers_inline(balancer)
        while True:
            now = time.monotonic()
            if now >= patience:
                if deadline is not None:
                    raise _dispatch_timeout() from busy.last
                raise NoWorkersAvailable(
                    f"every worker stayed busy for {self.wait} s; the last: {busy.last}"
                ) from busy.last
            await asyncio.sleep(min(backoff * random.uniform(0.5, 1.5), patience - now))
            backoff = min(backoff * 2, _BUSY_LAST)
            try:
                if inline:
                    return await self._offer_round(membership, task, deadline, balancer)
                return await self._delegate_round(membership, task, deadline, balancer)
            except _AllBusy as again:
                busy = again

    def _round_context(self, membership: Membership, balancer: object) -> LoadBalancerContextView:
        # the pool's balancer keeps to the preferred subset; a pinning one sees everyone
        return membership.preferred if balancer is self._balancer else membership.context

    async def _offer_round(
        self,
        membership: Membership,
        task: Task,
        deadline: float | None,
        balancer: Any,
    ) -> RemoteCall:
        """The seed's loop for a built-in balancer, without its generator.

        A built-in balancer (an ``OfferLoop`` that keeps its ``delegate``)
        offers, each time, what ``choose`` returns among the untried workers,
        and stops when one takes the call: exactly what this loop does by
        calling ``choose`` itself, which saves an async generator per call.
        """
        context = self._round_context(membership, balancer)
        tried: set[str] = set()
        candidate = balancer.choose(context, tried)
        if candidate is None:
            raise NoWorkersAvailable(
                "the load balancer offered no worker" + self._admission.explain()
            )
        busy = True
        while True:
            metadata, connection = candidate
            tried.add(metadata.uid)
            if observe.current is not None:
                observe.current.attempted()
            timeout = _attempt_budget(deadline)
            try:
                call: RemoteCall = await connection.dispatch(task, timeout=timeout)
                return call
            except Exception as exc:
                busy = self._attempt_failed(membership, metadata, exc) and busy
                failure: Exception = exc
            candidate = balancer.choose(context, tried)
            if candidate is None:
                raise self._out_of_candidates(busy, failure, deadline)

    def _attempt_failed(
        self, membership: Membership, metadata: WorkerMetadata, exc: Exception
    ) -> bool:
        """Act on a failed attempt: evict a faulty worker; True if it was only busy."""
        if isinstance(exc, TransientRpcError):
            # busy, or out of this attempt's share of time: worth another round
            return exc.code in _AGAIN
        log.warning("evicting worker %s at %s: %s", metadata.uid[:8], metadata.address, exc)
        membership.evict(metadata)
        if observe.current is not None:
            observe.current.evicted()
        return False

    def _out_of_candidates(
        self, busy: bool, failure: Exception, deadline: float | None
    ) -> Exception:
        if busy:
            error: Exception = _AllBusy(failure)
        elif deadline is not None and time.monotonic() >= deadline:
            error = _dispatch_timeout()
            error.__cause__ = failure
        else:
            error = NoWorkersAvailable(f"every worker failed; the last error: {failure}")
            error.__cause__ = failure
        error.__suppress_context__ = True
        return error

    async def _delegate_round(
        self,
        membership: Membership,
        task: Task,
        deadline: float | None,
        balancer: DelegatingLoadBalancerLike,
    ) -> RemoteCall:
        """The seed's loop: dispatch to each candidate; skip, evict, or hand over."""
        context = self._round_context(membership, balancer)
        candidates: Any = balancer.delegate(context=context)
        busy = True
        try:
            try:
                metadata, connection = await anext(candidates)
            except StopAsyncIteration:
                raise NoWorkersAvailable(
                    "the load balancer offered no worker" + self._admission.explain()
                ) from None
            while True:
                if observe.current is not None:
                    observe.current.attempted()
                timeout = _attempt_budget(deadline)
                try:
                    stream = await connection.dispatch(task, timeout=timeout)
                    break
                except Exception as exc:
                    busy = self._attempt_failed(membership, metadata, exc) and busy
                    failure: Exception = exc
                try:
                    metadata, connection = await candidates.athrow(failure)
                except StopAsyncIteration:
                    raise self._out_of_candidates(busy, failure, deadline)  # noqa: B904
            return await self._hand_over(candidates, metadata, stream)
        finally:
            await candidates.aclose()

    async def _hand_over(
        self, candidates: Any, metadata: WorkerMetadata, stream: RemoteCall
    ) -> RemoteCall:
        """Tell the balancer who won; close the stream if we never hand it out."""
        handed = False
        try:
            try:
                await candidates.asend(metadata)
            except StopAsyncIteration:
                handed = True
                return stream
            raise RuntimeError(
                "load balancer protocol violation: delegate() yielded a candidate "
                "after asend() reported success; it must return"
            )
        finally:
            if not handed:
                await stream.aclose()

    def __repr__(self) -> str:
        return (
            f"WorkerProxy(id={self.id!r}, state={self._state.value}, workers={len(self.workers)})"
        )


# while every worker is busy, a call asks again after a back-off from/to these (s)
_BUSY_FIRST = 0.002
_BUSY_LAST = 0.1
# an attempt may use half of what is left of the dispatch budget, at least this (s)
_ATTEMPT_FLOOR = 0.25


_AGAIN = frozenset({StatusCode.RESOURCE_EXHAUSTED, StatusCode.DEADLINE_EXCEEDED})


class _AllBusy(Exception):
    """Every candidate was busy (or slow to answer) within the time it had."""

    def __init__(self, last: Exception) -> None:
        super().__init__(str(last))
        self.last = last


def _attempt_budget(deadline: float | None) -> float | None:
    """One attempt's share of the dispatch budget, so a frozen worker leaves time for others."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise _dispatch_timeout()
    return max(left / 2, min(left, _ATTEMPT_FLOOR))


def _dispatch_timeout() -> TimeoutError:
    return TimeoutError("no worker took the call within its dispatch_timeout")


def _offers_inline(balancer: object) -> bool:
    """True for balancers whose ``delegate`` is the built-in offer loop."""
    return getattr(type(balancer), "delegate", None) is OfferLoop.delegate


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
    forward_output: bool = True,
    subset: int | None = None,
) -> WorkerProxy:
    proxy = WorkerProxy(
        discovery,
        loadbalancer=loadbalancer,
        tags=tags,
        lease=lease,
        lazy=True,
        wait=wait,
        secure=secure,
        id=id,
        forward_output=forward_output,
        subset=subset,
    )
    proxy._restored = True
    return proxy
