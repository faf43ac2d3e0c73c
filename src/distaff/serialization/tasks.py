"""Pickling of routines, arguments and values.

A routine's body travels by reference (module and qualified name) when the
worker can import it, and by value (cloudpickle) otherwise: functions defined
in ``__main__``, a notebook, or a local scope. Arguments, results and yielded
values always go through cloudpickle.
"""

from __future__ import annotations

import collections
import importlib
import io
import pickle
import types
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, cast

import cloudpickle

from .._exceptions import SerializationError
from .wire import DETACH_BYTES, MAX_MESSAGE_BYTES, Payload, Pieces, check_size

_BY_REFERENCE = b"R"
_BY_VALUE = b"V"
ROUTINE_MARKER = "__distaff_routine__"


def _resolve(module: str, qualname: str) -> Any:
    """Walk ``module.qualname`` through class dicts, unwrapping descriptors."""
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        namespace = vars(target) if isinstance(target, type) else None
        target = namespace[part] if namespace and part in namespace else getattr(target, part)
        if isinstance(target, (classmethod, staticmethod)):
            target = target.__func__
    return target


def _reference(body: Callable[..., Any]) -> bytes | None:
    """Return a by-reference blob if importing it on a worker finds ``body``."""
    module, qualname = getattr(body, "__module__", None), body.__qualname__
    if not module or module == "__main__" or "<locals>" in qualname:
        return None
    try:
        wrapper = _resolve(module, qualname)
    except Exception:
        return None
    if getattr(wrapper, "__wrapped__", None) is not body:
        return None
    return _BY_REFERENCE + f"{module}:{qualname}".encode()


def _code_reduce(code: types.CodeType) -> tuple[Any, ...]:
    """cloudpickle's reduction of a code object, with the real file name kept.

    cloudpickle writes ``<dynamic-code>`` instead, which leaves remote
    tracebacks of functions shipped by value without file names.
    """
    constructor, args = cloudpickle.cloudpickle._code_reduce(code)
    args = tuple(code.co_filename if arg == "<dynamic-code>" else arg for arg in args)
    return constructor, args


class _KeepFilenames(cloudpickle.Pickler):  # type: ignore[misc]
    dispatch_table: ClassVar[Mapping[Any, Any]] = collections.ChainMap(
        {types.CodeType: _code_reduce}, cloudpickle.Pickler.dispatch_table
    )


def _dumps_by_value(obj: Any) -> bytes:
    if not hasattr(cloudpickle.cloudpickle, "_code_reduce"):  # another cloudpickle
        return bytes(cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
    buffer = io.BytesIO()
    _KeepFilenames(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue()


def encode_routine(body: Callable[..., Any]) -> bytes:
    """Encode a routine's body once; callers cache the result per routine."""
    blob = _reference(body)
    if blob is not None:
        return blob
    try:
        # the real file names travel along so remote tracebacks point at the source
        filename = getattr(getattr(body, "__code__", None), "co_filename", "")
        return _BY_VALUE + _dumps_by_value((body, filename))
    except Exception as exc:
        raise SerializationError(
            f"cannot pickle routine {body.__qualname__!r} by value: {exc}"
        ) from exc


def decode_routine(blob: bytes) -> Callable[..., Any]:
    """Return the routine body a blob names; import errors propagate as they are."""
    kind, data = blob[:1], blob[1:]
    if kind == _BY_REFERENCE:
        module, _, qualname = data.decode().partition(":")
        wrapper = _resolve(module, qualname)
        body: Callable[..., Any] = getattr(wrapper, "__wrapped__", wrapper)
        return body
    if kind == _BY_VALUE:
        loaded, filename = pickle.loads(data)
        code = getattr(loaded, "__code__", None)
        if code is not None and filename:
            loaded.__code__ = code.replace(co_filename=filename)
        return cast("Callable[..., Any]", loaded)
    raise SerializationError(f"unknown routine encoding {kind!r}")


# Values made only of these builtins pickle the same with the standard C
# pickler as with cloudpickle, which costs several times more per call.
_ATOMS = frozenset({type(None), bool, int, float, complex, str, bytes, bytearray})
_PLAIN_LENGTH = 16  # longer containers are not scanned: cloudpickle takes them
_PLAIN_DEPTH = 3
# what _plainness finds (flags)
_PLAIN = 1
_BULKY = 2  # a bytes or str of DETACH_BYTES or more, which the pickler need not copy


def _plainness(value: Any, depth: int = 0) -> int:
    """``_PLAIN`` (with ``_BULKY`` if it holds a large bytes or str), or 0: not plain.

    Plain: only builtin scalars, in small tuples, lists and str-keyed dicts.
    """
    kind = type(value)
    if kind in _ATOMS:
        if (kind is bytes or kind is str) and len(value) >= DETACH_BYTES:
            return _PLAIN | _BULKY
        return _PLAIN
    if depth >= _PLAIN_DEPTH:
        return 0
    if kind is tuple or kind is list:
        return _plain_items(value, depth + 1) if len(value) <= _PLAIN_LENGTH else 0
    if kind is dict:
        return _plain_entries(value, depth + 1) if len(value) <= _PLAIN_LENGTH else 0
    return 0


def _plain_items(items: Any, depth: int) -> int:
    """``_plainness`` of a sequence's items, each at ``depth``."""
    found = _PLAIN
    for item in items:
        kind = type(item)
        if kind is bytes or kind is str:
            if len(item) >= DETACH_BYTES:
                found |= _BULKY
        elif kind not in _ATOMS:
            inner = _plainness(item, depth)
            if not inner:
                return 0
            found |= inner
    return found


def _plain_entries(entries: dict[Any, Any], depth: int) -> int:
    """``_plainness`` of a dict's entries: str keys, values at ``depth``."""
    for key in entries:
        if type(key) is not str:
            return 0
    return _plain_items(entries.values(), depth)


class _Written(list):  # type: ignore[type-arg]
    """A file for a pickler to write to: keeps each write as it came."""

    write = list.append


def _pickle_to_pieces(pickler: Callable[..., Any], value: Any) -> Payload:
    """Pickle ``value`` to a file, keeping the large bytes it writes whole as pieces."""
    written = _Written()
    pickler(written, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    if len(written) == 1:
        return bytes(written[0])
    parts: list[bytes] = []
    for part in written:
        if type(part) is not bytes:  # mutable (a bytearray, an array's buffer): copy it now
            part = bytes(part.raw() if type(part) is pickle.PickleBuffer else part)
        parts.append(part)
    pieces = Pieces(parts)
    return pieces if pieces.size >= DETACH_BYTES else bytes(pieces)


def _pickle(value: Any, plain: int) -> Payload:
    """Pickle ``value``: the C pickler if ``plain`` (its ``_plainness``), cloudpickle otherwise.

    A payload holding a large bytes or str comes back as Pieces, so that the
    bytes are copied once, into the message, instead of twice.
    """
    if plain == _PLAIN:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return _pickle_to_pieces(pickle.Pickler if plain else cloudpickle.Pickler, value)


def _name_culprit(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    for index, value in enumerate(args):
        try:
            cloudpickle.dumps(value)
        except Exception:
            return f"positional argument {index} of type {type(value).__qualname__}"
    for key, value in kwargs.items():
        try:
            cloudpickle.dumps(value)
        except Exception:
            return f"keyword argument {key!r} of type {type(value).__qualname__}"
    return "the arguments"


def _routine_name(routine: object) -> str:
    if isinstance(routine, str):
        return routine
    return getattr(routine, "__qualname__", None) or repr(routine)


def encode_arguments(
    args: tuple[Any, ...], kwargs: Mapping[str, Any], *, routine: object
) -> Payload:
    """Pickle ``(args, kwargs)``; an unpicklable one raises, naming it.

    ``routine`` (the body, or its name) is named in errors only, so its
    name is formatted only then.
    """
    if kwargs.__class__ is not dict:
        kwargs = dict(kwargs)
    # the _plainness of (args, kwargs), without a call for each of the three
    plain = 0
    if len(args) <= _PLAIN_LENGTH and len(kwargs) <= _PLAIN_LENGTH:
        plain = _plain_items(args, 2)
        if plain and kwargs:
            entries = _plain_entries(kwargs, 2)
            plain = plain | entries if entries else 0
    try:
        data = _pickle((args, kwargs), plain)
    except Exception as exc:
        culprit = _name_culprit(args, kwargs)
        name = _routine_name(routine)
        raise SerializationError(f"cannot send {culprit} to routine {name!r}: {exc}") from exc
    if len(data) > MAX_MESSAGE_BYTES // 2:  # cheap test first; the exact one names it
        check_size(len(data), f"the arguments of routine {_routine_name(routine)!r}")
    return data


def decode_arguments(data: bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Inverse of :func:`encode_arguments`."""
    args, kwargs = pickle.loads(data)
    return args, kwargs


def dumps(value: Any, *, what: str, of: Callable[..., Any] | None = None) -> Payload:
    """Pickle a result, yielded or sent value; failures name ``what`` (``of`` a routine)."""
    owner = ""
    try:
        data = _pickle(value, _plainness(value))
    except Exception as exc:
        owner = f" by {_routine_name(of)!r}" if of is not None else ""
        raise SerializationError(
            f"cannot pickle {what}{owner} of type {type(value).__qualname__}: {exc}"
        ) from exc
    if len(data) > MAX_MESSAGE_BYTES // 2:  # cheap test first; the exact one names it
        owner = f" by {_routine_name(of)!r}" if of is not None else ""
        check_size(len(data), f"{what}{owner}")
    return data


def loads(data: bytes, *, what: str) -> Any:
    """Unpickle a value; failures name ``what`` and chain the cause."""
    try:
        return pickle.loads(data)
    except Exception as exc:
        raise SerializationError(f"cannot unpickle {what}: {exc!r}") from exc
