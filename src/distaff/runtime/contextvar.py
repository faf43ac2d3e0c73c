"""distaff.ContextVar: a context variable whose value travels with routine calls.

Its value in the caller is set in the routine's context on the worker (and
in calls nested under it); values the routine sets come back when the call
returns, raises, or yields, and are set in the caller's context: exactly
what a local ``await`` shows. Variables are known by name in each process;
values travel pickled. A plain ``contextvars.ContextVar`` stays local.
"""

from __future__ import annotations

import contextvars
import pickle
import threading
from typing import Any, Generic, TypeVar, overload

import cloudpickle

from .._exceptions import SerializationError

T = TypeVar("T")
_MISSING: Any = object()
_registry: dict[str, ContextVar[Any]] = {}
_registry_lock = threading.Lock()


class ContextVar(Generic[T]):
    """A ``contextvars.ContextVar`` whose value travels with routine calls.

    Same API as :class:`contextvars.ContextVar` (``get``, ``set``, ``reset``,
    ``name``). A name means one variable in every process of the pool:
    creating one with a name already used returns that same variable (its
    first ``default`` stands). Values must pickle; one that does not raises
    ``SerializationError`` naming the variable when a call is made. A value
    the routine *sets* comes back; one it merely resets to "unset" does not.

    Args:
        name: the variable's name, the same in every process of the pool.
        default: the value ``get()`` returns when none was set.
    """

    __slots__ = ("_default", "_var", "name")
    name: str
    _default: Any
    _var: contextvars.ContextVar[T]

    def __new__(cls, name: str, *, default: Any = _MISSING) -> ContextVar[T]:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a ContextVar needs a non-empty str name, not {name!r}")
        with _registry_lock:
            known = _registry.get(name)
            if known is not None:
                return known
            self = super().__new__(cls)
            self.name = name
            self._default = default
            if default is _MISSING:
                self._var = contextvars.ContextVar(f"distaff:{name}")
            else:
                self._var = contextvars.ContextVar(f"distaff:{name}", default=default)
            _registry[name] = self
            return self

    def __init__(self, name: str, *, default: Any = _MISSING) -> None:
        pass  # all done in __new__: one object per name

    def __reduce__(self) -> tuple[Any, ...]:
        # a by-value routine that uses the variable finds the worker's own
        if self._default is _MISSING:
            return (_named, (self.name,))
        return (_named, (self.name, self._default))

    @overload
    def get(self) -> T: ...
    @overload
    def get(self, default: T, /) -> T: ...
    def get(self, *default: Any) -> Any:
        """The value in the current context (or ``default``); LookupError if none."""
        return self._var.get(*default)

    def set(self, value: T) -> contextvars.Token[T]:
        """Set the value in the current context; return a token for ``reset``."""
        return self._var.set(value)

    def reset(self, token: contextvars.Token[T]) -> None:
        """Restore the value from before the ``set`` that made ``token``."""
        self._var.reset(token)

    def __repr__(self) -> str:
        return f"distaff.ContextVar({self.name!r})"


def _named(name: str, default: Any = _MISSING) -> ContextVar[Any]:
    return ContextVar(name, default=default)


Snapshot = dict[str, Any]


def _values() -> Snapshot:
    if not _registry:  # most programs define none: every call asks
        return {}
    values = {}
    for name, var in list(_registry.items()):
        value = var._var.get(_MISSING)
        if value is not _MISSING:
            values[name] = value
    return values


def capture() -> bytes:
    """The values set in this context, pickled for a task (empty: none)."""
    if not _registry:
        return b""
    values = _values()
    if not values:
        return b""
    return _dumps(values)


def _dumps(values: Snapshot) -> bytes:
    try:
        return bytes(cloudpickle.dumps(values, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:
        for name, value in values.items():
            try:
                cloudpickle.dumps(value)
            except Exception as exc:
                raise SerializationError(
                    f"distaff.ContextVar {name!r} holds a {type(value).__qualname__} that "
                    f"cannot be pickled ({exc}); its value travels with every call"
                ) from exc
        raise


def apply(blob: bytes) -> Snapshot:
    """Set the values in ``blob`` in the current context; return what is now set."""
    if blob:
        for name, value in pickle.loads(blob).items():
            ContextVar(name).set(value)
    return _values()


def changes(before: Snapshot) -> tuple[bytes, Snapshot]:
    """The values changed since ``before`` (pickled, empty: none) and the new state."""
    if not _registry:
        return b"", before
    now = _values()
    changed = {
        name: value
        for name, value in now.items()
        if name not in before or before[name] is not value
    }
    return (_dumps(changed) if changed else b""), now


def adopt(context: contextvars.Context) -> None:
    """Set here each value ``context`` (a copy made from here) holds that differs from ours."""
    if not _registry:
        return
    for var in list(_registry.values()):
        value = context.get(var._var, _MISSING)
        if value is not _MISSING and var._var.get(_MISSING) is not value:
            var._var.set(value)
