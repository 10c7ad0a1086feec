"""Restricted unpickling of RD-Agent session files: nothing in a pickle can import, execute or touch files.

Policy (what ``find_class`` answers for a global ``module.name``):

* **Allowed**: an exact ``(module, name)`` entry of :mod:`~rd_assets.core.session.allow_list`. Only immutable
  builtin types (``dict``, ``list``, ``int``, ``datetime`` ...) are handed out as themselves; every other entry
  is a :mod:`~rd_assets.core.session.guards` callable that validates its arguments and cannot be re-configured
  by the pickle (``BUILD`` on it is refused, it has no ``__dict__``). numpy arrays are rebuilt only through guards that
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
  :class:`~rd_assets.core.session.standins.StandIn` subclass. It is never imported; calling it only records
  the arguments; its state lands in ``__dict__``. State that would plant ``__setstate__`` is refused, and the
  other hooks pickle looks up on instances (``append``, ``extend``, ``add``) are data descriptors, so no
  planted ``__dict__`` entry can redirect a later opcode to a callable of the pickle's choosing.

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
import contextlib
import gc
import pickle
from collections.abc import Iterator
from typing import Any

from rd_assets.core.errors import UnreadableSnapshotError, UnsafePickleError
from rd_assets.core.session.allow_list import ALLOWED_GLOBALS, INERT_NUMPY_GLOBALS, refusal
from rd_assets.core.session.standins import StandIn, standin_class

MAX_GLOBALS_PER_FILE = 4096
"""Distinct globals one file may name; genuine snapshots name a few hundred, each is a class object in memory."""


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
        why = refusal(module, name)
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
        return standin_class(module, name)


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
