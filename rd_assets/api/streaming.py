"""Bodies streamed from files already opened (and verified) in one pinned version: one file, or the bundle tar.

Why a custom response: Starlette's ``FileResponse`` opens the file by path when it starts sending, which could be
another version than the one the headers describe, and it reads in the event loop's own thread pool without our
checks. Here the descriptors are opened before the answer is built, chunks are read in a worker thread (reading
and sending release the GIL, so large downloads do not stall other requests), and a HEAD never reads a byte.
"""

from __future__ import annotations

import contextlib
import tarfile
from collections.abc import Callable, Iterator

import anyio
from fastapi.responses import Response
from starlette.types import Receive, Scope, Send

from rd_assets.api.bundle_reader import BundleReader, OpenFile, PinnedVersion
from rd_assets.api.errors import BundleCorruptError
from rd_assets.api.head import HEAD_FLAG
from rd_assets.core.contracts.bundle_models import MANIFEST

TAR_MTIME = 0
"""Fixed member mtime (and uid/gid 0, mode 0644) so the same version always streams the same tar bytes."""


class StreamedBody(Response):
    """``length`` bytes from ``chunks``; ``close`` releases the files whatever happens.

    A file found changed while it is sent (:class:`BundleCorruptError`, already logged in one line) ends the
    answer short: the client sees fewer bytes than Content-Length and a closed connection, never a complete body
    with the wrong bytes, and the server logs no traceback for it.
    """

    def __init__(
        self,
        chunks: Iterator[bytes],
        close: Callable[[], None],
        length: int,
        headers: dict[str, str],
        media_type: str,
        status_code: int = 200,
    ) -> None:
        super().__init__(
            status_code=status_code, headers={**headers, "content-length": str(length)}, media_type=media_type
        )
        self._chunks, self._close = chunks, close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            if not scope.get(HEAD_FLAG):
                while (chunk := await anyio.to_thread.run_sync(next, self._chunks, None)) is not None:
                    if chunk:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except BundleCorruptError:
            return
        finally:
            self._close()


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

    @property
    def files(self) -> list[OpenFile]:
        """The opened bundle files (to verify before the first byte goes out)."""
        return [body for _, body in self._files if isinstance(body, OpenFile)]

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
