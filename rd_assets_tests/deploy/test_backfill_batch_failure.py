"""A batch with one broken task: the others publish, only that partition fails, and retries repeat nothing.

One run holds four tasks (``RD_ASSETS_BACKFILL_BATCH=4``); the broken one sits between good ones. The run fails
naming only it, ``run_retries`` re-executes the batch (a typed error cannot be told from an outage by Dagster;
the backfill's ``dagster/max_retries`` tag lowers deploy/dagster.yaml's 2 to 1 here), and the backfill ends with
three tasks materialized and one failed. Every retry reads the good tasks
again, yet each is published exactly once: identical content is a no-op publish.
"""

from __future__ import annotations

from rd_assets.core.bundle.task_status import read_failure
from rd_assets.core.samples import SAMPLE_TASKS
from rd_assets.defs.partitions import BACKFILL_BATCH_ENV
from rd_assets_tests.defs.conftest import BROKEN_TASK, write_broken_task
from rd_assets_tests.deploy.conftest import verify
from rd_assets_tests.deploy.stack import TERMINAL, DeployStack, copy_task, graphql_for

GOOD = [f"batch-{i}-{task}" for i, task in enumerate(SAMPLE_TASKS)]
TASKS = [GOOD[0], BROKEN_TASK, *GOOD[1:]]
RETRIES = 1
TIMEOUT_S = 300


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
        backfill_id = gql.launch_backfill(TASKS, tags={"dagster/max_retries": str(RETRIES)})
        stack.start_daemon()

        def settled() -> dict | None:
            backfill = gql.backfill(backfill_id)
            runs = gql.runs()
            done = backfill["status"] != "REQUESTED" and len(runs) == 1 + RETRIES
            return backfill if done and all(r["status"] in TERMINAL for r in runs) else None

        backfill = gql.wait("the backfill and the batch's retries", settled, TIMEOUT_S, interval=1)
        assert backfill["status"] == "COMPLETED_FAILED", backfill
        counts = {
            s["assetKey"]["path"][0]: (s["numPartitionsMaterialized"], s["numPartitionsFailed"])
            for s in backfill["assetBackfillData"]["assetBackfillStatuses"]
        }
        assert counts["aistock_bundle"] == (3, 1) and counts["model_weight"] == (3, 1), counts
        runs = gql.runs()
        assert [r["status"] for r in runs] == ["FAILURE"] * (1 + RETRIES)
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
