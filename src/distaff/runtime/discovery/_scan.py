"""The reading side of local discovery: worker files, their publishers, and what changed.

A file holds a 25-byte header (``DSTF\x01``, then big-endian: publisher pid u32, its start time in
clock ticks u64, its PID namespace inode u64; 0 where unknown) and the ``encode_metadata`` bytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import stat
import struct
from collections.abc import Iterable

from ..._proc import process_state
from ...serialization.metadata import WorkerMetadata, decode_metadata

logger = logging.getLogger(__name__.rpartition(".")[0] + ".local")

SUFFIX = ".worker"
_MAGIC = b"DSTF\x01"
_HEADER = struct.Struct(">5sIQQ")  # magic, pid, start ticks, PID namespace inode

_Owner = tuple[int, int, int]  # pid, start ticks, PID namespace inode
Signature = tuple[int, int, int, int]


def _signature(st: os.stat_result) -> Signature:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _start_ticks(pid: int) -> int:
    """Return the start time of ``pid`` in clock ticks since boot (0: unknown)."""
    return process_state(pid)[1]


def _pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def own_header() -> bytes:
    """The header this process writes before a worker's metadata."""
    return _HEADER.pack(_MAGIC, os.getpid(), _start_ticks(os.getpid()), _pid_namespace())


def _parse(data: bytes) -> tuple[_Owner, WorkerMetadata]:
    if len(data) < _HEADER.size or not data.startswith(_MAGIC):
        raise ValueError("not a distaff worker file (bad header)")
    _, pid, start, pidns = _HEADER.unpack_from(data)
    if pid <= 0:
        raise ValueError(f"bad publisher pid {pid}")
    return (pid, start, pidns), decode_metadata(data[_HEADER.size :])


def _alive(owner: _Owner, own_pidns: int) -> bool:
    pid, start, pidns = owner
    if pidns and own_pidns and pidns != own_pidns:
        return True  # another PID namespace: cannot judge, assume alive
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    state, ticks = process_state(pid)
    if state in _EXITED:  # exited, and its parent has not reaped it yet
        return False
    return not start or ticks in (0, start)


_EXITED = frozenset({b"Z", b"X"})  # zombie, dead


@dataclasses.dataclass
class Entry:
    signature: Signature  # (inode, size, mtime_ns, ctime_ns)
    owner: _Owner | None = None
    metadata: WorkerMetadata | None = None
    alive: bool = True


class Scanner:
    """The state of one subscription: what each file in the directory holds."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.entries: dict[str, Entry] = {}
        self.own_pidns = _pid_namespace()
        # the publishers of the live entries whose files the last scan found gone
        self._vanished: dict[str, _Owner] = {}

    def scan(
        self, check_liveness: bool, names: set[str] | None = None, exited: set[int] | None = None
    ) -> dict[str, WorkerMetadata]:
        """Look again at ``names`` (None: the whole directory); return the live workers.

        Files are read only when new or changed; their publishers are checked then, those
        of every file when ``check_liveness``, and those in ``exited`` are known dead.
        """
        self._vanished.clear()
        fresh = self._look(names) if names is not None else self._look_all()
        if check_liveness:
            fresh = set(self.entries)
        elif exited:
            fresh |= {n for n, e in self.entries.items() if e.owner and e.owner[0] in exited}
        self._reap(fresh)
        current: dict[str, tuple[int, WorkerMetadata]] = {}
        for entry in self.entries.values():
            if entry.alive and entry.metadata is not None:
                uid = entry.metadata.uid
                if uid not in current or current[uid][0] < entry.signature[2]:
                    current[uid] = (entry.signature[2], entry.metadata)
        return {uid: meta for uid, (_, meta) in current.items()}

    def withdrew(self, uid: str) -> bool:
        """Whether worker ``uid``, gone in the last scan, withdrew itself: its
        file was removed while its publisher lives (a stop), rather than found
        stale (a death).

        A publisher that removed its file and exited at once counts as not
        withdrawn: a file reaped by another subscriber looks the same.
        """
        owner = self._vanished.get(uid)
        return owner is not None and _alive(owner, self.own_pidns)

    def _forget(self, name: str) -> None:
        entry = self.entries.pop(name, None)
        if entry is not None and entry.alive and entry.metadata and entry.owner:
            self._vanished[entry.metadata.uid] = entry.owner

    def owners(self) -> set[_Owner]:
        """The publishers of the live files."""
        return {e.owner for e in self.entries.values() if e.alive and e.owner is not None}

    def _look_all(self) -> set[str]:
        try:
            it = os.scandir(self.directory)
        except FileNotFoundError:
            for name in list(self.entries):
                self._forget(name)
            return set()
        with it:
            names = {i.name for i in it if not i.name.startswith(".") and i.name.endswith(SUFFIX)}
        return self._look(names | self.entries.keys())

    def _look(self, names: Iterable[str]) -> set[str]:
        fresh: set[str] = set()
        for name in names:
            if name.startswith(".") or not name.endswith(SUFFIX):
                continue
            path = os.path.join(self.directory, name)
            try:
                st = os.stat(path, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                self._forget(name)
                continue
            if not stat.S_ISREG(st.st_mode):
                self._forget(name)
                continue
            entry = self.entries.get(name)
            if entry is None or entry.signature != _signature(st):
                self.entries[name] = self._load(path, st)
                fresh.add(name)
        return fresh

    def _load(self, path: str, st: os.stat_result) -> Entry:
        entry = Entry(_signature(st))
        try:
            with open(path, "rb") as f:
                data = f.read()
            entry.owner, entry.metadata = _parse(data)
        except FileNotFoundError:
            entry.alive = False  # replaced or removed meanwhile; next scan sees it
        except (OSError, ValueError) as exc:
            logger.debug("skipping malformed discovery file %s: %s", path, exc)
        return entry

    def _reap(self, names: Iterable[str]) -> None:
        verdicts: dict[_Owner, bool] = {}
        for name in list(names):
            entry = self.entries[name]
            if entry.owner is None or not entry.alive:
                continue
            if entry.owner not in verdicts:
                verdicts[entry.owner] = _alive(entry.owner, self.own_pidns)
            if verdicts[entry.owner]:
                continue
            entry.alive = False
            path = os.path.join(self.directory, name)
            with contextlib.suppress(OSError):
                if _signature(os.stat(path, follow_symlinks=False)) == entry.signature:
                    os.unlink(path)
                    logger.debug("removed stale discovery file %s", path)
