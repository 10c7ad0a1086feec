"""One real ``dg dev`` for the tests of this package that drive it end to end (started once: it takes ~30 s).

Its log root holds copies of the three genuine samples and one broken task whose session has no accepted factor
experiment, so both what goes green and how a typed failure is shown can be seen. Opt out with
``RD_ASSETS_SKIP_SMOKE=1`` on machines that cannot run servers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from rd_assets.core.samples import SAMPLE_TASKS
from rd_assets_tests.conftest import copy_sample_task
from rd_assets_tests.dg_dev_testkit import DgDev, running_dg_dev
from rd_assets_tests.rdagent_fixtures import ExperimentSpec, FactorSpec, growing_timeline, write_task

BROKEN_TASK = "2026-03-10_12-00-00-000000"
"""Its only factor experiment was rejected and its accepted one is a model: ``no_sota_factor_experiment``."""
DEV_TASKS = (*SAMPLE_TASKS, BROKEN_TASK)


def write_broken_task(log_root: Path) -> Path:
    hist = [
        ExperimentSpec(factors=[FactorSpec("Mom_10D")], decision=False),
        ExperimentSpec(kind="model", decision=True),
    ]
    return write_task(log_root, BROKEN_TASK, growing_timeline(2), hist=hist)


@pytest.fixture(scope="package")
def dg_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DgDev]:
    if os.environ.get("RD_ASSETS_SKIP_SMOKE") == "1":
        pytest.skip("RD_ASSETS_SKIP_SMOKE=1: this machine does not run the dg dev servers")
    tmp = tmp_path_factory.mktemp("dg_dev")
    log_root = tmp / "log"
    for task in SAMPLE_TASKS:
        copy_sample_task(task, log_root)
    write_broken_task(log_root)
    with running_dg_dev(tmp, log_root) as dev:
        yield dev
