"""LoadBalancerContext: the live membership of one proxy's pool."""

from __future__ import annotations

import types
from collections.abc import Mapping

from ..serialization.metadata import WorkerMetadata
from .connection import WorkerConnection


class LoadBalancerContext:
    """The workers a proxy may dispatch to, each with its connection.

    Only the proxy changes it; balancers read ``workers``, a live read-only
    view in admission order.
    """

    def __init__(self) -> None:
        self._workers: dict[WorkerMetadata, WorkerConnection] = {}
        self._view = types.MappingProxyType(self._workers)
        self.version = 0  # bumped on every change: balancers cache snapshots by it

    @property
    def workers(self) -> Mapping[WorkerMetadata, WorkerConnection]:
        """Read-only, live mapping of worker metadata to connection."""
        return self._view

    def find(self, uid: str) -> WorkerMetadata | None:
        """The metadata of the admitted worker with ``uid``, if any."""
        return next((m for m in self._workers if m.uid == uid), None)

    def add_worker(self, metadata: WorkerMetadata, connection: WorkerConnection) -> None:
        """Admit a worker (replacing any entry with the same uid)."""
        old = self.find(metadata.uid)
        if old is not None:
            del self._workers[old]
        self._workers[metadata] = connection
        self.version += 1

    def update_worker(self, metadata: WorkerMetadata) -> None:
        """Replace the metadata of the worker with the same uid, keeping its place."""
        old = self.find(metadata.uid)
        if old is None:
            return
        items = [(metadata if m is old else m, c) for m, c in self._workers.items()]
        self._workers.clear()
        self._workers.update(items)
        self.version += 1

    def remove_worker(self, metadata: WorkerMetadata) -> WorkerConnection | None:
        """Evict the worker with ``metadata``'s uid; return its connection."""
        old = self.find(metadata.uid)
        if old is None:
            return None
        self.version += 1
        return self._workers.pop(old)
