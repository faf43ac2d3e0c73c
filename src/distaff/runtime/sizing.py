"""How many items each call of a chunked ``distaff.map`` carries, and how many calls fly."""

from __future__ import annotations

import math

# aim: this much worker time per call, so the per-call cost (~0.3-0.5 ms of
# CPU, caller and worker together) stays a few percent of the work
TARGET_SECONDS = 0.02
# the most items one call carries (bounds its latency)
MAX_CHUNK = 16384
# the most argument bytes one call carries, as far as the sizes seen so far tell
MAX_CALL_BYTES = 1 << 20
# after the probe, calls grow from this many items, doubling, to their size:
# the first results come back soon and the caller starts on them early
RAMP_START = 1024
# the last calls shrink to spread the remaining items over the workers, down
# to this fraction of the size (each call still pays its fixed cost)
TAIL_SHRINK = 8
# the weight of a finished call's timing after each newer one
FADE = 0.8
# calls of at least this many items are "big": their items are quick
BIG_CALL = 64
# big calls in flight per worker: at least one running, one queued behind it
# and one on the wire; more when that is less than FLIGHT_SECONDS of work
BIG_CALLS_PER_WORKER = 3
FLIGHT_SECONDS = 0.005


class ChunkSizer:
    """Sizes the calls of one fan-out, and says how many may be in flight.

    Rule, for ``chunksize=None``: the first call to each worker carries one
    item, and no other call starts until one of them reports (a probe).
    Every finished call reports the worker's time spent on its items, and
    the next calls carry ``TARGET_SECONDS / (seconds per item)`` items,
    between 1 and ``MAX_CHUNK`` and within ``MAX_CALL_BYTES`` of arguments
    (bytes per item measured the same way as time), growing there from
    ``RAMP_START`` items by doubling. Seconds per item is worker seconds
    over items, both summed over the finished calls with older calls fading
    (weight 0.8 per newer call): big calls dominate, so a fixed cost per
    call (a thread hop) stops skewing it once calls grow. When the input's
    length is known, no call takes more than the remaining items divided by
    twice the worker count (nor less than 1/8 of the size the timing asks
    for), so the last items still spread over the pool. A fixed
    ``chunksize`` is used as given.

    Calls of ``BIG_CALL`` items or more of quick items (measured, or of a
    fixed size before any measurement) are kept to ``BIG_CALLS_PER_WORKER``
    in flight per worker, or as many as make ``FLIGHT_SECONDS`` of work:
    enough to keep every worker busy, few enough that results stream back
    while workers compute instead of all arriving at the end. Other calls
    fly up to the fan-out's concurrency.
    """

    def __init__(self, fixed: int | None, workers: int, total: int | None) -> None:
        self.fixed = fixed
        self.workers = max(1, workers)
        self.total = total
        self._handed = 0
        self._seconds = 0.0
        self._items = 0.0
        self._bytes = 0.0
        self._last = fixed or 1
        self._ramp = RAMP_START

    def next_size(self) -> int:
        """How many items the next call takes."""
        if self.fixed is not None:
            return self.fixed
        size = 1  # the probe, until a timing comes back
        if self._items:
            wanted = TARGET_SECONDS * self._items / max(self._seconds, 1e-7 * self._items)
            if self._bytes:
                wanted = min(wanted, MAX_CALL_BYTES * self._items / self._bytes)
            size = int(min(max(wanted, 1), self._ramp, MAX_CHUNK))
            self._ramp = min(self._ramp * 2, MAX_CHUNK)
        if self.total is not None:
            spread = math.ceil((self.total - self._handed) / (2 * self.workers))
            size = max(1, min(size, max(spread, size // TAIL_SHRINK)))
        self._handed += size
        self._last = size
        return size

    @property
    def quick(self) -> bool:
        """True once the items are measured to take under ``TARGET_SECONDS / BIG_CALL`` each."""
        return bool(self._items) and self._seconds / self._items < TARGET_SECONDS / BIG_CALL

    def in_flight(self, limit: int) -> int:
        """How many calls may be in flight now, at most ``limit``."""
        if not self._items:
            if self.fixed is None:
                return min(limit, self.workers)  # probing: nothing measured yet
            if self.fixed < BIG_CALL:
                return limit
            return min(limit, BIG_CALLS_PER_WORKER * self.workers)  # until measured
        if not self.quick or self._last < BIG_CALL:
            return limit
        per_call = self._last * self._seconds / self._items
        per_worker = BIG_CALLS_PER_WORKER
        if per_call > 0:
            per_worker = max(per_worker, math.ceil(FLIGHT_SECONDS / per_call))
        return min(limit, per_worker * self.workers)

    def observe(self, items: int, seconds: float, size: int = 0) -> None:
        """A call of ``items`` items took ``seconds`` of worker time, ``size`` argument bytes."""
        if items <= 0:
            return
        self._seconds = self._seconds * FADE + max(seconds, 0.0)
        self._items = self._items * FADE + items
        self._bytes = self._bytes * FADE + size
