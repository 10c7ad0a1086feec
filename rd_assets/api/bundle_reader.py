"""Read-only access to published bundles, one pinned version per request.

Why this shape: ``<store>/<task_id>`` is a symlink that a publisher may swap at any instant. A request
resolves it exactly once (:func:`rd_assets.core.bundle.store.current_version_dir` plus a realpath check that the
target is a direct child of ``<store>/.versions/<task_id>/``), then reads every byte of its answer from that
one immutable version directory, opening each file before streaming from the open descriptor. A concurrent
republish therefore never mixes versions. Client input is never joined onto a path: a task id must match the
task-id pattern and an asset key is looked up in a table built from the manifest. Every file is checked against
its manifest entry (:mod:`rd_assets.api.verification`) before it is served. Nothing here writes, and nothing here
unpickles.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, TypeVar, cast

from pydantic import BaseModel, ValidationError

from rd_assets.api.errors import (
    AssetNotFoundError,
    BundleCorruptError,
    InvalidAssetKeyError,
    InvalidTaskIdError,
    TaskFailedError,
    TaskNotFoundError,
    VersionGoneError,
)
from rd_assets.api.verification import CHUNK, FileVerifier, ServedFile, identity_of
from rd_assets.core.bundle.store import RELPART_RE, VERSIONS_DIR, check_relpath, current_version_dir
from rd_assets.core.bundle.task_status import read_failure
from rd_assets.core.contracts.bundle_models import MANIFEST, SOTA_FACTORS, Manifest, SotaFactorsDoc
from rd_assets.core.errors import BundleIntegrityError, BundleStoreError
from rd_assets.core.task_ids import is_task_id

_V = TypeVar("_V")
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_CACHE_MAX = 16384
_CACHE_LOCK = threading.Lock()
_KEY_PART = RELPART_RE.pattern.removeprefix("^").removesuffix("$")
KEY_PATTERN = rf"^{_KEY_PART}(/{_KEY_PART})*$"
"""What an asset key may look like: the publisher's own relpath rule (so the spec says what is accepted)."""


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


@dataclass
class OpenFile(ServedFile):
    """A served file whose bytes are read with ``pread`` (no shared offset), re-checked before the last chunk."""

    verifier: FileVerifier

    def chunks(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Bytes ``start`` to ``end`` (exclusive; default the whole file) of an already verified file.

        The last chunk is held back until the file is known to be unchanged since it was verified, so a client
        never receives the full Content-Length of bytes that may not match their ETag.
        """
        end = self.size if end is None else end
        offset, pending = start, b""
        while offset < end and (chunk := os.pread(self.fd, min(CHUNK, end - offset), offset)):
            offset += len(chunk)
            if pending:
                yield pending
            pending = chunk
        self.verifier.unchanged(self)
        if offset != end:
            raise BundleCorruptError(f"{self.relpath} of task {self.task_id} ended early", path=self.relpath)
        if pending:
            yield pending

    def read_all(self) -> bytes:
        """The whole file (small JSON documents), checked against the manifest before it is returned."""
        data = b"".join(self._raw())
        self.verifier.check(self, data)
        return data

    def _raw(self) -> Iterator[bytes]:
        offset = 0
        while chunk := os.pread(self.fd, CHUNK, offset):
            offset += len(chunk)
            yield chunk


def check_key(key: str) -> None:
    """Refuse keys no bundle can hold (absolute, traversing, backslash, NUL...): loud 422, not a quiet miss."""
    try:
        check_relpath(key)
    except BundleStoreError as exc:
        raise InvalidAssetKeyError(f"asset key {key!r} is not a bundle key or relpath") from exc


def check_task_id(task_id: str) -> None:
    if not is_task_id(task_id):
        raise InvalidTaskIdError(f"not a task id: {task_id!r}")


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
        self.verifier = FileVerifier()
        self._pins: dict[tuple, PinnedVersion] = {}
        self._memo: dict[tuple, object] = {}

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
        """Why nothing is published: a failure, never seen, a pruned target (retry), or a foreign object."""
        link = os.path.join(self.store, task_id)
        if not os.path.islink(link):
            failure = read_failure(self.store, task_id)
            if failure is not None:
                raise TaskFailedError(
                    f"task {task_id} failed and has no published bundle: {failure.code}: {failure.message}",
                    path=task_id,
                )
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
        """Open one file listed in the pinned manifest (not yet verified: see :meth:`FileVerifier.check_all`)."""
        entry = pinned.manifest.files.get(relpath)
        if entry is None:
            raise AssetNotFoundError(f"{relpath!r} is not listed in the manifest of {pinned.task_id}", path=relpath)
        try:
            fd = self._open(pinned.directory, relpath)
        except FileNotFoundError as exc:
            raise VersionGoneError(f"{relpath} of version {pinned.version} vanished", path=relpath) from exc
        except OSError as exc:
            raise BundleIntegrityError(f"cannot open {relpath}: {exc.strerror}", path=relpath) from exc
        try:
            identity = identity_of(os.fstat(fd))
        except BaseException:
            os.close(fd)
            raise
        return OpenFile(
            fd=fd,
            task_id=pinned.task_id,
            version=pinned.version,
            directory=pinned.directory,
            relpath=relpath,
            sha256=entry.sha256,
            size=entry.size,
            identity=identity,
            verifier=self.verifier,
        )

    def read_file(self, pinned: PinnedVersion, relpath: str) -> bytes:
        """The whole file, checked against the manifest's sha256 (used for the small JSON documents)."""
        handle = self.open_file(pinned, relpath)
        try:
            return handle.read_all()
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

    def sota_factors(self, pinned: PinnedVersion) -> SotaFactorsDoc:
        return cast(SotaFactorsDoc, validate_json(SotaFactorsDoc, self.read_file(pinned, SOTA_FACTORS), SOTA_FACTORS))

    def corrupt_files(self, pinned: PinnedVersion) -> list[str]:
        """Files of this version found damaged and not repaired since; a file rewritten since is checked again."""
        damaged = []
        for relpath, identity in sorted(self.verifier.known_corrupt(pinned.directory).items()):
            try:
                now = identity_of(os.stat(os.path.join(pinned.directory, relpath), follow_symlinks=False))
            except FileNotFoundError:
                continue
            if now == identity:
                damaged.append(relpath)
                continue
            try:
                self._recheck(pinned, relpath)
            except BundleCorruptError:
                damaged.append(relpath)
            except (VersionGoneError, AssetNotFoundError):
                continue
        return damaged

    def _recheck(self, pinned: PinnedVersion, relpath: str) -> None:
        handle = self.open_file(pinned, relpath)
        try:
            self.verifier.check(handle)
        finally:
            handle.close()

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
            doc = self.sota_factors(pinned)
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


def _remember(cache: dict[tuple, _V], key: tuple, value: _V) -> None:
    """Bounded memo of per-version facts (oldest entry evicted first); version dirs are immutable."""
    with _CACHE_LOCK:
        while len(cache) >= _CACHE_MAX:
            cache.pop(next(iter(cache)), None)
        cache[key] = value
