"""``pull``: bring a task's bundle from a Results API into a local mirror, atomically and without waste.

The mirror has the layout of a bundle store (:mod:`rd_assets.core.bundle.store`): ``<dest>/<task_id>`` is a
symlink to an immutable ``<dest>/.versions/<task_id>/<version>/``. A pull:

1. asks for the manifest with ``If-None-Match`` set to the local manifest's sha256 (the API's ETag): ``304`` means
   the local copy is current and nothing else is requested;
2. refuses a bundle that is not ``selection_ready`` unless asked (before downloading anything);
3. takes every file whose sha256 (the API's ETag of that file) a local copy already has from that copy, and
   downloads only the others into ``<dest>/.partial/<task_id>/<sha256>.part``. An interrupted download is resumed
   with ``Range: bytes=<have>-`` and ``If-Range: "<sha256>"`` (a server that ignores Range answers 200 and the file
   is fetched whole); every response must carry the expected ETag and the manifest's content hash, or the bundle
   changed on the server mid-pull and the pull starts over (a few times, then :class:`DownloadIntegrityError`);
4. checks every file against the manifest's sha256 and size, then runs ``verify`` on a staged copy, and only then
   publishes the new version and swaps the symlink (:func:`rd_assets.core.bundle.store.publish_bundle`). A failure
   at any step leaves the previous local version current.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from pydantic import ValidationError

from rd_assets.client.http import ResultsClient
from rd_assets.core.bundle.assemble import BundleContent, sha256_hex
from rd_assets.core.bundle.store import check_relpath, current_version_dir, publish_bundle
from rd_assets.core.contracts.bundle_models import MANIFEST, FileEntry, Manifest
from rd_assets.core.contracts.consumer_models import PullResult
from rd_assets.core.errors import BundleNotReadyError, BundleStoreError, DownloadIntegrityError
from rd_assets.core.task_ids import is_task_id

PARTIAL_DIR = ".partial"
VERSION_ATTEMPTS = 3
"""How often a pull starts over when the server publishes a new version while it downloads."""
CONTENT_HASH_HEADER = "x-rd-assets-content-hash"


class _VersionChanged(Exception):
    """The server's current bundle is no longer the manifest being pulled."""


@dataclass
class _Progress:
    downloaded: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    downloaded_bytes: int = 0


def _etag(digest: str) -> str:
    return f'"{digest}"'


def _local_manifest(dest: Path, task_id: str) -> tuple[Path | None, bytes | None]:
    version = current_version_dir(dest, task_id) if dest.is_dir() else None
    if version is None:
        return None, None
    try:
        return version, (version / MANIFEST).read_bytes()
    except OSError:
        return None, None


def _local_copies(version: Path | None, manifest_bytes: bytes | None) -> dict[str, Path]:
    """sha256 -> a file of the current local version that holds it (as its manifest says; re-hashed on use)."""
    if version is None or manifest_bytes is None:
        return {}
    try:
        manifest = Manifest.model_validate_json(manifest_bytes)
    except ValidationError:
        return {}
    return {entry.sha256: version / rel for rel, entry in manifest.files.items()}


def _read_verified(path: Path, entry: FileEntry) -> bytes | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data if len(data) == entry.size and sha256_hex(data) == entry.sha256 else None


def _parse_manifest(task_id: str, data: bytes) -> Manifest:
    try:
        manifest = Manifest.model_validate_json(data)
    except ValidationError as exc:
        raise DownloadIntegrityError(f"the manifest breaks its schema: {exc.errors()[0]}", path=task_id) from None
    if manifest.task_id != task_id:
        raise DownloadIntegrityError(f"the manifest is for task {manifest.task_id}", path=task_id)
    try:
        for rel in manifest.files:
            check_relpath(rel)
    except BundleStoreError as exc:
        raise DownloadIntegrityError(exc.message, path=task_id) from None
    return manifest


class _Puller:
    def __init__(self, client: ResultsClient, task_id: str, dest: Path) -> None:
        self.client, self.task_id, self.dest = client, task_id, dest
        self.partial = dest / PARTIAL_DIR / task_id
        self.progress = _Progress()
        self.requests_before = client.requests

    @staticmethod
    def _check_headers(headers: httpx.Headers, relpath: str, entry: FileEntry, manifest: Manifest) -> None:
        """The response must be this file of this bundle version (its ETag, the manifest's content hash)."""
        etag, served = headers.get("etag"), headers.get(CONTENT_HASH_HEADER)
        if served not in (None, manifest.content_hash) or etag not in (None, _etag(entry.sha256)):
            raise _VersionChanged(relpath)

    def _download(self, relpath: str, entry: FileEntry, manifest: Manifest) -> bytes:
        """The file's bytes, resumed from ``<sha256>.part`` when an earlier attempt left one."""
        part = self.partial / f"{entry.sha256}.part"

        def attempt() -> None:
            have = part.stat().st_size if part.exists() else 0
            if have > entry.size:
                part.unlink()
                have = 0
            if have == entry.size:
                return
            # identity encoding: byte offsets of the body are byte offsets of the file
            headers = {"accept-encoding": "identity"}
            if have:
                headers |= {"range": f"bytes={have}-", "if-range": _etag(entry.sha256)}
            params = {"key": relpath}
            with self.client.stream(
                f"/tasks/{self.task_id}/asset_bytes", params=params, headers=headers, ok=(200, 206)
            ) as response:
                self._check_headers(response.headers, relpath, entry, manifest)
                start = 0
                if response.status_code == 206:
                    start = _range_start(response.headers.get("content-range", ""), entry.size)
                    if start != have:
                        raise DownloadIntegrityError(f"asked for bytes {have}-, got {start}-", path=relpath)
                    self.progress.resumed.append(relpath)
                with open(part, "r+b" if start else "wb") as fh:
                    fh.seek(start)
                    fh.truncate()
                    room = entry.size - start
                    for chunk in response.iter_bytes():  # as it arrives: a cut leaves every byte received on disk
                        room -= len(chunk)
                        if room < 0:
                            raise DownloadIntegrityError(f"the server sent more than {entry.size} bytes", path=relpath)
                        fh.write(chunk)
                        self.progress.downloaded_bytes += len(chunk)
                    fh.flush()
                    os.fsync(fh.fileno())

        for _ in range(2):  # a resumed file that does not hash (a damaged .part) is fetched whole once more
            resuming = part.exists()
            self.client.retrying(attempt, what=f"GET {relpath}")
            data = _read_verified(part, entry)
            if data is not None:
                self.progress.downloaded.append(relpath)
                return data
            part.unlink(missing_ok=True)
            if not resuming:
                break
        raise DownloadIntegrityError(
            f"downloaded bytes do not hash to the manifest's sha256 {entry.sha256[:12]} / size {entry.size}",
            path=relpath,
        )

    def _files(self, manifest: Manifest, local: dict[str, Path]) -> dict[str, bytes]:
        self.partial.mkdir(parents=True, exist_ok=True)
        files: dict[str, bytes] = {}
        for relpath, entry in sorted(manifest.files.items()):
            copy = local.get(entry.sha256)
            data = _read_verified(copy, entry) if copy is not None else None
            if data is not None:
                self.progress.reused.append(relpath)
            else:
                data = self._download(relpath, entry, manifest)
            files[relpath] = data
        return files

    def _stage_and_verify(self, files: dict[str, bytes]) -> None:
        """Write the bundle into a staging directory and run the full ``verify`` on it before anything is swapped."""
        from rd_assets.core.bundle.verify import verify_bundle  # loads numpy and the reader: not needed for a 304

        stage = self.partial / f"stage-{secrets.token_hex(6)}"
        try:
            for relpath, data in files.items():
                (stage / relpath).parent.mkdir(parents=True, exist_ok=True)
                (stage / relpath).write_bytes(data)
            report = verify_bundle(stage)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        if not report.ok:
            raise DownloadIntegrityError(f"verify: {'; '.join(report.problems)}", path=self.task_id)

    def pull(self, *, allow_not_ready: bool, keep_versions: int) -> PullResult:
        local_version, local_manifest = _local_manifest(self.dest, self.task_id)
        for _ in range(VERSION_ATTEMPTS):
            headers = {"if-none-match": _etag(sha256_hex(local_manifest))} if local_manifest else {}
            status, _, body = self.client.get_bytes(f"/tasks/{self.task_id}", headers=headers, ok=(200, 304))
            if status == 304 and local_manifest is not None:
                return self._not_modified(local_version, local_manifest, allow_not_ready)
            manifest = _parse_manifest(self.task_id, body)
            _require_ready(manifest, allow_not_ready)
            try:
                files = self._files(manifest, _local_copies(local_version, local_manifest))
            except _VersionChanged:
                continue
            files[MANIFEST] = body
            self._stage_and_verify(files)
            published = publish_bundle(
                self.dest, BundleContent(self.task_id, files, manifest), keep_versions=keep_versions
            )
            shutil.rmtree(self.partial, ignore_errors=True)
            return self._result(
                version_dir=published.version_dir, manifest=manifest, changed=published.changed, not_modified=False
            )
        raise DownloadIntegrityError(
            f"the bundle changed on the server during each of {VERSION_ATTEMPTS} attempts", path=self.task_id
        )

    def _not_modified(self, version: Path | None, manifest_bytes: bytes, allow_not_ready: bool) -> PullResult:
        manifest = Manifest.model_validate_json(manifest_bytes)
        _require_ready(manifest, allow_not_ready)
        return self._result(version_dir=version, manifest=manifest, changed=False, not_modified=True)

    def _result(self, *, version_dir: Path | None, manifest: Manifest, changed: bool, not_modified: bool) -> PullResult:
        p = self.progress
        return PullResult(
            ok=True, task_id=self.task_id, api=self.client.api, dest=str(self.dest),
            bundle_path=str(self.dest / self.task_id), version_dir=str(version_dir) if version_dir else None,
            content_hash=manifest.content_hash, selection_ready=manifest.selection_ready, changed=changed,
            not_modified=not_modified, downloaded_files=p.downloaded, reused_files=p.reused,
            resumed_files=sorted(set(p.resumed)), downloaded_bytes=p.downloaded_bytes,
            requests=self.client.requests - self.requests_before,
        )  # fmt: skip


def _range_start(content_range: str, size: int) -> int:
    """The first byte of ``bytes a-b/size``; anything else is an integrity error (never guessed)."""
    unit, _, spec = content_range.partition(" ")
    span, _, total = spec.partition("/")
    first, _, last = span.partition("-")
    if unit != "bytes" or total != str(size) or not first.isdigit() or not last.isdigit() or int(last) != size - 1:
        raise DownloadIntegrityError(f"unexpected Content-Range {content_range!r} for a {size}-byte file")
    return int(first)


def _require_ready(manifest: Manifest, allow_not_ready: bool) -> None:
    if not manifest.selection_ready and not allow_not_ready:
        raise BundleNotReadyError(
            f"the bundle is not selection_ready ({'; '.join(manifest.reasons)}); pass allow_not_ready "
            "(rd-assets pull --allow-not-ready) to take it anyway",
            path=manifest.task_id,
        )


def pull_bundle(
    client: ResultsClient,
    task_id: str,
    dest: Path,
    *,
    allow_not_ready: bool = False,
    keep_versions: int = 3,
) -> PullResult:
    """Make ``<dest>/<task_id>`` the server's current bundle of ``task_id`` (see the module docstring)."""
    if not is_task_id(task_id):
        raise BundleStoreError(f"not a task id: {task_id!r}", path=task_id)
    dest.mkdir(parents=True, exist_ok=True)
    with _pull_lock(dest, task_id):
        return _Puller(client, task_id, dest).pull(allow_not_ready=allow_not_ready, keep_versions=keep_versions)


@contextlib.contextmanager
def _pull_lock(dest: Path, task_id: str) -> Iterator[None]:
    """One pull of a task per mirror at a time: two would write the same ``.part`` files."""
    locks = dest / PARTIAL_DIR
    locks.mkdir(exist_ok=True)
    fd = os.open(locks / f"{task_id}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
