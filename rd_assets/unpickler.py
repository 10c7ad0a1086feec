"""Restricted unpickling of RD-Agent session files: nothing in a pickle can import, execute or touch files.

``find_class`` answers every global in one of three ways:

* a real object, only from a small allow-list of pure data types (containers, datetime, paths mapped to
  OS-neutral pure paths, decimal, uuid, numpy array reconstruction) and a few vetted safe wrappers;
* a typed refusal (:class:`UnsafePickleError`) for every other global of the standard library or builtins
  (``os``, ``subprocess``, ``eval``, ``getattr``, ``importlib``, ``functools.partial``, ``marshal`` ...);
* an inert :class:`StandIn` class for everything else (rdagent, qlib, lightgbm, pandas, ``__main__`` ...):
  never imported, it keeps its module/name, its constructor arguments and every piece of state.

Since every callable a pickle can reach is either allow-listed data construction or inert, no byte of
a session file can make this process act.
"""

from __future__ import annotations

import _compat_pickle
import collections
import datetime
import decimal
import fractions
import hashlib
import hmac
import io
import pathlib
import pickle
import sys
import types
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from rd_assets.errors import SignatureMismatchError, UnreadableSnapshotError, UnsafePickleError

SIGNED_MAGIC = b"RDAGENT_SIGNED_PICKLE_V1\n"
SIGNED_HEADER_LEN = len(SIGNED_MAGIC) + 32


class StandIn:
    """Inert replacement for a class we refuse to import; records everything the pickle gives it.

    Subclasses are made per global with ``__rd_module__`` / ``__rd_name__``. Constructor arguments
    land in ``_rd_args``/``_rd_kwargs``, non-dict state in ``_rd_state``, list items in ``_rd_items``
    and dict items in ``_rd_dictitems``. Nothing here calls anything it was given.
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

    def __setstate__(self, state: Any) -> None:
        slots: Any = None
        if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)):
            state, slots = state
        if isinstance(state, dict):
            self.__dict__.update({k: v for k, v in state.items() if isinstance(k, str)})
        elif state is not None:
            self.__dict__["_rd_state"] = state
        if isinstance(slots, dict):
            self.__dict__.update({k: v for k, v in slots.items() if isinstance(k, str)})

    def append(self, item: Any) -> None:
        self.__dict__.setdefault("_rd_items", []).append(item)

    def extend(self, items: Any) -> None:
        self.__dict__.setdefault("_rd_items", []).extend(list(items))

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__.setdefault("_rd_dictitems", {})[key] = value

    def __repr__(self) -> str:
        return f"<stand-in {self.__rd_module__}.{self.__rd_name__}>"

    def __reduce__(self) -> Any:
        raise TypeError("stand-ins are read-only views of a session file and are never pickled again")


@dataclass(frozen=True)
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


def _safe_getitem(obj: Any, key: Any) -> Any:
    """``operator.getitem`` limited to what genuine snapshots do: subscripting a generic class."""
    if isinstance(obj, type) and issubclass(obj, StandIn):
        return Subscripted(obj, key)
    if isinstance(obj, type) and obj in _DATA_TYPES:
        return types.GenericAlias(obj, key)
    if type(obj) in (list, tuple, dict, str, bytes):
        return obj[key]
    raise UnsafePickleError("_operator.getitem", why=f"on an object of type {type(obj).__name__}")


def _safe_generic_alias(origin: Any, args: Any) -> Any:
    if isinstance(origin, type) and (origin in _DATA_TYPES or issubclass(origin, StandIn)):
        return types.GenericAlias(origin, args)
    raise UnsafePickleError("types.GenericAlias", why="origin is not a data type")


def _safe_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` (protocols 0-1) only for stand-ins built on ``object``."""
    if isinstance(cls, type) and issubclass(cls, StandIn) and base is object and state is None:
        return cls()
    raise UnsafePickleError("copyreg._reconstructor", why="only plain objects of stand-in classes")


def _safe_path(flavour: type[pathlib.PurePath]) -> Callable[..., pathlib.PurePath]:
    """Concrete paths become pure paths: no filesystem method is ever reachable from a snapshot."""

    def make(*parts: Any) -> pathlib.PurePath:
        if not all(isinstance(p, str) for p in parts):
            raise UnsafePickleError(f"pathlib.{flavour.__name__}", why="non-string path parts")
        return flavour(*parts)

    return make


_DATA_TYPES: frozenset[type] = frozenset(
    {dict, list, tuple, set, frozenset, int, float, complex, str, bytes, bytearray, bool, slice, range}
)

_POSIX = _safe_path(pathlib.PurePosixPath)
_WINDOWS = _safe_path(pathlib.PureWindowsPath)

ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **{("builtins", t.__name__): t for t in _DATA_TYPES},
    ("builtins", "object"): object,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,
    ("collections", "deque"): collections.deque,
    ("collections", "Counter"): collections.Counter,
    ("datetime", "datetime"): datetime.datetime,
    ("datetime", "date"): datetime.date,
    ("datetime", "time"): datetime.time,
    ("datetime", "timedelta"): datetime.timedelta,
    ("datetime", "timezone"): datetime.timezone,
    ("decimal", "Decimal"): decimal.Decimal,
    ("fractions", "Fraction"): fractions.Fraction,
    ("uuid", "UUID"): uuid.UUID,
    ("uuid", "SafeUUID"): uuid.SafeUUID,
    ("types", "SimpleNamespace"): types.SimpleNamespace,
    ("types", "GenericAlias"): _safe_generic_alias,
    ("_operator", "getitem"): _safe_getitem,
    ("operator", "getitem"): _safe_getitem,
    ("copyreg", "_reconstructor"): _safe_reconstructor,
    **{("pathlib", n): _POSIX for n in ("PosixPath", "PurePosixPath", "Path", "PurePath")},
    **{("pathlib", n): _WINDOWS for n in ("WindowsPath", "PureWindowsPath")},
    **{("pathlib._local", n): _POSIX for n in ("PosixPath", "PurePosixPath", "Path", "PurePath")},
    **{("pathlib._local", n): _WINDOWS for n in ("WindowsPath", "PureWindowsPath")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    ALLOWED_GLOBALS[(_mod, "_reconstruct")] = np._core.multiarray._reconstruct
    ALLOWED_GLOBALS[(_mod, "scalar")] = np._core.multiarray.scalar
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    ALLOWED_GLOBALS[(_mod, "_frombuffer")] = np._core.numeric._frombuffer

# Modules whose globals are refused outright even though they are not in the standard library.
_REFUSED_THIRD_PARTY = frozenset({"dill", "cloudpickle", "joblib", "nt", "posix", "_posixsubprocess"})
_STDLIB = frozenset(sys.stdlib_module_names) | {"__builtin__", "copy_reg", "exceptions"}


def _is_refused_module(module: str) -> bool:
    top = module.split(".", 1)[0]
    return top in _STDLIB or top in _REFUSED_THIRD_PARTY


class RestrictedUnpickler(pickle.Unpickler):
    """A :class:`pickle.Unpickler` whose only way to reach code is the allow-list above."""

    def __init__(self, file: Any, *, path: str | None = None) -> None:
        super().__init__(file)
        self._path = path
        self._standins: dict[tuple[str, str], type[StandIn]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        allowed = ALLOWED_GLOBALS.get((module, name))
        if allowed is not None:
            return allowed
        if _is_refused_module(module):
            raise UnsafePickleError(f"{module}.{name}", path=self._path)
        return self._standin(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("persistent_load", path=self._path, why="persistent ids are not data")

    def _standin(self, module: str, name: str) -> type[StandIn]:
        key = (module, name)
        cls = self._standins.get(key)
        if cls is None:
            short = name.rsplit(".", 1)[-1]
            cls = type(short, (StandIn,), {"__rd_module__": module, "__rd_name__": name})
            cls.__module__ = "rd_assets.unpickler.standins"
            self._standins[key] = cls
        return cls


def safe_loads(data: bytes | memoryview, *, path: str | None = None) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`; every failure becomes a typed error."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), path=path).load()
    except UnsafePickleError as exc:
        exc.path = exc.path or path
        raise
    except RecursionError as exc:
        raise UnreadableSnapshotError("pickle nests too deeply", path=path) from exc
    except Exception as exc:  # any failure to rebuild data means the file is not a readable snapshot
        raise UnreadableSnapshotError(f"not a readable pickle ({type(exc).__name__}: {exc})", path=path) from exc


class FileFormat(StrEnum):
    PLAIN = "plain"
    SIGNED = "signed"


class SignatureStatus(StrEnum):
    VERIFIED = "verified"
    NOT_VERIFIED = "signature not verified"
    UNSIGNED = "unsigned"


@dataclass(frozen=True)
class SessionPayload:
    """The pickle bytes of a session file after its format was recognised (and its HMAC checked)."""

    body: memoryview
    file_format: FileFormat
    signature: SignatureStatus


def signing_key_digest(signing_key: str | bytes) -> bytes:
    """rdagent 1.0 keys its HMAC with ``sha256(ARTIFACT_SIGNING_KEY)``."""
    raw = signing_key.encode() if isinstance(signing_key, str) else signing_key
    return hashlib.sha256(raw).digest()


def parse_session_bytes(data: bytes, *, signing_key: str | bytes | None, path: str | None) -> SessionPayload:
    """Recognise plain vs signed files; verify the HMAC when a key is configured, refuse a mismatch."""
    if not data:
        raise UnreadableSnapshotError("empty file", path=path)
    view = memoryview(data)
    if not data.startswith(SIGNED_MAGIC):
        return SessionPayload(view, FileFormat.PLAIN, SignatureStatus.UNSIGNED)
    if len(data) <= SIGNED_HEADER_LEN:
        raise UnreadableSnapshotError("signed file truncated inside its header", path=path)
    mac, body = view[len(SIGNED_MAGIC) : SIGNED_HEADER_LEN], view[SIGNED_HEADER_LEN:]
    if signing_key is None:
        return SessionPayload(body, FileFormat.SIGNED, SignatureStatus.NOT_VERIFIED)
    expected = hmac.new(signing_key_digest(signing_key), body, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, bytes(mac)):
        raise SignatureMismatchError("HMAC-SHA256 does not match the configured signing key", path=path)
    return SessionPayload(body, FileFormat.SIGNED, SignatureStatus.VERIFIED)


@dataclass(frozen=True)
class LoadedSession:
    obj: Any
    file_format: FileFormat
    signature: SignatureStatus
    size: int


def load_session_file(
    path: Path, *, signing_key: str | bytes | None = None, display: str | None = None
) -> LoadedSession:
    """Read one session file (opened read-only, never written) and unpickle it safely."""
    shown = display or str(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise UnreadableSnapshotError(f"cannot read file ({exc.strerror or exc})", path=shown) from exc
    payload = parse_session_bytes(data, signing_key=signing_key, path=shown)
    obj = safe_loads(payload.body, path=shown)
    return LoadedSession(obj, payload.file_format, payload.signature, len(data))
