"""Departures: why recent workers left a proxy's pool, remembered for a while.

A worker that leaves is gone from the membership, so a call pinned to it
(an actor's) can only say "not in the pool". The membership records here
why it left, so such a call can tell a drain from a death: the worker
announced its drain on our session (a Drain frame), or withdrew itself from
discovery while alive; otherwise it was lost. The record lives on the
proxy (across its restarts) and is bounded: the oldest are forgotten first.
"""

from __future__ import annotations

import collections
from typing import Protocol


class _Draining(Protocol):
    @property
    def draining(self) -> bool: ...


class Departure:
    """Why one worker left: drained (it said so) or lost.

    ``drained`` is read when asked, not when recorded: a Drain frame that
    reaches the worker's connection just after discovery dropped the worker
    still counts.
    """

    __slots__ = ("_connection", "_drained", "uid")

    def __init__(self, uid: str, drained: bool, connection: _Draining | None) -> None:
        self.uid = uid
        self._drained = drained
        # kept only while a drain may still be announced on it
        self._connection = None if drained else connection

    @property
    def drained(self) -> bool:
        """True if the worker drained: it announced it, or withdrew itself while alive."""
        connection = self._connection
        return self._drained or (connection is not None and connection.draining)

    def __repr__(self) -> str:
        return f"<Departure {self.uid} {'drained' if self.drained else 'lost'}>"


class Departures:
    """The last ``limit`` workers that left, by uid."""

    def __init__(self, limit: int = 1024) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, not {limit!r}")
        self.limit = limit
        self._left: collections.OrderedDict[str, Departure] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._left)

    def left(self, uid: str, *, withdrawn: bool, connection: _Draining | None) -> None:
        """Record that worker ``uid`` left; a second record adds to the first."""
        earlier = self._left.pop(uid, None)
        if earlier is not None:
            withdrawn = withdrawn or earlier.drained
            connection = connection or earlier._connection
        drained = withdrawn or (connection is not None and connection.draining)
        self._left[uid] = Departure(uid, drained, connection)
        while len(self._left) > self.limit:
            self._left.popitem(last=False)

    def returned(self, uid: str) -> None:
        """Worker ``uid`` is in the pool again: forget that it left."""
        self._left.pop(uid, None)

    def get(self, uid: str) -> Departure | None:
        """Why ``uid`` left, if it did recently and has not come back."""
        return self._left.get(uid)
