"""Discovery for one host: workers announced as files in a shared directory.

Layout: ``<root>/<namespace>/<key>.worker``, one file per worker; ``<key>`` is the uid, or ``=``
and a hash of it when the uid is not a safe file name. A file holds a 25-byte header (``DSTF\x01``,
then big-endian: publisher pid u32, its start time in clock ticks u64, its PID namespace inode u64;
0 where unknown) and the ``encode_metadata`` bytes. Files are written to a dot-named temporary and
moved into place with ``os.replace``, so readers never see a partial record; per uid the last
writer wins.

Subscribers wait, on Linux, for inotify to report a changed name in the directory and for a
pidfd to report that a publisher exited: an idle subscription makes no system call, and a change
or a crash is seen at once. A file is read only when its inode, size or times changed, and its
publisher is checked then: a pid that no longer exists, or now belongs to a younger process, makes
its workers dropped and the stale file is removed. Files from another PID namespace are never
judged stale. Without inotify (another OS) subscribers poll every ``poll_interval`` (25 ms by
default) after a change, backing off to 1 s while nothing changes, and without pidfds they check
the publishers every ``LIVENESS_INTERVAL`` (250 ms). POSIX only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Self

from ... import _checks
from ...serialization.metadata import WorkerMetadata, encode_metadata
from ._scan import SUFFIX, Scanner, Signature, own_header
from ._watch import Changes, Watch
from .base import DiscoveryEvent, DiscoveryEventType

logger = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL = 0.025
LIVENESS_INTERVAL = 0.25
_QUIET_POLL = 1.0  # the longest pause between polls (without inotify) while nothing changes
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def validate_namespace(namespace: str) -> str:
    """Return ``namespace`` if usable as a discovery namespace, else raise.

    A namespace is 1-128 letters, digits, ``_``, ``-`` or ``.``, not starting with ``.`` (so it is
    one safe path component and one DNS-SD TXT value).

    Raises:
        TypeError: not a string.
        ValueError: naming the bad value.
    """
    if not isinstance(namespace, str):
        raise TypeError(f"a discovery namespace is a str, not {type(namespace).__name__}")
    if not _NAME_RE.fullmatch(namespace):
        raise ValueError(
            f"invalid discovery namespace {namespace!r}: use 1-128 letters, digits,"
            " '_', '-' or '.', not starting with '.'"
        )
    return namespace


def default_root() -> str:
    """Return the per-user root: under /dev/shm if writable, else the temp dir."""
    base = "/dev/shm"
    if not (os.path.isdir(base) and os.access(base, os.W_OK | os.X_OK)):
        base = tempfile.gettempdir()
    return os.path.join(base, f"distaff-discovery-{os.getuid()}")


def _file_name(uid: str) -> str:
    if _NAME_RE.fullmatch(uid):
        return uid + SUFFIX
    return "=" + hashlib.sha256(uid.encode()).hexdigest()[:40] + SUFFIX


class LocalPublisher:
    """Writes one file per published worker; ``aclose`` removes them all."""

    def __init__(self, directory: str) -> None:
        self._directory = directory
        self._written: dict[str, str] = {}  # uid -> path
        self._wrote = False  # ever: then the directory may be ours to remove
        self._closed = False

    async def publish(self, event: DiscoveryEvent) -> None:
        """Write (added/updated) or remove (dropped) the worker's file.

        Raises:
            RuntimeError: the publisher is closed.
        """
        if self._closed:
            raise RuntimeError("publisher is closed")
        uid = event.metadata.uid
        path = os.path.join(self._directory, _file_name(uid))
        if event.type is DiscoveryEventType.WORKER_DROPPED:
            self._written.pop(uid, None)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return
        self._write(path, own_header() + encode_metadata(event.metadata))
        self._written[uid] = path
        self._wrote = True

    def _write(self, path: str, data: bytes) -> None:
        tmp = os.path.join(self._directory, f".{uuid.uuid4().hex}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        for attempt in range(3):  # another publisher's aclose may remove an empty directory
            try:
                fd = os.open(tmp, flags, 0o644)
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
                os.makedirs(os.path.dirname(self._directory), mode=0o700, exist_ok=True)
                os.makedirs(self._directory, mode=0o700, exist_ok=True)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    async def aclose(self) -> None:
        """Remove every file this publisher wrote (and the directory if empty); idempotent."""
        self._closed = True
        written, self._written = self._written, {}
        for path in written.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        if self._wrote:
            self._wrote = False
            with contextlib.suppress(OSError):  # not empty: others still publish there
                os.rmdir(self._directory)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


@dataclasses.dataclass(frozen=True)
class LocalSubscriber:
    """Follows one namespace directory; holds only a path and a float, so it pickles.

    Each ``__aiter__`` starts a new subscription: ``WORKER_ADDED`` for every live worker already
    published, then changes as the directory changes. Closing the iterator releases everything.
    """

    directory: str
    poll_interval: float = DEFAULT_POLL_INTERVAL

    def __aiter__(self) -> AsyncIterator[DiscoveryEvent]:
        """Open a subscription."""
        return self._follow()

    def describe(self) -> str:
        """Say what this follows, as the discovery that made it: ``LocalDiscovery('jobs')``."""
        root, namespace = os.path.split(self.directory)
        if root == default_root():
            return f"LocalDiscovery({namespace!r})"
        return f"LocalDiscovery({namespace!r}, root={root!r})"

    async def _follow(self) -> AsyncIterator[DiscoveryEvent]:
        scanner = Scanner(self.directory)
        watch = Watch(self.directory)
        try:
            known: dict[str, WorkerMetadata] = {}
            async for changes, check in self._changes(scanner, watch):
                names = None if changes.rescan else changes.names
                current = scanner.scan(check, names, changes.exited)
                for event in _diff(known, current, scanner.withdrew):
                    yield event
                known = current
        finally:
            watch.close()

    async def _changes(self, scanner: Scanner, watch: Watch) -> AsyncIterator[tuple[Changes, bool]]:
        """What to look at next, and whether to check every publisher's liveness.

        With inotify and pidfds this waits for as long as nothing happens. Without them it
        polls: every ``poll_interval`` after a change, backing off to ``_QUIET_POLL`` while
        nothing changes, and checks liveness every ``LIVENESS_INTERVAL``.
        """
        loop = asyncio.get_running_loop()
        next_liveness = loop.time()
        pause = self.poll_interval
        changes = Changes()  # the first look is a full scan
        unfollowed = False
        while True:
            watch.arm()
            check = unfollowed and loop.time() >= next_liveness
            if check:
                next_liveness = loop.time() + LIVENESS_INTERVAL
            polling = not watch.armed
            changes.rescan |= polling
            before = _signatures(scanner)
            yield changes, check
            unfollowed = _follow_owners(watch, scanner)
            changed = _signatures(scanner) != before
            pause = self.poll_interval if changed else min(pause * 2, _QUIET_POLL)
            timeout = pause if polling else None
            if unfollowed:
                wait = max(0.0, next_liveness - loop.time())
                timeout = wait if timeout is None else min(timeout, wait)
            changes = await watch.wait(timeout)


def _signatures(scanner: Scanner) -> dict[str, tuple[Signature, bool]]:
    return {name: (e.signature, e.alive) for name, e in scanner.entries.items()}


def _follow_owners(watch: Watch, scanner: Scanner) -> bool:
    """Wake ``watch`` when a publisher exits; True if some cannot be followed (poll them)."""
    own = scanner.own_pidns
    pids = {pid for pid, _, pidns in scanner.owners() if not (pidns and own and pidns != own)}
    for pid in watch.followed - pids:
        watch.unfollow(pid)
    followed = [watch.follow(pid) for pid in pids]  # every pid, not up to the first failure
    return not all(followed)


def _diff(
    known: dict[str, WorkerMetadata],
    current: dict[str, WorkerMetadata],
    withdrew: Callable[[str], bool] = lambda uid: False,
) -> list[DiscoveryEvent]:
    events = [
        DiscoveryEvent(DiscoveryEventType.WORKER_DROPPED, known[uid], withdrew(uid))
        for uid in sorted(known.keys() - current.keys())
    ]
    for uid, meta in sorted(current.items()):
        if uid not in known:
            events.append(DiscoveryEvent(DiscoveryEventType.WORKER_ADDED, meta))
        elif known[uid] != meta:
            events.append(DiscoveryEvent(DiscoveryEventType.WORKER_UPDATED, meta))
    return events


class LocalDiscovery:
    """Discovery among the processes of one host, through a shared directory.

    Args:
        namespace: isolates groups of workers (see ``validate_namespace``).
        root: directory holding the namespaces (default: ``default_root()``).
        poll_interval: seconds between a subscriber's directory scans right after a change,
            where it has to poll (no inotify).

    Raises:
        TypeError, ValueError: a bad namespace, root or poll interval.
    """

    def __init__(
        self,
        namespace: str = "default",
        *,
        root: str | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> None:
        self.namespace = validate_namespace(namespace)
        if root is not None and not isinstance(root, str | os.PathLike):
            raise TypeError(f"root must be a path, not {type(root).__name__} {root!r}")
        self.root = os.path.abspath(root) if root is not None else default_root()
        self.poll_interval = _checks.seconds("poll_interval", poll_interval, positive=True)

    @property
    def directory(self) -> str:
        """The directory holding this namespace's worker files."""
        return os.path.join(self.root, self.namespace)

    def publisher(self) -> LocalPublisher:
        """Return a new publisher (the caller closes it)."""
        return LocalPublisher(self.directory)

    def subscriber(self) -> LocalSubscriber:
        """Return a pickle-safe subscriber of this namespace."""
        return LocalSubscriber(self.directory, self.poll_interval)

    def __repr__(self) -> str:
        return f"LocalDiscovery({self.namespace!r}, root={self.root!r})"
