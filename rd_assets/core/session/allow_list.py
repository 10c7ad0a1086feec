"""The allow-list: every global a session file may name, what it gets instead, and why that is safe.

Everything not listed is refused (standard library, builtins, numpy, code-running serialisers) or becomes an
inert stand-in (:func:`refusal` decides which).
"""

from __future__ import annotations

import collections
import datetime
import decimal
import pathlib
import sys
import types
import uuid
from collections.abc import Callable
from typing import Any

from rd_assets.core.session.guards import (
    Guard,
    PickledDeque,
    bytes_like,
    safe_codecs_encode,
    safe_generic_alias,
    safe_getitem,
    safe_path,
    safe_range,
    safe_reconstructor,
    safe_slice,
)
from rd_assets.core.session.numpy_guards import NDARRAY, safe_dtype, safe_frombuffer, safe_reconstruct, safe_scalar


def _guard(name: str, fn: Callable[..., Any], target: type | None = None) -> Guard:
    return Guard(name, fn, target)


_POSIX = _guard("pathlib.PosixPath", safe_path(pathlib.PurePosixPath))
_WINDOWS = _guard("pathlib.WindowsPath", safe_path(pathlib.PureWindowsPath))
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
        _guard("builtins.bytes", bytes_like(bytes), bytes),
        "guarded: only from bytes or (str, 'latin1'), never bytes(10**10)",
    ),
    ("builtins", "bytearray"): (
        _guard("builtins.bytearray", bytes_like(bytearray), bytearray),
        "guarded like bytes; a bytearray viewed by an array cannot be resized (CPython checks exports)",
    ),
    ("builtins", "range"): (_guard("builtins.range", safe_range, range), "guarded: at most 65,536 items"),
    ("builtins", "slice"): (
        _guard("builtins.slice", safe_slice, slice),
        "guarded: int or None bounds only (slices of slices nest without a deallocation guard)",
    ),
    ("_codecs", "encode"): (
        _guard("_codecs.encode", safe_codecs_encode),
        "guarded: how protocols 0-2 spell bytes, str with the latin1 codec only",
    ),
    ("collections", "OrderedDict"): (collections.OrderedDict, "a dict subclass; freeing it is trashcan-paced"),
    ("collections", "defaultdict"): (
        collections.defaultdict,
        "a dict whose factory is only ever another allowed callable or a stand-in class, never called while loading",
    ),
    ("collections", "deque"): (PickledDeque, "rebuilt as a Python subclass so freeing deep nesting is trashcan-paced"),
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
        _guard("types.GenericAlias", safe_generic_alias),
        "guarded: origin a data type, arguments types at most 8 deep",
    ),
    **_allow(
        ("_operator", "operator"),
        ("getitem",),
        _guard("_operator.getitem", safe_getitem),
        "guarded: subscripting a generic class or a list/tuple/dict/str/bytes, nothing else",
    ),
    ("copyreg", "_reconstructor"): (
        _guard("copyreg._reconstructor", safe_reconstructor),
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
    ("numpy", "ndarray"): (NDARRAY, "guarded: never callable (arrays are rebuilt by _reconstruct), a type for data"),
    ("numpy", "dtype"): (_guard("numpy.dtype", safe_dtype), "guarded: a typecode string, always a fresh dtype"),
    **_allow(
        _NUMPY_MULTIARRAY,
        ("_reconstruct",),
        _guard("numpy._core.multiarray._reconstruct", safe_reconstruct),
        "guarded: an empty plain array that one validated BUILD fills",
    ),
    **_allow(
        _NUMPY_MULTIARRAY,
        ("scalar",),
        _guard("numpy._core.multiarray.scalar", safe_scalar),
        "guarded: a re-validated dtype, no object scalars",
    ),
    **_allow(
        _NUMPY_NUMERIC,
        ("_frombuffer",),
        _guard("numpy._core.numeric._frombuffer", safe_frombuffer),
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


def refusal(module: str, name: str) -> str | None:
    """Why ``module.name`` is refused, or ``None`` when it may become a stand-in."""
    if module.split(".", 1)[0] in _STDLIB or module.split(".", 1)[0] in _REFUSED_THIRD_PARTY:
        return "standard-library, builtins and numpy globals are refused unless allow-listed"
    parts = [*module.split("."), *name.split(".")]
    if any(not p or (p.startswith("__") and p.endswith("__") and p not in _MAIN_NAMES) for p in parts):
        return "a dotted name that walks through a dunder attribute or an empty component"
    if "." in name and any(p in _STDLIB or p in _REFUSED_THIRD_PARTY for p in name.split(".")):
        return "a dotted name that reaches a module through an attribute (rdagent.x.os.system)"
    return None
