"""How many items each call of a chunked ``distaff.map`` carries."""

from __future__ import annotations

import math

# aim: this much worker time per call, so the per-call cost (~0.3-0.5 ms of
# CPU, caller and worker together) stays a few percent of the work
TARGET_SECONDS = 0.02
# the most items one call carries (bounds its message and its latency)
MAX_CHUNK = 4096
# the weight of a finished call's timing after each newer one
FADE = 0.8


class ChunkSizer:
    """Sizes the calls of one fan-out.

    Rule, for ``chunksize=None``: the first calls carry one item each; every
    finished call reports the worker's time spent on its items, and the next
    calls carry ``TARGET_SECONDS / (seconds per item)`` items, between 1 and
    ``MAX_CHUNK``. Seconds per item is worker seconds over items, both summed
    over the finished calls with older calls fading (weight 0.8 per newer
    call): big calls dominate, so a fixed cost per call (a thread hop)
    stops skewing it once calls grow. When the input's
    length is known, no call takes more than the remaining items divided by
    twice the worker count, so the last items still spread over the pool.
    A fixed ``chunksize`` is used as given.
    """

    def __init__(self, fixed: int | None, workers: int, total: int | None) -> None:
        self.fixed = fixed
        self.workers = max(1, workers)
        self.total = total
        self._handed = 0
        self._seconds = 0.0
        self._items = 0.0

    def next_size(self) -> int:
        """How many items the next call takes."""
        if self.fixed is not None:
            return self.fixed
        per_item = self._seconds / self._items if self._items else None
        size = 1 if per_item is None else TARGET_SECONDS / max(per_item, 1e-7)
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
        self._seconds = self._seconds * FADE + max(seconds, 0.0)
        self._items = self._items * FADE + items
