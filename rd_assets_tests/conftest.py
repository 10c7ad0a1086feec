"""Shared pytest fixtures: the genuine samples (read-only, copied when a test must touch them) and a fresh index."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rd_assets.core.samples import FIRST_ANCHOR_TASK, PLAIN_TASK, SAMPLE_TASKS, SAMPLES_DIR, SIGNED_TASK
from rd_assets.core.session.index import SnapshotIndex

__all__ = ["FIRST_ANCHOR_TASK", "PLAIN_TASK", "SAMPLE_TASKS", "SIGNED_TASK"]

SAMPLES = SAMPLES_DIR
SAMPLE_LOGS = SAMPLES / "log"
REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_PYTHON = Path(sys.executable)
"""The interpreter running the suite (whatever environment installed the project), never a hard-coded venv."""
RD_ASSETS = Path(shutil.which("rd-assets", path=str(VENV_PYTHON.parent)) or VENV_PYTHON.parent / "rd-assets")
"""The installed console script next to that interpreter."""


def expected_for(task_id: str) -> dict[str, Any]:
    """The ground truth the real rdagent run wrote next to each sample."""
    return json.loads((SAMPLES / "expected" / f"{task_id}.expected.json").read_text())


def copy_sample_task(task_id: str, log_root: Path) -> Path:
    """Copy one sample task log dir to ``<log_root>/<task_id>``, editable (the shared tree is read-only)."""
    target = log_root / task_id
    shutil.copytree(SAMPLE_LOGS / task_id, target)
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


@pytest.fixture(scope="session", autouse=True)
def _samples_present() -> None:
    if not SAMPLE_LOGS.is_dir():
        pytest.exit(f"the shared samples are missing: {SAMPLE_LOGS}", returncode=3)


@pytest.fixture
def index(tmp_path: Path) -> Iterator[SnapshotIndex]:
    """A fresh on-disk index outside every log dir, closed after the test."""
    idx = SnapshotIndex(tmp_path / "idx.sqlite")
    yield idx
    idx.close()


@pytest.fixture
def log_root(tmp_path: Path) -> Path:
    """Where generated task log dirs go (``<log_root>/<task_id>/__session__``)."""
    root = tmp_path / "log"
    root.mkdir()
    return root


@pytest.fixture
def copy_sample(tmp_path: Path) -> Callable[[str], Path]:
    """Copy one sample task log dir into tmp_path (for tests that change files); returns the copy's log dir."""

    return lambda task_id: copy_sample_task(task_id, tmp_path / "samples-copy")
