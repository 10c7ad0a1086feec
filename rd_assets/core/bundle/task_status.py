"""Failure records: why a task's last extraction failed, kept in the store beside its bundles, never inside one.

Why: a failed extraction publishes nothing, so readers could not tell a task that failed from one never seen.
An extractor (the CLI, the Dagster layer) calls :func:`record_failure` when a task fails for a reason the same
session would hit again (:func:`is_task_failure`), and :func:`clear_failure` once the task publishes. Readers
(the API) call :func:`read_failure` and :func:`failed_task_ids` and never write.

Layout: ``<store>/.task_status/<task_id>.json``, one :class:`TaskFailure` each. ``.task_status`` is not a task id
(it starts with a dot), so it can never be mistaken for a bundle. A record is written to a temp file, fsynced and
renamed over the old one, and the folder is fsynced after a rename or an unlink: a reader sees the previous
record, the new one, or none, never a torn file, also after a crash.
"""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from rd_assets.core.contracts.status_models import TaskFailure
from rd_assets.core.durable_files import fsync_dir, write_atomic
from rd_assets.core.errors import RdAssetsError, TaskStatusError
from rd_assets.core.task_ids import is_task_id

STATUS_DIR = ".task_status"
RECORD_SUFFIX = ".json"
MAX_RECORD_BYTES = 64 * 1024
"""Largest record read back; :data:`MAX_MESSAGE_CHARS` keeps every record written far below it."""
MAX_MESSAGE_CHARS = 4096
"""Messages can quote untrusted session text; a longer one is cut with a visible note, never silently."""
NOT_TASK_FAILURES = frozenset(
    {
        "session_changed",  # RD-Agent wrote a snapshot during the read: the next attempt reads a new session
        "invalid_log_dir",  # the path given is not a task log dir: nothing to say about a task
        "invalid_path_map",  # the operator's options, not the task
        "bundle_store",  # the store refused the write (permissions, a foreign file): fix the store, not the task
        "task_status_unreadable",  # this module's own failure
    }
)
"""Codes that say nothing about the task's session, so recording them would blame the wrong thing."""
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def is_task_failure(error: RdAssetsError) -> bool:
    """Whether ``error`` belongs in a failure record: caused by the task's session, so it would recur unchanged."""
    return error.code not in NOT_TASK_FAILURES


def failure_path(store: Path, task_id: str) -> Path:
    """``<store>/.task_status/<task_id>.json``; anything but a task id is refused (nothing can traverse)."""
    if not is_task_id(task_id):
        raise TaskStatusError(f"not a task id: {task_id!r}", path=task_id)
    return store / STATUS_DIR / f"{task_id}{RECORD_SUFFIX}"


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _bounded(message: str) -> str:
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return f"{message[:MAX_MESSAGE_CHARS]} [cut: {len(message) - MAX_MESSAGE_CHARS} more characters]"


def _existing_status_dir(store: Path) -> Path | None:
    """The records folder, or None if there is none; it must be a real folder (a symlink could lead elsewhere)."""
    directory = store / STATUS_DIR
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        raise TaskStatusError(f"{STATUS_DIR} in the store is not a folder", path=str(directory))
    return directory


def _ensure_status_dir(store: Path) -> Path:
    (store / STATUS_DIR).mkdir(parents=True, exist_ok=True)
    directory = _existing_status_dir(store)
    if directory is None:
        raise TaskStatusError(f"{STATUS_DIR} vanished right after it was created", path=str(store / STATUS_DIR))
    return directory


def _read_all(fd: int, size: int) -> bytes:
    chunks, left = [], size
    while left > 0 and (chunk := os.read(fd, left)):
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def record_failure(store: Path, task_id: str, error: RdAssetsError, *, fingerprint: str | None = None) -> TaskFailure:
    """Record (or replace) why ``task_id`` failed; ``fingerprint`` is the session fingerprint token, if known."""
    path = failure_path(store, task_id)
    record = TaskFailure(
        task_id=task_id,
        code=error.code,
        message=_bounded(error.message),
        path=error.path,
        fingerprint=fingerprint,
        failed_at_utc=_utc_now(),
    )
    data = (record.model_dump_json(indent=2) + "\n").encode("utf-8")
    try:
        _ensure_status_dir(store)
        write_atomic(path, data)
    except OSError as exc:
        raise TaskStatusError(f"cannot record the failure of {task_id}: {exc.strerror or exc}", path=str(path)) from exc
    return record


def clear_failure(store: Path, task_id: str) -> bool:
    """Remove the failure record of ``task_id`` (it published); True when there was one."""
    path = failure_path(store, task_id)
    try:
        directory = _existing_status_dir(store)
        if directory is None:
            return False
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        fsync_dir(directory)
    except OSError as exc:
        raise TaskStatusError(f"cannot clear the failure of {task_id}: {exc.strerror or exc}", path=str(path)) from exc
    return True


def read_failure(store: Path, task_id: str) -> TaskFailure | None:
    """The failure record of ``task_id``, or None; a record that is not a regular, valid document is refused."""
    path = failure_path(store, task_id)
    try:
        if _existing_status_dir(store) is None:
            return None
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TaskStatusError(f"cannot open the status record of {task_id}: {exc.strerror}", path=str(path)) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_RECORD_BYTES:
            raise TaskStatusError(f"the status record of {task_id} is not a small regular file", path=str(path))
        data = _read_all(fd, st.st_size)
    finally:
        os.close(fd)
    try:
        record = TaskFailure.model_validate_json(data)
    except ValidationError as exc:
        raise TaskStatusError(
            f"the status record of {task_id} is not a TaskFailure: {exc.error_count()} error(s)", path=str(path)
        ) from exc
    if record.task_id != task_id:
        raise TaskStatusError(f"the status record of {task_id} names task {record.task_id}", path=str(path))
    return record


def failed_task_ids(store: Path) -> list[str]:
    """Task ids that have a failure record (by name only; nothing is opened)."""
    try:
        directory = _existing_status_dir(store)
        if directory is None:
            return []
        with os.scandir(directory) as entries:
            names = [e.name.removesuffix(RECORD_SUFFIX) for e in entries if e.name.endswith(RECORD_SUFFIX)]
    except OSError as exc:
        raise TaskStatusError(f"cannot list {STATUS_DIR}: {exc.strerror or exc}", path=str(store / STATUS_DIR)) from exc
    return sorted(name for name in names if is_task_id(name))
