"""Where callers report what their calls do, for metrics; nothing unless installed.

``current`` is None until ``distaff.metrics`` installs an observer, and each
hook site checks it first, so a process that never asks for metrics pays one
attribute read per event and imports nothing.
"""

from __future__ import annotations

import bisect
import itertools
from typing import Protocol


class CallerObserverLike(Protocol):
    """What a caller's dispatch path reports."""

    def dispatched(self, outcome: str) -> None:
        """A dispatch ended: ok, no_workers, timeout, error or cancelled."""
        ...

    def attempted(self) -> None:
        """One worker was asked to take a call."""
        ...

    def evicted(self) -> None:
        """A worker was evicted after a failure."""
        ...

    def admitted(self, delta: int) -> None:
        """Workers joined (positive) or left (negative) a pool."""
        ...

    def retried(self) -> None:
        """A routine's call is run again by its retry policy."""
        ...

    def finished(self, routine: str, seconds: float) -> None:
        """A coroutine call returned or raised after ``seconds``, end to end."""
        ...


current: CallerObserverLike | None = None


def install(observer: CallerObserverLike | None) -> None:
    """Make ``observer`` receive every caller event in this process (None: stop)."""
    global current
    current = observer


class RoutineLabels:
    """Bounded label values: the first ``limit`` routine names, then ``other``.

    Not locked: a race at the limit may let one extra name in, which the
    bound tolerates.
    """

    __slots__ = ("_known", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError(f"the routine label limit must be >= 0, not {limit}")
        self.limit = limit
        self._known: dict[str, str] = {}

    def __call__(self, routine: str) -> str:
        label = self._known.get(routine)
        if label is None:
            label = routine if len(self._known) < self.limit else "other"
            if label != "other":
                self._known[routine] = label
        return label


class Histograms:
    """Duration histograms by label, in plain Python: adding costs a bisect.

    Read (``snapshot``) from another thread at scrape time; a value added
    meanwhile shows in the next scrape.

    Args:
        buckets: the upper bounds, ascending (``+Inf`` is implied).
    """

    __slots__ = ("_rows", "buckets")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self._rows: dict[str, list[float]] = {}  # label -> per-bucket counts, then the sum

    def observe(self, label: str, seconds: float) -> None:
        """Count one observation of ``seconds`` under ``label``."""
        row = self._rows.get(label)
        if row is None:
            row = self._rows[label] = [0.0] * (len(self.buckets) + 2)
        row[bisect.bisect_left(self.buckets, seconds)] += 1
        row[-1] += seconds

    def snapshot(self) -> dict[str, tuple[list[tuple[str, float]], float]]:
        """``label -> (cumulative buckets as (le, count), sum)``, Prometheus style."""
        bounds = [*(repr(float(b)) for b in self.buckets), "+Inf"]
        result = {}
        for label, row in self._rows.copy().items():
            counts = row[:-1]
            cumulative = list(itertools.accumulate(counts))
            result[label] = (list(zip(bounds, cumulative, strict=True)), row[-1])
        return result
