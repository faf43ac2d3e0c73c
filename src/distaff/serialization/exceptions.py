"""Ship an exception, its chain and its traceback from a worker to the caller.

The wire form is a msgpack map (schema version 1)::

    {"v": 1, "chain": [record, ...]}      chain[0] is the exception itself

    record = {"type": str,                "module.QualName" of the class
              "message": str,             str() of the exception
              "text": str,                traceback.format_exception(chain=False)
              "frames": [[file, function, line, internal], ...],  outermost
                                          first; internal: a frame of distaff
              "members": [int, ...]       (exception groups) indices of the
                                          group's exceptions, in order
              "pickle": bytes | None,     cloudpickle of (exception, __dict__)
              "parts": bytes | None,      cloudpickle of (class, args, __dict__)
              "cause": int | None,        index into chain
              "context": int | None,      index into chain
              "suppress": bool}           __suppress_context__

Each distinct exception of the chain (a graph, possibly cyclic), and of the
groups in it, appears once, by identity.  The type, message and text travel
next to the pickle so either
side can build a ``RemoteException`` stand-in when the pickle cannot be made
or cannot be loaded.
"""

from __future__ import annotations

import traceback
from types import NoneType, TracebackType
from typing import Any

import cloudpickle
import msgpack

from distaff._exceptions import RemoteException, SerializationError

from .tracebacks import build_traceback, is_internal, keep_internals, marker

SCHEMA_VERSION = 1

# Filenames and messages may carry lone surrogates (undecodable paths);
# they must survive rather than make encoding fail.
_UNICODE_ERRORS = "surrogatepass"

_RECORD_FIELDS: dict[str, type | tuple[type, ...]] = {
    "type": str,
    "message": str,
    "text": str,
    "frames": list,
    "pickle": (bytes, NoneType),
    "parts": (bytes, NoneType),
    "cause": (int, NoneType),
    "context": (int, NoneType),
    "suppress": bool,
}


def encode_exception(exc: BaseException) -> bytes:
    """Encode ``exc`` with its cause/context chain and tracebacks.

    Never raises for a bad exception: a member of the chain that cannot be
    pickled is sent as type name, message and formatted traceback only, and
    decodes as a ``RemoteException``.  The rest of the chain is unaffected.
    """
    chain = [exc]
    index = {id(exc): 0}
    # Iterative walk: chains can be long and may loop back on themselves.
    for member in chain:
        grouped = member.exceptions if isinstance(member, BaseExceptionGroup) else ()
        for link in (member.__cause__, member.__context__, *grouped):
            if link is not None and id(link) not in index:
                index[id(link)] = len(chain)
                chain.append(link)
    records = [_encode_one(member, index) for member in chain]
    envelope = {"v": SCHEMA_VERSION, "chain": records}
    return msgpack.packb(envelope, use_bin_type=True, unicode_errors=_UNICODE_ERRORS)


def decode_exception(data: bytes, *, origin: str | None = None) -> BaseException:
    """Rebuild the exception encoded by ``encode_exception``.

    Returns the original class with its args, ``__dict__``, chain, group
    members and a real traceback of the remote frames (distaff's own left
    out unless ``DISTAFF_TRACEBACK_INTERNALS=1``), headed by a marker frame
    naming ``origin`` (the worker's address) when given.  A member whose pickle does not load here
    (missing module, ``__init__`` at odds with ``args``...) becomes a
    ``RemoteException`` carrying its type name, message and remote traceback.

    Raises:
        SerializationError: ``data`` is not an encoded exception.
    """
    try:
        envelope = msgpack.unpackb(data, raw=False, unicode_errors=_UNICODE_ERRORS)
    except Exception as exc:
        raise SerializationError(f"not an encoded exception: {exc}") from exc
    records = _check_envelope(envelope)
    head = [marker(origin)] if origin else []
    internals = keep_internals()
    chain: list[BaseException] = []
    grouped: dict[int, BaseException] = {}  # member index -> the group's own object
    for index, record in enumerate(records):
        member = grouped.get(index)
        if member is None or type(member).__qualname__ != record["type"].rpartition(".")[2]:
            member = _decode_one(record)
        member.__traceback__ = _rebuild_traceback(record["frames"], head, internals)
        chain.append(member)
        _note_members(member, record, grouped)
    by_index: dict[int | None, BaseException] = dict(enumerate(chain))
    for member, record in zip(chain, records, strict=True):
        # Assigned even when None, in case unpickling set them; and
        # __suppress_context__ last, because setting __cause__ changes it.
        member.__cause__ = by_index.get(record["cause"])
        member.__context__ = by_index.get(record["context"])
        member.__suppress_context__ = record["suppress"]
    return chain[0]


def _note_members(
    group: BaseException, record: dict[str, Any], grouped: dict[int, BaseException]
) -> None:
    """Pair a decoded group's own member objects with their records, by position."""
    members = record.get("members")
    if isinstance(group, BaseExceptionGroup) and members and len(members) == len(group.exceptions):
        for member_index, member in zip(members, group.exceptions, strict=True):
            if isinstance(member_index, int):
                grouped.setdefault(member_index, member)


def _encode_one(exc: BaseException, index: dict[int, int]) -> dict[str, Any]:
    cls = type(exc)
    try:
        message = str(exc)
    except Exception:
        message = "<exception str() failed>"
    try:
        text = "".join(traceback.format_exception(exc, chain=False))
    except Exception:
        text = f"{cls.__qualname__}: {message}\n"
    try:
        # The __dict__ rides along because a custom __reduce__ often drops it
        # (and with it the __notes__ added after construction).
        payload: bytes | None = cloudpickle.dumps((exc, exc.__dict__))
    except Exception:
        payload = None
    try:
        # Rebuilds the exception without calling __init__ when unpickling it
        # fails: custom exceptions whose __init__ does not take their args
        # (a common bug) still arrive as themselves.
        parts: bytes | None = cloudpickle.dumps((cls, exc.args, exc.__dict__))
    except Exception:
        parts = None
    # a recursive traceback walk would overflow on the very
    # traceback a RecursionError carries, so frames travel as a flat list.
    frames = [
        [name, frame.f_code.co_name, lineno or 0, is_internal(name)]
        for frame, lineno in traceback.walk_tb(exc.__traceback__)
        for name in (frame.f_code.co_filename,)
    ]
    grouped = exc.exceptions if isinstance(exc, BaseExceptionGroup) else None
    return {
        "type": f"{cls.__module__}.{cls.__qualname__}",
        "message": message,
        "text": text,
        "frames": frames,
        "pickle": payload,
        "parts": parts,
        "cause": None if exc.__cause__ is None else index[id(exc.__cause__)],
        "context": None if exc.__context__ is None else index[id(exc.__context__)],
        "suppress": exc.__suppress_context__,
        "members": None if grouped is None else [index[id(m)] for m in grouped],
    }


def _decode_one(record: dict[str, Any]) -> BaseException:
    exc = _unpickle(record["pickle"])
    if exc is None:
        exc = _rebuild(record["parts"])
    if exc is None:
        exc = RemoteException(record["type"], record["message"], record["text"])
    return exc


def _unpickle(payload: bytes | None) -> BaseException | None:
    if payload is None:
        return None
    try:
        exc, state = cloudpickle.loads(payload)
        exc.__dict__.update(state)
    except Exception:
        return None  # a missing module, an __init__ at odds with args, ...
    return exc if isinstance(exc, BaseException) else None


def _rebuild(parts: bytes | None) -> BaseException | None:
    if parts is None:
        return None
    try:
        cls, args, state = cloudpickle.loads(parts)
        exc = cls.__new__(cls, *args)
        exc.args = args
        exc.__dict__.update(state)
    except Exception:
        return None
    return exc if isinstance(exc, BaseException) else None


def _rebuild_traceback(
    frames: list[Any], head: list[tuple[str, str, int]], internals: bool
) -> TracebackType | None:
    if not frames:
        return None
    try:
        shown = [
            (str(frame[0]), str(frame[1]), int(frame[2]))
            for frame in frames
            if internals or not (len(frame) > 3 and frame[3])
        ]
        return build_traceback(head + shown)
    except Exception as exc:
        raise SerializationError(f"encoded exception has bad frames: {exc}") from exc


def _check_envelope(envelope: Any) -> list[dict[str, Any]]:
    if not isinstance(envelope, dict) or envelope.get("v") != SCHEMA_VERSION:
        raise SerializationError(
            f"data is not an encoded exception (schema version {SCHEMA_VERSION})"
        )
    records = envelope.get("chain")
    if not isinstance(records, list) or not records:
        raise SerializationError("encoded exception has an empty or missing chain")
    if not all(_well_formed(record, len(records)) for record in records):
        raise SerializationError("encoded exception has a malformed chain record")
    return records


def _well_formed(record: Any, size: int) -> bool:
    return (
        isinstance(record, dict)
        and all(isinstance(record.get(k, ...), t) for k, t in _RECORD_FIELDS.items())
        and all(i is None or 0 <= i < size for i in (record["cause"], record["context"]))
        and isinstance(record.get("members"), (list, NoneType))
    )
