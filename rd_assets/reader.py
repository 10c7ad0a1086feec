"""Read one task log dir end to end: choose the snapshot, interpret its trace, cache both.

The interpretation of the chosen snapshot is cached in the index next to the per-snapshot summaries,
so a warm read (nothing changed) only stats files and runs one index query.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rd_assets.access_log import AccessLog
from rd_assets.errors import (
    NoReadableSnapshotError,
    NoSotaFactorExperimentError,
    RdAssetsError,
    SessionChangedError,
    UnreadableSnapshotError,
)
from rd_assets.models import ErrorInfo, InspectResult, SnapshotCandidate, SnapshotSelection, SotaFactorExperiment
from rd_assets.snapshot_index import SnapshotIndex
from rd_assets.snapshots import Progress, file_key, load_chosen, select_snapshot
from rd_assets.trace import anchor_experiment, interpret_trace
from rd_assets.unpickler import LoadedSession

ENV_SIGNING_KEY = "RD_ASSETS_SIGNING_KEY"


def signing_key_from_env() -> str | None:
    return os.environ.get(ENV_SIGNING_KEY) or None


@dataclass
class TaskReading:
    selection: SnapshotSelection
    anchor: SotaFactorExperiment | None
    error: RdAssetsError | None
    loaded: LoadedSession | None
    """The chosen snapshot when this read had to unpickle it; reuse it instead of reading it again."""
    unpickled: int


_INTERPRETATION_ERRORS: tuple[type[RdAssetsError], ...] = (NoSotaFactorExperimentError, UnreadableSnapshotError)


def _cached_error(info: ErrorInfo) -> RdAssetsError:
    """The typed error a cached interpretation recorded, so a warm read fails exactly like a cold one."""
    for cls in _INTERPRETATION_ERRORS:
        if cls.code == info.code:
            return cls(info.message, path=info.path)
    err = RdAssetsError(info.message, path=info.path)
    err.code = info.code
    return err


def read_task(
    log_dir: Path,
    *,
    index: SnapshotIndex,
    signing_key: str | bytes | None = None,
    progress: Progress | None = None,
    access: AccessLog | None = None,
) -> TaskReading:
    """Selection plus interpretation; a missing anchor is returned as ``error`` (the selection stays)."""
    log_dir = log_dir.resolve()
    outcome = select_snapshot(log_dir, index=index, signing_key=signing_key, progress=progress, access=access)
    selection = outcome.selection
    key = file_key(log_dir, outcome.chosen, signing_key)
    hit = index.get_many("trace", str(log_dir)).get(selection.chosen_snapshot)
    if hit is not None and hit[0] == key:
        cached = ErrorInfo.model_validate_json(hit[1]) if hit[1].startswith('{"code"') else None
        if cached is not None:
            return TaskReading(selection, None, _cached_error(cached), None, outcome.unpickled)
        return TaskReading(selection, SotaFactorExperiment.model_validate_json(hit[1]), None, None, outcome.unpickled)
    loaded = outcome.loaded
    unpickled = outcome.unpickled
    if loaded is None:
        loaded = load_chosen(log_dir, selection.chosen_snapshot, signing_key=signing_key, access=access)
        unpickled += 1
    try:
        anchor = interpret_trace(loaded.obj, task_id=log_dir.name, chosen_snapshot=selection.chosen_snapshot)
    except RdAssetsError as exc:
        index.put("trace", key, ErrorInfo(code=exc.code, message=exc.message, path=exc.path).model_dump_json())
        return TaskReading(selection, None, exc, loaded, unpickled)
    index.put("trace", key, anchor.model_dump_json())
    return TaskReading(selection, anchor, None, loaded, unpickled)


def _skipped_candidates(error: RdAssetsError | None) -> list[SnapshotCandidate]:
    """When every snapshot was skipped, the candidates (with their reasons) travel on the error."""
    found = error.candidates if isinstance(error, NoReadableSnapshotError) else []
    return [c for c in found if isinstance(c, SnapshotCandidate)]


def inspect_result(log_dir: Path, reading: TaskReading | None, error: RdAssetsError | None) -> InspectResult:
    """The ``inspect --json`` document, for success and failure alike."""
    log_dir = log_dir.resolve()
    err = error or (reading.error if reading else None)
    sel = reading.selection if reading else None
    anchor = reading.anchor if reading else None
    return InspectResult(
        task_id=log_dir.name,
        log_dir=str(log_dir),
        ok=err is None,
        chosen_snapshot=sel.chosen_snapshot if sel else None,
        hist_len=sel.hist_len if sel else None,
        last_sota_factor_index=anchor.last_sota_factor_index if anchor else None,
        sota_factors=anchor.sota_factors if anchor else [],
        candidates=sel.candidates if sel else _skipped_candidates(err),
        selection=sel,
        error=ErrorInfo(code=err.code, message=err.message, path=err.path) if err else None,
    )


def reload_anchor_experiment(
    log_dir: Path,
    selection: SnapshotSelection,
    anchor_index: int,
    *,
    signing_key: str | bytes | None = None,
    access: AccessLog | None = None,
) -> Any:
    """Unpickle the chosen snapshot again for what is not cached (weight bytes) and return its anchor experiment.

    Refuses a snapshot whose size or anchor differs from the selection it is supposed to belong to.
    """
    relpath = selection.chosen_snapshot
    loaded = load_chosen(log_dir, relpath, signing_key=signing_key, access=access)
    chosen = next(c for c in selection.candidates if c.relpath == relpath)
    if loaded.size != chosen.size:
        raise SessionChangedError(f"{relpath} is {loaded.size} bytes now, {chosen.size} when selected", path=relpath)
    hist_index, exp = anchor_experiment(loaded.obj, path=relpath)
    if hist_index != anchor_index:
        raise SessionChangedError(
            f"the snapshot's anchor is trace.hist[{hist_index}], the selected one trace.hist[{anchor_index}]",
            path=relpath,
        )
    return exp
