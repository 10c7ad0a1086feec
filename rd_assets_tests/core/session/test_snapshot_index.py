"""The on-disk snapshot index: an unchanged snapshot is never unpickled twice (even across processes),
changes are re-read alone, the index never lives under a log dir, and a broken index only costs the cache."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from rd_assets.core.errors import NoSnapshotError, NoSotaFactorExperimentError
from rd_assets.core.session.index import SnapshotIndex, default_index_path
from rd_assets.core.session.task_reader import read_task
from rd_assets_tests.conftest import PLAIN_TASK, SAMPLE_LOGS, SIGNED_TASK, VENV_PYTHON, expected_for
from rd_assets_tests.rdagent_fixtures import ExperimentSpec, FactorSpec, Snap, growing_timeline, write_task

TASK = "2026-01-20_08-30-00-123456"
HIST = [
    ExperimentSpec(factors=[FactorSpec("A")], decision=True),
    ExperimentSpec(factors=[FactorSpec("B")], decision=False),
    ExperimentSpec(factors=[FactorSpec("C")], decision=True),
    ExperimentSpec(factors=[FactorSpec("D")], decision=True),
]

READ_IN_SUBPROCESS = """
import json, sys
from pathlib import Path
from rd_assets.core.session.task_reader import read_task
from rd_assets.core.session.index import SnapshotIndex
reading = read_task(Path(sys.argv[1]), index=SnapshotIndex(Path(sys.argv[2])))
print(json.dumps({"unpickled": reading.unpickled, "chosen": reading.selection.chosen_snapshot,
                  "anchor": reading.anchor.last_sota_factor_index}))
"""


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and mtime_ns (directories included)."""
    return {
        str(p.relative_to(root)): (p.lstat().st_size if not p.is_dir() else -1, p.lstat().st_mtime_ns)
        for p in [root, *root.rglob("*")]
    }


@pytest.fixture
def task(log_root: Path) -> Path:
    return write_task(log_root, TASK, growing_timeline(3), hist=HIST)


def test_second_read_unpickles_nothing(task: Path, index: SnapshotIndex) -> None:
    cold = read_task(task, index=index)
    assert cold.unpickled == 12
    assert cold.chosen is not None
    warm = read_task(task, index=index)
    assert warm.unpickled == 0
    assert warm.chosen is None
    assert warm.selection == cold.selection
    assert warm.anchor == cold.anchor


def test_index_is_shared_across_processes(task: Path, tmp_path: Path) -> None:
    index_path = tmp_path / "shared.sqlite"
    first = read_task(task, index=SnapshotIndex(index_path))
    assert first.unpickled == 12
    out = subprocess.run(
        [str(VENV_PYTHON), "-c", READ_IN_SUBPROCESS, str(task), str(index_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(out.stdout) == {"unpickled": 0, "chosen": "__session__/2/3_feedback", "anchor": 2}


def test_touching_one_file_rereads_only_that_file(task: Path, index: SnapshotIndex) -> None:
    read_task(task, index=index)
    touched = task / "__session__" / "1" / "1_coding"
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    again = read_task(task, index=index)
    assert again.unpickled == 1
    assert again.chosen is None  # the chosen snapshot's interpretation still came from the index
    assert {c.relpath: c.mtime_ns for c in again.selection.candidates}[touched.relative_to(task).as_posix()] == (
        st.st_mtime_ns + 1_000_000_000
    )
    assert read_task(task, index=index).unpickled == 0


def test_touching_the_chosen_file_rereads_it_once(task: Path, index: SnapshotIndex) -> None:
    cold = read_task(task, index=index)
    chosen = task / cold.selection.chosen_snapshot
    st = chosen.stat()
    os.utime(chosen, ns=(st.st_atime_ns, st.st_mtime_ns + 5))
    again = read_task(task, index=index)
    assert again.unpickled == 1  # selection and interpretation share the one unpickle
    assert again.anchor == cold.anchor


def test_rewritten_file_with_new_content_is_seen(task: Path, index: SnapshotIndex) -> None:
    """Same relpath, different bytes (a resumed run overwrote it): the key (size, mtime_ns) changes, so is re-read."""
    read_task(task, index=index)
    write_task(task.parent, TASK, [Snap(2, 3, "feedback", 4)], hist=HIST)
    again = read_task(task, index=index)
    assert again.unpickled == 1
    assert again.selection.hist_len == 4
    assert again.anchor is not None and again.anchor.last_sota_factor_index == 3


def test_adding_a_snapshot_reads_only_the_new_one(task: Path, index: SnapshotIndex) -> None:
    read_task(task, index=index)
    write_task(task.parent, TASK, [Snap(3, 0, "direct_exp_gen", 4)], hist=HIST)
    again = read_task(task, index=index)
    assert again.unpickled == 1
    assert again.selection.chosen_snapshot == "__session__/3/0_direct_exp_gen"
    assert again.anchor is not None and [f.name for f in again.anchor.sota_factors] == ["A", "C", "D"]


def test_adding_a_shorter_snapshot_keeps_the_cached_choice(task: Path, index: SnapshotIndex) -> None:
    read_task(task, index=index)
    write_task(task.parent, TASK, [Snap(4, 0, "direct_exp_gen", 1)], hist=HIST)
    again = read_task(task, index=index)
    assert again.unpickled == 1
    assert again.chosen is None
    assert again.selection.chosen_snapshot == "__session__/2/3_feedback"


def test_skip_reasons_are_cached_too(log_root: Path, index: SnapshotIndex) -> None:
    timeline = [*growing_timeline(2), Snap(2, 0, "direct_exp_gen", 3, truncate_to=64)]
    log_dir = write_task(log_root, TASK, timeline, hist=HIST)
    cold = read_task(log_dir, index=index)
    warm = read_task(log_dir, index=index)
    assert warm.unpickled == 0
    assert warm.selection == cold.selection
    assert warm.selection.skipped == 1


def test_cached_no_sota_error_is_served_warm(log_root: Path, index: SnapshotIndex) -> None:
    hist = [ExperimentSpec(factors=[FactorSpec("A")], decision=False)]
    log_dir = write_task(log_root, TASK, growing_timeline(1), hist=hist)
    cold = read_task(log_dir, index=index)
    warm = read_task(log_dir, index=index)
    assert warm.unpickled == 0
    assert cold.error is not None and warm.error is not None
    assert (warm.error.code, warm.error.message) == (cold.error.code, cold.error.message)
    assert isinstance(cold.error, NoSotaFactorExperimentError)
    assert isinstance(warm.error, NoSotaFactorExperimentError)


def test_a_different_signing_key_never_reuses_verified_entries(index: SnapshotIndex) -> None:
    """A summary cached as "verified" under one key must not vouch for the file under another key."""
    log_dir = SAMPLE_LOGS / SIGNED_TASK
    key = expected_for(SIGNED_TASK)["signing_key"]
    assert read_task(log_dir, index=index, signing_key=key).selection.signature == "verified"
    with pytest.raises(NoSnapshotError, match="signature_mismatch"):
        read_task(log_dir, index=index, signing_key=key + "x")
    unverified = read_task(log_dir, index=index, signing_key=None)
    assert unverified.selection.signature == "signature not verified"
    assert read_task(log_dir, index=index, signing_key=key).selection.signature == "verified"


def test_the_index_is_never_created_under_the_log_dir(
    copy_sample: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_dir = copy_sample(PLAIN_TASK)
    monkeypatch.delenv("RD_ASSETS_INDEX", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(log_dir)
    path = default_index_path()
    assert log_dir not in path.parents
    before = tree(log_dir)
    index = SnapshotIndex(path)
    read_task(log_dir, index=index)
    assert read_task(log_dir, index=index).unpickled == 0
    index.close()
    assert tree(log_dir) == before
    assert path.is_file() and path.parent == tmp_path / "cache" / "rd-assets"


@pytest.mark.parametrize("where", ["log-dir", "session-dir", "nested"])
def test_an_index_path_inside_the_log_dir_is_refused(task: Path, where: str) -> None:
    path = {
        "log-dir": task / "idx.sqlite",
        "session-dir": task / "__session__" / "idx.sqlite",
        "nested": task / "cache" / "rd" / "idx.sqlite",
    }[where]
    before = tree(task)
    index = SnapshotIndex(path)
    reading = read_task(task, index=index)
    assert reading.anchor is not None
    assert index.unavailable_reason and "inside the log dir" in index.unavailable_reason
    assert not index.enabled
    assert read_task(task, index=index).unpickled == 12
    assert tree(task) == before


def test_env_var_chooses_the_index_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RD_ASSETS_INDEX", str(tmp_path / "elsewhere" / "i.sqlite"))
    assert default_index_path() == tmp_path / "elsewhere" / "i.sqlite"


@pytest.mark.parametrize("kind", ["parent-is-a-file", "index-is-a-directory", "garbage-file"])
def test_unusable_index_degrades_but_reading_still_works(task: Path, tmp_path: Path, kind: str) -> None:
    blocker = tmp_path / "blocker"
    if kind == "parent-is-a-file":
        blocker.write_text("not a directory")
        path = blocker / "idx.sqlite"
    elif kind == "index-is-a-directory":
        path = blocker
        path.mkdir()
    else:
        path = blocker
        path.write_bytes(b"this is not an sqlite database" * 100)
    index = SnapshotIndex(path)
    assert not index.enabled
    assert index.unavailable_reason and str(path) in index.unavailable_reason
    first = read_task(task, index=index)
    second = read_task(task, index=index)
    assert first.anchor is not None and first.anchor == second.anchor
    assert second.unpickled == first.unpickled == 12


def test_disabled_index(task: Path) -> None:
    index = SnapshotIndex(None)
    assert not index.enabled and index.unavailable_reason == "index disabled"
    assert read_task(task, index=index).unpickled == read_task(task, index=index).unpickled == 12


def test_concurrent_processes_share_one_index(task: Path, tmp_path: Path) -> None:
    """Several cold readers at once (a sensor and a CLI, say): all succeed, and afterwards nothing is re-read."""
    index_path = tmp_path / "shared.sqlite"
    procs = [
        subprocess.Popen(
            [str(VENV_PYTHON), "-c", READ_IN_SUBPROCESS, str(task), str(index_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    assert {(r["chosen"], r["anchor"]) for r in results} == {("__session__/2/3_feedback", 2)}
    assert read_task(task, index=SnapshotIndex(index_path)).unpickled == 0
