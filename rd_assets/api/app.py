"""The Results API: read-only HTTP over published bundles (FastAPI), built by :func:`create_app`.

Why it looks like this: the service it replaces unpickled sessions per request and had a delete route that
accepted ``..``. This one only reads published bundle versions (:mod:`rd_assets.api.bundle_reader`), has no
route that writes (GET and HEAD only, anything else is 405), no CORS unless someone adds it on purpose, and an
optional bearer token compared in constant time. Every error is ``{"ok": false, "error": {"code", "message"}}``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rd_assets import __version__
from rd_assets.api.bundle_reader import (
    KEY_PATTERN,
    AssetNotFoundError,
    BundleReader,
    BundleTar,
    InvalidAssetKeyError,
    InvalidTaskIdError,
    OpenFile,
    PinnedVersion,
    TaskNotFoundError,
    VersionGoneError,
    closing_on_error,
)
from rd_assets.api.limits import ApiLimits, RequestGuard
from rd_assets.api.responses import (
    ErrorBody,
    ErrorResponse,
    Health,
    SessionAnchorResponse,
    SotaFactorAnchorResponse,
    TaskList,
    TaskProblem,
    error_envelope,
)
from rd_assets.core.contracts.artifact_models import FactorOrder, ModelMeta
from rd_assets.core.contracts.bundle_models import Manifest, SotaFactorsDoc
from rd_assets.core.errors import BundleIntegrityError, RdAssetsError
from rd_assets.core.task_ids import TASK_ID_PATTERN

TOKEN_ENV = "RD_ASSETS_API_TOKEN"
HEAD_FLAG = "rd_assets.head_request"
ALLOWED_METHODS = "GET, HEAD"
PIN_ATTEMPTS = 3
"""A version can be pruned between resolving the symlink and opening its files; re-resolve this often."""

STATUS_BY_ERROR: dict[type[RdAssetsError], int] = {
    InvalidTaskIdError: 422,
    InvalidAssetKeyError: 422,
    TaskNotFoundError: 404,
    AssetNotFoundError: 404,
    VersionGoneError: 503,
    BundleIntegrityError: 500,
}
CODE_BY_STATUS = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 422: "invalid_request"}

_T = TypeVar("_T")
TaskId = Annotated[
    str,
    PathParam(pattern=TASK_ID_PATTERN, description="RD-Agent task id", examples=["2026-03-02_09-15-27-118204"]),
]
IfNoneMatch = Annotated[str | None, Header(description="an ETag from an earlier answer: 304 when unchanged")]


def _error_doc(code: str, message: str) -> dict[str, Any]:
    return error_envelope(code, message).model_dump()


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(_error_doc(code, message), status_code=status, headers=headers)


def _documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorResponse, "description": CODE_BY_STATUS.get(s, "error")} for s in statuses}


TASK_ERRORS = _documented(401, 404, 422, 500, 503)
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {304: {"description": "unchanged since the If-None-Match ETag"}}


def etag_matches(if_none_match: str | None, digest: str) -> bool:
    """RFC 9110 weak comparison of an If-None-Match list against our (strong) ETag."""
    if not if_none_match:
        return False
    for item in if_none_match.split(","):
        tag = item.strip().removeprefix("W/")
        if tag in ("*", f'"{digest}"'):
            return True
    return False


class StreamedBody(Response):
    """Body streamed from already-opened files (pinned version); Content-Length known; files closed at the end.

    Chunks are read and hashed in a worker thread (both release the GIL), so large downloads do not stall the
    event loop. A HEAD request gets the headers only and never reads the files.
    """

    def __init__(
        self, chunks: Iterator[bytes], close: Callable[[], None], length: int, headers: dict[str, str], media_type: str
    ) -> None:
        super().__init__(status_code=200, headers={**headers, "content-length": str(length)}, media_type=media_type)
        self._chunks, self._close = chunks, close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            if not scope.get(HEAD_FLAG):
                while (chunk := await anyio.to_thread.run_sync(next, self._chunks, None)) is not None:
                    if chunk:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self._close()


class HeadAsGet:
    """Serve HEAD as GET without the body (FastAPI routes are GET only; one route table, no twins)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET", HEAD_FLAG: True}, receive, send_headers_only)


class BearerAuth:
    """Every route but ``/health`` needs ``Authorization: Bearer <token>`` (constant-time comparison)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode("utf-8")

    def _authorized(self, scope: Scope) -> bool:
        values = [v for k, v in scope["headers"] if k == b"authorization"]
        if len(values) != 1:
            return False
        scheme, _, given = values[0].partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self._token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/health" or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        response = error_response(
            401, "unauthorized", "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
        await response(scope, receive, send)


def _check_token(token: str | None) -> str | None:
    if token is not None and (not token or token != token.strip() or any(ch.isspace() for ch in token)):
        raise ValueError(f"{TOKEN_ENV} must be a non-empty token without whitespace")
    return token


def create_app(store: Path, token: str | None = None, limits: ApiLimits | None = None) -> FastAPI:
    """The API over the bundle store ``store``; with ``token`` set, every route but ``/health`` requires it.

    ``limits`` (defaults: :class:`ApiLimits`) are checked by the outermost middleware, before the token.

    Per-task routes are ``async``: they only resolve a symlink and open or read small files of the local store
    (microseconds), which is cheaper inline than two thread hops; bulk bytes are read in worker threads by
    :class:`StreamedBody`, and the store-wide ``/tasks`` scan runs in the thread pool.
    """
    token = _check_token(token)
    reader = BundleReader(store)
    app = FastAPI(
        title="rd-assets Results API",
        version=__version__,
        description="Read-only access to published RD-Agent consumer bundles. GET/HEAD only.",
    )
    _install_error_handlers(app)

    def pinned(task_id: str, answer: Callable[[PinnedVersion], _T]) -> _T:
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

    def pinned_json(task_id: str, name: str, build: Callable[[PinnedVersion], bytes]) -> Response:
        """A response model derived from the manifest alone, serialised once per version (hot consumer routes)."""
        body = pinned(task_id, lambda pin: reader.memo(pin, name, lambda: build(pin)))
        return Response(content=body, media_type="application/json")

    def json_bytes_response(pin: PinnedVersion, data: bytes, digest: str, if_none_match: str | None) -> Response:
        headers = version_headers(pin, digest)
        if etag_matches(if_none_match, digest):
            return Response(status_code=304, headers=headers)
        return Response(content=data, media_type="application/json", headers=headers)

    def document(task_id: str, role: str, model: type[BaseModel], if_none_match: str | None) -> Response:
        def answer(pin: PinnedVersion) -> Response:
            data, digest = reader.read_document(pin, role, model)
            return json_bytes_response(pin, data, digest, if_none_match)

        return pinned(task_id, answer)

    @app.get("/health", response_model=Health)
    async def health() -> Health:
        return Health(version=__version__)

    @app.get("/tasks", response_model=TaskList, responses=_documented(401, 422, 500))
    def tasks(limit: Annotated[int, Query(ge=1, le=1000)] = 100, offset: Annotated[int, Query(ge=0)] = 0) -> TaskList:
        listing = reader.listing()
        page = listing.summaries[offset : offset + limit]
        return TaskList(
            total=len(listing.summaries),
            limit=limit,
            offset=offset,
            tasks=page,
            problems=[
                TaskProblem(task_id=t, error=ErrorBody(code=e.code, message=e.message)) for t, e in listing.problems
            ],
        )

    @app.get("/tasks/{task_id}", response_model=Manifest, responses={**TASK_ERRORS, **NOT_MODIFIED})
    async def manifest(task_id: TaskId, if_none_match: IfNoneMatch = None) -> Response:
        def answer(pin: PinnedVersion) -> Response:
            digest = reader.memo(pin, "manifest_sha256", lambda: hashlib.sha256(pin.manifest_bytes).hexdigest())
            return json_bytes_response(pin, pin.manifest_bytes, digest, if_none_match)

        return pinned(task_id, answer)

    @app.get("/tasks/{task_id}/session_anchor", response_model=SessionAnchorResponse, responses=TASK_ERRORS)
    async def session_anchor(task_id: TaskId) -> Response:
        def build(pin: PinnedVersion) -> bytes:
            anchor = pin.manifest.session_anchor
            return SessionAnchorResponse(task_id=task_id, **anchor.model_dump()).model_dump_json().encode()

        return pinned_json(task_id, "session_anchor", build)

    @app.get("/tasks/{task_id}/sota_factor_anchor", response_model=SotaFactorAnchorResponse, responses=TASK_ERRORS)
    async def sota_factor_anchor(task_id: TaskId) -> Response:
        def build(pin: PinnedVersion) -> bytes:
            m, sota = pin.manifest, pin.manifest.sota_factor_anchor
            answer = SotaFactorAnchorResponse(
                task_id=task_id,
                hist_len=m.session_anchor.hist_len,
                chosen_session_file=m.session_anchor.chosen_session_file,
                source_session_dir_id=m.session_anchor.source_session_dir_id,
                last_sota_factor_index=sota.last_sota_factor_index,
                resolved_model_weight_key=sota.resolved_model_weight_key,
                resolved_model_weight_source=sota.resolved_model_weight_source,
                resolved_factor_entry_key=sota.resolved_factor_entry_key,
                factor_file_dict_keys=sota.factor_file_dict_keys,
                based_factor_entries=sota.based_factor_entries,
                selection_ready=m.selection_ready,
                reasons=m.reasons,
                content_hash=m.content_hash,
            )
            return answer.model_dump_json().encode()

        return pinned_json(task_id, "sota_factor_anchor", build)

    @app.get("/tasks/{task_id}/sota_factors", response_model=SotaFactorsDoc, responses={**TASK_ERRORS, **NOT_MODIFIED})
    async def sota_factors(task_id: TaskId, if_none_match: IfNoneMatch = None) -> Response:
        return document(task_id, "sota_factors", SotaFactorsDoc, if_none_match)

    @app.get("/tasks/{task_id}/factor_order", response_model=FactorOrder, responses={**TASK_ERRORS, **NOT_MODIFIED})
    async def factor_order(task_id: TaskId, if_none_match: IfNoneMatch = None) -> Response:
        return document(task_id, "factor_order", FactorOrder, if_none_match)

    @app.get("/tasks/{task_id}/model_meta", response_model=ModelMeta, responses={**TASK_ERRORS, **NOT_MODIFIED})
    async def model_meta(task_id: TaskId, if_none_match: IfNoneMatch = None) -> Response:
        return document(task_id, "model_meta", ModelMeta, if_none_match)

    binary = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}

    @app.get(
        "/tasks/{task_id}/asset_bytes",
        response_class=Response,
        responses={200: {"content": binary, "description": "the file's bytes"}, **NOT_MODIFIED, **TASK_ERRORS},
    )
    async def asset_bytes(
        task_id: TaskId,
        key: Annotated[
            str,
            Query(
                min_length=1,
                max_length=512,
                pattern=KEY_PATTERN,
                examples=["model.pkl", "factor.py", "based_factor_1/factor.py", "factor_order.json"],
                description="model.pkl / params.pkl (as resolved), factor_entry.py, factor.py, "
                "based_factor_{i}/factor.py, or any relpath listed in the manifest",
            ),
        ],
        if_none_match: IfNoneMatch = None,
    ) -> Response:
        def answer(pin: PinnedVersion) -> Response:
            relpath = reader.resolve_key(pin, key)
            headers = version_headers(pin, pin.manifest.files[relpath].sha256)
            if etag_matches(if_none_match, pin.manifest.files[relpath].sha256):
                return Response(status_code=304, headers=headers)
            handle: OpenFile = reader.open_file(pin, relpath)
            with closing_on_error(handle):
                return StreamedBody(handle.chunks(), handle.close, handle.size, headers, "application/octet-stream")

        return pinned(task_id, answer)

    @app.get(
        "/tasks/{task_id}/bundle.tar",
        response_class=Response,
        responses={
            200: {"content": {"application/x-tar": binary["application/octet-stream"]}, "description": "tar"},
            **NOT_MODIFIED,
            **TASK_ERRORS,
        },
    )
    async def bundle_tar(task_id: TaskId, if_none_match: IfNoneMatch = None) -> Response:
        def answer(pin: PinnedVersion) -> Response:
            headers = version_headers(pin, pin.manifest.content_hash)
            if etag_matches(if_none_match, pin.manifest.content_hash):
                return Response(status_code=304, headers=headers)
            tar = BundleTar(reader, pin)
            headers["content-disposition"] = f'attachment; filename="{task_id}.tar"'
            with closing_on_error(tar):
                return StreamedBody(tar.chunks(), tar.close, tar.length, headers, "application/x-tar")

        return pinned(task_id, answer)

    app.add_middleware(HeadAsGet)
    if token is not None:
        app.add_middleware(BearerAuth, token=token)
    app.add_middleware(RequestGuard, limits=limits or ApiLimits())
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RdAssetsError)
    async def rd_assets_error(_: Request, exc: RdAssetsError) -> JSONResponse:
        status = next((s for cls, s in STATUS_BY_ERROR.items() if isinstance(exc, cls)), 500)
        headers = {"retry-after": "1"} if status == 503 else None
        return error_response(status, exc.code, exc.message, headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() != "allow"}
        if exc.status_code == 405:
            headers["allow"] = ALLOWED_METHODS
        code = CODE_BY_STATUS.get(exc.status_code, f"http_{exc.status_code}")
        return error_response(exc.status_code, code, str(exc.detail), headers)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        """Last resort: still the JSON error shape, without internals (uvicorn logs the traceback)."""
        return error_response(500, "internal_error", f"unexpected {type(exc).__name__}")

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return error_response(422, "invalid_request", problems)
