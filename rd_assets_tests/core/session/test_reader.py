"""reload_anchor: the second read of the chosen snapshot (for uncached weight bytes) must belong to
the selection it is paired with; a snapshot that changed in between is refused, never mixed in."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from rd_assets.core.errors import SessionChangedError
from rd_assets.core.session.index import SnapshotIndex
from rd_assets.core.session.task_reader import read_task, reload_anchor
from rd_assets_tests.conftest import PLAIN_TASK, expected_for


def test_reload_returns_the_selected_anchor(copy_sample: Callable[[str], Path], index: SnapshotIndex) -> None:
    log_dir = copy_sample(PLAIN_TASK)
    reading = read_task(log_dir, index=index)
    assert reading.anchor is not None
    chosen = reload_anchor(log_dir, reading.selection, reading.anchor.last_sota_factor_index)
    assert chosen.anchor == reading.anchor
    expected = expected_for(PLAIN_TASK)
    assert chosen.require_weight().info.sha256 == expected["weights_sha256"]


def test_reload_refuses_a_snapshot_that_grew(copy_sample: Callable[[str], Path], index: SnapshotIndex) -> None:
    log_dir = copy_sample(PLAIN_TASK)
    reading = read_task(log_dir, index=index)
    assert reading.anchor is not None
    chosen = log_dir / reading.selection.chosen_snapshot
    chosen.write_bytes(chosen.read_bytes() + b"\x00")  # a pickle ignores trailing bytes: only the size tells
    with pytest.raises(SessionChangedError, match="bytes now") as err:
        reload_anchor(log_dir, reading.selection, reading.anchor.last_sota_factor_index)
    assert err.value.code == "session_changed"


def test_reload_refuses_a_different_anchor(copy_sample: Callable[[str], Path], index: SnapshotIndex) -> None:
    log_dir = copy_sample(PLAIN_TASK)
    reading = read_task(log_dir, index=index)
    assert reading.anchor is not None
    with pytest.raises(SessionChangedError, match=r"trace.hist\[3\], the selected one trace.hist\[2\]"):
        reload_anchor(log_dir, reading.selection, reading.anchor.last_sota_factor_index - 1)
