"""rd_task_backfill_schedule: missing or stale bundles get a run; deterministic failures and fresh ones do not."""

import shutil
from collections.abc import Callable
from pathlib import Path

from dagster import AssetKey, DagsterRunStatus, RunRequest, SkipReason, build_schedule_context, instance_for_test
from dagster._core.test_utils import create_run_for_test

from rd_assets.core.bundle.task_status import read_failure
from rd_assets.core.session.fingerprint import session_fingerprint
from rd_assets.defs.partitions import (
    FINGERPRINT_TAG,
    PARTITION_TAG,
    RANGE_END_TAG,
    RANGE_START_TAG,
    RD_TASK_PARTITIONS_NAME,
)
from rd_assets.defs.schedules import rd_task_backfill_schedule
from rd_assets.defs.specs import CHAIN
from rd_assets_tests.defs.test_assets import chain_resources, materialize_task
from rd_assets_tests.rdagent_fixtures import ExperimentSpec, FactorSpec, growing_timeline, write_task

SAMPLE = "2026-03-02_09-15-27-118204"
NO_WEIGHTS = "2026-01-09_16-11-14-215581"


def evaluate(instance, resources) -> list[RunRequest] | SkipReason:
    sub = {k: resources[k] for k in ("rd_log_root", "bundle_store")}
    with build_schedule_context(instance=instance, resources=sub) as context:
        return rd_task_backfill_schedule(context)


def grow(log_dir: Path) -> None:
    """RD-Agent starts a new loop folder: a copy of the latest snapshot as its first step."""
    latest = max((log_dir / "__session__").glob("*/*"), key=lambda p: (int(p.parent.name), p.name))
    new = log_dir / "__session__" / str(int(latest.parent.name) + 1) / "0_direct_exp_gen"
    new.parent.mkdir()
    shutil.copyfile(latest, new)


def test_missing_then_fresh_then_stale(tmp_path: Path, copy_sample: Callable[[str], Path]) -> None:
    log_root = copy_sample(SAMPLE).parent
    resources = chain_resources(tmp_path, log_root)
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(RD_TASK_PARTITIONS_NAME, [SAMPLE])
        missing = evaluate(instance, resources)
        fp = session_fingerprint(log_root / SAMPLE).token
        assert [(r.partition_key, r.run_key, r.tags[FINGERPRINT_TAG]) for r in missing] == [
            (SAMPLE, f"{SAMPLE}:{fp}", fp)
        ]

        assert materialize_task(instance, resources, SAMPLE).success
        fresh = evaluate(instance, resources)
        assert isinstance(fresh, SkipReason) and "'fresh': 1" in fresh.skip_message
        assert resources["bundle_store"].publication(SAMPLE).session_fingerprint == fp

        grow(log_root / SAMPLE)
        stale = evaluate(instance, resources)
        new_fp = session_fingerprint(log_root / SAMPLE).token
        assert [(r.partition_key, r.tags[FINGERPRINT_TAG]) for r in stale] == [(SAMPLE, new_fp)]

        create_run_for_test(
            instance,
            job_name="rd_task_job",
            tags={PARTITION_TAG: SAMPLE, FINGERPRINT_TAG: new_fp},
            status=DagsterRunStatus.STARTED,
        )
        in_flight = evaluate(instance, resources)
        assert isinstance(in_flight, SkipReason) and "'in_flight': 1" in in_flight.skip_message


def test_a_deterministic_failure_is_not_retried_until_the_session_changes(tmp_path: Path) -> None:
    log_root = tmp_path / "log"
    spec = ExperimentSpec(factors=[FactorSpec("Mom_10D")], decision=True)  # no weights: fails every time
    log_dir = write_task(log_root, NO_WEIGHTS, growing_timeline(6), hist=[spec] * 6)
    resources = chain_resources(tmp_path, log_root, path_map=[])
    with instance_for_test() as instance:
        fp = session_fingerprint(log_dir).token
        failed = materialize_task(instance, resources, NO_WEIGHTS, tags={FINGERPRINT_TAG: fp})
        assert not failed.success
        skipped = evaluate(instance, resources)
        assert isinstance(skipped, SkipReason) and "'failed_before': 1" in skipped.skip_message
        failure = read_failure(resources["bundle_store"].path, NO_WEIGHTS)
        assert failure is not None and failure.fingerprint == fp and failure.code == "weights_not_persisted"
        instance.wipe()  # the record decides, not Dagster's run history
        instance.add_dynamic_partitions(RD_TASK_PARTITIONS_NAME, [NO_WEIGHTS])
        assert isinstance(evaluate(instance, resources), SkipReason)
        grow(log_dir)
        retried = evaluate(instance, resources)
        assert [r.partition_key for r in retried] == [NO_WEIGHTS]
        assert retried[0].tags[FINGERPRINT_TAG] == session_fingerprint(log_dir).token != fp


def test_a_failure_before_any_snapshot_was_read_also_parks_the_task(tmp_path: Path) -> None:
    """Every snapshot unreadable: the failure comes before a snapshot is chosen, so the record carries the
    session's stat fingerprint, and the schedule does not request the task daily until the session changes."""
    log_root = tmp_path / "log"
    spec = ExperimentSpec(factors=[FactorSpec("Mom_10D")], decision=True)
    log_dir = write_task(log_root, NO_WEIGHTS, growing_timeline(2), hist=[spec] * 2)
    for snapshot in (log_dir / "__session__").glob("*/*"):
        snapshot.write_bytes(b"not a pickle")
    resources = chain_resources(tmp_path, log_root, path_map=[])
    with instance_for_test() as instance:
        assert not materialize_task(instance, resources, NO_WEIGHTS).success
        failure = read_failure(resources["bundle_store"].path, NO_WEIGHTS)
        assert failure is not None and failure.code == "no_snapshot"
        assert failure.fingerprint == session_fingerprint(log_dir).token
        parked = evaluate(instance, resources)
        assert isinstance(parked, SkipReason) and "'failed_before': 1" in parked.skip_message


def test_a_run_that_failed_for_another_reason_is_requested_again(
    tmp_path: Path, copy_sample: Callable[[str], Path]
) -> None:
    """A database outage or a killed worker fails the run but says nothing of the session: no failure record."""
    log_root = copy_sample(SAMPLE).parent
    resources = chain_resources(tmp_path, log_root)
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(RD_TASK_PARTITIONS_NAME, [SAMPLE])
        fp = session_fingerprint(log_root / SAMPLE).token
        tags = {PARTITION_TAG: SAMPLE, FINGERPRINT_TAG: fp}
        create_run_for_test(instance, job_name="rd_task_job", tags=tags, status=DagsterRunStatus.FAILURE)
        again = evaluate(instance, resources)
        assert [(r.partition_key, r.tags[FINGERPRINT_TAG]) for r in again] == [(SAMPLE, fp)]

        status_dir = resources["bundle_store"].path / ".task_status"
        status_dir.mkdir(parents=True)
        (status_dir / f"{SAMPLE}.json").write_text("{not json")
        unreadable = evaluate(instance, resources)
        assert [r.partition_key for r in unreadable] == [SAMPLE], "an unreadable record never parks a task"


def test_a_task_inside_a_running_backfill_batch_is_not_requested_again(
    tmp_path: Path, copy_sample: Callable[[str], Path]
) -> None:
    """A batch carries a partition range, not the task's tag, and is a run of Dagster's asset job, not of
    ``rd_task_job`` (``test_backfill_batch_failure.py`` checks that shape on a real backfill); the schedule still
    sees that it covers the task. A range over the same keys in a run of other assets does not count."""
    log_root = copy_sample(SAMPLE).parent
    resources = chain_resources(tmp_path, log_root)
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(RD_TASK_PARTITIONS_NAME, ["2026-01-01_00-00-00-000000", SAMPLE, "z-last"])
        tags = {RANGE_START_TAG: "2026-01-01_00-00-00-000000", RANGE_END_TAG: "z-last"}
        other = frozenset([AssetKey("someone_elses_asset")])
        create_run_for_test(instance, "__ASSET_JOB", tags=tags, status=DagsterRunStatus.STARTED, asset_selection=other)
        assert [r.partition_key for r in evaluate(instance, resources)] == [SAMPLE], "not a run of these assets"
        ours = frozenset(CHAIN)
        batch = create_run_for_test(
            instance, "__ASSET_JOB", tags=tags, status=DagsterRunStatus.STARTED, asset_selection=ours
        )
        held = evaluate(instance, resources)
        assert isinstance(held, SkipReason) and "'in_flight': 1" in held.skip_message
        instance.report_run_failed(batch)
        assert [r.partition_key for r in evaluate(instance, resources)] == [SAMPLE], "the batch ended: requested"


def test_a_run_launched_from_the_ui_holds_the_task_too(tmp_path: Path, copy_sample: Callable[[str], Path]) -> None:
    """A partition materialized from the UI runs as Dagster's asset job with no fingerprint tag of ours; while it
    is in flight the schedule does not queue a second run of the task, an older run of another job does not."""
    log_root = copy_sample(SAMPLE).parent
    resources = chain_resources(tmp_path, log_root)
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(RD_TASK_PARTITIONS_NAME, [SAMPLE])
        tags = {PARTITION_TAG: SAMPLE}
        create_run_for_test(instance, "other_job", tags=tags, status=DagsterRunStatus.STARTED)
        assert [r.partition_key for r in evaluate(instance, resources)] == [SAMPLE], "not a run of these assets"
        ui_run = create_run_for_test(
            instance, "__ASSET_JOB", tags=tags, status=DagsterRunStatus.STARTED, asset_selection=frozenset(CHAIN)
        )
        held = evaluate(instance, resources)
        assert isinstance(held, SkipReason) and "'in_flight': 1" in held.skip_message
        instance.report_run_failed(ui_run)
        assert [r.partition_key for r in evaluate(instance, resources)] == [SAMPLE]


def test_a_vanished_log_dir_is_not_requested(tmp_path: Path) -> None:
    resources = chain_resources(tmp_path, tmp_path / "log")
    (tmp_path / "log").mkdir()
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(RD_TASK_PARTITIONS_NAME, [SAMPLE])
        result = evaluate(instance, resources)
    assert isinstance(result, SkipReason) and "'log_dir_gone': 1" in result.skip_message
