"""Metrics: a pickled ``pandas.Series`` (any pandas layout) -> plain dict via the restricted unpickler, or a reason."""

from __future__ import annotations

import math
import pickle
from typing import Any

import numpy as np
import pandas as pd
import pytest

from rd_assets.core.session.file_format import load_session_file
from rd_assets.core.session.unpickler import safe_loads
from rd_assets.core.trace.experiments import attr
from rd_assets.core.trace.metrics import metrics_dict
from rd_assets_tests.conftest import PLAIN_TASK, SAMPLE_LOGS, expected_for

QLIB_METRICS = {
    "IC": 0.0309,
    "ICIR": 0.2752,
    "Rank IC": 0.0339,
    "1day.excess_return_with_cost.annualized_return": 0.1026,
    "1day.excess_return_with_cost.max_drawdown": -0.0856,
    "1day.ffr": 1.0,
}


def decoded(obj: Any, protocol: int = 4) -> tuple[dict[str, Any] | None, str | None]:
    """Pickle with the real library, read back with the restricted unpickler, decode."""
    return metrics_dict(safe_loads(pickle.dumps(obj, protocol=protocol)))


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("index_dtype", ["str", "object", "string[python]", "string[pyarrow]"])
def test_series_of_current_pandas(protocol: int, index_dtype: str) -> None:
    series = pd.Series(list(QLIB_METRICS.values()), index=pd.Index(list(QLIB_METRICS), dtype=index_dtype))
    assert decoded(series, protocol) == (QLIB_METRICS, None)


def test_sliced_series_keeps_the_right_labels() -> None:
    """Arrow arrays carry an offset into shared buffers; a slice must not shift labels."""
    series = pd.Series(QLIB_METRICS)
    part = series.iloc[2:5]
    assert decoded(part) == (dict(list(QLIB_METRICS.items())[2:5]), None)
    assert decoded(series.loc[["ICIR", "IC"]]) == ({"ICIR": 0.2752, "IC": 0.0309}, None)


def test_unicode_labels_and_non_finite_values() -> None:
    series = pd.Series({"收益": 1.5, "nan": float("nan"), "inf": float("inf"), "zero": 0.0})
    metrics, reason = decoded(series)
    assert reason is None
    assert metrics == {"收益": 1.5, "nan": None, "inf": None, "zero": 0.0}


def test_integer_and_range_index() -> None:
    assert decoded(pd.Series([0.1, 0.2])) == ({"0": 0.1, "1": 0.2}, None)
    assert decoded(pd.Series([0.1, 0.2], index=[10, 20])) == ({"10": 0.1, "20": 0.2}, None)


def test_numpy_scalars_become_plain_python() -> None:
    metrics, _ = decoded(pd.Series({"n": np.int64(3), "x": np.float32(0.5)}, dtype="float64"))
    assert metrics == {"n": 3.0, "x": 0.5}
    assert all(type(v) is float for v in metrics.values())


def test_sample_series_written_by_pandas_2() -> None:
    """The genuine sample's Series (pandas 2.3.3, object index) decodes to finite floats with qlib names."""
    exp = expected_for(PLAIN_TASK)
    loop = load_session_file(SAMPLE_LOGS / PLAIN_TASK / exp["chosen_snapshot_relpath"]).obj
    anchor = attr(loop, "trace").hist[exp["last_sota_factor_index"]][0]
    metrics, reason = metrics_dict(attr(attr(anchor, "running_info"), "result"))
    assert reason is None and metrics is not None
    assert {"IC", "ICIR", "1day.excess_return_with_cost.annualized_return"} <= metrics.keys()
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())


def test_plain_dict_result_passes_through() -> None:
    assert metrics_dict({"IC": np.float64(0.1), "ok": True}) == ({"IC": 0.1, "ok": 1}, None)


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        (None, "no result recorded"),
        (pd.DataFrame({"IC": [0.1]}), "DataFrame"),
        (pd.Index(["IC"]), "unsupported metrics object"),
        (np.array([0.1, 0.2]), "unsupported metrics object"),
    ],
    ids=["none", "dataframe", "index", "ndarray"],
)
def test_not_a_series_gives_a_reason(obj: Any, reason: str) -> None:
    metrics, why = decoded(obj) if obj is not None else metrics_dict(None)
    assert metrics is None
    assert why is not None and reason in why


def test_broken_series_states_give_a_reason() -> None:
    """Hand-damaged pickles of a real Series: the metrics are lost with a reason, nothing raises."""
    series = pd.Series(QLIB_METRICS)
    good = safe_loads(pickle.dumps(series, protocol=4))
    manager = good.__dict__["_mgr"]
    manager.__dict__["_rd_state"] = ("not", "axes and blocks")
    metrics, why = metrics_dict(good)
    assert metrics is None and why is not None and why.startswith("metrics unavailable")

    short = safe_loads(pickle.dumps(series, protocol=4))
    axes, _blocks, *rest = short.__dict__["_mgr"].__dict__["_rd_state"]
    short.__dict__["_mgr"].__dict__["_rd_state"] = (axes, [np.array([1.0])], *rest)
    metrics, why = metrics_dict(short)
    assert metrics is None and why is not None and "index labels for 1 values" in why
