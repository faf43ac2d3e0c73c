"""Which discovered workers a proxy admits: compatibility at first contact.

A worker on another Python minor version or another wire protocol cannot run
by-value code (cloudpickled functions, bytecode) correctly, so it is not
admitted: the proxy logs one warning with a table of the differing fields,
and ``NoWorkersAvailable`` shows the same table when nothing compatible was
left. Patch-level differences are admitted; a field the worker did not
report (an older publisher) is not held against it.
"""

from __future__ import annotations

import logging
import platform
from typing import Any

import cloudpickle

from .._version import __version__
from ..serialization.metadata import WorkerMetadata
from ..serialization.wire import PROTOCOL_VERSION

logger = logging.getLogger("distaff.proxy")

Row = tuple[str, str, str]  # field, this caller, the worker


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def incompatibilities(metadata: WorkerMetadata) -> list[Row]:
    """The rows that differ between this process and ``metadata``; empty if compatible.

    Only a Python minor or protocol mismatch makes a worker incompatible; when
    it is, the distaff and cloudpickle versions are shown too if they differ.
    """
    python = platform.python_version()
    blocking: list[Row] = []
    if metadata.python and _minor(metadata.python) != _minor(python):
        blocking.append(("python", python, metadata.python))
    if metadata.protocol and metadata.protocol != PROTOCOL_VERSION:
        blocking.append(("protocol", str(PROTOCOL_VERSION), str(metadata.protocol)))
    if not blocking:
        return []
    extra = [
        ("distaff", __version__, metadata.version),
        ("cloudpickle", cloudpickle.__version__, metadata.cloudpickle),
    ]
    return blocking + [row for row in extra if row[2] and row[1] != row[2]]


def format_table(metadata: WorkerMetadata, rows: list[Row]) -> str:
    """A small text table: one line per differing field."""
    width = max(len(row[0]) for row in rows)
    lines = [f"worker {metadata.uid} at {metadata.address}:"]
    lines.append(f"  {'field':<{width}}  caller      worker")
    lines += [f"  {f:<{width}}  {mine:<10}  {theirs}" for f, mine, theirs in rows]
    return "\n".join(lines)


class Admission:
    """Remembers the workers refused as incompatible, to warn once and explain later."""

    def __init__(self) -> None:
        self._refused: dict[str, str] = {}

    def admit(self, metadata: WorkerMetadata) -> bool:
        """True if ``metadata`` is compatible; else warn (once per worker) and refuse."""
        rows = incompatibilities(metadata)
        if not rows:
            self._refused.pop(metadata.uid, None)
            return True
        if metadata.uid not in self._refused:
            table = format_table(metadata, rows)
            self._refused[metadata.uid] = table
            logger.warning(
                "not admitting an incompatible worker (by-value code would break)\n%s", table
            )
        return False

    def forget(self, metadata: WorkerMetadata) -> None:
        """The worker left: stop reporting it."""
        self._refused.pop(metadata.uid, None)

    def explain(self) -> str:
        """Text to append to ``NoWorkersAvailable``: the refused workers, or empty."""
        if not self._refused:
            return ""
        tables = "\n".join(self._refused.values())
        return f"; incompatible workers were not admitted:\n{tables}"


def subscription(discovery: Any, credentials: Any) -> Any:
    """The subscription to follow: address-based discoveries get the proxy's credentials.

    DNS and static discovery dial workers themselves (``Describe``, health);
    they hold no credentials when pickled, so the proxy hands them its own.
    """
    bind = getattr(discovery, "with_credentials", None)
    return discovery if bind is None else bind(credentials)
