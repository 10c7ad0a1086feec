"""One Dagster partition per RD-Agent task: the partition key is the task id (the log dir name)."""

from __future__ import annotations

import os

from dagster import DynamicPartitionsDefinition

RD_TASK_PARTITIONS_NAME = "rd_task"

rd_task_partitions = DynamicPartitionsDefinition(name=RD_TASK_PARTITIONS_NAME)

PARTITION_TAG = "dagster/partition"
"""Set by Dagster on every partitioned run; dagster.yaml limits concurrency per unique value of it."""

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
"""Set by Dagster on a run over a range of partitions (a backfill batch) instead of ``dagster/partition``."""

FINGERPRINT_TAG = "rd_assets/fingerprint"
"""The session fingerprint a run was requested for: lets the schedule skip deterministic failures."""

BACKFILL_BATCH_ENV = "RD_ASSETS_BACKFILL_BATCH"
DEFAULT_BACKFILL_BATCH = 50
MAX_BACKFILL_BATCH = 500


def backfill_batch() -> int:
    """Tasks per run of a backfill (``RD_ASSETS_BACKFILL_BATCH``), read when the code location loads.

    Why an environment variable and not an ``EnvVar`` resource: a backfill policy is part of the asset's
    definition, fixed when the definitions load, before any resource exists. Why 50 by default: a run costs a
    process start, a code load and its planned events (several seconds on 2 cores) however many tasks it holds.
    Through the daemon on PostgreSQL, 200 tasks took 2.8x the CLI's time in batches of 25, 1.8-2.0x in batches of
    50 and 1.5x in batches of 100 (bench/bench_deploy.py, deploy/README.md section 7); a batch of 50 still takes
    only seconds to retry, shows progress per run, and a backfill of 100 tasks still runs on two cores.
    """
    raw = os.environ.get(BACKFILL_BATCH_ENV, "").strip()
    if not raw:
        return DEFAULT_BACKFILL_BATCH
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_BACKFILL_BATCH:
        expected = f"a whole number of tasks from 1 to {MAX_BACKFILL_BATCH}"
        raise ValueError(f"{BACKFILL_BATCH_ENV}={raw!r}: expected {expected}")
    return int(raw)
