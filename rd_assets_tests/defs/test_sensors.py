"""rd_task_sensor on a real instance: partitions for task dirs, runs for new and changed sessions only."""

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from dagster import DagsterInstance, SensorResult, build_sensor_context, instance_for_test

from rd_assets.core.contracts.models import SCHEMA_VERSION
from rd_assets.core.samples import SAMPLE_TASKS
from rd_assets.core.session.fingerprint import session_fingerprint
from rd_assets.defs.partitions import FINGERPRINT_TAG, RD_TASK_PARTITIONS_NAME
from rd_assets.defs.resources import RdLogRoot
from rd_assets.defs.sensors import SensorCursor, rd_task_sensor

TASKS = SAMPLE_TASKS


@pytest.fixture
def log_root(copy_sample: Callable[[str], Path]) -> Path:
    """A private log root holding a writable copy of the first sample."""
    return copy_sample(TASKS[0]).parent


@pytest.fixture
def instance() -> DagsterInstance:
    with instance_for_test() as inst:
        yield inst


def tick(instance: DagsterInstance, log_root: Path, cursor: str | None) -> SensorResult:
    """One evaluation, applying its partition requests the way the daemon does."""
    resources = {"rd_log_root": RdLogRoot(log_root=str(log_root), path_map="", index_path=None)}
    with build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
        result = rd_task_sensor(context)
    assert isinstance(result, SensorResult)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def requested(result: SensorResult) -> dict[str, str]:
    return {r.partition_key: r.run_key for r in result.run_requests or []}


def test_new_dir_becomes_a_partition_and_a_run(instance: DagsterInstance, log_root: Path) -> None:
    result = tick(instance, log_root, None)
    fp = session_fingerprint(log_root / TASKS[0]).token
    assert requested(result) == {TASKS[0]: f"{TASKS[0]}:{fp}"}
    assert result.run_requests[0].tags[FINGERPRINT_TAG] == fp
    assert instance.get_dynamic_partitions(RD_TASK_PARTITIONS_NAME) == [TASKS[0]]
    assert json.loads(result.cursor)["fingerprints"] == {TASKS[0]: fp}


def test_unchanged_dir_is_skipped_and_a_second_task_is_picked_up(
    instance: DagsterInstance, log_root: Path, copy_sample: Callable[[str], Path]
) -> None:
    first = tick(instance, log_root, None)
    again = tick(instance, log_root, first.cursor)
    assert requested(again) == {} and again.skip_reason is not None
    assert "1 unchanged" in again.skip_reason.skip_message
    assert copy_sample(TASKS[1]).parent == log_root
    third = tick(instance, log_root, again.cursor)
    assert list(requested(third)) == [TASKS[1]]
    assert [r.partition_keys for r in third.dynamic_partitions_requests] == [[TASKS[1]]]
    assert sorted(instance.get_dynamic_partitions(RD_TASK_PARTITIONS_NAME)) == sorted(TASKS[:2])


def test_growing_dir_requests_a_new_run_with_a_new_run_key(instance: DagsterInstance, log_root: Path) -> None:
    first = tick(instance, log_root, None)
    snapshot = log_root / TASKS[0] / "__session__" / "6" / "0_direct_exp_gen"
    snapshot.parent.mkdir()
    shutil.copyfile(log_root / TASKS[0] / "__session__" / "5" / "4_record", snapshot)
    grown = tick(instance, log_root, first.cursor)
    assert list(requested(grown)) == [TASKS[0]]
    assert requested(grown)[TASKS[0]] != requested(first)[TASKS[0]]
    assert grown.dynamic_partitions_requests == []  # already a partition
    rewritten = log_root / TASKS[0] / "__session__" / "6" / "0_direct_exp_gen"
    os.utime(rewritten, ns=(rewritten.stat().st_mtime_ns + 10**9,) * 2)
    assert list(requested(tick(instance, log_root, grown.cursor))) == [TASKS[0]]


def test_invalid_names_and_dirs_without_session_are_ignored(instance: DagsterInstance, log_root: Path) -> None:
    (log_root / "notes").mkdir()
    (log_root / "2026-03-02_09-15-27").mkdir()
    (log_root / "README.md").write_text("not a task")
    (log_root / "2026-04-01_00-00-00-000001").mkdir()  # valid id, no __session__ yet
    (log_root / "2026-04-02_00-00-00-000002" / "__session__").mkdir(parents=True)  # session, no snapshot yet
    result = tick(instance, log_root, None)
    assert list(requested(result)) == [TASKS[0]]
    assert sorted(instance.get_dynamic_partitions(RD_TASK_PARTITIONS_NAME)) == [
        TASKS[0],
        "2026-04-02_00-00-00-000002",
    ]
    assert set(json.loads(result.cursor)["fingerprints"]) == {TASKS[0]}


def test_cursor_round_trips_and_a_lost_cursor_reuses_the_same_run_keys(
    instance: DagsterInstance, log_root: Path
) -> None:
    first = tick(instance, log_root, None)
    parsed = SensorCursor.parse(first.cursor)
    assert parsed.model_dump_json() == first.cursor and parsed.schema_version == SCHEMA_VERSION
    assert requested(tick(instance, log_root, None)) == requested(first)  # run_key dedup makes a reset harmless


def test_a_corrupt_cursor_fails_loudly(instance: DagsterInstance, log_root: Path) -> None:
    with pytest.raises(Exception, match="cursor is not a SensorCursor"):
        tick(instance, log_root, '{"fingerprints": ["not", "a", "map"]}')


def test_a_vanished_task_leaves_the_cursor(instance: DagsterInstance, log_root: Path) -> None:
    first = tick(instance, log_root, None)
    shutil.rmtree(log_root / TASKS[0])
    gone = tick(instance, log_root, first.cursor)
    assert requested(gone) == {} and json.loads(gone.cursor)["fingerprints"] == {}
