"""Guards: the allowed callables of the unpickler, each validating its arguments before building data.

A guard cannot be configured by a pickle (``BUILD`` on it is refused, it has no ``__dict__``), and none of
them lets a few bytes of pickle grow into gigabytes (lazily huge ``range``/``bytes``) or deep C-level
nesting that CPython frees recursively.
"""

from __future__ import annotations

import collections
import pathlib
import types
import uuid
from collections.abc import Callable
from typing import Any

from rd_assets.core.errors import UnsafePickleError
from rd_assets.core.session.standins import StandIn, Subscripted

MAX_LAZY_ITEMS = 1 << 16
"""Largest ``range`` / ``_reconstruct`` size (items, bytes) a pickle may ask for; genuine files ask for (0,)."""
MAX_TYPE_ARGS_DEPTH = 8
"""Deepest ``Generic[...]`` nesting a pickle may build; genuine ``__orig_class__`` values nest once or twice."""

DATA_TYPES: frozenset[type] = frozenset(
    {dict, list, tuple, set, frozenset, int, float, complex, str, bytes, bytearray, bool, slice, range}
)


class Guard:
    """An allowed callable as the pickle sees it: it validates arguments and cannot be configured.

    ``target`` is the real type a guard stands for (``bytes``, ``numpy.ndarray``), so that data-only uses
    of the global (a ``GenericAlias`` origin, the subtype of ``_reconstruct``) still recognise it.
    """

    __slots__ = ("_fn", "name", "target")

    def __init__(self, name: str, fn: Callable[..., Any], target: type | None = None) -> None:
        self._fn = fn
        self.name = name
        self.target = target

    def __call__(self, *args: Any) -> Any:
        return self._fn(*args)

    def __setstate__(self, state: Any) -> None:
        raise UnsafePickleError(self.name, why="BUILD on an allowed callable")

    def __repr__(self) -> str:
        return f"<allowed {self.name}>"


def unguard(obj: Any) -> Any:
    return obj.target if isinstance(obj, Guard) and obj.target is not None else obj


def is_data_type(obj: Any) -> bool:
    return isinstance(obj, type) and (obj in DATA_TYPES or issubclass(obj, StandIn))


def _type_args_depth(value: Any, who: str, depth: int = 0) -> int:
    """How deeply ``value`` (generic-alias arguments) nests; refuses anything but types and deeper than allowed.

    Aliases are C objects without CPython's deallocation guard: a chain of 200k of them kills the process when
    it is freed, so their depth is bounded where they are built (each part was checked when it was built).
    """
    if depth > MAX_TYPE_ARGS_DEPTH:
        raise UnsafePickleError(who, why=f"type arguments nest deeper than {MAX_TYPE_ARGS_DEPTH}")
    if value is None or value is Ellipsis or type(value) is str or isinstance(value, type):
        return depth
    if type(value) is tuple:
        return max((_type_args_depth(v, who, depth) for v in value), default=depth)
    if isinstance(value, Subscripted):
        return _type_args_depth(value.key, who, depth + 1)
    if isinstance(value, types.GenericAlias):
        return _type_args_depth(value.__args__, who, depth + 1)
    raise UnsafePickleError(who, why=f"a type argument of type {type(value).__name__}")


def safe_getitem(obj: Any, key: Any) -> Any:
    """``operator.getitem`` limited to what genuine snapshots do: subscripting a generic class."""
    obj = unguard(obj)
    if isinstance(obj, type) and (issubclass(obj, StandIn) or obj in DATA_TYPES):
        _type_args_depth(key, "_operator.getitem")
        return Subscripted(obj, key) if issubclass(obj, StandIn) else types.GenericAlias(obj, key)
    if type(obj) in (list, tuple, dict, str, bytes):
        return obj[key]
    raise UnsafePickleError("_operator.getitem", why=f"on an object of type {type(obj).__name__}")


def safe_generic_alias(origin: Any, args: Any) -> Any:
    origin = unguard(origin)
    if is_data_type(origin):
        _type_args_depth(args, "types.GenericAlias")
        return types.GenericAlias(origin, args)
    raise UnsafePickleError("types.GenericAlias", why="origin is not a data type")


def safe_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` (protocols 0-1) only for stand-ins and ``uuid.UUID`` built on ``object``."""
    if base is object and state is None:
        if isinstance(cls, type) and issubclass(cls, StandIn):
            return cls()
        if cls is uuid.UUID:
            return object.__new__(uuid.UUID)
    raise UnsafePickleError("copyreg._reconstructor", why="only plain objects of stand-in classes")


def safe_path(flavour: type[pathlib.PurePath]) -> Callable[..., pathlib.PurePath]:
    """Concrete paths become pure paths: no filesystem method is ever reachable from a snapshot."""

    def make(*parts: Any) -> pathlib.PurePath:
        if not all(isinstance(p, str) for p in parts):
            raise UnsafePickleError(f"pathlib.{flavour.__name__}", why="non-string path parts")
        return flavour(*parts)

    return make


def bytes_like(kind: type[bytes] | type[bytearray]) -> Callable[..., bytes | bytearray]:
    """``bytes(...)`` / ``bytearray(...)`` from bytes or ``(str, encoding)`` only: never ``bytes(10**10)``."""

    def make(*args: Any) -> bytes | bytearray:
        if not args:
            return kind()
        if isinstance(args[0], bytes | bytearray) and len(args) == 1:
            return kind(args[0])
        if isinstance(args[0], str) and len(args) == 2 and args[1] in ("latin1", "latin-1"):
            return kind(args[0], args[1])
        raise UnsafePickleError(f"builtins.{kind.__name__}", why="only from bytes or (str, 'latin1')")

    return make


def safe_range(*args: Any) -> range:
    """A ``range`` is data, but a lazily huge one would let ``list(range(10**10))`` exhaust memory."""
    result = range(*args)
    if len(result) > MAX_LAZY_ITEMS:
        raise UnsafePickleError("builtins.range", why=f"{len(result)} items")
    return result


def safe_slice(*args: Any) -> slice:
    """A ``slice`` of ints (what pandas and numpy pickle); slices of slices would nest without a dealloc guard."""
    if len(args) > 3 or not all(a is None or type(a) in (int, bool) for a in args):
        raise UnsafePickleError("builtins.slice", why="only int or None bounds")
    return slice(*args)


class PickledDeque(collections.deque):  # type: ignore[type-arg]
    """A deque as pickled: a Python subclass, so freeing 200k nested ones is paced by CPython's trashcan.

    ``collections.deque`` itself frees its items recursively in C and overflows the C stack.
    """

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        """A plain deque has no state beyond its items; a BUILD here (or, unbound, on the class) is refused."""
        raise UnsafePickleError("collections.deque", why="BUILD on a deque")


def safe_codecs_encode(text: Any, encoding: Any = "latin1") -> bytes:
    """How protocols 0-2 pickle ``bytes``: ``_codecs.encode(str, 'latin1')``; nothing else of codecs."""
    if isinstance(text, str) and encoding in ("latin1", "latin-1"):
        return text.encode("latin1")
    raise UnsafePickleError("_codecs.encode", why="only str with the latin1 codec")
