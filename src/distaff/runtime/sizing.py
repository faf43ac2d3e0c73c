"""How many items each call of a chunked ``distaff.map`` carries."""

from __future__ import annotations

import math

# aim: this much worker time per call, so the per-call cost (~0.3-0.5 ms of
# CPU, caller and worker together) stays a few percent of the work
TARGET_SECONDS = 0.02
# the most items one call carries (bounds its message and its latency)
MAX_CHUNK = 4096


class ChunkSizer:
    """Sizes the calls of one fan-out.

    Rule, for ``chunksize=None``: the first calls carry one item each; every
    finished call reports the worker's time spent on its items, and the next
    calls carry ``TARGET_SECONDS / (seconds per item)`` items (a running
    average over calls), between 1 and ``MAX_CHUNK``. When the input's
    length is known, no call takes more than the remaining items divided by
    twice the worker count, so the last items still spread over the pool.
    A fixed ``chunksize`` is used as given.
    """

    def __init__(self, fixed: int | None, workers: int, total: int | None) -> None:
        self.fixed = fixed
        self.workers = max(1, workers)
        self.total = total
        self._handed = 0
        self._per_item: float | None = None

    def next_size(self) -> int:
        """How many items the next call takes."""
        if self.fixed is not None:
            return self.fixed
        size = 1 if self._per_item is None else TARGET_SECONDS / self._per_item
        size = int(min(max(size, 1), MAX_CHUNK))
        if self.total is not None:
            spread = math.ceil((self.total - self._handed) / (2 * self.workers))
            size = max(1, min(size, spread))
        self._handed += size
        return size

    def observe(self, items: int, seconds: float) -> None:
        """A call of ``items`` items took ``seconds`` of worker time."""
        if self.fixed is not None or items <= 0:
            return
        sample = max(seconds / items, 1e-7)
        previous = self._per_item
        self._per_item = sample if previous is None else (previous + sample) / 2
