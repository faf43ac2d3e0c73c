"""WorkerMetadata: who a worker is and how to reach it.

On the discovery plane the metadata travels as a msgpack map with these keys
(schema version 1, readable from any language)::

    {"v": 1, "uid": str, "address": str ("host:port"), "pid": int,
     "host": str, "version": str, "tags": [str, ...], "secure": bool,
     "options": {str: str}, "python": str, "protocol": int,
     "cloudpickle": str}

Unknown keys are ignored when decoding, so newer publishers stay readable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import msgpack

SCHEMA_VERSION = 1


@dataclasses.dataclass(frozen=True)
class WorkerMetadata:
    """Identity and address of one worker; hashable, immutable.

    Attributes:
        uid: unique id of the worker process (stable for its lifetime).
        address: ``host:port`` a caller dials (IPv6 hosts in brackets).
        pid: process id on its host.
        host: host name the worker runs on.
        version: distaff version of the worker.
        tags: labels a pool can require (``WorkerPool("gpu")``).
        secure: the worker serves TLS only.
        options: transport options as sorted ``(key, value)`` pairs.
        python: the worker's Python version (``"3.11.7"``; empty if unknown).
        protocol: the worker's wire protocol version (0 if unknown).
        cloudpickle: the worker's cloudpickle version (empty if unknown).
    """

    uid: str
    address: str
    pid: int = 0
    host: str = ""
    version: str = ""
    tags: frozenset[str] = frozenset()
    secure: bool = False
    options: tuple[tuple[str, str], ...] = ()
    python: str = ""
    protocol: int = 0
    cloudpickle: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.tags, frozenset):
            object.__setattr__(self, "tags", frozenset(self.tags))
        if isinstance(self.options, Mapping):
            object.__setattr__(self, "options", tuple(sorted(self.options.items())))

    def with_tags(self, tags: Iterable[str]) -> WorkerMetadata:
        """Return a copy carrying ``tags``."""
        return dataclasses.replace(self, tags=frozenset(tags))


def encode_metadata(metadata: WorkerMetadata) -> bytes:
    """Encode ``metadata`` as the versioned msgpack map described above."""
    record = {
        "v": SCHEMA_VERSION,
        "uid": metadata.uid,
        "address": metadata.address,
        "pid": metadata.pid,
        "host": metadata.host,
        "version": metadata.version,
        "tags": sorted(metadata.tags),
        "secure": metadata.secure,
        "options": dict(metadata.options),
        "python": metadata.python,
        "protocol": metadata.protocol,
        "cloudpickle": metadata.cloudpickle,
    }
    return msgpack.packb(record, use_bin_type=True)


def decode_metadata(data: bytes) -> WorkerMetadata:
    """Decode a msgpack record; raise ``ValueError`` naming what is wrong."""
    try:
        record: Any = msgpack.unpackb(data, raw=False)
    except Exception as exc:
        raise ValueError(f"worker metadata is not valid msgpack: {exc}") from exc
    if not isinstance(record, dict):
        raise ValueError(f"worker metadata must be a map, not {type(record).__name__}")
    if record.get("v") != SCHEMA_VERSION:
        raise ValueError(f"unsupported worker metadata schema {record.get('v')!r}")
    try:
        uid, address = record["uid"], record["address"]
        if not isinstance(uid, str) or not uid or not isinstance(address, str) or not address:
            raise ValueError("worker metadata needs a non-empty 'uid' and 'address'")
        options = dict(record.get("options", {}))
        return WorkerMetadata(
            uid=uid,
            address=address,
            pid=int(record.get("pid", 0)),
            host=str(record.get("host", "")),
            version=str(record.get("version", "")),
            tags=frozenset(str(t) for t in record.get("tags", ())),
            secure=bool(record.get("secure", False)),
            options=tuple(sorted((str(k), str(v)) for k, v in options.items())),
            python=str(record.get("python", "")),
            protocol=int(record.get("protocol", 0)),
            cloudpickle=str(record.get("cloudpickle", "")),
        )
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"worker metadata is missing or mistypes a field: {exc!r}") from exc
