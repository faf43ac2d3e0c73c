"""Private local namespaces: the discovery directory of one pool's spawned workers.

A ``WorkerPool(spawn=N)`` without a discovery publishes its workers in a namespace of its own,
``pool-<uuid>`` under the local discovery root. The directory is born with an owner record
(``.owner``: the header of ``local.py`` naming the pool's process) and moved into place whole,
so it is never seen without one. The pool removes it on exit. A caller killed before that leaves
it behind; the next pool that starts sweeps the directories whose owner is provably gone (its pid
no longer exists or belongs to a younger process) and whose worker files all have dead
publishers. A live owner's directory is never touched, whoever runs the sweep.

The same sweep tidies the shared namespaces: it removes worker files whose publisher is dead (as
any subscriber would on its first scan; a ``distaff worker`` killed with SIGKILL cannot unpublish)
and then the namespace directory if that left it empty.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid

from ._scan import (
    _HEADER,
    _MAGIC,
    Scanner,
    _alive,
    _parse,
    _pid_namespace,
    own_header,
)
from .local import LocalDiscovery

logger = logging.getLogger(__name__)

PREFIX = "pool-"
OWNER_FILE = ".owner"
# Directories from before owner records: removed only once empty this long, so a
# publisher that just created one (and is about to write its file) keeps it.
LEGACY_AGE = 60.0


class PrivateNamespace:
    """A local discovery namespace owned by this process; ``remove()`` deletes it.

    Args:
        root: the local discovery root (default: ``default_root()``).
    """

    def __init__(self, root: str | None = None) -> None:
        self.discovery = LocalDiscovery(f"{PREFIX}{uuid.uuid4().hex}", root=root)

    @property
    def directory(self) -> str:
        """The namespace directory."""
        return self.discovery.directory

    def create(self) -> None:
        """Make the directory with its owner record, atomically."""
        root = self.discovery.root
        os.makedirs(root, mode=0o700, exist_ok=True)
        staging = os.path.join(root, f".{os.path.basename(self.directory)}.tmp")
        os.mkdir(staging, 0o700)
        try:
            with open(os.path.join(staging, OWNER_FILE), "wb") as f:
                f.write(own_header())
            os.rename(staging, self.directory)
        except BaseException:
            _remove_tree(staging)
            raise

    def remove(self) -> None:
        """Delete the directory and whatever is left in it; idempotent."""
        _remove_tree(self.directory)


def _remove_tree(directory: str) -> None:
    """Remove the files of one flat namespace directory, then the directory."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
            os.unlink(os.path.join(directory, name))
    with contextlib.suppress(OSError):  # a file appeared meanwhile: not ours to judge now
        os.rmdir(directory)


def _owner_alive(path: str, own_pidns: int) -> bool | None:
    """Whether the process in an owner or worker file lives; None: no readable owner."""
    try:
        with open(path, "rb") as f:
            data = f.read(_HEADER.size)
    except OSError:
        return None
    if len(data) < _HEADER.size or not data.startswith(_MAGIC):
        return None
    _, pid, start, pidns = _HEADER.unpack(data)
    return pid > 0 and _alive((pid, start, pidns), own_pidns)


def _abandoned(directory: str, own_pidns: int) -> bool:
    """True if nobody can still use ``directory``: owner gone, every publisher gone."""
    try:
        names = os.listdir(directory)
        age = time.time() - os.stat(directory).st_mtime
    except OSError:
        return False
    owner = _owner_alive(os.path.join(directory, OWNER_FILE), own_pidns)
    if owner is None and (OWNER_FILE in names or age < LEGACY_AGE):
        return False  # unreadable record, or a legacy directory in use right now
    if owner:
        return False
    for name in names:
        if name == OWNER_FILE or (name.startswith(".") and name.endswith(".tmp")):
            continue
        if _worker_alive(os.path.join(directory, name), own_pidns):
            return False
    return True


def _worker_alive(path: str, own_pidns: int) -> bool:
    try:
        with open(path, "rb") as f:
            owner, _ = _parse(f.read())
    except (OSError, ValueError):
        return True  # cannot judge it: keep the directory
    return _alive(owner, own_pidns)


def _reap_shared(directory: str) -> bool:
    """Drop dead publishers' files from a shared namespace; remove it if that emptied it."""
    try:
        before = os.listdir(directory)
        age = time.time() - os.stat(directory).st_mtime
    except OSError:
        return False
    Scanner(directory).scan(check_liveness=True)  # removes the files of dead publishers
    if not (before or age >= LEGACY_AGE):
        return False  # empty and new: someone is about to publish there
    try:
        os.rmdir(directory)  # only if empty; a publisher recreates it when it writes
    except OSError:
        return False
    return True


def sweep_abandoned(root: str) -> list[str]:
    """Remove under ``root`` what dead processes left; return the directories removed.

    Private namespaces go when their owner and publishers are dead; in shared
    namespaces, dead publishers' files go, and the directory if it is then empty.
    """
    own_pidns = _pid_namespace()
    removed = []
    try:
        entries = os.listdir(root)
    except FileNotFoundError:
        return []
    for name in entries:
        path = os.path.join(root, name)
        staged = name.startswith(f".{PREFIX}") and name.endswith(".tmp")
        if not os.path.isdir(path) or (name.startswith(".") and not staged):
            continue
        if name.startswith(PREFIX) or staged:
            if _abandoned(path, own_pidns):
                _remove_tree(path)
                if not os.path.exists(path):
                    removed.append(path)
        elif _reap_shared(path):
            removed.append(path)
    if removed:
        logger.debug("removed %d abandoned discovery namespaces under %s", len(removed), root)
    return removed
