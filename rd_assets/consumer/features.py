"""Turn a feature frame into the model's input matrix by NAME, never by position.

LGBModel trained on ``.values``: the booster has no feature names, so a frame whose columns come in another order
scores silently wrong. Here the columns are looked up by name and put into ``model_input_order``; a missing name is
a :class:`MissingFeaturesError` listing every one (nothing is padded), extra columns are ignored and reported.

Accepted frames: rows indexed by (datetime, instrument) (a MultiIndex in either level order, or two columns of those
names), columns named by feature (plain names, or qlib's ``('feature', name)`` pairs as in
``combined_factors_df.parquet``), numbers that are finite or NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from rd_assets.core.contracts.consumer_models import NanPolicy
from rd_assets.core.errors import InvalidFeaturesError, MissingFeaturesError

INDEX_NAMES = ["datetime", "instrument"]
QLIB_FEATURE_GROUP = "feature"


@dataclass(frozen=True)
class ModelInput:
    matrix: np.ndarray
    """(rows, len(order)) float64, columns in ``model_input_order``, the NaN policy applied."""
    index: pd.MultiIndex
    ignored_columns: list[str]


def _rows(frame: pd.DataFrame) -> pd.DataFrame:
    index = frame.index
    if isinstance(index, pd.MultiIndex) and sorted(str(n) for n in index.names) == sorted(INDEX_NAMES):
        return frame if list(index.names) == INDEX_NAMES else frame.reorder_levels(INDEX_NAMES)
    if all(name in frame.columns for name in INDEX_NAMES):
        return frame.set_index(INDEX_NAMES)
    raise InvalidFeaturesError(f"rows must be indexed by (datetime, instrument); the index is {list(index.names)}")


def _named_columns(frame: pd.DataFrame) -> pd.DataFrame:
    columns = frame.columns
    if isinstance(columns, pd.MultiIndex):
        if columns.nlevels != 2 or set(columns.get_level_values(0)) != {QLIB_FEATURE_GROUP}:
            raise InvalidFeaturesError("multi-level columns must be qlib's ('feature', name) pairs")
        frame = frame.droplevel(0, axis=1)
    odd = [repr(c) for c in frame.columns if not isinstance(c, str)]
    if odd:
        raise InvalidFeaturesError(f"column names must be text: {', '.join(odd[:10])}")
    duplicated = sorted(set(frame.columns[frame.columns.duplicated()]))
    if duplicated:
        raise InvalidFeaturesError(f"columns named twice (which one is meant?): {', '.join(duplicated)}")
    return frame


def model_input(frame: pd.DataFrame, order: list[str], policy: NanPolicy) -> ModelInput:
    """The matrix in ``order`` with the NaN policy applied; typed errors for anything that cannot be scored."""
    if not isinstance(frame, pd.DataFrame):
        raise InvalidFeaturesError(f"features must be a DataFrame, not {type(frame).__name__}")
    frame = _named_columns(_rows(frame))
    if frame.index.has_duplicates:
        raise InvalidFeaturesError(f"{int(frame.index.duplicated().sum())} duplicate (datetime, instrument) row(s)")
    present = set(frame.columns)
    missing = [name for name in order if name not in present]
    if missing:
        raise MissingFeaturesError(missing)
    wanted = set(order)
    ignored = [str(c) for c in frame.columns if c not in wanted]
    selected = frame[order]
    not_numbers = [c for c in order if not pd.api.types.is_numeric_dtype(selected[c])]
    if not_numbers:
        raise InvalidFeaturesError(f"columns that are not numbers: {', '.join(not_numbers)}")
    matrix = selected.to_numpy(dtype="float64", na_value=np.nan)
    infinite = [order[j] for j in np.flatnonzero(np.isinf(matrix).any(axis=0))]
    if infinite:
        raise InvalidFeaturesError(f"infinite values in: {', '.join(infinite)}")
    if policy.kind == "fill" and policy.fill_value is not None:
        matrix = np.where(np.isnan(matrix), policy.fill_value, matrix)
    return ModelInput(matrix=matrix, index=selected.index, ignored_columns=ignored)
