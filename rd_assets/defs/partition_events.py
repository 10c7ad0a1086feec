"""One task's results as events of its own partition, for a step that runs a range of tasks (a backfill batch).

Why: in a step over a partition range, a ``MaterializeResult`` or ``AssetCheckResult`` applies to every
partition of the range at once (Dagster copies one materialization and its metadata to each). A batch must say,
per task, what was read and what was checked, so each result becomes an ``AssetMaterialization`` and an
``AssetCheckEvaluation`` naming its partition, with the metadata a run of that task alone records. Dagster's
backfill counts such a partition as materialized, and a task of the range that did not materialize as failed
(a ranged run may succeed on some partitions and fail on others).

Dagster records a materialization's versions and provenance in tags it writes itself for a ``MaterializeResult``
and reads back to tell whether an asset is stale; a hand-made ``AssetMaterialization`` gets none, and Dagster then
falls back to timestamps and never sees a new code version. So the same tags are written here as a run of the
task alone writes them: the data version (every asset of the chain provides one, so Dagster never derives it),
the code version, and per upstream asset its data version and the storage id of the materialization it was built
from (read back from the instance, where it was written a moment before).
``rd_assets_tests/defs/test_batches.py`` compares the tags with those of a run of the task alone, and checks with
Dagster's own staleness resolver that both are fresh.
"""

from __future__ import annotations

from collections.abc import Iterator

from dagster import (
    AssetCheckEvaluation,
    AssetCheckResult,
    AssetKey,
    AssetMaterialization,
    AssetRecordsFilter,
    DagsterInstance,
    MaterializeResult,
)

from rd_assets.defs.specs import ASSET_SPECS, CHECK_SPECS, CODE_VERSION

DATA_VERSION_TAG = "dagster/data_version"
DATA_VERSION_IS_USER_PROVIDED_TAG = "dagster/data_version_is_user_provided"
CODE_VERSION_TAG = "dagster/code_version"
INPUT_DATA_VERSION_PREFIX = "dagster/input_data_version/"
INPUT_EVENT_POINTER_PREFIX = "dagster/input_event_pointer/"
NO_VERSION = "INITIAL"
"""What Dagster records for an input that has no data version (never the case for this chain's assets)."""
_DEPS = {spec.key: [dep.asset_key for dep in spec.deps] for spec in ASSET_SPECS}
_BLOCKING = {(spec.asset_key, spec.name): spec.blocking for spec in CHECK_SPECS}

PartitionEvent = AssetMaterialization | AssetCheckEvaluation


def partition_events(
    instance: DagsterInstance, task_id: str, result: MaterializeResult | AssetCheckResult
) -> Iterator[PartitionEvent]:
    """``result`` (and the check results it carries) as events of partition ``task_id``."""
    checks = [result] if isinstance(result, AssetCheckResult) else list(result.check_results or [])
    if isinstance(result, MaterializeResult):
        assert result.asset_key is not None  # every result of this step names its asset
        tags = _provenance(instance, result.asset_key, task_id)
        if result.data_version is not None:
            tags[DATA_VERSION_TAG] = result.data_version.value
            tags[DATA_VERSION_IS_USER_PROVIDED_TAG] = "true"
        yield AssetMaterialization(asset_key=result.asset_key, partition=task_id, metadata=result.metadata, tags=tags)
    for check in checks:
        assert check.asset_key is not None and check.check_name is not None  # every check here names both
        yield AssetCheckEvaluation(
            asset_key=check.asset_key,
            check_name=check.check_name,
            passed=check.passed,
            metadata=check.metadata,
            severity=check.severity,
            description=check.description,
            blocking=_BLOCKING[(check.asset_key, check.check_name)],
            partition=task_id,
        )


def _provenance(instance: DagsterInstance, key: AssetKey, task_id: str) -> dict[str, str]:
    """The code version, and for each upstream asset the version and storage id of its latest materialization."""
    tags = {CODE_VERSION_TAG: CODE_VERSION}
    for dep in _DEPS[key]:
        found = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=dep, asset_partitions=[task_id]), limit=1
        ).records
        materialization = found[0].asset_materialization if found else None
        name = dep.to_user_string()
        tags[INPUT_EVENT_POINTER_PREFIX + name] = str(found[0].storage_id) if found else "NULL"
        version = materialization.tags.get(DATA_VERSION_TAG) if materialization and materialization.tags else None
        tags[INPUT_DATA_VERSION_PREFIX + name] = version or NO_VERSION
    return tags
