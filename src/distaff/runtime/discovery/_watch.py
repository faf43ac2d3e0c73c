"""Wake a local-discovery subscription when something changes, without polling.

Linux: an inotify watch on the namespace directory (or, until it exists, on its
nearest existing ancestor) reports the names that changed, and a pidfd per
publisher process becomes readable when that process exits. Both are read
from the event loop (``add_reader``), so an idle subscription costs nothing.
Where either is missing (another OS, no inotify, out of descriptors),
``Watch.events`` says so and the subscription polls instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import dataclasses
import errno
import os
import struct
from collections.abc import Callable

# os.pidfd_open (Linux >= 5.3); looked up here so tests can take it away from
# discovery alone (asyncio's own child watcher uses it on 3.12)
_pidfd_open: Callable[[int], int] | None = getattr(os, "pidfd_open", None)

_IN_MODIFY = 0x2
_IN_ATTRIB = 0x4
_IN_CLOSE_WRITE = 0x8
_IN_MOVED_FROM = 0x40
_IN_MOVED_TO = 0x80
_IN_CREATE = 0x100
_IN_DELETE = 0x200
_IN_DELETE_SELF = 0x400
_IN_MOVE_SELF = 0x800
_IN_Q_OVERFLOW = 0x4000
_IN_IGNORED = 0x8000
_IN_ONLYDIR = 0x01000000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_GONE = _IN_DELETE_SELF | _IN_MOVE_SELF | _IN_IGNORED
_MASK = (
    _IN_MODIFY
    | _IN_ATTRIB
    | _IN_CLOSE_WRITE
    | _IN_MOVED_FROM
    | _IN_MOVED_TO
    | _IN_CREATE
    | _IN_DELETE
    | _GONE
    | _IN_ONLYDIR
)
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


@dataclasses.dataclass
class Changes:
    """What woke a subscription since it last looked.

    Attributes:
        names: file names in the directory that changed.
        exited: publisher pids that exited.
        rescan: look at the whole directory (first look, lost or moved
            watch, event queue overflow).
    """

    names: set[str] = dataclasses.field(default_factory=set)
    exited: set[int] = dataclasses.field(default_factory=set)
    rescan: bool = True


class Watch:
    """One subscription's inotify watch and pidfds; ``close`` releases them all."""

    def __init__(self, directory: str) -> None:
        self._directory = directory
        self._loop = asyncio.get_running_loop()
        self._fd = -1
        self._watched: str | None = None  # the directory or the ancestor we watch
        self._wd = -1  # its watch descriptor
        self._pidfds: dict[int, int] = {}  # pid -> pidfd
        self._changes = Changes()
        self._wake = asyncio.Event()
        self._wake.set()
        if _LIBC is not None:
            fd = _LIBC.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
            if fd >= 0:
                self._fd = fd
                self._loop.add_reader(fd, self._on_inotify)

    @property
    def armed(self) -> bool:
        """True when a change in the directory wakes us (inotify works and is set up)."""
        return self._watched is not None

    @property
    def watching_directory(self) -> bool:
        """True when changes in the directory itself wake us."""
        return self._watched == self._directory

    def arm(self) -> None:
        """Watch the directory if it exists now, else its nearest existing ancestor."""
        if _LIBC is None or self._fd < 0 or self.watching_directory:
            return
        path = self._directory
        while (wd := _LIBC.inotify_add_watch(self._fd, os.fsencode(path), _MASK)) < 0:
            parent = os.path.dirname(path)
            if ctypes.get_errno() not in (errno.ENOENT, errno.ENOTDIR) or parent == path:
                self._forget_watch()
                return
            path = parent
        if wd != self._wd:
            self._forget_watch()
            self._changes.rescan = True  # it may have changed before the watch
            self._wake.set()
        self._wd, self._watched = wd, path

    def _forget_watch(self) -> None:
        if _LIBC is not None and self._wd >= 0:
            _LIBC.inotify_rm_watch(self._fd, self._wd)
        self._wd, self._watched = -1, None

    def follow(self, pid: int) -> bool:
        """Be woken when ``pid`` exits; False if that cannot be watched (poll it)."""
        if pid in self._pidfds:
            return True
        try:
            if _pidfd_open is None:
                return False
            fd = _pidfd_open(pid)
        except ProcessLookupError:
            self._changes.exited.add(pid)
            self._wake.set()
            return True
        except (OSError, AttributeError):
            return False
        self._pidfds[pid] = fd
        self._loop.add_reader(fd, self._on_exit, pid)
        return True

    def unfollow(self, pid: int) -> None:
        """Stop watching ``pid``."""
        fd = self._pidfds.pop(pid, None)
        if fd is not None:
            self._loop.remove_reader(fd)
            os.close(fd)

    @property
    def followed(self) -> set[int]:
        """The pids being watched."""
        return set(self._pidfds)

    async def wait(self, timeout: float | None) -> Changes:
        """Wait until something changed (or ``timeout`` s passed); return what did."""
        if not self._wake.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
        self._wake.clear()
        changes, self._changes = self._changes, Changes(rescan=False)
        return changes

    def _on_exit(self, pid: int) -> None:
        self.unfollow(pid)
        self._changes.exited.add(pid)
        self._wake.set()

    def _on_inotify(self) -> None:
        try:
            data = os.read(self._fd, 64 * 1024)
        except BlockingIOError:
            return
        offset = 0
        while offset + _EVENT.size <= len(data):
            wd, mask, _, size = _EVENT.unpack_from(data, offset)
            offset += _EVENT.size
            name = data[offset : offset + size].rstrip(b"\0")
            offset += size
            if mask & _IN_Q_OVERFLOW:
                self._changes.rescan = True
            elif wd != self._wd:
                continue  # a watch we already left
            elif mask & _GONE:
                if not mask & _IN_IGNORED:
                    self._forget_watch()
                self._wd, self._watched = -1, None
                self._changes.rescan = True
            elif not self.watching_directory:
                self._changes.rescan = True  # an ancestor changed: try the directory again
                self._watched = None
            elif name and not name.startswith(b"."):
                self._changes.names.add(os.fsdecode(name))
        self._wake.set()

    @property
    def events(self) -> bool:
        """True when inotify works here (so directory changes wake us)."""
        return self._fd >= 0

    def close(self) -> None:
        """Release the inotify descriptor and every pidfd; idempotent."""
        for pid in list(self._pidfds):
            self.unfollow(pid)
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
