"""The discovery protocol: publishers announce workers, subscribers follow them."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from ..serialization.metadata import WorkerMetadata


class DiscoveryEventType(enum.Enum):
    """What happened to a worker."""

    WORKER_ADDED = "worker-added"
    WORKER_UPDATED = "worker-updated"
    WORKER_DROPPED = "worker-dropped"


@dataclasses.dataclass(frozen=True)
class DiscoveryEvent:
    """One change in the set of known workers.

    Attributes:
        type: what happened.
        metadata: the worker it happened to.
        withdrawn: for ``WORKER_DROPPED``, True when the worker took itself
            out while alive (it is stopping: a drain); False when it was found
            gone (dead, unreachable) or the backend cannot tell.
    """

    type: DiscoveryEventType
    metadata: WorkerMetadata
    withdrawn: bool = False


@runtime_checkable
class DiscoveryPublisherLike(Protocol):
    """Announces this process's workers; ``aclose`` withdraws what it published."""

    async def publish(self, event: DiscoveryEvent) -> None:
        """Announce that a worker was added, updated or dropped."""
        ...

    async def aclose(self) -> None:
        """Withdraw every worker still published and release resources."""
        ...


@runtime_checkable
class DiscoverySubscriberLike(Protocol):
    """A pickle-safe description of what to follow.

    Each ``__aiter__`` opens a new subscription: it first yields an
    ``WORKER_ADDED`` event for every worker already known, then changes as they
    happen, until the iterator is closed. The object itself holds no live
    resources, so it can travel inside a pickled proxy.
    """

    def __aiter__(self) -> AsyncIterator[DiscoveryEvent]:
        """Open a subscription."""
        ...


def describe_subscriber(subscriber: object) -> str:
    """Name what a subscriber follows, for messages: ``LocalDiscovery('jobs')``.

    Uses the subscriber's ``describe()`` when it has one (the built-in
    subscribers do), else its ``repr``.
    """
    describe = getattr(subscriber, "describe", None)
    if callable(describe):
        with contextlib.suppress(Exception):
            return str(describe())
    return repr(subscriber)


@runtime_checkable
class DiscoveryLike(Protocol):
    """A discovery backend: a publisher and subscribers over one namespace."""

    def publisher(self) -> DiscoveryPublisherLike:
        """Return a new publisher (the caller owns it and closes it)."""
        ...

    def subscriber(self) -> DiscoverySubscriberLike:
        """Return a pickle-safe subscriber."""
        ...
