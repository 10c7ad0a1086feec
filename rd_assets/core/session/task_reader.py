"""Read one task log dir end to end: choose the snapshot, interpret its trace, cache both.

The interpretation of the chosen snapshot is cached in the index next to the per-snapshot summaries,
so a warm read (nothing changed) only stats files and runs one index query.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rd_assets.core.contracts.models import (
    ErrorInfo,
    InspectResult,
    SnapshotCandidate,
    SnapshotSelection,
    SotaFactorExperiment,
)
from rd_assets.core.errors import (
    NoReadableSnapshotError,
    RdAssetsError,
    SessionChangedError,
    rebuild_error,
)
from rd_assets.core.session.access_log import AccessLog
from rd_assets.core.session.index import SnapshotIndex
from rd_assets.core.session.reading import AnchorReading, read_anchor
from rd_assets.core.session.snapshots import NOT_CACHED, Progress, file_key, open_chosen, select_snapshot

ENV_SIGNING_KEY = "RD_ASSETS_SIGNING_KEY"


def signing_key_from_env() -> str | None:
    return os.environ.get(ENV_SIGNING_KEY) or None


@dataclass
class TaskReading:
    selection: SnapshotSelection
    anchor: SotaFactorExperiment | None
    error: RdAssetsError | None
    chosen: AnchorReading | None
    """The chosen snapshot's anchor and weight when this read had to interpret it; reuse it, do not read again."""
    unpickled: int


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
    body = outcome.body
    try:
        key = file_key(log_dir, outcome.chosen, signing_key)
        hit = index.get_many("trace", str(log_dir)).get(selection.chosen_snapshot)
        if hit is not None and hit[0] == key:
            cached = ErrorInfo.model_validate_json(hit[1]) if hit[1].startswith('{"code"') else None
            if cached is not None:
                return TaskReading(
                    selection, None, rebuild_error(cached.code, cached.message, cached.path), None, outcome.unpickled
                )
            anchor = SotaFactorExperiment.model_validate_json(hit[1])
            return TaskReading(selection, anchor, None, None, outcome.unpickled)
        unpickled = outcome.unpickled
        scan: str | None = outcome.scan
        if body is None:
            body = open_chosen(log_dir, selection.chosen_snapshot, signing_key=signing_key, access=access)
            scan = None
            unpickled += 1
        try:
            chosen = read_anchor(body, scan, log_dir.name, None)
        except RdAssetsError as exc:
            if exc.code not in NOT_CACHED:
                index.put("trace", key, ErrorInfo(code=exc.code, message=exc.message, path=exc.path).model_dump_json())
            return TaskReading(selection, None, exc, None, unpickled)
        index.put("trace", key, chosen.anchor.model_dump_json())
        return TaskReading(selection, chosen.anchor, None, chosen, unpickled)
    finally:
        if body is not None:
            body.close()


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


def reload_anchor(
    log_dir: Path,
    selection: SnapshotSelection,
    anchor_index: int,
    *,
    signing_key: str | bytes | None = None,
    access: AccessLog | None = None,
) -> AnchorReading:
    """Read the chosen snapshot again for what is not cached (weight bytes).

    Refuses a snapshot whose size or anchor differs from the selection it is supposed to belong to.
    """
    relpath = selection.chosen_snapshot
    chosen = next(c for c in selection.candidates if c.relpath == relpath)
    with open_chosen(log_dir, relpath, signing_key=signing_key, access=access) as body:
        if body.size != chosen.size:
            raise SessionChangedError(f"{relpath} is {body.size} bytes now, {chosen.size} when selected", path=relpath)
        return read_anchor(body, None, log_dir.resolve().name, anchor_index)
