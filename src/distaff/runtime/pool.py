"""WorkerPool: spawn local workers, follow discovered ones, or both."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import sys
from types import TracebackType

from .. import _checks
from .._exceptions import WorkerStartError
from ..balancers.roundrobin import RoundRobinLoadBalancer
from ..proxy.credentials import WorkerCredentials
from ..proxy.proxy import BalancerSpec, WorkerProxy
from ._limits import raise_open_files_limit
from ._malloc import tune_this_process
from .context import current_proxy_var
from .discovery.base import DiscoveryLike, describe_subscriber
from .discovery.private import PrivateNamespace, sweep_abandoned
from .discovery.uri import discovery_from_uri
from .worker import loops
from .worker.server import WorkerConfig
from .worker.supervisor import WorkerSupervisor

# how long spawned workers may take to appear in the pool's own discovery
JOIN_TIMEOUT = 30.0
# how many workers a routine's nested calls spread over, from inside a worker
DEFAULT_SUBSET = 16


class WorkerPool:
    """An async context manager that makes routine calls inside it run on workers.

    Modes:
        ``WorkerPool()`` spawns ``os.cpu_count()`` local workers;
        ``WorkerPool(spawn=N)`` spawns N; ``WorkerPool(discovery=d)`` spawns
        none and uses the workers ``d`` reports; both at once is a hybrid pool
        whose spawned workers are published to ``d`` too.

    Args:
        *tags: labels: spawned workers carry them, and only workers carrying
            all of them are used.
        spawn: how many local workers to start (default: the CPU count, or 0
            when ``discovery`` is given).
        discovery: a discovery backend to find (and publish) workers with,
            or its URI (``"dns://workers:7400"``, see ``discovery_from_uri``).
        loadbalancer: a balancer or a factory (round robin by default).
        lease: the most discovered workers to admit (at least 1).
        lazy: start the proxy on first dispatch rather than on entry.
        grace: seconds in-flight calls get when the pool stops its workers.
        wait: seconds a call waits for a first worker to appear.
        credentials: TLS material: spawned workers serve TLS with it, and only
            TLS workers are admitted.
        max_concurrency: the most calls each spawned worker runs at once; over
            it a worker refuses a call before unpickling it and the call goes
            to another worker, or waits (within its ``dispatch_timeout``) when
            every worker is busy.
        restart: replace a spawned worker that dies (not stopped by the pool),
            after a back-off that doubles with each failure in a row; after 5
            in a row its slot is given up with a warning on the
            ``distaff.pool`` logger. False: a dead worker is not replaced.
        metrics: each spawned worker serves Prometheus metrics on a free
            loopback port (its ``metrics_port`` option; needs
            ``distaff[metrics]``).
        forward_output: what calls print and log on workers is written here,
            prefixed with the routine and where it ran (see README); False
            leaves it on the workers' own stdout and stderr.
        subset: the most workers that nested calls made from inside one
            worker spread over: each worker keeps to its own random subset
            of this size, so a pool of N workers holds about N * subset
            connections instead of N * N. None: every worker. Calls pinned
            to one worker (actors) still reach it.
        event_loop: the event loop spawned workers run on: ``"auto"`` (uvloop
            when installed, ``pip install 'distaff[uvloop]'``), ``"asyncio"``
            or ``"uvloop"``; the default comes from ``DISTAFF_WORKER_LOOP``,
            else ``"auto"``. The caller's own loop is left as it is.

    Spawned workers start with the caller's ``sys.path`` as it is when the
    pool starts (restarted ones too), and its environment. Leaving the block
    stops them (SIGTERM, drain, SIGKILL after the grace) and leaves no process
    and no discovery file behind, also when the block raises.

    Raises:
        TypeError, ValueError: an argument of the wrong type or out of range,
            naming it.
    """

    def __init__(
        self,
        *tags: str,
        spawn: int | None = None,
        discovery: DiscoveryLike | str | None = None,
        loadbalancer: BalancerSpec = RoundRobinLoadBalancer,
        lease: int | None = None,
        lazy: bool = True,
        grace: float = 5.0,
        wait: float = 10.0,
        credentials: WorkerCredentials | None = None,
        max_concurrency: int | None = None,
        restart: bool = True,
        forward_output: bool = True,
        metrics: bool = False,
        subset: int | None = DEFAULT_SUBSET,
        event_loop: str | None = None,
    ) -> None:
        self.tags = _checks.tags(tags)
        if isinstance(discovery, str):
            discovery = discovery_from_uri(discovery)
        if discovery is not None and not isinstance(discovery, DiscoveryLike):
            raise TypeError(
                f"discovery must be a discovery backend such as distaff.LocalDiscovery(...) "
                "or a URI such as 'dns://workers:7400', "
                f"not {type(discovery).__name__} {discovery!r}"
            )
        if credentials is not None and not isinstance(credentials, WorkerCredentials):
            raise TypeError(
                f"credentials must be distaff.WorkerCredentials, not {type(credentials).__name__}"
            )
        default = 0 if discovery is not None else (os.cpu_count() or 1)
        self.spawn: int = _checks.integer("spawn", default if spawn is None else spawn, minimum=0)
        if self.spawn == 0 and discovery is None:
            raise ValueError("a pool needs workers: pass spawn=N, discovery=..., or both")
        self.grace = _checks.seconds("grace", grace)
        self.restart = _checks.flag("restart", restart)
        self.max_concurrency = _checks.integer("max_concurrency", max_concurrency, minimum=1)
        self.event_loop = loops.check(loops.default() if event_loop is None else event_loop)
        self.credentials = credentials
        self._private: PrivateNamespace | None = None
        if discovery is None:
            self._private = PrivateNamespace()
            discovery = self._private.discovery
        self._discovery = discovery
        self._supervisor: WorkerSupervisor | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self.metrics = _checks.flag("metrics", metrics)
        self._proxy = WorkerProxy(
            self._discovery.subscriber(),
            loadbalancer=loadbalancer,
            tags=self.tags,
            lease=_checks.integer("lease", lease, minimum=1),
            lazy=_checks.flag("lazy", lazy),
            wait=_checks.seconds("wait", wait),
            credentials=credentials,
            forward_output=forward_output,
            subset=_checks.integer("subset", subset, minimum=1),
        )
        self._token: contextvars.Token[WorkerProxy | None] | None = None

    @property
    def proxy(self) -> WorkerProxy:
        """The proxy that routes this pool's calls."""
        return self._proxy

    @property
    def discovery(self) -> DiscoveryLike:
        """The discovery this pool follows: the one given, or its own private namespace."""
        return self._discovery

    @property
    def pids(self) -> list[int]:
        """PIDs of the spawned worker processes that are alive now."""
        if self._supervisor is None:
            return []
        return [p.pid for p in self._supervisor.processes if p.pid is not None]

    async def __aenter__(self) -> WorkerPool:
        tune_this_process()
        raise_open_files_limit()
        self._stack = contextlib.AsyncExitStack()
        try:
            await self._start()
        except BaseException:
            await self._shutdown()
            raise
        self._token = current_proxy_var.set(self._proxy)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            current_proxy_var.reset(self._token)
            self._token = None
        await self._shutdown()

    async def _start(self) -> None:
        assert self._stack is not None
        if self._private is not None:
            await asyncio.to_thread(sweep_abandoned, self._private.discovery.root)
            self._private.create()
        if self.spawn:
            config = WorkerConfig(
                tags=self.tags,
                discovery=self._discovery,
                grace=self.grace,
                credentials=self.credentials,
                max_concurrency=self.max_concurrency,
                metrics_port=0 if self.metrics else None,
                event_loop=self.event_loop,
                ipc=True,
            )
            self._supervisor = WorkerSupervisor(config, self.spawn, list(sys.path))
            await self._supervisor.start()
        await self._proxy.start()
        await self._await_spawned()
        if self.restart and self._supervisor is not None:
            group = await self._stack.enter_async_context(asyncio.TaskGroup())
            watcher = group.create_task(self._supervisor.watch())
            self._stack.callback(watcher.cancel)  # runs before the group waits for it

    async def _await_spawned(self) -> None:
        if self._supervisor is None:
            return
        uids = {p.metadata.uid for p in self._supervisor.processes if p.metadata}
        try:
            await self._proxy.wait_for(
                lambda workers: uids <= {m.uid for m in workers}, timeout=JOIN_TIMEOUT
            )
        except TimeoutError:
            subscriber = describe_subscriber(self._discovery.subscriber())
            raise WorkerStartError(
                f"the spawned workers did not appear in {subscriber} within {JOIN_TIMEOUT} s"
            ) from None

    async def _shutdown(self) -> None:
        # Streams left suspended in the block are closed first (their
        # generators' finally blocks run remotely), so they don't hold the
        # drain for the whole grace. The watcher next, so nothing is restarted;
        # then the workers: each unpublishes, lets the calls already running
        # finish within the grace (their results still flow back over the
        # proxy's open connections), then exits. Only then the proxy closes
        # and the namespace goes.
        self._proxy.close_suspended_streams("the stream was closed when its WorkerPool exited")
        stack, self._stack = self._stack, None
        supervisor, self._supervisor = self._supervisor, None
        try:
            if stack is not None:
                await stack.aclose()
        finally:
            try:
                if supervisor is not None:
                    # a pool with its own discovery has no caller but this one
                    # and its workers: they may stop together
                    together = self._proxy.quiet if self._private is not None else None
                    await supervisor.stop(answered=together)
            finally:
                try:
                    await self._proxy.stop()
                finally:
                    if self._private is not None:
                        self._private.remove()
