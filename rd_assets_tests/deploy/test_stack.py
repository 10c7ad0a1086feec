"""The deployment of deploy/README.md, for real: code server, webserver and daemon on PostgreSQL.

Task dirs dropped into the log root become partitions (sensor), queued runs execute in their own processes
(DefaultRunLauncher through the code server), every asset check passes, every bundle verifies with
``rd-assets verify``, the UI's GraphQL reports it all, and nothing under the log root changes.
"""

from __future__ import annotations

from rd_assets.core.samples import SAMPLE_TASKS
from rd_assets_tests.deploy.conftest import tree_state, verify
from rd_assets_tests.deploy.stack import ASSETS, TERMINAL, DeployStack, copy_task, graphql_for

TIMEOUT_S = 240


def test_dropped_tasks_are_materialized_checked_published_and_reported(stack: DeployStack) -> None:
    for task in SAMPLE_TASKS:
        copy_task(task, stack.log_root)
    before = tree_state(stack.log_root)
    stack.start_code_server()
    stack.start_webserver()
    stack.start_daemon()

    with graphql_for(stack) as gql:
        gql.ready()
        gql.wait("the sensor to add one partition per task", lambda: set(gql.partitions()) == set(SAMPLE_TASKS), 120)

        def finished() -> list[dict] | None:
            runs = gql.runs()
            return runs if len(runs) >= len(SAMPLE_TASKS) and all(r["status"] in TERMINAL for r in runs) else None

        runs = gql.wait("the sensor's runs to finish", finished, TIMEOUT_S)
        run_of = {r["tags"]["dagster/partition"]: r["runId"] for r in runs}
        assert sorted(run_of) == sorted(SAMPLE_TASKS), "exactly one run per task"
        assert {r["status"] for r in runs} == {"SUCCESS"}, stack.tails()
        assert {r["tags"].get("dagster/sensor_name") for r in runs} == {"rd_task_sensor"}

        pids = {gql.worker_pid(run_id) for run_id in run_of.values()}
        assert len(pids) == len(runs), "each run executed in a process of its own"
        assert not pids & {s.pid for s in stack.services}, "no run executed inside a long-running process"

        for asset in ASSETS:
            by_partition = gql.materialized_partitions(asset)
            assert {t: by_partition.get(t) for t in SAMPLE_TASKS} == {t: [run_of[t]] for t in SAMPLE_TASKS}, asset

        checks = gql.defined_checks()
        assert checks, "the code location defines asset checks"
        for task, run_id in run_of.items():
            assert gql.checks_of_run(run_id) == dict.fromkeys(checks, "PASSED"), task

    for task in SAMPLE_TASKS:
        verify(stack.store / task)
    assert tree_state(stack.log_root) == before, "something was written under the log root"
