"""Keep large payload buffers in the heap (glibc only).

glibc serves buffers above its mmap threshold with fresh mmap()s and trims
the freed top of the heap eagerly, so each payload of a few hundred KiB and
up pays its page faults again on every call: a 1 MiB echo costs 5.4 ms
instead of 2.9 ms. Raising both thresholds keeps such buffers in the heap.
Memory freed below the trim threshold is kept for reuse rather than given
back to the OS at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os

MMAP_THRESHOLD = 64 * 1024 * 1024
TRIM_THRESHOLD = 128 * 1024 * 1024
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def worker_environment(env: dict[str, str]) -> None:
    """Set the thresholds for a child process, unless ``env`` sets them."""
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(MMAP_THRESHOLD))
    env.setdefault("MALLOC_TRIM_THRESHOLD_", str(TRIM_THRESHOLD))


def tune_this_process() -> bool:
    """Set the thresholds here, unless disabled or set through the environment.

    ``DISTAFF_TUNE_MALLOC=0`` turns it off. Returns whether it was applied.
    """
    if os.environ.get("DISTAFF_TUNE_MALLOC") == "0":
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


def trim_heap() -> None:
    """Give the free memory at the heap's top and in its holes back to the OS (glibc)."""
    # the symbols already loaded (libc's among them): no library search, no subprocess
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)
