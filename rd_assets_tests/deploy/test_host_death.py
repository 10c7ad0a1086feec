"""A host dies mid-run, taking its code server and the run worker with it: the run is failed and retried.

Nothing is left to report the worker's death (the DefaultRunLauncher has no worker health check), so the run stays
STARTED until run monitoring's ``max_runtime_seconds`` fails it; run retries then launch a retry, which runs once a
code server answers again at the workspace's address (the host, or its replacement, came back). Here the limit is
lowered to 20 s so the test does not wait the production hour. The store never shows a partial bundle, and the task
is published exactly once.
"""

from __future__ import annotations

import os

import psutil

from rd_assets.core.samples import SIGNED_TASK
from rd_assets_tests.deploy.conftest import verify
from rd_assets_tests.deploy.stack import TERMINAL, DeployStack, graphql_for

MAX_RUNTIME_S = 20
TIMEOUT_S = 240


def dead(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_run_on_a_dead_host_is_failed_by_monitoring_and_retried(stack: DeployStack) -> None:
    stack.configure_instance(run_monitoring={"max_runtime_seconds": MAX_RUNTIME_S, "poll_interval_seconds": 5})
    code_server = stack.start_with_task(SIGNED_TASK)
    bundle = stack.store / SIGNED_TASK

    with graphql_for(stack) as gql:
        gql.ready()
        run_id = gql.mid_run(SIGNED_TASK, TIMEOUT_S)
        worker = gql.the_run_worker(code_server, run_id)
        stack.kill_host(code_server)
        assert dead(worker), "the run worker died with its host"
        assert not bundle.exists(), "the run died before publishing"
        stack.start_code_server(port=code_server.port)  # the host (or its replacement) is back

        def ended(wanted: str) -> dict | None:
            return next((r for r in gql.runs_of(SIGNED_TASK) if r["runId"] == wanted and r["status"] in TERMINAL), None)

        failed = gql.wait("run monitoring to fail the dead host's run", lambda: ended(run_id), TIMEOUT_S, interval=1)
        assert failed["status"] == "FAILURE"
        messages = " ".join(e.get("message") or "" for e in gql.run_events(run_id))
        assert f"exceeding maximum runtime of {MAX_RUNTIME_S} seconds" in messages, messages[-2000:]

        def retried() -> dict | None:
            runs = gql.runs_of(SIGNED_TASK)
            retry = next((r for r in runs if r["tags"].get("dagster/parent_run_id") == run_id), None)
            return retry if retry is not None and retry["status"] in TERMINAL else None

        retry = gql.wait("the retry to finish", retried, TIMEOUT_S, interval=1)
        assert retry["status"] == "SUCCESS", stack.tails()
        assert gql.materialized_partitions("aistock_bundle") == {SIGNED_TASK: [retry["runId"]]}

    verify(bundle)
    versions = stack.store / ".versions" / SIGNED_TASK
    assert [p.name for p in versions.iterdir() if not p.name.startswith(".")] == [os.readlink(bundle).split("/")[-1]]
