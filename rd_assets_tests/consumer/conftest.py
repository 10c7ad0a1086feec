"""Fixtures of the consumer tests: the three sample bundles (real pipeline) and one synthetic ``daily_pv.h5``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from rd_assets.consumer import compute_factors, load_bundle
from rd_assets_tests.conftest import SAMPLE_TASKS
from rd_assets_tests.consumer_testkit import build_sample_store, write_daily_pv


@pytest.fixture(scope="session")
def sample_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_sample_store(tmp_path_factory.mktemp("consumer-store"))


@pytest.fixture(scope="session")
def market(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    path = tmp_path_factory.mktemp("market") / "daily_pv.h5"
    return path, write_daily_pv(path)


@pytest.fixture(scope="session")
def computed(sample_store: Path, market: tuple[Path, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Every sample's factors, computed once in the sandbox with the default limits."""
    out = {}
    for task in SAMPLE_TASKS:
        result = compute_factors(load_bundle(sample_store / task), market[0])
        assert result.report.ok, result.report.factors
        out[task] = result.frame
    return out
