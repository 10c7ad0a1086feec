"""The one Dagster code location of rd-assets (``[tool.dg.project]``, ``workspace.yaml``).

Resource settings are bound to environment variables with :class:`dagster.EnvVar` and resolved when a run,
sensor or schedule starts; nothing is read from the environment at import. ``dg dev`` / ``dagster dev``
load ``.env`` from the project root (``cp .env.example .env`` for the bundled samples; ``make dev`` does it).
"""

from __future__ import annotations

from dagster import Definitions, EnvVar, multi_or_in_process_executor

from rd_assets.defs.jobs import rd_task_job
from rd_assets.defs.rd_task_assets import rd_task_assets
from rd_assets.defs.resources import (
    ENV_INDEX,
    ENV_KEEP_VERSIONS,
    ENV_LOG_ROOT,
    ENV_PATH_MAP,
    ENV_STORE,
    BundleStore,
    RdLogRoot,
)
from rd_assets.defs.schedules import rd_task_backfill_schedule
from rd_assets.defs.sensors import rd_task_sensor


def build_definitions(rd_log_root: RdLogRoot, bundle_store: BundleStore) -> Definitions:
    """The code location for given resources (tests and benchmarks pass temporary ones)."""
    return Definitions(
        assets=rd_task_assets,
        jobs=[rd_task_job],
        sensors=[rd_task_sensor],
        schedules=[rd_task_backfill_schedule],
        resources={"rd_log_root": rd_log_root, "bundle_store": bundle_store},
        executor=multi_or_in_process_executor,
    )


defs = build_definitions(
    RdLogRoot(log_root=EnvVar(ENV_LOG_ROOT), path_map=EnvVar(ENV_PATH_MAP), index_path=EnvVar(ENV_INDEX)),
    BundleStore(store_dir=EnvVar(ENV_STORE), keep_versions=EnvVar.int(ENV_KEEP_VERSIONS)),
)
