"""What the per-task routers share: the path and header parameters, the version pin, caching headers.

Why a version is pinned through :func:`pinned`: the whole answer must come from the one version the task's link
pointed at when the request arrived; if that version is pruned before its files are opened, resolving again
gives the newer one, which is still one whole version.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Header
from fastapi import Path as PathParam

from rd_assets.api.bundle_reader import BundleReader, PinnedVersion
from rd_assets.api.errors import VersionGoneError, documented
from rd_assets.core.task_ids import TASK_ID_PATTERN

_T = TypeVar("_T")
PIN_ATTEMPTS = 3
"""A version can be pruned between resolving the symlink and opening its files; re-resolve this often."""

TaskId = Annotated[
    str,
    PathParam(pattern=TASK_ID_PATTERN, description="RD-Agent task id", examples=["2026-03-02_09-15-27-118204"]),
]
IfNoneMatch = Annotated[str | None, Header(description="an ETag from an earlier answer: 304 when unchanged")]
TASK_ERRORS = documented(401, 404, 422, 500, 503)
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {304: {"description": "unchanged since the If-None-Match ETag"}}
BINARY_SCHEMA = {"schema": {"type": "string", "format": "binary"}}


def pinned(reader: BundleReader, task_id: str, answer: Callable[[PinnedVersion], _T]) -> _T:
    """Resolve the task's current version once and answer from it; re-resolve if it was pruned meanwhile."""
    for attempt in range(PIN_ATTEMPTS):
        try:
            return answer(reader.pin(task_id))
        except VersionGoneError:
            if attempt == PIN_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def version_headers(pin: PinnedVersion, digest: str) -> dict[str, str]:
    return {
        "etag": f'"{digest}"',
        "cache-control": "no-cache",
        "x-rd-assets-version": pin.version,
        "x-rd-assets-content-hash": pin.manifest.content_hash,
    }


def etag_matches(if_none_match: str | None, digest: str) -> bool:
    """RFC 9110 weak comparison of an If-None-Match list against our (strong) ETag."""
    if not if_none_match:
        return False
    for item in if_none_match.split(","):
        tag = item.strip().removeprefix("W/")
        if tag in ("*", f'"{digest}"'):
            return True
    return False
