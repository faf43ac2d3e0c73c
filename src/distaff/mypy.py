"""A mypy plugin that shows mypy the ``spawn`` that ``@distaff.actor`` adds to a class.

Enable it in the project's mypy configuration::

    [tool.mypy]
    plugins = ["distaff.mypy"]

Then ``await Cache.spawn(1024)`` type-checks and is an
``ActorHandle[Cache]``; without it mypy reports that the class has no
attribute ``spawn`` (the decorator adds it at run time). The handle's
methods stay untyped (``Any``): they are looked up by name on call.
"""

from __future__ import annotations

from collections.abc import Callable

from mypy.nodes import ARG_NAMED_OPT, ARG_STAR, ARG_STAR2, Argument, Var
from mypy.plugin import ClassDefContext, Plugin
from mypy.plugins.common import add_method_to_class
from mypy.types import AnyType, NoneType, TypeOfAny, UnionType
from mypy.typevars import fill_typevars

_DECORATOR = "distaff.runtime.actors.actor"
_HANDLE = "distaff.runtime.actors.ActorHandle"


class ActorPlugin(Plugin):
    """Adds ``spawn(*args, name=None, **kwargs) -> ActorHandle[Cls]`` to actor classes."""

    def get_class_decorator_hook_2(self, fullname: str) -> Callable[[ClassDefContext], bool] | None:
        """The hook for ``@distaff.actor`` and ``@distaff.actor(...)``."""
        return _add_spawn if fullname == _DECORATOR else None


def _add_spawn(ctx: ClassDefContext) -> bool:
    info = ctx.cls.info
    if "spawn" in info.names:
        return True  # already added (or the class defines one: the decorator refuses it)
    handle = ctx.api.named_type_or_none(_HANDLE, [fill_typevars(info)])
    if handle is None:
        return False  # not analysed yet: ask again in the next pass
    anything = AnyType(TypeOfAny.explicit)
    name = UnionType([ctx.api.named_type("builtins.str"), NoneType()])
    returns = ctx.api.named_type("typing.Coroutine", [anything, anything, handle])
    args = [
        Argument(Var("args", anything), anything, None, ARG_STAR),
        Argument(Var("name", name), name, None, ARG_NAMED_OPT),
        Argument(Var("kwargs", anything), anything, None, ARG_STAR2),
    ]
    add_method_to_class(ctx.api, ctx.cls, "spawn", args, returns, is_classmethod=True)
    return True


def plugin(version: str) -> type[Plugin]:
    """mypy's entry point: the plugin class."""
    return ActorPlugin
