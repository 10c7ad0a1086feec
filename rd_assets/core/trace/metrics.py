"""Turn a pickled ``pandas.Series`` of qlib metrics into a plain dict without importing pandas' pickles.

The Series arrives as inert stand-ins (``Series`` -> ``SingleBlockManager`` -> ``_new_Index``) around real
numpy arrays, so the layout pandas wrote is read structurally: pandas 2.x stores index labels as an object
ndarray; pandas >= 3 stores them as a string extension array (an Arrow ``large_string`` array rebuilt from
its raw buffers by ``pyarrow.lib._restore_array``, or a numpy-backed ``StringArray``), decoded here from
those buffers without importing pyarrow's pickle machinery. Anything unexpected degrades to
"metrics unavailable" with the reason: metrics are informative, never a reason to fail a task.

Every value taken from a session into a document passes :func:`plain_text`, :func:`plain_scalar` or
:func:`json_data` (shared with :mod:`rd_assets.core.trace.experiments` for factor ``variables``): they never raise
and never recurse without bound, and what a contract cannot hold becomes marker text such as ``<stand-in a.B>``.
"""

from __future__ import annotations

import datetime
import decimal
import math
import uuid
from pathlib import PurePath
from typing import Any

import numpy as np

from rd_assets.core.contracts.models import MAX_JSON_DEPTH, int_fits_json
from rd_assets.core.session.standins import StandIn, class_name, class_path
from rd_assets.core.text_safety import escape_surrogates

MetricValue = float | int | str | None
JsonData = None | bool | int | float | str | list["JsonData"] | dict[str, "JsonData"]

MAX_TEXT_CHARS = 1 << 16
"""Longest informational text kept from a session (descriptions, labels); longer text is cut with a marker."""

MAX_COPIED_VALUES = 10_000
"""Most values copied out of one unpickled container (a factor's ``variables``); the rest become a marker."""

_PRINTABLE_SCALARS = (
    decimal.Decimal | complex | datetime.date | datetime.time | datetime.timedelta | uuid.UUID | PurePath
)
"""Leaf types the unpickler can rebuild whose ``str()`` is bounded and cannot fail: kept as their text."""

_ARROW_OFFSET_WIDTH = {"string": 4, "utf8": 4, "large_string": 8, "large_utf8": 8}


def plain_text(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """``text`` a document can hold: surrogates escaped, cut after ``limit`` characters with a visible marker."""
    if len(text) > limit:
        text = f"{text[:limit]}...<cut: {len(text) - limit} more characters>"
    return escape_surrogates(text)


def describe(value: Any) -> str:
    """Short, always printable name of what ``value`` is (for markers and error messages)."""
    path = class_path(value)
    if path is not None:
        return f"stand-in {plain_text(path, 200)}"
    return type(value).__name__


def _marker(value: Any) -> str:
    return f"<{describe(value)}>"


def plain_scalar(value: Any) -> MetricValue | bool:
    """A leaf as a JSON scalar: numpy scalars unwrapped, non-finite floats ``None``, anything else marker text."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if int_fits_json(value) else f"<int of {value.bit_length()} bits>"
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return plain_text(value)
    if isinstance(value, _PRINTABLE_SCALARS):
        return plain_text(str(value))
    return _marker(value)


def key_text(key: Any) -> str:
    """A dict key or index label as text: ``str()`` of text and printable scalars, marker text for the rest."""
    if isinstance(key, np.generic):
        key = key.item()
    if (
        key is None
        or isinstance(key, str | float | _PRINTABLE_SCALARS)
        or (isinstance(key, int) and int_fits_json(key))
    ):
        return plain_text(str(key))
    return str(plain_scalar(key))  # marker text: an over-long int, a container, a stand-in ...


def json_data(value: Any, *, limit: int = MAX_COPIED_VALUES) -> JsonData:
    """A JSON-able copy of unpickled data (lists, tuples, dicts, scalars) that any contract accepts.

    Bounded twice: containers deeper than :data:`MAX_JSON_DEPTH` and everything after the first ``limit``
    values become marker text, so neither deep nesting (``RecursionError``) nor one list shared many times
    over (exponential in the depth when copied) costs more than a bounded walk.
    """
    left = [limit]
    cut = f"<cut: more than {limit} values>"

    def copy(item: Any, depth: int) -> JsonData:
        if not isinstance(item, list | tuple | dict):
            return plain_scalar(item)
        if depth >= MAX_JSON_DEPTH:
            return f"<{type(item).__name__} nested deeper than {MAX_JSON_DEPTH} levels>"
        pairs: list[tuple[Any, JsonData]] = []
        for key, child in item.items() if isinstance(item, dict) else enumerate(item):
            if left[0] <= 0:
                pairs.append(("<cut>", cut))
                break
            left[0] -= 1
            pairs.append((key, copy(child, depth + 1)))
        return {key_text(k): v for k, v in pairs} if isinstance(item, dict) else [v for _, v in pairs]

    return copy(value, 0)


def metric_value(value: Any) -> MetricValue:
    """One metric: a JSON scalar (booleans count as 0/1, as pandas sums them)."""
    scalar = plain_scalar(value)
    return int(scalar) if isinstance(scalar, bool) else scalar


def _buffer_bytes(buffer: Any) -> bytes | None:
    """Bytes of a pickled ``pyarrow.lib.py_buffer(bytearray)`` (``None`` stays ``None``)."""
    if buffer is None:
        return None
    args = buffer.__dict__.get("_rd_args", ()) if isinstance(buffer, StandIn) else ()
    if class_name(buffer) != "py_buffer" or len(args) != 1 or not isinstance(args[0], bytes | bytearray):
        raise ValueError(f"unrecognised Arrow buffer {describe(buffer)}")
    return bytes(args[0])


def _arrow_strings(array: Any) -> list[str | None]:
    """Decode ``pyarrow.lib._restore_array((type, length, null_count, offset, buffers, children, dict))``."""
    args = array.__dict__.get("_rd_args", ()) if isinstance(array, StandIn) else ()
    if class_name(array) != "_restore_array" or len(args) != 1 or not isinstance(args[0], tuple) or len(args[0]) < 5:
        raise ValueError(f"unrecognised Arrow array {describe(array)}")
    arrow_type, length, _null_count, offset, buffers = args[0][:5]
    type_args = arrow_type.__dict__.get("_rd_args", ()) if isinstance(arrow_type, StandIn) else ()
    alias = type_args[0] if len(type_args) == 1 else None
    if not isinstance(alias, str) or alias not in _ARROW_OFFSET_WIDTH or not isinstance(buffers, list):
        raise ValueError(f"Arrow index of type {key_text(alias)} is not a string array")
    if len(buffers) != 3 or not isinstance(length, int) or not isinstance(offset, int) or min(length, offset) < 0:
        raise ValueError("Arrow string array without (validity, offsets, data) buffers and a valid slice")
    validity, offsets_raw, data = (_buffer_bytes(b) for b in buffers)
    if offsets_raw is None:
        raise ValueError("Arrow string array without an offsets buffer")
    offsets = np.frombuffer(offsets_raw, dtype=f"<i{_ARROW_OFFSET_WIDTH[alias]}")[offset : offset + length + 1]
    if len(offsets) != length + 1:
        raise ValueError(f"Arrow offsets buffer too short for {length} labels")
    text = data or b""
    labels: list[str | None] = []
    for i in range(length):
        pos = offset + i
        if validity is not None and not (validity[pos // 8] >> (pos % 8)) & 1:
            labels.append(None)
        else:
            labels.append(text[offsets[i] : offsets[i + 1]].decode("utf-8"))
    return labels


def _array_labels(data: Any) -> list[Any]:
    """Labels held by a pickled Index's ``data``: an ndarray, or a pandas >= 3 string extension array."""
    kind = class_name(data)
    if kind == "ArrowStringArray":
        return _arrow_strings(data.__dict__.get("_pa_array"))
    if kind == "__pyx_unpickle_NDArrayBacked":  # numpy-backed StringArray: state is (dtype, ndarray[, attrs])
        state = data.__dict__.get("_rd_state")
        if isinstance(state, tuple) and len(state) in (2, 3) and isinstance(state[1], np.ndarray):
            return list(state[1].tolist())
    if isinstance(data, np.ndarray):
        return list(data.reshape(-1).tolist())
    if isinstance(data, list | tuple):  # flat labels; never np.asarray, which would expand a shared-list bomb
        return list(data)
    raise ValueError(f"unrecognised index array {describe(data)}")


def _index_labels(index: Any, count: int) -> list[Any]:
    """Labels of a pickled pandas Index (``_new_Index(cls, {"data": ...})`` or a RangeIndex dict).

    ``count`` is the number of values: a RangeIndex is only materialised when it has exactly that many labels.
    """
    if isinstance(index, StandIn):
        args = index.__dict__.get("_rd_args", ())
        payload = args[1] if len(args) >= 2 and isinstance(args[1], dict) else index.__dict__
        if "data" in payload:
            return _array_labels(payload["data"])
        if {"start", "stop"} <= payload.keys():
            labels = range(payload["start"], payload["stop"], payload.get("step", 1) or 1)
            if len(labels) != count:
                raise ValueError(f"{len(labels)} index labels for {count} values")
            return list(labels)
    if isinstance(index, np.ndarray | list | tuple):
        return _array_labels(index)
    raise ValueError(f"unrecognised index {describe(index)}")


def _series_items(series: StandIn) -> dict[str, MetricValue]:
    mgr = series.__dict__.get("_mgr") or series.__dict__.get("_data")
    state = mgr.__dict__.get("_rd_state") if isinstance(mgr, StandIn) else None
    if not (isinstance(state, tuple) and len(state) >= 2):
        raise ValueError("Series block manager has no (axes, blocks) state")
    axes, blocks = state[0], state[1]
    if not isinstance(blocks[0], np.ndarray):
        raise ValueError(f"Series values: expected an array, found {describe(blocks[0])}")
    values = blocks[0].reshape(-1).tolist()
    labels = _index_labels(axes[0], len(values))
    if len(labels) != len(values):
        raise ValueError(f"{len(labels)} index labels for {len(values)} values")
    return {key_text(label): metric_value(v) for label, v in zip(labels, values, strict=True)}


def metrics_dict(result: Any) -> tuple[dict[str, MetricValue] | None, str | None]:
    """``(metrics, None)`` or ``(None, reason)`` for an experiment's ``result``; never raises."""
    if result is None:
        return None, "no result recorded (the backtest did not run or failed)"
    if isinstance(result, dict):
        return {key_text(k): metric_value(v) for k, v in result.items()}, None
    try:
        kind = class_name(result)
        if kind == "Series":
            return _series_items(result), None
        if kind == "DataFrame":
            return None, "metrics stored as a DataFrame, not a Series of named metrics"
        return None, f"unsupported metrics object {describe(result)}"
    except Exception as exc:  # a malformed pickled Series must only cost us the metrics
        return None, f"metrics unavailable: {type(exc).__name__}: {_exception_text(exc)}"


def _exception_text(exc: Exception) -> str:
    """``str(exc)``, bounded; an exception whose arguments cannot be printed is named by its type alone."""
    try:
        return plain_text(str(exc), 1000)
    except Exception:  # str() of a hostile argument (an int past the digit limit, a deep container)
        return "(unprintable)"
