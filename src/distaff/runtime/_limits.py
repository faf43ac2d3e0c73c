"""Room for the descriptors a large pool needs (POSIX).

A process of a pool of N workers holds about N descriptors for local
discovery (a pidfd per publisher) and, in the caller, N connections: beyond a
few hundred workers that passes the usual soft limit of 1,024 open files. Like
many runtimes, distaff raises the soft limit to the hard one (at most
``CEILING``); ``DISTAFF_RAISE_NOFILE=0`` leaves it alone.
"""

from __future__ import annotations

import contextlib
import os

CEILING = 1 << 20


def raise_open_files_limit() -> int | None:
    """Raise this process's soft RLIMIT_NOFILE toward its hard limit; return the new soft one."""
    if os.environ.get("DISTAFF_RAISE_NOFILE") == "0":
        return None
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = CEILING if hard == resource.RLIM_INFINITY else min(hard, CEILING)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
    return soft
