"""A run worker SIGKILLed mid-run: the run is marked failed, retried from the failure, and the bundle is whole.

The code server that spawned the worker notices its death and fails the run; ``run_retries`` in
deploy/dagster.yaml then launches a retry (``dagster/parent_run_id``) that finishes the chain. At no moment is
a partial bundle visible in the store: before the retry publishes, the task has no bundle at all.
"""

from __future__ import annotations

import os
import signal

from rd_assets.core.samples import SIGNED_TASK
from rd_assets_tests.deploy.conftest import verify
from rd_assets_tests.deploy.stack import TERMINAL, DeployStack, graphql_for

TIMEOUT_S = 240


def test_killed_run_worker_is_failed_then_retried_to_a_complete_bundle(stack: DeployStack) -> None:
    code_server = stack.start_with_task(SIGNED_TASK)
    bundle = stack.store / SIGNED_TASK

    with graphql_for(stack) as gql:
        gql.ready()
        run_id = gql.mid_run(SIGNED_TASK, TIMEOUT_S)
        os.kill(gql.the_run_worker(code_server, run_id).pid, signal.SIGKILL)

        failed = gql.wait(
            "the killed run to be marked failed",
            lambda: next(
                (r for r in gql.runs_of(SIGNED_TASK) if r["runId"] == run_id and r["status"] in TERMINAL), None
            ),
            TIMEOUT_S,
        )
        assert failed["status"] == "FAILURE"
        assert any("signal 9" in (e.get("message") or "") for e in gql.run_events(run_id)), "the cause is named"
        assert not bundle.exists() or verify(bundle), "a partial bundle is visible"

        def retried() -> dict | None:
            runs = gql.runs_of(SIGNED_TASK)
            retry = next((r for r in runs if r["tags"].get("dagster/parent_run_id") == run_id), None)
            return retry if retry is not None and retry["status"] in TERMINAL else None

        retry = gql.wait("the automatic retry to finish", retried, TIMEOUT_S)
        assert retry["status"] == "SUCCESS", stack.tails()
        assert retry["tags"].get("dagster/retry_number") == "1"
        assert len(gql.runs_of(SIGNED_TASK)) == 2, "one failed run and one retry, nothing else"
        assert gql.materialized_partitions("aistock_bundle") == {SIGNED_TASK: [retry["runId"]]}, (
            "the killed run stopped before the end of the chain; the retry published"
        )

    verify(bundle)
    versions = stack.store / ".versions" / SIGNED_TASK
    assert [p.name for p in versions.iterdir() if not p.name.startswith(".")] == [os.readlink(bundle).split("/")[-1]]
    assert not [p for p in versions.iterdir() if p.name.startswith(".tmp-")], "a half-written version was left"
