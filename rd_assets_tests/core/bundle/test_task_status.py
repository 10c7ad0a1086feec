"""Failure records in the store: written atomically beside the bundles, replaced, cleared, read back safely."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rd_assets.core.bundle.task_status import (
    MAX_MESSAGE_CHARS,
    NOT_TASK_FAILURES,
    STATUS_DIR,
    clear_failure,
    failed_task_ids,
    failure_path,
    is_task_failure,
    read_failure,
    record_failure,
)
from rd_assets.core.contracts.models import SCHEMA_VERSION
from rd_assets.core.contracts.status_models import TaskFailure
from rd_assets.core.errors import (
    NoSnapshotError,
    SessionChangedError,
    TaskStatusError,
    WeightsNotPersistedError,
    error_classes,
)

TASK = "2026-01-09_16-11-14-215581"
OTHER = "2026-01-10_00-00-00-000000"


def test_record_read_replace_clear(tmp_path: Path) -> None:
    store = tmp_path / "store"
    first = record_failure(store, TASK, NoSnapshotError("nothing readable", path="/logs/x"), fingerprint="3-10-7")
    assert failure_path(store, TASK) == store / STATUS_DIR / f"{TASK}.json"
    doc = json.loads(failure_path(store, TASK).read_bytes())
    assert doc["schema_version"] == SCHEMA_VERSION and doc["code"] == "no_snapshot" and doc["fingerprint"] == "3-10-7"
    assert read_failure(store, TASK) == first and first.path == "/logs/x" and first.failed_at_utc.endswith("Z")

    second = record_failure(store, TASK, WeightsNotPersistedError("no weights"))
    assert read_failure(store, TASK) == second and second.code == "weights_not_persisted" and second.fingerprint is None
    record_failure(store, OTHER, NoSnapshotError("x"))
    assert failed_task_ids(store) == [TASK, OTHER]
    assert sorted(os.listdir(store / STATUS_DIR)) == [f"{TASK}.json", f"{OTHER}.json"]  # no temp file left behind

    assert clear_failure(store, TASK) is True
    assert read_failure(store, TASK) is None and clear_failure(store, TASK) is False
    assert failed_task_ids(store) == [OTHER]
    assert clear_failure(tmp_path / "empty", TASK) is False and failed_task_ids(tmp_path / "empty") == []


def test_long_messages_are_cut_visibly(tmp_path: Path) -> None:
    record = record_failure(tmp_path, TASK, NoSnapshotError("m" * (MAX_MESSAGE_CHARS + 10)))
    assert record.message == "m" * MAX_MESSAGE_CHARS + " [cut: 10 more characters]"
    assert read_failure(tmp_path, TASK) == record


@pytest.mark.parametrize("task_id", ["..", "../x", ".versions", "a/b", "", "-x"])
def test_only_task_ids_name_a_record(tmp_path: Path, task_id: str) -> None:
    with pytest.raises(TaskStatusError):
        record_failure(tmp_path, task_id, NoSnapshotError("x"))
    with pytest.raises(TaskStatusError):
        read_failure(tmp_path, task_id)
    assert not (tmp_path / STATUS_DIR).exists()


def test_reading_refuses_what_is_not_a_plain_record(tmp_path: Path) -> None:
    store = tmp_path / "store"
    record_failure(store, TASK, NoSnapshotError("x"))
    outside = tmp_path / "outside.json"
    outside.write_bytes(failure_path(store, TASK).read_bytes())
    path = failure_path(store, OTHER)
    path.symlink_to(outside)
    with pytest.raises(TaskStatusError, match=OTHER):
        read_failure(store, OTHER)
    path.unlink()
    path.write_text(json.dumps({**json.loads(outside.read_text()), "task_id": TASK}))
    with pytest.raises(TaskStatusError, match=f"names task {TASK}"):
        read_failure(store, OTHER)
    path.write_text("{not json")
    with pytest.raises(TaskStatusError, match="not a TaskFailure"):
        read_failure(store, OTHER)
    path.write_bytes(b" " * (70 * 1024))
    with pytest.raises(TaskStatusError, match="small regular file"):
        read_failure(store, OTHER)

    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / STATUS_DIR).symlink_to(store / STATUS_DIR)
    with pytest.raises(TaskStatusError, match="not a folder"):
        read_failure(linked, TASK)
    with pytest.raises(TaskStatusError, match="not a folder"):
        record_failure(linked, TASK, NoSnapshotError("x"))


def test_which_errors_are_recorded() -> None:
    assert is_task_failure(NoSnapshotError("x")) and is_task_failure(WeightsNotPersistedError("x"))
    assert not is_task_failure(SessionChangedError("x"))
    assert set(error_classes()) >= NOT_TASK_FAILURES, "every code named must be a real error code"


def test_the_record_is_a_published_document() -> None:
    version = TaskFailure.model_json_schema()["properties"]["schema_version"]
    assert SCHEMA_VERSION in version.get("enum", [version.get("const")])
