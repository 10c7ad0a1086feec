"""Stand-ins: inert classes that take the place of every global a session names but we never import.

An rdagent, qlib or pandas class in a snapshot becomes a :class:`StandIn` subclass that records its
constructor arguments and state as data. Nothing here calls anything a pickle gave it, and the item hooks
pickle looks up (``append``, ``extend``, ``add``) are data descriptors a planted ``__dict__`` cannot shadow.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rd_assets.core.errors import UnsafePickleError

MAX_CACHED_STANDINS = 1 << 16
"""Stand-in classes shared between files; past this, new ones live only as long as their file's objects."""


class _Hook:
    """A data descriptor for the item hooks pickle looks up on an instance (``append``, ``extend``, ``add``).

    Data descriptors win over the instance ``__dict__``, so state planted under those names stays data.
    Looked up on a stand-in class (``APPEND`` onto a class object), the hook refuses.
    """

    def __init__(self, fn: Callable[..., None]) -> None:
        self.fn = fn
        self.name = fn.__name__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Callable[..., None]:
        if obj is None:
            return self._refuse
        return types.MethodType(self.fn, obj)

    def __set__(self, obj: Any, value: Any) -> None:
        raise AttributeError(f"{self.name} of a stand-in is read-only")

    def _refuse(self, *args: Any) -> None:
        raise UnsafePickleError(f"StandIn.{self.name}", why="applied to a class object")


def _apply_state(self: StandIn, state: Any) -> None:
    """``BUILD`` on a stand-in: dict state into ``__dict__``, anything else kept under ``_rd_state``."""
    if type(state) is dict and "__setstate__" not in state:  # the common case: one C-level update
        self.__dict__.update(state)
        return
    slots: Any = None
    if (
        isinstance(state, tuple)
        and len(state) == 2
        and (state[0] is None or isinstance(state[0], dict))
        and (state[1] is None or isinstance(state[1], dict))
    ):
        state, slots = state
    for part in (state, slots):
        if isinstance(part, dict):
            if "__setstate__" in part:  # an instance attribute would shadow this method at the next BUILD
                raise UnsafePickleError("StandIn.__setstate__", why="state plants a __setstate__ attribute")
            self.__dict__.update(part)
    if state is not None and not isinstance(state, dict):
        self.__dict__["_rd_state"] = state


def _append(self: StandIn, item: Any) -> None:
    self.__dict__.setdefault("_rd_items", []).append(item)


def _extend(self: StandIn, items: Any) -> None:
    if not isinstance(items, list):
        raise UnsafePickleError("StandIn.extend", why=f"items of type {type(items).__name__}")
    self.__dict__.setdefault("_rd_items", []).extend(items)


def _add(self: StandIn, item: Any) -> None:
    self.__dict__.setdefault("_rd_set_items", []).append(item)


class StandIn:
    """Inert replacement for a class we refuse to import; records everything the pickle gives it.

    Subclasses are made per global with ``__rd_module__`` / ``__rd_name__``. Constructor arguments
    land in ``_rd_args``/``_rd_kwargs``, non-dict state in ``_rd_state``, list items in ``_rd_items``,
    set items in ``_rd_set_items`` and dict items in ``_rd_dictitems``. Nothing here calls anything it
    was given.
    """

    __rd_module__ = ""
    __rd_name__ = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> StandIn:
        obj = object.__new__(cls)
        if args:
            obj.__dict__["_rd_args"] = args
        if kwargs:
            obj.__dict__["_rd_kwargs"] = kwargs
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Absorb constructor arguments (already recorded by ``__new__``)."""

    __setstate__ = _apply_state  # a plain method: BUILD on a stand-in *class* fails (missing argument)
    append = _Hook(_append)
    extend = _Hook(_extend)
    add = _Hook(_add)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__.setdefault("_rd_dictitems", {})[key] = value

    def __repr__(self) -> str:
        return f"<stand-in {self.__rd_module__}.{self.__rd_name__}>"

    def __reduce__(self) -> Any:
        raise TypeError("stand-ins are read-only views of a session file and are never pickled again")


@dataclass(frozen=True, slots=True)
class Subscripted:
    """``Generic[Arg]`` of a stand-in class (``__orig_class__`` in rdagent objects), kept as data."""

    origin: Any
    key: Any


def class_path(obj: Any) -> str | None:
    """``module.Name`` of a stand-in instance (the genuine class path), else ``None``."""
    cls = type(obj)
    if issubclass(cls, StandIn):
        return f"{cls.__rd_module__}.{cls.__rd_name__}"
    return None


def class_name(obj: Any) -> str | None:
    """Bare class name of a stand-in instance (``QlibFactorExperiment``), else ``None``."""
    cls = type(obj)
    return cls.__rd_name__ if issubclass(cls, StandIn) else None


_STANDINS: dict[tuple[str, str], type[StandIn]] = {}
"""Stand-in classes by global: they are immutable to a pickle, so files can share them (and their memory)."""


def standin_class(module: str, name: str) -> type[StandIn]:
    """The stand-in class of ``module.name``, shared by every file while the cache has room."""
    cls = _STANDINS.get((module, name))
    if cls is None:
        cls = type(name.rsplit(".", 1)[-1], (StandIn,), {"__rd_module__": module, "__rd_name__": name})
        cls.__module__ = "rd_assets.core.session.standins"
        if len(_STANDINS) < MAX_CACHED_STANDINS:
            _STANDINS[(module, name)] = cls
    return cls
