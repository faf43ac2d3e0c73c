"""Progress reporting for fan-outs: tqdm, rich, a plain stderr line, or a callback."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

ProgressSpec = bool | Callable[[int, int | None], Any] | None


class Progress(Protocol):
    """Counts completions; closed once when the fan-out ends."""

    def update(self, n: int) -> None:
        """Record ``n`` more completions."""

    def close(self) -> None:
        """Finish the display."""


class _Callback:
    def __init__(self, callback: Callable[[int, int | None], Any], total: int | None) -> None:
        self._callback = callback
        self._total = total
        self._done = 0

    def update(self, n: int) -> None:
        self._done += n
        self._callback(self._done, self._total)

    def close(self) -> None:
        pass


class _Tqdm:
    def __init__(self, total: int | None, description: str) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, desc=description, unit="item")

    def update(self, n: int) -> None:
        self._bar.update(n)

    def close(self) -> None:
        self._bar.close()


class _Rich:
    def __init__(self, total: int | None, description: str) -> None:
        from rich.progress import Progress as RichProgress

        self._progress = RichProgress(transient=False)
        self._task = self._progress.add_task(description, total=total)
        self._progress.start()

    def update(self, n: int) -> None:
        self._progress.advance(self._task, n)

    def close(self) -> None:
        self._progress.stop()


class _Line:
    """A line on stderr at most once a second, and a last one at the end."""

    def __init__(self, total: int | None, description: str) -> None:
        self._total = total
        self._description = description
        self._done = 0
        self._started = self._shown = time.monotonic()

    def update(self, n: int) -> None:
        self._done += n
        now = time.monotonic()
        if now - self._shown >= 1.0:
            self._shown = now
            self._write(now)

    def close(self) -> None:
        self._write(time.monotonic())

    def _write(self, now: float) -> None:
        of = f"/{self._total}" if self._total is not None else ""
        rate = self._done / max(now - self._started, 1e-9)
        sys.stderr.write(f"{self._description}: {self._done}{of} done, {rate:,.0f}/s\n")
        sys.stderr.flush()


def open_progress(spec: ProgressSpec, total: int | None, description: str) -> Progress | None:
    """The display ``spec`` asks for: None/False none, a callable, or True.

    ``True`` picks tqdm if it is installed, else rich, else a plain line on
    stderr every second. A callable gets ``(done, total)`` after every
    completion (``total`` is None when the input has no length).
    """
    if spec is None or spec is False:
        return None
    if spec is True:
        for display in (_Tqdm, _Rich):
            try:
                return display(total, description)
            except ImportError:
                continue
        return _Line(total, description)
    if callable(spec):
        return _Callback(spec, total)
    raise TypeError(f"progress must be a bool or a callable(done, total), not {spec!r}")
