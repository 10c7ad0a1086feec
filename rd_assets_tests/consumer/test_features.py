"""Features by name, the NaN policy and the per-date ranking, on small frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rd_assets.consumer.features import model_input
from rd_assets.consumer.nan_policy import nan_policy
from rd_assets.consumer.ranking import ranked
from rd_assets.core.contracts.artifact_models import ModelMeta
from rd_assets.core.contracts.consumer_models import NanPolicy
from rd_assets.core.errors import InvalidFeaturesError, MissingFeaturesError, ModelLoadError

ORDER = ["b", "a", "c"]
KEEP = NanPolicy(kind="keep", source="test")
FILL = NanPolicy(kind="fill", fill_value=-1.0, source="test")


def frame(columns: list[str], rows: int = 4) -> pd.DataFrame:
    index = pd.MultiIndex.from_product(
        [pd.to_datetime(["2024-01-02", "2024-01-03"]), [f"I{i}" for i in range(rows // 2)]],
        names=["datetime", "instrument"],
    )
    return pd.DataFrame({c: np.arange(rows, dtype=float) + 10 * k for k, c in enumerate(columns)}, index=index)


def test_columns_are_taken_by_name_and_extras_listed() -> None:
    taken = model_input(frame(["c", "x", "a", "b"]), ORDER, KEEP)
    expected = frame(["c", "x", "a", "b"])[ORDER].to_numpy()
    assert np.array_equal(taken.matrix, expected) and taken.ignored_columns == ["x"]


def test_other_row_and_column_shapes() -> None:
    base = frame(ORDER)
    swapped = base.reorder_levels(["instrument", "datetime"])
    assert np.array_equal(model_input(swapped, ORDER, KEEP).matrix, model_input(base, ORDER, KEEP).matrix)
    flat = base.reset_index()
    assert model_input(flat, ORDER, KEEP).index.names == ["datetime", "instrument"]
    qlib = base.copy()
    qlib.columns = pd.MultiIndex.from_tuples([("feature", c) for c in ORDER])
    assert np.array_equal(model_input(qlib, ORDER, KEEP).matrix, base.to_numpy())


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (frame(["a", "b", "c"]).rename(columns={"c": "a"}), "columns named twice"),
        (pd.concat([frame(ORDER), frame(ORDER)]), "duplicate (datetime, instrument)"),
        (frame(ORDER).assign(a="text"), "not numbers: a"),
        (frame(ORDER).assign(c=np.inf), "infinite values in: c"),
        (frame(ORDER).reset_index(drop=True), "indexed by (datetime, instrument)"),
    ],
)
def test_frames_that_cannot_be_scored(features: pd.DataFrame, message: str) -> None:
    with pytest.raises(InvalidFeaturesError) as raised:
        model_input(features, ORDER, KEEP)
    assert message in raised.value.message


def test_missing_names_in_training_order_nothing_padded() -> None:
    with pytest.raises(MissingFeaturesError) as raised:
        model_input(frame(["a"]), ORDER, KEEP)
    assert raised.value.missing == ["b", "c"]


def test_nan_policy_fill_and_keep() -> None:
    features = frame(ORDER)
    features.iloc[1, 2] = np.nan
    assert np.isnan(model_input(features, ORDER, KEEP).matrix[1, 2])
    assert model_input(features, ORDER, FILL).matrix[1, 2] == -1.0


def test_nan_policy_from_the_config() -> None:
    def meta(processors: list | None) -> ModelMeta:
        return ModelMeta(task_id="t", config_name="conf.yaml", infer_processors=processors)

    norm = {"class": "RobustZScoreNorm", "kwargs": {"fields_group": "feature"}}
    policy = nan_policy(meta([norm, {"class": "qlib.data.dataset.processor.Fillna", "kwargs": {"fill_value": 2}}]))
    assert policy.kind == "fill" and policy.fill_value == 2.0 and "RobustZScoreNorm" in policy.processors_not_applied[0]
    assert nan_policy(meta([{"class": "Fillna", "kwargs": {"fields_group": "label"}}])).kind == "keep"
    assert nan_policy(meta(None)).kind == "keep"
    with pytest.raises(ModelLoadError, match="not a number"):
        nan_policy(meta([{"class": "Fillna", "kwargs": {"fill_value": "{{ fill }}"}}]))


def test_ranking_per_date() -> None:
    index = pd.MultiIndex.from_product(
        [pd.to_datetime(["2024-01-02", "2024-01-03"]), ["B", "A", "C"]], names=["datetime", "instrument"]
    )
    scores = np.array([0.5, 0.5, np.nan, 0.1, 0.9, 0.3])
    out = ranked(index, scores).reset_index()
    first = out[out["datetime"] == "2024-01-02"]
    assert list(first["instrument"]) == ["A", "B", "C"] and list(first["rank"].astype("object")) == [1, 2, pd.NA]
    top = ranked(index, scores, top_k=1, date="2024-01-03").reset_index()
    assert list(top["instrument"]) == ["A"] and list(top["rank"]) == [1]
    with pytest.raises(InvalidFeaturesError, match="no rows for the date"):
        ranked(index, scores, date="2024-02-01")
