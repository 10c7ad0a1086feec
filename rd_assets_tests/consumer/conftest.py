"""Fixtures of the consumer tests: the three sample bundles (real pipeline) and one synthetic ``daily_pv.h5``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from rd_assets_tests.consumer_testkit import build_sample_store, write_daily_pv


@pytest.fixture(scope="session")
def sample_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_sample_store(tmp_path_factory.mktemp("consumer-store"))


@pytest.fixture(scope="session")
def market(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    path = tmp_path_factory.mktemp("market") / "daily_pv.h5"
    return path, write_daily_pv(path)
