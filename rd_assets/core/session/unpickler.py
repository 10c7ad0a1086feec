"""Restricted unpickling of RD-Agent session files: nothing in a pickle can import, execute or touch files.

Policy (what ``find_class`` answers for a global ``module.name``):

* **Allowed**: an exact ``(module, name)`` entry of :data:`ALLOWED_GLOBALS`. Only immutable builtin types
  (``dict``, ``list``, ``int``, ``datetime`` ...) are handed out as themselves; every other entry is a
  :class:`_Guard`, a callable that validates its arguments and cannot be re-configured by the pickle
  (``BUILD`` on it is refused, it has no ``__dict__``). numpy arrays are rebuilt only through guards that
  re-create each dtype from its public description (a pickled dtype state can forge flags and offsets) and
  check the payload length against the shape before numpy sees it (numpy's own ``__setstate__`` reads past
  a short object list or a forged dtype: a memory-safety hole, not just a wrong value).
* **Refused** (:class:`UnsafePickleError`, naming the global): every other global of the standard library,
  of ``builtins`` and of numpy except its random-generator constructors, which become stand-ins
  (``os.system``, ``eval``, ``getattr``, ``importlib``, ``functools.partial``,
  ``marshal``, ``numpy.load`` ...); refused third-party serialisers (``dill``, ``joblib`` ...); any name
  that walks through a dunder (``Trace.__init__.__globals__``), through an attribute named like a module
  (``rdagent.x.os.system``) or has an empty component; persistent ids.
* **Stand-in**: everything else (rdagent, qlib, lightgbm, pandas, ``__main__`` ...) becomes an inert
  :class:`StandIn` subclass. It is never imported; calling it only records the arguments; its state lands
  in ``__dict__``. State that would plant ``__setstate__`` is refused, and the other hooks pickle looks
  up on instances (``append``, ``extend``, ``add``) are data descriptors, so no planted ``__dict__``
  entry can redirect a later opcode to a callable of the pickle's choosing.

Hence the only code a session file can reach is the allow-list, and the allow-list only builds data.

Residual risk, by design of CPython's C unpickler (documented, not solvable without a slow pure-Python
unpickler): memory, not code. A ``LONG_BINPUT`` with a huge memo index makes CPython grow its memo table
(``2**26`` costs 1 GB), and repeated container copies of one memoised object grow linearly with the file.
Readers of untrusted directories should run under a memory limit (``ulimit -v``, cgroup ``MemoryMax``).
Lazily huge iterables (``range``, ``bytes(n)``, strided arrays) are refused so that no call amplifies a few
bytes into gigabytes on its own.
"""

from __future__ import annotations

import _compat_pickle
import collections
import contextlib
import datetime
import decimal
import gc
import math
import pathlib
import pickle
import sys
import types
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from rd_assets.core.errors import UnreadableSnapshotError, UnsafePickleError

MAX_LAZY_ITEMS = 1 << 16
"""Largest ``range`` / ``_reconstruct`` size (items, bytes) a pickle may ask for; genuine files ask for (0,)."""
MAX_DTYPE_DEPTH = 8
MAX_TYPE_ARGS_DEPTH = 8
"""Deepest ``Generic[...]`` nesting a pickle may build; genuine ``__orig_class__`` values nest once or twice."""
MAX_GLOBALS_PER_FILE = 4096
"""Distinct globals one file may name; genuine snapshots name a few hundred, each is a class object in memory."""
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


class _Guard:
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


def _unguard(obj: Any) -> Any:
    return obj.target if isinstance(obj, _Guard) and obj.target is not None else obj


def _is_data_type(obj: Any) -> bool:
    return isinstance(obj, type) and (obj in _DATA_TYPES or issubclass(obj, StandIn))


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


def _safe_getitem(obj: Any, key: Any) -> Any:
    """``operator.getitem`` limited to what genuine snapshots do: subscripting a generic class."""
    obj = _unguard(obj)
    if isinstance(obj, type) and (issubclass(obj, StandIn) or obj in _DATA_TYPES):
        _type_args_depth(key, "_operator.getitem")
        return Subscripted(obj, key) if issubclass(obj, StandIn) else types.GenericAlias(obj, key)
    if type(obj) in (list, tuple, dict, str, bytes):
        return obj[key]
    raise UnsafePickleError("_operator.getitem", why=f"on an object of type {type(obj).__name__}")


def _safe_generic_alias(origin: Any, args: Any) -> Any:
    origin = _unguard(origin)
    if _is_data_type(origin):
        _type_args_depth(args, "types.GenericAlias")
        return types.GenericAlias(origin, args)
    raise UnsafePickleError("types.GenericAlias", why="origin is not a data type")


def _safe_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` (protocols 0-1) only for stand-ins and ``uuid.UUID`` built on ``object``."""
    if base is object and state is None:
        if isinstance(cls, type) and issubclass(cls, StandIn):
            return cls()
        if cls is uuid.UUID:
            return object.__new__(uuid.UUID)
    raise UnsafePickleError("copyreg._reconstructor", why="only plain objects of stand-in classes")


def _safe_path(flavour: type[pathlib.PurePath]) -> Callable[..., pathlib.PurePath]:
    """Concrete paths become pure paths: no filesystem method is ever reachable from a snapshot."""

    def make(*parts: Any) -> pathlib.PurePath:
        if not all(isinstance(p, str) for p in parts):
            raise UnsafePickleError(f"pathlib.{flavour.__name__}", why="non-string path parts")
        return flavour(*parts)

    return make


def _bytes_like(kind: type[bytes] | type[bytearray]) -> Callable[..., bytes | bytearray]:
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


def _safe_range(*args: Any) -> range:
    """A ``range`` is data, but a lazily huge one would let ``list(range(10**10))`` exhaust memory."""
    result = range(*args)
    if len(result) > MAX_LAZY_ITEMS:
        raise UnsafePickleError("builtins.range", why=f"{len(result)} items")
    return result


def _safe_slice(*args: Any) -> slice:
    """A ``slice`` of ints (what pandas and numpy pickle); slices of slices would nest without a dealloc guard."""
    if len(args) > 3 or not all(a is None or type(a) in (int, bool) for a in args):
        raise UnsafePickleError("builtins.slice", why="only int or None bounds")
    return slice(*args)


class _PickledDeque(collections.deque):  # type: ignore[type-arg]
    """A deque as pickled: a Python subclass, so freeing 200k nested ones is paced by CPython's trashcan.

    ``collections.deque`` itself frees its items recursively in C and overflows the C stack.
    """

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        """A plain deque has no state beyond its items; a BUILD here (or, unbound, on the class) is refused."""
        raise UnsafePickleError("collections.deque", why="BUILD on a deque")


def _safe_codecs_encode(text: Any, encoding: Any = "latin1") -> bytes:
    """How protocols 0-2 pickle ``bytes``: ``_codecs.encode(str, 'latin1')``; nothing else of codecs."""
    if isinstance(text, str) and encoding in ("latin1", "latin-1"):
        return text.encode("latin1")
    raise UnsafePickleError("_codecs.encode", why="only str with the latin1 codec")


# ----------------------------------------------------------------------------------------------- numpy


def _shape(value: Any, who: str) -> tuple[int, ...]:
    if not (isinstance(value, tuple) and len(value) <= 32 and all(type(n) is int and n >= 0 for n in value)):
        raise UnsafePickleError(who, why="shape is not a tuple of non-negative ints")
    return value


def _sanitize_dtype(value: Any, depth: int = 0) -> np.dtype[Any]:
    """A fresh dtype re-built by numpy's validating constructor from ``value``'s public description.

    A pickled dtype is ``dtype('V16')`` followed by ``__setstate__``, which trusts the state's flags,
    offsets and item size; re-building from names/formats/offsets lets numpy check them again.
    """
    who = "numpy.dtype"
    if depth > MAX_DTYPE_DEPTH:
        raise UnsafePickleError(who, why="nested too deeply")
    if isinstance(value, bytes | str):  # a typecode such as b'b' (what ``_reconstruct`` receives)
        try:
            return np.dtype(value.decode("ascii") if isinstance(value, bytes) else value)
        except (TypeError, ValueError, UnicodeDecodeError) as exc:
            raise UnsafePickleError(who, why=f"bad typecode {value!r}") from exc
    if not isinstance(value, np.dtype):
        raise UnsafePickleError(who, why=f"expected a dtype, got {type(value).__name__}")
    try:
        if value.names is not None:
            fields = value.fields or {}
            spec: dict[str, Any] = {"names": [], "formats": [], "offsets": [], "titles": []}
            for name in value.names:
                field = fields[name]
                spec["names"].append(name)
                spec["formats"].append(_sanitize_dtype(field[0], depth + 1))
                spec["offsets"].append(int(field[1]))
                spec["titles"].append(field[2] if len(field) > 2 else None)
            spec["itemsize"] = value.itemsize
            rebuilt = np.dtype(spec)
        elif value.subdtype is not None:
            base, shape = value.subdtype
            rebuilt = np.dtype((_sanitize_dtype(base, depth + 1), _shape(shape, who)))
        else:
            rebuilt = np.dtype(value.str)
    except UnsafePickleError:
        raise
    except Exception as exc:  # numpy refused the description: the pickled state was forged or corrupt
        raise UnsafePickleError(who, why=f"inconsistent dtype state ({type(exc).__name__}: {exc})") from exc
    if rebuilt.itemsize != value.itemsize:
        raise UnsafePickleError(who, why=f"item size {value.itemsize} does not match its fields")
    return rebuilt


def _safe_dtype(spec: Any, align: Any = False, copy: Any = True) -> np.dtype[Any]:
    """``numpy.dtype('f8', False, True)`` as numpy pickles it; always a copy, never a shared singleton."""
    if not isinstance(spec, str) or not isinstance(align, bool):
        raise UnsafePickleError("numpy.dtype", why="only a typecode string")
    try:
        return np.dtype(spec, align=align, copy=True)
    except (TypeError, ValueError) as exc:
        raise UnsafePickleError("numpy.dtype", why=f"bad typecode {spec!r}") from exc


class _PickledArray(np.ndarray):
    """An array rebuilt from a pickle: its ``__setstate__`` validates before numpy's runs."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        who = "numpy.ndarray.__setstate__"
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise UnsafePickleError(who, why="state is not a (version, shape, dtype, fortran, data) tuple")
        if self.size != 0 or not self.flags.owndata:
            # numpy would free or resize a block another array may already view (use after free)
            raise UnsafePickleError(who, why="BUILD on an array that already holds data")
        version, shape, dtype, fortran, raw = state if len(state) == 5 else (1, *state)
        if type(version) is not int or not isinstance(fortran, bool):
            raise UnsafePickleError(who, why="bad version or order flag")
        shape = _shape(shape, who)
        dtype = _sanitize_dtype(dtype)
        count = math.prod(shape)
        if dtype.hasobject:
            if dtype != np.dtype(object):
                raise UnsafePickleError(who, why="structured arrays holding objects")
            if not (type(raw) is list and len(raw) == count):
                raise UnsafePickleError(who, why=f"object array of {count} items needs a list of {count}")
        elif not (isinstance(raw, bytes | bytearray) and len(raw) == count * dtype.itemsize):
            raise UnsafePickleError(who, why=f"data is not {count * dtype.itemsize} bytes")
        np.ndarray.__setstate__(self, (version, shape, dtype, fortran, raw))


def _forbid_ndarray_call(*args: Any) -> Any:
    raise UnsafePickleError("numpy.ndarray", why="arrays are rebuilt by _reconstruct/_frombuffer, never called")


_NDARRAY = _Guard("numpy.ndarray", _forbid_ndarray_call, target=np.ndarray)


def _safe_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """numpy's ``_reconstruct(ndarray, (0,), b'b')``: an empty plain array that ``BUILD`` then fills.

    This is the one numpy call that allocates from nothing, so its size (items x item size, which a
    typecode such as ``'(40000,40000)u1'`` can inflate) is capped.
    """
    who = "numpy._core.multiarray._reconstruct"
    if _unguard(subtype) is not np.ndarray:
        raise UnsafePickleError(who, why="only plain numpy.ndarray")
    shape = _shape(shape if isinstance(shape, tuple) else (shape,), who)
    dt = _sanitize_dtype(dtype)
    if math.prod(shape) != 0:  # numpy pickles (0,); BUILD fills it once (see _PickledArray.__setstate__)
        raise UnsafePickleError(who, why=f"initial shape {shape} is not empty")
    return np.ndarray.__new__(_PickledArray, shape, dt)


def _safe_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any, axis_order: Any = None) -> np.ndarray:
    """Protocol-5 arrays: a view of bytes the pickle carried (never of objects), reshaped, maybe transposed."""
    who = "numpy._core.numeric._frombuffer"
    dt = _sanitize_dtype(dtype)
    shape = _shape(shape, who)
    if dt.hasobject or order not in ("C", "F", "K", "A"):
        raise UnsafePickleError(who, why="only plain-data arrays in C/F/K order")
    if axis_order is not None and not (isinstance(axis_order, tuple) and sorted(axis_order) == list(range(len(shape)))):
        raise UnsafePickleError(who, why="axis order is not a permutation of the axes")
    if isinstance(buf, memoryview) and not isinstance(buf.obj, bytes | bytearray):
        # READONLY_BUFFER on an array: a view of a block numpy may free, or of object pointers
        raise UnsafePickleError(who, why=f"a view of a {type(buf.obj).__name__}, not of pickled bytes")
    if not isinstance(buf, bytes | bytearray | memoryview):
        raise UnsafePickleError(who, why=f"buffer of type {type(buf).__name__}")
    array: np.ndarray = np._core.numeric._frombuffer(buf, dt, shape, order, axis_order)
    return array.view(_PickledArray)


def _safe_scalar(dtype: Any, data: Any = None) -> Any:
    """``numpy.core.multiarray.scalar(dtype, bytes)``: numpy checks the length once the dtype is sane."""
    dt = _sanitize_dtype(dtype)
    if dt.hasobject and dt != np.dtype(object):
        raise UnsafePickleError("numpy._core.multiarray.scalar", why="structured scalar holding objects")
    return np._core.multiarray.scalar(dt, data) if data is not None else np._core.multiarray.scalar(dt)


# ----------------------------------------------------------------------------------------------- allow-list

_DATA_TYPES: frozenset[type] = frozenset(
    {dict, list, tuple, set, frozenset, int, float, complex, str, bytes, bytearray, bool, slice, range}
)


def _guard(name: str, fn: Callable[..., Any], target: type | None = None) -> _Guard:
    return _Guard(name, fn, target)


_POSIX = _guard("pathlib.PosixPath", _safe_path(pathlib.PurePosixPath))
_WINDOWS = _guard("pathlib.WindowsPath", _safe_path(pathlib.PureWindowsPath))
_PATHLIB = ("pathlib", "pathlib._local")
_DATA_TYPE_WHY = "a builtin data type: calling it only builds a value, and a type object cannot be configured by BUILD"
_PATHLIB = ("pathlib", "pathlib._local")
_NUMPY_MULTIARRAY = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMPY_NUMERIC = ("numpy.core.numeric", "numpy._core.numeric")


def _allow(modules: tuple[str, ...], names: tuple[str, ...], obj: Any, why: str) -> dict[tuple[str, str], Any]:
    return {(module, name): (obj, why) for module in modules for name in names}


ALLOW_LIST: dict[tuple[str, str], tuple[Any, str]] = {
    **{("builtins", t.__name__): (t, _DATA_TYPE_WHY) for t in (dict, list, tuple, set, frozenset)},
    **{("builtins", t.__name__): (t, _DATA_TYPE_WHY) for t in (int, float, complex, str, bool)},
    ("builtins", "object"): (object, "object() is an empty inert instance; copyreg names it as a base class"),
    ("builtins", "bytes"): (
        _guard("builtins.bytes", _bytes_like(bytes), bytes),
        "guarded: only from bytes or (str, 'latin1'), never bytes(10**10)",
    ),
    ("builtins", "bytearray"): (
        _guard("builtins.bytearray", _bytes_like(bytearray), bytearray),
        "guarded like bytes; a bytearray viewed by an array cannot be resized (CPython checks exports)",
    ),
    ("builtins", "range"): (_guard("builtins.range", _safe_range, range), "guarded: at most 65,536 items"),
    ("builtins", "slice"): (
        _guard("builtins.slice", _safe_slice, slice),
        "guarded: int or None bounds only (slices of slices nest without a deallocation guard)",
    ),
    ("_codecs", "encode"): (
        _guard("_codecs.encode", _safe_codecs_encode),
        "guarded: how protocols 0-2 spell bytes, str with the latin1 codec only",
    ),
    ("collections", "OrderedDict"): (collections.OrderedDict, "a dict subclass; freeing it is trashcan-paced"),
    ("collections", "defaultdict"): (
        collections.defaultdict,
        "a dict whose factory is only ever another allowed callable or a stand-in class, never called while loading",
    ),
    ("collections", "deque"): (_PickledDeque, "rebuilt as a Python subclass so freeing deep nesting is trashcan-paced"),
    ("collections", "Counter"): (
        _guard("collections.Counter", collections.Counter),
        "a dict subclass, called with data",
    ),
    **{
        ("datetime", t.__name__): (t, "an immutable value type whose constructor validates its fields")
        for t in (datetime.datetime, datetime.date, datetime.time, datetime.timedelta, datetime.timezone)
    },
    ("decimal", "Decimal"): (decimal.Decimal, "an immutable number parsed from a string"),
    ("uuid", "UUID"): (
        uuid.UUID,
        "its own __setstate__(self, state) makes BUILD on the class fail; instances are values",
    ),
    ("uuid", "SafeUUID"): (_guard("uuid.SafeUUID", uuid.SafeUUID), "an enum lookup by value"),
    ("types", "SimpleNamespace"): (types.SimpleNamespace, "a plain attribute bag; its dict is trashcan-paced"),
    ("types", "GenericAlias"): (
        _guard("types.GenericAlias", _safe_generic_alias),
        "guarded: origin a data type, arguments types at most 8 deep",
    ),
    **_allow(
        ("_operator", "operator"),
        ("getitem",),
        _guard("_operator.getitem", _safe_getitem),
        "guarded: subscripting a generic class or a list/tuple/dict/str/bytes, nothing else",
    ),
    ("copyreg", "_reconstructor"): (
        _guard("copyreg._reconstructor", _safe_reconstructor),
        "guarded: plain objects of stand-in classes or uuid.UUID on object only",
    ),
    **_allow(
        _PATHLIB,
        ("PosixPath", "PurePosixPath", "Path", "PurePath"),
        _POSIX,
        "guarded: becomes a PurePosixPath of str parts, so no filesystem method is reachable",
    ),
    **_allow(
        _PATHLIB,
        ("WindowsPath", "PureWindowsPath"),
        _WINDOWS,
        "guarded: becomes a PureWindowsPath of str parts",
    ),
    ("numpy", "ndarray"): (_NDARRAY, "guarded: never callable (arrays are rebuilt by _reconstruct), a type for data"),
    ("numpy", "dtype"): (_guard("numpy.dtype", _safe_dtype), "guarded: a typecode string, always a fresh dtype"),
    **_allow(
        _NUMPY_MULTIARRAY,
        ("_reconstruct",),
        _guard("numpy._core.multiarray._reconstruct", _safe_reconstruct),
        "guarded: an empty plain array that one validated BUILD fills",
    ),
    **_allow(
        _NUMPY_MULTIARRAY,
        ("scalar",),
        _guard("numpy._core.multiarray.scalar", _safe_scalar),
        "guarded: a re-validated dtype, no object scalars",
    ),
    **_allow(
        _NUMPY_NUMERIC,
        ("_frombuffer",),
        _guard("numpy._core.numeric._frombuffer", _safe_frombuffer),
        "guarded: a view of pickled bytes only (never of another array), no object dtypes",
    ),
}
"""``(module, name)`` -> (what ``find_class`` hands out, why that is safe). Everything else is refused or inert."""

ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {key: obj for key, (obj, _why) in ALLOW_LIST.items()}

INERT_NUMPY_GLOBALS = frozenset(
    {("numpy.random._pickle", n) for n in ("__randomstate_ctor", "__generator_ctor", "__bit_generator_ctor")}
    | {
        ("numpy.random._mt19937", "MT19937"),
        ("numpy.random._pcg64", "PCG64"),
        ("numpy.random._pcg64", "PCG64DXSM"),
        ("numpy.random._philox", "Philox"),
        ("numpy.random._sfc64", "SFC64"),
        ("numpy.random.bit_generator", "SeedSequence"),
        ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
    }
)
"""numpy globals that become stand-ins instead of being refused: random generators are harmless state
that an rdagent object may hold; as stand-ins they are recorded, never constructed."""

# Modules whose globals are refused outright although they are not in the standard library: numpy is
# imported here for real (only the entries above are data), the others are serialisers that run code.
_REFUSED_THIRD_PARTY = frozenset({"numpy", "dill", "cloudpickle", "joblib", "nt", "posix", "_posixsubprocess"})
_STDLIB = frozenset(sys.stdlib_module_names) | {"__builtin__", "__builtins__", "copy_reg", "exceptions"}


_MAIN_NAMES = frozenset({"__main__", "__mp_main__"})


def _refusal(module: str, name: str) -> str | None:
    """Why ``module.name`` is refused, or ``None`` when it may become a stand-in."""
    if module.split(".", 1)[0] in _STDLIB or module.split(".", 1)[0] in _REFUSED_THIRD_PARTY:
        return "standard-library, builtins and numpy globals are refused unless allow-listed"
    parts = [*module.split("."), *name.split(".")]
    if any(not p or (p.startswith("__") and p.endswith("__") and p not in _MAIN_NAMES) for p in parts):
        return "a dotted name that walks through a dunder attribute or an empty component"
    if "." in name and any(p in _STDLIB or p in _REFUSED_THIRD_PARTY for p in name.split(".")):
        return "a dotted name that reaches a module through an attribute (rdagent.x.os.system)"
    return None


class RestrictedUnpickler(pickle.Unpickler):
    """A :class:`pickle.Unpickler` whose only way to reach code is the allow-list above."""

    def __init__(self, file: Any, *, path: str | None = None) -> None:
        super().__init__(file)
        self._path = path
        self._named: set[tuple[str, str]] = set()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        allowed = ALLOWED_GLOBALS.get((module, name))
        if allowed is not None:
            return allowed
        if (module, name) in INERT_NUMPY_GLOBALS:
            return self._standin(module, name)
        why = _refusal(module, name)
        if why is not None:
            raise UnsafePickleError(f"{module}.{name}", path=self._path, why=why)
        return self._standin(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("persistent_load", path=self._path, why="persistent ids are not data")

    def _standin(self, module: str, name: str) -> type[StandIn]:
        """The stand-in class of ``module.name``, shared by every file; a file may name only so many."""
        key = (module, name)
        if key not in self._named:
            if len(self._named) >= MAX_GLOBALS_PER_FILE:
                raise UnsafePickleError(
                    f"{module}.{name}", path=self._path, why=f"more than {MAX_GLOBALS_PER_FILE} distinct globals"
                )
            self._named.add(key)
        cls = _STANDINS.get(key)
        if cls is None:
            cls = type(name.rsplit(".", 1)[-1], (StandIn,), {"__rd_module__": module, "__rd_name__": name})
            cls.__module__ = "rd_assets.core.session.unpickler.standins"
            if len(_STANDINS) < MAX_CACHED_STANDINS:
                _STANDINS[key] = cls
        return cls


_STANDINS: dict[tuple[str, str], type[StandIn]] = {}
"""Stand-in classes by global: they are immutable to a pickle, so files can share them (and their memory)."""


class _ViewReader:
    """A file-like view of bytes already in memory, shaped for the C unpickler's fast path.

    ``peek`` hands over the whole remaining buffer, so the unpickler parses it in place: no copy into
    ``io.BytesIO`` and no Python call per opcode (``BytesIO`` has no ``peek``).
    """

    __slots__ = ("_pos", "_view")

    def __init__(self, data: bytes | memoryview) -> None:
        self._view = memoryview(data).cast("B")
        self._pos = 0

    def peek(self, n: int = 0) -> memoryview:
        return self._view[self._pos :]

    def read(self, n: int = -1) -> memoryview:
        end = len(self._view) if n is None or n < 0 else min(len(self._view), self._pos + n)
        chunk = self._view[self._pos : end]
        self._pos = end
        return chunk

    def readinto(self, buf: Any) -> int:
        target = memoryview(buf).cast("B")
        chunk = self.read(len(target))
        target[: len(chunk)] = chunk
        return len(chunk)

    def readline(self, limit: int = -1) -> memoryview:
        rest = self._view[self._pos :]
        newline = bytes(rest[: limit if limit is not None and limit >= 0 else len(rest)]).find(b"\n")
        return self.read(len(rest) if newline < 0 else newline + 1)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC; nests safely (whoever paused it first re-enables it).

    A whole scan pauses it too: re-enabling between snapshots lets a collection walk every object of the
    snapshot just built (a quarter of a cold read of an object-heavy session); discarded snapshots are freed
    by reference counting anyway.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _load(reader: Any, path: str | None) -> Any:
    """Run the restricted unpickler over a file-like ``reader``; every failure becomes a typed error.

    The cyclic GC is paused while loading: a snapshot allocates hundreds of thousands of containers, and
    each automatic collection would re-scan the growing graph (and the best snapshot kept alive beside it)
    for cycles that cannot be garbage yet. Pausing is process-wide but nests safely: whoever paused it
    first re-enables it.
    """
    try:
        with gc_paused():
            return RestrictedUnpickler(reader, path=path).load()
    except UnsafePickleError as exc:
        exc.path = exc.path or path
        raise
    except RecursionError as exc:
        raise UnreadableSnapshotError("pickle nests too deeply", path=path) from exc
    except MemoryError:  # a limit of the process reading it, not a property of the file: the reader types it
        raise
    except Exception as exc:  # any failure to rebuild data means the file is not a readable snapshot
        raise UnreadableSnapshotError(f"not a readable pickle ({type(exc).__name__}: {exc})", path=path) from exc


def load_stream(stream: Any, *, path: str | None = None) -> Any:
    """Unpickle a buffered binary stream (``peek`` lets the C unpickler parse in place) with the same policy."""
    return _load(stream, path)


def safe_loads(data: bytes | memoryview, *, path: str | None = None) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`; every failure becomes a typed error."""
    return _load(_ViewReader(data), path)
