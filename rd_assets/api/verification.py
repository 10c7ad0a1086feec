"""Every file the API serves is known to match its manifest entry before the first byte of the answer leaves.

Why: headers (status, ETag, Content-Length) go out before the body, so a mismatch found while streaming could
only cut the connection: the client saw a 200, then a reset, and the log 70 lines of traceback. Here a file is
hashed before its response starts, once per file *identity* (device, inode, size, mtime, ctime: any write
changes it), and the verdict is cached under that identity. A damaged file answers 500 ``bundle_corrupt``
naming it, is logged in one line when found, and is listed by ``/tasks`` until it is repaired; a repaired file
has a new identity, so it is hashed again and served again.

A file rewritten *while* it is being sent is still caught: its size and mtime are checked again before the last
chunk goes out, and the answer is cut short rather than completed with bytes that do not match its ETag.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import anyio

from rd_assets.api.errors import BundleCorruptError

CHUNK = 1 << 20
_CACHE_MAX = 16384
logger = logging.getLogger("rd_assets.api")

Identity = tuple[int, int, int, int, int]
"""(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns) of a file."""


def identity_of(st: os.stat_result) -> Identity:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass
class ServedFile:
    """An open bundle file and what the pinned manifest promises for it (``fd`` is -1 once closed)."""

    fd: int
    task_id: str
    version: str
    directory: str
    relpath: str
    sha256: str
    size: int
    identity: Identity

    @property
    def disk_size(self) -> int:
        return self.identity[2]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _hash_fd(fd: int, size: int) -> str:
    digest, offset = hashlib.sha256(), 0
    while offset < size and (chunk := os.pread(fd, min(CHUNK, size - offset), offset)):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


class FileVerifier:
    """Cached verdicts (file identity + promised sha256 -> matches?) and the files currently known to be damaged."""

    def __init__(self) -> None:
        self._verdicts: dict[tuple[Identity, str], bool] = {}
        self._corrupt: dict[str, dict[str, Identity]] = {}
        self._lock = threading.Lock()

    def needs_hashing(self, handle: ServedFile) -> bool:
        return (handle.identity, handle.sha256) not in self._verdicts

    def check(self, handle: ServedFile, data: bytes | None = None) -> None:
        """Raise :class:`BundleCorruptError` unless the file matches; hashes it (``data``, or via its descriptor)
        only when this identity has no verdict yet."""
        key = (handle.identity, handle.sha256)
        verdict = self._verdicts.get(key)
        if verdict is None:
            why = self._mismatch(handle, data)
            verdict = why is None
            self._record(handle, verdict)
            if why is not None:
                logger.error("bundle_corrupt: %s", self._describe(handle, why))
        if not verdict:
            raise BundleCorruptError(self._describe(handle, "does not match its manifest entry"), path=handle.relpath)

    async def check_all(self, handles: Iterable[ServedFile]) -> None:
        """:meth:`check` every file; hashing runs in a worker thread, so the event loop never waits on it."""
        handles = list(handles)
        if any(self.needs_hashing(h) for h in handles):
            await anyio.to_thread.run_sync(self._check_each, handles)
        else:
            self._check_each(handles)

    def _check_each(self, handles: list[ServedFile]) -> None:
        for handle in handles:
            self.check(handle)

    def unchanged(self, handle: ServedFile) -> None:
        """Raise (cutting the answer short) if the file was rewritten after it was verified.

        Compared without ctime: pruning an old version unlinks files that may still be being sent, which
        changes their ctime but not a byte; a write changes mtime.
        """
        if identity_of(os.fstat(handle.fd))[:4] != handle.identity[:4]:
            self._record(handle, False)
            why = "changed on disk while it was being sent"
            logger.error("bundle_corrupt: %s", self._describe(handle, why))
            raise BundleCorruptError(self._describe(handle, why), path=handle.relpath)

    def known_corrupt(self, directory: str) -> dict[str, Identity]:
        """Files of one version directory found damaged, with the identity they had then."""
        with self._lock:
            return dict(self._corrupt.get(directory, {}))

    def _mismatch(self, handle: ServedFile, data: bytes | None) -> str | None:
        if handle.disk_size != handle.size:
            return f"is {handle.disk_size} bytes, its manifest entry says {handle.size}"
        digest = hashlib.sha256(data).hexdigest() if data is not None else _hash_fd(handle.fd, handle.size)
        if digest != handle.sha256:
            return f"has sha256 {digest}, its manifest entry says {handle.sha256}"
        return None

    def _record(self, handle: ServedFile, ok: bool) -> None:
        with self._lock:
            while len(self._verdicts) >= _CACHE_MAX:
                self._verdicts.pop(next(iter(self._verdicts)))
            self._verdicts[(handle.identity, handle.sha256)] = ok
            damaged = self._corrupt.setdefault(handle.directory, {})
            if ok:
                damaged.pop(handle.relpath, None)
            elif len(self._corrupt) < _CACHE_MAX:
                damaged[handle.relpath] = handle.identity
            if not damaged:
                self._corrupt.pop(handle.directory, None)

    @staticmethod
    def _describe(handle: ServedFile, why: str) -> str:
        return f"{handle.relpath} of task {handle.task_id} (version {handle.version}) {why}"
