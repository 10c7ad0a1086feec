"""PostgreSQL stopped for a while under a running deployment: the run in flight fails loudly, nothing hangs.

Every process keeps its connections (``rd_assets.instance.pooled_postgres_storage``). Stopping the server
breaks them: a database call of the run worker running at that moment fails (``server closed the connection
unexpectedly``); a later one finds its connection broken at checkout and connects anew, which dagster-postgres
retries for about 6 s (5 tries, exponential backoff) before ``too many retries for DB connection`` names
``Connection refused`` at the configured host and port. Depending on where it lands, the step fails or the
worker exits and its code server marks the run failed. Either way the logs name the cause, run retries
re-execute the run, and the sensor's next tick after the outage picks up a task that appeared meanwhile. This
test runs its own server, since it stops it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rd_assets.core.samples import FIRST_ANCHOR_TASK, PLAIN_TASK
from rd_assets_tests.deploy.conftest import started_postgres, verify
from rd_assets_tests.deploy.stack import TERMINAL, DeployStack, copy_task, graphql_for

OUTAGE_S = 15
BROKEN = "(psycopg2.OperationalError) server closed the connection unexpectedly"
"""What a kept connection (deploy/dagster.yaml pools them) reports when the outage breaks it under a run worker."""
TIMEOUT_S = 240


def test_postgres_outage_fails_the_run_in_flight_loudly_and_the_next_tick_recovers(
    make_stack: Callable[..., DeployStack],
) -> None:
    server = started_postgres()
    try:
        stack = make_stack(server)
        copy_task(PLAIN_TASK, stack.log_root)
        code_server = stack.start_code_server()
        stack.start_webserver()
        daemon = stack.start_daemon()
        with graphql_for(stack) as gql:
            gql.ready()
            run_id = gql.mid_run(PLAIN_TASK, TIMEOUT_S)
            server.stop()
            time.sleep(OUTAGE_S)
            server.start()
            copy_task(FIRST_ANCHOR_TASK, stack.log_root)  # appears after the outage: only a working tick sees it

            def settled() -> list[dict] | None:
                runs = gql.runs()
                by_task = {r["tags"]["dagster/partition"] for r in runs}
                done = all(r["status"] in TERMINAL for r in runs) and by_task == {PLAIN_TASK, FIRST_ANCHOR_TASK}
                return runs if done and any(r["status"] == "SUCCESS" for r in gql.runs_of(PLAIN_TASK)) else None

            runs = gql.wait("the deployment to recover", settled, TIMEOUT_S, interval=1)
            statuses = {r["runId"]: r["status"] for r in runs}
            assert statuses[run_id] == "FAILURE", "the run in flight during the outage failed"
            retry = [r for r in runs if r["tags"].get("dagster/parent_run_id") == run_id]
            assert [r["status"] for r in retry] == ["SUCCESS"], "run retries re-executed it"
            assert [r["status"] for r in gql.runs_of(FIRST_ANCHOR_TASK)] == ["SUCCESS"], "the next tick recovered"

        port = f'"127.0.0.1", port {server.port} failed: Connection refused'
        worker_log = code_server.service.log.read_text(errors="replace")
        refused = "too many retries for DB connection" in worker_log and port in worker_log
        assert refused or BROKEN in worker_log, "the run worker's log names the database as the cause"
        assert port in daemon.log.read_text(errors="replace"), "the daemon names the unreachable database"
        for task in (PLAIN_TASK, FIRST_ANCHOR_TASK):
            verify(stack.store / task)
    finally:
        stack.stop_all()
        server.remove()
