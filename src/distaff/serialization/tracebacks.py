"""Tracebacks that read like local ones: real frames rebuilt, distaff's own left out.

A remote traceback is rebuilt from ``(file, function, line)`` triples as a
chain of real traceback objects, so debuggers and ``traceback`` work on it.
Each frame's code is a stub without column positions, so no caret line is
drawn under a source line the stub never held. A marker frame,
``File "<distaff worker ADDRESS>"``, separates the caller's frames from the
worker's. distaff's own frames are left out on both sides unless
``DISTAFF_TRACEBACK_INTERNALS=1``.
"""

from __future__ import annotations

import os
import pathlib
import types
from collections.abc import Iterable

# this package's directory, with a trailing separator
PACKAGE_DIR = str(pathlib.Path(__file__).resolve().parent.parent) + os.sep

# A Python 3.11+ location-table entry without columns (code 13), covering up
# to 8 code units with a line delta of 0: tracebacks then draw no carets.
_NO_COLUMNS = 0x80 | (13 << 3)


def keep_internals() -> bool:
    """Whether tracebacks keep distaff's own frames (``DISTAFF_TRACEBACK_INTERNALS=1``)."""
    return os.environ.get("DISTAFF_TRACEBACK_INTERNALS", "") not in ("", "0")


def is_internal(filename: str) -> bool:
    """True for a frame of distaff's own code (this installation's files)."""
    return filename.startswith(PACKAGE_DIR)


def marker(origin: str) -> tuple[str, str, int]:
    """The frame that marks where the frames run on worker ``origin`` begin."""
    return (f"<distaff worker {origin}>", "<the frames below ran on that worker>", 1)


def _stub(filename: str, function: str, lineno: int) -> types.CodeType:
    code = compile("raise __traceback_maker", "<distaff>", "exec")
    units = len(code.co_code) // 2
    table = bytearray()
    while units:
        span = min(units, 8)
        table += bytes((_NO_COLUMNS | (span - 1), 0))
        units -= span
    return code.replace(
        co_filename=filename,
        co_name=function,
        co_firstlineno=max(lineno, 1),
        co_linetable=bytes(table),
    )


def build_traceback(frames: Iterable[tuple[str, str, int]]) -> types.TracebackType | None:
    """A real traceback whose entries show ``frames`` (outermost first)."""
    head: types.TracebackType | None = None
    tail: types.TracebackType | None = None
    for filename, function, lineno in frames:
        entry = _entry(filename, function, lineno)
        if tail is None:
            head = entry
        else:
            tail.tb_next = entry
        tail = entry
    return head


def _entry(filename: str, function: str, lineno: int) -> types.TracebackType:
    try:
        exec(_stub(filename, function, lineno), {"__traceback_maker": _Maker()})
    except _Maker as made:
        tb = made.__traceback__
        if tb is not None and tb.tb_next is not None:
            entry = tb.tb_next  # the stub's own frame, not this function's
            entry.tb_next = None
            return entry
    raise AssertionError("a traceback stub did not raise")


class _Maker(Exception):
    """Raised by a stub frame to make a traceback entry."""


def trim_traceback(error: BaseException) -> None:
    """Drop distaff's own frames from ``error``'s traceback (kept under the env switch)."""
    if keep_internals():
        return
    tb = error.__traceback__
    kept: list[types.TracebackType] = []
    while tb is not None:
        if not is_internal(tb.tb_frame.f_code.co_filename):
            kept.append(tb)
        tb = tb.tb_next
    head = None
    for entry in reversed(kept):
        entry.tb_next = head
        head = entry
    error.__traceback__ = head
