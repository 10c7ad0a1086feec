"""Bench-only code location: the core work of one task in ONE Dagster step, to price the per-step overhead.

Not the product's code location (that is ``rd_assets.definitions``, six assets and five checks per task). Two
assets over the same ``rd_task`` partitions, each calling the CLI's own ``extract_task`` (read, assemble,
publish) with the environment the real code location reads:

* ``task_bundle``: one run per task with a single step ("fewer, fatter steps");
* ``task_bundle_batch``: ``BackfillPolicy.multi_run(max_partitions_per_run=RD_BENCH_BATCH)``, one run and one
  step for a batch of tasks, so the run's process start and code loading are paid once per batch.

``bench/bench_deploy.py`` serves it with ``dagster api grpc -f bench/deploy_prototypes.py``.
"""

import os
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    BackfillPolicy,
    Definitions,
    DynamicPartitionsDefinition,
    MaterializeResult,
    asset,
    in_process_executor,
)

from rd_assets.core.artifacts.path_map import PathMap
from rd_assets.core.bundle.extract import extract_task
from rd_assets.core.session.index import SnapshotIndex, default_index_path
from rd_assets.core.session.task_reader import signing_key_from_env

PARTITIONS = DynamicPartitionsDefinition(name="rd_task")
BATCH = int(os.environ.get("RD_BENCH_BATCH", "25"))


def _extract(task_ids: list[str]) -> list[str]:
    """``rd-assets extract`` of each task (same function, same environment); the content hashes published."""
    log_root, store = Path(os.environ["RD_ASSETS_LOG_ROOT"]), Path(os.environ["RD_ASSETS_STORE"])
    path_map = PathMap.parse([r for r in os.environ.get("RD_ASSETS_PATH_MAP", "").split(";") if r])
    index = SnapshotIndex(default_index_path())
    try:
        return [
            extract_task(
                log_root / task_id, store=store, path_map=path_map, index=index, signing_key=signing_key_from_env()
            ).publish.content_hash
            for task_id in task_ids
        ]
    finally:
        index.close()


@asset(partitions_def=PARTITIONS, description="One task's bundle in one step (bench prototype).")
def task_bundle(context: AssetExecutionContext) -> MaterializeResult:
    (content_hash,) = _extract([context.partition_key])
    return MaterializeResult(metadata={"content_hash": content_hash})


@asset(
    partitions_def=PARTITIONS,
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=BATCH),
    description="A batch of tasks' bundles in one run and one step (bench prototype).",
)
def task_bundle_batch(context: AssetExecutionContext) -> MaterializeResult:
    hashes = _extract(list(context.partition_keys))
    return MaterializeResult(metadata={"tasks": len(hashes)})


defs = Definitions(assets=[task_bundle, task_bundle_batch], executor=in_process_executor)
