"""Bytes of a task's bundle: one file by consumer key or manifest relpath (``asset_bytes``), or the whole tar.

Every file is verified against the manifest before the answer starts (:mod:`rd_assets.api.verification`), so a
damaged file is a 500 ``bundle_corrupt`` JSON answer, never a 200 that breaks off. ``asset_bytes`` honours one
``Range`` (:mod:`rd_assets.api.ranges`) and names the content type of text files, so a browser or ``curl`` shows
factor code as text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from fastapi.params import Depends

from rd_assets.api.bundle_reader import KEY_PATTERN, BundleReader, OpenFile, PinnedVersion
from rd_assets.api.errors import documented
from rd_assets.api.ranges import requested_range
from rd_assets.api.routers.common import (
    BINARY_SCHEMA,
    NOT_MODIFIED,
    TASK_ERRORS,
    IfNoneMatch,
    TaskId,
    etag_matches,
    pinned,
    version_headers,
)
from rd_assets.api.streaming import BundleTar, StreamedBody, closing_on_error

OCTET_STREAM = "application/octet-stream"
MEDIA_TYPES = {
    ".py": "text/x-python; charset=utf-8",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".yaml": "application/yaml",
}
"""Bundle text files by suffix (the bundle writes them as UTF-8); anything else is opaque bytes."""
FILE_CONTENT = {
    OCTET_STREAM: BINARY_SCHEMA,
    "text/x-python": {"schema": {"type": "string"}},
    "application/json": {"schema": {}},
    "text/plain": {"schema": {"type": "string"}},
    "application/yaml": {"schema": {"type": "string"}},
}
"""What OpenAPI says a file answer holds: a bundle JSON document is any JSON value, code and text are text."""
AssetKey = Annotated[
    str,
    Query(
        min_length=1,
        max_length=512,
        pattern=KEY_PATTERN,
        examples=["model.pkl", "factor.py", "based_factor_1/factor.py", "factor_order.json"],
        description="model.pkl / params.pkl (as resolved), factor_entry.py, factor.py, "
        "based_factor_{i}/factor.py, or any relpath listed in the manifest",
    ),
]
RangeHeader = Annotated[
    str | None,
    Header(
        alias="Range",
        description="one byte range (`bytes=0-1023`, `bytes=1024-`, `bytes=-512`): 206; unsatisfiable: 416",
    ),
]
IfRange = Annotated[
    str | None,
    Header(alias="If-Range", description="the ETag the Range applies to; any other value: the whole file (200)"),
]


def media_type(relpath: str) -> str:
    dot = relpath.rfind(".")
    return MEDIA_TYPES.get(relpath[dot:], OCTET_STREAM) if dot > relpath.rfind("/") else OCTET_STREAM


def build_router(reader: BundleReader, dependencies: Sequence[Depends]) -> APIRouter:
    router = APIRouter(tags=["files"], dependencies=dependencies)

    @router.get(
        "/tasks/{task_id}/asset_bytes",
        response_class=Response,
        responses={
            200: {"content": FILE_CONTENT, "description": "the file's bytes"},
            206: {"content": FILE_CONTENT, "description": "the requested range of the file's bytes"},
            **NOT_MODIFIED,
            **TASK_ERRORS,
            **documented(416),
        },
    )
    async def asset_bytes(
        task_id: TaskId,
        key: AssetKey,
        if_none_match: IfNoneMatch = None,
        byte_range: RangeHeader = None,
        if_range: IfRange = None,
    ) -> Response:
        def open_pinned(pin: PinnedVersion) -> tuple[PinnedVersion, str, OpenFile | None]:
            relpath = reader.resolve_key(pin, key)
            if etag_matches(if_none_match, pin.manifest.files[relpath].sha256):
                return pin, relpath, None
            return pin, relpath, reader.open_file(pin, relpath)

        pin, relpath, handle = pinned(reader, task_id, open_pinned)
        headers = {**version_headers(pin, pin.manifest.files[relpath].sha256), "accept-ranges": "bytes"}
        if handle is None:
            return Response(status_code=304, headers=headers)
        with closing_on_error(handle):
            await reader.verifier.check_all([handle])
            part = requested_range(byte_range, if_range, headers["etag"], handle.size)
            if part is None:
                return StreamedBody(handle.chunks(), handle.close, handle.size, headers, media_type(relpath))
            headers["content-range"] = part.content_range
            chunks = handle.chunks(part.start, part.end + 1)
            return StreamedBody(chunks, handle.close, part.length, headers, media_type(relpath), status_code=206)

    @router.get(
        "/tasks/{task_id}/bundle.tar",
        response_class=Response,
        responses={
            200: {"content": {"application/x-tar": BINARY_SCHEMA}, "description": "tar"},
            **NOT_MODIFIED,
            **TASK_ERRORS,
        },
    )
    async def bundle_tar(task_id: TaskId, if_none_match: IfNoneMatch = None) -> Response:
        def open_pinned(pin: PinnedVersion) -> tuple[PinnedVersion, BundleTar | None]:
            if etag_matches(if_none_match, pin.manifest.content_hash):
                return pin, None
            return pin, BundleTar(reader, pin)

        pin, tar = pinned(reader, task_id, open_pinned)
        headers = version_headers(pin, pin.manifest.content_hash)
        if tar is None:
            return Response(status_code=304, headers=headers)
        headers["content-disposition"] = f'attachment; filename="{task_id}.tar"'
        with closing_on_error(tar):
            await reader.verifier.check_all(tar.files)
            return StreamedBody(tar.chunks(), tar.close, tar.length, headers, "application/x-tar")

    return router
