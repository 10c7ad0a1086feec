"""Per-date ranking of scores: what a stock selection takes from a model's predictions.

Within each date the highest score gets rank 1; ties go to the instrument that sorts first, so the ranking is
deterministic. A NaN score (possible only for a torch network under the ``keep`` NaN policy) is listed last, without
a rank, and never counts toward ``top_k``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rd_assets.core.errors import InvalidFeaturesError


def ranked(
    index: pd.MultiIndex, scores: np.ndarray, *, top_k: int | None = None, date: str | None = None
) -> pd.DataFrame:
    """Columns ``score`` and ``rank`` (nullable int), indexed by (datetime, instrument), by date then rank."""
    if top_k is not None and top_k < 1:
        raise InvalidFeaturesError(f"top_k must be at least 1, not {top_k}")
    frame = pd.DataFrame({"score": scores}, index=index)
    if date is not None:
        frame = frame[frame.index.get_level_values(0) == _timestamp(date, frame.index)]
        if frame.empty:
            raise InvalidFeaturesError(f"no rows for the date {date}")
    flat = frame.reset_index()
    flat["_unscored"] = flat["score"].isna()
    flat = flat.sort_values(
        ["datetime", "_unscored", "score", "instrument"], ascending=[True, True, False, True], kind="mergesort"
    )
    flat["rank"] = flat.groupby("datetime", sort=False).cumcount() + 1
    flat["rank"] = flat["rank"].astype("Int64").mask(flat["_unscored"])
    if top_k is not None:
        flat = flat[flat["rank"].notna() & (flat["rank"] <= top_k)]
    return flat.drop(columns="_unscored").set_index(["datetime", "instrument"])


def _timestamp(date: str, index: pd.MultiIndex) -> object:
    """``date`` as a value of the datetime level (a Timestamp when the level holds dates)."""
    level = index.get_level_values(0)
    if pd.api.types.is_datetime64_any_dtype(level):
        try:
            return pd.Timestamp(date)
        except ValueError:
            raise InvalidFeaturesError(f"not a date: {date!r}") from None
    return date
