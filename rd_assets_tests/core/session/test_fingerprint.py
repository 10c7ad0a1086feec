"""The stat-only change detector the sensor and schedule rely on."""

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from rd_assets.core.errors import InvalidLogDirError
from rd_assets.core.samples import SAMPLES_DIR
from rd_assets.core.session.fingerprint import (
    SessionFingerprint,
    scan_log_root,
    selection_fingerprint,
    session_fingerprint,
)
from rd_assets.core.session.index import SnapshotIndex
from rd_assets.core.session.task_reader import read_task

SAMPLES = SAMPLES_DIR
TASK = "2026-03-02_09-15-27-118204"


@pytest.fixture
def log_dir(copy_sample: Callable[[str], Path]) -> Path:
    return copy_sample(TASK)


def _stat_files(log_dir: Path) -> list[os.stat_result]:
    return [p.stat() for p in (log_dir / "__session__").glob("*/*")]


def test_fingerprint_counts_sizes_and_newest_mtime(log_dir: Path) -> None:
    stats = _stat_files(log_dir)
    fp = session_fingerprint(log_dir)
    assert fp == SessionFingerprint(len(stats), sum(s.st_size for s in stats), max(s.st_mtime_ns for s in stats))
    assert fp.snapshot_count == 30
    assert fp.token == f"30-{fp.total_size}-{fp.newest_mtime_ns}"


def test_fingerprint_moves_with_a_new_snapshot_and_with_a_rewrite(log_dir: Path) -> None:
    before = session_fingerprint(log_dir)
    new = log_dir / "__session__" / "6" / "0_direct_exp_gen"
    new.parent.mkdir()
    new.write_bytes(b"x" * 10)
    grown = session_fingerprint(log_dir)
    assert (grown.snapshot_count, grown.total_size) == (before.snapshot_count + 1, before.total_size + 10)
    os.utime(new, ns=(grown.newest_mtime_ns + 10**9, grown.newest_mtime_ns + 10**9))
    assert session_fingerprint(log_dir).token != grown.token


def test_files_that_are_not_snapshots_do_not_count(log_dir: Path) -> None:
    before = session_fingerprint(log_dir)
    (log_dir / "__session__" / "notes.txt").write_text("not a loop folder")
    (log_dir / "__session__" / "0" / "README").write_text("not <int>_<name>")
    (log_dir / "debug.log").write_text("other log files are never looked at")
    assert session_fingerprint(log_dir) == before


def test_selection_fingerprint_equals_the_stat_fingerprint(log_dir: Path) -> None:
    selection = read_task(log_dir, index=SnapshotIndex(None)).selection
    assert selection_fingerprint(selection) == session_fingerprint(log_dir)


def test_scan_takes_task_dirs_with_a_session_and_counts_the_rest(tmp_path: Path) -> None:
    root = tmp_path / "log"
    for name in ("2026-01-09_16-11-14-215581", "2026-01-10_00-00-00-000001"):
        (root / name / "__session__").mkdir(parents=True)
    (root / "2026-01-11_00-00-00-000002").mkdir()  # a task that has not written a snapshot folder yet
    for name in ("my-run.v2", "factor_run_7"):  # any safe name is a task, not only rdagent's timestamps
        (root / name / "__session__").mkdir(parents=True)
    for name in (".hidden", "-rf", "2026-01-09 16-11-14-215581", "x" * 129):
        (root / name / "__session__").mkdir(parents=True)
    (root / "2026-01-12_00-00-00-000003").write_text("a file named like a task")
    scan = scan_log_root(root)
    assert list(scan.tasks) == ["2026-01-09_16-11-14-215581", "2026-01-10_00-00-00-000001", "factor_run_7", "my-run.v2"]
    assert scan.tasks["2026-01-09_16-11-14-215581"] == root / "2026-01-09_16-11-14-215581"
    assert scan.ignored_count == 5
    assert "2026-01-12_00-00-00-000003" in scan.ignored
    assert scan.without_session == ["2026-01-11_00-00-00-000002"]


def test_a_symlinked_task_dir_is_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "log"
    (tmp_path / "elsewhere" / "__session__").mkdir(parents=True)
    root.mkdir()
    (root / "2026-01-09_16-11-14-215581").symlink_to(tmp_path / "elsewhere")
    scan = scan_log_root(root)
    assert scan.tasks == {}
    assert scan.ignored == ["2026-01-09_16-11-14-215581"]


def test_missing_log_root_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidLogDirError, match="does not exist"):
        scan_log_root(tmp_path / "nope")
    (tmp_path / "file").write_text("")
    with pytest.raises(InvalidLogDirError, match="not a directory"):
        scan_log_root(tmp_path / "file")
