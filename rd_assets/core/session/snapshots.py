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

import errno
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rd_assets.core.contracts.models import ErrorInfo, SnapshotCandidate, SnapshotSelection
from rd_assets.core.errors import (
    InvalidLogDirError,
    NoReadableSnapshotError,
    NoSnapshotError,
    RdAssetsError,
    ReaderCrashedError,
    ReaderLimitExceededError,
    UnreadableSnapshotError,
)
from rd_assets.core.session.access_log import AccessLog
from rd_assets.core.session.file_format import SessionBody, open_session_body, signature_required, unsigned_allowed
from rd_assets.core.session.index import FileKey, SnapshotIndex, key_fingerprint
from rd_assets.core.session.reading import summarize_snapshot
from rd_assets.core.session.unpickler import gc_paused
from rd_assets.core.text_safety import utf8_problem

SESSION_DIR = "__session__"
TIE_RULE = "longest trace.hist; ties broken by the highest (loop_idx, step_idx)"
_LOOP_RE = re.compile(r"^[0-9]+$")
_STEP_RE = re.compile(r"^([0-9]+)_(.+)$")
_RELPATH_RE = re.compile(rf"^{SESSION_DIR}/([0-9]+)/([0-9]+)_([^/]+)$")
_BACKUP_RE = re.compile(r"\.(bak|backup)[\w.-]*$", re.IGNORECASE)
SKIPPED_BACKUP = "skipped_backup"
NOT_CACHED = frozenset({ReaderCrashedError.code, ReaderLimitExceededError.code})
"""Outcomes that depend on this machine's limits, not on the file: read again next time."""


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
    inode: int = 0
    ctime_ns: int = 0
    """With size and mtime, the file's identity in the index: ctime cannot be set back by ``os.utime``."""
    utf8_name: bool = True
    """False for a name with bytes that are not UTF-8: listed as skipped, never opened."""


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_folder(name: str | Path, dir_fd: int | None, shown: Path) -> int | None:
    """A descriptor of a real folder (never through a symlink); ``None`` when it does not exist."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise InvalidLogDirError(
                f"{shown.name} is a symlink or not a directory; only real folders inside the task dir are read",
                path=str(shown),
            ) from exc
        raise InvalidLogDirError(f"cannot open {shown.name} ({exc.strerror or exc})", path=str(shown)) from exc


def _listing(folder_fd: int, shown: Path, access: AccessLog | None) -> list[os.DirEntry[str]]:
    """One folder's entries, listed through its descriptor (a folder swapped for a symlink after it was opened
    is not followed); a folder that cannot be listed fails the task (a newer snapshot may be inside)."""
    if access:
        access.listed(shown)
    try:
        with os.scandir(folder_fd) as entries:
            return list(entries)
    except OSError as exc:
        raise InvalidLogDirError(
            f"cannot list {shown.name} ({exc.strerror or exc}); the newest snapshot may be inside it", path=str(shown)
        ) from exc


def _shown_name(name: str) -> str:
    """A non-UTF-8 file name as printable text: each undecodable byte as ``\xff``."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def discover(log_dir: Path, *, access: AccessLog | None = None) -> list[SnapshotFile]:
    """All snapshot files, sorted by (loop_idx, step_idx): folders opened ``O_NOFOLLOW`` and listed through their
    descriptors, files lstat-ed, so nothing outside ``__session__`` is ever listed, even in a race."""
    if not log_dir.is_dir():
        raise InvalidLogDirError("log dir does not exist or is not a directory", path=str(log_dir))
    session = log_dir / SESSION_DIR
    session_fd = _open_folder(session, None, session)
    if session_fd is None:
        return []
    found: list[SnapshotFile] = []
    try:
        for loop in _listing(session_fd, session, access):
            if not (_LOOP_RE.match(loop.name) and loop.is_dir(follow_symlinks=False)):
                continue
            loop_path = session / loop.name
            loop_fd = _open_folder(loop.name, session_fd, loop_path)
            if loop_fd is None:  # removed since the listing
                continue
            try:
                found += _snapshots_in(loop_fd, loop_path, int(loop.name), access)
            finally:
                os.close(loop_fd)
    finally:
        os.close(session_fd)
    found.sort(key=lambda f: (f.loop_idx, f.step_idx, f.step_name))
    return found


def _snapshots_in(loop_fd: int, loop_path: Path, loop_idx: int, access: AccessLog | None) -> list[SnapshotFile]:
    found = []
    for entry in _listing(loop_fd, loop_path, access):
        match = _STEP_RE.match(entry.name)
        if not match or not entry.is_file(follow_symlinks=False):
            continue
        utf8 = utf8_problem(entry.name) is None
        step_name = match.group(2) if utf8 else _shown_name(match.group(2))
        st = entry.stat(follow_symlinks=False)
        found.append(
            SnapshotFile(
                path=loop_path / entry.name,
                relpath=f"{SESSION_DIR}/{loop_path.name}/{match.group(1)}_{step_name}",
                loop_idx=loop_idx,
                step_idx=int(match.group(1)),
                step_name=step_name,
                size=st.st_size,
                mtime_ns=st.st_mtime_ns,
                inode=st.st_ino,
                ctime_ns=st.st_ctime_ns,
                utf8_name=utf8,
            )
        )
    return found


def file_key(log_dir: Path, snap: SnapshotFile, signing_key: str | bytes | None) -> FileKey:
    policy = key_fingerprint(signing_key, require_signature=signature_required(), allow_unsigned=unsigned_allowed())
    identity = f"{policy}/{snap.inode}:{snap.ctime_ns}"  # a same-size file swapped in with its mtime restored
    return FileKey(str(log_dir), snap.relpath, snap.size, snap.mtime_ns, identity)


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


def _skip(snap: SnapshotFile, code: str, why: str) -> SnapshotCandidate:
    return _candidate(snap, error=ErrorInfo(code=code, message=why, path=snap.relpath))


def open_snapshot(log_dir: Path, snap: SnapshotFile, *, signing_key: str | bytes | None) -> SessionBody:
    """The snapshot's bytes, opened without following any symlink under the task dir and verified."""
    return _open_under_session(log_dir, snap.relpath, signing_key)


def _open_under_session(log_dir: Path, relpath: str, signing_key: str | bytes | None) -> SessionBody:
    """Open ``__session__/<loop>/<file>`` from ``__session__`` down, no symlink followed on the way."""
    inner = Path(relpath).relative_to(SESSION_DIR)
    return open_session_body(inner, signing_key=signing_key, shown=relpath, root=log_dir / SESSION_DIR)


def read_candidate(
    log_dir: Path, snap: SnapshotFile, *, signing_key: str | bytes | None, scan: str, access: AccessLog | None = None
) -> tuple[SnapshotCandidate, SessionBody | None]:
    """Open, verify and summarise one snapshot (in the reader); a failure becomes the candidate's ``error``.

    Returns the opened body too, so the caller can keep the best one for reading its anchor.
    """
    if is_backup(snap.step_name):
        return _skip(snap, SKIPPED_BACKUP, "a backup copy (.bak) left by a re-save is not a snapshot; not opened"), None
    if not snap.utf8_name:
        return _skip(snap, UnreadableSnapshotError.code, "the file name is not valid UTF-8; not opened"), None
    if access:
        access.opened(snap.path)
    body = None
    try:
        body = open_snapshot(log_dir, snap, signing_key=signing_key)
        summary = summarize_snapshot(body, scan)
    except RdAssetsError as exc:  # unsafe, unreadable, badly signed, unsigned under the policy, reader died
        if body is not None:
            body.close()
        return _skip(snap, exc.code, exc.message), None
    candidate = _candidate(
        snap,
        hist_len=summary.hist_len,
        file_format=body.file_format.value,
        signature=body.signature.value,
        loop_class=summary.loop_class,
    )
    return candidate, body


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
    body: SessionBody | None
    """The chosen snapshot's verified bytes when this scan read it (its object is kept by the reader under
    ``scan``); ``None`` on a warm run. The caller closes it."""
    scan: str
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
    best_body: SessionBody | None = None
    scan = uuid.uuid4().hex
    unpickled = 0
    try:
        with gc_paused():  # see unpickler.gc_paused: one pause for the whole scan
            for n, snap in enumerate(snaps, 1):
                key = file_key(log_dir, snap, signing_key)
                hit = cached.get(snap.relpath)
                body = None
                if hit is not None and hit[0] == key:
                    cand = SnapshotCandidate.model_validate_json(hit[1])
                else:
                    cand, body = read_candidate(log_dir, snap, signing_key=signing_key, scan=scan, access=access)
                    unpickled += 1
                    if cand.error is None or cand.error.code not in NOT_CACHED:
                        index.put("summary", key, cand.model_dump_json())
                candidates.append(cand)
                if cand.hist_len is not None and (best is None or cand.hist_len >= best[0]):
                    best = (cand.hist_len, snap, cand)
                    body, best_body = best_body, body
                if body is not None:
                    body.close()
                if progress:
                    progress(n, len(snaps), snap.relpath)
    except BaseException:
        if best_body is not None:
            best_body.close()
        raise
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
    return SelectionOutcome(selection, chosen, best_body, scan, unpickled, index.unavailable_reason)


def open_chosen(
    log_dir: Path,
    relpath: str,
    *,
    signing_key: str | bytes | None = None,
    access: AccessLog | None = None,
) -> SessionBody:
    """Open the chosen snapshot again (for what is not cached, such as weight bytes).

    Only that one file is opened, through its folders without following symlinks: re-listing ``__session__``
    on a slow mount would cost as much as the whole scan did.
    """
    if _RELPATH_RE.match(relpath) is None:
        raise UnreadableSnapshotError(f"not a {SESSION_DIR}/<loop>/<step>_<name> relpath", path=relpath)
    log_dir = log_dir.resolve()
    if access:
        access.opened(log_dir / relpath)
    return _open_under_session(log_dir, relpath, signing_key)
