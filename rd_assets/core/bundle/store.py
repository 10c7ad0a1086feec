"""Atomic, versioned publication of bundles into a store directory.

Layout::

    <store>/<task_id>                          symlink -> .versions/<task_id>/<version>  (the current bundle)
    <store>/.versions/<task_id>/<version>/     one complete, immutable bundle per version (v000001-<hash12>)
    <store>/.versions/<task_id>/.lock          serialises publishers of one task (flock, freed when a process dies)
    <store>/.locks/<task_id>                   serialises extractions of one task, read to publish (flock)
    <store>/.versions/<task_id>/.tmp-*         a version being built or deleted; never a bundle name
    <store>/.tmp-link-<task_id>-*              the new symlink just before it replaces the old one

Why a crash at any instant leaves the previous bundle intact: a version is written and fsynced under a
``.tmp-`` name, renamed into place only when complete, and made current by ``os.replace`` of a symlink,
which is atomic. Until that replace, ``<store>/<task_id>`` still points at the previous complete version;
after it, at the new complete one. A reader resolves the symlink once (:func:`current_version_dir`) and
reads only inside that directory, so it never mixes two versions. Leftovers of a crash (``.tmp-*``) are
removed by the next publish of that task, under its lock.

Pruning keeps the newest ``keep_versions`` versions (the current one always); a reader still inside an older
version when it is pruned sees its files vanish (never change) and should resolve the link again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from rd_assets.core.bundle.assemble import BundleContent, content_hash, file_entries
from rd_assets.core.contracts.bundle_models import MANIFEST, Manifest
from rd_assets.core.durable_files import fsync_dir
from rd_assets.core.errors import BundleStoreError
from rd_assets.core.task_ids import is_task_id

VERSIONS_DIR = ".versions"
TMP_PREFIX = ".tmp-"
LINK_TMP_PREFIX = ".tmp-link-"
LOCK_NAME = ".lock"
EXTRACT_LOCKS_DIR = ".locks"
_VERSION_RE = re.compile(r"^v(\d{6,})-[0-9a-f]{12}$")
NAME_MAX = 255
"""Longest file name (bytes) common filesystems take; RELPART_RE admits ASCII only, so characters = bytes."""
RELPART_RE = re.compile(rf"[A-Za-z0-9_][A-Za-z0-9_.\-]{{0,{NAME_MAX - 1}}}")
"""One part of a bundle relpath (the API's asset-key pattern is built from it, so both bound a part alike)."""


@dataclass(frozen=True)
class PublishResult:
    task_id: str
    bundle_path: Path
    """``<store>/<task_id>``: the symlink consumers read through."""
    version_dir: Path
    content_hash: str
    changed: bool
    """False when the current version already held exactly this content (nothing was written)."""


def _check_store(store: Path) -> None:
    """A store path that names a file is refused before anything is created beside or under it."""
    if store.exists() and not store.is_dir():
        raise BundleStoreError("the store path exists and is not a directory", path=str(store))


def _check_task_id(task_id: str) -> None:
    if not is_task_id(task_id):
        raise BundleStoreError(f"not a safe task id: {task_id!r}", path=task_id)


def check_relpath(relpath: str) -> None:
    """Bundle relpaths are canonical plain names (``factors/x.py``), checked before anything is written.

    Nothing absolute, hidden, empty or traversing, and no part longer than :data:`NAME_MAX` (uncreatable).
    """
    if not all(RELPART_RE.fullmatch(part) for part in relpath.split("/")):
        raise BundleStoreError(f"unsafe bundle relpath {relpath!r}", path=relpath)


def versions_root(store: Path, task_id: str) -> Path:
    return store / VERSIONS_DIR / task_id


def current_version_dir(store: Path, task_id: str) -> Path | None:
    """The version directory ``<store>/<task_id>`` points at now (resolved once), or None if unpublished."""
    _check_task_id(task_id)
    link = store / task_id
    try:
        target = os.readlink(link)
    except OSError:  # missing, or not a symlink: nothing published through this name
        return None
    parts = PurePosixPath(target).parts
    if len(parts) != 3 or parts[:2] != (VERSIONS_DIR, task_id) or not _VERSION_RE.match(parts[2]):
        raise BundleStoreError(f"{task_id} points outside its versions: {target!r}", path=str(link))
    version = versions_root(store, task_id) / parts[2]
    return version if version.is_dir() and not version.is_symlink() else None


def _write_tree(root: Path, files: dict[str, bytes]) -> None:
    """Write every file and fsync files and directories, so a rename afterwards publishes durable bytes."""
    dirs = {root}
    for relpath, data in sorted(files.items()):
        target = root / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        dirs.add(target.parent)
        with open(target, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        fsync_dir(d)


def _holds(version: Path, expected_hash: str) -> bool:
    """True when ``version`` really contains the content its manifest (and ``expected_hash``) names."""
    try:
        manifest = Manifest.model_validate_json((version / MANIFEST).read_bytes())
        if manifest.content_hash != expected_hash:
            return False
        found = {rel: (version / rel).read_bytes() for rel in manifest.files}
    except (OSError, ValueError):
        return False
    entries = file_entries(found)
    return entries == manifest.files and content_hash(entries) == expected_hash


@contextlib.contextmanager
def _task_lock(root: Path) -> Iterator[None]:
    fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def extraction_lock(store: Path, task_id: str) -> Iterator[None]:
    """Hold while one task is read and published, so extractions of a task never interleave.

    Why: sessions only grow, so of two extractions of a task the one that reads later reads the newer session;
    holding this lock from the read to the publication makes it also publish later, so an older reading can
    never replace a newer bundle. Dagster's per-partition run limit cannot cover this alone: a backfill's
    ranged run carries no partition tag, and the CLI runs outside Dagster. An flock, so a dead holder frees it,
    and it works across hosts on a shared store whose filesystem honours flock (deploy/README.md). It lives apart
    from ``.versions``, so a task that never publishes leaves no trace there.
    """
    _check_task_id(task_id)
    _check_store(store)
    locks = store / EXTRACT_LOCKS_DIR
    try:
        locks.mkdir(parents=True, exist_ok=True)
        folder = os.open(locks, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)  # never a symlink
        try:
            fd = os.open(task_id, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=folder)
        finally:
            os.close(folder)
    except OSError as exc:
        raise BundleStoreError(f"cannot lock the task in the store: {exc.strerror or exc}", path=str(locks)) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _remove_leftovers(store: Path, root: Path, task_id: str) -> None:
    """Delete temp dirs and temp links a crashed publisher of this task left (we hold its lock)."""
    for entry in os.scandir(root):
        if entry.name.startswith(TMP_PREFIX):
            shutil.rmtree(entry.path, ignore_errors=True)
    for entry in os.scandir(store):
        if entry.name.startswith(f"{LINK_TMP_PREFIX}{task_id}-"):
            Path(entry.path).unlink(missing_ok=True)


def _versions(root: Path) -> list[tuple[int, str]]:
    found = []
    for entry in os.scandir(root):
        match = _VERSION_RE.match(entry.name)
        if match and entry.is_dir(follow_symlinks=False):
            found.append((int(match.group(1)), entry.name))
    return sorted(found)


def _prune(root: Path, current: str, keep_versions: int) -> None:
    """Remove versions beyond the newest ``keep_versions`` (never the current one), renamed away first."""
    names = [name for _, name in _versions(root)]
    for name in names[: max(0, len(names) - keep_versions)]:
        if name == current:
            continue
        doomed = root / f"{TMP_PREFIX}del-{name}-{secrets.token_hex(4)}"
        os.rename(root / name, doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def _swap_link(store: Path, task_id: str, version_name: str) -> None:
    link = store / task_id
    if link.exists() and not link.is_symlink():
        raise BundleStoreError(f"{link} is not a bundle symlink; refusing to replace it", path=str(link))
    tmp_link = store / f"{LINK_TMP_PREFIX}{task_id}-{secrets.token_hex(6)}"
    os.symlink(f"{VERSIONS_DIR}/{task_id}/{version_name}", tmp_link)
    os.replace(tmp_link, link)
    fsync_dir(store)


def publish_bundle(store: Path, content: BundleContent, *, keep_versions: int = 3) -> PublishResult:
    """Publish ``content`` as the current bundle of its task; identical content already current is a no-op."""
    if keep_versions < 1:
        raise ValueError("keep_versions must be at least 1 (the current version)")
    task_id = content.task_id
    _check_task_id(task_id)
    for relpath in content.files:
        check_relpath(relpath)
    entries = file_entries(content.files)
    new_hash = content_hash(entries)
    if content.manifest.content_hash != new_hash or content.manifest.files != entries:
        raise BundleStoreError("the manifest does not describe the files being published", path=task_id)
    manifest_bytes = content.files.get(MANIFEST)
    if manifest_bytes is None or Manifest.model_validate_json(manifest_bytes) != content.manifest:
        raise BundleStoreError(f"{MANIFEST} is missing or differs from the bundle's manifest", path=task_id)

    _check_store(store)
    try:
        return _publish_locked(store, content, new_hash, keep_versions)
    except OSError as exc:
        where = exc.filename or store
        raise BundleStoreError(f"cannot publish into the store: {exc.strerror or exc}", path=str(where)) from exc


def _publish_locked(store: Path, content: BundleContent, new_hash: str, keep_versions: int) -> PublishResult:
    """Under the task's lock: clean leftovers, no-op check, write + fsync, rename, swap the link, prune."""
    task_id = content.task_id
    store.mkdir(parents=True, exist_ok=True)
    root = versions_root(store, task_id)
    root.mkdir(parents=True, exist_ok=True)
    with _task_lock(root):
        _remove_leftovers(store, root, task_id)
        current = current_version_dir(store, task_id)
        if current is not None and _holds(current, new_hash):
            return PublishResult(task_id, store / task_id, current, new_hash, changed=False)
        existing = _versions(root)
        seq = (existing[-1][0] + 1) if existing else 1
        version_name = f"v{seq:06d}-{new_hash[:12]}"
        tmp = root / f"{TMP_PREFIX}{version_name}-{secrets.token_hex(6)}"
        tmp.mkdir()
        _write_tree(tmp, content.files)
        os.rename(tmp, root / version_name)
        fsync_dir(root)
        _swap_link(store, task_id, version_name)
        _prune(root, version_name, keep_versions)
    return PublishResult(task_id, store / task_id, root / version_name, new_hash, changed=True)
