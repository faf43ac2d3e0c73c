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
from .wire import MAX_MESSAGE_BYTES, check_size

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


def is_plain(value: Any, depth: int = 0) -> bool:
    """True if ``value`` holds only builtin scalars, in small tuples, lists and str-keyed dicts."""
    kind = type(value)
    if kind in _ATOMS:
        return True
    if depth >= _PLAIN_DEPTH:
        return False
    if kind is tuple or kind is list:
        if len(value) > _PLAIN_LENGTH:
            return False
        for item in value:
            if type(item) not in _ATOMS and not is_plain(item, depth + 1):
                return False
        return True
    if kind is dict:
        if len(value) > _PLAIN_LENGTH:
            return False
        for key, item in value.items():
            if type(key) is not str or (type(item) not in _ATOMS and not is_plain(item, depth + 1)):
                return False
        return True
    return False


def _pickle(value: Any) -> bytes:
    """Pickle ``value``: the C pickler for plain builtins, cloudpickle otherwise."""
    if is_plain(value):
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return bytes(cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


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


def encode_arguments(args: tuple[Any, ...], kwargs: Mapping[str, Any], *, routine: str) -> bytes:
    """Pickle ``(args, kwargs)``; an unpicklable one raises, naming it."""
    try:
        data = _pickle((args, dict(kwargs)))
    except Exception as exc:
        culprit = _name_culprit(args, kwargs)
        raise SerializationError(f"cannot send {culprit} to routine {routine!r}: {exc}") from exc
    check_size(len(data), f"the arguments of routine {routine!r}")
    return data


def decode_arguments(data: bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Inverse of :func:`encode_arguments`."""
    args, kwargs = pickle.loads(data)
    return args, kwargs


def dumps(value: Any, *, what: str, of: Callable[..., Any] | None = None) -> bytes:
    """Pickle a result, yielded or sent value; failures name ``what`` (``of`` a routine)."""
    owner = ""
    try:
        data = _pickle(value)
    except Exception as exc:
        owner = f" by {getattr(of, '__qualname__', of)!r}" if of is not None else ""
        raise SerializationError(
            f"cannot pickle {what}{owner} of type {type(value).__qualname__}: {exc}"
        ) from exc
    if len(data) > MAX_MESSAGE_BYTES // 2:  # cheap test first; the exact one names it
        owner = f" by {getattr(of, '__qualname__', of)!r}" if of is not None else ""
        check_size(len(data), f"{what}{owner}")
    return data


def loads(data: bytes, *, what: str) -> Any:
    """Unpickle a value; failures name ``what`` and chain the cause."""
    try:
        return pickle.loads(data)
    except Exception as exc:
        raise SerializationError(f"cannot unpickle {what}: {exc!r}") from exc
