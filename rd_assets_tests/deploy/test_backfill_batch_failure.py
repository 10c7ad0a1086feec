"""A batch with one broken task: the others publish, only that partition fails, and nothing is retried.

One run holds four tasks (``RD_ASSETS_BACKFILL_BATCH=4``); the broken one sits between good ones. The run fails
naming only it, and the backfill ends with three tasks materialized and one failed. The failure is the broken
session's own, which a retry would only repeat, so the run tells ``run_retries`` not to (deploy/dagster.yaml
would otherwise re-run the whole batch twice): the daemon says so on the run, and each good task is published
exactly once.
"""

from __future__ import annotations

from dagster import AssetKey, DagsterRun

from rd_assets.core.bundle.task_status import read_failure
from rd_assets.core.samples import SAMPLE_TASKS
from rd_assets.defs.partitions import BACKFILL_BATCH_ENV
from rd_assets.defs.schedules import is_rd_task_run
from rd_assets_tests.defs.conftest import BROKEN_TASK, write_broken_task
from rd_assets_tests.deploy.conftest import verify
from rd_assets_tests.deploy.stack import TERMINAL, DeployStack, copy_task, graphql_for

GOOD = [f"batch-{i}-{task}" for i, task in enumerate(SAMPLE_TASKS)]
TASKS = [GOOD[0], BROKEN_TASK, *GOOD[1:]]
NOT_RETRIED = "Not retrying run since it failed due to an asset or op failure"
TIMEOUT_S = 300


def as_dagster_run(run: dict) -> DagsterRun:
    """The fields of a run from the UI's GraphQL that tell whose it is."""
    selection = run["assetSelection"]
    assets = None if selection is None else frozenset(AssetKey(key["path"]) for key in selection)
    return DagsterRun(job_name=run["jobName"], asset_selection=assets, tags=run["tags"])


def test_a_broken_task_fails_only_its_partition_of_the_batch(stack: DeployStack) -> None:
    stack.start_code_server(extra_env={BACKFILL_BATCH_ENV: str(len(TASKS))})
    stack.start_webserver()
    with graphql_for(stack) as gql:
        gql.ready()
        gql.stop_sensor()
        for task, sample in zip(GOOD, SAMPLE_TASKS, strict=True):
            copy_task(sample, stack.log_root, as_id=task)
        write_broken_task(stack.log_root)
        gql.add_partitions(TASKS)
        backfill_id = gql.launch_backfill(TASKS)
        stack.start_daemon()

        def settled() -> dict | None:
            backfill = gql.backfill(backfill_id)
            runs = gql.runs()
            if backfill["status"] == "REQUESTED" or not all(r["status"] in TERMINAL for r in runs):
                return None
            said = any(NOT_RETRIED in (e.get("message") or "") for r in runs for e in gql.run_events(r["runId"]))
            return backfill if said else None

        backfill = gql.wait("the backfill, and the daemon's word on retrying", settled, TIMEOUT_S, interval=1)
        assert backfill["status"] == "COMPLETED_FAILED", backfill
        counts = {
            s["assetKey"]["path"][0]: (s["numPartitionsMaterialized"], s["numPartitionsFailed"])
            for s in backfill["assetBackfillData"]["assetBackfillStatuses"]
        }
        assert counts["aistock_bundle"] == (3, 1) and counts["model_weight"] == (3, 1), counts
        runs = gql.runs()
        assert [r["status"] for r in runs] == ["FAILURE"], "one run, not retried"
        assert runs[0]["tags"].get("dagster/retry_on_asset_or_op_failure") == "false"
        assert is_rd_task_run(as_dagster_run(runs[0])), "the schedule must see a batch in flight as one of ours"
        for run in runs:
            (failure,) = [e for e in gql.run_events(run["runId"]) if e["__typename"] == "ExecutionStepFailureEvent"]
            message = failure["error"]["message"]
            assert "1 of 4 tasks failed" in message and f"{BROKEN_TASK}: no_sota_factor_experiment" in message
            assert not any(task in message for task in GOOD), message
        assert sorted(gql.materialized_partitions("aistock_bundle")) == sorted(GOOD)

    record = read_failure(stack.store, BROKEN_TASK)
    assert record is not None and record.code == "no_sota_factor_experiment"
    assert not (stack.store / BROKEN_TASK).exists()
    for task in GOOD:
        verify(stack.store / task)
        versions = [p for p in (stack.store / ".versions" / task).iterdir() if not p.name.startswith(".")]
        assert len(versions) == 1, f"{task} was published {len(versions)} times"
