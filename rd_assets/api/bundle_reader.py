"""Read-only access to published bundles, one pinned version per request.

Why this shape: ``<store>/<task_id>`` is a symlink that a publisher may swap at any instant. A request
resolves it exactly once (:func:`rd_assets.core.bundle.store.current_version_dir` plus a realpath check that the
target is a direct child of ``<store>/.versions/<task_id>/``), then reads every byte of its answer from that
one immutable version directory, opening each file before streaming from the open descriptor. A concurrent
republish therefore never mixes versions. Client input is never joined onto a path: a task id must match the
task-id pattern and an asset key is looked up in a table built from the manifest. Nothing here writes, and
nothing here unpickles.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, TypeVar, cast

from pydantic import BaseModel, ValidationError

from rd_assets.api.responses import TaskSummary
from rd_assets.core.bundle.store import RELPART_RE, VERSIONS_DIR, check_relpath, current_version_dir
from rd_assets.core.contracts.bundle_models import MANIFEST, SOTA_FACTORS, Manifest, SotaFactorsDoc
from rd_assets.core.errors import BundleIntegrityError, BundleStoreError, RdAssetsError
from rd_assets.core.task_ids import is_task_id

_V = TypeVar("_V")
CHUNK = 1 << 20
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
TAR_MTIME = 0
"""Fixed member mtime (and uid/gid 0, mode 0644) so the same version always streams the same tar bytes."""
_CACHE_MAX = 16384
_KEY_PART = RELPART_RE.pattern.removeprefix("^").removesuffix("$")
KEY_PATTERN = rf"^{_KEY_PART}(/{_KEY_PART})*$"
"""What an asset key may look like: the publisher's own relpath rule (so the spec says what is accepted)."""


class InvalidTaskIdError(RdAssetsError):
    """A ``task_id`` that is not ``YYYY-MM-DD_HH-MM-SS-ffffff`` (so it can never name a bundle)."""

    code = "invalid_task_id"


class InvalidAssetKeyError(RdAssetsError):
    """An asset key that no bundle can hold: absolute, traversing, backslashes, control characters."""

    code = "invalid_key"


class TaskNotFoundError(RdAssetsError):
    """No published bundle for a well-formed task id."""

    code = "task_not_found"


class AssetNotFoundError(RdAssetsError):
    """The key is neither a consumer key nor a relpath listed in this version's manifest."""

    code = "asset_not_found"


class VersionGoneError(RdAssetsError):
    """The pinned version was pruned before its files could be opened, on every retry; the client may retry."""

    code = "bundle_version_gone"


@dataclass(frozen=True)
class PinnedVersion:
    """One published version, resolved once: every file of a response is read from ``directory``."""

    task_id: str
    directory: str
    version: str
    manifest: Manifest
    manifest_bytes: bytes
    cache_key: tuple
    """(dir, dev, inode, size, mtime, ctime) of the manifest read: any rewrite of the file changes it."""


@dataclass(frozen=True)
class TaskListing:
    summaries: list[TaskSummary]
    problems: list[tuple[str, RdAssetsError]]


class OpenFile:
    """An open descriptor of one bundle file plus the hash and size its manifest promises for it.

    ``verified`` holds the identities (dev, inode, size, mtime, ctime) of files already streamed in full and
    found to hash to their manifest entry. Any write to a file changes its mtime/ctime, so a file whose identity
    is in there still has those bytes and is streamed without hashing again; every other file is hashed.
    """

    def __init__(self, fd: int, relpath: str, sha256: str, size: int, verified: dict[tuple, str]) -> None:
        self.fd, self.relpath, self.sha256, self.size = fd, relpath, sha256, size
        st = os.fstat(fd)
        self._identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        self._verified = verified
        self.disk_size = st.st_size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def chunks(self) -> Iterator[bytes]:
        """The bytes from the descriptor; raises (aborting the response) if they do not hash to the manifest.

        Headers (ETag, Content-Length) are sent before the body, so a mismatch can only be signalled by
        cutting the body short. The last chunk is held back until the whole file is verified, so a client
        never receives the full Content-Length of bytes that do not match their ETag.
        """
        known = self._verified.get(self._identity) == self.sha256
        digest, read, pending = hashlib.sha256(), 0, b""
        while chunk := os.read(self.fd, min(CHUNK, self.size - read + 1)):
            read += len(chunk)
            if read > self.size:
                break
            if not known:
                digest.update(chunk)
            if pending:
                yield pending
            pending = chunk
        if read != self.size or not (known or digest.hexdigest() == self.sha256):
            raise BundleIntegrityError(f"{self.relpath} no longer matches its manifest entry", path=self.relpath)
        if not known:
            _remember(self._verified, self._identity, self.sha256)
        if pending:
            yield pending


def check_key(key: str) -> None:
    """Refuse keys no bundle can hold (absolute, traversing, backslash, NUL...): loud 422, not a quiet miss."""
    try:
        check_relpath(key)
    except BundleStoreError as exc:
        raise InvalidAssetKeyError(f"asset key {key!r} is not a bundle key or relpath") from exc


def check_task_id(task_id: str) -> None:
    if not is_task_id(task_id):
        raise InvalidTaskIdError(f"not a task id (YYYY-MM-DD_HH-MM-SS-ffffff): {task_id!r}")


def validate_json(model: type[BaseModel], data: bytes, relpath: str) -> BaseModel:
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        raise BundleIntegrityError(
            f"{relpath} does not match {model.__name__}: {exc.error_count()} error(s)", path=relpath
        ) from exc


class BundleReader:
    """Read-only view of a bundle store directory (see :mod:`rd_assets.core.bundle.store` for the layout)."""

    def __init__(self, store: Path) -> None:
        real = os.path.realpath(store)
        if not os.path.isdir(real):
            raise BundleStoreError(f"bundle store {store} is not a directory", path=str(store))
        self.store = Path(real)
        self._pins: dict[tuple, PinnedVersion] = {}
        self._memo: dict[tuple, object] = {}
        self._verified: dict[tuple, str] = {}

    # ------------------------------------------------------------------ resolving

    def pin(self, task_id: str) -> PinnedVersion:
        """Resolve ``<store>/<task_id>`` once and read its manifest from the version it points at."""
        check_task_id(task_id)
        try:
            version = current_version_dir(self.store, task_id)
        except BundleStoreError as exc:
            raise BundleIntegrityError(exc.message, path=task_id) from exc
        if version is None:
            self._explain_unpublished(task_id)
        directory = os.path.realpath(version)
        if os.path.dirname(directory) != os.path.join(self.store, VERSIONS_DIR, task_id):
            raise BundleIntegrityError(f"{task_id} resolves outside {VERSIONS_DIR}/{task_id}/", path=task_id)
        try:
            fd = self._open(directory, MANIFEST)
        except FileNotFoundError as exc:
            gone = f"version {os.path.basename(directory)} of {task_id} vanished"
            raise VersionGoneError(gone, path=task_id) from exc
        except OSError as exc:
            raise BundleIntegrityError(f"cannot open {MANIFEST} of {task_id}: {exc.strerror}", path=MANIFEST) from exc
        try:
            st = os.fstat(fd)
            key = (directory, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            cached = self._pins.get(key)
            if cached is not None:
                return cached
            with os.fdopen(fd, "rb", closefd=False) as fh:
                data = fh.read()
        finally:
            os.close(fd)
        manifest = validate_json(Manifest, data, MANIFEST)
        if manifest.task_id != task_id:
            raise BundleIntegrityError(f"manifest of {task_id} names task {manifest.task_id}", path=MANIFEST)
        pinned = PinnedVersion(task_id, directory, os.path.basename(directory), manifest, data, key)
        _remember(self._pins, key, pinned)
        return pinned

    def _explain_unpublished(self, task_id: str) -> NoReturn:
        """Why ``current_version_dir`` found nothing: no link, a pruned target (retry), or a foreign object."""
        link = os.path.join(self.store, task_id)
        if not os.path.islink(link):
            raise TaskNotFoundError(f"no published bundle for task {task_id}", path=task_id)
        try:
            target = os.path.join(self.store, os.readlink(link))
        except OSError as exc:
            raise VersionGoneError(f"{task_id} was unpublished while being read", path=task_id) from exc
        if os.path.lexists(target):
            raise BundleIntegrityError(f"{task_id} points at something that is not a version directory", path=task_id)
        raise VersionGoneError(f"{task_id} points at a version that no longer exists", path=task_id)

    def memo(self, pinned: PinnedVersion, name: str, build: Callable[[], _V]) -> _V:
        """``build()`` once per pinned manifest identity: everything derived from an immutable version is reused."""
        key = (*pinned.cache_key, name)
        if key in self._memo:
            return cast(_V, self._memo[key])
        value = build()
        _remember(self._memo, key, value)
        return value

    def task_ids(self) -> list[str]:
        """Names in the store that are task ids and symlinks (versions dir and temp links are skipped)."""
        with os.scandir(self.store) as entries:
            return sorted(e.name for e in entries if is_task_id(e.name) and e.is_symlink())

    # ------------------------------------------------------------------ files of a pinned version

    def _open(self, directory: str, relpath: str) -> int:
        """Open ``relpath`` inside ``directory`` without following a symlink anywhere below it."""
        check_relpath(relpath)
        path = os.path.join(directory, relpath)
        parent = os.path.dirname(path)
        if parent != directory and os.path.realpath(parent) != parent:
            raise BundleIntegrityError(f"{relpath} sits under a symlinked directory", path=relpath)
        return os.open(path, _OPEN_FLAGS)

    def open_file(self, pinned: PinnedVersion, relpath: str) -> OpenFile:
        """Open one file listed in the pinned manifest; its size must already match the manifest."""
        entry = pinned.manifest.files.get(relpath)
        if entry is None:
            raise AssetNotFoundError(f"{relpath!r} is not listed in the manifest of {pinned.task_id}", path=relpath)
        try:
            fd = self._open(pinned.directory, relpath)
        except FileNotFoundError as exc:
            raise VersionGoneError(f"{relpath} of version {pinned.version} vanished", path=relpath) from exc
        except OSError as exc:
            raise BundleIntegrityError(f"cannot open {relpath}: {exc.strerror}", path=relpath) from exc
        handle = OpenFile(fd, relpath, entry.sha256, entry.size, self._verified)
        if handle.disk_size != entry.size:
            handle.close()
            raise BundleIntegrityError(f"{relpath} has a different size than its manifest entry", path=relpath)
        return handle

    def read_file(self, pinned: PinnedVersion, relpath: str) -> bytes:
        """The whole file, checked against the manifest's sha256 (used for the small JSON documents)."""
        handle = self.open_file(pinned, relpath)
        try:
            return b"".join(handle.chunks())
        finally:
            handle.close()

    def read_document(self, pinned: PinnedVersion, role: str, model: type[BaseModel]) -> tuple[bytes, str]:
        """Bytes and sha256 of a primary JSON document (a role of ``primary_assets``), validated against its model."""
        relpath = pinned.manifest.primary_assets.get(role)
        if relpath is None:
            raise AssetNotFoundError(f"bundle of {pinned.task_id} has no {role} document", path=role)
        data = self.read_file(pinned, relpath)
        validate_json(model, data, relpath)
        return data, pinned.manifest.files[relpath].sha256

    # ------------------------------------------------------------------ consumer keys

    def key_table(self, pinned: PinnedVersion) -> dict[str, str | None]:
        """Consumer key -> relpath (None = ambiguous), from the manifest and the version's ``sota_factors.json``."""
        return self.memo(pinned, "key_table", lambda: self._key_table(pinned))

    def _key_table(self, pinned: PinnedVersion) -> dict[str, str | None]:
        """Build the consumer-key table of :meth:`key_table`.

        Keys are the file_dict names consumers already use: the resolved weight key, ``factor_entry.py`` and each
        SOTA factor's ``file_dict_key`` (``factor.py``, ``based_factor_{i}/factor.py`` ...). Two factors claiming
        one key with different files make that key ambiguous: it is refused rather than guessed.
        """
        manifest = pinned.manifest
        table: dict[str, str | None] = {}

        def claim(key: str, relpath: str | None) -> None:
            if relpath is None:
                return
            table[key] = relpath if table.get(key, relpath) == relpath else None

        weight_key = manifest.sota_factor_anchor.resolved_model_weight_key
        if weight_key is not None:
            claim(weight_key, manifest.primary_assets.get("model_weight"))
        claim("factor_entry.py", manifest.primary_assets.get("factor_entry"))
        if SOTA_FACTORS in manifest.files:
            doc = validate_json(SotaFactorsDoc, self.read_file(pinned, SOTA_FACTORS), SOTA_FACTORS)
            for factor in doc.factors:
                claim(factor.file_dict_key, doc.code_relpaths.get(factor.name))
        return table

    def resolve_key(self, pinned: PinnedVersion, key: str) -> str:
        """The relpath a key names in this version: a consumer key first, else a relpath of the manifest."""
        check_key(key)
        table = self.key_table(pinned)
        if key in table:
            relpath = table[key]
            if relpath is None:
                raise BundleIntegrityError(f"key {key!r} names two different files in {pinned.task_id}", path=key)
            return relpath
        if key in pinned.manifest.files:
            return key
        raise AssetNotFoundError(f"no asset {key!r} in the bundle of {pinned.task_id}", path=key)

    # ------------------------------------------------------------------ listing

    def summary(self, pinned: PinnedVersion) -> TaskSummary:
        """Per-task row of ``/tasks`` (memoised per version)."""
        return self.memo(pinned, "summary", lambda: self._summary(pinned))

    def _summary(self, pinned: PinnedVersion) -> TaskSummary:
        doc = validate_json(SotaFactorsDoc, self.read_file(pinned, SOTA_FACTORS), SOTA_FACTORS)
        manifest = pinned.manifest
        return TaskSummary(
            task_id=pinned.task_id,
            generated_at_utc=manifest.generated_at_utc,
            selection_ready=manifest.selection_ready,
            factor_count=len(doc.factors),
            content_hash=manifest.content_hash,
            version=pinned.version,
        )

    def listing(self) -> TaskListing:
        """Every published task, newest first (``generated_at_utc``, then ``task_id``); broken ones reported."""
        summaries, problems = [], []
        for task_id in self.task_ids():
            try:
                summaries.append(self.summary(self.pin(task_id)))
            except TaskNotFoundError:
                continue
            except RdAssetsError as exc:
                problems.append((task_id, exc))
        summaries.sort(key=lambda s: (s.generated_at_utc, s.task_id), reverse=True)
        return TaskListing(summaries, problems)


class BundleTar:
    """A deterministic tar of one pinned version: every file opened up front, total length known in advance.

    Members are ``<task_id>/<relpath>`` for ``manifest.json`` and every manifest file, in sorted order, with
    mtime 0, uid/gid 0, empty owner names and mode 0644 (PAX format for long or non-ASCII names).
    """

    def __init__(self, reader: BundleReader, pinned: PinnedVersion) -> None:
        self._files: list[tuple[bytes, OpenFile | bytes]] = []
        try:
            for relpath in sorted([MANIFEST, *pinned.manifest.files]):
                body: OpenFile | bytes = (
                    pinned.manifest_bytes if relpath == MANIFEST else reader.open_file(pinned, relpath)
                )
                self._files.append((self._header(f"{pinned.task_id}/{relpath}", _size(body)), body))
        except BaseException:
            self.close()
            raise
        payload = sum(len(h) + _padded(_size(b)) for h, b in self._files) + 2 * tarfile.BLOCKSIZE
        self.length = payload + (-payload % tarfile.RECORDSIZE)

    @staticmethod
    def _header(name: str, size: int) -> bytes:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, TAR_MTIME, 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")

    def chunks(self) -> Iterator[bytes]:
        try:
            sent = 0
            for header, body in self._files:
                yield header
                sent += len(header)
                parts = [body] if isinstance(body, bytes) else body.chunks()
                for part in parts:
                    sent += len(part)
                    yield part
                pad = -_size(body) % tarfile.BLOCKSIZE
                sent += pad
                yield b"\0" * pad
            yield b"\0" * (self.length - sent)
        finally:
            self.close()

    def close(self) -> None:
        for _, body in self._files:
            if isinstance(body, OpenFile):
                body.close()


def _remember(cache: dict[tuple, _V], key: tuple, value: _V) -> None:
    """Bounded memo of per-version facts (oldest entry evicted first); version dirs are immutable."""
    while len(cache) >= _CACHE_MAX:
        cache.pop(next(iter(cache)), None)
    cache[key] = value


def _size(body: OpenFile | bytes) -> int:
    return len(body) if isinstance(body, bytes) else body.size


def _padded(size: int) -> int:
    return size + (-size % tarfile.BLOCKSIZE)


@contextlib.contextmanager
def closing_on_error(handle: OpenFile | BundleTar) -> Iterator[None]:
    """Close a handle if building the response fails before the body takes ownership of it."""
    try:
        yield
    except BaseException:
        handle.close()
        raise
