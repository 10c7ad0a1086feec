"""The real ``dg dev`` (webserver + daemon) as ``make dev`` starts it, for the tests that drive it end to end.

It runs on a free 127.0.0.1 port with a temporary DAGSTER_HOME and store; the settings reach the code location
only through a ``.env`` in its working directory (no ``RD_ASSETS_*`` variable is passed), as ``make dev``
provides them. The working directory is a temporary one with the repository's ``workspace.yaml``, so a
developer's own ``.env`` in the repository cannot redirect it (``dg check defs`` covers ``[tool.dg.project]``).
The tests talk to it over HTTP/GraphQL (or a browser) only, and every process it started is stopped by its
process group. A background ``dg dev`` ignores SIGINT unless it is reset before exec, hence ``preexec_fn``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from rd_assets.core.samples import SAMPLE_PATH_MAP, SAMPLE_SIGNING_KEY

REPO = Path(__file__).resolve().parents[1]
DG = Path(sys.executable).with_name("dg")
TERMINAL_RUN_STATUSES = frozenset({"SUCCESS", "FAILURE", "CANCELED"})
RUNS = "{ runsOrError { ... on Runs { results { runId status tags { key value } } } } }"
PARTITION_TAG = "dagster/partition"

T = TypeVar("T")


def free_port() -> int:
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


def stop_group(proc: subprocess.Popen) -> None:
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


@dataclass
class DgDev:
    """A running ``dg dev``: its URL, the bundle store and log root it was given, and its combined output."""

    url: str
    log_root: Path
    store: Path
    log: Path
    client: httpx.Client

    def gql(self, query: str, **variables: Any) -> dict:
        response = self.client.post("/graphql", json={"query": query, "variables": variables})
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body
        return body["data"]

    def wait(self, what: str, probe: Callable[[], T | None], deadline: float) -> T:
        """Poll ``probe`` every second until it returns something truthy; fail with the log's tail at ``deadline``."""
        while time.monotonic() < deadline:
            try:
                value = probe()
            except httpx.HTTPError:
                value = None
            if value:
                return value
            time.sleep(1)
        tail = self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""
        pytest.fail(f"timed out waiting for {what}; dg dev log tail:\n{tail}")

    def finished_runs(self, partitions: set[str], deadline: float) -> dict[str, tuple[str, str]]:
        """``{partition: (run_id, status)}`` of the newest run of each partition, once every one has ended."""

        def probe() -> dict[str, tuple[str, str]] | None:
            newest: dict[str, tuple[str, str]] = {}
            for run in self.gql(RUNS)["runsOrError"]["results"]:  # newest first
                tags = {t["key"]: t["value"] for t in run["tags"]}
                newest.setdefault(tags.get(PARTITION_TAG, ""), (run["runId"], run["status"]))
            runs = {p: newest[p] for p in partitions if p in newest}
            done = len(runs) == len(partitions) and all(s in TERMINAL_RUN_STATUSES for _, s in runs.values())
            return runs if done else None

        return self.wait(f"the runs of {sorted(partitions)} to finish", probe, deadline)


def dev_settings(log_root: Path, tmp: Path) -> dict[str, str]:
    """What ``.env.example`` sets for ``make dev``, with the log root given and everything written under ``tmp``."""
    return {
        "RD_ASSETS_LOG_ROOT": str(log_root),
        "RD_ASSETS_PATH_MAP": SAMPLE_PATH_MAP,
        "RD_ASSETS_STORE": str(tmp / "store"),
        "RD_ASSETS_INDEX": str(tmp / "index" / "snapshot-index.sqlite3"),
        "RD_ASSETS_KEEP_VERSIONS": "3",
        "RD_ASSETS_SIGNING_KEY": SAMPLE_SIGNING_KEY,
        "RD_ASSETS_ALLOW_UNSIGNED": "1",
    }


@contextlib.contextmanager
def running_dg_dev(tmp: Path, log_root: Path) -> Iterator[DgDev]:
    """Start ``dg dev`` on ``log_root`` (state under ``tmp``), yield it, stop its whole process group."""
    home = tmp / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    workdir = tmp / "workdir"
    workdir.mkdir()
    (workdir / ".env").write_text("".join(f"{k}={v}\n" for k, v in dev_settings(log_root, tmp).items()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RD_ASSETS_") or k == "RD_ASSETS_SAMPLES"}
    env["DAGSTER_HOME"] = str(home)
    log = tmp / "dg_dev.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                str(DG),
                "dev",
                "-w",
                str(REPO / "workspace.yaml"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "info",
            ],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_default_sigint,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            yield DgDev(url, log_root, tmp / "store", log, client)
    finally:
        stop_group(proc)
