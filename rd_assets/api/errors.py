"""Typed API errors and the one place that turns them, and every other failure, into a JSON answer.

Why one place: a refusal from a route, from FastAPI's validation or from Starlette's routing must carry the same
envelope ``{"ok": false, "error": {"code", "message"}}``, a status chosen by the error's type (never by the route
that raised it) and the headers that status needs (``retry-after``, ``www-authenticate``, ``content-range``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rd_assets.api.responses import ErrorResponse, error_envelope
from rd_assets.core.errors import BundleIntegrityError, RdAssetsError

ALLOWED_METHODS = "GET, HEAD"


class InvalidTaskIdError(RdAssetsError):
    """A ``task_id`` that is not a task id (so it can never name a bundle)."""

    code = "invalid_task_id"


class InvalidAssetKeyError(RdAssetsError):
    """An asset key that no bundle can hold: absolute, traversing, backslashes, control characters."""

    code = "invalid_key"


class TaskNotFoundError(RdAssetsError):
    """No published bundle and no failure record for a well-formed task id: never seen."""

    code = "task_not_found"


class TaskFailedError(TaskNotFoundError):
    """No published bundle because the task's last extraction failed; the reason is at ``/tasks/{id}/status``."""

    code = "task_failed"


class AssetNotFoundError(RdAssetsError):
    """The key is neither a consumer key nor a relpath listed in this version's manifest."""

    code = "asset_not_found"


class VersionGoneError(RdAssetsError):
    """The pinned version was pruned before its files could be opened, on every retry; the client may retry."""

    code = "bundle_version_gone"


class BundleCorruptError(BundleIntegrityError):
    """A published file's bytes no longer match its manifest entry (sha256 or size): damaged after publication."""

    code = "bundle_corrupt"


class RangeNotSatisfiableError(RdAssetsError):
    """A ``Range`` that selects no byte of the file (RFC 9110: 416 with ``Content-Range: bytes */<size>``)."""

    code = "range_not_satisfiable"

    def __init__(self, message: str, *, size: int, path: str | None = None) -> None:
        super().__init__(message, path=path)
        self.size = size


class UnauthorizedError(RdAssetsError):
    """Missing or wrong bearer token."""

    code = "unauthorized"


STATUS_BY_ERROR: dict[type[RdAssetsError], int] = {
    UnauthorizedError: 401,
    InvalidTaskIdError: 422,
    InvalidAssetKeyError: 422,
    TaskNotFoundError: 404,
    AssetNotFoundError: 404,
    RangeNotSatisfiableError: 416,
    VersionGoneError: 503,
    BundleIntegrityError: 500,
}
"""Status per error type (the first ``isinstance`` match wins); any other typed error is a 500."""
CODE_BY_STATUS = {
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    416: "range_not_satisfiable",
    422: "invalid_request",
}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_envelope(code, message).model_dump(), status_code=status, headers=headers)


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the error statuses a route can answer."""
    return {s: {"model": ErrorResponse, "description": CODE_BY_STATUS.get(s, "error")} for s in statuses}


def status_of(exc: RdAssetsError) -> int:
    return next((s for cls, s in STATUS_BY_ERROR.items() if isinstance(exc, cls)), 500)


def _headers(exc: RdAssetsError, status: int) -> dict[str, str] | None:
    if status == 503:
        return {"retry-after": "1"}
    if isinstance(exc, UnauthorizedError):
        return {"www-authenticate": "Bearer"}
    if isinstance(exc, RangeNotSatisfiableError):
        return {"content-range": f"bytes */{exc.size}"}
    return None


def rd_assets_error_response(exc: RdAssetsError) -> JSONResponse:
    status = status_of(exc)
    return error_response(status, exc.code, exc.message, _headers(exc, status))


def add_exception_handlers(app: FastAPI, unrouted_guard: Callable[[Request], Awaitable[None]] | None = None) -> None:
    """Install the handlers; ``unrouted_guard(request)`` raises :class:`UnauthorizedError` for a request without
    the token, so an unrouted path or method answers 401 like every route (nothing is learned without the token).
    """

    @app.exception_handler(RdAssetsError)
    async def rd_assets_error(_: Request, exc: RdAssetsError) -> JSONResponse:
        return rd_assets_error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if unrouted_guard is not None:
            try:
                await unrouted_guard(request)
            except UnauthorizedError as refused:
                return rd_assets_error_response(refused)
        headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() != "allow"}
        if exc.status_code == 405:
            headers["allow"] = ALLOWED_METHODS
        code = CODE_BY_STATUS.get(exc.status_code, f"http_{exc.status_code}")
        return error_response(exc.status_code, code, str(exc.detail), headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return error_response(422, "invalid_request", problems)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        """Last resort: still the JSON error shape, without internals (uvicorn logs the traceback)."""
        return error_response(500, "internal_error", f"unexpected {type(exc).__name__}")
