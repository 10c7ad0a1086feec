"""Turn a pickled ``pandas.Series`` of qlib metrics into a plain dict without importing pandas' pickles.

The Series arrives as inert stand-ins (``Series`` -> ``SingleBlockManager`` -> ``_new_Index``) around real
numpy arrays, so the layout pandas wrote is read structurally: pandas 2.x stores index labels as an object
ndarray; pandas >= 3 stores them as a string extension array (an Arrow ``large_string`` array rebuilt from
its raw buffers by ``pyarrow.lib._restore_array``, or a numpy-backed ``StringArray``), decoded here from
those buffers without importing pyarrow's pickle machinery. Anything unexpected degrades to
"metrics unavailable" with the reason: metrics are informative, never a reason to fail a task.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rd_assets.unpickler import StandIn, class_name

MetricValue = float | int | str | None


_ARROW_OFFSET_WIDTH = {"string": 4, "utf8": 4, "large_string": 8, "large_utf8": 8}


def _buffer_bytes(buffer: Any) -> bytes | None:
    """Bytes of a pickled ``pyarrow.lib.py_buffer(bytearray)`` (``None`` stays ``None``)."""
    if buffer is None:
        return None
    args = buffer.__dict__.get("_rd_args", ()) if isinstance(buffer, StandIn) else ()
    if class_name(buffer) != "py_buffer" or len(args) != 1 or not isinstance(args[0], bytes | bytearray):
        raise ValueError(f"unrecognised Arrow buffer {class_name(buffer) or type(buffer).__name__}")
    return bytes(args[0])


def _arrow_strings(array: Any) -> list[str | None]:
    """Decode ``pyarrow.lib._restore_array((type, length, null_count, offset, buffers, children, dict))``."""
    args = array.__dict__.get("_rd_args", ()) if isinstance(array, StandIn) else ()
    if class_name(array) != "_restore_array" or len(args) != 1 or not isinstance(args[0], tuple) or len(args[0]) < 5:
        raise ValueError(f"unrecognised Arrow array {class_name(array) or type(array).__name__}")
    arrow_type, length, _null_count, offset, buffers = args[0][:5]
    type_args = arrow_type.__dict__.get("_rd_args", ()) if isinstance(arrow_type, StandIn) else ()
    alias = type_args[0] if len(type_args) == 1 else None
    if alias not in _ARROW_OFFSET_WIDTH or not isinstance(buffers, list) or len(buffers) != 3:
        raise ValueError(f"Arrow index of type {alias!r} is not a string array")
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
    if isinstance(data, StandIn):
        raise ValueError(f"unrecognised index array {class_name(data)}")
    return list(np.asarray(data).tolist())


def _index_labels(index: Any) -> list[Any]:
    """Labels of a pickled pandas Index (``_new_Index(cls, {"data": ...})`` or a RangeIndex dict)."""
    if isinstance(index, StandIn):
        args = index.__dict__.get("_rd_args", ())
        payload = args[1] if len(args) >= 2 and isinstance(args[1], dict) else index.__dict__
        if "data" in payload:
            return _array_labels(payload["data"])
        if {"start", "stop"} <= payload.keys():
            return list(range(payload["start"], payload["stop"], payload.get("step", 1) or 1))
    if isinstance(index, np.ndarray | list | tuple):
        return list(np.asarray(index).tolist())
    raise ValueError(f"unrecognised index {type(index).__name__}")


def _plain(value: Any) -> MetricValue:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, int | float | str) or value is None:
        return value
    return str(value)


def _series_items(series: StandIn) -> dict[str, MetricValue]:
    mgr = series.__dict__.get("_mgr") or series.__dict__.get("_data")
    state = mgr.__dict__.get("_rd_state") if isinstance(mgr, StandIn) else None
    if not (isinstance(state, tuple) and len(state) >= 2):
        raise ValueError("Series block manager has no (axes, blocks) state")
    axes, blocks = state[0], state[1]
    labels = _index_labels(axes[0])
    values = np.asarray(blocks[0]).reshape(-1).tolist()
    if len(labels) != len(values):
        raise ValueError(f"{len(labels)} index labels for {len(values)} values")
    return {str(label): _plain(v) for label, v in zip(labels, values, strict=True)}


def metrics_dict(result: Any) -> tuple[dict[str, MetricValue] | None, str | None]:
    """``(metrics, None)`` or ``(None, reason)`` for an experiment's ``result``; never raises."""
    if result is None:
        return None, "no result recorded (the backtest did not run or failed)"
    if isinstance(result, dict):
        return {str(k): _plain(v) for k, v in result.items()}, None
    try:
        kind = class_name(result)
        if kind == "Series":
            return _series_items(result), None
        if kind == "DataFrame":
            return None, "metrics stored as a DataFrame, not a Series of named metrics"
        return None, f"unsupported metrics object {kind or type(result).__name__}"
    except Exception as exc:  # a malformed pickled Series must only cost us the metrics
        return None, f"metrics unavailable: {type(exc).__name__}: {exc}"
