"""Two hosts, one store: run workers with their own snapshot index publish into one shared bundle store.

Each "host" is a code server with its own ``RD_ASSETS_INDEX`` (the index is a per-host SQLite cache) and the
same ``RD_ASSETS_STORE``; both load the same code location under two names, so both sensors request a run for
every task on their first tick: a burst of two requests per task at the same moment. The instance's tag
concurrency limit (``dagster/partition``, one run per value) must hold the second run of each task back until
the first has ended, while different tasks still run in parallel. The second publication of a task finds the
identical bundle current and writes nothing, so every task has exactly one version, and it verifies.
"""

from __future__ import annotations

import sqlite3
from itertools import combinations

from rd_assets.core.samples import SAMPLE_TASKS
from rd_assets_tests.deploy.conftest import tree_state, verify
from rd_assets_tests.deploy.stack import TERMINAL, DeployStack, copy_task, graphql_for

TASKS = [*SAMPLE_TASKS, f"copy-{SAMPLE_TASKS[0]}"]
HOSTS = {"rd_assets": "a", "rd_assets_b": "b"}
TIMEOUT_S = 300


def indexed_log_dirs(index: str) -> set[str]:
    with sqlite3.connect(f"file:{index}?mode=ro", uri=True) as db:
        return {row[0] for row in db.execute("SELECT DISTINCT log_dir FROM entries")}


def test_two_hosts_publish_into_one_store_and_never_run_one_task_twice_at_once(stack: DeployStack) -> None:
    for task in TASKS:
        copy_task(task.removeprefix("copy-"), stack.log_root, as_id=task)
    before = tree_state(stack.log_root)
    for location, host in HOSTS.items():
        stack.start_code_server(location, host=host)
    stack.start_webserver()
    stack.start_daemon()

    with graphql_for(stack) as gql:
        gql.ready()

        def finished() -> list[dict] | None:
            runs = gql.runs()
            return runs if len(runs) >= 2 * len(TASKS) and all(r["status"] in TERMINAL for r in runs) else None

        runs = gql.wait("both hosts' runs to finish", finished, TIMEOUT_S, interval=1)

    assert len(runs) == 2 * len(TASKS) and {r["status"] for r in runs} == {"SUCCESS"}, stack.tails()
    held_back = []
    for task in TASKS:
        mine = sorted((r for r in runs if r["tags"]["dagster/partition"] == task), key=lambda r: r["startTime"])
        assert sorted(r["tags"]["dagster/code_location"] for r in mine) == sorted(HOSTS), task
        first, second = mine
        assert second["startTime"] >= first["endTime"], f"two runs of {task} overlapped"
        if second["creationTime"] < first["endTime"]:
            held_back.append(task)
    assert held_back, "no second run was requested while the first ran: the burst did not test the limit"
    assert any(a["startTime"] < b["endTime"] and b["startTime"] < a["endTime"] for a, b in combinations(runs, 2)), (
        "different tasks ran in parallel"
    )

    for host in HOSTS.values():
        indexed = indexed_log_dirs(str(stack.index_path(host)))
        assert {d.rsplit("/", 1)[-1] for d in indexed} == set(TASKS), f"host {host} read every task itself"
    for task in TASKS:
        verify(stack.store / task)
        versions = [p for p in (stack.store / ".versions" / task).iterdir() if not p.name.startswith(".")]
        assert len(versions) == 1, f"{task}: the identical second publication wrote a new version"
    assert tree_state(stack.log_root) == before, "something was written under the log root"
