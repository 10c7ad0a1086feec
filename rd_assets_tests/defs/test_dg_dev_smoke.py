"""What `make dev` starts, for real: `dg dev` (webserver + daemon) picks up the samples and goes green.

Starts the real processes on a free 127.0.0.1 port with a temporary DAGSTER_HOME and store, talks to the
webserver over HTTP/GraphQL only, and stops every process it started by process group. The settings reach
the code location only through a ``.env`` in the working directory (no ``RD_ASSETS_*`` variable is passed),
as ``make dev`` provides them; it runs from a temporary directory with the repository's ``workspace.yaml``
so a developer's own ``.env`` in the repository cannot redirect it (``dg check defs`` covers
``[tool.dg.project]``). A background `dg dev` ignores SIGINT unless it is reset before exec, hence the
``preexec_fn``. Opt out with ``RD_ASSETS_SKIP_SMOKE=1`` on machines that cannot run servers.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rd_assets.core.samples import SAMPLE_PATH_MAP, SAMPLE_SIGNING_KEY, SAMPLE_TASKS, SAMPLES_DIR

REPO = Path(__file__).resolve().parents[2]
SAMPLES = SAMPLES_DIR
ASSETS = ["session_snapshot", "last_sota_factor_exp", "model_weight", "factor_order", "factor_code", "aistock_bundle"]
GREEN_CHECKS = {
    "model_weight": {"model_weight_source_is_factor_exp"},
    "factor_order": {"no_workspace_traversal", "factor_order_matches_model"},
    "factor_code": {"factor_code_complete"},
    "aistock_bundle": {"bundle_integrity", "selection_ready"},
}
DEADLINE_S = 100

pytestmark = pytest.mark.skipif(os.environ.get("RD_ASSETS_SKIP_SMOKE") == "1", reason="RD_ASSETS_SKIP_SMOKE=1")

ASSET_KEYS = "{ assetNodes { assetKey { path } } }"
PARTITIONS = """query ($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) { ... on AssetNode { partitionKeys } }
}"""
MATERIALIZATIONS = """query ($path: [String!]!) {
  assetOrError(assetKey: {path: $path}) {
    ... on Asset { assetMaterializations(limit: 50) { partition runId } }
  }
}"""
CHECK_EXECUTIONS = """query ($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) {
    ... on AssetNode {
      assetChecksOrError {
        ... on AssetChecks { checks { name executionForLatestMaterialization { status } } }
      }
    }
  }
}"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop(proc: subprocess.Popen) -> None:
    """SIGINT the whole group (clean shutdown), then SIGTERM, then SIGKILL; wait until none is left."""
    pgid = proc.pid  # start_new_session=True: the group id is the leader's pid
    for sig, grace in ((signal.SIGINT, 20), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        if not _group_alive(pgid):
            break
        os.killpg(pgid, sig)
        end = time.monotonic() + grace
        while time.monotonic() < end and _group_alive(pgid):
            if proc.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.2)
            else:
                time.sleep(0.2)
    proc.wait(timeout=5)
    assert not _group_alive(pgid), "a process of the dg dev group survived SIGKILL"


@pytest.fixture
def dg_dev(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    port = _free_port()
    settings = {
        "RD_ASSETS_LOG_ROOT": str(SAMPLES / "log"),
        "RD_ASSETS_PATH_MAP": SAMPLE_PATH_MAP,
        "RD_ASSETS_STORE": str(tmp_path / "store"),
        "RD_ASSETS_INDEX": str(tmp_path / "index" / "snapshot-index.sqlite3"),
        "RD_ASSETS_KEEP_VERSIONS": "3",
        "RD_ASSETS_SIGNING_KEY": SAMPLE_SIGNING_KEY,
        "RD_ASSETS_ALLOW_UNSIGNED": "1",
    }
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    (workdir / ".env").write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RD_ASSETS_") or k == "RD_ASSETS_SAMPLES"}
    env["DAGSTER_HOME"] = str(home)
    log = tmp_path / "dg_dev.log"
    dg = Path(sys.executable).with_name("dg")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(dg), "dev", "-w", str(REPO / "workspace.yaml"), "--host", "127.0.0.1", "--port", str(port)],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_default_sigint,
        )
    try:
        yield f"http://127.0.0.1:{port}", tmp_path / "store", log
    finally:
        _stop(proc)


def _wait(what: str, probe, deadline: float, log: Path) -> Any:
    while time.monotonic() < deadline:
        try:
            value = probe()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        time.sleep(1)
    tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
    pytest.fail(f"timed out waiting for {what}; dg dev log tail:\n{tail}")


def test_dg_dev_materializes_the_samples_with_green_checks(dg_dev: tuple[str, Path, Path]) -> None:
    url, store, log = dg_dev
    deadline = time.monotonic() + DEADLINE_S
    client = httpx.Client(base_url=url, timeout=10)

    def gql(query: str, **variables: Any) -> dict:
        response = client.post("/graphql", json={"query": query, "variables": variables})
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body
        return body["data"]

    info = _wait("/server_info", lambda: client.get("/server_info").json(), deadline, log)
    assert "dagster_version" in info

    keys = _wait("the code location", lambda: gql(ASSET_KEYS)["assetNodes"], deadline, log)
    assert sorted(k["assetKey"]["path"][0] for k in keys) == sorted(ASSETS)

    def partitions() -> list[str] | None:
        found = gql(PARTITIONS, path=["session_snapshot"])["assetNodeOrError"]["partitionKeys"]
        return found if set(SAMPLE_TASKS) <= set(found) else None

    assert sorted(_wait("the sensor to add the sample partitions", partitions, deadline, log)) == sorted(SAMPLE_TASKS)

    def bundles() -> set[str] | None:
        mats = gql(MATERIALIZATIONS, path=["aistock_bundle"])["assetOrError"].get("assetMaterializations") or []
        done = {m["partition"] for m in mats}
        return done if set(SAMPLE_TASKS) <= done else None

    _wait("both sample bundles to be materialized", bundles, deadline, log)
    for task in SAMPLE_TASKS:
        assert (store / task / "manifest.json").is_file()

    def check_statuses() -> dict[str, str] | None:
        statuses = {}
        for asset in GREEN_CHECKS:
            node = gql(CHECK_EXECUTIONS, path=[asset])["assetNodeOrError"]["assetChecksOrError"]["checks"]
            statuses |= {c["name"]: (c["executionForLatestMaterialization"] or {}).get("status") for c in node}
        pending = {None, "IN_PROGRESS", "PLANNED"}
        return None if pending & set(statuses.values()) else statuses

    statuses = _wait("the checks of the last run to finish", check_statuses, deadline, log)
    assert statuses == dict.fromkeys(set().union(*GREEN_CHECKS.values()), "SUCCEEDED")
