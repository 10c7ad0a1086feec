"""Turn a pickled ``pandas.Series`` of qlib metrics into a plain dict without importing pandas' pickles.

The Series arrives as inert stand-ins (``Series`` -> ``SingleBlockManager`` -> ``_new_Index``) around real
numpy arrays, so the layout pandas 2.x wrote is read structurally. Anything unexpected degrades to
"metrics unavailable" with the reason: metrics are informative, never a reason to fail a task.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rd_assets.unpickler import StandIn, class_name

MetricValue = float | int | str | None


def _index_labels(index: Any) -> list[Any]:
    """Labels of a pickled pandas Index (``_new_Index(cls, {"data": ...})`` or a RangeIndex dict)."""
    if isinstance(index, StandIn):
        args = index.__dict__.get("_rd_args", ())
        payload = args[1] if len(args) >= 2 and isinstance(args[1], dict) else index.__dict__
        if "data" in payload:
            return list(np.asarray(payload["data"]).tolist())
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
