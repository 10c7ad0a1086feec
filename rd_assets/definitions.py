"""The one Dagster code location of rd-assets (``[tool.dagster] module_name``, ``workspace.yaml``).

Resources come from environment variables (see :mod:`rd_assets.defs.resources`); with none set, the sensor
picks up the bundled sample tasks and bundles go to ``<repo>/.rd_assets_store``. Runs execute in one
process by default (a run is one task's six small steps); ``RD_ASSETS_EXECUTOR=multiprocess`` runs each
step in its own process (see ``deploy/README.md``).
"""

from __future__ import annotations

import os

from dagster import Definitions, ExecutorDefinition, in_process_executor, multiprocess_executor

from rd_assets.defs.assets import rd_task_assets, rd_task_job
from rd_assets.defs.checks import (
    bundle_integrity,
    factor_code_complete,
    factor_order_matches_model,
    no_workspace_traversal,
)
from rd_assets.defs.io_managers import RdValueIOManager
from rd_assets.defs.resources import BundleStore, RdLogRoot
from rd_assets.defs.schedules import rd_task_backfill_schedule
from rd_assets.defs.sensors import rd_task_sensor

ENV_EXECUTOR = "RD_ASSETS_EXECUTOR"
EXECUTORS: dict[str, ExecutorDefinition] = {"in_process": in_process_executor, "multiprocess": multiprocess_executor}


def _executor() -> ExecutorDefinition:
    name = os.environ.get(ENV_EXECUTOR, "in_process")
    if name not in EXECUTORS:
        raise ValueError(f"{ENV_EXECUTOR}={name!r}: expected one of {', '.join(EXECUTORS)}")
    return EXECUTORS[name]


def build_definitions(rd_log_root: RdLogRoot, bundle_store: BundleStore) -> Definitions:
    """The code location for given resources (tests pass temporary ones)."""
    return Definitions(
        assets=rd_task_assets,
        asset_checks=[no_workspace_traversal, factor_order_matches_model, factor_code_complete, bundle_integrity],
        jobs=[rd_task_job],
        sensors=[rd_task_sensor],
        schedules=[rd_task_backfill_schedule],
        resources={
            "rd_log_root": rd_log_root,
            "bundle_store": bundle_store,
            "io_manager": RdValueIOManager(bundle_store=bundle_store),
        },
        executor=_executor(),
    )


defs = build_definitions(RdLogRoot.from_env(), BundleStore.from_env())
