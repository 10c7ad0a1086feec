"""``rd-assets inspect`` as a user runs it: a real subprocess of the installed console script."""

from __future__ import annotations

import json
import os
import pty
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rd_assets.core.contracts.models import SCHEMA_VERSION
from rd_assets_tests.conftest import (
    PLAIN_TASK,
    RD_ASSETS,
    SAMPLE_LOGS,
    SAMPLE_TASKS,
    SIGNED_TASK,
    expected_for,
)
from rd_assets_tests.rdagent_fixtures import ExperimentSpec, FactorSpec, Snap, growing_timeline, write_task


def run_inspect(log_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("RD_ASSETS_SIGNING_KEY", "RD_ASSETS_INDEX")}
    return subprocess.run(
        [str(RD_ASSETS), "inspect", str(log_dir), *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=120,
    )


def inspect_json(log_dir: Path, tmp_path: Path, **kw: Any) -> tuple[int, dict[str, Any]]:
    proc = run_inspect(log_dir, "--json", "--index", str(tmp_path / "idx.sqlite"), **kw)
    return proc.returncode, json.loads(proc.stdout)


def key_env(task_id: str) -> dict[str, str]:
    key = expected_for(task_id).get("signing_key")
    return {"RD_ASSETS_SIGNING_KEY": key} if key else {}


def tree(root: Path) -> dict[str, tuple[int, int, int]]:
    return {
        str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns, p.lstat().st_mode)
        for p in [root, *root.rglob("*")]
    }


@pytest.mark.parametrize("task_id", SAMPLE_TASKS)
def test_inspect_json_on_the_samples(task_id: str, tmp_path: Path) -> None:
    exp = expected_for(task_id)
    code, doc = inspect_json(SAMPLE_LOGS / task_id, tmp_path, env=key_env(task_id))
    assert code == 0
    assert doc["schema_version"] == SCHEMA_VERSION
    assert doc["ok"] is True and doc["error"] is None
    assert doc["task_id"] == task_id
    assert doc["chosen_snapshot"] == exp["chosen_snapshot_relpath"]
    assert doc["hist_len"] == exp["hist_len"]
    assert doc["last_sota_factor_index"] == exp["last_sota_factor_index"]
    assert [f["name"] for f in doc["sota_factors"]] == exp["sota_factor_names"]
    assert [f["code_sha256"] for f in doc["sota_factors"]] == [f["factor_py_sha256"] for f in exp["factors"]]
    assert len(doc["candidates"]) == len(list((SAMPLE_LOGS / task_id).glob("__session__/*/*")))
    expected_signature = "verified" if exp["format"] == "signed" else "unsigned"
    assert {c["signature"] for c in doc["candidates"]} == {expected_signature}


def test_inspect_table(tmp_path: Path) -> None:
    exp = expected_for(PLAIN_TASK)
    proc = run_inspect(SAMPLE_LOGS / PLAIN_TASK, "--index", str(tmp_path / "idx.sqlite"))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"chosen snapshot: {exp['chosen_snapshot_relpath']}  hist_len={exp['hist_len']}" in out
    assert f"last SOTA factor experiment: trace.hist[{exp['last_sota_factor_index']}]" in out
    chosen_rows = [line for line in out.splitlines() if line.startswith("* ")]
    assert len(chosen_rows) == 1 and exp["chosen_snapshot_relpath"] in chosen_rows[0]
    factor_rows = out.split("SOTA factors:")[1].splitlines()[2:]
    assert [row.split()[1] for row in factor_rows if row.strip()] == exp["sota_factor_names"]


def test_no_sota_factor_experiment_fails_with_its_code(log_root: Path, tmp_path: Path) -> None:
    hist = [ExperimentSpec(factors=[FactorSpec("A")], decision=False), ExperimentSpec(kind="model", decision=True)]
    log_dir = write_task(log_root, "2026-01-05_00-00-00-000000", growing_timeline(2), hist=hist)
    code, doc = inspect_json(log_dir, tmp_path)
    assert code != 0
    assert doc["ok"] is False
    assert doc["error"]["code"] == "no_sota_factor_experiment"
    assert doc["chosen_snapshot"] == "__session__/1/3_feedback" and doc["hist_len"] == 2
    assert doc["last_sota_factor_index"] is None and doc["sota_factors"] == []
    table = run_inspect(log_dir, "--no-index")
    assert table.returncode == code
    assert "error" not in table.stdout and "SOTA factors" not in table.stdout
    assert "__session__/1/3_feedback" in table.stdout
    assert table.stderr.count("error:") == 1
    assert table.stderr.startswith("error: no_sota_factor_experiment: ")


def test_wrong_signing_key_fails_with_every_candidate_listed(tmp_path: Path) -> None:
    code, doc = inspect_json(SAMPLE_LOGS / SIGNED_TASK, tmp_path, env={"RD_ASSETS_SIGNING_KEY": "wrong"})
    assert code != 0
    assert doc["error"]["code"] == "no_snapshot"
    assert len(doc["candidates"]) == len(list((SAMPLE_LOGS / SIGNED_TASK).glob("__session__/*/*")))
    assert {c["error"]["code"] for c in doc["candidates"]} == {"signature_mismatch"}


def test_missing_log_dir(tmp_path: Path) -> None:
    code, doc = inspect_json(tmp_path / "nope", tmp_path)
    assert code != 0
    assert doc["error"]["code"] == "invalid_log_dir"
    assert doc["candidates"] == []
    human = run_inspect(tmp_path / "nope", "--no-index")
    assert human.returncode == code and human.stdout == ""
    assert human.stderr.count("error:") == 1 and human.stderr.startswith("error: invalid_log_dir: ")


def test_skipped_candidates_are_shown_with_their_reason(log_root: Path, tmp_path: Path) -> None:
    hist = [ExperimentSpec(factors=[FactorSpec("A")], decision=True)] * 2
    timeline = [
        *growing_timeline(1),
        Snap(1, 0, "direct_exp_gen", 2, truncate_to=200),
        Snap(1, 1, "coding", 2, raw=b""),
    ]
    log_dir = write_task(log_root, "2026-01-05_00-00-00-000000", timeline, hist=hist)
    code, doc = inspect_json(log_dir, tmp_path)
    assert code == 0
    reasons = {c["relpath"]: c["error"] and c["error"]["code"] for c in doc["candidates"]}
    assert reasons["__session__/1/0_direct_exp_gen"] == reasons["__session__/1/1_coding"] == "unreadable_snapshot"
    assert doc["chosen_snapshot"] == "__session__/0/3_feedback"
    table = run_inspect(log_dir, "--no-index").stdout
    assert "unreadable_snapshot: empty file" in table


def test_progress_is_drawn_on_a_terminal(tmp_path: Path) -> None:
    """Many snapshots + stderr is a tty -> an updating progress line; never when piped."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.run(
            [str(RD_ASSETS), "inspect", str(SAMPLE_LOGS / PLAIN_TASK), "--no-index"],
            stdout=subprocess.PIPE,
            stderr=slave,
            timeout=120,
        )
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
    assert proc.returncode == 0
    progress = b"".join(chunks).decode()
    assert "scanning snapshots 30/30" in progress
    assert "scanning snapshots" not in run_inspect(SAMPLE_LOGS / PLAIN_TASK, "--no-index").stderr


def test_inspect_never_writes_under_the_log_dir(copy_sample: Callable[[str], Path], tmp_path: Path) -> None:
    """Read-only copy, default index location (XDG cache): the tree (names, sizes, mtimes, modes) is unchanged."""
    log_dir = copy_sample(PLAIN_TASK)
    for path in [log_dir, *log_dir.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    before = tree(log_dir)
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "HOME": str(tmp_path / "home")}
    first = run_inspect(log_dir, "--json", env=env)
    second = run_inspect(log_dir, env=env)
    inside = run_inspect(log_dir, "--json", "--index", str(log_dir / "idx.sqlite"))
    assert (first.returncode, second.returncode, inside.returncode) == (0, 0, 0), first.stderr + inside.stderr
    assert json.loads(first.stdout)["chosen_snapshot"] == expected_for(PLAIN_TASK)["chosen_snapshot_relpath"]
    assert (tmp_path / "cache" / "rd-assets" / "snapshot-index.sqlite3").is_file()
    assert tree(log_dir) == before
