"""The proxies shipped to a worker, restored once and reused across tasks."""

from __future__ import annotations

import asyncio
import pickle
import time
from typing import TYPE_CHECKING

from ..._exceptions import SerializationError
from ..actors import holds_actors

if TYPE_CHECKING:
    from ...proxy.credentials import WorkerCredentials
    from ...proxy.proxy import WorkerProxy


class ProxyRegistry:
    """Maps a shipped proxy's id to one restored proxy, started on first use.

    Restored proxies dial other workers with this worker's own credentials
    (they never travel in the pickle).
    """

    def __init__(self, credentials: WorkerCredentials | None = None) -> None:
        self._proxies: dict[str, WorkerProxy] = {}
        self._credentials = credentials
        self.used = asyncio.Event()  # set whenever a task brings a proxy along

    def restore(self, proxy_id: str, data: bytes) -> WorkerProxy:
        """Return the proxy for ``proxy_id``, unpickling ``data`` the first time."""
        proxy = self._proxies.get(proxy_id)
        if proxy is None:
            if not data:
                raise SerializationError(f"proxy {proxy_id} was never sent to this worker")
            proxy = pickle.loads(data)
            if proxy.secure:
                proxy.credentials = self._credentials
            self._proxies[proxy_id] = proxy
        self.used.set()
        return proxy

    def due(self, idle: float) -> float | None:
        """Seconds until the least recently used running proxy may be idle; None: none runs."""
        running = [p.last_used for p in self._proxies.values() if p.started]
        if not running:
            return None
        return min(running) + idle - time.monotonic()

    async def stop_idle(self, idle: float) -> int:
        """Stop started proxies unused for ``idle`` s with nothing in flight.

        A stopped proxy drops its subscription and connections and starts
        again on its next dispatch; one that spawned actors still open is
        kept (they live as long as its sessions). Returns how many stopped.
        """
        stopped = 0
        for proxy in list(self._proxies.values()):
            if holds_actors(proxy):  # its sessions keep the actors it spawned alive
                continue
            # each proxy checks and stops atomically: one in use is never stopped
            stopped += await proxy.stop_if_idle(idle)
        return stopped

    async def aclose(self) -> None:
        """Stop every restored proxy; idempotent."""
        proxies, self._proxies = list(self._proxies.values()), {}
        for proxy in proxies:
            await proxy.stop()
