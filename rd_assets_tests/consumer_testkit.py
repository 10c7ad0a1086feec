"""Helpers shared by the client and consumer tests: sample bundles built by the real pipeline, market data as
RD-Agent's factor code reads it, and bundles with one file replaced (still valid, so only behaviour can object).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rd_assets.core.bundle.store import current_version_dir, publish_bundle
from rd_assets_tests.bundle_testkit import extract_sample, rehashed, tree_bytes
from rd_assets_tests.conftest import SAMPLE_TASKS

QLIB_COLUMNS = ("$open", "$close", "$high", "$low", "$volume")


def build_sample_store(store: Path) -> Path:
    """Every genuine sample extracted and published into ``store`` (what `rd-assets extract` does)."""
    for task in SAMPLE_TASKS:
        extract_sample(task, store)
    return store


def write_daily_pv(path: Path, *, instruments: int = 8, days: int = 100, seed: int = 7) -> pd.DataFrame:
    """A qlib-style ``daily_pv.h5``: ``$open/$close/$high/$low/$volume`` under the key ``data``, rows indexed by
    (datetime, instrument), sorted by date then instrument as qlib dumps it; long enough for 60-day windows."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2023-01-02", periods=days, name="datetime")
    codes = [f"SH6000{i:02d}" for i in range(instruments)]
    index = pd.MultiIndex.from_product([dates, codes], names=["datetime", "instrument"])
    steps = rng.normal(0.0, 0.02, size=(days, instruments))
    close = (20.0 * np.exp(np.cumsum(steps, axis=0))).reshape(-1)
    open_ = close * (1 + rng.normal(0, 0.005, close.size))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.02, close.size))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.02, close.size))
    volume = rng.uniform(1e5, 5e6, close.size)
    frame = pd.DataFrame(dict(zip(QLIB_COLUMNS, (open_, close, high, low, volume), strict=True)), index=index)
    frame.to_hdf(path, key="data", mode="w")
    return frame


def republish_with(store: Path, task_id: str, replace: dict[str, bytes], *, into: Path) -> Path:
    """Publish into ``into`` the current bundle of ``task_id`` with some files replaced, the manifest rehashed."""
    version = current_version_dir(store, task_id)
    assert version is not None
    files = {**tree_bytes(version), **replace}
    publish_bundle(into, rehashed(files))
    return into / task_id
