"""What `make dev` starts, for real: `dg dev` (webserver + daemon) picks up the samples and goes green.

The shared ``dg_dev`` (``conftest.py``, :mod:`rd_assets_tests.dg_dev_testkit`) serves the three samples and
one broken task; this test talks to it over HTTP/GraphQL only.
"""

import re
import time

from rd_assets.core.samples import SAMPLE_TASKS
from rd_assets_tests.defs.conftest import BROKEN_TASK, DEV_TASKS
from rd_assets_tests.dg_dev_testkit import DgDev

ASSETS = ["session_snapshot", "last_sota_factor_exp", "model_weight", "factor_order", "factor_code", "aistock_bundle"]
GREEN_CHECKS = {
    "model_weight": {"model_weight_source_is_factor_exp"},
    "factor_order": {"no_workspace_traversal", "factor_order_matches_model"},
    "factor_code": {"factor_code_complete"},
    "aistock_bundle": {"bundle_integrity", "selection_ready"},
}
DEADLINE_S = 100
DEBUG_LINE = re.compile(r" - (?:\x1b\[\d+m)?DEBUG(?:\x1b\[0m)? - ")

ASSET_KEYS = "{ assetNodes { assetKey { path } } }"
PARTITIONS = """query ($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) { ... on AssetNode { partitionKeys } }
}"""
MATERIALIZATIONS = """query ($path: [String!]!) {
  assetOrError(assetKey: {path: $path}) {
    ... on Asset { assetMaterializations(limit: 50) { partition runId } }
  }
}"""
CHECK_EXECUTIONS = """query ($path: [String!]!, $check: String!, $partition: String!) {
  assetCheckExecutions(assetKey: {path: $path}, checkName: $check, partition: $partition, limit: 1) { status }
}"""
EVENT_TYPES = """query ($runId: ID!) {
  logsForRun(runId: $runId) { ... on EventConnection { events { __typename ... on MessageEvent { level } } } }
}"""


def test_dg_dev_materializes_the_samples_with_green_checks(dg_dev: DgDev) -> None:
    deadline = time.monotonic() + DEADLINE_S
    info = dg_dev.wait("/server_info", lambda: dg_dev.client.get("/server_info").json(), deadline)
    assert "dagster_version" in info

    keys = dg_dev.wait("the code location", lambda: dg_dev.gql(ASSET_KEYS)["assetNodes"], deadline)
    assert sorted(k["assetKey"]["path"][0] for k in keys) == sorted(ASSETS)

    def partitions() -> list[str] | None:
        found = dg_dev.gql(PARTITIONS, path=["session_snapshot"])["assetNodeOrError"]["partitionKeys"]
        return found if set(DEV_TASKS) <= set(found) else None

    assert sorted(dg_dev.wait("the sensor to add the partitions", partitions, deadline)) == sorted(DEV_TASKS)

    def bundles() -> set[str] | None:
        mats = dg_dev.gql(MATERIALIZATIONS, path=["aistock_bundle"])["assetOrError"].get("assetMaterializations") or []
        done = {m["partition"] for m in mats}
        return done if set(SAMPLE_TASKS) <= done else None

    assert dg_dev.wait("the sample bundles to be materialized", bundles, deadline) == set(SAMPLE_TASKS)
    for task in SAMPLE_TASKS:
        assert (dg_dev.store / task / "manifest.json").is_file()

    def check_statuses(task: str) -> dict[str, str] | None:
        statuses = {}
        for asset, checks in GREEN_CHECKS.items():
            for check in checks:
                found = dg_dev.gql(CHECK_EXECUTIONS, path=[asset], check=check, partition=task)
                statuses[check] = found["assetCheckExecutions"][0]["status"] if found["assetCheckExecutions"] else None
        return None if {None, "IN_PROGRESS"} & set(statuses.values()) else statuses

    every_check = set().union(*GREEN_CHECKS.values())
    for task in SAMPLE_TASKS:
        statuses = dg_dev.wait(f"the checks of {task}", lambda task=task: check_statuses(task), deadline)
        assert statuses == dict.fromkeys(every_check, "SUCCEEDED"), task
    # the broken run ended before any check ran: Dagster reports them as not executed, none as failed
    broken = dg_dev.wait("the checks of the broken task", lambda: check_statuses(BROKEN_TASK), deadline)
    assert broken == dict.fromkeys(every_check, "EXECUTION_FAILED")

    runs = dg_dev.finished_runs(set(DEV_TASKS), deadline)
    assert {task: status for task, (_, status) in runs.items()} == {
        **dict.fromkeys(SAMPLE_TASKS, "SUCCESS"),
        BROKEN_TASK: "FAILURE",
    }
    assert not (dg_dev.store / BROKEN_TASK).exists()


def test_the_terminal_shows_run_events_without_debug_lines(dg_dev: DgDev) -> None:
    """The run workers print INFO and up (the broken task's failure is there); DEBUG events stay in the UI only."""
    runs = dg_dev.finished_runs(set(DEV_TASKS), time.monotonic() + DEADLINE_S)
    output = dg_dev.log.read_text(errors="replace")
    assert "STEP_FAILURE" in output and "no_sota_factor_experiment" in output
    assert [line for line in output.splitlines() if DEBUG_LINE.search(line)] == []
    run_id, _ = runs[SAMPLE_TASKS[0]]
    events = dg_dev.gql(EVENT_TYPES, runId=run_id)["logsForRun"]["events"]
    assert {"DEBUG", "INFO"} <= {e.get("level") for e in events}
    assert "ExecutionStepStartEvent" in {e["__typename"] for e in events}
