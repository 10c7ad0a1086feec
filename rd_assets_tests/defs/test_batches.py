"""A backfill batch: one run over a range of tasks records each task on its own partition, as a run of it alone.

The range is what a backfill with ``BackfillPolicy.multi_run`` launches: the run carries Dagster's partition-range
tags. Its tasks are the three genuine samples and one broken task placed between them, so the batch must publish
the samples, record the broken task's failure and keep going, and end failed naming exactly that task.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    instance_for_test,
)
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleCauseCategory, StaleStatus
from dagster._core.loader import LoadingContextForTest

from rd_assets.core.bundle.task_status import read_failure
from rd_assets.core.contracts.bundle_models import Manifest
from rd_assets.core.samples import SAMPLE_TASKS, SAMPLES_DIR
from rd_assets.definitions import build_definitions
from rd_assets.defs.partitions import (
    BACKFILL_BATCH_ENV,
    DEFAULT_BACKFILL_BATCH,
    RANGE_END_TAG,
    RANGE_START_TAG,
    RD_TASK_PARTITIONS_NAME,
    backfill_batch,
)
from rd_assets.defs.rd_task_assets import extract_rd_task
from rd_assets.defs.specs import CODE_VERSION
from rd_assets_tests.conftest import copy_sample_task
from rd_assets_tests.defs.conftest import BROKEN_TASK, write_broken_task
from rd_assets_tests.defs.test_assets import ASSET_NAMES, CHECK_NAMES, chain_resources, materialize_task

BATCH = [SAMPLE_TASKS[0], BROKEN_TASK, SAMPLE_TASKS[1], SAMPLE_TASKS[2]]
"""In partition order: the broken task sits inside the range, so tasks after it must still run."""
AISTOCK_BUNDLE = AssetKey("aistock_bundle")


def run_range(instance: DagsterInstance, resources: dict[str, Any], first: str, last: str) -> ExecuteInProcessResult:
    """One run of ``rd_task_job`` over the partitions ``first``..``last``, as a backfill batch is launched."""
    job = build_definitions(resources["rd_log_root"], resources["bundle_store"]).resolve_job_def("rd_task_job")
    tags = {RANGE_START_TAG: first, RANGE_END_TAG: last}
    return job.execute_in_process(instance=instance, raise_on_error=False, tags=tags)


def tree(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under ``root`` with its mode, size and mtime: any write under it changes this."""
    stats = {p: p.lstat() for p in root.rglob("*")}
    return {str(p.relative_to(root)): (st.st_mode, st.st_size, st.st_mtime_ns) for p, st in stats.items()}


@contextlib.contextmanager
def samples_with_broken_task(tmp: Path) -> Iterator[tuple[DagsterInstance, dict]]:
    """The three samples and the broken task in a log root, partitions in :data:`BATCH` order, the signing key set."""
    log_root = tmp / "log"
    for task in SAMPLE_TASKS:
        copy_sample_task(task, log_root)
    write_broken_task(log_root)
    resources = chain_resources(tmp, log_root)
    signing_key = json.loads((SAMPLES_DIR / "expected" / f"{SAMPLE_TASKS[1]}.expected.json").read_text())
    with pytest.MonkeyPatch.context() as env, instance_for_test() as instance:
        env.setenv("RD_ASSETS_SIGNING_KEY", signing_key["signing_key"])
        env.setenv("RD_ASSETS_ALLOW_UNSIGNED", "1")
        instance.add_dynamic_partitions(RD_TASK_PARTITIONS_NAME, BATCH)
        yield instance, resources


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DagsterInstance, dict, ExecuteInProcessResult]]:
    tmp = tmp_path_factory.mktemp("batch")
    with samples_with_broken_task(tmp) as (instance, resources):
        before = tree(resources["rd_log_root"].root)
        result = run_range(instance, resources, BATCH[0], BATCH[-1])
        assert tree(resources["rd_log_root"].root) == before, "the batch wrote under the log root"
        yield instance, resources, result


def materializations(result: ExecuteInProcessResult) -> dict[str, list[Any]]:
    """Per partition, the materialization events of the run, in order."""
    found: dict[str, list[Any]] = {}
    for event in result.get_asset_materialization_events():
        mat = event.step_materialization_data.materialization
        found.setdefault(mat.partition, []).append(mat)
    return found


def test_one_step_runs_the_whole_range_and_ends_failed_naming_only_the_broken_task(batch: tuple) -> None:
    _, _, result = batch
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    data = failure.step_failure_data
    assert data.user_failure_data is not None, "the batch ends with a dagster.Failure, not a traceback"
    text = data.error.to_string()
    assert "1 of 4 tasks failed" in text and f"{BROKEN_TASK}: no_sota_factor_experiment" in text
    failed = data.user_failure_data.metadata["failed_tasks"].value
    assert list(failed) == [BROKEN_TASK] and failed[BROKEN_TASK].startswith("no_sota_factor_experiment: ")
    assert len([e for e in result.all_events if e.is_step_start]) == 1


def test_each_sample_gets_its_own_six_materializations_and_six_checks(batch: tuple) -> None:
    _, resources, result = batch
    found = materializations(result)
    assert set(found) == {*SAMPLE_TASKS, BROKEN_TASK}
    for task in SAMPLE_TASKS:
        assert [m.asset_key.to_user_string() for m in found[task]] == ASSET_NAMES
        bundle = next(m for m in found[task] if m.asset_key == AISTOCK_BUNDLE)
        manifest = Manifest.model_validate_json((resources["bundle_store"].path / task / "manifest.json").read_bytes())
        assert bundle.metadata["content_hash"].value == manifest.content_hash, "metadata of this task, not another"
        assert bundle.tags["dagster/data_version"] == manifest.content_hash
    assert [m.asset_key.to_user_string() for m in found[BROKEN_TASK]] == ["session_snapshot"]
    checks: dict[str, dict[str, bool]] = {}
    for evaluation in result.get_asset_check_evaluations():
        checks.setdefault(evaluation.partition, {})[evaluation.check_name] = evaluation.passed
    assert checks == {task: dict.fromkeys(CHECK_NAMES, True) for task in SAMPLE_TASKS}, "none for the broken task"


def test_the_broken_task_is_recorded_and_the_others_published(batch: tuple) -> None:
    _, resources, _ = batch
    store = resources["bundle_store"].path
    for task in SAMPLE_TASKS:
        assert Manifest.model_validate_json((store / task / "manifest.json").read_bytes()).selection_ready
    assert not (store / BROKEN_TASK).exists()
    record = read_failure(store, BROKEN_TASK)
    assert record is not None and record.code == "no_sota_factor_experiment"


def test_the_instance_sees_each_partition_materialized_with_its_data_version(batch: tuple) -> None:
    instance, resources, _ = batch
    for task in SAMPLE_TASKS:
        records = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AISTOCK_BUNDLE, asset_partitions=[task]), limit=1
        ).records
        manifest = Manifest.model_validate_json((resources["bundle_store"].path / task / "manifest.json").read_bytes())
        assert records and records[0].asset_materialization is not None
        assert records[0].asset_materialization.tags["dagster/data_version"] == manifest.content_hash
    assert not instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AISTOCK_BUNDLE, asset_partitions=[BROKEN_TASK]), limit=1
    ).records


def latest_tags(instance: DagsterInstance, asset: str, task: str) -> dict[str, str]:
    records = instance.fetch_materializations(AssetRecordsFilter(AssetKey(asset), asset_partitions=[task]), limit=1)
    materialization = records.records[0].asset_materialization
    assert materialization is not None
    return dict(materialization.tags or {})


def without_pointer_values(tags: dict[str, str]) -> dict[str, str]:
    """The tags, with the storage ids of the inputs (which differ between two runs) replaced by their presence."""
    return {k: "<storage id>" if k.startswith("dagster/input_event_pointer/") else v for k, v in tags.items()}


def test_a_batch_records_the_versions_and_provenance_a_run_of_the_task_alone_records(batch: tuple) -> None:
    instance, resources, result = batch
    task = SAMPLE_TASKS[0]
    from_batch = {name: latest_tags(instance, name, task) for name in ASSET_NAMES}
    single = materialize_task(instance, resources, task)
    assert single.success
    from_single = {name: latest_tags(instance, name, task) for name in ASSET_NAMES}
    for name in ASSET_NAMES:
        assert without_pointer_values(from_batch[name]) == without_pointer_values(from_single[name]), name
        assert from_batch[name]["dagster/data_version"], name
    pointer = from_batch["aistock_bundle"]["dagster/input_event_pointer/factor_code"]
    records = instance.fetch_materializations(
        AssetRecordsFilter(AssetKey("factor_code"), asset_partitions=[task], storage_ids=[int(pointer)]), limit=1
    ).records
    assert records and records[0].run_id == result.run_id, "the pointer names the batch's own factor_code event"


def test_a_batch_materialization_is_as_fresh_as_a_single_run(batch: tuple) -> None:
    """Dagster's own staleness reads the data and code versions the batch recorded: nothing shows as stale."""
    instance, resources, _ = batch
    materialize_task(instance, resources, SAMPLE_TASKS[0])  # the same task by a run of its own, for comparison
    graph = build_definitions(resources["rd_log_root"], resources["bundle_store"]).resolve_asset_graph()
    resolver = CachingStaleStatusResolver(instance, graph, LoadingContextForTest(instance))
    for task in SAMPLE_TASKS:
        statuses = {name: resolver.get_status(AssetKey(name), task) for name in ASSET_NAMES}
        causes = {name: resolver.get_stale_causes(AssetKey(name), task) for name in ASSET_NAMES}
        assert statuses == dict.fromkeys(ASSET_NAMES, StaleStatus.FRESH), (task, causes)


def test_a_new_code_version_makes_batch_made_partitions_stale(batch: tuple) -> None:
    """The code version a batch records is the one Dagster compares: with the code version bumped, every asset of
    every published task is stale, each for its own new code version."""
    instance, resources, _ = batch
    bumped = extract_rd_task.map_asset_specs(lambda spec: spec.replace_attributes(code_version=f"{CODE_VERSION}+1"))
    graph = Definitions(assets=[bumped], resources=resources).resolve_asset_graph()
    assert {graph.get(AssetKey(name)).code_version for name in ASSET_NAMES} == {f"{CODE_VERSION}+1"}
    resolver = CachingStaleStatusResolver(instance, graph, LoadingContextForTest(instance))
    for task in SAMPLE_TASKS:
        for name in ASSET_NAMES:
            assert resolver.get_status(AssetKey(name), task) == StaleStatus.STALE, (task, name)
            causes = resolver.get_stale_causes(AssetKey(name), task)
            own = [c for c in causes if c.key.asset_key == AssetKey(name)]
            assert [c.category for c in own] == [StaleCauseCategory.CODE], (task, name, causes)


def test_a_range_of_good_tasks_succeeds(batch: tuple) -> None:
    instance, resources, _ = batch
    result = run_range(instance, resources, SAMPLE_TASKS[1], SAMPLE_TASKS[2])
    assert result.success
    assert sorted(materializations(result)) == sorted(SAMPLE_TASKS[1:])


def test_the_batch_size_is_read_when_the_code_location_loads() -> None:
    probe = "from rd_assets.definitions import defs; print(defs.resolve_assets_def('aistock_bundle').backfill_policy)"
    env = {k: v for k, v in os.environ.items() if k != BACKFILL_BATCH_ENV}

    def load(setting: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-c", probe]
        return subprocess.run(argv, env={**env, BACKFILL_BATCH_ENV: setting}, capture_output=True, text=True)

    for setting, size in (("7", 7), ("", DEFAULT_BACKFILL_BATCH)):
        out = load(setting)
        assert out.returncode == 0 and f"max_partitions_per_run={size}" in out.stdout, out.stderr[-2000:]
    bad = load("0")
    assert bad.returncode != 0 and f"{BACKFILL_BATCH_ENV}='0': expected a whole number" in bad.stderr


def test_a_run_that_failed_only_for_its_tasks_sessions_is_not_retried(batch: tuple) -> None:
    instance, resources, result = batch
    assert instance.get_run_by_id(result.run_id).tags.get("dagster/retry_on_asset_or_op_failure") == "false"
    good = run_range(instance, resources, SAMPLE_TASKS[1], SAMPLE_TASKS[2])
    assert "dagster/retry_on_asset_or_op_failure" not in instance.get_run_by_id(good.run_id).tags
    alone = materialize_task(instance, resources, BROKEN_TASK)  # a run of the broken task alone: the same
    assert not alone.success
    assert instance.get_run_by_id(alone.run_id).tags.get("dagster/retry_on_asset_or_op_failure") == "false"


@pytest.mark.parametrize("blocker", [".locks/{task}", ".dagster_state/{task}.json"])
def test_an_error_that_is_not_the_tasks_stops_the_batch_where_it_happened(tmp_path: Path, blocker: str) -> None:
    """A folder where the store keeps a task's lock (a typed store error) or its publication record (an OSError):
    the batch stops at that task, names it and what came before, and is left to the run's retry."""
    with samples_with_broken_task(tmp_path) as (instance, resources):
        stop = SAMPLE_TASKS[1]  # BATCH: sample 0, broken, sample 1, sample 2
        (resources["bundle_store"].path / blocker.format(task=stop)).mkdir(parents=True)
        result = run_range(instance, resources, BATCH[0], BATCH[-1])
        (failure,) = [e for e in result.all_events if e.is_step_failure]
        data = failure.step_failure_data
        assert data.user_failure_data is not None
        text = data.error.to_string()
        assert f"the batch stopped at {stop} (3 of 4)" in text and f"1 published, 1 failed ({BROKEN_TASK})" in text
        assert data.user_failure_data.metadata["stopped_at"].value == stop
        found = materializations(result)
        assert [m.asset_key.to_user_string() for m in found[SAMPLE_TASKS[0]]] == ASSET_NAMES
        assert "aistock_bundle" not in [m.asset_key.to_user_string() for m in found.get(stop, [])]
        assert SAMPLE_TASKS[2] not in found, "nothing after the task that stopped the batch was tried"
        assert "dagster/retry_on_asset_or_op_failure" not in instance.get_run_by_id(result.run_id).tags


def test_the_batch_size_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BACKFILL_BATCH_ENV, raising=False)
    assert backfill_batch() == DEFAULT_BACKFILL_BATCH
    monkeypatch.setenv(BACKFILL_BATCH_ENV, "7")
    assert backfill_batch() == 7
    for bad in ("0", "-3", "2.5", "many", "501"):
        monkeypatch.setenv(BACKFILL_BATCH_ENV, bad)
        with pytest.raises(ValueError, match=BACKFILL_BATCH_ENV):
            backfill_batch()
