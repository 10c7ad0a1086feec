"""numpy guards: arrays, dtypes and scalars rebuilt only from re-validated public descriptions.

A pickled dtype state can forge flags and offsets, and numpy's own ``__setstate__`` reads past a short object
list or a forged dtype (a memory-safety hole, not just a wrong value), so every dtype is rebuilt by numpy's
validating constructor and every payload length is checked against its shape before numpy sees it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rd_assets.core.errors import UnsafePickleError
from rd_assets.core.session.guards import Guard, unguard

MAX_DTYPE_DEPTH = 8


def checked_shape(value: Any, who: str) -> tuple[int, ...]:
    if not (isinstance(value, tuple) and len(value) <= 32 and all(type(n) is int and n >= 0 for n in value)):
        raise UnsafePickleError(who, why="shape is not a tuple of non-negative ints")
    return value


def sanitize_dtype(value: Any, depth: int = 0) -> np.dtype[Any]:
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
                spec["formats"].append(sanitize_dtype(field[0], depth + 1))
                spec["offsets"].append(int(field[1]))
                spec["titles"].append(field[2] if len(field) > 2 else None)
            spec["itemsize"] = value.itemsize
            rebuilt = np.dtype(spec)
        elif value.subdtype is not None:
            base, shape = value.subdtype
            rebuilt = np.dtype((sanitize_dtype(base, depth + 1), checked_shape(shape, who)))
        else:
            rebuilt = np.dtype(value.str)
    except UnsafePickleError:
        raise
    except Exception as exc:  # numpy refused the description: the pickled state was forged or corrupt
        raise UnsafePickleError(who, why=f"inconsistent dtype state ({type(exc).__name__}: {exc})") from exc
    if rebuilt.itemsize != value.itemsize:
        raise UnsafePickleError(who, why=f"item size {value.itemsize} does not match its fields")
    return rebuilt


def safe_dtype(spec: Any, align: Any = False, copy: Any = True) -> np.dtype[Any]:
    """``numpy.dtype('f8', False, True)`` as numpy pickles it; always a copy, never a shared singleton."""
    if not isinstance(spec, str) or not isinstance(align, bool):
        raise UnsafePickleError("numpy.dtype", why="only a typecode string")
    try:
        return np.dtype(spec, align=align, copy=True)
    except (TypeError, ValueError) as exc:
        raise UnsafePickleError("numpy.dtype", why=f"bad typecode {spec!r}") from exc


class PickledArray(np.ndarray):
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
        shape = checked_shape(shape, who)
        dtype = sanitize_dtype(dtype)
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


NDARRAY = Guard("numpy.ndarray", _forbid_ndarray_call, target=np.ndarray)


def safe_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """numpy's ``_reconstruct(ndarray, (0,), b'b')``: an empty plain array that ``BUILD`` then fills.

    This is the one numpy call that allocates from nothing, so its size (items x item size, which a
    typecode such as ``'(40000,40000)u1'`` can inflate) is capped.
    """
    who = "numpy._core.multiarray._reconstruct"
    if unguard(subtype) is not np.ndarray:
        raise UnsafePickleError(who, why="only plain numpy.ndarray")
    shape = checked_shape(shape if isinstance(shape, tuple) else (shape,), who)
    dt = sanitize_dtype(dtype)
    if math.prod(shape) != 0:  # numpy pickles (0,); BUILD fills it once (see PickledArray.__setstate__)
        raise UnsafePickleError(who, why=f"initial shape {shape} is not empty")
    return np.ndarray.__new__(PickledArray, shape, dt)


def safe_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any, axis_order: Any = None) -> np.ndarray:
    """Protocol-5 arrays: a view of bytes the pickle carried (never of objects), reshaped, maybe transposed."""
    who = "numpy._core.numeric._frombuffer"
    dt = sanitize_dtype(dtype)
    shape = checked_shape(shape, who)
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
    return array.view(PickledArray)


def safe_scalar(dtype: Any, data: Any = None) -> Any:
    """``numpy.core.multiarray.scalar(dtype, bytes)``: numpy checks the length once the dtype is sane."""
    dt = sanitize_dtype(dtype)
    if dt.hasobject and dt != np.dtype(object):
        raise UnsafePickleError("numpy._core.multiarray.scalar", why="structured scalar holding objects")
    return np._core.multiarray.scalar(dt, data) if data is not None else np._core.multiarray.scalar(dt)
