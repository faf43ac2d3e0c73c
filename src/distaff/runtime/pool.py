"""WorkerPool: spawn local workers, follow discovered ones, or both."""

from __future__ import annotations

import asyncio
import contextvars
import os
import uuid
from types import TracebackType
from typing import Any

from ..balancers.roundrobin import RoundRobinLoadBalancer
from ..proxy.credentials import WorkerCredentials
from ..proxy.proxy import BalancerSpec, WorkerProxy
from ._malloc import tune_this_process
from .context import current_proxy_var
from .discovery.base import DiscoveryLike
from .discovery.local import LocalDiscovery
from .discovery.uri import discovery_from_uri
from .worker.process import WorkerProcess
from .worker.server import WorkerConfig


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
        lease: the most discovered workers to admit.
        lazy: start the proxy on first dispatch rather than on entry.
        grace: seconds in-flight calls get when the pool stops its workers.
        wait: seconds a call waits for a first worker to appear.
        credentials: TLS material: spawned workers serve TLS with it, and only
            TLS workers are admitted.
        metrics: each spawned worker serves Prometheus metrics on a free
            loopback port (its ``metrics_port`` option; needs
            ``distaff[metrics]``).
        forward_output: what calls print and log on workers is written here,
            prefixed with the routine and where it ran (see README); False
            leaves it on the workers' own stdout and stderr.

    Leaving the block stops the spawned workers (SIGTERM, drain, SIGKILL after
    the grace) and leaves no process behind, also when the block raises.
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
        forward_output: bool = True,
        metrics: bool = False,
    ) -> None:
        if isinstance(discovery, str):
            discovery = discovery_from_uri(discovery)
        if spawn is None:
            spawn = 0 if discovery is not None else (os.cpu_count() or 1)
        if spawn < 0:
            raise ValueError(f"spawn must be >= 0, not {spawn}")
        if spawn == 0 and discovery is None:
            raise ValueError("a pool needs workers: pass spawn=N, discovery=..., or both")
        self.tags = frozenset(tags)
        self.spawn = spawn
        self.grace = grace
        self.credentials = credentials
        self.metrics = metrics
        self._discovery = discovery or LocalDiscovery(f"pool-{uuid.uuid4().hex}")
        self._processes: list[WorkerProcess] = []
        self._proxy = WorkerProxy(
            self._discovery.subscriber(),
            loadbalancer=loadbalancer,
            tags=self.tags,
            lease=lease,
            lazy=lazy,
            wait=wait,
            credentials=credentials,
            forward_output=forward_output,
        )
        self._token: contextvars.Token[WorkerProxy | None] | None = None

    @property
    def proxy(self) -> WorkerProxy:
        """The proxy that routes this pool's calls."""
        return self._proxy

    @property
    def pids(self) -> list[int]:
        """PIDs of the spawned worker processes."""
        return [p.pid for p in self._processes if p.pid is not None]

    async def __aenter__(self) -> WorkerPool:
        tune_this_process()
        try:
            await self._spawn_all()
            await self._proxy.start()
            uids = {p.metadata.uid for p in self._processes if p.metadata}
            await self._proxy.wait_for(
                lambda workers: uids <= {m.uid for m in workers}, timeout=30.0
            )
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

    async def _spawn_all(self) -> None:
        config = WorkerConfig(
            tags=self.tags,
            discovery=self._discovery,
            grace=self.grace,
            credentials=self.credentials,
            metrics_port=0 if self.metrics else None,
        )
        self._processes = [
            WorkerProcess(WorkerConfig(**{**vars(config), "uid": uuid.uuid4().hex}))
            for _ in range(self.spawn)
        ]
        async with asyncio.TaskGroup() as group:
            for process in self._processes:
                group.create_task(process.start())

    async def _shutdown(self) -> None:
        # Streams left suspended in the block are closed first (their
        # generators' finally blocks run remotely), so they don't hold the
        # drain for the whole grace. Then the workers: each unpublishes, lets
        # the calls already running finish within the grace (their results
        # still flow back over the proxy's open connections), then exits.
        # Only then the proxy closes.
        self._proxy.close_suspended_streams("the stream was closed when its WorkerPool exited")
        try:
            results: list[Any] = await asyncio.gather(
                *(p.stop() for p in self._processes), return_exceptions=True
            )
        finally:
            await asyncio.gather(*(p.kill() for p in self._processes), return_exceptions=True)
            self._processes = []
            await self._proxy.stop()
        for result in results:
            if isinstance(result, BaseException):
                raise result
