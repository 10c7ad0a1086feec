"""Discover session snapshots by stat and choose the one with the longest ``trace.hist``.

Only ``__session__/<int>/<int>_<name>`` regular files are considered (symlinks are not followed) and
nothing else under the log dir is opened or listed. A file that is truncated, unreadable, refused or
badly signed is skipped with its reason; the rest still count.

Backups (``3_feedback.bak`` and the like, left by the fork's re-save) are not snapshots: they are listed as
skipped without being opened. With ``RD_ASSETS_REQUIRE_SIGNATURE=1`` a plain or unverifiable file is refused
from its header, before a byte of it is unpickled.

Tie rule: among snapshots with the same longest hist, the one with the highest (loop_idx, step_idx)
wins (the most recent state of that timeline); all tied relpaths are reported.

Memory: snapshots are unpickled one at a time; only the current best stays alive beside the one
being read.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rd_assets.access_log import AccessLog
from rd_assets.errors import (
    InvalidLogDirError,
    NoReadableSnapshotError,
    NoSnapshotError,
    RdAssetsError,
    SignatureUnverifiedError,
    UnreadableSnapshotError,
    UnsignedSnapshotError,
)
from rd_assets.models import ErrorInfo, SnapshotCandidate, SnapshotSelection
from rd_assets.snapshot_index import FileKey, SnapshotIndex, key_fingerprint
from rd_assets.trace import hist_of
from rd_assets.unpickler import SIGNED_MAGIC, LoadedSession, class_path, gc_paused, load_session_file

SESSION_DIR = "__session__"
TIE_RULE = "longest trace.hist; ties broken by the highest (loop_idx, step_idx)"
_STEP_RE = re.compile(r"^(\d+)_(.+)$")
_RELPATH_RE = re.compile(rf"^{SESSION_DIR}/(\d+)/(\d+)_([^/]+)$")
_BACKUP_RE = re.compile(r"\.(bak|backup)[\w.-]*$", re.IGNORECASE)
SKIPPED_BACKUP = "skipped_backup"
ENV_REQUIRE_SIGNATURE = "RD_ASSETS_REQUIRE_SIGNATURE"


def signature_required() -> bool:
    """``RD_ASSETS_REQUIRE_SIGNATURE=1`` (or true/yes): refuse session files that are not verified."""
    return os.environ.get(ENV_REQUIRE_SIGNATURE, "").strip().lower() in {"1", "true", "yes"}


def is_backup(step_name: str) -> bool:
    return bool(_BACKUP_RE.search(step_name))


Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class SnapshotFile:
    path: Path
    relpath: str
    loop_idx: int
    step_idx: int
    step_name: str
    size: int
    mtime_ns: int


def discover(log_dir: Path, *, access: AccessLog | None = None) -> list[SnapshotFile]:
    """All snapshot files, sorted by (loop_idx, step_idx), found with scandir/stat only."""
    if not log_dir.is_dir():
        raise InvalidLogDirError("log dir does not exist or is not a directory", path=str(log_dir))
    session = log_dir / SESSION_DIR
    found: list[SnapshotFile] = []
    try:
        if access:
            access.listed(session)
        loops = [e for e in os.scandir(session) if e.name.isdigit() and e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise InvalidLogDirError(f"cannot list {SESSION_DIR}: {exc.strerror}", path=str(session)) from exc
    for loop in loops:
        if access:
            access.listed(Path(loop.path))
        for entry in os.scandir(loop.path):
            match = _STEP_RE.match(entry.name)
            if not match or not entry.is_file(follow_symlinks=False):
                continue
            st = entry.stat(follow_symlinks=False)
            found.append(
                SnapshotFile(
                    path=Path(entry.path),
                    relpath=f"{SESSION_DIR}/{loop.name}/{entry.name}",
                    loop_idx=int(loop.name),
                    step_idx=int(match.group(1)),
                    step_name=match.group(2),
                    size=st.st_size,
                    mtime_ns=st.st_mtime_ns,
                )
            )
    found.sort(key=lambda f: (f.loop_idx, f.step_idx, f.step_name))
    return found


def file_key(log_dir: Path, snap: SnapshotFile, signing_key: str | bytes | None) -> FileKey:
    key_fp = key_fingerprint(signing_key, require_signature=signature_required())
    return FileKey(str(log_dir), snap.relpath, snap.size, snap.mtime_ns, key_fp)


def _candidate(snap: SnapshotFile, **fields: Any) -> SnapshotCandidate:
    return SnapshotCandidate(
        relpath=snap.relpath,
        loop_idx=snap.loop_idx,
        step_idx=snap.step_idx,
        step_name=snap.step_name,
        size=snap.size,
        mtime_ns=snap.mtime_ns,
        **fields,
    )


def read_candidate(
    snap: SnapshotFile, *, signing_key: str | bytes | None, access: AccessLog | None = None
) -> tuple[SnapshotCandidate, LoadedSession | None]:
    """Unpickle one snapshot; a failure becomes the candidate's ``error`` instead of an exception."""
    if is_backup(snap.step_name):
        why = "a backup copy (.bak) left by a re-save is not a snapshot; not opened"
        return _candidate(snap, error=ErrorInfo(code=SKIPPED_BACKUP, message=why, path=snap.relpath)), None
    if access:
        access.opened(snap.path)
    try:
        if signature_required():
            _refuse_unverifiable(snap, signing_key)
        loaded = load_session_file(snap.path, signing_key=signing_key, display=snap.relpath)
        hist = hist_of(loaded.obj, path=snap.relpath)
    except RdAssetsError as exc:  # unsafe, unreadable, badly signed or unsigned under the policy
        return _candidate(snap, error=ErrorInfo(code=exc.code, message=exc.message, path=snap.relpath)), None
    return (
        _candidate(
            snap,
            hist_len=len(hist),
            file_format=loaded.file_format.value,
            signature=loaded.signature.value,
            loop_class=class_path(loaded.obj),
        ),
        loaded,
    )


def _refuse_unverifiable(snap: SnapshotFile, signing_key: str | bytes | None) -> None:
    """Under ``RD_ASSETS_REQUIRE_SIGNATURE``: refuse from the header alone, before anything is unpickled."""
    try:
        with open(snap.path, "rb") as fh:
            head = fh.read(len(SIGNED_MAGIC))
    except OSError as exc:
        raise UnreadableSnapshotError(f"cannot read file ({exc.strerror or exc})", path=snap.relpath) from exc
    if head != SIGNED_MAGIC:
        raise UnsignedSnapshotError(f"a plain pickle, and {ENV_REQUIRE_SIGNATURE} is set", path=snap.relpath)
    if signing_key is None:
        raise SignatureUnverifiedError(
            f"signed, but no RD_ASSETS_SIGNING_KEY is configured to verify it, and {ENV_REQUIRE_SIGNATURE} is set",
            path=snap.relpath,
        )


def newer_unreadable(selection: SnapshotSelection) -> list[ErrorInfo]:
    """Skipped candidates newer than the chosen one (RD-Agent may still be writing them), backups aside.

    The chosen state may then be stale: the bundle is published (so the state is visible) but not ready.
    """
    chosen = (selection.chosen_loop_idx, selection.chosen_step_idx)
    return [
        c.error
        for c in selection.candidates
        if c.error is not None and c.error.code != SKIPPED_BACKUP and (c.loop_idx, c.step_idx) > chosen
    ]


@dataclass
class SelectionOutcome:
    selection: SnapshotSelection
    chosen: SnapshotFile
    loaded: LoadedSession | None
    """The chosen snapshot, when it had to be unpickled during this selection (None on a warm run)."""
    unpickled: int
    index_note: str | None


def select_snapshot(
    log_dir: Path,
    *,
    index: SnapshotIndex,
    signing_key: str | bytes | None = None,
    progress: Progress | None = None,
    access: AccessLog | None = None,
) -> SelectionOutcome:
    """Scan every candidate (cached summaries first), keep the best, report all of them."""
    log_dir = log_dir.resolve()
    task_id = log_dir.name
    index.exclude_tree(log_dir)
    snaps = discover(log_dir, access=access)
    if not snaps:
        raise NoSnapshotError(f"no {SESSION_DIR}/<loop>/<step>_<name> file", path=str(log_dir))
    cached = index.get_many("summary", str(log_dir))
    candidates: list[SnapshotCandidate] = []
    best: tuple[int, SnapshotFile, SnapshotCandidate] | None = None
    best_loaded: LoadedSession | None = None
    unpickled = 0
    with gc_paused():  # see unpickler.gc_paused: one pause for the whole scan
        for n, snap in enumerate(snaps, 1):
            key = file_key(log_dir, snap, signing_key)
            hit = cached.get(snap.relpath)
            loaded = None
            if hit is not None and hit[0] == key:
                cand = SnapshotCandidate.model_validate_json(hit[1])
            else:
                cand, loaded = read_candidate(snap, signing_key=signing_key, access=access)
                unpickled += 1
                index.put("summary", key, cand.model_dump_json())
            candidates.append(cand)
            if cand.hist_len is not None and (best is None or cand.hist_len >= best[0]):
                best = (cand.hist_len, snap, cand)
                best_loaded = loaded
            del loaded
            if progress:
                progress(n, len(snaps), snap.relpath)
    if best is None:
        reasons = sorted({c.error.code for c in candidates if c.error})
        raise NoReadableSnapshotError(
            f"none of the {len(candidates)} snapshots is readable ({', '.join(reasons)})",
            path=str(log_dir),
            candidates=candidates,
        )
    hist_len, chosen, chosen_cand = best
    tied = [c.relpath for c in candidates if c.hist_len == hist_len]
    selection = SnapshotSelection(
        task_id=task_id,
        chosen_snapshot=chosen.relpath,
        chosen_loop_idx=chosen.loop_idx,
        chosen_step_idx=chosen.step_idx,
        hist_len=hist_len,
        tied_snapshots=tied,
        tie_rule=TIE_RULE,
        candidates=candidates,
        skipped=sum(1 for c in candidates if c.error is not None),
        loop_class=chosen_cand.loop_class,
        file_format=chosen_cand.file_format,
        signature=chosen_cand.signature,
    )
    return SelectionOutcome(selection, chosen, best_loaded, unpickled, index.unavailable_reason)


def load_chosen(
    log_dir: Path,
    relpath: str,
    *,
    signing_key: str | bytes | None = None,
    access: AccessLog | None = None,
) -> LoadedSession:
    """Unpickle the chosen snapshot again (for artifacts such as weight bytes that are not cached).

    Only that one file and its loop folder are stat'ed: re-listing ``__session__`` on a slow mount would
    cost as much as the whole scan did. The same rules as :func:`discover` apply (no symlinks, no other path).
    """
    match = _RELPATH_RE.match(relpath)
    if match is None:
        raise UnreadableSnapshotError(f"not a {SESSION_DIR}/<loop>/<step>_<name> relpath", path=relpath)
    log_dir = log_dir.resolve()
    path = log_dir / relpath
    try:
        loop_mode, file_mode = (log_dir / SESSION_DIR / match.group(1)).lstat().st_mode, path.lstat().st_mode
    except OSError as exc:
        raise UnreadableSnapshotError("chosen snapshot disappeared from the log dir", path=relpath) from exc
    if not (stat.S_ISDIR(loop_mode) and stat.S_ISREG(file_mode)):
        raise UnreadableSnapshotError("chosen snapshot is not a regular file in a loop folder", path=relpath)
    if access:
        access.opened(path)
    return load_session_file(path, signing_key=signing_key, display=relpath)
