"""One Dagster partition per RD-Agent task: the partition key is the task id (the log dir name)."""

from __future__ import annotations

from dagster import DynamicPartitionsDefinition

RD_TASK_PARTITIONS_NAME = "rd_task"

rd_task_partitions = DynamicPartitionsDefinition(name=RD_TASK_PARTITIONS_NAME)

PARTITION_TAG = "dagster/partition"
"""Set by Dagster on every partitioned run; dagster.yaml limits concurrency per unique value of it."""

FINGERPRINT_TAG = "rd_assets/fingerprint"
"""The session fingerprint a run was requested for: lets the schedule skip deterministic failures."""
