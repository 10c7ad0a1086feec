"""Restarting the daemon in the middle of a backfill loses no task and runs none twice.

Queued runs live in PostgreSQL and running ones belong to the code server, so a daemon that stops (as a
service manager restarts it) and comes back picks up where the old one left: every partition of the
backfill is covered by exactly one run, gets one materialization and one published bundle, and the backfill
completes. The code location runs a backfill in batches (``RD_ASSETS_BACKFILL_BATCH``, here 2 tasks per run), so
this is also the deployment test of batches: each run covers its own range of tasks, and each task's checks are
recorded on its own partition. The sensor is switched off first (as an operator would for a backfill), so
every run here is the backfill's.
"""

from __future__ import annotations

from rd_assets.core.samples import SAMPLE_TASKS
from rd_assets.defs.partitions import BACKFILL_BATCH_ENV, RANGE_END_TAG, RANGE_START_TAG
from rd_assets_tests.defs.test_assets import CHECK_NAMES
from rd_assets_tests.deploy.conftest import verify
from rd_assets_tests.deploy.stack import TERMINAL, DeployStack, copy_task, graphql_for

TASKS = [f"backfill-{i}-{SAMPLE_TASKS[i % len(SAMPLE_TASKS)]}" for i in range(6)]
BATCH = 2
TIMEOUT_S = 300


def test_daemon_restart_mid_backfill_neither_loses_nor_repeats_a_task(stack: DeployStack) -> None:
    stack.start_code_server(extra_env={BACKFILL_BATCH_ENV: str(BATCH)})
    stack.start_webserver()
    with graphql_for(stack) as gql:
        gql.ready()
        gql.stop_sensor()
        for i, task in enumerate(TASKS):
            copy_task(SAMPLE_TASKS[i % len(SAMPLE_TASKS)], stack.log_root, as_id=task)
        gql.add_partitions(TASKS)
        backfill_id = gql.launch_backfill(TASKS)
        daemon = stack.start_daemon()

        def in_flight() -> list[str] | None:
            statuses = [r["status"] for r in gql.backfill(backfill_id)["runs"]]
            return statuses if statuses and not all(s in TERMINAL for s in statuses) else None

        at_restart = gql.wait("the backfill's first runs", in_flight, TIMEOUT_S, interval=0.2)
        stack.stop(daemon)
        assert gql.backfill(backfill_id)["status"] == "REQUESTED", "the daemon stopped mid-backfill"
        stack.start_daemon()

        def completed() -> dict | None:
            backfill = gql.backfill(backfill_id)
            return backfill if backfill["status"] != "REQUESTED" else None

        backfill = gql.wait("the backfill to complete after the restart", completed, TIMEOUT_S, interval=1)
        assert backfill["status"] == "COMPLETED_SUCCESS", (at_restart, backfill)
        runs = backfill["runs"]
        assert {r["status"] for r in runs} == {"SUCCESS"}
        assert len(gql.runs()) == len(runs) == len(TASKS) // BATCH, "one run per batch, none besides the backfill's"
        ranges = sorted((r["tags"][RANGE_START_TAG], r["tags"][RANGE_END_TAG]) for r in runs)
        assert ranges == [(TASKS[i], TASKS[i + BATCH - 1]) for i in range(0, len(TASKS), BATCH)], at_restart
        by_partition = gql.materialized_partitions("aistock_bundle")
        assert sorted(by_partition) == sorted(TASKS)
        assert all(len(run_ids) == 1 for run_ids in by_partition.values()), by_partition
        for run in runs:
            checks = gql.checks_by_partition(run["runId"])
            batch = TASKS[TASKS.index(run["tags"][RANGE_START_TAG]) :][:BATCH]
            assert checks == {task: dict.fromkeys(CHECK_NAMES, "PASSED") for task in batch}

    for task in TASKS:
        verify(stack.store / task)
        versions = [p for p in (stack.store / ".versions" / task).iterdir() if not p.name.startswith(".")]
        assert len(versions) == 1, f"{task} was published {len(versions)} times"
